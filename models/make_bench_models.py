"""Builds the benchmark MLPs: models/wide_mlp.onnx (committed) and models/compute_mlp.onnx (not).

Both take `features` (float32, [N, 64]) and give `score` (float32, [N, 1]) through Gemm+Relu
layers with random weights drawn from a fixed seed (He initialisation, so activations stay of
order one and the score is finite and not zero):

- wide_mlp:    64-512-512-256-1     (~0.43 M parameters, ~1.7 MB)
- compute_mlp: 64-2048-2048-2048-1  (~8.5 M parameters, ~34 MB; git-ignored, built on demand
  by bench/request_path.sh)

The bytes written are the same on every run: fixed seed, fixed graph, deterministic protobuf
serialisation, no producer version or timestamp in the file.
Run: python3 models/make_bench_models.py [wide] [compute]   (default: both; numpy and onnx
from models/requirements.txt)
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUTS = 64
MODELS = {
    "wide": ("wide_mlp", [INPUTS, 512, 512, 256, 1], 20261101),
    "compute": ("compute_mlp", [INPUTS, 2048, 2048, 2048, 1], 20261102),
}


def build(name, widths, seed):
    rng = np.random.default_rng(seed)
    initializers, nodes = [], []
    current = "features"
    layers = len(widths) - 1
    for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        last = i == layers - 1
        # He initialisation for the Relu layers; the output layer keeps unit variance.
        scale = np.sqrt((1.0 if last else 2.0) / fan_in)
        w = (rng.standard_normal((fan_in, fan_out)) * scale).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        initializers += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        gemm_out = "score" if last else f"gemm{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [gemm_out], name=f"gemm{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [f"relu{i}"], name=f"relu{i}"))
            current = f"relu{i}"
    features = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", INPUTS])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])
    graph = helper.make_graph(nodes, name, [features], [score], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.producer_name = "models/make_bench_models.py"
    model.producer_version = ""
    onnx.checker.check_model(model)
    return model


def main(argv):
    which = argv or list(MODELS)
    unknown = [w for w in which if w not in MODELS]
    if unknown:
        sys.exit(f"make_bench_models: unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    for key in which:
        name, widths, seed = MODELS[key]
        model = build(name, widths, seed)
        out = Path(__file__).with_name(f"{name}.onnx")
        data = model.SerializeToString(deterministic=True)
        tmp = out.with_suffix(".onnx.tmp")
        tmp.write_bytes(data)
        tmp.replace(out)
        print(f"wrote {out} ({len(data)} bytes, {'-'.join(map(str, widths))})")


if __name__ == "__main__":
    main(sys.argv[1:])
