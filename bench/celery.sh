#!/usr/bin/env bash
# One figure of docs/benchmarks.md (issue 13): Celery 5 on the same workload as bench/serve.sh,
# on this machine's RabbitMQ (a vhost of its own) with Redis results (a database of its own),
# a prefork worker of 2 processes, a no-op task that returns its start time. Installs Celery
# from PyPI into a throwaway virtualenv (kept in CELERY_VENV, default /tmp/distriqueue-celery-venv,
# so a second run does not download again). Prints one JSON object; stops the worker, deletes
# the vhost and flushes the Redis database on exit.
#
# Usage: bench/celery.sh   (JOBS=10000 BATCH=100; BATCH=0 for one task a publish)
set -euo pipefail
cd "$(dirname "$0")"
venv=${CELERY_VENV:-/tmp/distriqueue-celery-venv}
if [ ! -x "$venv/bin/celery" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "celery==5.4.0" "redis==5.2.1"
fi
vhost=distriqueue-celery-$$
redis_db=${REDIS_DB:-7}
rabbitmqctl add_vhost "$vhost" >/dev/null
rabbitmqctl set_permissions -p "$vhost" guest ".*" ".*" ".*" >/dev/null
export BROKER_URL="amqp://guest:guest@127.0.0.1:5672/$vhost"
export RESULT_URL="redis://127.0.0.1:6379/$redis_db"
log=$(mktemp /tmp/distriqueue-celery.XXXXXX.log)
worker=0
cleanup() {
  if [ "$worker" != 0 ]; then kill "$worker" 2>/dev/null || true; wait "$worker" 2>/dev/null || true; fi
  rabbitmqctl delete_vhost "$vhost" >/dev/null 2>&1 || true
  redis-cli -n "$redis_db" flushdb >/dev/null 2>&1 || true
  rm -f "$log"
}
trap cleanup EXIT

"$venv/bin/celery" -A celery_tasks worker --pool prefork --concurrency 2 --loglevel WARNING >"$log" 2>&1 &
worker=$!
for _ in $(seq 100); do
  "$venv/bin/celery" -A celery_tasks inspect ping >/dev/null 2>&1 && break
  sleep 0.3
done
"$venv/bin/python" celery_driver.py
