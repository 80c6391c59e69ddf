#!/usr/bin/env bash
# Starts a distributed DistriQueue on loopback, for trying it out: one orchestrator
# (127.0.0.1:8081), one gateway (127.0.0.1:8082, read model in PostgreSQL) and two workers, all
# against the local RabbitMQ (127.0.0.1:5672, guest/guest) in a vhost of their own. Logs and
# data go to ./local-cluster. Ctrl-C stops everything (workers first, gracefully).
#
# Usage: scripts/local-cluster.sh [--sqlite]
#   --sqlite   keep the read model in ./local-cluster/readmodel.db instead of PostgreSQL
#
# Environment: DQ_AMQP_ADMIN_URL (default amqp://guest:guest@127.0.0.1:5672),
# DQ_PG_ADMIN_URL (default postgres://root@127.0.0.1:5432/test), DQ_CONCURRENCY (8 per worker).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=./local-cluster
vhost=distriqueue-local
database=distriqueue_local
amqp_base=${DQ_AMQP_ADMIN_URL:-amqp://guest:guest@127.0.0.1:5672}
pg_admin=${DQ_PG_ADMIN_URL:-postgres://root@127.0.0.1:5432/test}
concurrency=${DQ_CONCURRENCY:-8}

mkdir -p "$dir"
cargo build --release --quiet
bin=./target/release/distriqueue

rabbitmqctl add_vhost "$vhost" >/dev/null 2>&1 || true
rabbitmqctl set_permissions -p "$vhost" guest ".*" ".*" ".*" >/dev/null
amqp="$amqp_base/$vhost"

if [ "${1:-}" = "--sqlite" ]; then
  readmodel="sqlite://$dir/readmodel.db"
else
  psql "$pg_admin" -q -c "CREATE DATABASE $database" 2>/dev/null || true
  readmodel="${pg_admin%/*}/$database"
fi

pids=()
stop() {
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop INT TERM EXIT

# Waits until a log line shows that a role is ready.
start() { # name args...
  local name=$1; shift
  "$bin" "$@" >"$dir/$name.out" 2>"$dir/$name.log" &
  pids=("$!" "${pids[@]}")
  for _ in $(seq 100); do
    if grep -q "distriqueue" "$dir/$name.out" 2>/dev/null; then
      echo "  $name: $(cat "$dir/$name.out")"
      return
    fi
    sleep 0.1
  done
  echo "$name did not start; see $dir/$name.log" >&2
  exit 1
}

echo "DistriQueue on loopback (logs in $dir):"
start orchestrator orchestrator --addr 127.0.0.1:8081 --data-dir "$dir/orchestrator" --amqp "$amqp"
start gateway gateway --addr 127.0.0.1:8082 --database "$readmodel" --amqp "$amqp" \
  --orchestrator http://127.0.0.1:8081
start worker-1 worker --amqp "$amqp" --orchestrator http://127.0.0.1:8081 \
  --concurrency "$concurrency" --worker-id local-1
start worker-2 worker --amqp "$amqp" --orchestrator http://127.0.0.1:8081 \
  --concurrency "$concurrency" --worker-id local-2

cat <<INFO

Try it:
  $bin submit --type calculate --priority HIGH --payload '{"operation":"sum","numbers":[1,2,3]}' --wait
  $bin list
  $bin watch
  $bin bench --jobs 10000
Press Ctrl-C to stop.
INFO
wait
