#!/usr/bin/env bash
# One figure of docs/benchmarks.md (issue 13): DistriQueue distributed on this machine, each
# role its own release process over the local RabbitMQ (a vhost of its own) and PostgreSQL (a
# database of its own): NODES orchestrators (1, or a Raft cluster of 3), a gateway and two
# workers of CONCURRENCY slots. Runs the same bench as bench/serve.sh and prints its one JSON
# object; stops every process, drops the vhost and the database on exit.
#
# Usage: bench/distributed.sh   (NODES=1 JOBS=10000 BATCH=100 CLIENTS=8 CONCURRENCY=8
#                                BASE_PORT=19100; BATCH=0 for single POSTs)
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-1}
jobs=${JOBS:-10000}
batch=${BATCH:-100}
clients=${CLIENTS:-8}
concurrency=${CONCURRENCY:-8}
base=${BASE_PORT:-19100}
bin=./target/release/distriqueue
cargo build --release --quiet

dir=$(mktemp -d /tmp/distriqueue-bench-distributed.XXXXXX)
vhost=distriqueue-bench-$$
database=distriqueue_bench_$$
pg_admin=${DQ_PG_ADMIN_URL:-postgres://root@127.0.0.1:5432/test}
rabbitmqctl add_vhost "$vhost" >/dev/null
rabbitmqctl set_permissions -p "$vhost" guest ".*" ".*" ".*" >/dev/null
psql "$pg_admin" -q -c "CREATE DATABASE $database"
amqp="amqp://guest:guest@127.0.0.1:5672/$vhost"
readmodel="${pg_admin%/*}/$database"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rabbitmqctl delete_vhost "$vhost" >/dev/null 2>&1 || true
  psql "$pg_admin" -q -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

start() { # name args...: waits for the role's ready line
  local name=$1; shift
  "$bin" "$@" >"$dir/$name.out" 2>"$dir/$name.log" &
  pids=("$!" "${pids[@]}")
  for _ in $(seq 300); do
    grep -q "distriqueue" "$dir/$name.out" 2>/dev/null && return
    sleep 0.1
  done
  echo "$name did not start:" >&2; cat "$dir/$name.log" >&2; exit 1
}

orchestrators=""
if [ "$nodes" = 1 ]; then
  orchestrators="http://127.0.0.1:$base"
  start orchestrator orchestrator --addr "127.0.0.1:$base" --data-dir "$dir/orchestrator" --amqp "$amqp"
else
  DQ_CLUSTER_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export DQ_CLUSTER_SECRET
  peers=""
  for i in $(seq "$nodes"); do
    peers="$peers${peers:+,}$i=http://127.0.0.1:$((base + 10 * i + 5))"
    orchestrators="$orchestrators${orchestrators:+,}http://127.0.0.1:$((base + 10 * i))"
  done
  for i in $(seq "$nodes"); do
    start "orchestrator-$i" orchestrator --node-id "$i" --peers "$peers" \
      --addr "127.0.0.1:$((base + 10 * i))" --peer-addr "127.0.0.1:$((base + 10 * i + 5))" \
      --data-dir "$dir/orchestrator-$i" --amqp "$amqp"
  done
fi
start gateway gateway --addr "127.0.0.1:$((base + 2))" --database "$readmodel" --amqp "$amqp" \
  --orchestrator "$orchestrators"
for w in 1 2; do
  start "worker-$w" worker --amqp "$amqp" --orchestrator "$orchestrators" \
    --concurrency "$concurrency" --worker-id "bench-$w"
done

args=(--server "http://127.0.0.1:$((base + 2))" --jobs "$jobs" --clients "$clients" --json)
[ "$batch" != 0 ] && args+=(--batch "$batch")
"$bin" bench "${args[@]}" 2>"$dir/bench.err" || { cat "$dir/bench.err" >&2; exit 1; }
