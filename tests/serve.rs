//! Acceptance tests of `distriqueue serve` (issue 2): the real binary, driven over HTTP.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);

/// True when every field of `expected` is in `actual` with an equal value (numbers compared as
/// f64, objects recursively).
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected
            .iter()
            .all(|(key, value)| actual.get(key).is_some_and(|found| contains(found, value))),
        (Value::Array(actual), Value::Array(expected)) => {
            actual.len() == expected.len()
                && actual.iter().zip(expected).all(|(a, e)| contains(a, e))
        }
        (Value::Number(actual), Value::Number(expected)) => {
            (actual.as_f64().unwrap_or(f64::NAN) - expected.as_f64().unwrap_or(f64::NAN)).abs()
                < 1e-9
        }
        _ => actual == expected,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_submit_example_completes_with_sum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &[]);
    let client = http();
    let id = submit_ok(
        &client,
        &serve.gateway,
        &json!({"type": "calculate", "jobPriority": "HIGH", "payload": {"operation": "sum", "numbers": [1, 2, 3, 4, 5]}}),
    )
    .await;
    let job = wait_terminal(&client, &serve.gateway, &id, DEADLINE).await;
    assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    assert_eq!(job["result"]["sum"], 15, "{job}");
    assert_eq!(job["result"]["count"], 5, "{job}");
    assert!(
        job["workerId"]
            .as_str()
            .is_some_and(|worker| !worker.is_empty()),
        "{job}"
    );
    assert!(
        job["queue_time_ms"].is_i64() && job["execution_time_ms"].is_i64(),
        "{job}"
    );
    assert!(
        job["created_at"]
            .as_str()
            .is_some_and(|time| time.ends_with('Z')),
        "{job}"
    );
}

/// (request, expected status, expected result subset or error fragment) for every handler, alias
/// and priority spelling; one in ten has a bad payload.
fn mixed_cases() -> Vec<(Value, &'static str, Value)> {
    let good = [
        (
            json!({"type": "calculate", "payload": {"operation": "sum", "numbers": [1, 2, 3, 4, 5]}}),
            json!({"sum": 15, "count": 5}),
        ),
        (
            json!({"type": "sum", "payload": {"numbers": [2, 3]}}),
            json!({"sum": 5, "count": 2}),
        ),
        (
            json!({"type": "average", "payload": {"numbers": [2, 4]}}),
            json!({"average": 3.0, "count": 2}),
        ),
        (
            json!({"type": "min", "payload": {"numbers": [7, -1, 3]}}),
            json!({"min": -1, "count": 3}),
        ),
        (
            json!({"type": "max", "payload": {"numbers": [7, -1, 3]}}),
            json!({"max": 7, "count": 3}),
        ),
        (
            json!({"type": "sort", "payload": {"numbers": [3, 1, 2]}}),
            json!({"sorted": [1, 2, 3], "count": 3}),
        ),
        (
            json!({"type": "aggregate", "payload": {"numbers": [1, 3]}}),
            json!({"sum": 4, "average": 2.0, "min": 1, "max": 3, "count": 2}),
        ),
        (
            json!({"type": "statistics", "payload": {"numbers": [1, 2, 3]}}),
            json!({"mean": 2.0, "median": 2.0, "stdev": 1.0, "variance": 1.0, "count": 3}),
        ),
        (
            json!({"type": "stddev", "payload": {"numbers": [5]}}),
            json!({"mean": 5.0, "stddev": 0.0, "variance": 0.0, "count": 1}),
        ),
        (
            json!({"type": "transform", "payload": {"operation": "uppercase", "data": {"a": "b"}}}),
            json!({"transformed": {"A": "B"}, "operation": "uppercase"}),
        ),
        (
            json!({"type": "lowercase", "payload": {"data": {"A": "B"}}}),
            json!({"transformed": {"a": "b"}}),
        ),
        (
            json!({"type": "reverse", "payload": {"data": {"ab": "cd"}}}),
            json!({"transformed": {"ba": "dc"}}),
        ),
        (
            json!({"type": "filter", "payload": {"data": {"x": 1, "y": -1}}}),
            json!({"filtered": {"x": 1}, "original_count": 2, "filtered_count": 1}),
        ),
        (
            json!({"type": "normalize", "payload": {"data": {"a": 0, "b": 10, "c": 5}}}),
            json!({"normalized": {"a": 0.0, "b": 1.0, "c": 0.5}, "min": 0, "max": 10}),
        ),
        (
            json!({"type": "validate", "payload": {"type": "email", "value": "a@b.io"}}),
            json!({"valid": true, "type": "email"}),
        ),
        (
            json!({"type": "email", "payload": {"value": "not-an-email"}}),
            json!({"valid": false}),
        ),
        (
            json!({"type": "phone", "payload": {"value": "+1 (555) 123-4567"}}),
            json!({"valid": true}),
        ),
        (
            json!({"type": "numeric", "payload": {"value": "3.5"}}),
            json!({"valid": true}),
        ),
        (
            json!({"type": "required", "payload": {"value": "  "}}),
            json!({"valid": false}),
        ),
        (
            json!({"type": "range", "payload": {"value": 50}}),
            json!({"valid": true, "min": 0, "max": 100}),
        ),
        (
            json!({"type": "length", "payload": {"value": "abc", "min_length": 5}}),
            json!({"valid": false}),
        ),
        (
            json!({"type": "regex", "payload": {"value": "abc", "pattern": "a.c"}}),
            json!({"valid": true}),
        ),
        (json!({"type": "sleep", "payload": {"ms": 5}}), json!({})),
        (
            json!({"type": "echo", "payload": {"hello": "world"}}),
            json!({"echo": {"hello": "world"}}),
        ),
    ];
    let bad = [
        (
            json!({"type": "calculate", "payload": {"operation": "sum", "numbers": ["x"]}}),
            "number",
        ),
        (json!({"type": "sum", "payload": {}}), "numbers"),
        (
            json!({"type": "no-such-type", "payload": {}}),
            "No handler for job type 'no-such-type'",
        ),
        (
            json!({"type": "regex", "payload": {"value": "abc"}}),
            "pattern",
        ),
        (
            json!({"type": "transform", "payload": {"operation": "uppercase"}}),
            "data",
        ),
    ];
    let priorities = [
        json!("LOW"),
        json!("MEDIUM"),
        json!("HIGH"),
        json!("CRITICAL"),
        json!("low"),
        json!(10),
        json!(15),
        json!("Medium"),
    ];
    (0..1000)
        .map(|n| {
            let priority = priorities[n % priorities.len()].clone();
            if n % 10 == 9 {
                let (mut request, fragment) = bad[(n / 10) % bad.len()].clone();
                request["jobPriority"] = priority;
                (request, "FAILED", json!(fragment))
            } else {
                let (mut request, result) = good[n % good.len()].clone();
                request["jobPriority"] = priority;
                (request, "COMPLETED", result)
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn thousand_mixed_jobs_from_sixteen_clients_reach_their_expected_outcome_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.jsonl");
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--ledger", ledger.to_str().expect("utf-8 path")],
    );
    let cases = mixed_cases();
    let client = http();
    let mut submitted: Vec<(String, usize)> = Vec::new();
    let mut tasks = Vec::new();
    for client_index in 0..16 {
        let client = client.clone();
        let gateway = serve.gateway.clone();
        let mine: Vec<(usize, Value)> = cases
            .iter()
            .enumerate()
            .filter(|(n, _)| n % 16 == client_index)
            .map(|(n, case)| (n, case.0.clone()))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for (n, request) in mine {
                ids.push((submit_ok(&client, &gateway, &request).await, n));
            }
            ids
        }));
    }
    for task in tasks {
        submitted.extend(task.await.expect("client task"));
    }
    assert_eq!(submitted.len(), 1000);
    for (id, n) in &submitted {
        let (request, expected_status, expected) = &cases[*n];
        let job = wait_terminal(&client, &serve.gateway, id, DEADLINE).await;
        assert_eq!(job["jobStatus"], *expected_status, "{request} -> {job}");
        if *expected_status == "COMPLETED" {
            assert!(
                contains(&job["result"], expected),
                "{request}: expected {expected} in {job}"
            );
        } else {
            let message = job["errorMessage"].as_str().unwrap_or("");
            let fragment = expected.as_str().unwrap_or("");
            assert!(
                message.contains(fragment),
                "{request}: errorMessage {message:?} lacks {fragment:?}"
            );
        }
    }
    let starts = starts_per_job(&ledger);
    for (id, _) in &submitted {
        assert_eq!(
            starts.get(id),
            Some(&1),
            "job {id} started {:?} times",
            starts.get(id)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn high_jobs_queued_after_low_ones_start_first_when_slots_are_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, ledger) = start_with_ledger(dir.path(), &["--concurrency", "1"]);
    let client = http();
    let blocker = submit_ok(&client, &serve.gateway, &sleep_job(3_000, "LOW")).await;
    wait_started(&ledger, &blocker).await;
    let mut low = Vec::new();
    for n in 0..5 {
        low.push(submit_ok(&client, &serve.gateway, &echo_job("LOW", n)).await);
    }
    let mut high = Vec::new();
    for n in 0..5 {
        high.push(submit_ok(&client, &serve.gateway, &echo_job("HIGH", n)).await);
    }
    for id in low.iter().chain(&high) {
        wait_terminal(&client, &serve.gateway, id, DEADLINE).await;
    }
    let order: Vec<String> = read_ledger(&ledger)
        .into_iter()
        .filter(|line| line.event == "start")
        .map(|line| line.job_id)
        .collect();
    let position = |id: &String| {
        order
            .iter()
            .position(|started| started == id)
            .expect("started")
    };
    let last_high = high.iter().map(position).max().expect("high jobs");
    let first_low = low.iter().map(position).min().expect("low jobs");
    assert!(
        last_high < first_low,
        "start order {order:?}: high {high:?} low {low:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_minus_nine_then_restart_completes_every_accepted_job_without_rerunning_finished_ones()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ledger = dir.path().join("ledger.jsonl");
    let ledger_arg = ledger.to_str().expect("utf-8").to_string();
    let mut serve = Serve::start(&data, &["--concurrency", "1", "--ledger", &ledger_arg]);
    let client = http();

    let mut finished_before = Vec::new();
    for n in 0..20 {
        finished_before.push(submit_ok(&client, &serve.gateway, &echo_job("MEDIUM", n)).await);
    }
    for id in &finished_before {
        let job = wait_terminal(&client, &serve.gateway, id, DEADLINE).await;
        assert_eq!(job["jobStatus"], "COMPLETED");
    }
    let blocker = submit_ok(&client, &serve.gateway, &sleep_job(60_000, "CRITICAL")).await;
    let mut held_back = Vec::new();
    for n in 0..500 {
        held_back.push(
            submit_ok(
                &client,
                &serve.gateway,
                &echo_job(["LOW", "MEDIUM", "HIGH"][n % 3], n),
            )
            .await,
        );
    }
    serve.kill();

    let serve = Serve::start(&data, &["--concurrency", "4", "--ledger", &ledger_arg]);
    for id in &held_back {
        let job = wait_terminal(&client, &serve.gateway, id, DEADLINE).await;
        assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    }
    // The blocker's attempt died with the process ("worker lost"): after its backoff it runs
    // again as attempt 2 (only that is checked, not its completion a minute later).
    let blocker_url = format!("{}/api/jobs/{blocker}", serve.gateway);
    wait_until(DEADLINE, "the blocker's second attempt", || {
        let client = client.clone();
        let url = blocker_url.clone();
        async move { get(&client, &url).await.1["attempt"].as_u64() >= Some(2) }
    })
    .await;
    let (_, blocker_job) = get(&client, &blocker_url).await;
    assert_eq!(blocker_job["attempts"][0]["state"], "LOST", "{blocker_job}");
    assert_eq!(blocker_job["retryCount"], 1, "{blocker_job}");

    let starts = starts_per_job(&ledger);
    for id in &finished_before {
        assert_eq!(starts.get(id), Some(&1), "finished job {id} ran again");
    }
    for id in &held_back {
        assert_eq!(starts.get(id), Some(&1), "held-back job {id}");
    }

    // Every job's final state in the read model matches the orchestrator's.
    let (_, live) = get(
        &client,
        &format!("{}/api/jobs?limit=1000", serve.orchestrator),
    )
    .await;
    let orchestrator_states: HashMap<String, String> = live["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| {
            (
                job["id"].as_str().unwrap_or("").to_string(),
                job["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for id in finished_before.iter().chain(&held_back) {
        let (_, job) = get(&client, &format!("{}/api/jobs/{id}", serve.gateway)).await;
        assert_eq!(
            Some(&job["jobStatus"].as_str().unwrap_or("").to_string()),
            orchestrator_states.get(id),
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelled_queued_job_never_runs_and_cancel_of_completed_job_conflicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, ledger) = start_with_ledger(dir.path(), &["--concurrency", "1"]);
    let client = http();
    let blocker = submit_ok(&client, &serve.gateway, &sleep_job(3_000, "HIGH")).await;
    let victim = submit_ok(&client, &serve.gateway, &echo_job("LOW", 1)).await;
    let (status, cancelled) = post(
        &client,
        &format!("{}/api/jobs/{victim}/cancel", serve.gateway),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["jobStatus"], "CANCELLED");

    let after = submit_ok(&client, &serve.gateway, &echo_job("LOW", 2)).await;
    let completed = wait_terminal(&client, &serve.gateway, &after, DEADLINE).await;
    assert_eq!(completed["jobStatus"], "COMPLETED");
    wait_terminal(&client, &serve.gateway, &blocker, DEADLINE).await;
    let (_, job) = get(&client, &format!("{}/api/jobs/{victim}", serve.gateway)).await;
    assert_eq!(job["jobStatus"], "CANCELLED");
    assert!(
        !starts_per_job(&ledger).contains_key(&victim),
        "a cancelled job ran"
    );

    let (status, body) = post(
        &client,
        &format!("{}/api/jobs/{after}/cancel", serve.gateway),
    )
    .await;
    assert_eq!(status, 409);
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_contract_errors_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &[]);
    let client = http();
    let jobs = format!("{}/api/jobs", serve.gateway);
    let bodies: Vec<(&str, String, u16)> = vec![
        ("no type", json!({"jobPriority": "HIGH"}).to_string(), 400),
        (
            "unknown priority",
            json!({"type": "echo", "jobPriority": "URGENT"}).to_string(),
            400,
        ),
        (
            "payload not an object",
            json!({"type": "echo", "jobPriority": "HIGH", "payload": [1, 2]}).to_string(),
            400,
        ),
        ("malformed JSON", "{\"type\": \"echo\",".to_string(), 400),
        (
            "10 MB body",
            format!(
                "{{\"type\":\"echo\",\"jobPriority\":\"LOW\",\"payload\":{{\"x\":\"{}\"}}}}",
                "a".repeat(10 * 1024 * 1024)
            ),
            413,
        ),
        (
            "later field",
            json!({"type": "echo", "jobPriority": "HIGH", "callbackUrl": "http://example.test/hook"}).to_string(),
            400,
        ),
    ];
    for (case, body, expected) in bodies {
        let response = client
            .post(&jobs)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status().as_u16(), expected, "{case}");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(body["error"].is_string(), "{case}: {body}");
    }
    for query in [
        "sortBy=banana",
        "size=1000",
        "size=0",
        "page=-1",
        "jobStatus=WHATEVER",
        "createdFrom=yesterday",
    ] {
        let (status, body) = get(&client, &format!("{jobs}?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].is_string(), "{query}: {body}");
    }
    let (status, body) = get(&client, &format!("{jobs}/not-a-uuid")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("Job not found: not-a-uuid"))
    );
    let (status, page) = get(&client, &jobs).await;
    assert_eq!(status, 200);
    assert_eq!(
        page["page"]["totalElements"], 0,
        "bad input stored something: {page}"
    );
    let (_, live) = get(&client, &format!("{}/api/jobs", serve.orchestrator)).await;
    assert_eq!(
        live["count"], 0,
        "bad input reached the orchestrator: {live}"
    );

    // The orchestrator API answers in the same JSON error shape.
    for (url, expected) in [
        (format!("{}/api/jobs?limit=-1", serve.orchestrator), 400),
        (format!("{}/api/jobs?status=nope", serve.orchestrator), 400),
        (format!("{}/api/jobs/abc/cancel", serve.orchestrator), 405),
        (format!("{}/api/nothing", serve.orchestrator), 404),
    ] {
        let (status, body) = get(&client, &url).await;
        assert_eq!(status, expected, "{url}: {body}");
        assert!(body["error"].is_string(), "{url}: {body}");
    }
    let (status, _) = post(
        &client,
        &format!("{}/api/jobs/not-a-uuid/cancel", serve.orchestrator),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn orchestrator_reports_health_raft_status_and_live_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &[]);
    let client = http();
    let (status, health) = get(&client, &format!("{}/api/health", serve.orchestrator)).await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("UP")),
        "{health}"
    );
    let (_, raft) = get(&client, &format!("{}/api/raft/status", serve.orchestrator)).await;
    assert_eq!(
        (raft["role"].as_str(), raft["leader"].as_u64()),
        (Some("leader"), Some(1)),
        "{raft}"
    );
    assert_eq!(raft["members"].as_array().map(Vec::len), Some(1), "{raft}");
    let id = submit_ok(&client, &serve.gateway, &echo_job("LOW", 1)).await;
    wait_terminal(&client, &serve.gateway, &id, DEADLINE).await;
    let (_, live) = get(
        &client,
        &format!("{}/api/jobs?status=completed", serve.orchestrator),
    )
    .await;
    let job = &live["jobs"][0];
    assert_eq!(
        (
            job["id"].as_str(),
            job["status"].as_str(),
            job["priority"].as_u64()
        ),
        (Some(id.as_str()), Some("COMPLETED"), Some(1)),
        "{live}"
    );
    let (_, raft) = get(&client, &format!("{}/api/raft/status", serve.orchestrator)).await;
    assert!(raft["commitIndex"].as_u64() >= Some(3), "{raft}");
    // The in-process worker heartbeats: it shows in the cluster status and the metrics.
    let (_, cluster) = get(
        &client,
        &format!("{}/api/cluster/status", serve.orchestrator),
    )
    .await;
    let workers = cluster["cluster"]["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 1, "{cluster}");
    assert!(workers[0]["capacity"].as_u64() >= Some(1), "{cluster}");
    assert_eq!(cluster["raft"]["role"], "leader", "{cluster}");
    let (_, metrics) = get(&client, &format!("{}/api/metrics", serve.orchestrator)).await;
    assert_eq!(metrics["jobs"]["COMPLETED"], 1, "{metrics}");
    assert_eq!(metrics["workers"]["count"], 1, "{metrics}");
    let (status, _) = post(
        &client,
        &format!("{}/api/jobs/{id}/cancel", serve.orchestrator),
    )
    .await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_client_sees_queued_running_completed_in_order_with_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &[]);
    let client = http();
    let response = reqwest::Client::new()
        .get(format!("{}/api/jobs/stream", serve.gateway))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    // The `connected` event arrives first.
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("connected event")
            .expect("chunk")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.contains("event: connected") || text.contains("event:connected"),
        "{text}"
    );
    let id = submit_ok(&client, &serve.gateway, &echo_job("HIGH", 1)).await;

    let mut statuses = Vec::new();
    let mut seen_ids = HashSet::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !statuses.contains(&"COMPLETED".to_string()) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("job events")
            .expect("chunk")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let lines: Vec<&str> = frame
                .lines()
                .filter(|line| !line.starts_with(':'))
                .collect();
            if !lines.iter().any(|line| {
                line.trim_start_matches("event:").trim() == "job-update"
                    && line.starts_with("event:")
            }) {
                continue;
            }
            let data: Vec<&str> = lines
                .iter()
                .filter_map(|line| line.strip_prefix("data:"))
                .collect();
            assert_eq!(data.len(), 1, "one data line per event: {frame:?}");
            let event_id = lines
                .iter()
                .find_map(|line| line.strip_prefix("id:"))
                .expect("an id: line")
                .trim()
                .to_string();
            assert!(seen_ids.insert(event_id.clone()), "repeated id {event_id}");
            let update: Value = serde_json::from_str(data[0].trim()).expect("data is JSON");
            if update["jobId"] == json!(id) {
                statuses.push(update["status"].as_str().expect("status").to_string());
            }
        }
    }
    assert_eq!(statuses, ["QUEUED", "RUNNING", "COMPLETED"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_running_job_finish_then_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ledger = dir.path().join("ledger.jsonl");
    let ledger_arg = ledger.to_str().expect("utf-8").to_string();
    let mut serve = Serve::start(&data, &["--ledger", &ledger_arg]);
    let client = http();
    let id = submit_ok(&client, &serve.gateway, &sleep_job(1_500, "HIGH")).await;
    wait_started(&ledger, &id).await;
    let status = serve.terminate();
    assert!(status.success(), "exit status {status:?}");
    let finished = read_ledger(&ledger)
        .iter()
        .any(|line| line.event == "finish" && line.job_id == id);
    assert!(finished, "the running job did not finish before exit");
    // Its COMPLETED was committed before the exit: a restart shows it without running it again.
    let serve = Serve::start(&data, &["--ledger", &ledger_arg]);
    let job = wait_terminal(&client, &serve.gateway, &id, DEADLINE).await;
    assert_eq!(job["jobStatus"], "COMPLETED");
    assert_eq!(starts_per_job(&ledger).get(&id), Some(&1));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_minus_nine_mid_burst_then_restart_brings_the_read_model_level_with_the_orchestrator()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut serve = Serve::start(&data, &["--concurrency", "4"]);
    let client = http();
    let mut ids = Vec::new();
    for n in 0..400 {
        ids.push(submit_ok(&client, &serve.gateway, &echo_job("MEDIUM", n)).await);
    }
    // Kill while jobs are completing, so committed events are still on their way to the read
    // model.
    let completed_url = format!(
        "{}/api/jobs?status=COMPLETED&limit=1000",
        serve.orchestrator
    );
    wait_until(DEADLINE, "some jobs to complete", || {
        let client = client.clone();
        let url = completed_url.clone();
        async move { get(&client, &url).await.1["count"].as_u64() >= Some(50) }
    })
    .await;
    serve.kill();

    let serve = Serve::start(&data, &["--concurrency", "4"]);
    for id in &ids {
        let job = wait_terminal(&client, &serve.gateway, id, DEADLINE).await;
        assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    }
    let (_, held) = get(
        &client,
        &format!("{}/api/jobs?limit=1000", serve.orchestrator),
    )
    .await;
    let versions: HashMap<String, u64> = held["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| {
            (
                job["id"].as_str().unwrap_or("").to_string(),
                job["version"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    for id in &ids {
        let (_, job) = get(&client, &format!("{}/api/jobs/{id}", serve.gateway)).await;
        assert_eq!(
            job["version"].as_u64(),
            versions.get(id).copied(),
            "read model and orchestrator differ for {id}: {job}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_of_running_job_stops_its_handler_and_frees_the_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, ledger) = start_with_ledger(dir.path(), &["--concurrency", "1"]);
    let client = http();
    let sleeper = submit_ok(&client, &serve.gateway, &sleep_job(60_000, "HIGH")).await;
    wait_started(&ledger, &sleeper).await;
    let (status, _) = post(
        &client,
        &format!("{}/api/jobs/{sleeper}/cancel", serve.gateway),
    )
    .await;
    assert_eq!(status, 200);
    // With one slot, the next job runs only once the cancelled handler has stopped.
    let next = submit_ok(&client, &serve.gateway, &echo_job("LOW", 1)).await;
    let job = wait_terminal(&client, &serve.gateway, &next, DEADLINE).await;
    assert_eq!(job["jobStatus"], "COMPLETED");
    let lines: Vec<String> = read_ledger(&ledger)
        .into_iter()
        .filter(|line| line.job_id == sleeper)
        .map(|line| line.event)
        .collect();
    assert_eq!(lines, ["start"], "the cancelled handler must not finish");
    let (_, job) = get(&client, &format!("{}/api/jobs/{sleeper}", serve.gateway)).await;
    assert_eq!(job["jobStatus"], "CANCELLED", "{job}");
}
