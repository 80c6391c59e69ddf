-- Read-model retention (issue 13): finished jobs older than the retention window leave `jobs`
-- in small batches, and the statistics keep counting them. A row leaving `jobs` therefore no
-- longer takes its counts out of the hourly summary tables (migration 0003); `job_tags` still
-- follows the rows (migration 0005).
DROP TRIGGER jobs_stats_delete;
