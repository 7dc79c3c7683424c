"""Drives inferd with NVIDIA's tritonclient (HTTP), a standard Open Inference Protocol v2 client.

Usage: triton_client.py HOST:PORT REPO_ROOT. Exits non-zero on the first failed check.
"""

import json
import re
import sys
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BYTES": np.object_}


def tensor_inputs(metadata, rows, binary_data=False):
    """One InferInput per model input, shaped like the model declares it, from instance rows."""
    inputs = []
    for spec in metadata["inputs"]:
        width = spec["shape"][1] if len(spec["shape"]) == 2 else 1
        if width == 1:
            column = [row[spec["name"]] for row in rows]
        else:
            column = [list(row.values()) for row in rows]
        array = np.array(column, dtype=NUMPY[spec["datatype"]]).reshape(len(rows), width)
        tensor = httpclient.InferInput(spec["name"], list(array.shape), spec["datatype"])
        tensor.set_data_from_numpy(array, binary_data=binary_data)
        inputs.append(tensor)
    return inputs


def significant_digits(text):
    """The digits of a decimal number's text, without sign, point, exponent or padding zeros."""
    mantissa = text.lower().lstrip("-").split("e")[0].replace(".", "")
    return mantissa.strip("0") or "0"


def main():
    url, root = sys.argv[1], Path(sys.argv[2])
    client = httpclient.InferenceServerClient(url=url)
    checks = 0

    def check(condition, what):
        nonlocal checks
        if not condition:
            sys.exit(f"tritonclient check failed: {what}")
        checks += 1

    check(client.is_server_live(), "server live")
    check(client.is_server_ready(), "server ready")
    server = client.get_server_metadata()
    check(server["name"] == "inferd", f"server metadata {server}")
    check(client.is_model_ready("house_price"), "model ready")
    check(client.is_model_ready("house_price", "1"), "model version ready")
    check(not client.is_model_ready("no_such_model"), "unknown model not ready")

    metadata = client.get_model_metadata("house_price")
    check(metadata["platform"] == "onnx_onnxv1", f"platform {metadata}")
    check(metadata["versions"] == ["1"], f"versions {metadata}")
    types = {i["name"]: (i["datatype"], i["shape"]) for i in metadata["inputs"]}
    check(types["lotsize"] == ("FP32", [-1, 1]), f"lotsize {types}")
    check(types["bedrooms"] == ("INT64", [-1, 1]), f"bedrooms {types}")
    check(types["airco"] == ("BYTES", [-1, 1]), f"airco {types}")

    reference = json.loads((root / "models/house_price.reference.json").read_text())
    rows = reference["instances"]
    result = client.infer(
        "house_price",
        tensor_inputs(metadata, rows),
        outputs=[httpclient.InferRequestedOutput("price", binary_data=False)],
        request_id="triton-house-1",
    )
    price = result.as_numpy("price").reshape(-1)
    np.testing.assert_allclose(price, reference["onnxruntime_price"], rtol=1e-5)
    check(result.get_response()["id"] == "triton-house-1", "id echoed")
    check(result.get_response()["model_version"] == "1", "model version")

    linear_meta = client.get_model_metadata("house_price_linear", "1")
    linear_ref = json.loads((root / "models/house_price_linear.reference.json").read_text())
    result = client.infer("house_price_linear", tensor_inputs(linear_meta, linear_ref["instances"]), model_version="1")
    np.testing.assert_allclose(result.as_numpy("variable").reshape(-1), linear_ref["onnxruntime_variable"], rtol=1e-5)
    checks += 2

    try:
        client.get_model_metadata("no_such_model")
        check(False, "unknown model metadata should fail")
    except InferenceServerException as e:
        check("no_such_model" in str(e), f"unknown model error: {e}")
    bad = tensor_inputs(metadata, rows[:1])
    bad[1] = httpclient.InferInput("bedrooms", [1, 1], "FP32")
    bad[1].set_data_from_numpy(np.array([[3.0]], dtype=np.float32), binary_data=False)
    try:
        client.infer("house_price", bad)
        check(False, "wrong datatype should fail")
    except InferenceServerException as e:
        check("datatype FP32 does not match the model's INT64" in str(e), f"wrong datatype error: {e}")

    # The binary tensor data extension, at the client's defaults: every input binary, and the
    # outputs binary whether asked for by name or left to the server.
    for outputs in (None, [httpclient.InferRequestedOutput("price")]):
        result = client.infer("house_price", tensor_inputs(metadata, rows, binary_data=True), outputs=outputs)
        response = result.get_response()
        check(response["outputs"][0]["parameters"]["binary_data_size"] == 4 * len(rows), f"binary output {response}")
        check("data" not in response["outputs"][0], f"binary output has no data {response}")
        np.testing.assert_allclose(result.as_numpy("price").reshape(-1), reference["onnxruntime_price"], rtol=1e-5)
    result = client.infer("house_price_linear", tensor_inputs(linear_meta, linear_ref["instances"], binary_data=True))
    np.testing.assert_allclose(result.as_numpy("variable").reshape(-1), linear_ref["onnxruntime_variable"], rtol=1e-5)
    checks += 1

    # f32 outputs are written as the shortest text that reads back as the same float32, which
    # is what numpy prints for a float32.
    body = json.dumps({"instances": rows}).encode()
    request = urllib.request.Request(f"http://{url}/predict", body, {"content-type": "application/json"})
    text = urllib.request.urlopen(request).read().decode()
    prices = re.findall(r'"price":([-0-9.eE+]+)', text)
    check(len(prices) == len(rows), f"prices in {text[:200]}")
    for written in prices:
        value = np.float32(written)
        check(float(np.float32(value)) == float(np.float32(float(written))), f"{written} reads back")
        numpy_text = str(value)
        check(significant_digits(written) == significant_digits(numpy_text), f"{written} vs numpy's {numpy_text}")

    # The model repository extension: the index, unload and load, as Triton serves them.
    def states():
        return {(m["name"], m["version"]): (m["state"], m.get("reason")) for m in client.get_model_repository_index()}

    both = {("house_price", "1"): ("READY", None), ("house_price_linear", "1"): ("READY", None)}
    check(states() == both, f"repository index {states()}")
    client.unload_model("house_price_linear")
    check(states()[("house_price_linear", "1")] == ("UNAVAILABLE", "unloaded"), f"after unload {states()}")
    check(not client.is_model_ready("house_price_linear"), "an unloaded model is not ready")
    check(client.is_server_ready(), "a model unloaded on purpose leaves the server ready, as in Triton")
    try:
        client.infer("house_price_linear", tensor_inputs(linear_meta, linear_ref["instances"]))
        check(False, "inference on an unloaded model is refused")
    except InferenceServerException as e:
        check("unloaded" in e.message(), f"refusal names the cause: {e}")
    ready_only = client.get_model_repository_index()
    check(len(ready_only) == 2, "the index lists unloaded models too")
    client.infer("house_price", tensor_inputs(metadata, rows))
    client.load_model("house_price_linear")
    check(states() == both, f"after load {states()}")
    check(client.is_server_ready(), "ready again")
    result = client.infer("house_price_linear", tensor_inputs(linear_meta, linear_ref["instances"]))
    np.testing.assert_allclose(result.as_numpy("variable").reshape(-1), linear_ref["onnxruntime_variable"], rtol=1e-5)
    try:
        client.load_model("no_such_model")
        check(False, "loading a model the config does not name is refused")
    except InferenceServerException as e:
        check("not served here" in e.message(), f"unknown model: {e}")

    print(f"tritonclient {httpclient.__name__}: {checks} checks ok against {url}")


if __name__ == "__main__":
    main()
