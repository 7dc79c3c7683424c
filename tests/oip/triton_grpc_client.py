"""Drives inferd's gRPC endpoint with NVIDIA's tritonclient.grpc at its defaults (raw tensor
contents both ways), on the same port as HTTP, and its health service with grpcio's own
health-checking client.

Usage: triton_grpc_client.py HOST:PORT REPO_ROOT. Exits non-zero on the first failed check.
"""

import json
import sys
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BYTES": np.object_}


def tensor_inputs(metadata, rows):
    """One InferInput per model input, shaped like the model declares it, from instance rows."""
    inputs = []
    for spec in metadata.inputs:
        width = spec.shape[1] if len(spec.shape) == 2 else 1
        if width == 1:
            column = [row[spec.name] for row in rows]
        else:
            column = [list(row.values()) for row in rows]
        array = np.array(column, dtype=NUMPY[spec.datatype]).reshape(len(rows), width)
        tensor = grpcclient.InferInput(spec.name, list(array.shape), spec.datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def main():
    url, root = sys.argv[1], Path(sys.argv[2])
    client = grpcclient.InferenceServerClient(url=url)
    checks = 0

    def check(condition, what):
        nonlocal checks
        if not condition:
            sys.exit(f"tritonclient.grpc check failed: {what}")
        checks += 1

    def fails_with(call, code, words, what):
        try:
            call()
        except InferenceServerException as e:
            check(e.status() == f"StatusCode.{code}", f"{what}: status {e.status()} ({e.message()})")
            check(words in e.message(), f"{what}: message {e.message()}")
            return
        check(False, f"{what} should fail")

    check(client.is_server_live(), "server live")
    check(client.is_server_ready(), "server ready")
    check(client.get_server_metadata().name == "inferd", "server metadata")
    check(client.is_model_ready("house_price"), "model ready")
    check(client.is_model_ready("house_price", "1"), "model version ready")

    metadata = client.get_model_metadata("house_price")
    check(metadata.platform == "onnx_onnxv1", f"platform {metadata}")
    check(list(metadata.versions) == ["1"], f"versions {metadata}")
    types = {i.name: (i.datatype, list(i.shape)) for i in metadata.inputs}
    check(types["lotsize"] == ("FP32", [-1, 1]), f"lotsize {types}")
    check(types["airco"] == ("BYTES", [-1, 1]), f"airco {types}")

    # String and numeric inputs, raw by default.
    reference = json.loads((root / "models/house_price.reference.json").read_text())
    rows = reference["instances"]
    result = client.infer("house_price", tensor_inputs(metadata, rows), request_id="grpc-house-1")
    np.testing.assert_allclose(result.as_numpy("price").reshape(-1), reference["onnxruntime_price"], rtol=1e-5)
    response = result.get_response()
    check(response.id == "grpc-house-1", f"id echoed: {response.id}")
    check(response.model_version == "1", "model version")
    check(len(response.raw_output_contents) == 1, "raw outputs")
    checks += 1

    # One [N, 5] FP32 input.
    linear_meta = client.get_model_metadata("house_price_linear", "1")
    linear_ref = json.loads((root / "models/house_price_linear.reference.json").read_text())
    result = client.infer("house_price_linear", tensor_inputs(linear_meta, linear_ref["instances"]), model_version="1")
    np.testing.assert_allclose(result.as_numpy("variable").reshape(-1), linear_ref["onnxruntime_variable"], rtol=1e-5)
    checks += 1

    # Typed contents, which tritonclient does not send: the request built by hand.
    request = service_pb2.ModelInferRequest(model_name="house_price_linear")
    n = len(linear_ref["instances"])
    tensor = request.inputs.add(name=linear_meta.inputs[0].name, datatype="FP32", shape=[n, 5])
    tensor.contents.fp32_contents.extend(float(v) for row in linear_ref["instances"] for v in row.values())
    typed = client._client_stub.ModelInfer(request)
    values = np.frombuffer(typed.raw_output_contents[0], dtype=np.float32)
    np.testing.assert_allclose(values, linear_ref["onnxruntime_variable"], rtol=1e-5)
    checks += 1

    # Errors, with the codes clients branch on.
    fails_with(lambda: client.get_model_metadata("no_such_model"), "NOT_FOUND", "no_such_model", "unknown model")
    fails_with(
        lambda: client.infer("no_such_model", tensor_inputs(linear_meta, linear_ref["instances"])),
        "NOT_FOUND",
        "no_such_model",
        "infer on an unknown model",
    )
    narrow = grpcclient.InferInput(linear_meta.inputs[0].name, [1, 4], "FP32")
    narrow.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    fails_with(lambda: client.infer("house_price_linear", [narrow]), "INVALID_ARGUMENT", "shape", "wrong shape")

    # The repository extension: index, unload, load (the test server's client is local).
    index = {(m.name, m.version): m for m in client.get_model_repository_index().models}
    check(index[("house_price_linear", "1")].state == "READY", f"index {index}")
    client.unload_model("house_price_linear")
    check(not client.is_model_ready("house_price_linear"), "unloaded")
    entry = {(m.name, m.version): m for m in client.get_model_repository_index().models}[("house_price_linear", "1")]
    check((entry.state, entry.reason) == ("UNAVAILABLE", "unloaded"), f"index after unload: {entry}")
    # tritonclient has no argument for `ready`: its stub is called directly.
    ready_only = client._client_stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True))
    ready = [m.name for m in ready_only.models]
    check("house_price_linear" not in ready and "house_price" in ready, f"ready index {ready}")
    fails_with(
        lambda: client.infer("house_price_linear", tensor_inputs(linear_meta, linear_ref["instances"])),
        "UNAVAILABLE",
        "house_price_linear",
        "infer on an unloaded model",
    )
    client.load_model("house_price_linear")
    check(client.is_model_ready("house_price_linear"), "loaded again")
    fails_with(lambda: client.load_model("house_price_linear", config="{}"), "INVALID_ARGUMENT", "config", "load with a config")
    fails_with(lambda: client.load_model("no_such_model"), "NOT_FOUND", "no_such_model", "load an unknown model")

    # grpc.health.v1, as Kubernetes' gRPC probes and load balancers call it.
    with grpc.insecure_channel(url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        for service in ["", "inference.GRPCInferenceService"]:
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            check(status == serving, f"health of '{service}': {status}")
        try:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
            check(False, "an unknown service should be NOT_FOUND")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.NOT_FOUND, f"unknown service: {e.code()}")
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
        check(next(watch).status == serving, "watch starts with the status now")
        watch.cancel()

    print(f"tritonclient.grpc: {checks} checks ok against {url}")


if __name__ == "__main__":
    main()
