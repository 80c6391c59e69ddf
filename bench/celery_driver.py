"""Submits JOBS no-op tasks to Celery from one process (in chunks of BATCH through a group, or
one by one with BATCH=0), waits for every result, and prints one JSON object shaped like
`distriqueue bench --json`: jobs, completed, failed, submit_jobs_per_s, e2e_jobs_per_s,
start_latency_ms and finish_latency_ms (p50, p90, p99, max)."""

import json
import math
import os
import time

from celery import group

from celery_tasks import noop

JOBS = int(os.environ.get("JOBS", "10000"))
BATCH = int(os.environ.get("BATCH", "100"))


def percentiles(samples):
    samples = sorted(samples)
    if not samples:
        return {"n": 0}
    def at(q):
        # Nearest rank, as distriqueue bench reports it.
        rank = max(1, math.ceil(q * len(samples)))
        return round(samples[min(rank, len(samples)) - 1] * 1000, 3)
    return {"n": len(samples), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": round(samples[-1] * 1000, 3)}


def main():
    sent = []
    results = []
    first = time.time()
    if BATCH > 0:
        for start in range(0, JOBS, BATCH):
            n = min(BATCH, JOBS - start)
            at = time.time()
            batch = group(noop.s(start + i) for i in range(n)).apply_async()
            results.extend(batch.results)
            sent.extend([at] * n)
    else:
        for i in range(JOBS):
            at = time.time()
            results.append(noop.delay(i))
            sent.append(at)
    submitted = time.time()
    starts, finishes, failed = [], [], 0
    for at, result in zip(sent, results):
        try:
            started = result.get(timeout=600)
            starts.append(started - at)
            finishes.append(time.time() - at)
        except Exception:
            failed += 1
    last = time.time()
    print(json.dumps({
        "jobs": JOBS, "completed": JOBS - failed, "failed": failed, "batch": BATCH or None,
        "submit_jobs_per_s": round(JOBS / max(submitted - first, 1e-9), 1),
        "e2e_jobs_per_s": round((JOBS - failed) / max(last - first, 1e-9), 1),
        "start_latency_ms": percentiles(starts),
        # Upper bounds: results are collected in order after the submit phase.
        "finish_latency_ms": percentiles(finishes),
        "durability": "Celery defaults: acks early (task_acks_late=False), no publisher confirms, persistent messages, Redis results",
    }))


if __name__ == "__main__":
    main()
