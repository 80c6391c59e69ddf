-- Statistics without scanning the jobs: counts and time sums of the jobs created in each hour
-- (`hour` = created_at / 3600000), by type and status, by type and priority, and by type and
-- worker, kept by triggers in the same transaction as every change of `jobs`. A job counts in
-- the row of its current status; its queue time (started_at - created_at) once it started, its
-- execution time (completed_at - started_at) once it finished after starting.
CREATE TABLE job_stats_status (
    hour       INTEGER NOT NULL,
    job_type   TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    n          INTEGER NOT NULL,
    queue_ms   INTEGER NOT NULL,
    n_queued   INTEGER NOT NULL,
    exec_ms    INTEGER NOT NULL,
    n_executed INTEGER NOT NULL,
    PRIMARY KEY (hour, job_type, status)
) WITHOUT ROWID;

CREATE TABLE job_stats_priority (
    hour     INTEGER NOT NULL,
    job_type TEXT    NOT NULL,
    priority INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (hour, job_type, priority)
) WITHOUT ROWID;

CREATE TABLE job_stats_worker (
    hour      INTEGER NOT NULL,
    job_type  TEXT    NOT NULL,
    worker_id TEXT    NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (hour, job_type, worker_id)
) WITHOUT ROWID;

INSERT INTO job_stats_status
SELECT created_at / 3600000, job_type, status, COUNT(*),
       SUM(COALESCE(started_at - created_at, 0)),
       SUM(CASE WHEN started_at IS NOT NULL THEN 1 ELSE 0 END),
       SUM(COALESCE(completed_at - started_at, 0)),
       SUM(CASE WHEN completed_at IS NOT NULL AND started_at IS NOT NULL THEN 1 ELSE 0 END)
FROM jobs GROUP BY 1, 2, 3;
INSERT INTO job_stats_priority
SELECT created_at / 3600000, job_type, priority, COUNT(*) FROM jobs GROUP BY 1, 2, 3;
INSERT INTO job_stats_worker
SELECT created_at / 3600000, job_type, worker_id, COUNT(*) FROM jobs
WHERE worker_id IS NOT NULL GROUP BY 1, 2, 3;

CREATE TRIGGER jobs_stats_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_stats_status VALUES (
        NEW.created_at / 3600000, NEW.job_type, NEW.status, 1,
        COALESCE(NEW.started_at - NEW.created_at, 0),
        CASE WHEN NEW.started_at IS NOT NULL THEN 1 ELSE 0 END,
        COALESCE(NEW.completed_at - NEW.started_at, 0),
        CASE WHEN NEW.completed_at IS NOT NULL AND NEW.started_at IS NOT NULL THEN 1 ELSE 0 END)
    ON CONFLICT (hour, job_type, status) DO UPDATE SET
        n = n + excluded.n, queue_ms = queue_ms + excluded.queue_ms,
        n_queued = n_queued + excluded.n_queued, exec_ms = exec_ms + excluded.exec_ms,
        n_executed = n_executed + excluded.n_executed;
    INSERT INTO job_stats_priority VALUES (NEW.created_at / 3600000, NEW.job_type, NEW.priority, 1)
    ON CONFLICT (hour, job_type, priority) DO UPDATE SET n = n + 1;
    INSERT INTO job_stats_worker
    SELECT NEW.created_at / 3600000, NEW.job_type, NEW.worker_id, 1 WHERE NEW.worker_id IS NOT NULL
    ON CONFLICT (hour, job_type, worker_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_stats_status_update AFTER UPDATE ON jobs
WHEN OLD.status IS NOT NEW.status OR OLD.started_at IS NOT NEW.started_at
  OR OLD.completed_at IS NOT NEW.completed_at OR OLD.created_at IS NOT NEW.created_at
  OR OLD.job_type IS NOT NEW.job_type
BEGIN
    UPDATE job_stats_status SET
        n = n - 1,
        queue_ms = queue_ms - COALESCE(OLD.started_at - OLD.created_at, 0),
        n_queued = n_queued - CASE WHEN OLD.started_at IS NOT NULL THEN 1 ELSE 0 END,
        exec_ms = exec_ms - COALESCE(OLD.completed_at - OLD.started_at, 0),
        n_executed = n_executed
            - CASE WHEN OLD.completed_at IS NOT NULL AND OLD.started_at IS NOT NULL THEN 1 ELSE 0 END
    WHERE hour = OLD.created_at / 3600000 AND job_type = OLD.job_type AND status = OLD.status;
    INSERT INTO job_stats_status VALUES (
        NEW.created_at / 3600000, NEW.job_type, NEW.status, 1,
        COALESCE(NEW.started_at - NEW.created_at, 0),
        CASE WHEN NEW.started_at IS NOT NULL THEN 1 ELSE 0 END,
        COALESCE(NEW.completed_at - NEW.started_at, 0),
        CASE WHEN NEW.completed_at IS NOT NULL AND NEW.started_at IS NOT NULL THEN 1 ELSE 0 END)
    ON CONFLICT (hour, job_type, status) DO UPDATE SET
        n = n + excluded.n, queue_ms = queue_ms + excluded.queue_ms,
        n_queued = n_queued + excluded.n_queued, exec_ms = exec_ms + excluded.exec_ms,
        n_executed = n_executed + excluded.n_executed;
END;

CREATE TRIGGER jobs_stats_priority_update AFTER UPDATE ON jobs
WHEN OLD.priority IS NOT NEW.priority OR OLD.created_at IS NOT NEW.created_at
  OR OLD.job_type IS NOT NEW.job_type
BEGIN
    UPDATE job_stats_priority SET n = n - 1
    WHERE hour = OLD.created_at / 3600000 AND job_type = OLD.job_type AND priority = OLD.priority;
    INSERT INTO job_stats_priority VALUES (NEW.created_at / 3600000, NEW.job_type, NEW.priority, 1)
    ON CONFLICT (hour, job_type, priority) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_stats_worker_update AFTER UPDATE ON jobs
WHEN OLD.worker_id IS NOT NEW.worker_id OR OLD.created_at IS NOT NEW.created_at
  OR OLD.job_type IS NOT NEW.job_type
BEGIN
    UPDATE job_stats_worker SET n = n - 1
    WHERE hour = OLD.created_at / 3600000 AND job_type = OLD.job_type
      AND worker_id = OLD.worker_id;
    INSERT INTO job_stats_worker
    SELECT NEW.created_at / 3600000, NEW.job_type, NEW.worker_id, 1 WHERE NEW.worker_id IS NOT NULL
    ON CONFLICT (hour, job_type, worker_id) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_stats_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_stats_status SET
        n = n - 1,
        queue_ms = queue_ms - COALESCE(OLD.started_at - OLD.created_at, 0),
        n_queued = n_queued - CASE WHEN OLD.started_at IS NOT NULL THEN 1 ELSE 0 END,
        exec_ms = exec_ms - COALESCE(OLD.completed_at - OLD.started_at, 0),
        n_executed = n_executed
            - CASE WHEN OLD.completed_at IS NOT NULL AND OLD.started_at IS NOT NULL THEN 1 ELSE 0 END
    WHERE hour = OLD.created_at / 3600000 AND job_type = OLD.job_type AND status = OLD.status;
    UPDATE job_stats_priority SET n = n - 1
    WHERE hour = OLD.created_at / 3600000 AND job_type = OLD.job_type AND priority = OLD.priority;
    UPDATE job_stats_worker SET n = n - 1
    WHERE hour = OLD.created_at / 3600000 AND job_type = OLD.job_type
      AND worker_id = OLD.worker_id;
END;

-- The jobs of a partial hour at either end of a range are counted from `jobs` itself: this
-- index covers those queries (and replaces the index on created_at alone).
CREATE INDEX jobs_statistics ON jobs (created_at, job_type, status, priority, worker_id, started_at, completed_at);
DROP INDEX jobs_created_at;
