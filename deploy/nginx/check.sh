#!/usr/bin/env bash
# Checks deploy/nginx/inferd.conf for real: a copy with certbot's files swapped for a
# self-signed certificate (and certbot's own options-ssl-nginx.conf and ssl-dhparams.pem, from
# Debian's certbot packages), the upstream swapped for a running inferd and ports 80/443 for
# free high ones, under a minimal nginx.conf; `nginx -t`, then nginx started and requests
# proxied: predictions over HTTPS, gRPC (grpc_pass) over TLS with tritonclient.grpc, request
# ids, the redirect, body limits, /metrics refused, upstream keep-alive, reload, and nginx's
# answer (REST and gRPC) once inferd is gone.
# Usage: deploy/nginx/check.sh   (INFERD_BIN=path to test another binary, KEEP=1 keeps the temp folder)
set -uo pipefail
cd "$(dirname "$0")/../.."
conf=deploy/nginx/inferd.conf

passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $1: $2"; failed=$((failed + 1)); }
finish() {
  echo "nginx: $passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit
}

# --- tools ---
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
certbot_tls=/usr/lib/python3/dist-packages/certbot_nginx/_internal/tls_configs/options-ssl-nginx.conf
certbot_dh=/usr/lib/python3/dist-packages/certbot/ssl-dhparams.pem
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v ss >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3)
[ -f "$certbot_tls" ] && [ -f "$certbot_dh" ] || need+=(python3-certbot-nginx)
if [ "${#need[@]}" -gt 0 ]; then
  $sudo apt-get update -qq
  # policy-rc.d or not, the packaged nginx must not hold ports 80/443 here: it is stopped below.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
PATH=$PATH:/usr/sbin
for tool in nginx openssl curl ss python3; do
  command -v "$tool" >/dev/null || { not_ok "tools" "$tool is missing; install Debian's ${need[*]}"; finish; }
done
for f in "$certbot_tls" "$certbot_dh"; do
  [ -f "$f" ] || { not_ok "tools" "$f is missing; install Debian's python3-certbot-nginx"; finish; }
done

bin=${INFERD_BIN:-target/debug/inferd}
if [ ! -x "$bin" ]; then
  cargo build --locked >/dev/null 2>&1 || { not_ok "build" "cargo build --locked failed"; finish; }
fi

T=$(mktemp -d)
chmod 755 "$T" # nginx's workers run as www-data when this runs as root
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  wait 2>/dev/null
  [ -n "${KEEP:-}" ] && echo "# kept $T" || rm -rf "$T"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- inferd, from the repo root, on a free port ---
INFERD_PREDICTION_LOG_DIR=$T/predictions "$bin" serve --port 0 --host 127.0.0.1 >"$T/inferd.log" 2>&1 &
inferd_pid=$!
pids+=("$inferd_pid")
upstream=""
for _ in $(seq 600); do
  upstream=$(grep -o '"message":"listening","addr":"[^"]*"' "$T/inferd.log" | head -1 | sed 's/.*"addr":"\([^"]*\)"/\1/')
  [ -n "$upstream" ] && grep -q '"message":"ready"' "$T/inferd.log" && break
  kill -0 "$inferd_pid" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q '"message":"ready"' "$T/inferd.log"; then
  not_ok "inferd" "not ready within 60 s: $(tail -3 "$T/inferd.log" | tr '\n' ' ')"
  finish
fi
upstream_port=${upstream##*:}

# --- the site, with certbot's paths, the upstream and the ports swapped ---
N=$T/nginx
mkdir -p "$N/le/live/example.com" "$N/logs" "$N/tmp" "$N/www/.well-known/acme-challenge"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=example.com \
  -addext subjectAltName=DNS:example.com -keyout "$N/le/live/example.com/privkey.pem" \
  -out "$N/le/live/example.com/fullchain.pem" 2>/dev/null
cp "$certbot_tls" "$N/le/options-ssl-nginx.conf"
cp "$certbot_dh" "$N/le/ssl-dhparams.pem"
http_port=$(free_port) https_port=$(free_port)
while [ "$https_port" = "$http_port" ]; do https_port=$(free_port); done
sed -e "s#/etc/letsencrypt/#$N/le/#g" \
  -e "s#server 127.0.0.1:8080;#server $upstream;#" \
  -e "s#listen 80;#listen 127.0.0.1:$http_port;#" -e "s#listen \[::\]:80;#listen [::1]:$http_port;#" \
  -e "s#listen 443 #listen 127.0.0.1:$https_port #" -e "s#listen \[::\]:443 #listen [::1]:$https_port #" \
  -e "s#/var/log/nginx/#$N/logs/#g" -e "s#/var/www/letsencrypt#$N/www#g" "$conf" >"$N/inferd.conf"
left=$(grep -nE '/etc/letsencrypt|:8080|listen (\[::\]:)?(80|443)[ ;]|/var/log/nginx|/var/www' "$N/inferd.conf" | grep -vE '^[0-9]+: *#')
if ! python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then
  echo "# no IPv6 loopback here: the [::] listen lines are left out of the copy"
  sed -i '/listen \[::1\]/d' "$N/inferd.conf"
fi
if [ -z "$left" ]; then
  ok "copy of $conf made: certbot paths, upstream $upstream, ports $http_port/$https_port"
else
  not_ok "copy of $conf" "not swapped: $left"
fi
user_line=""
if [ "$(id -u)" = 0 ]; then
  user_line="user www-data;"
  chown -R www-data "$N/tmp" "$N/logs"
fi
cat >"$N/nginx.conf" <<EOF
$user_line
worker_processes 1;
pid $N/nginx.pid;
error_log $N/logs/error.log notice;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    # Debian's nginx.conf sets these at http level: the site must not clash with them.
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    access_log $N/logs/access.log;
    client_body_temp_path $N/tmp/body;
    proxy_temp_path $N/tmp/proxy;
    fastcgi_temp_path $N/tmp/fastcgi;
    uwsgi_temp_path $N/tmp/uwsgi;
    scgi_temp_path $N/tmp/scgi;
    include $N/inferd.conf;
}
EOF
out=$(nginx -t -c "$N/nginx.conf" -p "$N" -e "$N/logs/error.log" 2>&1)
if grep -q 'test is successful' <<<"$out"; then
  ok "nginx -t: the site with certbot's options-ssl-nginx.conf and ssl-dhparams.pem"
else
  not_ok "nginx -t" "$(tr '\n' ' ' <<<"$out")"
  finish
fi

nginx -c "$N/nginx.conf" -p "$N" -e "$N/logs/error.log" -g 'daemon off;' >"$N/logs/stdout.log" 2>&1 &
nginx_pid=$!
pids+=("$nginx_pid")
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$http_port/" && curl -sk -o /dev/null "https://127.0.0.1:$https_port/health" && break
  sleep 0.1
done

https=https://example.com:$https_port
c() { curl -sk --resolve "example.com:$https_port:127.0.0.1" --resolve "example.com:$http_port:127.0.0.1" --max-time 20 "$@"; }
header() { tr -d '\r' <"$1" | awk -v h="$(tr 'A-Z' 'a-z' <<<"$2")" -F': ' 'tolower($1) == h {print $2}' | tail -1; }
json() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$1" "$2" 2>/dev/null; }

# --- predictions and request ids ---
code=$(c -o "$T/b1" -D "$T/h1" -w '%{http_code} %{http_version}' -H 'content-type: application/json' \
  -H 'x-request-id: nginx-check.1' --data @example.json "$https/predict")
if [ "${code% *}" = 200 ] && grep -q '"predictions"' "$T/b1"; then
  ok "POST /predict over HTTPS (HTTP/${code#* }): 200 with predictions"
else
  not_ok "POST /predict over HTTPS" "$code $(head -c 300 "$T/b1")"
fi
rid=$(header "$T/h1" x-request-id)
if [ "$rid" = nginx-check.1 ] && [ "$(json "$T/b1" id)" = nginx-check.1 ]; then
  ok "the client's x-request-id comes back unchanged (header and body id)"
else
  not_ok "client's x-request-id" "header '$rid', body id '$(json "$T/b1" id)'"
fi

c -o "$T/b2" -D "$T/h2" -H 'content-type: application/json' --data @example.json "$https/predict" >/dev/null
rid=$(header "$T/h2" x-request-id)
if [[ "$rid" =~ ^[0-9a-f]{32}$ ]] && [ "$(json "$T/b2" id)" = "$rid" ] && grep -q "rid=$rid " "$N/logs/inferd.access.log"; then
  ok "without x-request-id: nginx's \$request_id ($rid) in the header, inferd's body id and nginx's access log"
else
  not_ok "request id without a client header" "header '$rid', body id '$(json "$T/b2" id)'"
fi

bad="has space"
c -o "$T/b3" -D "$T/h3" -H 'content-type: application/json' -H "x-request-id: $bad" --data @example.json "$https/predict" >/dev/null
rid=$(header "$T/h3" x-request-id)
if [[ "$rid" =~ ^[0-9a-f]{32}$ ]] && [ "$(json "$T/b3" id)" = "$rid" ]; then
  ok "an x-request-id inferd would refuse ('$bad') is replaced by nginx's, one id on both sides"
else
  not_ok "unusable x-request-id" "header '$rid', body id '$(json "$T/b3" id)'"
fi

# --- plain HTTP, certbot's webroot ---
code=$(c -o /dev/null -D "$T/h4" -w '%{http_code}' "http://example.com:$http_port/predict?x=1")
loc=$(header "$T/h4" location)
if [ "$code" = 301 ] && [ "$loc" = "https://example.com/predict?x=1" ]; then
  ok "plain HTTP: 301 to $loc"
else
  not_ok "HTTP redirect" "$code, location '$loc'"
fi
echo token-body >"$N/www/.well-known/acme-challenge/check-token"
chmod -R a+rX "$N/www"
got=$(c "http://example.com:$http_port/.well-known/acme-challenge/check-token")
if [ "$got" = token-body ]; then ok "plain HTTP: ACME challenge served from the webroot (certbot --webroot renewals)"; else not_ok "ACME webroot" "got '$got'"; fi

# --- body limits: who answers ---
limit=$(sed -n 's/^body_limit_bytes *= *\([0-9]*\).*/\1/p' runtime.toml)
python3 - "$T" "$limit" <<'EOF'
import json, sys
folder, limit = sys.argv[1], int(sys.argv[2])
body = json.dumps(json.load(open("example.json"))).encode()
open(f"{folder}/at_limit.json", "wb").write(body + b" " * (limit - len(body)))      # JSON may end in spaces
open(f"{folder}/over_limit.json", "wb").write(body + b" " * (limit + 1 - len(body)))
open(f"{folder}/two_mb.json", "wb").write(body + b" " * (2_000_000 - len(body)))
EOF
code=$(c -o "$T/b5" -w '%{http_code}' -H 'content-type: application/json' --data-binary @"$T/at_limit.json" "$https/predict")
if [ "$code" = 200 ]; then ok "a body of exactly $limit bytes (inferd's limit) reaches inferd and is predicted"; else not_ok "body at the limit" "$code $(head -c 200 "$T/b5")"; fi
for f in over_limit two_mb; do
  size=$(stat -c %s "$T/$f.json")
  code=$(c -o "$T/b6" -D "$T/h6" -w '%{http_code}' -H 'content-type: application/json' --data-binary @"$T/$f.json" "$https/predict")
  if [ "$code" = 413 ] && [ "$(json "$T/b6" error_type)" = payload_too_large ] && [ -n "$(header "$T/h6" x-request-id)" ] &&
    grep -qi 'application/json' <(header "$T/h6" content-type); then
    ok "a $size-byte body: 413 from nginx, JSON payload_too_large as inferd writes it, with an x-request-id"
  else
    not_ok "$size-byte body" "$code $(head -c 200 "$T/b6")"
  fi
done
if ! grep -q '"status":413' "$T/inferd.log"; then ok "inferd never saw the oversized bodies (nginx answered)"; else not_ok "oversized bodies" "inferd answered one"; fi

# --- /metrics: not through nginx, still on inferd ---
bad_paths=()
for path in /metrics '/metrics?x=1' //metrics /%6Detrics /./metrics; do
  code=$(c -o /dev/null -w '%{http_code}' --path-as-is "$https$path")
  [ "$code" = 403 ] || bad_paths+=("$path=$code")
done
direct=$(curl -s -o /dev/null -w '%{http_code}' "http://$upstream/metrics")
if [ "${#bad_paths[@]}" = 0 ] && [ "$direct" = 200 ]; then
  ok "/metrics (also ?x=1, //metrics, /%6Detrics, /./metrics) is 403 through nginx, 200 on inferd's own port"
else
  not_ok "/metrics" "through nginx: ${bad_paths[*]:-all 403}; direct: $direct"
fi

# --- keep-alive to the upstream ---
conns() { ss -Htnp state established "( dport = :$upstream_port )" 2>/dev/null | grep nginx | awk '{print $3}' | sort -u; }
for _ in 1 2 3 4 5; do c -o /dev/null -H 'content-type: application/json' --data @example.json "$https/predict"; done
first=$(conns)
for _ in 1 2 3 4 5; do c -o /dev/null -H 'content-type: application/json' --data @example.json "$https/predict"; done
second=$(conns)
if [ -n "$first" ] && [ "$(wc -l <<<"$first")" = 1 ] && [ "$first" = "$second" ]; then
  ok "keep-alive: 10 requests over one upstream connection ($first)"
else
  not_ok "upstream keep-alive" "nginx's connections to inferd after 5 requests: '$(tr '\n' ' ' <<<"$first")', after 10: '$(tr '\n' ' ' <<<"$second")'"
fi

# --- gRPC through nginx (grpc_pass) over TLS, with tritonclient.grpc from .venv ---
# (after the keep-alive count: nginx keeps this HTTP/2 connection to inferd open too)
# grpc_call MODE: a Python client trusting the check's self-signed certificate, SNI example.com.
grpc_call() {
  .venv/bin/python - "$1" "127.0.0.1:$https_port" "$N/le/live/example.com/fullchain.pem" <<'EOF'
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
mode, url, ca = sys.argv[1:]
client = grpcclient.InferenceServerClient(
    url, ssl=True, root_certificates=ca,
    channel_args=[("grpc.ssl_target_name_override", "example.com")])
try:
    if mode == "ok":
        assert client.is_server_live() and client.is_server_ready(), "not live/ready"
        meta = client.get_model_metadata("house_price_linear", as_json=True)
        x = grpcclient.InferInput(meta["inputs"][0]["name"], [2, 5], "FP32")
        x.set_data_from_numpy(np.array([[5850, 3, 1, 2, 1], [7260, 4, 2, 2, 2]], dtype=np.float32))
        res = client.infer("house_price_linear", [x], request_id="nginx-grpc.1",
                           headers={"x-request-id": "nginx-grpc.1",
                                    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
        out = res.get_response(as_json=True)
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        health = health_pb2_grpc.HealthStub(client._channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING, f"health {health}"
        print("ok", out["model_name"], res.as_numpy(out["outputs"][0]["name"]).shape)
    else:
        client.is_server_live()
        print("no error")
except InferenceServerException as e:
    print("status", e.status(), e.message())
EOF
}
if .venv/bin/python -c 'import tritonclient.grpc' 2>/dev/null; then
  got=$(grpc_call ok 2>&1 | tail -1)
  if [[ "$got" == "ok house_price_linear (2, 1)" ]]; then
    ok "gRPC over TLS through nginx (grpc_pass to inferd's port, h2c): ServerLive, ServerReady, ModelMetadata, ModelInfer of 2 rows, grpc.health.v1 Check SERVING"
  else
    not_ok "gRPC through nginx" "$got"
  fi
  if grep -q '"POST /inference.GRPCInferenceService/ModelInfer HTTP/2.0" 200 .*rid=nginx-grpc.1 ' "$N/logs/inferd.access.log" &&
    grep -q 'nginx-grpc.1' "$T/inferd.log"; then
    ok "gRPC: the call's x-request-id metadata in nginx's access log and inferd's log"
  else
    not_ok "gRPC request id" "$(grep GRPCInferenceService "$N/logs/inferd.access.log" | tail -1)"
  fi
else
  echo "# skip - gRPC through nginx: tritonclient.grpc is not in .venv (scripts/test.sh installs tritonclient[grpc])"
fi

# --- reload, as after a certificate renewal (systemctl reload nginx) ---
kill -HUP "$nginx_pid"
code=000
for _ in $(seq 50); do
  sleep 0.1
  code=$(c -o /dev/null -w '%{http_code}' -H 'content-type: application/json' --data @example.json "$https/predict")
  [ "$code" = 200 ] && grep -q 'reconfiguring' "$N/logs/error.log" && break
done
if [ "$code" = 200 ] && grep -q 'reconfiguring' "$N/logs/error.log"; then ok "nginx reload (SIGHUP): still serving"; else not_ok "nginx reload" "$code"; fi

# --- inferd gone: nginx's own answer ---
kill -TERM "$inferd_pid"
for _ in $(seq 300); do kill -0 "$inferd_pid" 2>/dev/null || break; sleep 0.1; done # grace is 25 s
kill -KILL "$inferd_pid" 2>/dev/null
wait "$inferd_pid"
rc=$?
code=$(c -o "$T/b7" -D "$T/h7" -w '%{http_code}' -H 'content-type: application/json' --data @example.json "$https/predict")
if [ "$rc" = 0 ] && [ "$code" = 503 ] && [ "$(json "$T/b7" error_type)" = upstream_unavailable ] && [ -n "$(header "$T/h7" retry-after)" ]; then
  ok "inferd stopped (exit 0): nginx answers 503 upstream_unavailable as JSON, with Retry-After"
else
  not_ok "inferd stopped" "inferd exit $rc; nginx $code $(head -c 200 "$T/b7")"
fi

if .venv/bin/python -c 'import tritonclient.grpc' 2>/dev/null; then
  got=$(grpc_call gone 2>&1 | tail -1)
  if [[ "$got" == "status StatusCode.UNAVAILABLE"* ]]; then
    ok "inferd stopped: a gRPC call through nginx gets UNAVAILABLE (nginx's grpc-status 14), not a JSON page"
  else
    not_ok "gRPC with inferd stopped" "$got"
  fi
fi

kill -QUIT "$nginx_pid"
wait "$nginx_pid" 2>/dev/null
finish
