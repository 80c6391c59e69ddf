-- Statistics without scanning the jobs: the same tables as `migrations/0003_statistics.sql`
-- (SQLite), counts and time sums of the jobs created in each hour (`hour` = created_at /
-- 3600000) by type and status, by type and priority, and by type and worker, kept by one
-- trigger function in the same transaction as every change of `jobs`.
CREATE TABLE job_stats_status (
    hour       BIGINT NOT NULL,
    job_type   TEXT COLLATE "C" NOT NULL,
    status     TEXT   NOT NULL,
    n          BIGINT NOT NULL,
    queue_ms   BIGINT NOT NULL,
    n_queued   BIGINT NOT NULL,
    exec_ms    BIGINT NOT NULL,
    n_executed BIGINT NOT NULL,
    PRIMARY KEY (hour, job_type, status)
);

CREATE TABLE job_stats_priority (
    hour     BIGINT NOT NULL,
    job_type TEXT COLLATE "C" NOT NULL,
    priority BIGINT NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (hour, job_type, priority)
);

CREATE TABLE job_stats_worker (
    hour      BIGINT NOT NULL,
    job_type  TEXT COLLATE "C" NOT NULL,
    worker_id TEXT   NOT NULL,
    n         BIGINT NOT NULL,
    PRIMARY KEY (hour, job_type, worker_id)
);

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

CREATE FUNCTION jobs_stats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE job_stats_status SET
            n = n - 1,
            queue_ms = queue_ms - COALESCE(OLD.started_at - OLD.created_at, 0),
            n_queued = n_queued - CASE WHEN OLD.started_at IS NOT NULL THEN 1 ELSE 0 END,
            exec_ms = exec_ms - COALESCE(OLD.completed_at - OLD.started_at, 0),
            n_executed = n_executed
                - CASE WHEN OLD.completed_at IS NOT NULL AND OLD.started_at IS NOT NULL THEN 1 ELSE 0 END
        WHERE hour = OLD.created_at / 3600000 AND job_type = OLD.job_type AND status = OLD.status;
        UPDATE job_stats_priority SET n = n - 1
        WHERE hour = OLD.created_at / 3600000 AND job_type = OLD.job_type
          AND priority = OLD.priority;
        IF OLD.worker_id IS NOT NULL THEN
            UPDATE job_stats_worker SET n = n - 1
            WHERE hour = OLD.created_at / 3600000 AND job_type = OLD.job_type
              AND worker_id = OLD.worker_id;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO job_stats_status VALUES (
            NEW.created_at / 3600000, NEW.job_type, NEW.status, 1,
            COALESCE(NEW.started_at - NEW.created_at, 0),
            CASE WHEN NEW.started_at IS NOT NULL THEN 1 ELSE 0 END,
            COALESCE(NEW.completed_at - NEW.started_at, 0),
            CASE WHEN NEW.completed_at IS NOT NULL AND NEW.started_at IS NOT NULL THEN 1 ELSE 0 END)
        ON CONFLICT (hour, job_type, status) DO UPDATE SET
            n = job_stats_status.n + EXCLUDED.n,
            queue_ms = job_stats_status.queue_ms + EXCLUDED.queue_ms,
            n_queued = job_stats_status.n_queued + EXCLUDED.n_queued,
            exec_ms = job_stats_status.exec_ms + EXCLUDED.exec_ms,
            n_executed = job_stats_status.n_executed + EXCLUDED.n_executed;
        INSERT INTO job_stats_priority VALUES (NEW.created_at / 3600000, NEW.job_type, NEW.priority, 1)
        ON CONFLICT (hour, job_type, priority) DO UPDATE SET n = job_stats_priority.n + 1;
        IF NEW.worker_id IS NOT NULL THEN
            INSERT INTO job_stats_worker VALUES (NEW.created_at / 3600000, NEW.job_type, NEW.worker_id, 1)
            ON CONFLICT (hour, job_type, worker_id) DO UPDATE SET n = job_stats_worker.n + 1;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_stats_insert_delete AFTER INSERT OR DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION jobs_stats();

CREATE TRIGGER jobs_stats_update AFTER UPDATE ON jobs
FOR EACH ROW WHEN (
    OLD.status IS DISTINCT FROM NEW.status OR OLD.started_at IS DISTINCT FROM NEW.started_at
    OR OLD.completed_at IS DISTINCT FROM NEW.completed_at
    OR OLD.worker_id IS DISTINCT FROM NEW.worker_id OR OLD.priority IS DISTINCT FROM NEW.priority
    OR OLD.created_at IS DISTINCT FROM NEW.created_at OR OLD.job_type IS DISTINCT FROM NEW.job_type)
EXECUTE FUNCTION jobs_stats();

-- The jobs of a partial hour at either end of a range are counted from `jobs` itself: this
-- index covers those queries (and replaces the index on created_at alone).
CREATE INDEX jobs_statistics ON jobs (created_at, job_type, status, priority, worker_id, started_at, completed_at);
DROP INDEX jobs_created_at;
