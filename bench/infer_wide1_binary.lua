-- wrk script: infer_wide_binary.lua with one row (the first of its 32): the binary tensor
-- extension with a [1, 64] FP32 tensor, 256 bytes after the JSON header. Used by
-- bench/request_path.sh.
ROWS = 1
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "infer_wide_binary.lua")
