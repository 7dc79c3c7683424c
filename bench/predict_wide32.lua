-- wrk script: 32-row POST /predict on wide_mlp (bench/wide_mlp.toml; derived schema, fields
-- features_0 .. features_63). Used by bench/request_path.sh.
-- The rows and the answer counting: wide_common.lua.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wide_common.lua")

local v, rows = wide_values(), {}
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
