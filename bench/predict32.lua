-- wrk script: 32-row POST /predict; counts answers by status (200 = goodput, 503 = shed).
local row = '{"lotsize":5850,"bedrooms":3,"bathrms":1,"stories":2,"garagepl":1,"driveway":"yes","recroom":"no","fullbase":"yes","gashw":"no","airco":"no","prefarea":"no"}'
local rows = {}
for i = 1, 32 do rows[i] = row end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"instances":[' .. table.concat(rows, ",") .. ']}'

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, shed, other = 0, 0, 0
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 elseif status == 503 then shed = shed + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local o, s, x = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); s = s + t:get("shed"); x = x + t:get("other")
  end
  local secs = summary.duration / 1e6
  io.write(string.format("BENCH ok_rps=%.0f shed_rps=%.0f other=%d socket_errors=%d\n", o / secs, s / secs, x,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
