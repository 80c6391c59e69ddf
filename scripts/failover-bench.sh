#!/usr/bin/env bash
# Failover benchmark (issue 5): three orchestrator nodes on loopback (release build, RabbitMQ
# in a vhost of their own). Five times: kill -9 the leader, then measure the time until the
# first write (a register) is accepted by one of the other two nodes, then restart the killed
# node and let it rejoin. Prints each run and the median, in milliseconds.
#
# Usage: scripts/failover-bench.sh [RUNS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-5}
dir=$(mktemp -d /tmp/distriqueue-failover.XXXXXX)
vhost=distriqueue-failover-$$
ports=(18181 18191 18201)
bin=./target/release/distriqueue
cargo build --release --quiet

rabbitmqctl add_vhost "$vhost" >/dev/null
rabbitmqctl set_permissions -p "$vhost" guest ".*" ".*" ".*" >/dev/null
amqp="amqp://guest:guest@127.0.0.1:5672/$vhost"
peer_ports=(18185 18195 18205)
peers="1=http://127.0.0.1:${peer_ports[0]},2=http://127.0.0.1:${peer_ports[1]},3=http://127.0.0.1:${peer_ports[2]}"
export DQ_CLUSTER_SECRET=failover-bench-cluster-secret

pids=(0 0 0)
start_node() { # index
  local i=$1
  "$bin" orchestrator --node-id $((i + 1)) --peers "$peers" --addr "127.0.0.1:${ports[$i]}" \
    --peer-addr "127.0.0.1:${peer_ports[$i]}" \
    --data-dir "$dir/node-$((i + 1))" --amqp "$amqp" >>"$dir/node-$((i + 1)).out" 2>>"$dir/node-$((i + 1)).log" &
  pids[$i]=$!
}
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rabbitmqctl delete_vhost "$vhost" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

leader() { # prints the leader's index, or nothing
  for i in 0 1 2; do
    local status
    status=$(curl -s --max-time 1 "http://127.0.0.1:${ports[$i]}/api/raft/status" || true)
    if [[ $status == *'"role":"leader"'* ]]; then echo "$i"; return; fi
  done
}
wait_leader() {
  for _ in $(seq 300); do
    local l; l=$(leader)
    if [ -n "$l" ]; then echo "$l"; return; fi
    sleep 0.1
  done
  echo "no leader" >&2; exit 1
}
register() { # node index; prints the HTTP status
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 -X POST \
    -H 'Content-Type: application/json' \
    -d "{\"id\":\"$(cat /proc/sys/kernel/random/uuid)\",\"type\":\"echo\",\"priority\":5}" \
    "http://127.0.0.1:${ports[$1]}/api/jobs/register" || true
}

for i in 0 1 2; do start_node "$i"; done
wait_leader >/dev/null
# Warm up: the cluster takes writes.
until [ "$(register "$(wait_leader)")" = 202 ]; do sleep 0.1; done

times=()
for run in $(seq "$runs"); do
  l=$(wait_leader)
  others=()
  for i in 0 1 2; do [ "$i" != "$l" ] && others+=("$i"); done
  start=$(date +%s%N)
  kill -9 "${pids[$l]}"
  wait "${pids[$l]}" 2>/dev/null || true
  accepted=""
  while [ -z "$accepted" ]; do
    for i in "${others[@]}"; do
      if [ "$(register "$i")" = 202 ]; then accepted=$i; break; fi
    done
  done
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  times+=("$ms")
  echo "run $run: leader node $((l + 1)) killed; node $((accepted + 1)) accepted a write after $ms ms"
  start_node "$l"
  sleep 3 # let it rejoin as a follower
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
echo "failover: median $(( sorted[${#sorted[@]} / 2] )) ms over ${#sorted[@]} runs (${times[*]} ms)"
