-- wrk script: one-row Open Inference Protocol v2 infer on house_price, same row as predict.lua.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[' ..
  '{"name":"lotsize","shape":[1,1],"datatype":"FP32","data":[5850]},' ..
  '{"name":"bedrooms","shape":[1,1],"datatype":"INT64","data":[3]},' ..
  '{"name":"bathrms","shape":[1,1],"datatype":"INT64","data":[1]},' ..
  '{"name":"stories","shape":[1,1],"datatype":"INT64","data":[2]},' ..
  '{"name":"garagepl","shape":[1,1],"datatype":"INT64","data":[1]},' ..
  '{"name":"driveway","shape":[1,1],"datatype":"BYTES","data":["yes"]},' ..
  '{"name":"recroom","shape":[1,1],"datatype":"BYTES","data":["no"]},' ..
  '{"name":"fullbase","shape":[1,1],"datatype":"BYTES","data":["yes"]},' ..
  '{"name":"gashw","shape":[1,1],"datatype":"BYTES","data":["no"]},' ..
  '{"name":"airco","shape":[1,1],"datatype":"BYTES","data":["no"]},' ..
  '{"name":"prefarea","shape":[1,1],"datatype":"BYTES","data":["no"]}]}'

function done(summary, latency, requests)
  io.write(string.format("BENCH rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
