#!/usr/bin/env python3
"""A minimal DistriQueue worker in Python, following docs/protocol.md.

It takes job messages from RabbitMQ (job.high, job.medium, job.low), takes each job's lease by
reporting `running` over HTTP, runs the handler for the job's `type`, reports the outcome, and
heartbeats. It runs one job at a time.

Threads: pika's BlockingConnection is not thread-safe, so only the main thread touches the
connection and the channel. The heartbeat thread only makes HTTP calls. A handler runs in a
helper thread while the main thread keeps the AMQP connection serviced.
"""

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid

import pika
import requests

log = logging.getLogger("python_worker")

# The topology of docs/protocol.md, declared with exactly these arguments.
JOBS_EXCHANGE = "jobs.exchange"
CONTROL_EXCHANGE = "control.exchange"
DEAD_QUEUE = "job.dead"
JOB_QUEUES = [("job.high", 10), ("job.medium", 5), ("job.low", 1)]  # (queue, x-max-priority)

HTTP_TIMEOUT = (3, 10)  # seconds: (connect, read)
RUNNING_TRIES = 3  # tries of a `running` report before the message is handed back
OUTCOME_RETRY_FOR = 60  # seconds to keep retrying an outcome report


class BadInput(Exception):
    """The job's payload is unusable: the job fails permanently (no retry)."""


# ---------------------------------------------------------------------------------------------
# Handlers: a payload in, a result object out. Raise BadInput for bad input; any other
# exception fails the attempt, and the orchestrator retries it by the job's policy.


def echo(payload):
    return {"echo": payload}


BINARY_OPERATIONS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}

LIST_OPERATIONS = {
    "sum": sum,
    "average": lambda numbers: sum(numbers) / len(numbers),
    "min": min,
    "max": max,
}


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def calculate(payload):
    """{"operation": "add"|"sub"|"mul"|"div", "a": n, "b": n} -> {"result": n}, or
    {"operation": "sum"|"average"|"min"|"max", "numbers": [n, ...]} -> {"<operation>": n, "count"}
    (the shape of the built-in `calculate` handler)."""
    if not isinstance(payload, dict):
        raise BadInput("payload must be an object")
    operation = payload.get("operation")
    if operation in BINARY_OPERATIONS:
        a, b = payload.get("a"), payload.get("b")
        if not (is_number(a) and is_number(b)):
            raise BadInput("'a' and 'b' must be numbers")
        if operation == "div" and b == 0:
            raise BadInput("division by zero")
        return {"result": BINARY_OPERATIONS[operation](a, b)}
    if operation in LIST_OPERATIONS:
        numbers = payload.get("numbers")
        if not isinstance(numbers, list) or not numbers or not all(map(is_number, numbers)):
            raise BadInput("'numbers' must be a non-empty array of numbers")
        return {operation: LIST_OPERATIONS[operation](numbers), "count": len(numbers)}
    known = ", ".join(list(BINARY_OPERATIONS) + list(LIST_OPERATIONS))
    raise BadInput(f"unknown operation {operation!r} (known: {known})")


def sleep(payload):
    """{"ms": n}: waits n milliseconds (for tests and demos)."""
    ms = payload.get("ms", 0) if isinstance(payload, dict) else None
    if not is_number(ms) or ms < 0:
        raise BadInput("'ms' must be a number >= 0")
    time.sleep(ms / 1000)
    return {"slept_ms": ms}


HANDLERS = {"echo": echo, "calculate": calculate, "sleep": sleep}


def run_handler(job):
    """Runs the handler for job["type"]. Returns (ok, result or error message, permanent)."""
    handler = HANDLERS.get(job["type"])
    if handler is None:
        return False, f"No handler for job type '{job['type']}'", True
    try:
        return True, handler(job.get("payload")), False
    except BadInput as error:
        return False, str(error), True
    except Exception as error:  # a bug or a passing failure: the orchestrator may retry it
        log.exception("handler %s raised", job["type"])
        return False, f"{type(error).__name__}: {error}", False


# ---------------------------------------------------------------------------------------------


def config_from_env():
    orchestrator = os.environ.get("ORCHESTRATOR_URL", "http://127.0.0.1:8081").rstrip("/")
    return {
        "amqp": pika.ConnectionParameters(
            host=os.environ.get("RABBITMQ_HOST", "127.0.0.1"),
            port=int(os.environ.get("RABBITMQ_PORT", "5672")),
            virtual_host=os.environ.get("RABBITMQ_VHOST", "/"),
            # A short AMQP heartbeat: if this process freezes, RabbitMQ closes its connection
            # within about 20 s and the message it holds goes to another worker
            # (docs/protocol.md).
            heartbeat=int(os.environ.get("RABBITMQ_HEARTBEAT_S", "10")),
            credentials=pika.PlainCredentials(
                os.environ.get("RABBITMQ_USERNAME", "guest"),
                os.environ.get("RABBITMQ_PASSWORD", "guest"),
            ),
        ),
        "status_url": os.environ.get("STATUS_UPDATE_URL", orchestrator + "/api/jobs/status"),
        "heartbeat_url": orchestrator + "/api/workers/heartbeat",
        "heartbeat_interval": float(os.environ.get("HEARTBEAT_INTERVAL_S", "10")),
        "worker_id": os.environ.get("WORKER_ID", f"python-{socket.gethostname()}-{os.getpid()}"),
        "capacity": int(os.environ.get("WORKER_CAPACITY", "1")),
        # A key with the worker role, when the orchestrators have API keys (SECURITY.md).
        "headers": auth_headers(os.environ.get("DQ_API_KEY")),
    }


def auth_headers(api_key):
    """The headers every call to the orchestrator carries: its API key, when one is set."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def decode_job(body):
    """The job message as a dict, or None when it is not a usable job message."""
    try:
        job = json.loads(body)
        uuid.UUID(job["id"])
        if not isinstance(job["type"], str) or not job["type"].strip():
            return None
        return job
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


class Worker:
    def __init__(self, config):
        self.config = config
        self.worker_id = config["worker_id"]
        self.stopping = threading.Event()  # set by SIGTERM/SIGINT: take no new job
        self.stopped = threading.Event()  # set once the last job is reported: stop heartbeating
        self.lock = threading.Lock()  # guards the fields below, shared with the heartbeat thread
        self.current_job = None  # the id of the job whose handler runs now
        self.cancelled = set()  # job ids the orchestrator told us to stop
        self.n_succeeded = 0
        self.n_failed = 0
        # Main-thread state.
        self.connection = None
        self.channel = None
        self.lease = None  # the lease token of the job being handled, sent with its reports
        self.consumer_tags = []
        self.deliveries = []  # messages delivered but not started

    # --- AMQP (main thread only) -------------------------------------------------------------

    def connect(self):
        self.connection = pika.BlockingConnection(self.config["amqp"])
        channel = self.connection.channel()
        channel.exchange_declare(JOBS_EXCHANGE, "direct", durable=True)
        for queue, max_priority in JOB_QUEUES:
            channel.queue_declare(queue, durable=True, arguments={"x-max-priority": max_priority})
            channel.queue_bind(queue, JOBS_EXCHANGE, routing_key=queue)
        channel.queue_declare(DEAD_QUEUE, durable=True)
        # Declared for completeness: this example learns cancels from heartbeat replies.
        channel.exchange_declare(CONTROL_EXCHANGE, "direct", durable=True)
        channel.confirm_delivery()  # so a publish to job.dead is confirmed before the ack
        # One slot: hold at most one unstarted message (global = shared by the three consumers).
        channel.basic_qos(prefetch_count=1, global_qos=True)
        self.channel = channel
        self.consumer_tags = []
        self.deliveries = []

    def start_consuming(self):
        """Consumes the job queues, highest priority first."""
        for queue, _ in JOB_QUEUES:
            tag = self.channel.basic_consume(queue, self.on_message, auto_ack=False)
            self.consumer_tags.append(tag)

    def stop_consuming(self):
        """Cancels the consumers. A message pika received but not yet dispatched is nacked and
        requeued by pika itself."""
        for tag in self.consumer_tags:
            self.channel.basic_cancel(tag)
        self.consumer_tags = []

    def on_message(self, channel, method, properties, body):
        self.deliveries.append((method, properties, body))

    def run(self):
        """Consumes until a stop is asked, reconnecting after a lost connection."""
        while not self.stopping.is_set():
            try:
                self.connect()
                log.info("worker %s consuming %s", self.worker_id,
                         ", ".join(queue for queue, _ in JOB_QUEUES))
                self.start_consuming()
                while not self.stopping.is_set():
                    if self.deliveries:
                        self.handle(*self.deliveries.pop(0))
                    else:
                        self.connection.process_data_events(time_limit=1)
                self.stop_consuming()
                for method, _, _ in self.deliveries:  # not started: hand them back
                    self.channel.basic_nack(method.delivery_tag, requeue=True)
                self.connection.close()
            except pika.exceptions.AMQPError as error:
                # Lost, refused, or closed by the broker (a declaration with other arguments
                # than the existing queue's, for instance). Unacked messages go back to their
                # queue by themselves.
                log.warning("RabbitMQ: %r; reconnecting in 5 s", error)
                if self.connection is not None and self.connection.is_open:
                    self.connection.close()
                self.stopping.wait(5)

    def wait(self, seconds):
        """Sleeps, servicing the AMQP connection while it is open."""
        end = time.monotonic() + seconds
        try:
            if self.connection.is_open:
                self.connection.sleep(seconds)
        except pika.exceptions.AMQPConnectionError:
            pass  # noticed again at the next use of the channel
        time.sleep(max(0.0, end - time.monotonic()))

    # --- one job message ---------------------------------------------------------------------

    def handle(self, method, properties, body):
        job = decode_job(body)
        if job is None:
            self.dead_letter(method, properties, body, "not a job message (bad JSON, id or type)")
            return
        job_id, attempt = job["id"], job.get("attempt")
        # The attempt's lease token: every report about it carries it back (one job at a time).
        self.lease = job.get("lease")

        status = self.report_running(job_id, attempt)
        if status is None:  # no answer from the orchestrator: hand the message back
            self.channel.basic_nack(method.delivery_tag, requeue=True)
            return
        if status == 400:
            self.dead_letter(method, properties, body, "the orchestrator answered 400 to running")
            return
        if status != 200:  # 409: another worker or a newer attempt holds it; 404: no such job
            log.info("job %s attempt %s: running refused (%s), dropped", job_id, attempt, status)
            self.channel.basic_ack(method.delivery_tag)
            return

        # The lease is ours: ack, and take no other message while the handler runs, so no
        # message waits here that a free worker could start.
        self.stop_consuming()
        self.channel.basic_ack(method.delivery_tag)
        log.info("job %s attempt %s type %s: started", job_id, attempt, job["type"])
        started = time.monotonic()
        with self.lock:
            self.current_job = job_id
        (ok, value, permanent), lost = self.run_handler_servicing_connection(job)
        elapsed_ms = (time.monotonic() - started) * 1000
        with self.lock:
            self.current_job = None
            cancelled = job_id in self.cancelled
            self.cancelled.discard(job_id)
            if ok:
                self.n_succeeded += 1
            else:
                self.n_failed += 1

        if cancelled:
            log.info("job %s attempt %s: finished after a cancel, outcome not reported",
                     job_id, attempt)
        elif ok:
            log.info("job %s attempt %s: completed in %.0f ms", job_id, attempt, elapsed_ms)
            self.report_outcome(job_id, attempt, {"status": "completed", "result": value})
        else:
            log.info("job %s attempt %s: failed in %.0f ms: %s", job_id, attempt, elapsed_ms, value)
            self.report_outcome(job_id, attempt,
                                {"status": "failed", "errorMessage": value, "permanent": permanent})
        if lost is not None:
            raise lost
        if not self.stopping.is_set():
            self.start_consuming()

    def run_handler_servicing_connection(self, job):
        """Runs the handler in a helper thread while this thread services the connection (AMQP
        heartbeats). Returns (outcome, the connection error if the connection was lost)."""
        box = {}
        thread = threading.Thread(target=lambda: box.update(outcome=run_handler(job)), daemon=True)
        thread.start()
        lost = None
        try:
            while thread.is_alive():
                self.connection.process_data_events(time_limit=0.2)
        except pika.exceptions.AMQPConnectionError as error:
            lost = error
        thread.join()
        return box["outcome"], lost

    def dead_letter(self, method, properties, body, reason):
        """Publishes the message unchanged to job.dead, then acks the original."""
        self.channel.basic_publish(
            exchange="",
            routing_key=DEAD_QUEUE,
            body=body,
            properties=pika.BasicProperties(
                content_type=properties.content_type,
                delivery_mode=pika.DeliveryMode.Persistent,
                headers={"x-dead-reason": reason, "x-original-routing-key": method.routing_key},
            ),
            mandatory=True,
        )
        self.channel.basic_ack(method.delivery_tag)
        log.warning("message from %s moved to %s: %s", method.routing_key, DEAD_QUEUE, reason)

    # --- reports (HTTP, main thread) ---------------------------------------------------------

    def post_report(self, job_id, attempt, fields):
        """POSTs one report; returns 200, 400, 404 or 409, or None when the orchestrator could
        not be reached or gave another answer (5xx: no leader yet, for instance)."""
        body = {"jobId": job_id, "workerId": self.worker_id, **fields}
        if attempt is not None:
            body["attempt"] = attempt
        if self.lease is not None:
            body["lease"] = self.lease
        try:
            answer = requests.post(self.config["status_url"], json=body,
                                   headers=self.config["headers"], timeout=HTTP_TIMEOUT)
        except requests.RequestException as error:
            log.warning("job %s: %s report not delivered: %s", job_id, fields["status"], error)
            return None
        if answer.status_code in (200, 404, 409):
            return answer.status_code
        log.warning("job %s: %s report answered %s %s", job_id, fields["status"],
                    answer.status_code, answer.text[:200])
        return 400 if answer.status_code == 400 else None

    def report_running(self, job_id, attempt):
        """Asks for the lease. A repeated `running` for the same attempt from the lease holder
        is answered 200 again, so retrying one whose answer was lost is safe."""
        for tries in range(1, RUNNING_TRIES + 1):
            status = self.post_report(job_id, attempt, {"status": "running"})
            if status is not None or tries == RUNNING_TRIES or self.stopping.is_set():
                return status
            self.wait(tries)
        return None

    def report_outcome(self, job_id, attempt, fields):
        deadline = time.monotonic() + OUTCOME_RETRY_FOR
        delay = 1
        while True:
            status = self.post_report(job_id, attempt, fields)
            if status == 409:
                log.info("job %s attempt %s: %s refused (409): the job moved on without us",
                         job_id, attempt, fields["status"])
            elif status == 404:
                log.warning("job %s: unknown to the orchestrator", job_id)
            if status is not None:
                return
            if time.monotonic() + delay > deadline:
                log.error("job %s attempt %s: gave up reporting %s", job_id, attempt,
                          fields["status"])
                return
            self.wait(delay)
            delay = min(delay * 2, 5)

    # --- heartbeats (own thread: HTTP only, never the channel) -------------------------------

    def heartbeat_loop(self):
        while True:
            self.send_heartbeat()
            if self.stopped.wait(self.config["heartbeat_interval"]):
                return

    def send_heartbeat(self):
        with self.lock:
            current_job = self.current_job
            body = {
                "worker_id": self.worker_id,
                "worker_type": "python",
                "capacity": self.config["capacity"],
                "current_load": 1 if current_job else 0,
                "total_jobs_processed": self.n_succeeded + self.n_failed,
                "successful_jobs": self.n_succeeded,
                "failed_jobs": self.n_failed,
                "timestamp": int(time.time() * 1000),
            }
        try:
            answer = requests.post(self.config["heartbeat_url"], json=body,
                                   headers=self.config["headers"], timeout=HTTP_TIMEOUT)
            answer.raise_for_status()
            cancel = answer.json().get("cancel") or []
        except (requests.RequestException, ValueError, AttributeError) as error:
            log.warning("heartbeat failed: %s", error)
            return
        if current_job in cancel:
            # A handler cannot be interrupted in this example: it runs to its end, and its
            # outcome is not reported (the orchestrator has decided already).
            with self.lock:
                newly = self.current_job == current_job and current_job not in self.cancelled
                if newly:
                    self.cancelled.add(current_job)
            if newly:
                log.warning("job %s was cancelled or timed out; its outcome will not be "
                            "reported", current_job)


def main():
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    config = config_from_env()
    if config["capacity"] != 1:
        log.warning("WORKER_CAPACITY=%s ignored: this example runs one job at a time",
                    config["capacity"])
        config["capacity"] = 1
    worker = Worker(config)

    def request_stop(signum, _frame):
        log.info("%s: finishing the current job, then stopping", signal.Signals(signum).name)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    heartbeats = threading.Thread(target=worker.heartbeat_loop, name="heartbeat", daemon=True)
    heartbeats.start()
    worker.run()
    worker.stopped.set()
    heartbeats.join(timeout=HTTP_TIMEOUT[0] + HTTP_TIMEOUT[1])
    log.info("worker %s stopped", worker.worker_id)


if __name__ == "__main__":
    main()
