#!/usr/bin/env bash
# Checks the monitoring files: promtool on the rules (syntax and unit tests) and the compose
# Prometheus config, the compose file and Grafana provisioning statically, then a real inferd
# scraped by a real Prometheus (Debian's package) under load: every dashboard query is
# evaluated through Prometheus' HTTP API, and the alert rules must load and evaluate cleanly.
# Grafana itself is not run (see deploy/monitoring/README.md).
set -uo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"

tmp="$(mktemp -d)"
results="$tmp/results"
: >"$results"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

ok() { echo "ok - $1" | tee -a "$results"; }
notok() { echo "not ok - $1: $2" | tee -a "$results"; }
finish() {
  local passed failed
  passed=$(grep -c '^ok - ' "$results")
  failed=$(grep -c '^not ok - ' "$results")
  echo "monitoring: $passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit $?
}
# Runs a command as one check; its output is shown only when it fails.
check() {
  local what="$1"; shift
  if out="$("$@" 2>&1)"; then ok "$what"; else notok "$what" "$(echo "$out" | tail -5 | tr '\n' ' ')"; fi
}

# --- tools ------------------------------------------------------------------------------------
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
need=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || need+=(prometheus)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v curl >/dev/null || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for tool in promtool prometheus docker-compose curl; do
  if ! command -v "$tool" >/dev/null; then
    notok "$tool installed" "install Debian's package ($tool comes with: prometheus, docker-compose, curl)"
    finish
  fi
done
if ! .venv/bin/python -c "import yaml" 2>/dev/null; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet PyYAML==6.0.3
fi
py=.venv/bin/python
if ! $py -c "import yaml" 2>/dev/null; then
  notok "PyYAML in .venv" "pip install PyYAML==6.0.3 into .venv failed"
  finish
fi

# --- static checks ----------------------------------------------------------------------------
check "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts_test.yml" \
  bash -c 'cd deploy/prometheus && promtool test rules alerts_test.yml'
check "promtool check config deploy/prometheus/prometheus.yml" promtool check config deploy/prometheus/prometheus.yml
check "docker-compose config accepts docker-compose.yml" env -u GRAFANA_ADMIN_PASSWORD docker-compose -f docker-compose.yml config -q

$py - <<'PY' | tee -a "$results"
import json, os, re, yaml

def ok(what): print(f"ok - {what}")
def notok(what, why): print(f"not ok - {what}: {why}")
def expect(cond, what, why):
    ok(what) if cond else notok(what, why)

compose = yaml.safe_load(open("docker-compose.yml"))
svcs = compose.get("services", {})
expect(set(svcs) >= {"inferd", "postgres", "prometheus", "grafana"}, "compose has inferd, postgres, prometheus and grafana",
       sorted(svcs))
missing = []
for name, svc in svcs.items():
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith(".") and not os.path.exists(src):
            missing.append(f"{name}: {src}")
expect(not missing, "every bind mount of the compose file exists in the repo", missing)
inferd = svcs.get("inferd", {})
expect(inferd.get("build") == "." and os.path.exists("Dockerfile"), "inferd builds from the repo Dockerfile", inferd.get("build"))
test = inferd.get("healthcheck", {}).get("test", [])
expect("probe" in test and "--ready" in test, "inferd healthcheck runs `inferd probe --ready`", test)
# PostgreSQL's releases are major.minor (17.6); the others' are x.y.z.
release_tag = {"postgres": r"postgres:\d+\.\d+(-[a-z]+)?"}
unpinned = [f"{n}: {s.get('image')}" for n, s in svcs.items() if n != "inferd"
            and not re.fullmatch(release_tag.get(n, r"[\w./-]+:v?\d+\.\d+\.\d+"), s.get("image", ""))]
expect(not unpinned, "postgres, prometheus and grafana images pinned to a release tag", unpinned)

# The prediction log goes to the postgres service: sink by environment, DATABASE_URL naming the
# service, its user, password variable and database, without TLS on the compose network; inferd
# starts once PostgreSQL answers over TCP; the data is on a named volume.
pg = svcs.get("postgres", {})
pg_env = pg.get("environment", {})
env = inferd.get("environment", {})
expect(env.get("INFERD_PREDICTION_LOG_SINK") == "postgres", "inferd's prediction log sink is postgres (environment)",
       env.get("INFERD_PREDICTION_LOG_SINK"))
url = env.get("DATABASE_URL", "")
m = re.fullmatch(r"postgres://([^:@/]+):([^@/]+)@postgres:5432/([^?]+)\?sslmode=disable", url)
expect(m is not None and m.group(1) == pg_env.get("POSTGRES_USER") and m.group(2) == pg_env.get("POSTGRES_PASSWORD")
       and m.group(3) == pg_env.get("POSTGRES_DB"),
       "DATABASE_URL names the postgres service with its user, password and database, sslmode=disable", url)
expect(inferd.get("depends_on", {}).get("postgres", {}).get("condition") == "service_healthy",
       "inferd depends on postgres being healthy", inferd.get("depends_on"))
pg_test = pg.get("healthcheck", {}).get("test", [])
expect("pg_isready" in pg_test and "127.0.0.1" in pg_test, "postgres healthcheck is pg_isready over TCP", pg_test)
pg_vols = [v.split(":") for v in pg.get("volumes", [])]
expect(any(src in compose.get("volumes", {}) and dst == "/var/lib/postgresql/data" for src, dst, *_ in pg_vols),
       "postgres data on a named volume", pg.get("volumes"))
mounts = {v.split(":")[1]: v.split(":")[0] for s in svcs.values() for v in s.get("volumes", []) if v.startswith(".")}

prom = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
targets = [t for sc in prom["scrape_configs"] for st in sc.get("static_configs", []) for t in st["targets"]]
expect(targets == ["inferd:8080"] and prom["scrape_configs"][0]["job_name"] == "inferd",
       "prometheus.yml scrapes the compose service inferd:8080 as job inferd", targets)
expect(mounts.get("/etc/prometheus/alerts.yml") == "./deploy/prometheus/alerts.yml"
       and mounts.get("/etc/prometheus/prometheus.yml") == "./deploy/prometheus/prometheus.yml",
       "alerts.yml is mounted beside prometheus.yml (rule_files is relative)", mounts)

ds = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))["datasources"]
expect(len(ds) == 1 and ds[0]["type"] == "prometheus" and ds[0]["url"] == "http://prometheus:9090",
       "Grafana datasource points at the compose prometheus service", ds)
prov = yaml.safe_load(open("deploy/grafana/provisioning/dashboards/inferd.yml"))["providers"]
path = prov[0]["options"]["path"]
expect(mounts.get(f"{path}/inferd.json") == "./deploy/grafana/inferd.json"
       and mounts.get("/etc/grafana/provisioning") == "./deploy/grafana/provisioning",
       "Grafana provisioning and dashboard are mounted where the provider looks", (path, mounts))

dash = json.load(open("deploy/grafana/inferd.json"))
expect(dash.get("schemaVersion", 0) >= 39 and dash.get("uid") == "inferd", "dashboard schemaVersion >= 39, uid inferd",
       dash.get("schemaVersion"))
tvars = {v["name"]: v for v in dash["templating"]["list"]}
expect(tvars.get("datasource", {}).get("type") == "datasource" and tvars["datasource"].get("query") == "prometheus",
       "dashboard has a Prometheus datasource variable", list(tvars))
mq = tvars.get("model", {}).get("query", {})
mq = mq.get("query") if isinstance(mq, dict) else mq
expect(bool(mq) and mq.startswith("label_values(inferd_model_info") and mq.endswith(", model)"),
       "dashboard's model variable lists label_values(inferd_model_info, model)", mq)
panels = [p for p in dash["panels"] if p["type"] != "row"]
ids = [p["id"] for p in dash["panels"]]
expect(len(ids) == len(set(ids)), "dashboard panel ids are unique", ids)
bad = [p["title"] for p in panels if p["datasource"].get("uid") != "${datasource}"
       or any(t["datasource"].get("uid") != "${datasource}" for t in p["targets"])]
expect(not bad, "every panel and target uses the datasource variable", bad)
nomodel = [p["title"] for p in panels for t in p["targets"]
           if re.search(r"inferd_(requests|request_duration|queue|inference|batch|rows|cancelled|model|session)", t["expr"])
           and 'model=~"$model"' not in t["expr"]]
expect(not nomodel, "every per-model query filters on $model", nomodel)
PY
[ "${PIPESTATUS[0]}" = 0 ] || notok "static checks ran to the end" "the python part exited early (traceback above)"

# --- live: inferd scraped by Prometheus ---------------------------------------------------------
bin="${INFERD_BIN:-target/debug/inferd}"
if [ ! -x "$bin" ]; then
  echo "# building $bin"
  cargo build --locked --quiet
fi
if [ -z "${ORT_DYLIB_PATH:-}" ] && [ ! -e .ort/libonnxruntime.so.1.31.1 ]; then
  ./scripts/fetch-onnxruntime.sh >/dev/null
fi
if [ ! -x "$bin" ]; then notok "inferd binary $bin" "cargo build --locked did not produce it"; finish; fi

INFERD_PREDICTION_LOG_DIR="$tmp/predictions" "$bin" serve --host 127.0.0.1 --port 0 >"$tmp/inferd.log" 2>&1 &
pids+=($!)
addr=""
for _ in $(seq 100); do
  addr="$(grep -m1 '"message":"listening"' "$tmp/inferd.log" | grep -o '"addr":"[^"]*"' | cut -d'"' -f4)"
  [ -n "$addr" ] && curl -fs -o /dev/null "http://$addr/ready" && break
  sleep 0.1
done
if [ -z "$addr" ] || ! curl -fsS -o /dev/null "http://$addr/ready"; then
  notok "inferd starts and gets ready" "$(tail -5 "$tmp/inferd.log" | tr '\n' ' ')"
  finish
fi
ok "inferd starts and gets ready on $addr"

prom_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$tmp/prom"
# The compose config with the check's own scrape interval, target and rule path.
$py - "$addr" "$root/deploy/prometheus/alerts.yml" >"$tmp/prom/prometheus.yml" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
cfg["rule_files"] = [sys.argv[2]]
cfg["scrape_configs"][0]["static_configs"] = [{"targets": [sys.argv[1]]}]
print(yaml.safe_dump(cfg))
PY
check "promtool check config on the check's Prometheus config" promtool check config "$tmp/prom/prometheus.yml"
prometheus --config.file="$tmp/prom/prometheus.yml" --storage.tsdb.path="$tmp/prom/data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$tmp/prom.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
  curl -fsS -o /dev/null "http://127.0.0.1:$prom_port/-/ready" 2>/dev/null && break
  sleep 0.1
done
if ! curl -fsS -o /dev/null "http://127.0.0.1:$prom_port/-/ready"; then
  notok "prometheus starts" "$(tail -5 "$tmp/prom.log" | tr '\n' ' ')"
  finish
fi
ok "prometheus starts on 127.0.0.1:$prom_port"

$py - "$addr" "127.0.0.1:$prom_port" <<'PY' | tee -a "$results"
import http.client, json, math, re, sys, time, urllib.parse, urllib.request

inferd, prom = sys.argv[1], sys.argv[2]
def ok(what): print(f"ok - {what}", flush=True)
def notok(what, why): print(f"not ok - {what}: {why}", flush=True)
def expect(cond, what, why):
    ok(what) if cond else notok(what, why)
    return cond

def api(path, **params):
    url = f"http://{prom}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)

def query(expr):
    return api("query", query=expr)

def scalar(expr):
    res = query(expr).get("data", {}).get("result", [])
    return float(res[0]["value"][1]) if res else None

# Counters must be scraped before the load too, or rate() sees no increase.
deadline = time.time() + 15
while scalar('up{job="inferd"}') != 1 and time.time() < deadline:
    time.sleep(0.2)
expect(scalar('up{job="inferd"}') == 1, 'Prometheus scrapes inferd (up{job="inferd"} is 1)', scalar('up{job="inferd"}'))

# Load, spread over a few scrapes: good requests to both models and three kinds of client error.
good = open("example.json", "rb").read()
linear_cols = ("lotsize", "bedrooms", "bathrms", "stories", "garagepl")
linear = json.dumps({"instances": [{k: i[k] for k in linear_cols} for i in json.loads(good)["instances"]]}).encode()
conn = None
def post(path, body):
    # Keep-alive, except after an unknown model's 404: the server answers it without reading
    # the body and then closes the connection without saying so.
    global conn
    if conn is None:
        conn = http.client.HTTPConnection(*inferd.split(":"), timeout=10)
    conn.request("POST", path, body, {"content-type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.will_close or r.status == 404:
        conn.close()
        conn = None
    return r.status
plan = [("good", "/predict", good, 75), ("good", "/models/house_price_linear/predict", linear, 25),
        ("bad", "/predict", b"{not json", 5), ("bad", "/predict", b'{"instances":[{"lotsize":"big"}]}', 5),
        ("bad", "/models/nope/predict", good, 3)]
statuses = {"good": [], "bad": []}
for round in range(4):
    for kind, path, body, n in plan:
        statuses[kind] += [post(path, body) for _ in range(n)]
    time.sleep(1.2)
expect(statuses["good"] == [200] * 400, "400 good prediction requests answered 200", sorted(set(statuses["good"])))
expect(len(statuses["bad"]) == 52 and all(400 <= s < 500 for s in statuses["bad"]), "52 bad requests answered 4xx",
       sorted(set(statuses["bad"])))

# Wait until Prometheus has scraped all of it.
deadline, seen = time.time() + 10, None
while time.time() < deadline:
    seen = scalar('sum(inferd_requests_total{job="inferd", outcome="ok"})')
    if seen == 400:
        break
    time.sleep(0.3)
expect(seen == 400, "Prometheus scraped the load (400 ok requests)", seen)
time.sleep(1.5)

# Template variables, as Grafana's label_values() asks for them.
dash = json.load(open("deploy/grafana/inferd.json"))
def label_values(q):
    m = re.fullmatch(r"label_values\((.*), (\w+)\)", q)
    return api(f"label/{m.group(2)}/values", **{"match[]": m.group(1).replace("$job", "inferd")}).get("data", [])
tv = {v["name"]: v for v in dash["templating"]["list"]}
jobs = label_values(tv["job"]["query"])
models = label_values(tv["model"]["query"])
expect(jobs == ["inferd"], "job variable lists inferd", jobs)
expect(models == ["house_price", "house_price_linear"], "model variable lists both models", models)
model = models[0] if models else "house_price"

subst = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m", "$job": "inferd",
         "$model": model, "$max_batch_rows": tv["max_batch_rows"]["query"]}
# What each panel's query must give with this load: some value > 0, only zeros, or anything.
POS, ZERO = "pos", "zero"
want = {
    ("Server ready", "A"): POS, ("Models ready", "A"): POS, ("Request rate", "A"): POS,
    ("Error ratio (5xx/timeouts)", "A"): ZERO, ("p99 latency", "A"): POS, ("Rows waiting", "A"): ZERO,
    ("Request rate by outcome", "A"): POS, ("Error ratio", "A"): POS, ("Error ratio", "B"): ZERO,
    ("Request latency p50 / p99", "A"): POS, ("Request latency p50 / p99", "B"): POS,
    ("Queue vs inference time p50 / p99", "A"): POS, ("Queue vs inference time p50 / p99", "B"): POS,
    ("Queue vs inference time p50 / p99", "C"): POS, ("Queue vs inference time p50 / p99", "D"): POS,
    ("Rows per batch (average)", "A"): POS, ("Batch fill (share of max_batch_rows)", "A"): POS,
    ("Rows waiting (queue)", "A"): ZERO, ("Rows predicted and cancelled", "A"): POS,
    ("Rows predicted and cancelled", "B"): ZERO, ("Turned away: overloaded and timed out", "A"): ZERO,
    ("Turned away: overloaded and timed out", "B"): ZERO, ("Ready and model ready", "A"): POS,
    ("Ready and model ready", "B"): POS, ("Session restarts", "A"): ZERO,
    ("Prediction log lines written", "A"): POS, ("Prediction log drops by reason", "A"): ZERO,
    ("HTTP requests by status", "A"): POS, ("HTTP requests by route", "A"): POS,
    ("HTTP p99 latency by route", "A"): POS, ("Memory", "A"): POS,
    # process_cpu_seconds_total counts whole seconds (metrics-process truncates), so this short
    # load may not move it.
    ("CPU", "A"): None,
}
panels = [p for p in dash["panels"] if p["type"] != "row"]
seen_keys = set()
results = {}
for p in panels:
    for t in p["targets"]:
        key = (p["title"], t["refId"])
        seen_keys.add(key)
        expr = t["expr"]
        for k in sorted(subst, key=len, reverse=True):
            expr = expr.replace(k, subst[k])
        name = f'panel "{p["title"]}" {t["refId"]}'
        if "$" in expr:
            notok(name, f"unreplaced variable in {expr}")
            continue
        r = query(expr)
        if r.get("status") != "success":
            notok(name, f'{r.get("error")}: {expr}')
            continue
        series = r["data"]["result"]
        values = [float(s["value"][1]) for s in series]
        results[key] = series
        kind = want.get(key)
        if not series:
            notok(name, f"no data: {expr}")
        elif kind == POS and not any(math.isfinite(v) and v > 0 for v in values):
            notok(name, f"expected a value > 0, got {values}: {expr}")
        elif kind == ZERO and not all(v == 0 for v in values):
            notok(name, f"expected only zeros, got {values}: {expr}")
        else:
            shown = ", ".join(f"{v:.4g}" for v in values[:4])
            ok(f"{name} = {shown}" + (" ..." if len(values) > 4 else ""))
expect(seen_keys == set(want), "every dashboard target has an expectation here",
       sorted(set(want) ^ seen_keys))

by_outcome = {s["metric"].get("outcome") for s in results.get(("Request rate by outcome", "A"), [])
              if float(s["value"][1]) > 0}
expect(by_outcome == {"ok", "invalid"}, "request rate by outcome shows ok and invalid", by_outcome)
codes = {s["metric"].get("status") for s in results.get(("HTTP requests by status", "A"), [])}
expect({"200", "404"} <= codes and any(c in codes for c in ("400", "415", "422")),
       "HTTP status panel shows 200, 404 and the bad requests' 4xx", sorted(codes))
reasons = {s["metric"].get("reason") for s in results.get(("Prediction log drops by reason", "A"), [])}
expect(reasons == {"sampled_out", "buffer_full", "write_error", "closed", "unavailable", "shutdown"},
       "prediction log drops panel has all six reasons", sorted(reasons))

# Alert rules: loaded, every one evaluated without error, none firing on this healthy server.
deadline = time.time() + 10
while True:
    groups = api("rules").get("data", {}).get("groups", [])
    rules = [r for g in groups for r in g["rules"]]
    if (rules and all(r.get("lastEvaluation", "0001").startswith("0001") is False for r in rules)) or time.time() > deadline:
        break
    time.sleep(0.5)
expect(len(rules) == 13 and {g["name"] for g in groups} == {"inferd"}, "13 alert rules loaded in group inferd",
       [r["name"] for r in rules])
errs = [f'{r["name"]}: {r.get("lastError")}' for r in rules if r.get("health") != "ok" or r.get("lastError")]
expect(not errs, "every alert rule evaluates without error", errs)
active = [(a["labels"]["alertname"], a["state"]) for a in api("alerts").get("data", {}).get("alerts", [])]
expect(not active, "no alert pending or firing on a healthy server (sampled_out and 4xx do not alert)", active)
PY
[ "${PIPESTATUS[0]}" = 0 ] || notok "live checks ran to the end" "the python part exited early (traceback above)"

finish
