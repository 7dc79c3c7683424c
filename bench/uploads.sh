#!/usr/bin/env bash
# A crowd of uploads against the memory ceiling: the release binary with
# `server.max_body_bytes_in_flight` = 16 MiB, then N clients (default 800) that each connect and
# send a complete 1 MB POST /predict at once (1,024 rows padded with spaces), keep their
# connection open until every client has its answer, then close. Reports the server's RSS idle,
# its peak during the crowd (VmHWM, so no sample is missed), and its RSS once the crowd has gone.
# Usage: bench/uploads.sh [clients, default 800] [budget bytes, default 16777216]
# INFERD_BIN=path runs that binary instead of building the release one (to compare builds).
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${1:-800}"
budget="${2:-16777216}"
./scripts/fetch-onnxruntime.sh
bin="${INFERD_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --locked --quiet
  bin=./target/release/inferd
fi

dir="$(mktemp -d)"
sed -e "s/^request_timeout_ms = .*/request_timeout_ms = 30000/" \
    -e "s/^body_limit_bytes = .*/body_limit_bytes = 1048576\nmax_body_bytes_in_flight = $budget/" \
    -e "s|^path = \"models/|path = \"$PWD/models/|" -e "s|^schema = \"schemas/|schema = \"$PWD/schemas/|" \
    runtime.toml >"$dir/inferd.toml"
INFERD_PREDICTION_LOG_DIR="$dir/logs" \
  "$bin" serve --config "$dir/inferd.toml" --host 127.0.0.1 --port 0 >"$dir/log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
until grep -q '"message":"ready"' "$dir/log"; do
  kill -0 "$pid" || { cat "$dir/log"; exit 1; }
  sleep 0.05
done
port="$(grep -o '"addr":"127.0.0.1:[0-9]*"' "$dir/log" | head -1 | grep -o '[0-9]*"$' | tr -d '"')"

python3 - "$port" "$clients" "$pid" <<'PY'
import asyncio, collections, json, resource, sys, time
port, clients, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def status(field):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) // 1024 for l in f if l.startswith(field + ":"))

row = {"lotsize": 5850, "bedrooms": 3, "bathrms": 1, "stories": 2, "garagepl": 1, "driveway": "yes",
       "recroom": "no", "fullbase": "yes", "gashw": "no", "airco": "no", "prefarea": "no"}
body = json.dumps({"instances": [row] * 1024}).encode()
body = body[:-1] + b" " * (1_000_000 - len(body)) + b"}"
request = memoryview((f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      f"content-length: {len(body)}\r\n\r\n").encode() + body)

async def client(everyone_answered, statuses):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as e:
        statuses[type(e).__name__] += 1
        return
    try:
        # In 64 KiB slices, so that this process does not copy 1 MB per client into its buffers.
        for at in range(0, len(request), 65536):
            writer.write(request[at:at + 65536])
            await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        statuses[head.split(b" ")[1].decode()] += 1
        await everyone_answered.wait()
    except (OSError, asyncio.IncompleteReadError) as e:
        statuses[type(e).__name__] += 1
    finally:
        writer.close()

async def main():
    idle, hwm_before = status("VmRSS"), status("VmHWM")
    statuses = collections.Counter()
    everyone_answered = asyncio.Event()
    started = time.perf_counter()
    tasks = [asyncio.ensure_future(client(everyone_answered, statuses)) for _ in range(clients)]
    while sum(statuses.values()) < clients:
        await asyncio.sleep(0.05)
    took = time.perf_counter() - started
    peak = status("VmHWM")
    everyone_answered.set()
    await asyncio.gather(*tasks)
    closed = time.monotonic()
    after = status("VmRSS")
    # Freed memory goes back to the system a moment later (mimalloc purges with a delay).
    while after > idle + 32 and time.monotonic() < closed + 10:
        await asyncio.sleep(0.1)
        after = status("VmRSS")
    print(f"{clients} clients x 1 MB, answered in {took:.1f} s: {dict(statuses)}")
    print(f"RSS idle {idle} MiB (peak before the crowd {hwm_before} MiB); "
          f"peak {peak} MiB (+{peak - idle}); after {after} MiB (+{after - idle}), "
          f"{time.monotonic() - closed:.1f} s after the clients closed")

asyncio.run(main())
PY
