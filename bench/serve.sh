#!/usr/bin/env bash
# One figure of docs/benchmarks.md (issue 13): `distriqueue serve` (release build, fresh data
# directory, ports of its own), JOBS echo jobs submitted in batches of BATCH from CLIENTS
# clients. Prints the bench's one JSON object (bench --json) on stdout; stops serve and removes
# its data on exit.
#
# Usage: bench/serve.sh   (JOBS=10000 BATCH=100 CLIENTS=8; BATCH=0 for single POSTs)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-10000}
batch=${BATCH:-100}
clients=${CLIENTS:-8}
bin=./target/release/distriqueue
cargo build --release --quiet

dir=$(mktemp -d /tmp/distriqueue-bench-serve.XXXXXX)
pid=0
cleanup() {
  if [ "$pid" != 0 ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

"$bin" serve --data-dir "$dir/data" --gateway-addr 127.0.0.1:0 --orchestrator-addr 127.0.0.1:0 \
  >"$dir/serve.out" 2>"$dir/serve.log" &
pid=$!
gateway=""
for _ in $(seq 300); do
  gateway=$(grep -o 'gateway=[^ ]*' "$dir/serve.out" | head -n 1 | cut -d= -f2 || true)
  [ -n "$gateway" ] && break
  sleep 0.1
done
[ -n "$gateway" ] || { echo "serve did not start:" >&2; cat "$dir/serve.log" >&2; exit 1; }

args=(--server "$gateway" --jobs "$jobs" --clients "$clients" --json)
[ "$batch" != 0 ] && args+=(--batch "$batch")
"$bin" bench "${args[@]}" 2>"$dir/bench.err" || { cat "$dir/bench.err" >&2; exit 1; }
