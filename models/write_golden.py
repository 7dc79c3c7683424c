"""Write the golden files inferd checks each bundled house-price model against (see docs/lifecycle.md,
"Golden checks"): `schemas/<model>.golden.json`, from the reference rows and the predictions
onnxruntime (Python) gave for them in `models/<model>.reference.json`.

Called at the end of train_house_price.py; runs alone too, with nothing but the standard
library: python3 models/write_golden.py
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE.parent / "schemas"
# Relative 1e-5 is far above the f32 rounding differences between ONNX Runtime builds, and far
# below any change of weights or preprocessing; a cent absolute for prices near zero.
MODELS = [
    # (model, its output, the reference key holding onnxruntime's predictions)
    ("house_price", "price", "onnxruntime_price"),
    ("house_price_linear", "variable", "onnxruntime_variable"),
]


def write_golden(model, output, key, tolerance=None):
    reference = json.loads((HERE / f"{model}.reference.json").read_text())
    golden = {
        "model": model,
        "source": f"onnxruntime (Python) predictions in models/{model}.reference.json",
        "tolerance": {output: tolerance or {"absolute": 0.01, "relative": 1e-5}},
        "cases": [
            {"instance": instance, "outputs": {output: expected}}
            for instance, expected in zip(reference["instances"], reference[key], strict=True)
        ],
    }
    path = SCHEMAS / f"{model}.golden.json"
    path.write_text(json.dumps(golden, indent=1) + "\n")
    return path


def main():
    for model, output, key in MODELS:
        print(f"wrote {write_golden(model, output, key).relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
