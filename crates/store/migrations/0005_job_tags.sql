-- Jobs by tag (issue 12: `GET /api/jobs?tag=` and the dashboard's tag filter), so that the
-- filter reads an index instead of every row's JSON. A job's tags are fixed at submission (a
-- retry keeps them), so the row is filled when the job's first snapshot is inserted and
-- emptied when the job leaves the read model; later snapshots do not touch it.
CREATE TABLE job_tags (
    tag    TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (tag, job_id)
) WITHOUT ROWID;
CREATE INDEX job_tags_job_id ON job_tags (job_id);

INSERT OR IGNORE INTO job_tags
SELECT json_each.value, jobs.id FROM jobs, json_each(jobs.snapshot, '$.tags');

CREATE TRIGGER job_tags_insert AFTER INSERT ON jobs BEGIN
    INSERT OR IGNORE INTO job_tags
    SELECT value, NEW.id FROM json_each(NEW.snapshot, '$.tags');
END;

CREATE TRIGGER job_tags_delete AFTER DELETE ON jobs BEGIN
    DELETE FROM job_tags WHERE job_id = OLD.id;
END;
