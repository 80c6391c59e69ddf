-- What the dashboard reads (issue 12), kept fast at 1,000,000 jobs (`distriqueue bench
-- --read-model`): the jobs that ended in a window (timeline), a status and a type together (a
-- dead-letter group's jobs), the sort by priority, and the dead-letter groups (by the error
-- message inside the snapshot; the expression must match the query's exactly).
CREATE INDEX jobs_completed_at ON jobs (completed_at);
CREATE INDEX jobs_status_type_created_at ON jobs (status, job_type, created_at);
CREATE INDEX jobs_priority_id ON jobs (priority, id);
CREATE INDEX jobs_dead_letters ON jobs (status, job_type, ((snapshot::jsonb ->> 'errorMessage')), completed_at)
    WHERE status IN ('FAILED', 'TIMEOUT');
