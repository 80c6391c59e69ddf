//! What the original system promised an operator (issue 10), through the real binary: batch
//! submission and statistics.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);

/// POST `body` to `url`; returns (status, body).
async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = client.post(url).json(body).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The orchestrator's last log index, once it stopped moving (nothing else commits meanwhile).
async fn quiet_last_log_index(client: &reqwest::Client, orchestrator: &str) -> u64 {
    let url = format!("{orchestrator}/api/raft/status");
    let mut last = u64::MAX;
    loop {
        let (_, status) = get(client, &url).await;
        let index = status["lastLogIndex"].as_u64().expect("lastLogIndex");
        if index == last {
            return index;
        }
        last = index;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `n` jobs read `status` in the gateway's list.
async fn wait_for_count(client: &reqwest::Client, gateway: &str, status: &str, n: u64) {
    let url = format!("{gateway}/api/jobs?jobStatus={status}&size=1");
    wait_until(DEADLINE, &format!("{n} {status} jobs"), || {
        let client = client.clone();
        let url = url.clone();
        async move { get(&client, &url).await.1["page"]["totalElements"] == n }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_a_thousand_jobs_commits_in_one_entry_and_every_job_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &[]);
    let client = http();
    let jobs: Vec<Value> = (0..1000)
        .map(|n| json!({"type": "echo", "jobPriority": "LOW", "delaySeconds": 2, "payload": {"n": n}}))
        .collect();
    let before = quiet_last_log_index(&client, &serve.orchestrator).await;
    let (status, answer) = post_json(
        &client,
        &format!("{}/api/jobs/batch", serve.gateway),
        &json!({"jobs": jobs, "batchName": "thousand"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        (
            answer["totalJobs"].as_u64(),
            answer["successful"].as_u64(),
            answer["failed"].as_u64()
        ),
        (Some(1000), Some(1000), Some(0)),
        "{answer}"
    );
    let ids: BTreeSet<&str> = answer["jobIds"]
        .as_array()
        .expect("jobIds")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(ids.len(), 1000, "one distinct id per job");
    // The jobs are PENDING for 2 s, so nothing else moves the log meanwhile: 1,000 registers
    // took one entry (and a watermark entry or two may follow), never one per job.
    let log_index = answer["logIndex"].as_u64().expect("logIndex");
    let after = quiet_last_log_index(&client, &serve.orchestrator).await;
    assert!(
        log_index > before,
        "the batch entry {log_index} follows {before}"
    );
    assert!(
        after - before <= 4,
        "the log grew by {} entries",
        after - before
    );
    // Every job of the batch runs.
    wait_for_count(&client, &serve.gateway, "COMPLETED", 1000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_reports_exactly_its_bad_items_by_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &[]);
    let client = http();
    let bad = [2usize, 5, 9];
    let jobs: Vec<Value> = (0..10)
        .map(|n| match n {
            2 => json!({"type": "", "jobPriority": "LOW"}),
            5 => json!({"type": "echo", "jobPriority": "URGENT"}),
            9 => json!({"type": "echo", "jobPriority": "LOW", "maxRetries": -1}),
            _ => echo_job("MEDIUM", n),
        })
        .collect();
    // The bare-array form of the contract.
    let url = format!("{}/api/jobs/batch", serve.gateway);
    let (status, answer) = post_json(&client, &url, &json!(jobs)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["successful"], 7, "{answer}");
    assert_eq!(answer["failed"], 3, "{answer}");
    let errors: BTreeMap<String, Value> =
        serde_json::from_value(answer["errors"].clone()).expect("errors by index");
    assert_eq!(
        errors.keys().cloned().collect::<Vec<_>>(),
        ["2", "5", "9"],
        "{answer}"
    );
    for index in bad {
        let violations = errors[&index.to_string()]["violations"]
            .as_object()
            .expect("the validation shape");
        assert!(
            violations
                .keys()
                .all(|field| field.starts_with(&format!("jobs[{index}]."))),
            "{violations:?}"
        );
        assert!(answer["jobIds"][index].is_null(), "{answer}");
    }
    for index in (0..10).filter(|index| !bad.contains(index)) {
        let id = answer["jobIds"][index]
            .as_str()
            .expect("an accepted job's id");
        let job = wait_terminal(&client, &serve.gateway, id, DEADLINE).await;
        assert_eq!(
            job["payload"]["n"], index,
            "ids are in request order: {job}"
        );
    }

    // None valid: 400 with every item's violations; too many: 400 naming the limit.
    let (status, answer) = post_json(&client, &url, &json!({"jobs": [{"type": ""}]})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["violations"]["jobs[0].type"].is_string(), "{answer}");
    let too_many: Vec<Value> = (0..1001).map(|n| echo_job("LOW", n)).collect();
    let (status, answer) = post_json(&client, &url, &json!({"jobs": too_many})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["violations"]["jobs"].is_string(), "{answer}");
}

/// Submits a known mix of jobs to the gateway at `gateway`, waits for the runnable ones to
/// finish, and checks `GET /api/jobs/statistics` against the test's own count.
async fn statistics_agree_with_what_was_submitted(gateway: &str) {
    let client = http();
    let mut submitted: Vec<(&str, &str, &str)> = Vec::new(); // (type, priority, final status)
    let mut runnable = Vec::new();
    for n in 0..12 {
        runnable.push(submit_ok(&client, gateway, &echo_job("LOW", n)).await);
        submitted.push(("echo", "LOW", "COMPLETED"));
    }
    for _ in 0..8 {
        let job = json!({"type": "calculate", "jobPriority": "HIGH", "payload": {"operation": "sum", "numbers": [1, 2]}});
        runnable.push(submit_ok(&client, gateway, &job).await);
        submitted.push(("calculate", "HIGH", "COMPLETED"));
    }
    for _ in 0..5 {
        let job = json!({"type": "calculate", "jobPriority": "MEDIUM", "payload": {"operation": "sum", "numbers": ["x"]}});
        runnable.push(submit_ok(&client, gateway, &job).await);
        submitted.push(("calculate", "MEDIUM", "FAILED"));
    }
    for _ in 0..4 {
        let job = json!({"type": "sleep", "jobPriority": "CRITICAL", "delaySeconds": 3600});
        submit_ok(&client, gateway, &job).await;
        submitted.push(("sleep", "CRITICAL", "PENDING"));
    }
    for id in &runnable {
        wait_terminal(&client, gateway, id, DEADLINE).await;
    }
    let count = |keep: &dyn Fn(&(&str, &str, &str)) -> bool| {
        submitted.iter().filter(|job| keep(job)).count() as u64
    };
    let (_, stats) = get(&client, &format!("{gateway}/api/jobs/statistics")).await;
    assert_eq!(stats["totalJobs"], submitted.len() as u64, "{stats}");
    for (field, status) in [
        ("completedJobs", "COMPLETED"),
        ("failedJobs", "FAILED"),
        ("pendingJobs", "PENDING"),
        ("runningJobs", "RUNNING"),
        ("queuedJobs", "QUEUED"),
        ("cancelledJobs", "CANCELLED"),
    ] {
        assert_eq!(
            stats[field],
            count(&|job| job.2 == status),
            "{field}: {stats}"
        );
    }
    for (job_type, n) in [("echo", 12), ("calculate", 13), ("sleep", 4)] {
        assert_eq!(stats["jobsByType"][job_type], n, "{stats}");
    }
    for priority in ["LOW", "MEDIUM", "HIGH", "CRITICAL"] {
        assert_eq!(
            stats["jobsByPriority"][priority],
            count(&|job| job.1 == priority),
            "{stats}"
        );
    }
    let by_worker: u64 = stats["jobsByWorker"]
        .as_object()
        .expect("jobsByWorker")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(
        by_worker,
        runnable.len() as u64,
        "every job that ran had a worker: {stats}"
    );
    let rate = stats["successRate"].as_f64().expect("successRate");
    assert!((rate - 100.0 * 20.0 / 25.0).abs() < 1e-9, "{stats}");
    assert!(
        stats["averageQueueTimeMs"]
            .as_f64()
            .is_some_and(|ms| ms >= 0.0),
        "{stats}"
    );

    // A type, and a range that holds none of them.
    let (_, stats) = get(
        &client,
        &format!("{gateway}/api/jobs/statistics?type=calculate"),
    )
    .await;
    assert_eq!(
        (stats["totalJobs"].as_u64(), stats["failedJobs"].as_u64()),
        (Some(13), Some(5)),
        "{stats}"
    );
    let url =
        format!("{gateway}/api/jobs/statistics?from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00");
    let (_, stats) = get(&client, &url).await;
    assert_eq!(stats["totalJobs"], 0, "{stats}");
    assert_eq!(
        stats["timeRangeStart"], "2000-01-01T00:00:00.000Z",
        "{stats}"
    );
    let (status, body) = get(&client, &format!("{gateway}/api/jobs/statistics?from=soon")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["violations"]["from"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn statistics_agree_with_the_tests_own_count_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &[]);
    statistics_agree_with_what_was_submitted(&serve.gateway).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn statistics_agree_with_the_tests_own_count_on_postgresql() {
    let Some(database) = distriqueue_testkit::TestDatabase::create("statistics_postgresql") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &["--database", database.url()]);
    statistics_agree_with_what_was_submitted(&serve.gateway).await;
}
