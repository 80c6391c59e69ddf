-- The gateway's job read model on PostgreSQL: the same table, columns and indexes as
-- `migrations/0001_jobs.sql` (SQLite), with BIGINT for integers. `id` and `job_type` use the "C"
-- collation so that they sort by byte order, as SQLite's BINARY collation does.
-- Times are epoch milliseconds (UTC).
CREATE TABLE jobs (
    id           TEXT COLLATE "C" PRIMARY KEY NOT NULL, -- JobId, hyphenated lower-case UUID
    version      BIGINT NOT NULL,                       -- JobResponse.version; only a higher one replaces the row
    job_type     TEXT COLLATE "C" NOT NULL,
    priority     BIGINT NOT NULL,                       -- Priority::number (1, 5, 10, 15)
    status       TEXT   NOT NULL,                       -- JobStatus::as_str (upper case)
    status_rank  BIGINT NOT NULL,                       -- position in JobStatus::ALL (lifecycle order)
    worker_id    TEXT,
    created_at   BIGINT NOT NULL,
    started_at   BIGINT,
    completed_at BIGINT,
    snapshot     TEXT   NOT NULL,                       -- the JobResponse as JSON
    format       BIGINT NOT NULL DEFAULT 1              -- format of `snapshot`
);

CREATE INDEX jobs_created_at ON jobs (created_at);
CREATE INDEX jobs_status_created_at ON jobs (status, created_at);
CREATE INDEX jobs_job_type_created_at ON jobs (job_type, created_at);
CREATE INDEX jobs_worker_id_created_at ON jobs (worker_id, created_at);
