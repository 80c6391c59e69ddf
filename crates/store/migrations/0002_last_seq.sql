-- The `seq` of the newest lifecycle event stored for each job (0: none yet, the row came from
-- a write reply), so an SSE client that reconnects with `Last-Event-ID: N` can be sent the
-- current state of every job that changed after event N.
ALTER TABLE jobs ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_last_seq ON jobs (last_seq);
