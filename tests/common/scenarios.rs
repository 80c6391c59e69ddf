//! Acceptance scenarios shared by `serve` (tests/serve.rs) and the distributed roles
//! (tests/distributed.rs): each drives a gateway over HTTP and checks outcomes against the
//! test's own record.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use super::*;

const DEADLINE: Duration = Duration::from_secs(120);

/// True when every field of `expected` is in `actual` with an equal value (numbers compared as
/// f64, objects recursively).
pub fn contains(actual: &Value, expected: &Value) -> bool {
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

/// (request, expected status, expected result subset or error fragment) for every handler, alias
/// and priority spelling; one in ten has a bad payload.
pub fn mixed_cases() -> Vec<(Value, &'static str, Value)> {
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

/// Submits the 1,000 mixed jobs from 16 concurrent clients and checks that each reaches its
/// expected outcome; returns the ids.
pub async fn thousand_mixed_jobs(gateway: &str) -> Vec<String> {
    let cases = mixed_cases();
    let client = http();
    let mut submitted: Vec<(String, usize)> = Vec::new();
    let mut tasks = Vec::new();
    for client_index in 0..16 {
        let client = client.clone();
        let gateway = gateway.to_string();
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
        let job = wait_terminal(&client, gateway, id, DEADLINE).await;
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
    submitted.into_iter().map(|(id, _)| id).collect()
}

/// Checks that the ledger shows each job's handler started exactly once.
pub fn each_started_once(ids: &[String], ledger: &[LedgerLine]) {
    let mut starts: HashMap<&str, usize> = HashMap::new();
    for line in ledger.iter().filter(|line| line.event == "start") {
        *starts.entry(line.job_id.as_str()).or_insert(0) += 1;
    }
    for id in ids {
        assert_eq!(
            starts.get(id.as_str()),
            Some(&1),
            "job {id} started {:?} times",
            starts.get(id.as_str())
        );
    }
}

/// With the only slot busy, HIGH jobs queued after LOW ones start first (`ledger` is the one
/// worker's).
pub async fn high_jobs_start_before_earlier_low_ones(gateway: &str, ledger: &Path) {
    let client = http();
    let blocker = submit_ok(&client, gateway, &sleep_job(3_000, "LOW")).await;
    wait_started(ledger, &blocker).await;
    let mut low = Vec::new();
    for n in 0..5 {
        low.push(submit_ok(&client, gateway, &echo_job("LOW", n)).await);
    }
    let mut high = Vec::new();
    for n in 0..5 {
        high.push(submit_ok(&client, gateway, &echo_job("HIGH", n)).await);
    }
    for id in low.iter().chain(&high) {
        wait_terminal(&client, gateway, id, DEADLINE).await;
    }
    let order: Vec<String> = read_ledger(ledger)
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

/// An SSE client connected before submission sees QUEUED, RUNNING, COMPLETED for a job, in
/// that order, each with an `id:` and its `data:` on one line.
pub async fn sse_sees_queued_running_completed(gateway: &str) {
    let client = http();
    let response = reqwest::Client::new()
        .get(format!("{}/api/jobs/stream", gateway))
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
    let id = submit_ok(&client, gateway, &echo_job("HIGH", 1)).await;

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
