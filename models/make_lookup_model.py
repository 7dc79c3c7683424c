"""Builds models/lookup.onnx: a table lookup whose graph refuses some inputs that fit its schema.

Input: `idx` (int64, [N, 1]). Output: `value` (float, [N, 1]) = TABLE[idx] through a Gather.
ONNX Runtime fails the whole run when any index is outside -8..7, which no derived schema
can know: the tests use it for input-dependent failures (one bad request in a batch must fail
alone, and the others still succeed).
Run: python3 models/make_lookup_model.py   (with onnx from models/requirements.txt)
"""

from pathlib import Path

import onnx
from onnx import TensorProto, helper

TABLE = [float(10 * i) for i in range(8)]


def main():
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 1])
    value = helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", 1])
    table = helper.make_tensor("table", TensorProto.FLOAT, [len(TABLE)], TABLE)
    gather = helper.make_node("Gather", ["table", "idx"], ["value"], axis=0)
    graph = helper.make_graph([gather], "lookup", [idx], [value], initializer=[table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out = Path(__file__).with_name("lookup.onnx")
    onnx.save(model, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
