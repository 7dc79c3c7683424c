-- wrk script: infer_wide32.lua with one row (the first of its 32): POST
-- /v2/models/wide_mlp/infer with a [1, 64] FP32 tensor as JSON data. Used by
-- bench/request_path.sh.
ROWS = 1
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "infer_wide32.lua")
