#!/usr/bin/env bash
# Starts a distributed DistriQueue on loopback, for trying it out: one orchestrator
# (127.0.0.1:8081), one gateway (127.0.0.1:8082, read model in PostgreSQL) and two workers, all
# against the local RabbitMQ (127.0.0.1:5672, guest/guest) in a vhost of their own. Logs and
# data go to ./local-cluster. Ctrl-C stops everything (workers first, gracefully).
#
# Usage: scripts/local-cluster.sh [--sqlite] [--nodes 3]
#   --sqlite    keep the read model in ./local-cluster/readmodel.db instead of PostgreSQL
#   --nodes 3   a three-node orchestrator cluster (APIs on 127.0.0.1:8081, :8091, :8101; Raft
#               on peer ports :8085, :8095, :8105, signed with a secret made per run)
#
# Environment: DQ_AMQP_ADMIN_URL (default amqp://guest:guest@127.0.0.1:5672),
# DQ_PG_ADMIN_URL (default postgres://root@127.0.0.1:5432/test), DQ_CONCURRENCY (8 per worker).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

sqlite=no
nodes=1
while [ $# -gt 0 ]; do
  case $1 in
    --sqlite) sqlite=yes ;;
    --nodes) nodes=${2:?--nodes needs a number}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

dir=./local-cluster
vhost=distriqueue-local
database=distriqueue_local
amqp_base=${DQ_AMQP_ADMIN_URL:-amqp://guest:guest@127.0.0.1:5672}
pg_admin=${DQ_PG_ADMIN_URL:-postgres://root@127.0.0.1:5432/test}
concurrency=${DQ_CONCURRENCY:-8}

mkdir -p "$dir"
echo "building the release binary (a few minutes the first time)..."
cargo build --release --quiet
bin=./target/release/distriqueue

rabbitmqctl add_vhost "$vhost" >/dev/null 2>&1 || true
rabbitmqctl set_permissions -p "$vhost" guest ".*" ".*" ".*" >/dev/null
amqp="$amqp_base/$vhost"

if [ "$sqlite" = yes ]; then
  readmodel="sqlite://$dir/readmodel.db"
else
  psql "$pg_admin" -q -c "CREATE DATABASE $database" 2>/dev/null || true
  readmodel="${pg_admin%/*}/$database"
fi

pids=()
stopped=no
# Newest first: workers (they finish and report their running jobs), then the gateway, then the
# orchestrators, each waited for.
stop() {
  [ "$stopped" = yes ] && return
  stopped=yes
  echo "stopping..."
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
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
if [ "$nodes" = 1 ]; then
  orchestrators=http://127.0.0.1:8081
  start orchestrator orchestrator --addr 127.0.0.1:8081 --data-dir "$dir/orchestrator" --amqp "$amqp"
else
  # Node i: API on 8071+10i (8081, 8091, ...), Raft on its peer port 8075+10i (8085, ...),
  # signed with a secret made for this run.
  DQ_CLUSTER_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export DQ_CLUSTER_SECRET
  peers=""
  orchestrators=""
  for i in $(seq "$nodes"); do
    peers="$peers${peers:+,}$i=http://127.0.0.1:$((8075 + 10 * i))"
    orchestrators="$orchestrators${orchestrators:+,}http://127.0.0.1:$((8071 + 10 * i))"
  done
  for i in $(seq "$nodes"); do
    start "orchestrator-$i" orchestrator --node-id "$i" \
      --peers "$peers" --addr "127.0.0.1:$((8071 + 10 * i))" \
      --peer-addr "127.0.0.1:$((8075 + 10 * i))" --data-dir "$dir/orchestrator-$i" --amqp "$amqp"
  done
fi
start gateway gateway --addr 127.0.0.1:8082 --database "$readmodel" --amqp "$amqp" \
  --orchestrator "$orchestrators"
start worker-1 worker --amqp "$amqp" --orchestrator "$orchestrators" \
  --concurrency "$concurrency" --worker-id local-1
start worker-2 worker --amqp "$amqp" --orchestrator "$orchestrators" \
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
