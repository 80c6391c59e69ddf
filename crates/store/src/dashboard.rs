//! What the gateway's dashboard reads beyond lists and statistics (issue 12): the dead letters
//! grouped by type and error, the ids of one group (for its retry), and a timeline of the last
//! minutes (jobs submitted, completed and failed per bucket, and latency percentiles).

use std::collections::BTreeMap;

use distriqueue_core::model::{JobId, JobStatus, Priority};
use distriqueue_core::time::Millis;
use sqlx::postgres::Postgres;
use sqlx::{Database, Encode, QueryBuilder, Sqlite, Type};

use crate::{Backend, Store, StoreError};

/// FAILED and TIMEOUT jobs of one type that ended with one error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterGroup {
    /// The jobs' type.
    pub job_type: String,
    /// FAILED or TIMEOUT.
    pub status: JobStatus,
    /// Their `errorMessage` (`None`: none recorded).
    pub error_message: Option<String>,
    /// How many jobs.
    pub count: u64,
    /// The latest end among them, epoch milliseconds.
    pub last_at: Millis,
}

/// One dead-letter group, as [`DeadLetterGroup`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupKey<'a> {
    /// The jobs' type.
    pub job_type: &'a str,
    /// FAILED or TIMEOUT.
    pub status: JobStatus,
    /// Their `errorMessage` exactly (`None`: none recorded).
    pub error_message: Option<&'a str>,
}

/// Jobs per time bucket and latency percentiles since a start time ([`Store::timeline`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Timeline {
    /// Each bucket with something in it, oldest first: its start (epoch ms) and the jobs
    /// created, COMPLETED and FAILED or TIMEOUT in it.
    pub buckets: Vec<TimelineBucket>,
    /// Queue time (`started_at - created_at`) of the sampled finished jobs, ms, sorted.
    pub queue_ms: Vec<i64>,
    /// Execution time (`completed_at - started_at`) of the same jobs, ms, sorted.
    pub execution_ms: Vec<i64>,
}

/// One bucket of a [`Timeline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimelineBucket {
    /// The bucket's start, epoch milliseconds.
    pub at: Millis,
    /// Jobs created in it.
    pub submitted: u64,
    /// Jobs that reached COMPLETED in it.
    pub completed: u64,
    /// Jobs that reached FAILED or TIMEOUT in it.
    pub failed: u64,
}

/// The error message of a row, in each dialect (`snapshot` is the job's JSON as text).
fn error_expression(postgres: bool) -> &'static str {
    if postgres {
        "(snapshot::jsonb ->> 'errorMessage')"
    } else {
        "json_extract(snapshot, '$.errorMessage')"
    }
}

fn groups_statement<DB>(postgres: bool, limit: i64) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let error = error_expression(postgres);
    let mut sql = QueryBuilder::<DB>::new(format!(
        "SELECT job_type, status, {error} AS error, COUNT(*), \
         MAX(completed_at) FROM jobs \
         WHERE status IN ('FAILED', 'TIMEOUT') GROUP BY status, job_type, error \
         ORDER BY COUNT(*) DESC, job_type, status LIMIT "
    ));
    sql.push_bind(limit);
    sql
}

fn group_ids_statement<DB>(
    postgres: bool,
    group: &GroupKey<'_>,
    after: Option<JobId>,
    limit: i64,
) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut sql = QueryBuilder::<DB>::new("SELECT id FROM jobs WHERE status = ");
    sql.push_bind(group.status.as_str().to_string())
        .push(" AND job_type = ")
        .push_bind(group.job_type.to_string())
        .push(format_args!(" AND {} ", error_expression(postgres)));
    match group.error_message {
        Some(message) => sql.push("= ").push_bind(message.to_string()),
        None => sql.push("IS NULL"),
    };
    if let Some(after) = after {
        sql.push(" AND id > ").push_bind(after.to_string());
    }
    sql.push(" ORDER BY id LIMIT ").push_bind(limit);
    sql
}

/// Created per bucket; then COMPLETED, FAILED and TIMEOUT per bucket and status; then the
/// latencies of the latest finished jobs.
fn timeline_statements<DB>(
    from: i64,
    bucket_ms: i64,
    sample: i64,
) -> (QueryBuilder<DB>, QueryBuilder<DB>, QueryBuilder<DB>)
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut created = QueryBuilder::<DB>::new("SELECT created_at / ");
    created
        .push_bind(bucket_ms)
        .push(" AS bucket, COUNT(*) FROM jobs WHERE created_at >= ")
        .push_bind(from)
        .push(" GROUP BY bucket");
    let mut ended = QueryBuilder::<DB>::new("SELECT completed_at / ");
    ended
        .push_bind(bucket_ms)
        .push(" AS bucket, status, COUNT(*) FROM jobs WHERE completed_at >= ")
        .push_bind(from)
        // No condition on status here: it would draw the planner to the status index (most
        // jobs are COMPLETED); CANCELLED rows are left out when counting.
        .push(" GROUP BY bucket, status");
    // CANCELLED rows are left out when reading (a condition on status here would draw the
    // planner to the status index).
    let mut latency = QueryBuilder::<DB>::new(
        "SELECT started_at - created_at, completed_at - started_at, status FROM jobs \
         WHERE completed_at >= ",
    );
    latency
        .push_bind(from)
        .push(" AND started_at IS NOT NULL ORDER BY completed_at DESC LIMIT ")
        .push_bind(sample);
    (created, ended, latency)
}

/// A count from SQL as `u64` (never negative; 0 if it were).
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

impl Store {
    /// The jobs waiting to run (PENDING, QUEUED, RETRYING) by priority: the overview's queues.
    ///
    /// Errors: [`StoreError::Database`].
    pub async fn waiting_by_priority(&self) -> Result<BTreeMap<Priority, u64>, StoreError> {
        const SQL: &str = "SELECT priority, COUNT(*) FROM jobs \
             WHERE status IN ('PENDING', 'QUEUED', 'RETRYING') GROUP BY priority";
        let rows: Vec<(i64, i64)> = match &self.backend {
            Backend::Sqlite { reader, .. } => sqlx::query_as(SQL).fetch_all(reader).await?,
            Backend::Postgres(pool) => sqlx::query_as(SQL).fetch_all(pool).await?,
        };
        Ok(rows
            .into_iter()
            .filter_map(|(number, n)| {
                let priority = Priority::HIGHEST_FIRST
                    .into_iter()
                    .find(|priority| i64::from(priority.number()) == number)?;
                Some((priority, count(n)))
            })
            .collect())
    }

    /// The FAILED and TIMEOUT jobs grouped by type, status and error message, the largest
    /// groups first, at most `limit` groups. Reads every FAILED and TIMEOUT row (by the status
    /// index).
    ///
    /// Errors: [`StoreError::Database`].
    pub async fn dead_letter_groups(
        &self,
        limit: usize,
    ) -> Result<Vec<DeadLetterGroup>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        type Row = (String, String, Option<String>, i64, Option<i64>);
        let rows: Vec<Row> = match &self.backend {
            Backend::Sqlite { reader, .. } => {
                groups_statement::<Sqlite>(false, limit)
                    .build_query_as()
                    .fetch_all(reader)
                    .await?
            }
            Backend::Postgres(pool) => {
                groups_statement::<Postgres>(true, limit)
                    .build_query_as()
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(job_type, status, error_message, n, last_at)| {
                Some(DeadLetterGroup {
                    job_type,
                    status: JobStatus::parse(&status)?,
                    error_message,
                    count: count(n),
                    last_at: Millis(last_at.unwrap_or_default()),
                })
            })
            .collect())
    }

    /// The ids of up to `limit` jobs of one dead-letter group, in id order, after `after`
    /// when given (a cursor: a job retried and failed again is not taken twice).
    ///
    /// Errors: [`StoreError::Database`]; [`StoreError::CorruptSnapshot`] for an id that is not
    /// a UUID.
    pub async fn dead_letter_ids(
        &self,
        group: &GroupKey<'_>,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let ids: Vec<String> = match &self.backend {
            Backend::Sqlite { reader, .. } => {
                group_ids_statement::<Sqlite>(false, group, after, limit)
                    .build_query_scalar()
                    .fetch_all(reader)
                    .await?
            }
            Backend::Postgres(pool) => {
                group_ids_statement::<Postgres>(true, group, after, limit)
                    .build_query_scalar()
                    .fetch_all(pool)
                    .await?
            }
        };
        ids.into_iter()
            .map(|id| {
                id.parse::<JobId>()
                    .map_err(|_| StoreError::CorruptSnapshot {
                        id,
                        reason: "the id is not a UUID".into(),
                    })
            })
            .collect()
    }

    /// Jobs created and ended per `bucket_ms` since `from`, and the queue and execution times
    /// of the latest `sample` jobs that finished after starting since `from` (sorted, for
    /// percentiles). Reads the rows of the window by the `created_at` and `completed_at`
    /// indexes.
    ///
    /// Errors: [`StoreError::Database`].
    pub async fn timeline(
        &self,
        from: Millis,
        bucket_ms: i64,
        sample: usize,
    ) -> Result<Timeline, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        let sample = i64::try_from(sample).unwrap_or(i64::MAX);
        type Created = Vec<(i64, i64)>;
        type Ended = Vec<(i64, String, i64)>;
        type Latency = Vec<(Option<i64>, Option<i64>, String)>;
        let (created, ended, latency): (Created, Ended, Latency) = match &self.backend {
            Backend::Sqlite { reader, .. } => {
                let (mut a, mut b, mut c) =
                    timeline_statements::<Sqlite>(from.0, bucket_ms, sample);
                let mut tx = reader.begin().await?;
                let created = a.build_query_as().fetch_all(&mut *tx).await?;
                let ended = b.build_query_as().fetch_all(&mut *tx).await?;
                let latency = c.build_query_as().fetch_all(&mut *tx).await?;
                tx.commit().await?;
                (created, ended, latency)
            }
            Backend::Postgres(pool) => {
                let (mut a, mut b, mut c) =
                    timeline_statements::<Postgres>(from.0, bucket_ms, sample);
                let mut tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?;
                let created = a.build_query_as().fetch_all(&mut *tx).await?;
                let ended = b.build_query_as().fetch_all(&mut *tx).await?;
                let latency = c.build_query_as().fetch_all(&mut *tx).await?;
                tx.commit().await?;
                (created, ended, latency)
            }
        };
        let mut buckets = BTreeMap::<i64, TimelineBucket>::new();
        let empty = |number: i64| TimelineBucket {
            at: Millis(number.saturating_mul(bucket_ms)),
            ..TimelineBucket::default()
        };
        for (number, n) in created {
            buckets
                .entry(number)
                .or_insert_with(|| empty(number))
                .submitted += count(n);
        }
        for (number, status, n) in ended {
            let entry = buckets.entry(number).or_insert_with(|| empty(number));
            match JobStatus::parse(&status) {
                Some(JobStatus::Completed) => entry.completed += count(n),
                Some(JobStatus::Failed | JobStatus::Timeout) => entry.failed += count(n),
                _ => {}
            }
        }
        let not_cancelled = |status: &str| status != JobStatus::Cancelled.as_str();
        let mut queue_ms: Vec<i64> = latency
            .iter()
            .filter(|(_, _, status)| not_cancelled(status))
            .filter_map(|(queue, _, _)| *queue)
            .collect();
        let mut execution_ms: Vec<i64> = latency
            .iter()
            .filter(|(_, _, status)| not_cancelled(status))
            .filter_map(|(_, exec, _)| *exec)
            .collect();
        queue_ms.sort_unstable();
        execution_ms.sort_unstable();
        Ok(Timeline {
            buckets: buckets.into_values().collect(),
            queue_ms,
            execution_ms,
        })
    }
}
