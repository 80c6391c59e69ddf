-- The gateway's job read model: one row per job, holding the newest snapshot seen (by `version`)
-- plus the columns that filters and sorts need. Times are epoch milliseconds (UTC).
CREATE TABLE jobs (
    id           TEXT    PRIMARY KEY NOT NULL, -- JobId, hyphenated lower-case UUID
    version      INTEGER NOT NULL,             -- JobResponse.version; only a higher one replaces the row
    job_type     TEXT    NOT NULL,
    priority     INTEGER NOT NULL,             -- Priority::number (1, 5, 10, 15)
    status       TEXT    NOT NULL,             -- JobStatus::as_str (upper case)
    status_rank  INTEGER NOT NULL,             -- position in JobStatus::ALL (lifecycle order)
    worker_id    TEXT,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    completed_at INTEGER,
    snapshot     TEXT    NOT NULL,             -- the JobResponse as JSON
    format       INTEGER NOT NULL DEFAULT 1    -- format of `snapshot`
);

CREATE INDEX jobs_created_at ON jobs (created_at);
CREATE INDEX jobs_status_created_at ON jobs (status, created_at);
CREATE INDEX jobs_job_type_created_at ON jobs (job_type, created_at);
CREATE INDEX jobs_worker_id_created_at ON jobs (worker_id, created_at);
