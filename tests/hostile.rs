//! Hostile input against `serve` (issue 11, acceptance): forged lease tokens, names with NUL or
//! past 255 bytes, a 20 MB result, numbers past any bound in a retry, a flood of new worker
//! ids, idempotent repeats of a large job, slow-loris connections and a foreign `Host`. Each is
//! refused (or absorbed) without changing anything, and a normal job submitted after it still
//! completes.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(120);

/// POSTs `body` as JSON to `url`; returns (status, body).
async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let response = client.post(url).json(body).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A normal job still runs to COMPLETED after `what`.
async fn normal_job_completes(client: &reqwest::Client, gateway: &str, what: &str) {
    let id = submit_ok(client, gateway, &echo_job("HIGH", 1)).await;
    let job = wait_terminal(client, gateway, &id, DEADLINE).await;
    assert_eq!(job["jobStatus"], "COMPLETED", "after {what}: {job}");
}

/// The orchestrator's last log index.
async fn last_log_index(client: &reqwest::Client, orchestrator: &str) -> u64 {
    let (status, raft) = get(client, &format!("{orchestrator}/api/raft/status")).await;
    assert_eq!(status, 200, "{raft}");
    raft["lastLogIndex"].as_u64().expect("lastLogIndex")
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_lease_tokens_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, ledger) = start_with_ledger(dir.path(), &["--concurrency", "1"]);
    let client = http();
    let (gateway, orchestrator) = (&serve.gateway, &serve.orchestrator);
    // The one slot is busy: the next job waits QUEUED with a lease token only its message holds.
    let blocker = submit_ok(&client, gateway, &sleep_job(60_000, "CRITICAL")).await;
    wait_started(&ledger, &blocker).await;
    let waiting = submit_ok(&client, gateway, &echo_job("LOW", 7)).await;
    let forged = "0123456789abcdef0123456789abcdef";
    for report in [
        json!({"jobId": waiting, "workerId": "intruder", "status": "running", "attempt": 1, "lease": forged}),
        json!({"jobId": waiting, "workerId": "intruder", "status": "running", "attempt": 1}),
        json!({"jobId": waiting, "workerId": "intruder", "status": "completed", "attempt": 1, "lease": forged, "result": {"forged": true}}),
    ] {
        let (status, answer) =
            post_json(&client, &format!("{orchestrator}/api/jobs/status"), &report).await;
        assert_eq!(status, 409, "{report}: {answer}");
        assert_eq!(answer["refusal"]["WrongLease"]["attempt"], 1, "{answer}");
    }
    let (_, job) = get(&client, &format!("{gateway}/api/jobs/{waiting}")).await;
    assert_eq!(job["jobStatus"], "QUEUED", "{job}");
    assert!(job.get("workerId").is_none(), "{job}");
    // Freed, the slot runs the waiting job under its real token.
    let (status, _) = post(&client, &format!("{gateway}/api/jobs/{blocker}/cancel")).await;
    assert_eq!(status, 200);
    let job = wait_terminal(&client, gateway, &waiting, DEADLINE).await;
    assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    assert_eq!(job["result"]["echo"]["n"], 7, "{job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_inputs_are_refused_and_normal_jobs_still_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let client = http();
    let (gateway, orchestrator) = (&serve.gateway, &serve.orchestrator);

    // Names with NUL or control characters never reach the read model (SQLite or PostgreSQL).
    for body in [
        json!({"type": "echo\u{0}", "jobPriority": "HIGH"}),
        json!({"type": "echo", "jobPriority": "HIGH", "tags": ["a\u{0}b"]}),
        json!({"type": "echo", "jobPriority": "HIGH", "metadata": {"k\n": "v"}}),
        json!({"type": "echo", "jobPriority": "HIGH", "idempotencyKey": "k\u{1b}[31m"}),
    ] {
        let (status, answer) = submit(&client, gateway, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "Validation failed", "{answer}");
    }
    let (status, answer) = post_json(
        &client,
        &format!("{orchestrator}/api/jobs/register"),
        &json!({"type": "echo\u{0}", "jobPriority": "HIGH"}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    normal_job_completes(&client, gateway, "names with NUL").await;

    // A 300-byte worker id: it could not be a routing key.
    let long_id = "w".repeat(300);
    let (status, answer) = post_json(
        &client,
        &format!("{orchestrator}/api/workers/heartbeat"),
        &json!({"worker_id": long_id, "worker_type": "x", "capacity": 1}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let target = submit_ok(
        &client,
        gateway,
        &json!({"type": "nothing-handles-this", "jobPriority": "LOW", "maxRetries": 0}),
    )
    .await;
    let (status, answer) = post_json(
        &client,
        &format!("{orchestrator}/api/jobs/status"),
        &json!({"jobId": target, "workerId": long_id, "status": "running"}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    normal_job_completes(&client, gateway, "a 300-byte worker id").await;

    // A 20 MB result: over the body limit of a report, and over the result bound in a batch.
    let huge = "x".repeat(20 * 1024 * 1024);
    // The server answers 413 from the declared length and closes; the client may still be
    // writing then, and see the connection closed instead of the answer.
    let sent = client
        .post(format!("{orchestrator}/api/jobs/status"))
        .json(&json!({"jobId": target, "workerId": "w", "status": "completed", "result": {"blob": huge}}))
        .send()
        .await;
    match sent {
        Ok(response) => assert_eq!(response.status().as_u16(), 413),
        Err(error) => assert!(error.is_request(), "{error}"),
    }
    let (status, answer) = post_json(
        &client,
        &format!("{orchestrator}/api/jobs/status/batch"),
        &json!({"reports": [{"job_id": target, "attempt": 1, "worker_id": "w", "kind": {"Completed": {"result": {"blob": huge}}}}]}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap_or("").contains("result"),
        "{answer}"
    );
    drop(huge);
    normal_job_completes(&client, gateway, "a 20 MB result").await;

    // A retry whose attempt or version is past any bound.
    let failed = wait_terminal(&client, gateway, &target, DEADLINE).await;
    assert_eq!(failed["jobStatus"], "FAILED", "{failed}");
    let url = format!("{orchestrator}/api/jobs/{target}/retry");
    let mut body = failed.clone();
    body["attempt"] = serde_json::from_str("18446744073709551616").expect("2^64");
    let (status, answer) = post_json(&client, &url, &body).await;
    assert_eq!(status, 400, "{answer}");
    let mut body = failed.clone();
    body["version"] = json!(u64::MAX);
    let (status, answer) = post_json(&client, &url, &body).await;
    assert_eq!(status, 400, "{answer}");
    let (_, still) = get(&client, &format!("{gateway}/api/jobs/{target}")).await;
    assert_eq!(still["jobStatus"], "FAILED", "{still}");
    normal_job_completes(&client, gateway, "a retry with 2^64").await;

    // 10,000 heartbeats under new worker ids: the leader keeps at most its cap of them.
    let answers: Vec<u16> = futures::stream::iter(0..10_000)
        .map(|n| {
            let client = client.clone();
            let url = format!("{orchestrator}/api/workers/heartbeat");
            async move {
                let body =
                    json!({"worker_id": format!("flood-{n}"), "worker_type": "x", "capacity": 1});
                client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .map(|response| response.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let refused = answers.iter().filter(|status| **status == 429).count();
    assert!(
        answers.iter().all(|status| [200, 429].contains(status)),
        "{:?}",
        answers
            .iter()
            .filter(|status| ![200, 429].contains(*status))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(refused >= 10_000 - 4096, "only {refused} refused");
    normal_job_completes(&client, gateway, "10,000 new worker ids").await;

    // 1,000 repeats of a ~1 MB job under one idempotency key: answered before the Raft log.
    let big = json!({"type": "echo", "jobPriority": "LOW", "idempotencyKey": "big-once", "payload": {"blob": "y".repeat(1_000_000)}});
    let first = submit_ok(&client, gateway, &big).await;
    let before = last_log_index(&client, orchestrator).await;
    let repeats: Vec<(u16, Value)> = futures::stream::iter(0..1_000)
        .map(|_| {
            let (client, big) = (client.clone(), big.clone());
            let gateway = gateway.clone();
            async move { submit(&client, &gateway, &big).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (status, job) in &repeats {
        assert!([200, 202].contains(status), "{status}: {job}");
        assert_eq!(job["id"].as_str(), Some(first.as_str()), "{job}");
    }
    let after = last_log_index(&client, orchestrator).await;
    // Events and heartbeats' bookkeeping may add a few entries; 1,000 registers would add 1,000.
    assert!(
        after - before < 100,
        "the log grew from {before} to {after}"
    );
    normal_job_completes(&client, gateway, "1,000 idempotent repeats").await;

    // 200 slow-loris connections hold nothing up, and are cut off after the header timeout.
    let address = gateway.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        stream
            .write_all(b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .expect("write");
        slow.push(stream);
    }
    normal_job_completes(&client, gateway, "200 slow-loris connections").await;
    let mut cut_off = 0;
    for mut stream in slow {
        let mut buffer = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buffer)).await;
        // Closed (EOF or reset) or answered with an error, never left hanging.
        if matches!(read, Ok(Ok(0)) | Ok(Err(_))) || matches!(read, Ok(Ok(n)) if n > 0) {
            cut_off += 1;
        }
    }
    assert_eq!(cut_off, 200);

    // A page on another site that rebinds its name to 127.0.0.1 is refused.
    let response = client
        .get(format!("{gateway}/api/jobs"))
        .header("Host", "evil.example")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status().as_u16(), 421);
    // A cross-site form post is not JSON.
    let response = client
        .post(format!("{gateway}/api/jobs"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("type=echo&jobPriority=HIGH")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 415);
    normal_job_completes(&client, gateway, "everything above").await;
}
