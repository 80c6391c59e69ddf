//! Acceptance tests of `distriqueue serve` (issue 2): the real binary, driven over HTTP.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);

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

#[tokio::test(flavor = "multi_thread")]
async fn thousand_mixed_jobs_from_sixteen_clients_reach_their_expected_outcome_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.jsonl");
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--ledger", ledger.to_str().expect("utf-8 path")],
    );
    let submitted = scenarios::thousand_mixed_jobs(&serve.gateway).await;
    scenarios::each_started_once(&submitted, &read_ledger(&ledger));
}

#[tokio::test(flavor = "multi_thread")]
async fn high_jobs_queued_after_low_ones_start_first_when_slots_are_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (serve, ledger) = start_with_ledger(dir.path(), &["--concurrency", "1"]);
    scenarios::high_jobs_start_before_earlier_low_ones(&serve.gateway, &ledger).await;
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
    scenarios::sse_sees_queued_running_completed(&serve.gateway).await;
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

/// Issue 13, item 5: with `--retention 4s`, finished jobs leave the read model once they ended
/// more than 4 s ago while new jobs keep flowing; a running job stays whatever its age, and the
/// statistics still count every job.
#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_finished_jobs_past_the_window_and_statistics_keep_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &["--retention", "4s"]);
    let client = http();
    let gateway = serve.gateway.clone();
    let running = submit_ok(&client, &gateway, &sleep_job(120_000, "LOW")).await;
    let mut old = Vec::new();
    for n in 0..20 {
        old.push(submit_ok(&client, &gateway, &echo_job("MEDIUM", n)).await);
    }
    for id in &old {
        let job = wait_terminal(&client, &gateway, id, Duration::from_secs(60)).await;
        assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    }
    // Jobs keep flowing while the finished ones age out.
    let flowing = {
        let client = client.clone();
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..60 {
                ids.push(submit_ok(&client, &gateway, &echo_job("HIGH", n)).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ids
        })
    };
    wait_until(Duration::from_secs(90), "the old jobs to leave", || {
        let client = client.clone();
        let url = format!("{gateway}/api/jobs/{}", old[old.len() - 1]);
        async move { get(&client, &url).await.0 == 404 }
    })
    .await;
    let flowing = flowing.await.expect("submitter");
    for id in &old {
        let (status, body) = get(&client, &format!("{gateway}/api/jobs/{id}")).await;
        assert_eq!(status, 404, "{id} stayed: {body}");
    }
    let (status, body) = get(&client, &format!("{gateway}/api/jobs/{running}")).await;
    assert_eq!(
        (status, body["jobStatus"].as_str()),
        (200, Some("RUNNING")),
        "{body}"
    );
    // The jobs submitted last ended less than the window ago: still there.
    let last = flowing.last().expect("flowing jobs");
    let job = wait_terminal(&client, &gateway, last, Duration::from_secs(60)).await;
    assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    let (_, stats) = get(&client, &format!("{gateway}/api/jobs/statistics")).await;
    assert_eq!(
        stats["totalJobs"].as_u64(),
        Some(1 + old.len() as u64 + flowing.len() as u64),
        "{stats}"
    );
    assert_eq!(stats["runningJobs"], 1, "{stats}");
}
