"""Train the bundled iris classifier and export it to ONNX.

Data: Fisher's iris data set (150 flowers, 4 measurements in cm, 3 species), shipped inside
scikit-learn (`sklearn.datasets.load_iris`), so training needs no network beyond the registry.
The model is trained on the species' names, not their indices, so that the exported graph names
its classes: skl2onnx writes them into the LinearClassifier node's `classlabels_strings`
attribute, which inferd reads (src/model/labels.rs) to key probabilities by class.

The ONNX graph has one input and two outputs:
  features       float [N, 4]  columns sepal_length, sepal_width, petal_length, petal_width
                               (the order of the properties in schemas/iris.json)
  label          string [N]    the predicted species
  probabilities  float [N, 3]  one column per class, in the order of the graph's class labels
                               (setosa, versicolor, virginica)
It is exported with options {'zipmap': False}: ZipMap's output is a sequence of maps, which
inferd does not serve; inferd keys the probabilities itself.

Writes, next to this file and in ../schemas:
  iris.onnx              the served model
  iris.reference.json    rows with the labels and probabilities onnxruntime and scikit-learn give
  ../schemas/iris.json   the instance schema (JSON Schema 2020-12) with one real example
Run: python3 models/train_iris.py   (with models/requirements.txt installed)
"""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE.parent / "schemas"
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
SEED = 20261122


def load():
    iris = load_iris()
    # load_iris names its columns "sepal length (cm)" ...; ours are the schema's properties.
    assert [n.replace(" (cm)", "").replace(" ", "_") for n in iris.feature_names] == COLUMNS
    assert list(iris.target_names) == CLASSES
    X = iris.data.astype(np.float32)
    y = np.array(iris.target_names)[iris.target]
    return X, y


def export(model):
    onx = convert_sklearn(
        model,
        initial_types=[("features", FloatTensorType([None, len(COLUMNS)]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    names = [o.name for o in onx.graph.output]
    assert names == ["label", "probabilities"], names
    onx.doc_string = "Iris species classifier (logistic regression); input columns: " + ", ".join(COLUMNS)
    onx.graph.doc_string = onx.doc_string
    # skl2onnx names the graph with a random UUID; a fixed name makes the export reproducible.
    onx.graph.name = "iris"
    onnx.checker.check_model(onx, full_check=True)
    labels = [
        [s.decode() for s in a.strings]
        for n in onx.graph.node
        if n.domain == "ai.onnx.ml"
        for a in n.attribute
        if a.name == "classlabels_strings"
    ]
    assert labels == [CLASSES], labels
    return onx


def check_signature(path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = [(i.name, i.type, i.shape) for i in session.get_inputs()]
    outs = [(o.name, o.type, o.shape) for o in session.get_outputs()]
    print("inputs: ", ins)
    print("outputs:", outs)
    assert len(ins) == 1 and ins[0][0] == "features" and ins[0][1] == "tensor(float)" and ins[0][2][1] == 4, ins
    assert outs[0][:2] == ("label", "tensor(string)") and len(outs[0][2]) == 1, outs
    assert outs[1][:2] == ("probabilities", "tensor(float)") and outs[1][2][1] == 3, outs
    return session


def schema(example):
    described = {
        "sepal_length": "Sepal length in cm.",
        "sepal_width": "Sepal width in cm.",
        "petal_length": "Petal length in cm.",
        "petal_width": "Petal width in cm.",
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "iris instance",
        "description": "Measurements of one iris flower; the model takes them as one [N, 4] float matrix, "
        "columns in the order of `properties`.",
        "type": "object",
        "properties": {
            c: {"type": "number", "minimum": 0, "maximum": 100, "description": described[c]} for c in COLUMNS
        },
        "required": COLUMNS,
        "additionalProperties": False,
        "examples": [example],
    }


def instance(row):
    # float32 -> shortest decimal that round-trips to the same float32 (5.1, not 5.099999904632568).
    return {c: float(np.format_float_positional(v, trim="-")) for c, v in zip(COLUMNS, row)}


def main():
    X, y = load()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=SEED, stratify=y)
    model = LogisticRegression(max_iter=1000, random_state=SEED).fit(X_train, y_train)
    assert list(model.classes_) == CLASSES, model.classes_
    accuracy = model.score(X_test, y_test)
    print(f"held-out accuracy = {accuracy:.3f} on {len(y_test)} flowers")

    onx = export(model)
    path = HERE / "iris.onnx"
    path.write_bytes(onx.SerializeToString())
    session = check_signature(path)

    # One flower of each species first (the first of each in the data set), then held-out ones.
    first = [int(np.flatnonzero(y == c)[0]) for c in CLASSES]
    rows = np.concatenate([X[first], X_test[:9]]).astype(np.float32)
    onnx_label, onnx_proba = session.run(["label", "probabilities"], {"features": rows})
    sk_label = model.predict(rows)
    sk_proba = model.predict_proba(rows)
    np.testing.assert_array_equal(onnx_label, sk_label)
    np.testing.assert_allclose(onnx_proba, sk_proba, rtol=1e-4, atol=1e-6)

    reference = {
        "model": "iris",
        "note": "onnxruntime (Python) and scikit-learn outputs; probabilities columns follow `classes`",
        "held_out_accuracy": round(accuracy, 4),
        "columns": COLUMNS,
        "classes": CLASSES,
        "instances": [instance(r) for r in rows],
        "onnxruntime_label": [str(v) for v in onnx_label],
        "onnxruntime_probabilities": [[float(p) for p in r] for r in onnx_proba],
        "sklearn_label": [str(v) for v in sk_label],
        "sklearn_probabilities": [[float(p) for p in r] for r in sk_proba],
    }
    (HERE / "iris.reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    (SCHEMAS / "iris.json").write_text(json.dumps(schema(instance(X[first[0]])), indent=2) + "\n")
    print(f"wrote iris.onnx, iris.reference.json ({len(rows)} rows) and schemas/iris.json")


if __name__ == "__main__":
    main()
