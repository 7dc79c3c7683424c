"""Builds models/dtypes.onnx, a tiny graph that exercises every element type inferd feeds.

Inputs (each [N, 1]): u8, u16, u32, u64, i8, i16, i32, f16, f64 and flag (bool).
Outputs: `sum` (float, [N, 1]) of all inputs cast to float, and the inputs echoed back
(`u8_echo`, `u64_echo`, `i8_echo`, `f16_echo`, `flag_echo`) in their own types.
Run: python3 models/make_dtypes_model.py   (with onnx from models/requirements.txt)
"""

from pathlib import Path

import onnx
from onnx import TensorProto, helper

INPUTS = {
    "u8": TensorProto.UINT8,
    "u16": TensorProto.UINT16,
    "u32": TensorProto.UINT32,
    "u64": TensorProto.UINT64,
    "i8": TensorProto.INT8,
    "i16": TensorProto.INT16,
    "i32": TensorProto.INT32,
    "f16": TensorProto.FLOAT16,
    "f64": TensorProto.DOUBLE,
    "flag": TensorProto.BOOL,
}
ECHOED = ["u8", "u64", "i8", "f16", "flag"]


def main():
    inputs = [helper.make_tensor_value_info(name, ty, ["N", 1]) for name, ty in INPUTS.items()]
    nodes = [helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT) for name in INPUTS]
    nodes.append(helper.make_node("Sum", [f"{name}_f" for name in INPUTS], ["sum"]))
    nodes += [helper.make_node("Identity", [name], [f"{name}_echo"]) for name in ECHOED]
    outputs = [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 1])]
    outputs += [helper.make_tensor_value_info(f"{name}_echo", INPUTS[name], ["N", 1]) for name in ECHOED]
    graph = helper.make_graph(nodes, "dtypes", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="inferd")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(__file__).resolve().parent / "dtypes.onnx"
    path.write_bytes(model.SerializeToString())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
