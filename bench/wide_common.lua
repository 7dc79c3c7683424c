-- Shared by the wide_mlp wrk scripts (predict_wide32.lua, infer_wide32.lua,
-- infer_wide_binary.lua), which load it with dofile from their own folder; their 1-row forms
-- (infer_wide1.lua, infer_wide1_binary.lua) set ROWS to 1 and load the 32-row script.
-- wide_values(): ROWS rows (32 unless set) of 64 fixed pseudo-random values in -2.000..2.000
-- (Park-Miller generator, seed 42), row after row: the same numbers in every script, and in
-- bench/grpc_load.rs.
-- setup/init/response/done: count answers by status; only 200s count as served rows, and the
-- last other status is reported.
ROWS, COLS = ROWS or 32, 64

function wide_values()
  local state, out = 42, {}
  for k = 1, ROWS * COLS do
    state = (state * 16807) % 2147483647
    out[k] = ((state % 4001) - 2000) / 1000
  end
  return out
end

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
