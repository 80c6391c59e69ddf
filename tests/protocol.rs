//! The HTTP worker protocol against `serve` (CONTRACT.md, "Orchestrator"): a worker written for
//! the original system registers, reports with aliases and no attempt, heartbeats, and learns
//! its cancels from the heartbeat reply; the lease fences the in-process worker out.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: &Value,
) -> (u16, Value) {
    let response = client
        .request(method, url)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_original_http_worker_registers_reports_heartbeats_and_learns_its_cancels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, ledger) = start_with_ledger(dir.path(), &["--concurrency", "1"]);
    let client = http();
    let orchestrator = &serve.orchestrator;
    // Keep the one in-process slot busy so the HTTP worker gets to the jobs first.
    let blocker = submit_ok(&client, &serve.gateway, &sleep_job(60_000, "CRITICAL")).await;
    wait_started(&ledger, &blocker).await;

    let id = "4b3c2a10-0000-4000-8000-00000000000a";
    let register = json!({"id": id, "type": "echo", "priority": 10, "payload": {"n": 1}, "timeout": 60, "maxRetries": 0});
    let (status, answer) = send(
        &client,
        reqwest::Method::POST,
        &format!("{orchestrator}/api/jobs/register"),
        &register,
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_str(), answer["job_id"].as_str()),
        (202, Some("accepted"), Some(id)),
        "{answer}"
    );
    assert_eq!(answer["job"]["jobPriority"], "HIGH");
    assert_eq!(answer["job"]["executionTimeout"], 60);
    let (status, again) = send(
        &client,
        reqwest::Method::POST,
        &format!("{orchestrator}/api/jobs/register"),
        &register,
    )
    .await;
    assert_eq!(
        (status, again["job"]["version"].as_u64()),
        (202, Some(1)),
        "registering again changes nothing: {again}"
    );

    let heartbeat = json!({"worker_id": "py-1", "worker_type": "python", "capacity": 2, "current_load": 0, "total_jobs_processed": 0, "successful_jobs": 0, "failed_jobs": 0, "timestamp": 1});
    let (status, reply) = send(
        &client,
        reqwest::Method::POST,
        &format!("{orchestrator}/api/workers/heartbeat"),
        &heartbeat,
    )
    .await;
    assert_eq!(
        (
            status,
            reply["status"].as_str(),
            reply["cancel"].as_array().map(Vec::len)
        ),
        (200, Some("acknowledged"), Some(0)),
        "{reply}"
    );

    // Reports without an attempt, with the original field names and status spellings.
    let status_url = format!("{orchestrator}/api/jobs/status");
    let (status, answer) = send(
        &client,
        reqwest::Method::POST,
        &status_url,
        &json!({"job_id": id, "status": "RUNNING", "worker_id": "py-1"}),
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("updated")),
        "{answer}"
    );
    let (status, _) = send(
        &client,
        reqwest::Method::POST,
        &status_url,
        &json!({"jobId": id, "status": "running", "workerId": "py-2"}),
    )
    .await;
    assert_eq!(status, 409, "another worker cannot take the lease");
    let (status, _) = send(
        &client,
        reqwest::Method::PUT,
        &format!("{orchestrator}/api/jobs/{id}/status"),
        &json!({"status": "running", "workerId": "py-1", "progress": 50}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &client,
        reqwest::Method::POST,
        &format!("{orchestrator}/api/jobs/{id}/status"),
        &json!({"status": "Completed", "workerId": "py-1", "result": {"ok": true}}),
    )
    .await;
    assert_eq!(status, 200);
    let job = wait_terminal(&client, &serve.gateway, id, DEADLINE).await;
    assert_eq!(
        (
            job["jobStatus"].as_str(),
            job["workerId"].as_str(),
            &job["result"]
        ),
        (Some("COMPLETED"), Some("py-1"), &json!({"ok": true})),
        "{job}"
    );
    let (status, _) = send(
        &client,
        reqwest::Method::POST,
        &status_url,
        &json!({"jobId": id, "status": "failed", "workerId": "py-1", "errorMessage": "late"}),
    )
    .await;
    assert_eq!(status, 409, "a terminal state is final");

    // A cancel of a job running at an HTTP worker reaches it through the heartbeat reply.
    let second = submit_ok(&client, &serve.gateway, &echo_job("HIGH", 2)).await;
    let (status, _) = send(
        &client,
        reqwest::Method::POST,
        &status_url,
        &json!({"jobId": second, "status": "running", "workerId": "py-1"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &client,
        &format!("{}/api/jobs/{second}/cancel", serve.gateway),
    )
    .await;
    assert_eq!(status, 200);
    let (_, reply) = send(
        &client,
        reqwest::Method::POST,
        &format!("{orchestrator}/api/workers/heartbeat"),
        &json!({"workerId": "py-1", "capacity": 2, "currentLoad": 1}),
    )
    .await;
    assert_eq!(reply["cancel"], json!([second]), "{reply}");

    // Bad reports are 400 or 404 in the contract's shape.
    for (body, expected) in [
        (json!({"status": "running", "workerId": "py-1"}), 400),
        (
            json!({"jobId": id, "status": "sideways", "workerId": "py-1"}),
            400,
        ),
        (
            json!({"jobId": "00000000-0000-4000-8000-000000000000", "status": "running", "workerId": "py-1"}),
            404,
        ),
    ] {
        let (status, answer) = send(&client, reqwest::Method::POST, &status_url, &body).await;
        assert_eq!(status, expected, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }

    // When the in-process slot frees up, its copies of these jobs are refused by the lease
    // and never run there.
    let (status, _) = post(
        &client,
        &format!("{}/api/jobs/{blocker}/cancel", serve.gateway),
    )
    .await;
    assert_eq!(status, 200);
    let after = submit_ok(&client, &serve.gateway, &echo_job("LOW", 3)).await;
    wait_terminal(&client, &serve.gateway, &after, DEADLINE).await;
    let starts = starts_per_job(&ledger);
    assert!(
        !starts.contains_key(id) && !starts.contains_key(&second),
        "{starts:?}"
    );
}
