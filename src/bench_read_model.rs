//! `distriqueue bench --read-model N`: the dashboard's queries on a read model of N jobs
//! (issue 12: the jobs page answers in under 300 ms with 1,000,000 jobs). Fills a fresh read
//! model (`--database`, default a SQLite file in a temporary directory) with synthetic jobs of
//! the last 24 hours (80 % COMPLETED, 10 % FAILED with one of five errors, the rest waiting,
//! running or cancelled; ten types, eight workers, four priorities, fifty tags), then times each query the
//! dashboard makes, five times, and prints the median and the slowest, then one JSON line.

use std::time::Instant;

use anyhow::Context;
use distriqueue_core::{JobId, JobResponse, JobStatus, Millis, Priority};
use distriqueue_store::{JobQuery, SortBy, StatsQuery, Store};
use serde_json::{json, Value};

/// Jobs written per upsert while filling.
const FILL_BATCH: usize = 5_000;
/// Runs of each query.
const RUNS: usize = 5;

/// The synthetic job `n` of `total` (id `id`), created within the 24 hours before `now`.
fn job(id: JobId, n: usize, total: usize, now: Millis) -> anyhow::Result<JobResponse> {
    let created = now.0 - 86_400_000 + (n as i64 * 86_400_000) / total.max(1) as i64;
    let (status, error) = match n % 100 {
        0..=79 => (JobStatus::Completed, None),
        80..=89 => (
            JobStatus::Failed,
            Some(format!("error {} of the benchmark", n % 5)),
        ),
        90..=94 => (JobStatus::Queued, None),
        95..=97 => (JobStatus::Running, None),
        _ => (JobStatus::Cancelled, None),
    };
    let started = matches!(
        status,
        JobStatus::Completed | JobStatus::Failed | JobStatus::Running
    )
    .then_some(created + 5);
    let ended = matches!(
        status,
        JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
    )
    .then_some(created + 25);
    let priority = [
        Priority::Low,
        Priority::Medium,
        Priority::High,
        Priority::Critical,
    ][n % 4];
    let mut body: Value = json!({
        "id": id.to_string(),
        "type": format!("type-{}", n % 10),
        "jobPriority": priority,
        "jobStatus": status,
        "payload": {"n": n},
        "tags": [format!("batch-{}", n % 50)],
        "retryCount": 0,
        "maxRetries": 3,
        "executionTimeout": 300,
        "created_at": Millis(created).to_iso(),
        "callback_sent": false,
        "queue_time_ms": started.map_or(0, |at| at - created),
        "execution_time_ms": match (started, ended) { (Some(s), Some(e)) => e - s, _ => 0 },
        "attempt": 1,
        "version": 3,
    });
    if started.is_some() {
        body["workerId"] = json!(format!("worker-{}", n % 8));
        body["started_at"] = json!(Millis(created + 5).to_iso());
    }
    if let Some(at) = ended {
        body["completed_at"] = json!(Millis(at).to_iso());
    }
    if let Some(error) = error {
        body["errorMessage"] = json!(error);
    }
    if status == JobStatus::Completed {
        body["result"] = json!({"ok": true});
    }
    serde_json::from_value(body).context("a synthetic job")
}

/// The median and the slowest of `RUNS` runs of `query`, in ms.
async fn time<F, Fut, T>(mut query: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, distriqueue_store::StoreError>>,
{
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        query().await?;
        runs.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(crate::bench::median_and_max(runs))
}

/// Fills a read model with `n_jobs` jobs and times the dashboard's queries on it.
///
/// # Errors
/// The database cannot be opened or written.
pub async fn run(n_jobs: usize, database: Option<&str>) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("distriqueue-bench-{}", std::process::id()));
    let url = match database {
        Some(url) => url.to_string(),
        None => {
            std::fs::create_dir_all(&dir).context("a temporary directory")?;
            dir.join("read-model.db").display().to_string()
        }
    };
    let store = Store::open(&url).await.context("open the read model")?;
    let now = distriqueue_util::clock::now();
    let fill = Instant::now();
    let mut batch = Vec::with_capacity(FILL_BATCH);
    let mut middle = None;
    for n in 0..n_jobs {
        let id = distriqueue_util::clock::new_job_id();
        if n == n_jobs / 2 {
            middle = Some(id);
        }
        batch.push(job(id, n, n_jobs, now)?);
        if batch.len() == FILL_BATCH || n + 1 == n_jobs {
            store.upsert(&batch).await.context("write jobs")?;
            batch.clear();
            if (n + 1) % 100_000 == 0 {
                eprintln!("{} jobs written", n + 1);
            }
        }
    }
    eprintln!(
        "{n_jobs} jobs written in {:.1} s; timing each query {RUNS} times",
        fill.elapsed().as_secs_f64()
    );
    let page = |configure: fn(&mut JobQuery)| {
        let mut query = JobQuery {
            size: 20,
            ..JobQuery::default()
        };
        configure(&mut query);
        query
    };
    let cases: Vec<(&str, JobQuery)> = vec![
        ("jobs page (newest first, 20)", page(|_| {})),
        ("jobs page 50 (offset 1,000)", page(|q| q.page = 50)),
        ("jobs page 5,000 (offset 100,000)", page(|q| q.page = 5_000)),
        ("jobs FAILED", page(|q| q.status = Some(JobStatus::Failed))),
        (
            "jobs FAILED of one type",
            page(|q| {
                q.status = Some(JobStatus::Failed);
                q.job_type = Some("type-3".into());
            }),
        ),
        (
            "jobs of one worker",
            page(|q| q.worker_id = Some("worker-2".into())),
        ),
        ("jobs by priority", page(|q| q.sort_by = SortBy::Priority)),
        (
            "jobs with one tag",
            page(|q| q.tag = Some("batch-7".into())),
        ),
    ];
    let mut figures = serde_json::Map::new();
    let mut report = |name: &str, timing| crate::bench::report_timing(&mut figures, name, timing);
    for (name, query) in &cases {
        report(name, time(|| store.list(query)).await?);
    }
    let all = StatsQuery {
        from: None,
        to: None,
        job_type: None,
    };
    report(
        "statistics (overview)",
        time(|| store.statistics(&all)).await?,
    );
    let hour_ago = Millis(now.0 - 3_600_000);
    report(
        "timeline, last hour (overview)",
        time(|| store.timeline(hour_ago, 60_000, 10_000)).await?,
    );
    report(
        "dead-letter groups",
        time(|| store.dead_letter_groups(200)).await?,
    );
    if let Some(id) = middle {
        report("a job", time(|| store.get(id)).await?);
    }
    println!(
        "{}",
        json!({"read_model_jobs": n_jobs, "database": if database.is_some() { "given" } else { "sqlite" }, "queries": figures})
    );
    drop(store);
    if database.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
