-- wrk script: one-row POST /predict with the schema's first example.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"instances":[{"lotsize":5850,"bedrooms":3,"bathrms":1,"stories":2,"garagepl":1,"driveway":"yes","recroom":"no","fullbase":"yes","gashw":"no","airco":"no","prefarea":"no"}]}'

function done(summary, latency, requests)
  io.write(string.format("BENCH rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
