-- wrk script: 32-row POST /predict on wide_mlp (bench/wide_mlp.toml; derived schema, fields
-- features_0 .. features_63). Used by bench/request_path.sh.
-- 32 rows of 64 fixed pseudo-random values in -2.000..2.000 (Park-Miller generator, seed 42):
-- the same numbers in predict_wide32.lua, infer_wide32.lua and infer_wide_binary.lua.
local ROWS, COLS = 32, 64
local function values()
  local state, out = 42, {}
  for k = 1, ROWS * COLS do
    state = (state * 16807) % 2147483647
    out[k] = ((state % 4001) - 2000) / 1000
  end
  return out
end

local v, rows = values(), {}
for i = 0, ROWS - 1 do
  local fields = {}
  for j = 0, COLS - 1 do
    fields[j + 1] = string.format('"features_%d":%.3f', j, v[i * COLS + j + 1])
  end
  rows[i + 1] = "{" .. table.concat(fields, ",") .. "}"
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"instances":[' .. table.concat(rows, ",") .. ']}'

-- Counts answers by status: only 200s count as served rows; the last other status is reported.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, bad, bad_status = 0, 0, 0
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else bad = bad + 1; bad_status = status end
end

function done(summary, latency, requests)
  local o, b, s = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); b = b + t:get("bad")
    if t:get("bad_status") ~= 0 then s = t:get("bad_status") end
  end
  local secs = summary.duration / 1e6
  io.write(string.format("BENCH rps=%.0f ok_rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d non200=%d bad_status=%d\n",
    summary.requests / secs, o / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, b, s))
end
