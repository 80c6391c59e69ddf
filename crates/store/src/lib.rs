//! The gateway's durable job record (DESIGN.md "The gateway owns the durable job record"): a read
//! model of [`JobResponse`] snapshots in SQLite or PostgreSQL, answering `GET /api/jobs/{id}` and
//! the filtered, paged, sorted `GET /api/jobs` of CONTRACT.md.
//!
//! A row changes only by a snapshot with a higher `version`, so duplicate, late and out-of-order
//! snapshots are harmless. On SQLite, writes go through one connection (SQLite has one writer
//! anyway, and a single writer never waits on a lock held by another of its own connections);
//! reads use a separate pool and, in WAL mode, never block on the writer. On PostgreSQL, one pool
//! serves both, and several stores (gateways) may share one database.

mod dashboard;
mod query;
mod retention;
mod statistics;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use distriqueue_core::api::Statistics;
use distriqueue_core::model::{JobId, JobStatus};
use distriqueue_core::time::parse_client_time;
use distriqueue_core::wire::JobResponse;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Database, Encode, QueryBuilder, Sqlite, Type};

pub use dashboard::{DeadLetterGroup, GroupKey, Timeline, TimelineBucket};
pub use query::{JobQuery, Page, SortBy, SortDirection};
pub use statistics::StatsQuery;

/// The `format` of the snapshots this version writes (the `format` column).
const SNAPSHOT_FORMAT: i64 = 1;

/// Bound parameters SQLite accepts in one statement (`SQLITE_MAX_VARIABLE_NUMBER` of the SQLite
/// bundled with sqlx, 3.32 and later).
const MAX_BIND_PARAMS: usize = 32_766;

/// Bound parameters per row of the upsert (every column of `jobs`).
const UPSERT_COLUMNS: usize = 13;

/// Rows per upsert statement, staying under [`MAX_BIND_PARAMS`].
const UPSERT_ROWS_PER_STATEMENT: usize = MAX_BIND_PARAMS / UPSERT_COLUMNS;

/// Bound parameters PostgreSQL accepts in one statement (the protocol's 16-bit count).
const PG_MAX_BIND_PARAMS: usize = 65_535;

/// Rows per upsert statement on PostgreSQL, staying under [`PG_MAX_BIND_PARAMS`].
const PG_UPSERT_ROWS_PER_STATEMENT: usize = PG_MAX_BIND_PARAMS / UPSERT_COLUMNS;

/// Connections of the pool of a PostgreSQL database (reads and writes).
const PG_CONNECTIONS: u32 = 8;

/// How long a connection waits for a lock held elsewhere before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections of the read pool of a file database.
const READ_CONNECTIONS: u32 = 8;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// [`Store::open`] was given a URL it cannot use (empty, or unknown parameters).
    #[error("bad database URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The database failed: I/O, locking, SQL, a closed pool.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the migrations failed, or the database holds migrations this build lacks.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A snapshot given to [`Store::upsert`] cannot be stored: a timestamp that is not ISO-8601,
    /// or a version above `i64::MAX`. Nothing of that call was stored.
    #[error("job {id}: snapshot cannot be stored: {reason}")]
    InvalidSnapshot {
        /// The job of the snapshot.
        id: JobId,
        /// What is wrong with it.
        reason: String,
    },
    /// A stored row cannot be read back: unknown `format`, JSON that is not a JobResponse, or a
    /// negative version.
    #[error("job {id}: stored snapshot is corrupt: {reason}")]
    CorruptSnapshot {
        /// The row's `id` column as stored.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The job read model. Cloning is cheap: clones share the connection pools.
#[derive(Debug, Clone)]
pub struct Store {
    /// The database and its pools.
    backend: Backend,
}

/// The database behind a [`Store`].
#[derive(Debug, Clone)]
enum Backend {
    /// SQLite: a file or an in-memory database.
    Sqlite {
        /// One connection: every write.
        writer: SqlitePool,
        /// Every read. For an in-memory database, the writer's pool itself.
        reader: SqlitePool,
    },
    /// PostgreSQL: one pool for reads and writes.
    Postgres(PgPool),
}

/// The columns of one snapshot, ready to bind.
struct JobRow<'a> {
    id: String,
    version: i64,
    job_type: &'a str,
    priority: i64,
    status: &'static str,
    status_rank: i64,
    worker_id: Option<&'a str>,
    created_at: i64,
    started_at: Option<i64>,
    completed_at: Option<i64>,
    snapshot: String,
    /// The `seq` of the event the snapshot came with; 0 for a write reply.
    last_seq: i64,
}

impl<'a> JobRow<'a> {
    fn new(job: &'a JobResponse, seq: u64) -> Result<JobRow<'a>, StoreError> {
        let invalid = |reason: String| StoreError::InvalidSnapshot { id: job.id, reason };
        let time = |field: &str, text: &str| {
            parse_client_time(text)
                .map(|millis| millis.0)
                .ok_or_else(|| invalid(format!("{field} {text:?} is not an ISO-8601 time")))
        };
        let snapshot = serde_json::to_string(job).map_err(|error| invalid(error.to_string()))?;
        Ok(JobRow {
            last_seq: i64::try_from(seq)
                .map_err(|_| invalid(format!("seq {seq} exceeds i64::MAX")))?,
            id: job.id.to_string(),
            version: i64::try_from(job.version)
                .map_err(|_| invalid(format!("version {} exceeds i64::MAX", job.version)))?,
            job_type: &job.job_type,
            priority: i64::from(job.priority.number()),
            status: job.status.as_str(),
            status_rank: status_rank(job.status),
            worker_id: job.worker_id.as_deref(),
            created_at: time("created_at", &job.created_at)?,
            started_at: job
                .started_at
                .as_deref()
                .map(|text| time("started_at", text))
                .transpose()?,
            completed_at: job
                .completed_at
                .as_deref()
                .map(|text| time("completed_at", text))
                .transpose()?,
            snapshot,
        })
    }
}

/// Position of `status` in [`JobStatus::ALL`], so sorting by status follows the lifecycle.
fn status_rank(status: JobStatus) -> i64 {
    JobStatus::ALL
        .iter()
        .position(|candidate| *candidate == status)
        .map_or(i64::MAX, |rank| rank as i64)
}

/// Reads a stored row back into the snapshot it holds.
fn decode(id: String, format: i64, snapshot: &str) -> Result<JobResponse, StoreError> {
    if format != SNAPSHOT_FORMAT {
        return Err(StoreError::CorruptSnapshot {
            id,
            reason: format!("unknown snapshot format {format}"),
        });
    }
    serde_json::from_str(snapshot).map_err(|error| StoreError::CorruptSnapshot {
        id,
        reason: error.to_string(),
    })
}

/// Appends ` WHERE ...` for the filters of `query` (nothing when it has none), values bound.
fn push_filters<DB>(sql: &mut QueryBuilder<DB>, query: &JobQuery)
where
    DB: Database,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'static str: Encode<'q, DB> + Type<DB>,
{
    let mut keyword = " WHERE ";
    let mut condition = |sql: &mut QueryBuilder<DB>, text: &str| {
        sql.push(keyword).push(text);
        keyword = " AND ";
    };
    if let Some(job_type) = &query.job_type {
        condition(sql, "job_type = ");
        sql.push_bind(job_type.clone());
    }
    if let Some(priority) = query.priority {
        condition(sql, "priority = ");
        sql.push_bind(i64::from(priority.number()));
    }
    if let Some(status) = query.status {
        condition(sql, "status = ");
        sql.push_bind(status.as_str());
    }
    if let Some(worker_id) = &query.worker_id {
        condition(sql, "worker_id = ");
        sql.push_bind(worker_id.clone());
    }
    if let Some(from) = query.created_from {
        condition(sql, "created_at >= ");
        sql.push_bind(from.0);
    }
    if let Some(to) = query.created_to {
        condition(sql, "created_at <= ");
        sql.push_bind(to.0);
    }
    if let Some(tag) = &query.tag {
        // `job_tags` (migration 0005) holds each job's tags, kept by triggers.
        condition(sql, "id IN (SELECT job_id FROM job_tags WHERE tag = ");
        sql.push_bind(tag.clone()).push(")");
    }
}

/// Connect options for `url`: `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:` (with the URL
/// parameters sqlx reads, such as `?mode=memory`), or a bare file path taken literally; and
/// whether the database is in memory.
fn connect_options(url: &str) -> Result<(SqliteConnectOptions, bool), StoreError> {
    let bad = |reason: String| StoreError::BadUrl {
        url: url.to_owned(),
        reason,
    };
    let (options, in_memory) = if url.starts_with("sqlite:") || url == ":memory:" {
        let rest = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
        let in_memory =
            database == ":memory:" || params.split('&').any(|param| param == "mode=memory");
        let options =
            SqliteConnectOptions::from_str(url).map_err(|error| bad(error.to_string()))?;
        (options, in_memory)
    } else {
        (SqliteConnectOptions::new().filename(url), false)
    };
    if options.get_filename().as_os_str().is_empty() {
        return Err(bad("no database file named".to_owned()));
    }
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT);
    Ok((options, in_memory))
}

/// Connect options for a `postgres://` or `postgresql://` URL.
fn pg_connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url).map_err(|error| StoreError::BadUrl {
        url: url.to_owned(),
        reason: error.to_string(),
    })
}

/// Whether `url` names a PostgreSQL database.
fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl StoreError {
    /// True when the database refused the data itself, so that the same row can never be
    /// stored: a snapshot this store cannot encode, PostgreSQL's data exceptions (SQLSTATE class
    /// 22, such as NUL in text, and 54000, a value too long) or SQLite's "too big". Every
    /// other error (a connection, a lock, a full disk, a timeout) may pass and is worth a retry.
    pub fn is_unstorable_row(&self) -> bool {
        match self {
            StoreError::InvalidSnapshot { .. } => true,
            StoreError::Database(sqlx::Error::Database(error)) => error
                .code()
                .is_some_and(|code| code.starts_with("22") || code == "54000" || code == "18"),
            _ => false,
        }
    }
}

impl Store {
    /// Opens the database at `url` and applies the migrations of its backend.
    ///
    /// SQLite (created if missing): `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:`, or a bare
    /// file path (taken literally, no URL decoding), migrated by `crates/store/migrations/`.
    /// Connections use the WAL journal, `synchronous=NORMAL` and a 5 s busy timeout. A file
    /// database gets one write connection and a pool of 8 read connections. An in-memory
    /// database lives as long as the store: one connection, never closed while the store is
    /// open, serves reads and writes, and each `open` of `sqlite::memory:` is a new database.
    ///
    /// PostgreSQL (the database must exist): `postgres://...` or `postgresql://...` with the
    /// parameters sqlx reads, migrated by `crates/store/migrations-postgres/`; one pool of up to
    /// 8 connections. Several stores may share one database (migrations take an advisory lock).
    ///
    /// Errors: [`StoreError::BadUrl`] for an empty path, an unparsable URL or unknown URL
    /// parameters, [`StoreError::Database`] when the database cannot be opened, created or
    /// reached, [`StoreError::Migrate`] when the migrations fail or the database is newer than
    /// this build.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if is_postgres_url(url) {
            let options = pg_connect_options(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(PG_CONNECTIONS)
                .connect_with(options)
                .await?;
            sqlx::migrate!("./migrations-postgres").run(&pool).await?;
            tracing::debug!("job store open on PostgreSQL");
            return Ok(Store {
                backend: Backend::Postgres(pool),
            });
        }

        let (options, in_memory) = connect_options(url)?;

        let mut writer = SqlitePoolOptions::new().max_connections(1);
        if in_memory {
            // The database dies with its last connection: keep the one connection forever.
            writer = writer
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let writer = writer.connect_with(options.clone()).await?;
        sqlx::migrate!("./migrations").run(&writer).await?;

        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(READ_CONNECTIONS)
                .connect_with(options)
                .await?
        };
        tracing::debug!(url, in_memory, "job store open");
        Ok(Store {
            backend: Backend::Sqlite { writer, reader },
        })
    }

    /// Applies snapshots: each one is inserted, or replaces the stored row only when its
    /// `version` is higher, so duplicate, late and out-of-order snapshots are harmless. Within
    /// `jobs`, only the highest version of each id counts (the first one on a tie). All or
    /// nothing: one transaction, in multi-row statements of up to 2,520 rows (SQLite) or 5,041
    /// rows (PostgreSQL). Empty input is a no-op.
    ///
    /// Errors: [`StoreError::InvalidSnapshot`] (before anything is written) for a timestamp that
    /// is not ISO-8601 or a version above `i64::MAX`; [`StoreError::Database`] otherwise.
    pub async fn upsert(&self, jobs: &[JobResponse]) -> Result<(), StoreError> {
        self.upsert_rows(jobs.iter().map(|job| (job, 0))).await
    }

    /// [`Store::upsert`] for snapshots that came with lifecycle events: each with its event's
    /// `seq`, kept as the job's `last_seq` (the highest seen; a snapshot of the version already
    /// stored only raises it) for [`Store::changed_since`].
    ///
    /// Errors: as [`Store::upsert`], and [`StoreError::InvalidSnapshot`] for a seq above
    /// `i64::MAX`.
    pub async fn upsert_events(&self, jobs: &[(JobResponse, u64)]) -> Result<(), StoreError> {
        self.upsert_rows(jobs.iter().map(|(job, seq)| (job, *seq)))
            .await
    }

    async fn upsert_rows<'a>(
        &self,
        jobs: impl Iterator<Item = (&'a JobResponse, u64)>,
    ) -> Result<(), StoreError> {
        // One row per id: a PostgreSQL statement may not touch a row twice.
        let mut slots: HashMap<JobId, usize> = HashMap::new();
        let mut latest: Vec<(&JobResponse, u64)> = Vec::new();
        for (job, seq) in jobs {
            match slots.entry(job.id) {
                Entry::Vacant(slot) => {
                    slot.insert(latest.len());
                    latest.push((job, seq));
                }
                Entry::Occupied(slot) => {
                    let kept = &mut latest[*slot.get()];
                    if job.version > kept.0.version {
                        *kept = (job, seq.max(kept.1));
                    } else {
                        kept.1 = kept.1.max(seq);
                    }
                }
            }
        }
        if latest.is_empty() {
            return Ok(());
        }
        let rows = latest
            .into_iter()
            .map(|(job, seq)| JobRow::new(job, seq))
            .collect::<Result<Vec<_>, _>>()?;

        match &self.backend {
            Backend::Sqlite { writer, .. } => {
                if rows.len() <= UPSERT_ROWS_PER_STATEMENT {
                    // One statement is atomic on its own: no transaction round trips.
                    upsert_statement::<Sqlite>(&rows)
                        .build()
                        .execute(writer)
                        .await?;
                    return Ok(());
                }
                let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
                for chunk in rows.chunks(UPSERT_ROWS_PER_STATEMENT) {
                    upsert_statement::<Sqlite>(chunk)
                        .build()
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Backend::Postgres(pool) => {
                if rows.len() <= PG_UPSERT_ROWS_PER_STATEMENT {
                    // One statement is atomic on its own: no transaction round trips.
                    upsert_statement::<Postgres>(&rows)
                        .build()
                        .execute(pool)
                        .await?;
                    return Ok(());
                }
                let mut tx = pool.begin().await?;
                for chunk in rows.chunks(PG_UPSERT_ROWS_PER_STATEMENT) {
                    upsert_statement::<Postgres>(chunk)
                        .build()
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// The stored snapshot of `id` (the highest version seen), or `None` when the job is unknown.
    ///
    /// Errors: [`StoreError::CorruptSnapshot`] when the row cannot be read back;
    /// [`StoreError::Database`] otherwise.
    pub async fn get(&self, id: JobId) -> Result<Option<JobResponse>, StoreError> {
        let row: Option<(String, i64, String)> = match &self.backend {
            Backend::Sqlite { reader, .. } => {
                sqlx::query_as("SELECT id, format, snapshot FROM jobs WHERE id = ?")
                    .bind(id.to_string())
                    .fetch_optional(reader)
                    .await?
            }
            Backend::Postgres(pool) => {
                sqlx::query_as("SELECT id, format, snapshot FROM jobs WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(pool)
                    .await?
            }
        };
        row.map(|(id, format, snapshot)| decode(id, format, &snapshot))
            .transpose()
    }

    /// Up to `limit` jobs whose newest stored event came after event `seq`, in event order,
    /// each with that event's seq: what an SSE client reconnecting with `Last-Event-ID: seq`
    /// missed, as current states.
    ///
    /// Errors: [`StoreError::CorruptSnapshot`] when a row cannot be read back;
    /// [`StoreError::Database`] otherwise.
    pub async fn changed_since(
        &self,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<(JobResponse, u64)>, StoreError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String, i64, String, i64)> = match &self.backend {
            Backend::Sqlite { reader, .. } => {
                sqlx::query_as(
                    "SELECT id, format, snapshot, last_seq FROM jobs WHERE last_seq > ? \
                     ORDER BY last_seq LIMIT ?",
                )
                .bind(seq)
                .bind(limit)
                .fetch_all(reader)
                .await?
            }
            Backend::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT id, format, snapshot, last_seq FROM jobs WHERE last_seq > $1 \
                     ORDER BY last_seq LIMIT $2",
                )
                .bind(seq)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
        };
        rows.into_iter()
            .map(|(id, format, snapshot, last_seq)| {
                let job = decode(id, format, &snapshot)?;
                Ok((job, u64::try_from(last_seq).unwrap_or_default()))
            })
            .collect()
    }

    /// One page of the jobs matching `query`'s filters, in its sort order (ties broken by id in
    /// the same direction; NULL start or completion times last in both directions), with the
    /// number of matching jobs over all pages. Page and count come from one read transaction
    /// (on PostgreSQL a repeatable-read one), so they agree. A page past the end has no content
    /// but still the total.
    ///
    /// Errors: [`StoreError::CorruptSnapshot`] when a row cannot be read back;
    /// [`StoreError::Database`] otherwise.
    pub async fn list(&self, query: &JobQuery) -> Result<Page, StoreError> {
        let (total, rows): (i64, Vec<(String, i64, String)>) = match &self.backend {
            Backend::Sqlite { reader, .. } => {
                let (mut count, mut select) = list_statements::<Sqlite>(query, false);
                let mut tx = reader.begin().await?;
                let total = count.build_query_scalar().fetch_one(&mut *tx).await?;
                let rows = select.build_query_as().fetch_all(&mut *tx).await?;
                tx.commit().await?;
                (total, rows)
            }
            Backend::Postgres(pool) => {
                let (mut count, mut select) = list_statements::<Postgres>(query, true);
                let mut tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?;
                let total = count.build_query_scalar().fetch_one(&mut *tx).await?;
                let rows = select.build_query_as().fetch_all(&mut *tx).await?;
                tx.commit().await?;
                (total, rows)
            }
        };

        let content = rows
            .into_iter()
            .map(|(id, format, snapshot)| decode(id, format, &snapshot))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            content,
            total_elements: u64::try_from(total).unwrap_or_default(),
        })
    }

    /// Statistics of the jobs `query` selects, from SQL aggregates in one read transaction (on
    /// PostgreSQL a repeatable-read one): the hourly summary tables for the whole hours of the
    /// range, `jobs` itself for a partial hour at either end (see `statistics.rs`).
    ///
    /// Errors: [`StoreError::Database`].
    pub async fn statistics(&self, query: &StatsQuery) -> Result<Statistics, StoreError> {
        let split = statistics::split(query.from, query.to);
        let job_type = query.job_type.as_deref();
        let mut totals = statistics::Totals::default();
        macro_rules! gather {
            ($tx:expr, $DB:ty) => {{
                let mut parts: Vec<statistics::Statements<$DB>> = Vec::new();
                if let Some((first, last)) = split.hours {
                    parts.push(statistics::summary_statements(first, last, job_type));
                }
                for (lo, hi) in &split.edges {
                    parts.push(statistics::edge_statements(*lo, *hi, job_type));
                }
                for mut part in parts {
                    let status = part.status.build_query_as().fetch_all(&mut *$tx).await?;
                    let priority = part.priority.build_query_as().fetch_all(&mut *$tx).await?;
                    let worker = part.worker.build_query_as().fetch_all(&mut *$tx).await?;
                    totals.add(status, priority, worker);
                }
            }};
        }
        match &self.backend {
            Backend::Sqlite { reader, .. } => {
                let mut tx = reader.begin().await?;
                gather!(tx, Sqlite);
                tx.commit().await?;
            }
            Backend::Postgres(pool) => {
                let mut tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?;
                gather!(tx, Postgres);
                tx.commit().await?;
            }
        }
        Ok(totals.statistics())
    }

    /// The stored version of each of `ids` that is known; unknown ids are absent from the map.
    /// Any number of ids (queried in chunks).
    ///
    /// Errors: [`StoreError::CorruptSnapshot`] for a negative stored version;
    /// [`StoreError::Database`] otherwise.
    pub async fn versions(&self, ids: &[JobId]) -> Result<HashMap<JobId, u64>, StoreError> {
        let by_text: HashMap<String, JobId> = ids.iter().map(|id| (id.to_string(), *id)).collect();
        let texts: Vec<&str> = by_text.keys().map(String::as_str).collect();
        let mut versions = HashMap::with_capacity(texts.len());
        let chunk_size = match self.backend {
            Backend::Sqlite { .. } => MAX_BIND_PARAMS,
            Backend::Postgres(_) => PG_MAX_BIND_PARAMS,
        };
        for chunk in texts.chunks(chunk_size) {
            let rows: Vec<(String, i64)> = match &self.backend {
                Backend::Sqlite { reader, .. } => {
                    versions_statement::<Sqlite>(chunk)
                        .build_query_as()
                        .fetch_all(reader)
                        .await?
                }
                Backend::Postgres(pool) => {
                    versions_statement::<Postgres>(chunk)
                        .build_query_as()
                        .fetch_all(pool)
                        .await?
                }
            };
            for (text, version) in rows {
                let version = u64::try_from(version).map_err(|_| StoreError::CorruptSnapshot {
                    id: text.clone(),
                    reason: format!("negative version {version}"),
                })?;
                if let Some(id) = by_text.get(&text) {
                    versions.insert(*id, version);
                }
            }
        }
        Ok(versions)
    }
}

/// The count and the page query of [`Store::list`]. `nulls_last` selects PostgreSQL's
/// `NULLS LAST`; otherwise NULLs go last by sorting on `column IS NULL` first (SQLite).
fn list_statements<DB>(query: &JobQuery, nulls_last: bool) -> (QueryBuilder<DB>, QueryBuilder<DB>)
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'static str: Encode<'q, DB> + Type<DB>,
{
    let mut count = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM jobs");
    push_filters(&mut count, query);

    let (column, nullable) = query.sort_by.column();
    let direction = query.direction.sql();
    let mut select = QueryBuilder::<DB>::new("SELECT id, format, snapshot FROM jobs");
    push_filters(&mut select, query);
    select.push(" ORDER BY ");
    if nullable && nulls_last {
        select.push(format_args!("{column} {direction} NULLS LAST, "));
    } else if nullable {
        select.push(format_args!("{column} IS NULL, {column} {direction}, "));
    } else {
        select.push(format_args!("{column} {direction}, "));
    }
    select
        .push(format_args!("id {direction} LIMIT "))
        .push_bind(i64::from(query.size))
        .push(" OFFSET ")
        .push_bind(i64::from(query.page) * i64::from(query.size));
    (count, select)
}

/// `SELECT id, version FROM jobs WHERE id IN (...)` for `ids` (at most the backend's bind limit).
fn versions_statement<DB>(ids: &[&str]) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
{
    let mut sql = QueryBuilder::<DB>::new("SELECT id, version FROM jobs WHERE id IN (");
    let mut list = sql.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    sql.push(")");
    sql
}

/// One multi-row `INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE excluded.version >
/// jobs.version` for `rows` (at most the backend's rows per statement, each id once). The same
/// text serves SQLite and PostgreSQL.
fn upsert_statement<DB>(rows: &[JobRow<'_>]) -> QueryBuilder<DB>
where
    DB: Database,
    <DB as Database>::Arguments: Default,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
{
    let mut sql = QueryBuilder::<DB>::new(
        "INSERT INTO jobs (id, version, job_type, priority, status, status_rank, \
         worker_id, created_at, started_at, completed_at, snapshot, format, last_seq) ",
    );
    sql.push_values(rows, |mut values, row| {
        values
            .push_bind(row.id.as_str())
            .push_bind(row.version)
            .push_bind(row.job_type)
            .push_bind(row.priority)
            .push_bind(row.status)
            .push_bind(row.status_rank)
            .push_bind(row.worker_id)
            .push_bind(row.created_at)
            .push_bind(row.started_at)
            .push_bind(row.completed_at)
            .push_bind(row.snapshot.as_str())
            .push_bind(SNAPSHOT_FORMAT)
            .push_bind(row.last_seq);
    });
    sql.push(
        " ON CONFLICT(id) DO UPDATE SET version = excluded.version, \
         job_type = excluded.job_type, priority = excluded.priority, \
         status = excluded.status, status_rank = excluded.status_rank, \
         worker_id = excluded.worker_id, created_at = excluded.created_at, \
         started_at = excluded.started_at, completed_at = excluded.completed_at, \
         snapshot = excluded.snapshot, format = excluded.format, \
         last_seq = CASE WHEN excluded.last_seq > jobs.last_seq \
         THEN excluded.last_seq ELSE jobs.last_seq END \
         WHERE excluded.version > jobs.version \
         OR (excluded.version = jobs.version AND excluded.last_seq > jobs.last_seq)",
    );
    sql
}
