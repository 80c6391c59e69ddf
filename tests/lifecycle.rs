//! Acceptance tests of the lifecycle (issue 3) against the real binary: retries with backoff,
//! the dead-letter view and `POST /retry`, execution timeouts, scheduling across a restart,
//! idempotency keys and progress.

mod common;

use std::time::Duration;

use common::*;
use distriqueue_core::time::parse_client_time;
use futures::StreamExt;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);

fn ts(line: &LedgerLine) -> i64 {
    parse_client_time(&line.ts).expect("ledger time").0
}

#[tokio::test(flavor = "multi_thread")]
async fn flaky_job_completes_after_two_retries_no_earlier_than_its_backoff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, ledger) = start_with_ledger(
        dir.path(),
        &["--retry-jitter", "none", "--retry-backoff-base-ms", "300"],
    );
    let client = http();
    let id = submit_ok(&client, &serve.gateway, &json!({"type": "flaky", "jobPriority": "HIGH", "maxRetries": 3, "payload": {"failTimes": 2}})).await;
    let job = wait_terminal(&client, &serve.gateway, &id, DEADLINE).await;
    assert_eq!(
        (
            job["jobStatus"].as_str(),
            job["retryCount"].as_u64(),
            job["attempt"].as_u64()
        ),
        (Some("COMPLETED"), Some(2), Some(3)),
        "{job}"
    );
    let lines: Vec<LedgerLine> = read_ledger(&ledger)
        .into_iter()
        .filter(|line| line.job_id == id)
        .collect();
    let time_of = |event: &str, attempt: u32| {
        lines
            .iter()
            .find(|line| line.event == event && line.attempt == attempt)
            .map(ts)
            .unwrap_or_else(|| panic!("{event} of attempt {attempt} in {lines:?}"))
    };
    // Backoff 300 ms then 600 ms, counted from the failure, which follows the handler's finish.
    assert!(
        time_of("start", 2) >= time_of("finish", 1) + 300,
        "{lines:?}"
    );
    assert!(
        time_of("start", 3) >= time_of("finish", 2) + 600,
        "{lines:?}"
    );
    let (_, attempts) = get(
        &client,
        &format!("{}/api/jobs/{id}/attempts", serve.gateway),
    )
    .await;
    let states: Vec<&str> = attempts["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter_map(|a| a["state"].as_str())
        .collect();
    assert_eq!(states, ["FAILED", "FAILED", "COMPLETED"], "{attempts}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_job_dead_letters_after_its_retries_and_retry_brings_it_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, ledger) = start_with_ledger(
        dir.path(),
        &["--retry-jitter", "none", "--retry-backoff-base-ms", "50"],
    );
    let client = http();
    let id = submit_ok(&client, &serve.gateway, &json!({"type": "flaky", "jobPriority": "HIGH", "maxRetries": 1, "payload": {"failTimes": 100}})).await;
    let job = wait_terminal(&client, &serve.gateway, &id, DEADLINE).await;
    assert_eq!(job["jobStatus"], "FAILED", "{job}");
    assert_eq!(
        (job["attempt"].as_u64(), job["retryCount"].as_u64()),
        (Some(2), Some(1)),
        "{job}"
    );
    assert!(
        job["errorMessage"]
            .as_str()
            .is_some_and(|message| message.contains("attempt 2")),
        "the second attempt's error: {job}"
    );
    let (_, dead) = get(
        &client,
        &format!("{}/api/jobs?jobStatus=FAILED", serve.gateway),
    )
    .await;
    assert_eq!(dead["content"][0]["id"], json!(id), "{dead}");

    let (status, retried) = post(&client, &format!("{}/api/jobs/{id}/retry", serve.gateway)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            retried["jobStatus"].as_str(),
            retried["attempt"].as_u64(),
            retried["retryCount"].as_u64()
        ),
        (Some("QUEUED"), Some(3), Some(0)),
        "{retried}"
    );
    let job = wait_terminal(&client, &serve.gateway, &id, DEADLINE).await;
    assert_eq!(
        (job["jobStatus"].as_str(), job["attempt"].as_u64()),
        (Some("FAILED"), Some(4)),
        "{job}"
    );
    let attempts: Vec<u32> = read_ledger(&ledger)
        .iter()
        .filter(|line| line.job_id == id && line.event == "start")
        .map(|line| line.attempt)
        .collect();
    assert_eq!(attempts, [1, 2, 3, 4]);

    // Only finished jobs can be retried; unknown ones are 404.
    let done = submit_ok(&client, &serve.gateway, &echo_job("LOW", 1)).await;
    wait_terminal(&client, &serve.gateway, &done, DEADLINE).await;
    let (status, _) = post(&client, &format!("{}/api/jobs/{done}/retry", serve.gateway)).await;
    assert_eq!(status, 409);
    let (status, _) = post(
        &client,
        &format!("{}/api/jobs/{}/retry", serve.gateway, uuid_like()),
    )
    .await;
    assert_eq!(status, 404);
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn long_job_past_its_execution_timeout_times_out_and_frees_its_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, ledger) = start_with_ledger(dir.path(), &["--concurrency", "1"]);
    let client = http();
    let id = submit_ok(&client, &serve.gateway, &json!({"type": "sleep", "jobPriority": "HIGH", "executionTimeout": 1, "maxRetries": 0, "payload": {"ms": 10_000}})).await;
    let next = submit_ok(&client, &serve.gateway, &echo_job("LOW", 1)).await;
    let job = wait_terminal(&client, &serve.gateway, &id, DEADLINE).await;
    assert_eq!(
        (job["jobStatus"].as_str(), job["errorMessage"].as_str()),
        (Some("TIMEOUT"), Some("execution timed out after 1 s")),
        "{job}"
    );
    // One slot: the next job runs only because the timed-out handler was stopped.
    assert_eq!(
        wait_terminal(&client, &serve.gateway, &next, DEADLINE).await["jobStatus"],
        "COMPLETED"
    );
    let sleeper: Vec<String> = read_ledger(&ledger)
        .into_iter()
        .filter(|line| line.job_id == id)
        .map(|line| line.event)
        .collect();
    assert_eq!(sleeper, ["start"], "the timed-out handler never finished");
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_job_starts_no_earlier_than_its_time_even_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut serve, ledger) = start_with_ledger(dir.path(), &[]);
    let client = http();
    let at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (status, job) = submit(
        &client,
        &serve.gateway,
        &json!({"type": "echo", "jobPriority": "HIGH", "scheduleAt": at_text}),
    )
    .await;
    assert_eq!(
        (status, job["jobStatus"].as_str()),
        (202, Some("PENDING")),
        "{job}"
    );
    let id = job["id"].as_str().expect("id").to_string();
    let delayed = submit_ok(
        &client,
        &serve.gateway,
        &json!({"type": "echo", "jobPriority": "HIGH", "delaySeconds": 2}),
    )
    .await;
    serve.terminate();
    let ledger_arg = ledger.to_str().expect("utf-8").to_string();
    let serve = Serve::start(&dir.path().join("data"), &["--ledger", &ledger_arg]);
    for job_id in [&id, &delayed] {
        assert_eq!(
            wait_terminal(&client, &serve.gateway, job_id, DEADLINE).await["jobStatus"],
            "COMPLETED"
        );
    }
    let start = read_ledger(&ledger)
        .into_iter()
        .find(|line| line.job_id == id && line.event == "start")
        .expect("started");
    assert!(
        ts(&start) >= at.timestamp_millis(),
        "started at {} before {at_text}",
        start.ts
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_idempotency_key_twice_makes_one_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &[]);
    let client = http();
    let body = json!({"type": "echo", "jobPriority": "LOW", "idempotencyKey": "order-42"});
    let (first_status, first) = submit(&client, &serve.gateway, &body).await;
    let (second_status, second) = submit(&client, &serve.gateway, &body).await;
    assert_eq!((first_status, second_status), (202, 200));
    assert_eq!(first["id"], second["id"]);
    let response = client
        .post(format!("{}/api/jobs", serve.gateway))
        .header("Idempotency-Key", "order-42")
        .json(&json!({"type": "echo", "jobPriority": "LOW"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 200);
    let third: Value = response.json().await.expect("json");
    assert_eq!(third["id"], first["id"]);
    let (_, page) = get(&client, &format!("{}/api/jobs", serve.gateway)).await;
    assert_eq!(page["page"]["totalElements"], 1, "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn handler_progress_is_stored_and_streamed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &[]);
    let client = http();
    let response = reqwest::Client::new()
        .get(format!("{}/api/jobs/stream?type=sleep", serve.gateway))
        .send()
        .await
        .expect("stream");
    let mut stream = response.bytes_stream();
    let id = submit_ok(&client, &serve.gateway, &sleep_job(800, "HIGH")).await;
    let mut text = String::new();
    let mut progress = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !text.contains("\"COMPLETED\"") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events")
            .expect("chunk")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    for line in text.lines().filter_map(|line| line.strip_prefix("data:")) {
        let update: Value = serde_json::from_str(line.trim()).expect("json");
        if update["jobId"] == json!(id) {
            if let Some(percent) = update["progress"].as_u64() {
                progress.push(percent);
            }
        }
    }
    assert!(
        progress.iter().any(|percent| (1..100).contains(percent)),
        "progress on the way: {progress:?}"
    );
    let (_, job) = get(&client, &format!("{}/api/jobs/{id}", serve.gateway)).await;
    assert_eq!(job["progress"], 100, "{job}");
}
