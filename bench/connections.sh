#!/usr/bin/env bash
# Connections a client holds open: the release binary started under a soft open-files limit of
# 1024 (it raises it to the hard limit), then 3,000 idle sockets and 200 slowloris clients (one
# header byte a second) opened against it. Reports how long a new client's POST /predict takes
# meanwhile (new connection each time), and when the idle and slow sockets were closed.
# Usage: bench/connections.sh [idle, default 3000] [slowloris, default 200]
set -euo pipefail
cd "$(dirname "$0")/.."
idle="${1:-3000}"
slow="${2:-200}"
./scripts/fetch-onnxruntime.sh
cargo build --release --locked --quiet

port=18401
log="$(mktemp)"
logs="$(mktemp -d)"
(ulimit -Sn 1024 && exec env INFERD_PREDICTION_LOG_DIR="$logs" ./target/release/inferd serve --host 127.0.0.1 --port "$port") >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$log" "$logs"' EXIT
until curl -sf "localhost:$port/ready" >/dev/null; do sleep 0.01; done
grep -o '"open_files_limit":[0-9]*' "$log" | head -1 | sed 's/^/server started under ulimit -Sn 1024; /'
echo "server fds before: $(ls /proc/$pid/fd | wc -l)"

python3 - "$port" "$idle" "$slow" "$pid" <<'PY'
import asyncio, json, resource, sys, time, os
port, idle, slow, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
row = {"lotsize": 5850, "bedrooms": 3, "bathrms": 1, "stories": 2, "garagepl": 1, "driveway": "yes",
       "recroom": "no", "fullbase": "yes", "gashw": "no", "airco": "no", "prefarea": "no"}
body = json.dumps({"instances": [row]}).encode()
request = (f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\n"
           f"content-length: {len(body)}\r\n\r\n").encode() + body

async def predict():
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    return (time.perf_counter() - started) * 1000

async def closed_at(reader, t0):
    try:
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass
    return time.perf_counter() - t0

async def slowloris(t0):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /predict HTTP/1.1\r\nhost: x\r\n")
    done = asyncio.ensure_future(closed_at(reader, t0))
    while not done.done():
        try:
            writer.write(b"x")
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.wait([done], timeout=1)
    return await done

async def main():
    base = [await predict() for _ in range(20)]
    t0 = time.perf_counter()
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(idle)]
    idle_closed = [asyncio.ensure_future(closed_at(r, t0)) for r, _ in opened]
    slow_closed = [asyncio.ensure_future(slowloris(t0)) for _ in range(slow)]
    await asyncio.sleep(1)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    loaded = [await predict() for _ in range(20)]
    med = lambda v: sorted(v)[len(v) // 2]
    print(f"server fds with {idle} idle + {slow} slowloris open: {fds}")
    print(f"new client /predict, new connection each: before median {med(base):.2f} ms max {max(base):.2f} ms; "
          f"with them open median {med(loaded):.2f} ms max {max(loaded):.2f} ms (20 requests each)")
    idle_t = await asyncio.wait_for(asyncio.gather(*idle_closed), 60)
    slow_t = await asyncio.wait_for(asyncio.gather(*slow_closed), 60)
    print(f"idle sockets closed by the server after {min(idle_t):.1f} to {max(idle_t):.1f} s; "
          f"slowloris after {min(slow_t):.1f} to {max(slow_t):.1f} s (header_read_timeout_ms = 10000)")
    for _, w in opened:
        w.close()

asyncio.run(main())
PY
echo "server fds after: $(ls /proc/$pid/fd | wc -l)"
