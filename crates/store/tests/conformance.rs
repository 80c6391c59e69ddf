//! The store's conformance suite: backend-neutral `async fn` checks taking a fresh, empty
//! `&Store`, instantiated by `conformance_suite!` once per backend (an SQLite file in a tempdir,
//! SQLite in memory, and PostgreSQL). A further backend adds one `mod` with its own opener. Tests
//! of SQLite-only behaviour (URLs, reopening a file) follow the suite.
//!
//! PostgreSQL: the tests read `DQ_TEST_DATABASE_URL` (such as
//! `postgres://root@127.0.0.1:5432/test`) and skip, saying so, when it is unset. Each test creates
//! its own database `dq_test_<random>` through that URL and drops it afterwards, so the tests run
//! in parallel. With `DQ_REQUIRE_SERVICES=1`, an unreachable server fails the test instead.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use distriqueue_core::api::Statistics;
use distriqueue_core::model::{JobId, JobStatus, Priority};
use distriqueue_core::time::{parse_client_time, Millis};
use distriqueue_core::wire::JobResponse;
use distriqueue_store::{GroupKey, JobQuery, SortBy, SortDirection, StatsQuery, Store, StoreError};
use distriqueue_testkit::TestDatabase;
use serde_json::json;
use tempfile::TempDir;
use uuid::Uuid;

/// 2026-01-01T00:00:00Z.
const BASE: i64 = 1_767_225_600_000;

const TYPES: [&str; 3] = ["email", "report", "calculate"];

/// The id of job `n`; ids sort like `n`.
fn id(n: u32) -> JobId {
    JobId(Uuid::from_u128(u128::from(n)))
}

/// Job `n` in `status` at `version`: created at `BASE + n` seconds; type and priority cycle with
/// `n`; started (on `worker-{n % 2}`) when RUNNING or finished by a worker, at times out of `n`'s
/// order and with ties; completed when terminal.
fn job(n: u32, status: JobStatus, version: u64) -> JobResponse {
    let created = Millis(BASE + i64::from(n) * 1_000);
    let ran = matches!(
        status,
        JobStatus::Running | JobStatus::Completed | JobStatus::Failed | JobStatus::Timeout
    );
    let started = ran.then(|| Millis(BASE + i64::from(n * 7 % 5) * 60_000));
    let completed = status
        .is_terminal()
        .then(|| Millis(BASE + i64::from(n * 3 % 4) * 3_600_000));
    JobResponse {
        id: id(n),
        job_type: TYPES[n as usize % TYPES.len()].to_owned(),
        priority: Priority::HIGHEST_FIRST[n as usize % 4],
        status,
        worker_id: ran.then(|| format!("worker-{}", n % 2)),
        payload: json!({ "n": n }).as_object().cloned().unwrap_or_default(),
        result: (status == JobStatus::Completed).then(|| json!({ "sum": n })),
        error_message: (status == JobStatus::Failed).then(|| "boom".to_owned()),
        retry_count: 0,
        max_retries: 3,
        execution_timeout: 300,
        created_at: created.to_iso(),
        started_at: started.map(Millis::to_iso),
        completed_at: completed.map(Millis::to_iso),
        metadata: [("n".to_owned(), n.to_string())].into(),
        parent_job_id: None,
        callback_sent: false,
        queue_time_ms: started.map_or(0, |s| s.since(created)),
        execution_time_ms: 0,
        total_duration_ms: completed.map(|c| c.since(created)),
        tags: vec!["t".to_owned()],
        progress: None,
        attempt: 1,
        version,
        attempts: Vec::new(),
    }
}

/// A query for one page of `size` with everything else default.
fn page(page: u32, size: u32) -> JobQuery {
    JobQuery {
        page,
        size,
        ..JobQuery::default()
    }
}

fn ids(jobs: &[JobResponse]) -> Vec<JobId> {
    jobs.iter().map(|job| job.id).collect()
}

async fn list_ids(store: &Store, query: JobQuery) -> Vec<JobId> {
    ids(&store.list(&query).await.expect("list").content)
}

/// Twelve jobs in every lifecycle state, version 1.
fn mixed_jobs() -> Vec<JobResponse> {
    (0..12)
        .map(|n| job(n, JobStatus::ALL[n as usize % JobStatus::ALL.len()], 1))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The suite.

async fn upsert_then_get(store: &Store) {
    let completed = job(1, JobStatus::Completed, 3);
    let queued = job(2, JobStatus::Queued, 1);
    store
        .upsert(&[completed.clone(), queued.clone()])
        .await
        .expect("upsert");
    assert_eq!(store.get(completed.id).await.expect("get"), Some(completed));
    assert_eq!(store.get(queued.id).await.expect("get"), Some(queued));
}

async fn unknown_id_is_none(store: &Store) {
    assert_eq!(store.get(id(404)).await.expect("get empty store"), None);
    store
        .upsert(&[job(1, JobStatus::Queued, 1)])
        .await
        .expect("upsert");
    assert_eq!(store.get(id(404)).await.expect("get"), None);
}

async fn empty_upsert_is_noop(store: &Store) {
    store.upsert(&[]).await.expect("empty upsert");
    let all = store.list(&page(0, 20)).await.expect("list");
    assert_eq!(all.total_elements, 0);
    assert!(all.content.is_empty());
}

async fn lower_or_equal_version_never_overwrites(store: &Store) {
    let stored = job(1, JobStatus::Running, 5);
    store
        .upsert(std::slice::from_ref(&stored))
        .await
        .expect("upsert v5");

    let mut same_version = job(1, JobStatus::Completed, 5);
    same_version.result = Some(json!("impostor"));
    let older = job(1, JobStatus::Queued, 4);
    store
        .upsert(&[same_version])
        .await
        .expect("upsert equal version");
    store.upsert(&[older]).await.expect("upsert older version");
    assert_eq!(store.get(stored.id).await.expect("get"), Some(stored));

    let newer = job(1, JobStatus::Completed, 6);
    store
        .upsert(std::slice::from_ref(&newer))
        .await
        .expect("upsert v6");
    assert_eq!(store.get(newer.id).await.expect("get"), Some(newer));
}

async fn highest_version_wins_within_one_batch(store: &Store) {
    let batch = [
        job(1, JobStatus::Queued, 2),
        job(2, JobStatus::Queued, 1),
        job(1, JobStatus::Completed, 7),
        job(1, JobStatus::Running, 4),
        job(2, JobStatus::Running, 2),
    ];
    store.upsert(&batch).await.expect("upsert");
    assert_eq!(store.get(id(1)).await.expect("get"), Some(batch[2].clone()));
    assert_eq!(store.get(id(2)).await.expect("get"), Some(batch[4].clone()));

    // Equal versions within one batch: one of them is kept, the row is not duplicated.
    let twin = job(3, JobStatus::Queued, 1);
    store
        .upsert(&[twin.clone(), twin.clone()])
        .await
        .expect("upsert twins");
    assert_eq!(store.get(twin.id).await.expect("get"), Some(twin));
    assert_eq!(
        store.list(&page(0, 20)).await.expect("list").total_elements,
        3
    );
}

async fn out_of_order_batches_converge(store: &Store) {
    const STATES: [JobStatus; 4] = [
        JobStatus::Pending,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Completed,
    ];
    // Versions 1..=4 of jobs 0..10, delivered as batches per version in the order 3, 1, 4, 2,
    // with batch 4 missing job 0 and a repeat of batch 3 at the end.
    let batch = |version: u64| -> Vec<JobResponse> {
        (0..10)
            .filter(|n| version != 4 || *n != 0)
            .map(|n| job(n, STATES[version as usize - 1], version))
            .collect()
    };
    for version in [3, 1, 4, 2, 3] {
        store.upsert(&batch(version)).await.expect("upsert batch");
    }
    let all_ids: Vec<JobId> = (0..10).map(id).collect();
    let versions = store.versions(&all_ids).await.expect("versions");
    for n in 0..10 {
        let expected = if n == 0 { 3 } else { 4 };
        assert_eq!(versions.get(&id(n)), Some(&expected), "job {n}");
        assert_eq!(
            store.get(id(n)).await.expect("get"),
            Some(job(n, STATES[expected as usize - 1], expected))
        );
    }
}

async fn newer_snapshot_updates_filter_and_sort_columns(store: &Store) {
    store
        .upsert(&[job(1, JobStatus::Queued, 1), job(2, JobStatus::Queued, 1)])
        .await
        .expect("upsert queued");
    store
        .upsert(&[job(1, JobStatus::Running, 2)])
        .await
        .expect("upsert running");

    let with_status = |status| JobQuery {
        status: Some(status),
        ..page(0, 20)
    };
    assert_eq!(
        list_ids(store, with_status(JobStatus::Queued)).await,
        [id(2)]
    );
    assert_eq!(
        list_ids(store, with_status(JobStatus::Running)).await,
        [id(1)]
    );
    let on_worker = JobQuery {
        worker_id: Some("worker-1".to_owned()),
        ..page(0, 20)
    };
    assert_eq!(list_ids(store, on_worker).await, [id(1)]);
    let by_start = JobQuery {
        sort_by: SortBy::StartedAt,
        ..page(0, 20)
    };
    assert_eq!(list_ids(store, by_start).await, [id(1), id(2)]);
}

async fn thousands_of_rows_in_one_upsert(store: &Store) {
    // More rows than one statement takes, with a stale duplicate of every tenth job at the end.
    const ROWS: u32 = 6_000;
    let mut batch: Vec<JobResponse> = (0..ROWS).map(|n| job(n, JobStatus::Queued, 2)).collect();
    batch.extend((0..ROWS).step_by(10).map(|n| job(n, JobStatus::Pending, 1)));
    store.upsert(&batch).await.expect("upsert");

    let all_ids: Vec<JobId> = (0..ROWS).map(id).collect();
    let versions = store.versions(&all_ids).await.expect("versions");
    assert_eq!(versions.len(), ROWS as usize);
    assert!(versions.values().all(|version| *version == 2));

    let queued = JobQuery {
        status: Some(JobStatus::Queued),
        ..page(0, 100)
    };
    assert_eq!(
        store.list(&queued).await.expect("list").total_elements,
        u64::from(ROWS)
    );
    let newest = store.list(&page(0, 1)).await.expect("list");
    assert_eq!(ids(&newest.content), [id(ROWS - 1)]);
}

async fn versions_reports_known_ids_only(store: &Store) {
    assert!(store.versions(&[]).await.expect("no ids").is_empty());
    store
        .upsert(&[job(1, JobStatus::Queued, 1), job(2, JobStatus::Running, 9)])
        .await
        .expect("upsert");
    let versions = store
        .versions(&[id(2), id(3), id(2)])
        .await
        .expect("versions");
    assert_eq!(versions, HashMap::from([(id(2), 9)]));
}

async fn every_filter(store: &Store) {
    let jobs = mixed_jobs();
    store.upsert(&jobs).await.expect("upsert");
    let expect = |keep: &dyn Fn(&JobResponse) -> bool| -> Vec<JobId> {
        let mut kept: Vec<JobId> = jobs.iter().filter(|j| keep(j)).map(|j| j.id).collect();
        kept.reverse(); // newest first
        kept
    };
    let all = page(0, 100);

    for job_type in TYPES {
        let query = JobQuery {
            job_type: Some(job_type.to_owned()),
            ..all.clone()
        };
        let expected = expect(&|j| j.job_type == job_type);
        assert!(!expected.is_empty());
        assert_eq!(list_ids(store, query).await, expected, "type {job_type}");
    }
    for priority in Priority::HIGHEST_FIRST {
        let query = JobQuery {
            priority: Some(priority),
            ..all.clone()
        };
        let expected = expect(&|j| j.priority == priority);
        assert!(!expected.is_empty());
        assert_eq!(
            list_ids(store, query).await,
            expected,
            "priority {priority}"
        );
    }
    for status in JobStatus::ALL {
        let query = JobQuery {
            status: Some(status),
            ..all.clone()
        };
        let expected = expect(&|j| j.status == status);
        assert!(!expected.is_empty());
        assert_eq!(list_ids(store, query).await, expected, "status {status}");
    }
    for worker in ["worker-0", "worker-1", "worker-9"] {
        let query = JobQuery {
            worker_id: Some(worker.to_owned()),
            ..all.clone()
        };
        let expected = expect(&|j| j.worker_id.as_deref() == Some(worker));
        assert_eq!(list_ids(store, query).await, expected, "worker {worker}");
    }

    // created range, inclusive at both ends: jobs 3..=7.
    let created = |n: u32| parse_client_time(&job(n, JobStatus::Queued, 1).created_at);
    let range = JobQuery {
        created_from: created(3),
        created_to: created(7),
        ..all.clone()
    };
    assert_eq!(
        list_ids(store, range).await,
        [id(7), id(6), id(5), id(4), id(3)]
    );
    let from = JobQuery {
        created_from: created(10),
        ..all.clone()
    };
    assert_eq!(list_ids(store, from).await, [id(11), id(10)]);
    let to = JobQuery {
        created_to: created(1),
        ..all.clone()
    };
    assert_eq!(list_ids(store, to).await, [id(1), id(0)]);
    let empty_range = JobQuery {
        created_from: created(5),
        created_to: created(4),
        ..all.clone()
    };
    assert_eq!(list_ids(store, empty_range).await, Vec::<JobId>::new());

    // All filters together.
    let combined = JobQuery {
        job_type: Some(jobs[3].job_type.clone()),
        priority: Some(jobs[3].priority),
        status: Some(jobs[3].status),
        worker_id: jobs[3].worker_id.clone(),
        created_from: created(3),
        created_to: created(3),
        ..all.clone()
    };
    assert_eq!(list_ids(store, combined.clone()).await, [id(3)]);
    let mismatch = JobQuery {
        job_type: Some("no-such-type".to_owned()),
        ..combined
    };
    let none = store.list(&mismatch).await.expect("list");
    assert_eq!((none.total_elements, none.content.len()), (0, 0));

    // A tag: every job above carries "t"; a new job carries only its own. The other filters
    // are checked above, before this job exists.
    let mut tagged = job(50, JobStatus::Queued, 1);
    tagged.tags = vec!["only-fifty".to_owned()];
    store.upsert(&[tagged]).await.expect("upsert");
    for (tag, expected) in [
        ("t", expect(&|_| true)),
        ("only-fifty", vec![id(50)]),
        ("no-such-tag", Vec::new()),
    ] {
        let query = JobQuery {
            tag: Some(tag.to_owned()),
            ..all.clone()
        };
        assert_eq!(list_ids(store, query).await, expected, "tag {tag}");
    }
    // With another filter: the tagged job's own type.
    let typed = JobQuery {
        tag: Some("only-fifty".to_owned()),
        job_type: Some(job(50, JobStatus::Queued, 1).job_type),
        ..all.clone()
    };
    assert_eq!(list_ids(store, typed).await, vec![id(50)]);
}

async fn paging_numbers_and_totals(store: &Store) {
    let jobs: Vec<JobResponse> = (0..25).map(|n| job(n, JobStatus::Queued, 1)).collect();
    store.upsert(&jobs).await.expect("upsert");

    let mut seen = Vec::new();
    for (number, expected_len) in [(0, 10), (1, 10), (2, 5), (3, 0)] {
        let answer = store.list(&page(number, 10)).await.expect("list");
        assert_eq!(answer.total_elements, 25, "page {number}");
        assert_eq!(answer.content.len(), expected_len, "page {number}");
        seen.extend(ids(&answer.content));
    }
    let newest_first: Vec<JobId> = (0..25).rev().map(id).collect();
    assert_eq!(seen, newest_first);

    let filtered = JobQuery {
        priority: Some(Priority::Critical),
        ..page(1, 3)
    };
    let answer = store.list(&filtered).await.expect("list");
    // Critical: n % 4 == 0, so 0, 4, ..., 24 (7 jobs); page 1 of 3 newest first: 12, 8, 4.
    assert_eq!(answer.total_elements, 7);
    assert_eq!(ids(&answer.content), [id(12), id(8), id(4)]);

    let far = store.list(&page(u32::MAX, 100)).await.expect("far page");
    assert_eq!((far.total_elements, far.content.len()), (25, 0));
}

/// The sort key of `job` as the store orders it; `None` sorts last in both directions.
fn sort_key(job: &JobResponse, sort_by: SortBy) -> Option<(i64, String)> {
    let time = |text: &Option<String>| {
        text.as_deref()
            .and_then(parse_client_time)
            .map(|millis| (millis.0, String::new()))
    };
    match sort_by {
        SortBy::CreatedAt => time(&Some(job.created_at.clone())),
        SortBy::Priority => Some((i64::from(job.priority.number()), String::new())),
        SortBy::Status => JobStatus::ALL
            .iter()
            .position(|s| *s == job.status)
            .map(|rank| (rank as i64, String::new())),
        SortBy::Type => Some((0, job.job_type.clone())),
        SortBy::StartedAt => time(&job.started_at),
        SortBy::CompletedAt => time(&job.completed_at),
    }
}

fn expected_order(jobs: &[JobResponse], sort_by: SortBy, direction: SortDirection) -> Vec<JobId> {
    let mut sorted = jobs.to_vec();
    sorted.sort_by(|a, b| {
        let (ka, kb) = (sort_key(a, sort_by), sort_key(b, sort_by));
        let order = match (&ka, &kb) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => return Ordering::Greater,
            (Some(_), None) => return Ordering::Less,
            (Some(x), Some(y)) => x.cmp(y),
        }
        .then(a.id.cmp(&b.id));
        match direction {
            SortDirection::Asc => order,
            SortDirection::Desc => order.reverse(),
        }
    });
    ids(&sorted)
}

async fn every_sort_key_both_directions(store: &Store) {
    let jobs: Vec<JobResponse> = (0..30)
        .map(|n| {
            job(
                n,
                JobStatus::ALL[(n as usize * 5) % JobStatus::ALL.len()],
                1,
            )
        })
        .collect();
    store.upsert(&jobs).await.expect("upsert");
    for sort_by in [
        SortBy::CreatedAt,
        SortBy::Priority,
        SortBy::Status,
        SortBy::Type,
        SortBy::StartedAt,
        SortBy::CompletedAt,
    ] {
        for direction in [SortDirection::Asc, SortDirection::Desc] {
            let expected = expected_order(&jobs, sort_by, direction);
            let query = JobQuery {
                sort_by,
                direction,
                ..page(0, 100)
            };
            assert_eq!(
                list_ids(store, query.clone()).await,
                expected,
                "{sort_by:?} {direction:?}"
            );
            // Paging through the same order yields the same sequence.
            let mut paged = Vec::new();
            for number in 0..4 {
                let page_query = JobQuery {
                    page: number,
                    size: 8,
                    ..query.clone()
                };
                paged.extend(list_ids(store, page_query).await);
            }
            assert_eq!(paged, expected, "{sort_by:?} {direction:?} paged");
        }
    }
    // Nulls last in both directions, checked directly.
    for direction in [SortDirection::Asc, SortDirection::Desc] {
        let query = JobQuery {
            sort_by: SortBy::StartedAt,
            direction,
            ..page(0, 100)
        };
        let content = store.list(&query).await.expect("list").content;
        let first_unstarted = content
            .iter()
            .position(|j| j.started_at.is_none())
            .expect("some job never started");
        assert!(content[first_unstarted..]
            .iter()
            .all(|j| j.started_at.is_none()));
    }
}

/// `changed_since` lists jobs by the seq of their newest stored event: a write reply (seq 0)
/// lists nothing; the event of the same version then raises the seq; a later event moves the
/// job behind the others; an older event never lowers it.
async fn changed_since_follows_event_seqs(store: &Store) {
    store
        .upsert(&[job(1, JobStatus::Queued, 1), job(2, JobStatus::Queued, 1)])
        .await
        .expect("replies");
    assert!(store.changed_since(0, 10).await.expect("read").is_empty());
    store
        .upsert_events(&[
            (job(1, JobStatus::Queued, 1), 10),
            (job(2, JobStatus::Queued, 1), 11),
            (job(3, JobStatus::Queued, 1), 12),
        ])
        .await
        .expect("events");
    store
        .upsert_events(&[
            (job(1, JobStatus::Running, 2), 13),
            (job(2, JobStatus::Queued, 1), 5),
        ])
        .await
        .expect("more events");
    let changed = store.changed_since(10, 10).await.expect("read");
    let seen: Vec<(JobId, JobStatus, u64)> = changed
        .iter()
        .map(|(job, seq)| (job.id, job.status, *seq))
        .collect();
    assert_eq!(
        seen,
        [
            (id(2), JobStatus::Queued, 11),
            (id(3), JobStatus::Queued, 12),
            (id(1), JobStatus::Running, 13),
        ]
    );
    assert_eq!(store.changed_since(11, 1).await.expect("read").len(), 1);
    assert!(store.changed_since(13, 10).await.expect("read").is_empty());
}

/// Jobs `n` for statistics: created 7 minutes apart (over about a day, so many hourly buckets),
/// every status, type, priority and two workers.
fn stats_job(n: u32, status: JobStatus, version: u64) -> JobResponse {
    let created = Millis(BASE + i64::from(n) * 7 * 60_000);
    let mut job = job(n, status, version);
    job.created_at = created.to_iso();
    let started = job
        .started_at
        .as_ref()
        .map(|_| Millis(created.0 + i64::from(n % 13) * 1_000));
    job.started_at = started.map(Millis::to_iso);
    job.completed_at = job
        .completed_at
        .as_ref()
        .map(|_| Millis(started.unwrap_or(created).0 + i64::from(n % 5) * 250).to_iso());
    job
}

/// What `store.statistics` must answer for `query`, counted from the jobs themselves.
fn expected_statistics(jobs: &[JobResponse], query: &StatsQuery) -> Statistics {
    let time = |text: &Option<String>| text.as_deref().and_then(parse_client_time);
    let selected: Vec<&JobResponse> = jobs
        .iter()
        .filter(|job| {
            let created = time(&Some(job.created_at.clone())).expect("created_at");
            query.from.is_none_or(|from| created >= from)
                && query.to.is_none_or(|to| created <= to)
                && query
                    .job_type
                    .as_ref()
                    .is_none_or(|wanted| *wanted == job.job_type)
        })
        .collect();
    let count =
        |status: JobStatus| selected.iter().filter(|job| job.status == status).count() as u64;
    let mut by = [BTreeMap::new(), BTreeMap::new(), BTreeMap::new()];
    let (mut queue, mut n_queue, mut exec, mut n_exec) = (0i64, 0i64, 0i64, 0i64);
    for job in &selected {
        *by[0].entry(job.job_type.clone()).or_insert(0u64) += 1;
        *by[1]
            .entry(job.priority.as_str().to_string())
            .or_insert(0u64) += 1;
        if let Some(worker) = &job.worker_id {
            *by[2].entry(worker.clone()).or_insert(0u64) += 1;
        }
        let created = time(&Some(job.created_at.clone())).expect("created_at");
        if let Some(started) = time(&job.started_at) {
            queue += started.0 - created.0;
            n_queue += 1;
            if let Some(completed) = time(&job.completed_at) {
                exec += completed.0 - started.0;
                n_exec += 1;
            }
        }
    }
    let completed = count(JobStatus::Completed);
    let finished = completed
        + count(JobStatus::Failed)
        + count(JobStatus::Timeout)
        + count(JobStatus::Cancelled);
    let average = |sum: i64, n: i64| if n > 0 { sum as f64 / n as f64 } else { 0.0 };
    let [jobs_by_type, jobs_by_priority, jobs_by_worker] = by;
    Statistics {
        total_jobs: selected.len() as u64,
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
        average_queue_time_ms: average(queue, n_queue),
        average_execution_time_ms: average(exec, n_exec),
        jobs_by_type,
        jobs_by_priority,
        jobs_by_worker,
        time_range_start: None,
        time_range_end: None,
    }
}

async fn statistics_agree_with_a_count_of_the_rows(store: &Store) {
    // Every job first as QUEUED, then most move on (newer versions); stale versions come late
    // and change nothing.
    let first: Vec<JobResponse> = (0..240)
        .map(|n| stats_job(n, JobStatus::Queued, 1))
        .collect();
    store.upsert(&first).await.expect("first versions");
    let current: Vec<JobResponse> = (0..240)
        .map(|n| stats_job(n, JobStatus::ALL[n as usize % JobStatus::ALL.len()], 3))
        .collect();
    store.upsert(&current).await.expect("newer versions");
    let stale: Vec<JobResponse> = (0..240)
        .map(|n| stats_job(n, JobStatus::Running, 2))
        .collect();
    store.upsert(&stale).await.expect("stale versions");
    let hour = 3_600_000;
    let queries = [
        StatsQuery::default(),
        StatsQuery {
            from: Some(Millis(BASE + 3 * hour)),
            to: Some(Millis(BASE + 9 * hour - 1)),
            job_type: None,
        },
        StatsQuery {
            from: Some(Millis(BASE + 3 * hour + 17 * 60_000)),
            to: Some(Millis(BASE + 9 * hour + 5 * 60_000)),
            job_type: None,
        },
        StatsQuery {
            from: Some(Millis(BASE + 5 * hour + 60_000)),
            to: Some(Millis(BASE + 5 * hour + 50 * 60_000)),
            job_type: Some(TYPES[1].to_string()),
        },
        StatsQuery {
            from: None,
            to: Some(Millis(BASE + 11 * hour + 1)),
            job_type: Some(TYPES[0].to_string()),
        },
        StatsQuery {
            from: Some(Millis(BASE + 40 * hour)),
            to: None,
            job_type: None,
        },
    ];
    for query in &queries {
        let answered = store.statistics(query).await.expect("statistics");
        let expected = expected_statistics(&current, query);
        assert_eq!(answered, expected, "{query:?}");
    }
}

/// Retention (issue 13, item 5): purging in small batches while snapshots keep arriving removes
/// exactly the finished jobs that ended before the cutoff, keeps every other job, and leaves the
/// statistics of whole hours as they were.
async fn retention_removes_exactly_the_finished_jobs_older_than_the_window(store: &Store) {
    let old: Vec<JobResponse> = (0..240)
        .map(|n| stats_job(n, JobStatus::ALL[n as usize % JobStatus::ALL.len()], 3))
        .collect();
    store.upsert(&old).await.expect("old jobs");
    let hour = 3_600_000;
    let cutoff = Millis(BASE + 14 * hour);
    let time = |text: &Option<String>| text.as_deref().and_then(parse_client_time);
    let leaves = |job: &JobResponse| {
        job.status.is_terminal() && time(&job.completed_at).is_some_and(|at| at < cutoff)
    };
    let n_leaving = old.iter().filter(|job| leaves(job)).count();
    assert!(n_leaving > 20 && n_leaving < old.len() - 20, "{n_leaving}");

    // New jobs keep flowing while the purge runs: 200 jobs created now, in four batches.
    let flowing: Vec<JobResponse> = (1000..1200)
        .map(|n| {
            let mut job = stats_job(n, JobStatus::ALL[n as usize % JobStatus::ALL.len()], 1);
            job.created_at = Millis(BASE + 40 * hour + i64::from(n)).to_iso();
            job.started_at = None;
            job.completed_at = job
                .status
                .is_terminal()
                .then(|| Millis(BASE + 41 * hour).to_iso());
            job
        })
        .collect();
    let writer = {
        let store = store.clone();
        let flowing = flowing.clone();
        tokio::spawn(async move {
            for chunk in flowing.chunks(50) {
                store.upsert(chunk).await.expect("jobs flowing in");
                tokio::task::yield_now().await;
            }
        })
    };
    let mut n_purged = 0;
    loop {
        let purged = store.purge_finished(cutoff, 7).await.expect("purge");
        assert!(purged <= 7, "{purged} rows in a batch of 7");
        if purged == 0 {
            break;
        }
        n_purged += purged;
    }
    writer.await.expect("writer task");
    assert_eq!(n_purged, n_leaving as u64);

    for job in old.iter().chain(&flowing) {
        let stored = store.get(job.id).await.expect("get");
        if leaves(job) {
            assert_eq!(
                stored, None,
                "{} ({:?}) should have left",
                job.id, job.status
            );
        } else {
            assert_eq!(stored.as_ref(), Some(job), "{} should have stayed", job.id);
        }
    }
    // A job that left is answered 404 by id, and its tag no longer lists it.
    let tagged = list_ids(
        store,
        JobQuery {
            tag: Some("t".to_string()),
            ..page(0, 1000)
        },
    )
    .await;
    assert_eq!(tagged.len(), old.len() + flowing.len() - n_leaving);
    // Whole hours still count every job, those that left included.
    let everything: Vec<JobResponse> = old.iter().chain(&flowing).cloned().collect();
    for query in [
        StatsQuery::default(),
        StatsQuery {
            from: Some(Millis(BASE + 2 * hour)),
            to: Some(Millis(BASE + 12 * hour - 1)),
            job_type: Some(TYPES[2].to_string()),
        },
    ] {
        let answered = store.statistics(&query).await.expect("statistics");
        assert_eq!(
            answered,
            expected_statistics(&everything, &query),
            "{query:?}"
        );
    }
    // Nothing is left to purge, and a cutoff before everything purges nothing.
    assert_eq!(store.purge_finished(cutoff, 100).await.expect("purge"), 0);
    assert_eq!(
        store
            .purge_finished(Millis(BASE), 100)
            .await
            .expect("purge"),
        0
    );
}

/// Dead-letter groups and a group's ids agree with a count of the rows, on both backends.
async fn dead_letters_group_by_type_status_and_error(store: &Store) {
    let mut jobs = Vec::new();
    for n in 0..30 {
        let mut job = job(n, JobStatus::Failed, 1);
        job.error_message = Some(format!("error {}", n % 3));
        jobs.push(job);
    }
    let mut timed_out = job(30, JobStatus::Timeout, 1);
    timed_out.error_message = None;
    jobs.push(timed_out);
    jobs.push(job(31, JobStatus::Completed, 1));
    store.upsert(&jobs).await.expect("upsert");
    let groups = store.dead_letter_groups(200).await.expect("groups");
    let mut expected: BTreeMap<(String, String, Option<String>), u64> = BTreeMap::new();
    for job in jobs
        .iter()
        .filter(|job| matches!(job.status, JobStatus::Failed | JobStatus::Timeout))
    {
        *expected
            .entry((
                job.job_type.clone(),
                job.status.as_str().to_string(),
                job.error_message.clone(),
            ))
            .or_default() += 1;
    }
    let got: BTreeMap<(String, String, Option<String>), u64> = groups
        .iter()
        .map(|group| {
            (
                (
                    group.job_type.clone(),
                    group.status.as_str().to_string(),
                    group.error_message.clone(),
                ),
                group.count,
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(
        groups.windows(2).all(|pair| pair[0].count >= pair[1].count),
        "largest first: {groups:?}"
    );
    let group = &groups[0];
    let key = GroupKey {
        job_type: &group.job_type,
        status: group.status,
        error_message: group.error_message.as_deref(),
    };
    let ids = store.dead_letter_ids(&key, None, 1_000).await.expect("ids");
    assert_eq!(ids.len() as u64, group.count);
    for id in &ids {
        let job = store.get(*id).await.expect("get").expect("known");
        assert_eq!(job.job_type, group.job_type);
        assert_eq!(job.error_message, group.error_message);
    }
    let no_error = GroupKey {
        job_type: &jobs[30].job_type,
        status: JobStatus::Timeout,
        error_message: None,
    };
    let none = store
        .dead_letter_ids(&no_error, None, 1_000)
        .await
        .expect("ids without an error");
    assert_eq!(none, vec![jobs[30].id]);
    // A page at a time, by id: the pages make up the group, each id once.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store.dead_letter_ids(&key, after, 3).await.expect("ids");
        if page.is_empty() {
            break;
        }
        after = page.last().copied();
        paged.extend(page);
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(paged, sorted);
}

/// The timeline counts jobs created and ended per bucket and samples finished jobs' latencies.
async fn timeline_counts_per_bucket(store: &Store) {
    let jobs: Vec<JobResponse> = (0..40)
        .map(|n| {
            job(
                n,
                [
                    JobStatus::Completed,
                    JobStatus::Failed,
                    JobStatus::Queued,
                    JobStatus::Cancelled,
                ][n as usize % 4],
                1,
            )
        })
        .collect();
    store.upsert(&jobs).await.expect("upsert");
    let bucket_ms = 60_000;
    let timeline = store
        .timeline(Millis(BASE), bucket_ms, 1_000)
        .await
        .expect("timeline");
    let bucket_of =
        |at: &str| Millis(parse_client_time(at).expect("a time").0 / bucket_ms * bucket_ms);
    let mut expected: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
    for job in &jobs {
        expected.entry(bucket_of(&job.created_at).0).or_default().0 += 1;
        if let Some(at) = &job.completed_at {
            let entry = expected.entry(bucket_of(at).0).or_default();
            match job.status {
                JobStatus::Completed => entry.1 += 1,
                JobStatus::Failed | JobStatus::Timeout => entry.2 += 1,
                _ => {}
            }
        }
    }
    let got: BTreeMap<i64, (u64, u64, u64)> = timeline
        .buckets
        .iter()
        .map(|bucket| {
            (
                bucket.at.0,
                (bucket.submitted, bucket.completed, bucket.failed),
            )
        })
        .filter(|(_, counts)| *counts != (0, 0, 0))
        .collect();
    expected.retain(|_, counts| *counts != (0, 0, 0));
    assert_eq!(got, expected);
    let finished_after_start = jobs
        .iter()
        .filter(|job| job.completed_at.is_some() && job.started_at.is_some())
        .count();
    assert_eq!(timeline.execution_ms.len(), finished_after_start);
    let mut waiting: BTreeMap<Priority, u64> = BTreeMap::new();
    for job in jobs.iter().filter(|job| {
        matches!(
            job.status,
            JobStatus::Pending | JobStatus::Queued | JobStatus::Retrying
        )
    }) {
        *waiting.entry(job.priority).or_default() += 1;
    }
    assert!(!waiting.is_empty());
    assert_eq!(store.waiting_by_priority().await.expect("waiting"), waiting);
    assert!(timeline.queue_ms.windows(2).all(|pair| pair[0] <= pair[1]));
}

macro_rules! conformance_suite {
    ($open:path; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let Some((fixture, store)) = $open().await else {
                    return;
                };
                // The check runs in its own task, so that the store (and its pool) is dropped and
                // the fixture torn down even when the check panics.
                let outcome = tokio::spawn(async move { super::$check(&store).await }).await;
                super::Teardown::teardown(fixture).await;
                if let Err(error) = outcome {
                    std::panic::resume_unwind(error.into_panic());
                }
            }
        )+
    };
}

macro_rules! all_checks {
    ($open:path) => {
        conformance_suite!(
            $open;
            upsert_then_get,
            unknown_id_is_none,
            empty_upsert_is_noop,
            lower_or_equal_version_never_overwrites,
            highest_version_wins_within_one_batch,
            out_of_order_batches_converge,
            newer_snapshot_updates_filter_and_sort_columns,
            thousands_of_rows_in_one_upsert,
            versions_reports_known_ids_only,
            every_filter,
            paging_numbers_and_totals,
            every_sort_key_both_directions,
            changed_since_follows_event_seqs,
            statistics_agree_with_a_count_of_the_rows,
            dead_letters_group_by_type_status_and_error,
            timeline_counts_per_bucket,
            retention_removes_exactly_the_finished_jobs_older_than_the_window,
        );
    };
}

// ---------------------------------------------------------------------------------------------
// Backends.

/// A fresh SQLite file in a new tempdir; the tempdir lives as long as the returned guard.
async fn open_sqlite_file() -> (TempDir, Store) {
    let dir = TempDir::new().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let store = Store::open(&url).await.expect("open sqlite file");
    (dir, store)
}

async fn open_sqlite_memory() -> ((), Store) {
    (
        (),
        Store::open("sqlite::memory:").await.expect("open memory"),
    )
}

/// What a backend's opener keeps for the duration of one test, torn down after it.
trait Teardown {
    /// Releases what the test used (after its store is dropped).
    async fn teardown(self);
}

impl Teardown for TempDir {
    async fn teardown(self) {}
}

impl Teardown for () {
    async fn teardown(self) {}
}

async fn suite_sqlite_file() -> Option<(TempDir, Store)> {
    Some(open_sqlite_file().await)
}

async fn suite_sqlite_memory() -> Option<((), Store)> {
    Some(open_sqlite_memory().await)
}

/// Dropping the test database drops it on the server (with its connections).
impl Teardown for TestDatabase {
    async fn teardown(self) {}
}

/// A store on a fresh PostgreSQL database of its own, or `None` (with a line saying so) when
/// `DQ_TEST_DATABASE_URL` is unset, or the server is unreachable and `DQ_REQUIRE_SERVICES` is not
/// `1`.
async fn open_postgres() -> Option<(TestDatabase, Store)> {
    let database = TestDatabase::create("store conformance on PostgreSQL")?;
    match Store::open(database.url()).await {
        Ok(store) => Some((database, store)),
        Err(error) => panic!("open store on {}: {error}", database.url()),
    }
}

mod sqlite_file {
    all_checks!(super::suite_sqlite_file);
}

mod sqlite_memory {
    all_checks!(super::suite_sqlite_memory);
}

mod postgres {
    all_checks!(super::open_postgres);
}

// ---------------------------------------------------------------------------------------------
// SQLite specifics.

#[tokio::test]
async fn bare_path_reopens_with_data_kept() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("nested name.db");
    let path = path.to_str().expect("utf-8 path");
    let stored = job(1, JobStatus::Completed, 2);
    {
        let store = Store::open(path).await.expect("open bare path");
        store
            .upsert(std::slice::from_ref(&stored))
            .await
            .expect("upsert");
        let wal = format!("{path}-wal");
        assert!(std::path::Path::new(&wal).exists(), "WAL journal in use");
    }
    let reopened = Store::open(&format!("sqlite://{path}"))
        .await
        .expect("reopen by URL");
    assert_eq!(reopened.get(stored.id).await.expect("get"), Some(stored));
}

#[tokio::test]
async fn memory_databases_are_separate() {
    let (_, first) = open_sqlite_memory().await;
    let (_, second) = open_sqlite_memory().await;
    first
        .upsert(&[job(1, JobStatus::Queued, 1)])
        .await
        .expect("upsert");
    assert_eq!(second.get(id(1)).await.expect("get"), None);
    assert!(first.get(id(1)).await.expect("get").is_some());
}

#[tokio::test]
async fn bad_urls_are_refused() {
    for url in ["", "sqlite://", "sqlite://jobs.db?mode=bogus"] {
        let error = Store::open(url).await.expect_err(url);
        assert!(matches!(error, StoreError::BadUrl { .. }), "{url}: {error}");
    }
}

#[tokio::test]
async fn invalid_snapshot_stores_nothing() {
    let (_guard, store) = open_sqlite_file().await;
    let mut bad = job(2, JobStatus::Queued, 1);
    bad.created_at = "yesterday".to_owned();
    let error = store
        .upsert(&[job(1, JobStatus::Queued, 1), bad])
        .await
        .expect_err("bad created_at");
    assert!(
        matches!(error, StoreError::InvalidSnapshot { id: bad_id, .. } if bad_id == id(2)),
        "{error}"
    );
    assert_eq!(store.get(id(1)).await.expect("get"), None);

    let huge = job(3, JobStatus::Queued, u64::MAX);
    let error = store.upsert(&[huge]).await.expect_err("huge version");
    assert!(
        matches!(error, StoreError::InvalidSnapshot { .. }),
        "{error}"
    );
}
