"""The Celery side of bench/celery.sh: a no-op task that returns the time it started, on a
RabbitMQ broker (BROKER_URL) with Redis results (RESULT_URL), Celery's defaults otherwise
(acks early, no publisher confirms, persistent messages)."""

import os
import time

from celery import Celery

app = Celery("distriqueue_bench", broker=os.environ["BROKER_URL"], backend=os.environ["RESULT_URL"])
app.conf.update(worker_prefetch_multiplier=4, result_expires=600)


@app.task
def noop(n):
    return time.time()
