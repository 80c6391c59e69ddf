//! Read-model retention (issue 13, item 5): finished jobs older than the window leave `jobs` in
//! small batches, each its own short statement, so the writes of the event feed go on between
//! them. The hourly statistics keep counting the jobs that left (migration 0006), and their tags
//! leave with them (migration 0005's trigger).

use distriqueue_core::model::JobStatus;
use distriqueue_core::time::Millis;
use sqlx::postgres::Postgres;
use sqlx::{Database, Encode, QueryBuilder, Sqlite, Type};

use crate::{Backend, Store, StoreError};

/// `DELETE` of up to `limit` finished jobs that ended before `before` (epoch ms), oldest end
/// first. The outer conditions repeat the inner ones: a row that changed meanwhile (a retried
/// job, QUEUED again) is re-checked by PostgreSQL and kept.
fn purge_statement<DB>(before: i64, limit: i64) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let finished = JobStatus::ALL
        .iter()
        .filter(|status| status.is_terminal())
        .map(|status| format!("'{}'", status.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut sql = QueryBuilder::<DB>::new(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE completed_at < ",
    );
    sql.push_bind(before)
        .push(format!(
            " AND status IN ({finished}) ORDER BY completed_at LIMIT "
        ))
        .push_bind(limit)
        .push(") AND completed_at < ")
        .push_bind(before)
        .push(format!(" AND status IN ({finished})"));
    sql
}

impl Store {
    /// Removes up to `limit` finished jobs (COMPLETED, FAILED, TIMEOUT, CANCELLED) that ended
    /// before `before`, those that ended first first, in one statement; returns how many left.
    /// Jobs still waiting or running stay whatever their age. `GET /api/jobs/statistics` keeps
    /// counting them by the hour they were created in (a range bound inside such an hour counts
    /// only the jobs still stored for that partial hour).
    ///
    /// Errors: [`StoreError::Database`].
    pub async fn purge_finished(&self, before: Millis, limit: u32) -> Result<u64, StoreError> {
        let limit = i64::from(limit);
        let result = match &self.backend {
            Backend::Sqlite { writer, .. } => purge_statement::<Sqlite>(before.0, limit)
                .build()
                .execute(writer)
                .await?
                .rows_affected(),
            Backend::Postgres(pool) => purge_statement::<Postgres>(before.0, limit)
                .build()
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(result)
    }
}
