//! Job statistics (CONTRACT.md `GET /api/jobs/statistics`) from SQL aggregates, never from
//! loaded rows: the hourly summary tables that the triggers of migration 0003 keep, plus, for a
//! range that starts or ends inside an hour, that partial hour's jobs counted from `jobs` through
//! a covering index. However many jobs there are, no query reads more than the jobs created in
//! the two partial hours at the range's ends.

use std::collections::BTreeMap;

use distriqueue_core::api::Statistics;
use distriqueue_core::{JobStatus, Millis, Priority};
use sqlx::{Database, Encode, QueryBuilder, Type};

/// What [`crate::Store::statistics`] counts: jobs created in `[from, to]` (inclusive, either
/// open), of one type or all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsQuery {
    /// Jobs created at or after this time.
    pub from: Option<Millis>,
    /// Jobs created at or before this time.
    pub to: Option<Millis>,
    /// Jobs of this type only.
    pub job_type: Option<String>,
}

/// Milliseconds in an hour: the summary tables' bucket (`hour` = `created_at / HOUR_MS`).
const HOUR_MS: i64 = 3_600_000;

/// How a range splits: whole hours read from the summary tables, partial ones from `jobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split {
    /// The whole hours inside the range, first and last (inclusive).
    pub(crate) hours: Option<(i64, i64)>,
    /// Time ranges (inclusive, ms) counted from `jobs`.
    pub(crate) edges: Vec<(i64, i64)>,
}

/// Splits `[from, to]` into whole hours and the partial hours at its ends.
pub(crate) fn split(from: Option<Millis>, to: Option<Millis>) -> Split {
    let lo = from.map_or(i64::MIN, |time| time.0);
    let hi = to.map_or(i64::MAX, |time| time.0);
    if lo > hi {
        return Split {
            hours: None,
            edges: Vec::new(),
        };
    }
    // The first hour that starts at or after `lo`, the last that ends at or before `hi`.
    let first = match from {
        None => i64::MIN,
        Some(_) => lo.div_euclid(HOUR_MS) + i64::from(lo.rem_euclid(HOUR_MS) != 0),
    };
    let last = match to {
        None => i64::MAX,
        Some(_) => hi.saturating_add(1).div_euclid(HOUR_MS) - 1,
    };
    if first > last {
        return Split {
            hours: None,
            edges: vec![(lo, hi)],
        };
    }
    let mut edges = Vec::new();
    if from.is_some() && lo < first * HOUR_MS {
        edges.push((lo, first * HOUR_MS - 1));
    }
    if to.is_some() && (last + 1) * HOUR_MS <= hi {
        edges.push(((last + 1) * HOUR_MS, hi));
    }
    Split {
        hours: Some((first, last)),
        edges,
    }
}

/// One group of the status aggregate: type, status, jobs, queue time sum and count, execution
/// time sum and count.
pub(crate) type StatusRow = (String, String, i64, i64, i64, i64, i64);

/// The three aggregates over one part of a range: by type and status, by priority, by worker.
pub(crate) struct Statements<DB: Database> {
    pub(crate) status: QueryBuilder<DB>,
    pub(crate) priority: QueryBuilder<DB>,
    pub(crate) worker: QueryBuilder<DB>,
}

/// The aggregates of the whole hours `first..=last` from the summary tables.
pub(crate) fn summary_statements<DB>(
    first: i64,
    last: i64,
    job_type: Option<&str>,
) -> Statements<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let statement = |select: &str, table: &str, group: &str| {
        let mut sql =
            QueryBuilder::<DB>::new(format!("SELECT {select} FROM {table} WHERE hour >= "));
        sql.push_bind(first).push(" AND hour <= ").push_bind(last);
        if let Some(job_type) = job_type {
            sql.push(" AND job_type = ").push_bind(job_type.to_string());
        }
        sql.push(format!(" GROUP BY {group} HAVING SUM(n) > 0"));
        sql
    };
    Statements {
        status: statement(
            "job_type, status, CAST(SUM(n) AS BIGINT), CAST(SUM(queue_ms) AS BIGINT), \
             CAST(SUM(n_queued) AS BIGINT), CAST(SUM(exec_ms) AS BIGINT), \
             CAST(SUM(n_executed) AS BIGINT)",
            "job_stats_status",
            "job_type, status",
        ),
        priority: statement(
            "priority, CAST(SUM(n) AS BIGINT)",
            "job_stats_priority",
            "priority",
        ),
        worker: statement(
            "worker_id, CAST(SUM(n) AS BIGINT)",
            "job_stats_worker",
            "worker_id",
        ),
    }
}

/// The aggregates of the jobs created in `lo..=hi` (ms), from `jobs` itself.
pub(crate) fn edge_statements<DB>(lo: i64, hi: i64, job_type: Option<&str>) -> Statements<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let statement = |select: &str, also: &str, group: &str| {
        let mut sql =
            QueryBuilder::<DB>::new(format!("SELECT {select} FROM jobs WHERE created_at >= "));
        sql.push_bind(lo).push(" AND created_at <= ").push_bind(hi);
        if let Some(job_type) = job_type {
            sql.push(" AND job_type = ").push_bind(job_type.to_string());
        }
        sql.push(format!("{also} GROUP BY {group}"));
        sql
    };
    Statements {
        status: statement(
            "job_type, status, CAST(COUNT(*) AS BIGINT), \
             CAST(SUM(COALESCE(started_at - created_at, 0)) AS BIGINT), \
             CAST(SUM(CASE WHEN started_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(SUM(COALESCE(completed_at - started_at, 0)) AS BIGINT), \
             CAST(SUM(CASE WHEN completed_at IS NOT NULL AND started_at IS NOT NULL \
             THEN 1 ELSE 0 END) AS BIGINT)",
            "",
            "job_type, status",
        ),
        priority: statement("priority, CAST(COUNT(*) AS BIGINT)", "", "priority"),
        worker: statement(
            "worker_id, CAST(COUNT(*) AS BIGINT)",
            " AND worker_id IS NOT NULL",
            "worker_id",
        ),
    }
}

/// Sums of the aggregates of every part of a range.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    by_status: BTreeMap<String, i64>,
    by_type: BTreeMap<String, i64>,
    by_priority: BTreeMap<i64, i64>,
    by_worker: BTreeMap<String, i64>,
    queue_ms: i64,
    n_queued: i64,
    exec_ms: i64,
    n_executed: i64,
}

impl Totals {
    /// Adds one part's aggregate rows.
    pub(crate) fn add(
        &mut self,
        status: Vec<StatusRow>,
        priority: Vec<(i64, i64)>,
        worker: Vec<(String, i64)>,
    ) {
        for (job_type, status, n, queue_ms, n_queued, exec_ms, n_executed) in status {
            *self.by_status.entry(status).or_default() += n;
            *self.by_type.entry(job_type).or_default() += n;
            self.queue_ms += queue_ms;
            self.n_queued += n_queued;
            self.exec_ms += exec_ms;
            self.n_executed += n_executed;
        }
        for (priority, n) in priority {
            *self.by_priority.entry(priority).or_default() += n;
        }
        for (worker, n) in worker {
            *self.by_worker.entry(worker).or_default() += n;
        }
    }

    /// The answer: counts by status, the success rate (COMPLETED among the finished jobs, in
    /// percent), the average queue and execution times in ms, and the breakdowns (jobs with no
    /// count left out).
    pub(crate) fn statistics(self) -> Statistics {
        let count = |status: JobStatus| -> u64 {
            let n = self.by_status.get(status.as_str()).copied().unwrap_or(0);
            u64::try_from(n).unwrap_or(0)
        };
        let positive = |map: BTreeMap<String, i64>| -> BTreeMap<String, u64> {
            map.into_iter()
                .filter_map(|(key, n)| u64::try_from(n).ok().filter(|n| *n > 0).map(|n| (key, n)))
                .collect()
        };
        let average = |sum: i64, n: i64| if n > 0 { sum as f64 / n as f64 } else { 0.0 };
        let completed = count(JobStatus::Completed);
        let finished = completed
            + count(JobStatus::Failed)
            + count(JobStatus::Timeout)
            + count(JobStatus::Cancelled);
        let jobs_by_priority = self
            .by_priority
            .into_iter()
            .filter_map(|(number, n)| {
                let priority = Priority::from_number(number)?;
                let n = u64::try_from(n).ok().filter(|n| *n > 0)?;
                Some((priority.as_str().to_string(), n))
            })
            .collect();
        Statistics {
            total_jobs: JobStatus::ALL.iter().map(|status| count(*status)).sum(),
            pending_jobs: count(JobStatus::Pending),
            queued_jobs: count(JobStatus::Queued),
            running_jobs: count(JobStatus::Running),
            retrying_jobs: count(JobStatus::Retrying),
            completed_jobs: completed,
            failed_jobs: count(JobStatus::Failed),
            timeout_jobs: count(JobStatus::Timeout),
            cancelled_jobs: count(JobStatus::Cancelled),
            success_rate: if finished > 0 {
                100.0 * completed as f64 / finished as f64
            } else {
                0.0
            },
            average_queue_time_ms: average(self.queue_ms, self.n_queued),
            average_execution_time_ms: average(self.exec_ms, self.n_executed),
            jobs_by_type: positive(self.by_type),
            jobs_by_priority,
            jobs_by_worker: positive(self.by_worker),
            time_range_start: None,
            time_range_end: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_MS;

    #[test]
    fn an_open_range_is_all_hours_and_no_edge() {
        assert_eq!(
            split(None, None),
            Split {
                hours: Some((i64::MIN, i64::MAX)),
                edges: vec![]
            }
        );
    }

    #[test]
    fn aligned_bounds_need_no_edge_and_unaligned_ones_do() {
        assert_eq!(
            split(Some(Millis(2 * H)), Some(Millis(5 * H - 1))),
            Split {
                hours: Some((2, 4)),
                edges: vec![]
            }
        );
        assert_eq!(
            split(Some(Millis(2 * H + 10)), Some(Millis(5 * H + 10))),
            Split {
                hours: Some((3, 4)),
                edges: vec![(2 * H + 10, 3 * H - 1), (5 * H, 5 * H + 10)]
            }
        );
    }

    #[test]
    fn a_range_inside_one_hour_is_one_edge_and_a_reversed_one_is_empty() {
        assert_eq!(
            split(Some(Millis(2 * H + 10)), Some(Millis(2 * H + 20))),
            Split {
                hours: None,
                edges: vec![(2 * H + 10, 2 * H + 20)]
            }
        );
        assert_eq!(
            split(Some(Millis(5)), Some(Millis(4))),
            Split {
                hours: None,
                edges: vec![]
            }
        );
    }
}
