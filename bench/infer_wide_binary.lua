-- wrk script: the same 32 rows as predict_wide32.lua through the Open Inference Protocol's
-- binary tensor extension: a JSON header (its length in Inference-Header-Content-Length)
-- followed by the [32, 64] tensor as 8192 bytes of little-endian float32; the output asked
-- for as binary data too.
-- The rows and the answer counting: wide_common.lua (infer_wide1_binary.lua sets ROWS to 1
-- first).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wide_common.lua")

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

local v, bytes = wide_values(), {}
for k = 1, ROWS * COLS do bytes[k] = f32le(v[k]) end
local header = '{"inputs":[{"name":"features","datatype":"FP32","shape":[' .. ROWS .. ',' .. COLS ..
  '],"parameters":{"binary_data_size":' .. (ROWS * COLS * 4) .. '}}],' ..
  '"outputs":[{"name":"score","parameters":{"binary_data":true}}]}'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = tostring(#header)
wrk.body = header .. table.concat(bytes)
