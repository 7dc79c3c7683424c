-- wrk script: the same 32 rows as predict_wide32.lua through the Open Inference Protocol's
-- binary tensor extension: a JSON header (its length in Inference-Header-Content-Length)
-- followed by the [32, 64] tensor as 8192 bytes of little-endian float32; the output asked
-- for as binary data too.
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

-- LuaJIT has no string.pack: IEEE 754 single precision, little-endian, by hand (normal numbers
-- and zero, which is all the generator makes).
local function f32le(x)
  if x == 0 then return "\0\0\0\0" end
  local sign = 0
  if x < 0 then sign, x = 1, -x end
  local m, e = math.frexp(x)             -- x = m * 2^e, 0.5 <= m < 1
  local mant = math.floor((m * 2 - 1) * 2 ^ 23 + 0.5)
  local exp = e - 1 + 127
  if mant == 2 ^ 23 then mant, exp = 0, exp + 1 end
  local bits = sign * 2 ^ 31 + exp * 2 ^ 23 + mant
  return string.char(bits % 256, math.floor(bits / 2 ^ 8) % 256, math.floor(bits / 2 ^ 16) % 256,
    math.floor(bits / 2 ^ 24) % 256)
end

local v, bytes = values(), {}
for k = 1, ROWS * COLS do bytes[k] = f32le(v[k]) end
local header = '{"inputs":[{"name":"features","datatype":"FP32","shape":[' .. ROWS .. ',' .. COLS ..
  '],"parameters":{"binary_data_size":' .. (ROWS * COLS * 4) .. '}}],' ..
  '"outputs":[{"name":"score","parameters":{"binary_data":true}}]}'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = tostring(#header)
wrk.body = header .. table.concat(bytes)

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
