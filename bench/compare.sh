#!/usr/bin/env bash
# DistriQueue `serve` against Celery 5 on one workload, run alternately ROUNDS times in one
# invocation so that drift hits both alike; prints each run's JSON and the ratios of the medians.
#
# Usage: bench/compare.sh   (ROUNDS=3 JOBS=10000 BATCH=100)
set -euo pipefail
cd "$(dirname "$0")"
rounds=${ROUNDS:-3}
out=$(mktemp /tmp/distriqueue-compare.XXXXXX)
trap 'rm -f "$out"' EXIT
for round in $(seq "$rounds"); do
  echo "round $round: distriqueue serve" >&2
  echo "serve $(./serve.sh)" | tee -a "$out"
  echo "round $round: celery" >&2
  echo "celery $(./celery.sh)" | tee -a "$out"
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = {"serve": [], "celery": []}
for line in open(sys.argv[1]):
    side, body = line.split(" ", 1)
    runs[side].append(json.loads(body))
def median(side, key, sub=None):
    values = [r[key][sub] if sub else r[key] for r in runs[side]]
    return statistics.median(values)
for key, sub, better in [("e2e_jobs_per_s", None, "higher"), ("submit_jobs_per_s", None, "higher"),
                         ("start_latency_ms", "p50", "lower")]:
    s, c = median("serve", key, sub), median("celery", key, sub)
    ratio = s / c if better == "higher" else c / s
    name = key + (f".{sub}" if sub else "")
    print(f"{name:<24} serve {s:>10.1f}   celery {c:>10.1f}   distriqueue {ratio:.1f}x ({better} is better)")
print("durability: serve commits every job through Raft (fsync) before answering and acks after the lease;")
print("            Celery (defaults) acks early, publishes without confirms, keeps results in Redis.")
PY
