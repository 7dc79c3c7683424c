"""Offline checks of deploy/kubernetes, run by check.sh with the repo's .venv.

Schema validation (kubernetes-validate for core kinds, committed JSON schemas for the CRDs),
cross-references between the manifests, and real starts of inferd: with the Deployment's
runtime.toml and env, and with the ServingRuntime's command, args, env and settings ConfigMap on
KServe model folders (model.onnx + schema.json; version folders). Prints `ok - ...` / `not ok - ...: why` and a closing count line.
"""

import copy
import fnmatch
import gzip
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# Oldest version the defaults need (image volumes on by default), and the newest shipped.
K8S_VERSIONS = ["1.35", "1.37"]
DRAIN_MARGIN_S = 5
PODSPEC_DEFS = "https://kubernetes.io/api/_definitions.json"

passed = 0
failed = 0


def report(ok, what, why=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok - {what}", flush=True)
    else:
        failed += 1
        print(f"not ok - {what}: {why}", flush=True)


def check(what, fn):
    """Run fn(); it returns None/"" for success or a reason string; exceptions fail too."""
    try:
        why = fn()
    except Exception as e:  # a check must never stop the others
        why = f"{type(e).__name__}: {e}"
    report(not why, what, why or "")


# --- network guard: everything here must work offline ------------------------------------

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
blocked_attempts = []


def _is_loopback(address):
    if isinstance(address, tuple) and address:
        host = address[0]
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"
    return True  # unix sockets


def _guarded_connect(self, address):
    if not _is_loopback(address):
        blocked_attempts.append(address)
        raise OSError(f"check.py: network access to {address!r} blocked")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_loopback(address):
        blocked_attempts.append(address)
        return 111
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex


# --- loading ---------------------------------------------------------------------------------


def load(rel):
    with open(os.path.join(HERE, rel)) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if len(docs) != 1:
        raise ValueError(f"{rel}: expected one document, found {len(docs)}")
    return docs[0]


def load_toml(rel):
    with open(os.path.join(HERE, rel), "rb") as f:
        return tomllib.load(f)


def strategic_merge(base, patch):
    """Enough of kubectl's strategic merge for our patches: maps merge, lists of named maps
    merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(patch, list)
            and all(isinstance(i, dict) and "name" in i for i in base + patch)):
        out = [copy.deepcopy(i) for i in base]
        for item in patch:
            idx = next((n for n, b in enumerate(out) if b["name"] == item["name"]), None)
            if idx is None:
                out.append(copy.deepcopy(item))
            else:
                out[idx] = strategic_merge(out[idx], item)
        return out
    return copy.deepcopy(patch)


def by_name(items, name):
    for i in items or []:
        if i.get("name") == name:
            return i
    raise KeyError(name)


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def selector_matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


# --- schema validation -----------------------------------------------------------------------

CORE_FILES = ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"]
OBJECT_STORE = "optional/prediction-log-object-store"
OBJECT_STORE_PATCH = f"{OBJECT_STORE}/deployment-patch.yaml"
# prediction_log.object_store.spool_max_bytes when runtime.toml does not set it.
SPOOL_MAX_BYTES_DEFAULT = 1 << 30
# The least time the last part's upload gets at SIGTERM: shutdown_grace_seconds less the longest
# a request may still take (request_timeout_ms). A floor chosen here, not a measurement.
UPLOAD_BUDGET_S = 10
# The ServingRuntime's one argument: KServe's model folder, named like the InferenceService
# (KServe replaces {{.Name}} with its name).
KSERVE_MODEL_ARG = "{{.Name}}=/mnt/models"
CRD_FILES = {
    "servicemonitor.yaml": "servicemonitor.v1.json",
    "kserve/servingruntime.yaml": "servingruntime.v1alpha1.json",
    "kserve/inferenceservice.yaml": "inferenceservice.v1beta1.json",
}


def k8s_validate(doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path)
        return f"{path}: {e.message[:300]}"
    return None


def k8s_definitions():
    # The same Kubernetes type schemas kubernetes-validate uses, read from its package: the
    # CRD schemas reference Container, Volume, ObjectMeta... by this document's $id.
    newest = kubernetes_validate.utils.latest_version()
    d = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{newest}-local-strict/_definitions.json", newest)
    assert d.get("$id") == PODSPEC_DEFS, d.get("$id")
    return d


def crd_validator(schema_file, defs):
    with open(os.path.join(HERE, "schemas", schema_file)) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    # No retrieve function: a reference outside the registry fails instead of being fetched.
    registry = Registry().with_resource(PODSPEC_DEFS, Resource.from_contents(defs))
    return jsonschema.Draft202012Validator(schema, registry=registry), schema


def first_error(validator, doc):
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    if not errors:
        return None
    e = errors[0]
    return "/".join(str(p) for p in e.path) + ": " + e.message[:300]


def schema_checks():
    for rel in CORE_FILES:
        doc = load(rel)
        for v in K8S_VERSIONS:
            check(f"{rel} ({doc['kind']}) valid for Kubernetes {v} (kubernetes-validate, strict)",
                  lambda doc=doc, v=v: k8s_validate(doc, v))

    def merged_ok():
        merged = strategic_merge(load("deployment.yaml"),
                                 load("optional/prediction-log-shipper/deployment-patch.yaml"))
        return k8s_validate(merged, K8S_VERSIONS[-1])
    check("deployment.yaml with optional/prediction-log-shipper merged in is valid (strict)",
          merged_ok)

    for v in K8S_VERSIONS:
        check(f"deployment.yaml with optional/prediction-log-object-store merged in is valid for "
              f"Kubernetes {v} (strict)",
              lambda v=v: k8s_validate(strategic_merge(load("deployment.yaml"), load(OBJECT_STORE_PATCH)), v))

    # The validator must reject what the API server would: prove strictness on a typo.
    def strict_bites():
        doc = load("deployment.yaml")
        doc["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
        return None if k8s_validate(doc, K8S_VERSIONS[-1]) else "a misspelt field passed"
    check("kubernetes-validate rejects a misspelt container field (strict mode works)", strict_bites)

    defs = k8s_definitions()
    validators = {}
    for rel, schema_file in CRD_FILES.items():
        def one(rel=rel, schema_file=schema_file):
            validator, schema = crd_validator(schema_file, defs)
            validators[rel] = validator
            if "$comment" not in schema:
                return f"{schema_file} has no $comment naming its source"
            return first_error(validator, load(rel))
        check(f"{rel} valid against schemas/{schema_file}", one)

    # Each schema must fail on the kind of mistake it exists to catch.
    def mutate(rel, fn, what):
        def run():
            if rel not in validators:
                return "schema did not load"
            doc = load(rel)
            fn(doc)
            return None if first_error(validators[rel], doc) else f"{what} passed"
        return run
    check("servicemonitor schema rejects missing spec.endpoints",
          mutate("servicemonitor.yaml", lambda d: d["spec"].pop("endpoints"), "no endpoints"))
    check("servicemonitor schema rejects a bad interval",
          mutate("servicemonitor.yaml",
                 lambda d: d["spec"]["endpoints"][0].update(interval="15 seconds"), "bad interval"))
    check("servingruntime schema rejects a misspelt spec field",
          mutate("kserve/servingruntime.yaml",
                 lambda d: d["spec"].update(protocolVersion=d["spec"].pop("protocolVersions")),
                 "protocolVersion"))
    check("servingruntime schema rejects an unknown container field (Kubernetes' Container schema)",
          mutate("kserve/servingruntime.yaml",
                 lambda d: d["spec"]["containers"][0].update(argz=[]), "argz"))
    check("inferenceservice schema rejects a model without modelFormat",
          mutate("kserve/inferenceservice.yaml",
                 lambda d: d["spec"]["predictor"]["model"].pop("modelFormat"), "no modelFormat"))
    check("inferenceservice schema rejects protocolVersion v3",
          mutate("kserve/inferenceservice.yaml",
                 lambda d: d["spec"]["predictor"]["model"].update(protocolVersion="v3"), "v3"))
    check("inferenceservice schema rejects a name with an underscore",
          mutate("kserve/inferenceservice.yaml",
                 lambda d: d["metadata"].update(name="house_price"), "house_price"))


# --- cross-references and invariants ---------------------------------------------------------


def static_checks():
    dep = load("deployment.yaml")
    svc = load("service.yaml")
    hpa = load("hpa.yaml")
    pdb = load("pdb.yaml")
    smon = load("servicemonitor.yaml")
    kust = load("kustomization.yaml")
    comp = load("optional/prediction-log-shipper/kustomization.yaml")
    patch = load("optional/prediction-log-shipper/deployment-patch.yaml")
    adapter = load("prometheus-adapter-values.yaml")
    sr = load("kserve/servingruntime.yaml")
    isvc = load("kserve/inferenceservice.yaml")
    cfg = load_toml("runtime.toml")
    kcfg = load_toml("kserve/runtime.toml")
    kkust = load("kserve/kustomization.yaml")
    kkconf = load("kserve/kustomizeconfig.yaml")
    with open(os.path.join(REPO, "openapi.json")) as f:
        openapi = json.load(f)

    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    c = by_name(pod["containers"], "inferd")
    env = env_of(c)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    # kustomization: every file it names exists; every manifest here is in it or deliberately not.
    def kust_files():
        names = kust["resources"] + [f for g in kust["configMapGenerator"] for f in g["files"]]
        missing = [n for n in names if not os.path.exists(os.path.join(HERE, n))]
        if missing:
            return f"missing {missing}"
        outside = {"kustomization.yaml", "prometheus-adapter-values.yaml"}
        stray = [f for f in os.listdir(HERE) if f.endswith(".yaml")
                 and f not in outside and f not in kust["resources"]]
        return f"manifests not in kustomization.yaml: {stray}" if stray else None
    check("kustomization.yaml names existing files and every top-level manifest", kust_files)

    def component_files():
        base = os.path.join(HERE, "optional/prediction-log-shipper")
        names = [p["path"] for p in comp["patches"]] + [
            f for g in comp["configMapGenerator"] for f in g["files"]]
        missing = [n for n in names if not os.path.exists(os.path.join(base, n))]
        if missing:
            return f"missing {missing}"
        if comp["kind"] != "Component":
            return "not a kustomize Component"
        if (patch["kind"], patch["metadata"]["name"]) != ("Deployment", dep["metadata"]["name"]):
            return "the patch does not target the Deployment"
        cm = comp["configMapGenerator"][0]["name"]
        used = [v["configMap"]["name"] for v in patch["spec"]["template"]["spec"]["volumes"]
                if "configMap" in v]
        return None if cm in used else f"ConfigMap {cm} is not mounted by the patch"
    check("optional/prediction-log-shipper component: files exist, patch targets the Deployment",
          component_files)

    def config_map():
        gen = by_name(kust["configMapGenerator"], "inferd-config")
        if volumes["config"]["configMap"]["name"] != gen["name"]:
            return "Deployment mounts a different ConfigMap than kustomization generates"
        key = os.path.basename(gen["files"][0])
        want = os.path.join(mounts["config"]["mountPath"], key)
        if env.get("INFERD_CONFIG") != want:
            return f"INFERD_CONFIG is {env.get('INFERD_CONFIG')}, the file is mounted at {want}"
        if c.get("command", [None])[-1] != "serve" or "--config" in c.get("args", []):
            return "command must be `inferd serve` without --config (a flag beats INFERD_CONFIG)"
        return None
    check("INFERD_CONFIG names runtime.toml in the generated ConfigMap's mount", config_map)

    def port_agree():
        want = {"PORT env": int(env["PORT"]), "runtime.toml server.port": cfg["server"]["port"],
                "containerPort http": ports["http"],
                "prometheus.io/port": int(dep["spec"]["template"]["metadata"]["annotations"]
                                          ["prometheus.io/port"])}
        return None if len(set(want.values())) == 1 else f"ports disagree: {want}"
    check("PORT, server.port, containerPort `http` and the scrape annotation agree", port_agree)

    def host_all():
        if env.get("INFERD_HOST") != "0.0.0.0" or cfg["server"]["host"] != "0.0.0.0":
            return "inferd must bind 0.0.0.0 in a pod (its built-in default is 127.0.0.1)"
        return None
    check("inferd binds 0.0.0.0 in the pod (INFERD_HOST and runtime.toml)", host_all)

    routes = {p for p, ops in openapi["paths"].items() if "get" in ops}

    def probes():
        want = {"startupProbe": "/ready", "readinessProbe": "/ready", "livenessProbe": "/health"}
        for probe, path in want.items():
            h = c[probe]["httpGet"]
            if h["path"] != path:
                return f"{probe} path {h['path']}, want {path}"
            if h["path"] not in routes:
                return f"{probe} path {h['path']} is not a GET route in openapi.json"
            port = h["port"]
            if (port not in ports) if isinstance(port, str) else (port not in ports.values()):
                return f"{probe} port {port} is not a container port"
        if c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] < 60:
            return "startupProbe allows under 60 s for model load"
        return None
    check("probes: startup and readiness on /ready, liveness on /health, routes of openapi.json, "
          "port `http`", probes)

    def kserve_probes():
        k = by_name(sr["spec"]["containers"], "kserve-container")
        kports = [p["containerPort"] for p in k["ports"]]
        for probe in ("readinessProbe", "livenessProbe"):
            h = k[probe]["httpGet"]
            if h["path"] not in routes or not h["path"].startswith("/v2/health/"):
                return f"{probe} path {h['path']} is not a v2 health route of openapi.json"
            if h["port"] not in kports:
                return f"{probe} port {h['port']} is not the container port"
        if kports != [8080] or env_of(k).get("PORT") != "8080" or kcfg["server"]["port"] != 8080:
            return "KServe sends traffic to 8080: containerPort, PORT and server.port must say so"
        return None
    check("ServingRuntime: one container kserve-container on 8080, probes on /v2/health/*",
          kserve_probes)

    def kserve_grpc():
        k = by_name(sr["spec"]["containers"], "kserve-container")
        if set(sr["spec"]["protocolVersions"]) != {"v2", "grpc-v2"}:
            return f"protocolVersions {sr['spec']['protocolVersions']}, want v2 and grpc-v2"
        # Knative allows one container port; its name `h2c` (KServe's convention for gRPC)
        # makes the queue-proxy speak HTTP/2 cleartext to inferd, for REST and gRPC alike.
        names = [(p.get("name"), p["containerPort"]) for p in k["ports"]]
        return None if names == [("h2c", 8080)] else f"ports {names}, want one named h2c on 8080"
    check("ServingRuntime: protocolVersions v2 and grpc-v2, its one port named h2c on 8080 "
          "(REST and gRPC)", kserve_grpc)

    def drain():
        pre = c["lifecycle"]["preStop"]
        if "sleep" not in pre:
            return "preStop must use the sleep action (the image has no shell)"
        sleep = pre["sleep"]["seconds"]
        grace = cfg["server"].get("shutdown_grace_seconds", 25)
        need = sleep + grace + DRAIN_MARGIN_S
        tgps = pod["terminationGracePeriodSeconds"]
        if tgps < need:
            return f"terminationGracePeriodSeconds {tgps} < preStop {sleep} + grace {grace} + {DRAIN_MARGIN_S}"
        return None
    check("terminationGracePeriodSeconds >= preStop sleep + shutdown_grace_seconds + 5", drain)

    def drain_with_shipper():
        with open(os.path.join(HERE, "optional/prediction-log-shipper/fluent-bit.yaml")) as f:
            flb = yaml.safe_load(f)
        sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        grace = cfg["server"].get("shutdown_grace_seconds", 25)
        # Native sidecars are stopped after the main container: their flush adds to the drain.
        need = sleep + grace + max(DRAIN_MARGIN_S, flb["service"]["grace"])
        tgps = pod["terminationGracePeriodSeconds"]
        return None if tgps >= need else f"{tgps} < {need}"
    check("terminationGracePeriodSeconds also covers the log shipper's flush grace", drain_with_shipper)

    os_comp = load(f"{OBJECT_STORE}/kustomization.yaml")
    os_patch = load(OBJECT_STORE_PATCH)
    os_dep = strategic_merge(dep, os_patch)
    os_pod = os_dep["spec"]["template"]["spec"]
    os_c = by_name(os_pod["containers"], "inferd")
    os_env = {e["name"]: e for e in os_c.get("env", [])}

    def object_store_component():
        base = os.path.join(HERE, OBJECT_STORE)
        missing = [p["path"] for p in os_comp["patches"]
                   if not os.path.exists(os.path.join(base, p["path"]))]
        if missing:
            return f"missing {missing}"
        if os_comp["kind"] != "Component":
            return "not a kustomize Component"
        if (os_patch["kind"], os_patch["metadata"]["name"]) != ("Deployment", dep["metadata"]["name"]):
            return "the patch does not target the Deployment"
        both = {"optional/prediction-log-shipper", OBJECT_STORE} <= set(kust.get("components") or [])
        return "kustomization.yaml enables both the shipper and the object store" if both else None
    check(f"{OBJECT_STORE} component: files exist, patch targets the Deployment, not combined "
          "with the shipper", object_store_component)

    def object_store_env():
        sink = os_env.get("INFERD_PREDICTION_LOG_SINK", {}).get("value")
        if sink != "object_store":
            return f"INFERD_PREDICTION_LOG_SINK is {sink!r}"
        url = os_env.get("INFERD_PREDICTION_LOG_URL", {}).get("value", "")
        if not re.fullmatch(r"(s3|gs|az)://[a-z0-9][a-z0-9.-]*/[^\s]+", url):
            return f"INFERD_PREDICTION_LOG_URL {url!r} is not <scheme>://bucket/prefix"
        if url.startswith("s3://") and not (os_env.get("AWS_REGION") or os_env.get("AWS_DEFAULT_REGION")):
            return "no AWS_REGION for an s3:// URL"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            ref = os_env.get(key, {}).get("valueFrom", {}).get("secretKeyRef", {})
            if "value" in os_env.get(key, {}) or not ref.get("name") or ref.get("key") != key:
                return f"{key} must come from a Secret (secretKeyRef with key {key}), not a literal"
        literal = [k for k, e in os_env.items() if "SECRET" in k and "value" in e]
        return f"secrets given as literal values: {literal}" if literal else None
    check(f"{OBJECT_STORE}: sink object_store, URL bucket/prefix, region, AWS credentials "
          "from a Secret (secretKeyRef)", object_store_env)

    def object_store_spool():
        d = cfg["prediction_log"]["directory"]
        vols = {v["name"]: v for v in os_pod["volumes"]}
        mnts = {m["name"]: m for m in os_c["volumeMounts"]}
        dir_env = os_env.get("INFERD_PREDICTION_LOG_DIR", {}).get("value")
        if not (d == dir_env == mnts["predictions"]["mountPath"]):
            return "the spool (prediction_log.directory), INFERD_PREDICTION_LOG_DIR and the mount disagree"
        if "emptyDir" not in vols["predictions"]:
            return "the spool is not on the pod's emptyDir"
        limit = vols["predictions"]["emptyDir"]["sizeLimit"]
        m = re.fullmatch(r"(\d+)(Mi|Gi)", limit)
        size = int(m.group(1)) * (2**20 if m.group(2) == "Mi" else 2**30)
        spool = cfg["prediction_log"].get("object_store", {}).get("spool_max_bytes", SPOOL_MAX_BYTES_DEFAULT)
        return None if spool < size else f"spool_max_bytes {spool} does not fit sizeLimit {limit}"
    check(f"{OBJECT_STORE}: the spool is the emptyDir at prediction_log.directory, and "
          "spool_max_bytes < its sizeLimit", object_store_spool)

    def object_store_drain():
        sleep = os_c["lifecycle"]["preStop"]["sleep"]["seconds"]
        grace = cfg["server"].get("shutdown_grace_seconds", 25)
        tgps = os_pod["terminationGracePeriodSeconds"]
        if tgps < sleep + grace + DRAIN_MARGIN_S:
            return f"terminationGracePeriodSeconds {tgps} < preStop {sleep} + grace {grace} + {DRAIN_MARGIN_S}"
        left = grace - cfg["server"].get("request_timeout_ms", 10000) / 1000
        return None if left >= UPLOAD_BUDGET_S else \
            f"shutdown_grace_seconds leaves {left:.0f} s after the longest request, under {UPLOAD_BUDGET_S} s"
    check(f"{OBJECT_STORE}: terminationGracePeriodSeconds covers inferd's whole grace, which leaves "
          f"at least {UPLOAD_BUDGET_S} s for the last upload after the longest request", object_store_drain)

    def kserve_drain():
        # ServingRuntimes cannot set the grace period: Kubernetes' default 30 s applies.
        k = by_name(sr["spec"]["containers"], "kserve-container")
        grace = kcfg["server"].get("shutdown_grace_seconds", 25)
        if "lifecycle" in k:
            return "a preStop hook would eat into the default 30 s grace period"
        return None if grace + DRAIN_MARGIN_S <= 30 else f"grace {grace} + {DRAIN_MARGIN_S} > 30"
    check("KServe: shutdown_grace_seconds + 5 fits the default 30 s grace period", kserve_drain)

    def security():
        psc, csc = pod["securityContext"], c["securityContext"]
        want = [(psc.get("runAsNonRoot"), True), (psc.get("runAsUser"), 10001),
                (psc.get("seccompProfile", {}).get("type"), "RuntimeDefault"),
                (csc.get("readOnlyRootFilesystem"), True),
                (csc.get("allowPrivilegeEscalation"), False),
                (csc.get("capabilities", {}).get("drop"), ["ALL"]),
                (pod.get("automountServiceAccountToken"), False),
                (pod.get("enableServiceLinks"), False)]
        bad = [w for w in want if w[0] != w[1]]
        return f"got/want {bad}" if bad else None
    check("pod security: non-root 10001, read-only root, no escalation, no capabilities, "
          "RuntimeDefault seccomp, no token, no service links", security)

    def kserve_security():
        k = by_name(sr["spec"]["containers"], "kserve-container")
        sc = k["securityContext"]
        ok = (sc.get("runAsNonRoot") and sc.get("runAsUser") == 10001
              and sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
              and sc.get("capabilities", {}).get("drop") == ["ALL"])
        return None if ok else f"securityContext {sc}"
    check("ServingRuntime container: same hardening", kserve_security)

    def resources():
        r = c["resources"]
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in r.get(kind, {}):
                    return f"{kind}.{res} missing"
        threads = len({m["name"] for m in cfg["models"]}) * cfg["inference"]["sessions"] \
            * cfg["inference"]["intra_op_threads"]
        cpu = r["requests"]["cpu"]
        cpu = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        # Inference threads only run while their model has work: one busy model at a time is
        # what the request covers; more than 2x oversubscription at full load is a mistake.
        return None if cpu * 2 >= threads else f"cpu request {cpu} for {threads} inference threads"
    check("resources: CPU and memory requests and limits, CPU request fits the inference threads",
          resources)

    def log_volume():
        d = cfg["prediction_log"]["directory"]
        if not (d == env["INFERD_PREDICTION_LOG_DIR"] == mounts["predictions"]["mountPath"]):
            return "prediction_log.directory, INFERD_PREDICTION_LOG_DIR and the mount disagree"
        if "emptyDir" not in volumes["predictions"]:
            return "predictions is not an emptyDir"
        limit = volumes["predictions"]["emptyDir"]["sizeLimit"]
        m = re.fullmatch(r"(\d+)(Mi|Gi)", limit)
        size = int(m.group(1)) * (2**20 if m.group(2) == "Mi" else 2**30)
        if cfg["prediction_log"]["max_bytes"] >= size:
            return f"max_bytes {cfg['prediction_log']['max_bytes']} does not fit sizeLimit {limit}"
        return None
    check("prediction log: one folder in runtime.toml, env and emptyDir; max_bytes < sizeLimit",
          log_volume)

    def model_paths():
        mount = mounts["models"]["mountPath"].rstrip("/") + "/"
        for m in cfg["models"]:
            for key in ("path", "schema"):
                if not m[key].startswith(mount):
                    return f"{m['name']}.{key} {m[key]} is not under the models mount {mount}"
        if not mounts["models"].get("readOnly"):
            return "models should be mounted read-only"
        return None
    check("runtime.toml's model files are on the read-only models volume", model_paths)

    def model_image():
        with open(os.path.join(HERE, "model-image/Dockerfile")) as f:
            text = f.read()
        copied = {}
        for line in text.splitlines():
            parts = line.split()
            if parts[:1] == ["COPY"]:
                *srcs, dest = parts[1:]
                for s in srcs:
                    if not os.path.exists(os.path.join(REPO, s)):
                        return f"COPY source {s} is not in the repository"
                    name = os.path.basename(s) if dest.endswith("/") else os.path.basename(dest)
                    copied[os.path.join(dest.rstrip("/") if dest.endswith("/") else
                                        os.path.dirname(dest), name)] = s
        sub = mounts["models"].get("subPath", "")
        for m in cfg["models"]:
            for key in ("path", "schema"):
                inside = "/" + sub + "/" + os.path.relpath(m[key], mounts["models"]["mountPath"])
                if inside not in copied:
                    return f"{m[key]} would be {inside} in the model image, which has no such file"
        # KServe (modelcars: /models is /mnt/models) serves /models/model.onnx, with
        # /models/schema.json as its schema when there is one; no runtime.toml.
        onnx = copied.get("/models/model.onnx")
        if not onnx or not onnx.endswith(".onnx"):
            return "the model image lacks /models/model.onnx, which KServe's runtime serves"
        schema = copied.get("/models/schema.json")
        if schema and os.path.splitext(os.path.basename(schema))[0] != \
                os.path.splitext(os.path.basename(onnx))[0]:
            return f"/models/schema.json ({schema}) is not the schema of /models/model.onnx ({onnx})"
        if "/models/runtime.toml" in copied:
            return "the model image still carries /models/runtime.toml, which nothing reads"
        return None
    check("model-image/Dockerfile copies every file runtime.toml names, and model.onnx "
          "(+ its schema.json) for KServe", model_image)

    def service_wiring():
        if not selector_matches(svc["spec"]["selector"], pod_labels):
            return "Service selector does not match the pod labels"
        if dep["spec"]["selector"]["matchLabels"] != {k: pod_labels[k] for k in
                                                      dep["spec"]["selector"]["matchLabels"]}:
            return "Deployment selector does not match its template"
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in ports:
                return f"Service targetPort {p['targetPort']} is not a container port name"
        return None
    check("Service selects the pods and targets the named port `http`", service_wiring)

    def service_grpc():
        sports = svc["spec"]["ports"]
        if len({p["port"] for p in sports}) != len(sports) or len({p["name"] for p in sports}) != len(sports):
            return "Service port numbers and names must be unique"
        http_p = by_name(sports, "http")
        if http_p.get("appProtocol") != "http" or http_p["targetPort"] != "http":
            return "port `http` must stay HTTP/1.1 (appProtocol http) to the container port `http`"
        h2c = [p for p in sports if p.get("appProtocol") == "kubernetes.io/h2c"]
        if len(h2c) != 1 or h2c[0]["targetPort"] != "http" or h2c[0]["name"] != "grpc":
            return f"want one port `grpc` with appProtocol kubernetes.io/h2c on targetPort `http`, got {h2c}"
        if len(c["ports"]) != 1:
            return "inferd serves HTTP and gRPC on one container port; the container lists more"
        return None
    check("Service: port `http` (appProtocol http) and port `grpc` (appProtocol kubernetes.io/h2c), "
          "both to the one container port `http`", service_grpc)

    def smon_wiring():
        if not selector_matches(smon["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]):
            return "ServiceMonitor selector does not match the Service's labels"
        svc_ports = {p["name"] for p in svc["spec"]["ports"]}
        for e in smon["spec"]["endpoints"]:
            if e["port"] not in svc_ports:
                return f"endpoint port {e['port']} is not a Service port name"
            if e["path"] not in routes:
                return f"path {e['path']} is not a route"
        return None
    check("ServiceMonitor selects the Service, scrapes port `http` at /metrics", smon_wiring)

    def hpa_wiring():
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"], ref["apiVersion"]) != ("Deployment", dep["metadata"]["name"],
                                                            dep["apiVersion"]):
            return "scaleTargetRef is not the Deployment"
        if "replicas" in dep["spec"]:
            return "Deployment sets replicas: every apply would fight the HPA"
        kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
        if kinds.get("Resource", {}).get("resource", {}).get("name") != "cpu":
            return "no CPU metric"
        pods = kinds.get("Pods")
        if not pods or pods["pods"]["metric"]["name"] != "inferd_queue_rows":
            return "no pods metric inferd_queue_rows"
        if hpa["spec"]["minReplicas"] < 2:
            return "minReplicas < 2: a single pod's eviction stops the service"
        return None
    check("HPA scales the Deployment on cpu and the pods metric inferd_queue_rows", hpa_wiring)

    def adapter_rule():
        name = load("hpa.yaml")["spec"]["metrics"][1]["pods"]["metric"]["name"]
        rules = [r for r in adapter["rules"]["custom"] if r["name"]["as"] == name]
        if len(rules) != 1:
            return f"no single prometheus-adapter rule exposes {name}"
        r = rules[0]
        if not r["seriesQuery"].startswith("inferd_queue_rows{"):
            return "seriesQuery does not select inferd_queue_rows"
        if not re.search(r["name"]["matches"], "inferd_queue_rows"):
            return "name.matches does not match the series"
        if set(r["resources"]["overrides"]) != {"namespace", "pod"}:
            return "resources must map namespace and pod"
        for ph in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            if ph not in r["metricsQuery"]:
                return f"metricsQuery lacks {ph}"
        return None
    check("prometheus-adapter rule maps inferd_queue_rows to the HPA's pods metric", adapter_rule)

    def pdb_wiring():
        if not selector_matches(pdb["spec"]["selector"]["matchLabels"], pod_labels):
            return "PDB selector does not match the pods"
        mu = pdb["spec"].get("maxUnavailable")
        if mu is None or mu >= hpa["spec"]["minReplicas"]:
            return "maxUnavailable must leave a pod at minReplicas"
        if dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] != 0:
            return "rollouts should not take pods down before their replacements are ready"
        return None
    check("PDB covers the pods and keeps one serving at minReplicas; rollout maxUnavailable 0",
          pdb_wiring)

    def kserve_wiring():
        m = isvc["spec"]["predictor"]["model"]
        if m["runtime"] != sr["metadata"]["name"]:
            return "InferenceService runtime is not the ServingRuntime's name"
        if m["modelFormat"]["name"] not in [f["name"] for f in sr["spec"]["supportedModelFormats"]]:
            return "model format not supported by the runtime"
        if m["protocolVersion"] not in sr["spec"]["protocolVersions"]:
            return "protocolVersion not among the runtime's"
        k = by_name(sr["spec"]["containers"], "kserve-container")
        if k["command"][-1] != "serve" or k.get("args") != [KSERVE_MODEL_ARG]:
            return (f"command {k['command']} args {k.get('args')}: want `serve` with the one "
                    f"argument {KSERVE_MODEL_ARG} (the folder under the InferenceService's name)")
        name = isvc["metadata"]["name"]
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", name):
            return f"the InferenceService name {name} is not a valid inferd model name"
        logdir = env_of(k).get("INFERD_PREDICTION_LOG_DIR", "")
        kvols = {v["name"]: v for v in sr["spec"]["volumes"]}
        kmounts = {m["mountPath"]: m for m in k["volumeMounts"]}
        if logdir.startswith("/mnt/models") or "emptyDir" not in kvols[kmounts[logdir]["name"]]:
            return "the prediction log must go to a writable emptyDir, not /mnt/models"
        if kcfg["prediction_log"].get("directory") not in (None, logdir):
            return "kserve/runtime.toml's prediction_log.directory is not INFERD_PREDICTION_LOG_DIR"
        return None
    check("InferenceService -> ServingRuntime: runtime, format, protocol; serve "
          f"{KSERVE_MODEL_ARG} (the InferenceService's name); log on a writable emptyDir",
          kserve_wiring)

    def kserve_config():
        k = by_name(sr["spec"]["containers"], "kserve-container")
        if kcfg.get("models"):
            return "kserve/runtime.toml names [[models]]: inferd refuses them beside models on the command line"
        path = env_of(k).get("INFERD_CONFIG") or ""
        mount = next((m for m in k["volumeMounts"]
                      if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        if not mount:
            return f"INFERD_CONFIG {path!r} is on no volume of the container"
        vol = by_name(sr["spec"]["volumes"], mount["name"])
        gen = by_name(kkust["configMapGenerator"], vol.get("configMap", {}).get("name"))
        if gen["files"] != [os.path.basename(path)] or not mount.get("readOnly"):
            return f"INFERD_CONFIG {path} is not the generated ConfigMap's file, mounted read-only"
        if kkust["resources"] != ["servingruntime.yaml"] or "kustomizeconfig.yaml" not in kkust["configurations"]:
            return "kserve/kustomization.yaml must apply servingruntime.yaml with kustomizeconfig.yaml"
        refs = [(f["kind"], f["group"], f["path"]) for r in kkconf["nameReference"]
                if r["kind"] == "ConfigMap" for f in r["fieldSpecs"]]
        if ("ServingRuntime", "serving.kserve.io", "spec/volumes/configMap/name") not in refs:
            return "kustomizeconfig.yaml does not carry the ConfigMap's hashed name into the ServingRuntime"
        # The image sets INFERD_CONFIG to its own runtime.toml, which names models: the
        # ServingRuntime must name another file, or `serve NAME=/mnt/models` exits 2.
        with open(os.path.join(REPO, "Dockerfile")) as f:
            image_cfg = re.search(r"INFERD_CONFIG=(\S+)", f.read()).group(1)
        if path == image_cfg:
            return f"INFERD_CONFIG is the image's {image_cfg}, which names [[models]]"
        limit = kvols_size(sr)
        if kcfg["prediction_log"]["max_bytes"] >= limit:
            return f"prediction_log.max_bytes {kcfg['prediction_log']['max_bytes']} does not fit the emptyDir"
        return None
    check("ServingRuntime settings: kserve/runtime.toml names no models, is the ConfigMap "
          "(kserve/kustomization.yaml) INFERD_CONFIG names, overriding the image's; max_bytes "
          "< the emptyDir's sizeLimit", kserve_config)


def kvols_size(sr):
    """The sizeLimit of the ServingRuntime's prediction log emptyDir, in bytes."""
    k = by_name(sr["spec"]["containers"], "kserve-container")
    logdir = env_of(k)["INFERD_PREDICTION_LOG_DIR"]
    name = next(m["name"] for m in k["volumeMounts"] if m["mountPath"] == logdir)
    limit = by_name(sr["spec"]["volumes"], name)["emptyDir"]["sizeLimit"]
    m = re.fullmatch(r"(\d+)(Mi|Gi)", limit)
    return int(m.group(1)) * (2**20 if m.group(2) == "Mi" else 2**30)


# --- running inferd with the manifests' settings -------------------------------------------------


def clean_env():
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("INFERD_") or k in ("PORT", "RUST_LOG"))}
    return env


def http(method, port, path, body=None, timeout=5):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers={"content-type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Server:
    """inferd started with a given argv and env; reads the `listening` and `ready` lines."""

    def __init__(self, argv, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.port = None

    def lines(self):
        with open(self.log_path) as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:
                    pass

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return f"exited with {self.proc.returncode}: {self.tail()}"
            ready = False
            for line in self.lines():
                if line.get("message") == "listening" and self.port is None:
                    self.port = int(line["addr"].rsplit(":", 1)[1])
                if line.get("message") == "ready":
                    ready = True
            if ready and self.port:
                return None
            time.sleep(0.05)
        return f"not ready within {timeout} s: {self.tail()}"

    def tail(self):
        with open(self.log_path) as f:
            return " | ".join(f.read().strip().splitlines()[-3:])[:400]

    def stop(self, grace):
        """SIGTERM, as the kubelet sends after preStop; returns (exit code, seconds)."""
        t0 = time.time()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=grace + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc, time.time() - t0

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.log.closed:
            self.log.close()


def example_instance(schema_path):
    with open(schema_path) as f:
        return json.load(f)["examples"][0]


def v2_request(port, model, schema_path):
    """A v2 infer request from the model's metadata and its schema's first example."""
    status, body = http("GET", port, f"/v2/models/{model}")
    if status != 200:
        raise RuntimeError(f"GET /v2/models/{model}: {status}")
    meta = json.loads(body)
    inst = example_instance(schema_path)
    columns = list(json.load(open(schema_path))["properties"])
    inputs = []
    for i in meta["inputs"]:
        shape = [1 if d == -1 else d for d in i["shape"]]
        shape[0] = 1
        if i["name"] in inst:
            data = [inst[i["name"]]]
        else:  # one [N, F] tensor: the schema's properties are its columns, in order
            data = [inst[col] for col in columns]
        inputs.append({"name": i["name"], "shape": shape, "datatype": i["datatype"], "data": data})
    return json.dumps({"id": "check", "inputs": inputs}).encode()


def h2c_get(port, path):
    """GET over HTTP/2 cleartext by prior knowledge (what Knative's queue-proxy and an h2c
    backend in a mesh send); returns (status, HTTP version) from curl."""
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "--http2-prior-knowledge", "--max-time", "5",
                        "-w", "%{http_code} %{http_version}", f"http://127.0.0.1:{port}{path}"],
                       capture_output=True, text=True, timeout=20)
    return r.stdout.strip()


def grpc_client():
    """tritonclient.grpc from .venv (tritonclient[grpc], installed by scripts/test.sh), or None."""
    try:
        import tritonclient.grpc as grpcclient
        return grpcclient
    except Exception:
        return None


def grpc_checks(port, model, schema_path, label):
    """The Open Inference Protocol over gRPC on the HTTP port: health, metadata and an infer of
    the schema's first example with tritonclient.grpc at its defaults (raw input contents)."""
    if not shutil.which("curl"):
        print(f"skip - {label}: REST over h2c (no curl)", flush=True)
    else:
        check(f"{label}: REST over h2c (prior knowledge, as the h2c port is spoken) GET /v2/health/ready answers 200",
              lambda: None if h2c_get(port, "/v2/health/ready") == "200 2" else h2c_get(port, "/v2/health/ready"))
    grpcclient = grpc_client()
    if grpcclient is None:
        print(f"skip - {label}: gRPC calls (tritonclient.grpc is not in .venv)", flush=True)
        return 0
    import numpy as np

    def call():
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        try:
            if not (client.is_server_live() and client.is_server_ready()):
                return "ServerLive/ServerReady not true"
            if not client.is_model_ready(model):
                return f"ModelReady({model}) not true"
            meta = client.get_model_metadata(model, as_json=True)
            inst = example_instance(schema_path)
            columns = list(json.load(open(schema_path))["properties"])
            dtypes = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64,
                      "INT32": np.int32, "BYTES": np.object_}
            inputs = []
            for i in meta["inputs"]:
                # One input per column ([N, 1]), or one [N, F] tensor of the schema's columns.
                row = [inst[i["name"]]] if i["name"] in inst else [inst[col] for col in columns]
                if i["datatype"] == "BYTES":
                    row = [str(v).encode() for v in row]
                x = grpcclient.InferInput(i["name"], [1, len(row)], i["datatype"])
                x.set_data_from_numpy(np.array([row], dtype=dtypes[i["datatype"]]))
                inputs.append(x)
            res = client.infer(model, inputs, request_id="k8s-check")
            out = res.get_response(as_json=True)
            if out.get("model_name") != model or not out.get("outputs"):
                return f"ModelInfer answered {out}"
            rows.append(1)
            return None
        finally:
            client.close()
    rows = []
    check(f"{label}: gRPC on the same port (tritonclient.grpc): ServerLive, ServerReady, "
          f"ModelReady, ModelMetadata and ModelInfer on {model}", call)
    return len(rows)


def run_guarded(what, fn, binary):
    """One server run; a crash in it is one failure, and its servers and files are cleaned up."""
    tmp = tempfile.mkdtemp(prefix="inferd-k8s-check.")
    servers = []
    try:
        fn(binary, tmp, servers)
    except Exception as e:
        report(False, what, f"{type(e).__name__}: {e}")
    finally:
        for s in servers:
            s.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def pod_env(tmp, c, cfg):
    """The pod's file system rooted in tmp, and the container's env pointed at it; returns
    (env for the run, env as in the manifest). Secret-sourced variables are left out."""
    # The pod's file system, rooted in tmp: /models (the model image's /models folder),
    # /etc/inferd/runtime.toml (the ConfigMap), /var/log/inferd (the emptyDir).
    root = lambda p: os.path.join(tmp, "pod", p.lstrip("/"))
    models_mount = next(m for m in c["volumeMounts"] if m["name"] == "models")["mountPath"]
    os.makedirs(root(models_mount))
    for m in cfg["models"]:
        for key, src_dir in (("path", "models"), ("schema", "schemas")):
            shutil.copy(os.path.join(REPO, src_dir, os.path.basename(m[key])), root(m[key]))
    env_manifest = env_of(c)
    conf_text = open(os.path.join(HERE, "runtime.toml")).read()
    conf_text = conf_text.replace(f'"{models_mount}/', f'"{root(models_mount)}/')
    conf_text = conf_text.replace(f'"{cfg["prediction_log"]["directory"]}"',
                                  f'"{root(cfg["prediction_log"]["directory"])}"')
    os.makedirs(os.path.dirname(root(env_manifest["INFERD_CONFIG"])))
    with open(root(env_manifest["INFERD_CONFIG"]), "w") as f:
        f.write(conf_text)
    os.makedirs(root(env_manifest["INFERD_PREDICTION_LOG_DIR"]))

    env = clean_env()
    env.update({k: v for k, v in env_manifest.items() if v is not None})
    env["INFERD_CONFIG"] = root(env_manifest["INFERD_CONFIG"])
    env["INFERD_PREDICTION_LOG_DIR"] = root(env_manifest["INFERD_PREDICTION_LOG_DIR"])
    env["PORT"] = "0"                 # a free port here; 8080 in the pod
    env["INFERD_HOST"] = "127.0.0.1"  # loopback only here; 0.0.0.0 in the pod
    return env, env_manifest


def run_deployment(binary, tmp, servers):
    dep = load("deployment.yaml")
    c = by_name(dep["spec"]["template"]["spec"]["containers"], "inferd")
    with open(os.path.join(HERE, "optional/prediction-log-shipper/fluent-bit.yaml")) as f:
        tail_glob = yaml.safe_load(f)["pipeline"]["inputs"][0]["path"]
    cfg = load_toml("runtime.toml")
    env, env_manifest = pod_env(tmp, c, cfg)
    argv = [binary] + c["command"][1:] + c.get("args", [])
    srv = Server(argv, env, os.path.join(tmp, "deployment.log"))
    servers.append(srv)
    why = srv.wait_ready()
    report(not why, "inferd starts and gets ready with the Deployment's runtime.toml, command "
           "and env", why)
    if why:
        return
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = c[probe]["httpGet"]["path"]
        check(f"{probe} GET {path} answers 200",
              lambda path=path: None if http("GET", srv.port, path)[0] == 200 else "not 200")

    def predict():
        with open(os.path.join(REPO, "example.json"), "rb") as f:
            status, body = http("POST", srv.port, "/predict", f.read())
        return None if status == 200 else f"{status} {body[:200]!r}"
    check("POST /predict with example.json answers 200", predict)
    m0 = cfg["models"][0]
    grpc_rows = grpc_checks(srv.port, m0["name"], os.path.join(REPO, "schemas", os.path.basename(m0["schema"])),
                "Service port `grpc` (h2c)")

    def metric():
        status, body = http("GET", srv.port, "/metrics")
        text = body.decode()
        for m in {x["name"] for x in cfg["models"]}:
            if not re.search(r'^inferd_queue_rows\{[^}]*model="%s"[^}]*version="[^"]+"' % re.escape(m),
                             text, re.M) and not re.search(
                    r'^inferd_queue_rows\{[^}]*version="[^"]+"[^}]*model="%s"' % re.escape(m), text, re.M):
                return f"no inferd_queue_rows{{model=\"{m}\",version=...}} in /metrics"
        return None
    check("/metrics has the HPA's gauge inferd_queue_rows{model,version} for every model", metric)

    grace = cfg["server"]["shutdown_grace_seconds"]
    rc, took = srv.stop(grace)
    report(rc == 0 and took <= grace, f"SIGTERM: exit 0 within shutdown_grace_seconds ({grace} s)",
           f"exit {rc} after {took:.1f} s")

    def shipped():
        logdir = env["INFERD_PREDICTION_LOG_DIR"]
        files = [f for f in os.listdir(logdir) if f.endswith(".jsonl")]
        if not files:
            return "no prediction log file written"
        # The shipper's tail path, with the pod's folder replaced by this run's.
        pattern = os.path.basename(tail_glob)
        if os.path.dirname(tail_glob) != env_manifest["INFERD_PREDICTION_LOG_DIR"]:
            return f"Fluent Bit tails {tail_glob}, inferd writes to {env_manifest['INFERD_PREDICTION_LOG_DIR']}"
        missed = [f for f in files if not fnmatch.fnmatch(f, pattern)]
        if missed:
            return f"{missed} not matched by {tail_glob}"
        lines = [json.loads(l) for f in files for l in open(os.path.join(logdir, f))]
        want = 2 + grpc_rows
        return None if len(lines) == want and all("request_id" in l for l in lines) else \
            f"{len(lines)} lines, expected {want} (example.json's instances, the gRPC infer's row)"
    check("prediction log written to the emptyDir folder, and Fluent Bit's tail path matches it",
          shipped)


def supports_sinks(binary):
    """Whether this inferd has the prediction log sinks (issue 20): `serve --help` lists the flag."""
    r = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=60)
    return "--prediction-log-sink" in r.stdout


def run_object_store(binary, tmp, servers):
    """The Deployment with optional/prediction-log-object-store merged in, its bucket replaced
    by a local folder (file://): the records of a prediction are uploaded by SIGTERM, gzipped,
    named <prefix>/<YYYY-MM-DD>/<YYYYMMDDTHHMMSSmmmZ>-<host>-<instance id>-<seq>.jsonl.gz."""
    if not supports_sinks(binary):
        print(f"skip - {OBJECT_STORE} run: {binary} has no --prediction-log-sink", flush=True)
        return
    dep = strategic_merge(load("deployment.yaml"), load(OBJECT_STORE_PATCH))
    c = by_name(dep["spec"]["template"]["spec"]["containers"], "inferd")
    cfg = load_toml("runtime.toml")
    env, env_manifest = pod_env(tmp, c, cfg)
    bucket = os.path.join(tmp, "bucket")
    os.makedirs(bucket)
    env["INFERD_PREDICTION_LOG_URL"] = "file://" + bucket
    argv = [binary] + c["command"][1:] + c.get("args", [])
    srv = Server(argv, env, os.path.join(tmp, "object-store.log"))
    servers.append(srv)
    why = srv.wait_ready()
    report(not why, f"inferd starts and gets ready with {OBJECT_STORE} merged in (bucket: a local "
           "folder)", why)
    if why:
        return
    with open(os.path.join(REPO, "example.json"), "rb") as f:
        status, body = http("POST", srv.port, "/predict", f.read())
    report(status == 200, "POST /predict with example.json answers 200", f"{status} {body[:200]!r}")
    grace = cfg["server"]["shutdown_grace_seconds"]
    rc, took = srv.stop(grace)
    report(rc == 0 and took <= grace, f"SIGTERM: exit 0 within shutdown_grace_seconds ({grace} s), "
           "the last part uploaded", f"exit {rc} after {took:.1f} s")

    def uploaded():
        objects = [os.path.relpath(os.path.join(d, f), bucket)
                   for d, _, files in os.walk(bucket) for f in files]
        if not objects:
            return "nothing uploaded"
        # The host name as inferd writes it: letters, digits and `-`, at most 63.
        host = re.escape(re.sub(r"[^A-Za-z0-9]", "-", socket.gethostname())[:63] or "host")
        name = re.compile(r"(.*/)?(\d{4}-\d{2}-\d{2})/(\d{8})T\d{9}Z-%s-[0-9a-f]{8}-\d{6}\.jsonl\.gz" % host)
        lines = []
        for o in objects:
            m = name.fullmatch(o)
            if not m or m.group(2).replace("-", "") != m.group(3):
                return f"{o} is not <prefix>/<YYYY-MM-DD>/<YYYYMMDDTHHMMSSmmmZ>-<host>-<id>-<seq>.jsonl.gz"
            with gzip.open(os.path.join(bucket, o), "rt") as f:
                lines += [json.loads(line) for line in f]
        if len(lines) != 2 or not all("request_id" in l and "inputs" in l for l in lines):
            return f"{len(lines)} records in {objects}, expected 2 (example.json's instances)"
        spool = env["INFERD_PREDICTION_LOG_DIR"]
        left = [f for f in os.listdir(spool) if f.endswith((".jsonl", ".jsonl.open"))]
        return f"parts left in the spool after exit: {left}" if left else None
    check("the records are in the bucket: gzipped JSON Lines, named by day, time, host, instance "
          "and sequence; the spool is empty", uploaded)


def kserve_pod(binary, tmp, folder):
    """The ServingRuntime's argv and env on this machine: its ConfigMap written to tmp, the
    given folder in place of /mnt/models, the image's env underneath the runtime's."""
    sr = load("kserve/servingruntime.yaml")
    isvc = load("kserve/inferenceservice.yaml")
    k = by_name(sr["spec"]["containers"], "kserve-container")
    root = lambda p: os.path.join(tmp, "pod", p.lstrip("/"))
    env_manifest = env_of(k)
    env = clean_env()
    # The image's ENV (its INFERD_CONFIG names a runtime.toml with [[models]]), then the
    # runtime's, as Kubernetes layers them.
    env["INFERD_CONFIG"] = os.path.join(REPO, "runtime.toml")
    env["INFERD_PREDICTION_LOG_DIR"] = "/app/logs"
    env.update({key: v for key, v in env_manifest.items() if v is not None})
    if "INFERD_CONFIG" in env_manifest:  # the ConfigMap's file, moved into tmp
        env["INFERD_CONFIG"] = root(env_manifest["INFERD_CONFIG"])
        os.makedirs(os.path.dirname(env["INFERD_CONFIG"]), exist_ok=True)
        shutil.copy(os.path.join(HERE, "kserve/runtime.toml"), env["INFERD_CONFIG"])
    env["INFERD_PREDICTION_LOG_DIR"] = root(env["INFERD_PREDICTION_LOG_DIR"])
    os.makedirs(env["INFERD_PREDICTION_LOG_DIR"], exist_ok=True)
    env["PORT"] = "0"
    env["INFERD_HOST"] = "127.0.0.1"
    name = isvc["metadata"]["name"]
    args = [a.replace("{{.Name}}", name).replace("/mnt/models", folder) for a in k["args"]]
    return [binary] + k["command"][1:] + args, env, k, name


def model_info(port, name, version=None):
    path = f"/models/{name}" + (f"/versions/{version}" if version else "")
    status, body = http("GET", port, path)
    if status != 200:
        raise RuntimeError(f"GET {path}: {status}")
    return json.loads(body)


def run_kserve(binary, tmp, servers):
    # KServe: the model folder as the storage initializer leaves it in /mnt/models: model.onnx
    # with its schema.json beside it, and no runtime.toml.
    kcfg = load_toml("kserve/runtime.toml")
    mnt = os.path.join(tmp, "mnt-models")
    os.makedirs(mnt)
    shutil.copy(os.path.join(REPO, "models/house_price.onnx"), os.path.join(mnt, "model.onnx"))
    schema = os.path.join(REPO, "schemas/house_price.json")
    shutil.copy(schema, os.path.join(mnt, "schema.json"))
    argv, kenv, k, name = kserve_pod(binary, tmp, mnt)
    ksrv = Server(argv, kenv, os.path.join(tmp, "kserve.log"))
    servers.append(ksrv)
    why = ksrv.wait_ready()
    report(not why, "inferd starts with the ServingRuntime's command, args, env and ConfigMap on "
           "a KServe model folder (model.onnx + schema.json, no runtime.toml)", why)
    if why:
        return
    for probe in ("readinessProbe", "livenessProbe"):
        path = k[probe]["httpGet"]["path"]
        check(f"ServingRuntime {probe} GET {path} answers 200",
              lambda path=path: None if http("GET", ksrv.port, path)[0] == 200 else "not 200")

    def schema_used():
        info = model_info(ksrv.port, name)
        want = json.load(open(schema))["title"]
        got = info["schema"].get("title")
        return None if got == want and info["version"] == "1" else \
            f"version {info['version']}, schema {got!r}, want version 1 with {want!r} (schema.json)"
    check(f"the folder's model.onnx is {name} version 1, schema.json its schema", schema_used)

    def infer():
        status, body = http("POST", ksrv.port, f"/v2/models/{name}/infer",
                            v2_request(ksrv.port, name, schema))
        if status != 200:
            return f"{status} {body[:200]!r}"
        out = json.loads(body)
        return None if out.get("outputs") and out.get("model_name") == name else f"{out}"
    check(f"POST /v2/models/{name}/infer (the InferenceService's name) answers 200 with outputs",
          infer)
    grpc_checks(ksrv.port, name, schema, "ServingRuntime port h2c, protocolVersion grpc-v2")
    rc, _ = ksrv.stop(kcfg["server"]["shutdown_grace_seconds"])
    report(rc == 0, "KServe-configured inferd exits 0 on SIGTERM", f"exit {rc}")
    logs = kenv["INFERD_PREDICTION_LOG_DIR"]
    report(any(f.endswith(".jsonl") for f in os.listdir(logs)),
           "the prediction log went to the ServingRuntime's emptyDir folder", f"nothing in {logs}")


def run_kserve_versions(binary, tmp, servers):
    # A folder of version folders: 1/model.onnx without a schema (derived from the graph),
    # 2/model.onnx with schema.json; both served, 2 the default.
    mnt = os.path.join(tmp, "mnt-models")
    for version, model, schema in (("1", "house_price_linear.onnx", None),
                                   ("2", "house_price.onnx", "house_price.json")):
        os.makedirs(os.path.join(mnt, version))
        shutil.copy(os.path.join(REPO, "models", model), os.path.join(mnt, version, "model.onnx"))
        if schema:
            shutil.copy(os.path.join(REPO, "schemas", schema), os.path.join(mnt, version, "schema.json"))
    argv, kenv, k, name = kserve_pod(binary, tmp, mnt)
    ksrv = Server(argv, kenv, os.path.join(tmp, "kserve-versions.log"))
    servers.append(ksrv)
    why = ksrv.wait_ready()
    report(not why, "inferd starts as the ServingRuntime on a KServe folder of version folders "
           "(1/model.onnx, 2/model.onnx + schema.json)", why)
    if why:
        return

    def versions():
        status, body = http("GET", ksrv.port, f"/v2/models/{name}")
        meta = json.loads(body)
        if status != 200 or meta.get("versions") != ["1", "2"]:
            return f"GET /v2/models/{name}: {status} versions {meta.get('versions')}, want ['1', '2']"
        newest, oldest = model_info(ksrv.port, name), model_info(ksrv.port, name, "1")
        if newest["version"] != "2" or newest["schema"].get("title") != "house_price instance":
            return f"default version {newest['version']} with schema {newest['schema'].get('title')!r}"
        if "Derived" not in oldest["schema"].get("description", ""):
            return f"version 1's schema is not derived from the graph: {oldest['schema'].get('description')!r}"
        return None
    check(f"{name} serves versions 1 and 2, the newest the default with its schema.json, "
          "version 1's schema derived", versions)

    def infer_each():
        schema = os.path.join(REPO, "schemas/house_price.json")
        status, body = http("POST", ksrv.port, f"/v2/models/{name}/infer",
                            v2_request(ksrv.port, name, schema))
        if status != 200 or json.loads(body).get("model_version") != "2":
            return f"default: {status} {body[:200]!r}"
        meta = json.loads(http("GET", ksrv.port, f"/v2/models/{name}/versions/1")[1])
        inp = meta["inputs"][0]
        width = inp["shape"][1]
        req = {"inputs": [{"name": inp["name"], "shape": [1, width], "datatype": inp["datatype"],
                           "data": [5850, 3, 1, 2, 1][:width] + [0] * (width - 5)}]}
        status, body = http("POST", ksrv.port, f"/v2/models/{name}/versions/1/infer",
                            json.dumps(req).encode())
        if status != 200 or json.loads(body).get("model_version") != "1":
            return f"version 1: {status} {body[:200]!r}"
        return None
    check(f"POST /v2/models/{name}/infer answers from version 2, .../versions/1/infer from "
          "version 1", infer_each)
    rc, _ = ksrv.stop(load_toml("kserve/runtime.toml")["server"]["shutdown_grace_seconds"])
    report(rc == 0, "exits 0 on SIGTERM", f"exit {rc}")


def run_kserve_image_config(binary, tmp, servers):
    # Why the ServingRuntime sets INFERD_CONFIG: with the image's (a runtime.toml naming
    # models) the same argv stops at start.
    mnt = os.path.join(tmp, "mnt-models")
    os.makedirs(mnt)
    shutil.copy(os.path.join(REPO, "models/house_price.onnx"), os.path.join(mnt, "model.onnx"))
    argv, kenv, _, _ = kserve_pod(binary, tmp, mnt)
    kenv["INFERD_CONFIG"] = os.path.join(REPO, "runtime.toml")
    r = subprocess.run(argv, env=kenv, cwd=REPO, capture_output=True, text=True, timeout=60)
    report(r.returncode == 2 and "[[models]]" in r.stderr,
           "without the ServingRuntime's INFERD_CONFIG (the image's runtime.toml names models), "
           "the same argv exits 2", f"exit {r.returncode}: {r.stderr[-300:]!r}")


def main():
    binary = sys.argv[1]
    schema_checks()
    static_checks()
    report(not blocked_attempts, "validation ran offline (non-loopback connections blocked, none tried)",
           f"tried {blocked_attempts}")
    run_guarded("running inferd with the Deployment's settings", run_deployment, binary)
    run_guarded(f"running inferd with {OBJECT_STORE} merged in", run_object_store, binary)
    run_guarded("running inferd as the ServingRuntime on a KServe model folder", run_kserve, binary)
    run_guarded("running inferd as the ServingRuntime on a KServe folder of versions",
                run_kserve_versions, binary)
    run_guarded("running the ServingRuntime's argv with the image's INFERD_CONFIG",
                run_kserve_image_config, binary)
    print(f"kubernetes: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
