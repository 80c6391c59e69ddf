-- Jobs by tag (issue 12: `GET /api/jobs?tag=` and the dashboard's tag filter), so that the
-- filter reads an index instead of every row's JSON. A job's tags are fixed at submission (a
-- retry keeps them), so the row is filled when the job's first snapshot is inserted and
-- emptied when the job leaves the read model; later snapshots do not touch it.
CREATE TABLE job_tags (
    tag    TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (tag, job_id)
);
CREATE INDEX job_tags_job_id ON job_tags (job_id);

INSERT INTO job_tags
SELECT DISTINCT tag, jobs.id
FROM jobs, jsonb_array_elements_text(COALESCE(jobs.snapshot::jsonb -> 'tags', '[]'::jsonb)) AS tag
ON CONFLICT DO NOTHING;

CREATE FUNCTION job_tags_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM job_tags WHERE job_id = OLD.id;
    ELSE
        INSERT INTO job_tags
        SELECT DISTINCT tag, NEW.id
        FROM jsonb_array_elements_text(COALESCE(NEW.snapshot::jsonb -> 'tags', '[]'::jsonb)) AS tag
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER job_tags_sync AFTER INSERT OR DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION job_tags_sync();
