-- wrk script: the same 32 rows as predict_wide32.lua through the Open Inference Protocol,
-- POST /v2/models/wide_mlp/infer with one [32, 64] FP32 tensor as flat JSON data.
-- The rows and the answer counting: wide_common.lua (infer_wide1.lua sets ROWS to 1 first).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wide_common.lua")

local v, data = wide_values(), {}
for k = 1, ROWS * COLS do data[k] = string.format("%.3f", v[k]) end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"features","shape":[' .. ROWS .. ',' .. COLS ..
  '],"datatype":"FP32","data":[' .. table.concat(data, ",") .. ']}]}'
