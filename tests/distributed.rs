//! Acceptance tests of the distributed roles (issue 4): an orchestrator, a gateway and workers
//! as separate `distriqueue` processes over RabbitMQ (a vhost per test) and PostgreSQL (a
//! database per test). They skip when `DQ_TEST_AMQP_URL` is unset and fail when
//! `DQ_REQUIRE_SERVICES=1` and a service is unreachable. The RabbitMQ restart test lives in
//! `tests/rabbitmq_restart.rs`, alone in its binary.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::cluster::Cluster;
use common::*;
use distriqueue_testkit::lapin;
use distriqueue_testkit::raw_channel;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);

/// Declares a tap queue bound to `jobs.exchange` under every job queue's routing key: it gets
/// a copy of every job message published.
async fn declare_tap(amqp: &str) -> lapin::Channel {
    let channel = raw_channel(amqp).await;
    let none = lapin::types::FieldTable::default();
    channel
        .queue_declare("tap", Default::default(), none.clone())
        .await
        .expect("declare tap");
    for key in ["job.high", "job.medium", "job.low"] {
        channel
            .queue_bind(
                "tap",
                "jobs.exchange",
                key,
                Default::default(),
                none.clone(),
            )
            .await
            .expect("bind tap");
    }
    channel
}

/// Reads the tap queue empty: the number of copies of each (job, attempt).
async fn drain_tap(channel: &lapin::Channel) -> HashMap<(String, u64), usize> {
    let mut copies = HashMap::new();
    while let Some(got) = channel
        .basic_get("tap", lapin::options::BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get tap")
    {
        let body: Value = serde_json::from_slice(&got.delivery.data).expect("job message JSON");
        let key = (
            body["id"].as_str().expect("id").to_string(),
            body["attempt"].as_u64().expect("attempt"),
        );
        *copies.entry(key).or_insert(0) += 1;
    }
    copies
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_acceptance_holds_in_distributed_mode_and_no_attempt_runs_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(cluster) = Cluster::start("distributed_acceptance", dir.path(), 2, 4, 10) else {
        return;
    };
    let tap = declare_tap(&cluster.amqp_url()).await;
    let gateway = cluster.gateway_url();
    scenarios::sse_sees_queued_running_completed(&gateway).await;
    let ids = scenarios::thousand_mixed_jobs(&gateway).await;
    let ledger = cluster.ledger_lines();
    scenarios::each_started_once(&ids, &ledger);
    no_attempt_finished_twice(&ledger);
    // Both workers took part.
    let workers: HashSet<&str> = ledger.iter().map(|line| line.worker_id.as_str()).collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
    let copies = drain_tap(&tap).await;
    for id in &ids {
        assert!(
            copies.keys().any(|(job, _)| job == id),
            "job {id} was never published to jobs.exchange"
        );
    }
    let n_copies: usize = copies.values().sum();
    eprintln!(
        "tap: {n_copies} job messages for {} (job, attempt) pairs of {} jobs",
        copies.len(),
        ids.len() + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn high_jobs_start_first_and_a_cancel_reaches_the_running_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(cluster) = Cluster::start("distributed_priority", dir.path(), 1, 1, 10) else {
        return;
    };
    let gateway = cluster.gateway_url();
    let ledger = cluster.ledger("w0");
    scenarios::high_jobs_start_before_earlier_low_ones(&gateway, &ledger).await;

    // A cancel travels through control.exchange to the worker, which stops the handler and
    // frees its only slot.
    let client = http();
    let sleeper = submit_ok(&client, &gateway, &sleep_job(120_000, "HIGH")).await;
    wait_started(&ledger, &sleeper).await;
    let (status, body) = post(&client, &format!("{gateway}/api/jobs/{sleeper}/cancel")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobStatus"], "CANCELLED");
    let next = submit_ok(&client, &gateway, &echo_job("LOW", 7)).await;
    let job = wait_terminal(&client, &gateway, &next, Duration::from_secs(60)).await;
    assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    let finished_sleeper = read_ledger(&ledger)
        .iter()
        .any(|line| line.event == "finish" && line.job_id == sleeper);
    assert!(!finished_sleeper, "the cancelled handler ran to completion");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_minus_nine_of_a_worker_reruns_its_unfinished_jobs_on_the_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut cluster) = Cluster::start("distributed_worker_kill", dir.path(), 2, 4, 3) else {
        return;
    };
    let gateway = cluster.gateway_url();
    let client = http();
    let mut ids = Vec::new();
    for n in 0..200 {
        let priority = ["LOW", "MEDIUM", "HIGH"][n % 3];
        ids.push(submit_ok(&client, &gateway, &sleep_job(200, priority)).await);
    }
    // Kill w0 once it has finished a few jobs and runs others (on a loaded machine its slots
    // may all be waiting for lease answers at a given moment: wait for a started one).
    let killed_ledger = cluster.ledger("w0");
    wait_until(
        DEADLINE,
        "w0 to finish some jobs and run others",
        || async {
            let lines = read_ledger(&killed_ledger);
            let finished: HashSet<&str> = lines
                .iter()
                .filter(|line| line.event == "finish")
                .map(|line| line.job_id.as_str())
                .collect();
            let running = lines
                .iter()
                .any(|line| line.event == "start" && !finished.contains(line.job_id.as_str()));
            finished.len() >= 8 && running
        },
    )
    .await;
    cluster.workers[0].kill();
    for id in &ids {
        let job = wait_terminal(&client, &gateway, id, DEADLINE).await;
        assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    }
    let ledger = cluster.ledger_lines();
    no_attempt_finished_twice(&ledger);
    let finished: HashSet<(&str, &str)> = ledger
        .iter()
        .filter(|line| line.event == "finish")
        .map(|line| (line.job_id.as_str(), line.worker_id.as_str()))
        .collect();
    let unfinished_on_w0: Vec<&str> = ledger
        .iter()
        .filter(|line| line.event == "start" && line.worker_id == "w0")
        .map(|line| line.job_id.as_str())
        .filter(|job| !finished.contains(&(job, "w0")))
        .collect();
    assert!(
        !unfinished_on_w0.is_empty(),
        "w0 was killed with jobs running"
    );
    for job in unfinished_on_w0 {
        assert!(
            finished.contains(&(job, "w1")),
            "job {job}, unfinished on the killed worker, did not run again on w1"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_worker_loses_its_job_to_the_other_and_its_late_report_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut cluster) = Cluster::start("distributed_sigstop", dir.path(), 1, 1, 3) else {
        return;
    };
    let gateway = cluster.gateway_url();
    let client = http();
    let job_id = submit_ok(
        &client,
        &gateway,
        &json!({"type": "sleep", "jobPriority": "HIGH", "payload": {"ms": 6_000}, "maxRetries": 3}),
    )
    .await;
    wait_started(&cluster.ledger("w0"), &job_id).await;
    cluster.workers[0].stop();
    let other = cluster.start_worker("w1", 1);
    cluster.workers.push(other);
    let job = wait_terminal(&client, &gateway, &job_id, DEADLINE).await;
    assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    assert_eq!(job["workerId"], "w1", "{job}");
    assert_eq!(job["attempt"], 2, "{job}");
    let version = job["version"].clone();

    cluster.workers[0].resume();
    // Whatever the resumed worker says about attempt 1 now is refused and changes nothing.
    let late = reqwest::Client::new()
        .post(format!("{}/api/jobs/status", cluster.orchestrator_url()))
        .json(&json!({"jobId": job_id, "status": "completed", "workerId": "w0", "attempt": 1, "result": {"late": true}}))
        .send()
        .await
        .expect("late report");
    assert_eq!(late.status().as_u16(), 409);
    // The resumed worker gives attempt 1 up one way or another: the cancel that waited in its
    // control queue stops the handler, it fences itself, or its late outcome is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = cluster.workers[0].log_text();
        if ["job cancelled", "stopping every handler", "outcome refused"]
            .iter()
            .any(|sign| log.contains(sign))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resumed worker did not give attempt 1 up:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, after) = get(&client, &format!("{gateway}/api/jobs/{job_id}")).await;
    assert_eq!(after["version"], version, "{after}");
    assert_eq!(after["workerId"], "w1");
    assert!(after["result"].get("late").is_none(), "{after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_minus_nine_of_the_orchestrator_then_a_restart_completes_every_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut cluster) = Cluster::start("distributed_orchestrator_kill", dir.path(), 2, 4, 5)
    else {
        return;
    };
    let gateway = cluster.gateway_url();
    let client = http();
    let mut ids = Vec::new();
    for n in 0..300 {
        ids.push(
            submit_ok(
                &client,
                &gateway,
                &sleep_job(20 + (n % 5) as u64 * 10, "MEDIUM"),
            )
            .await,
        );
    }
    wait_until(DEADLINE, "some jobs to finish", || async {
        cluster
            .ledger_lines()
            .iter()
            .filter(|line| line.event == "finish")
            .count()
            >= 40
    })
    .await;
    cluster.orchestrators[0].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Meanwhile the gateway answers 503 and records nothing.
    let (status, body) = submit(&client, &gateway, &echo_job("HIGH", 1)).await;
    assert_eq!(status, 503, "{body}");
    let (_, page) = get(&client, &format!("{gateway}/api/jobs?size=1")).await;
    assert_eq!(page["page"]["totalElements"], json!(ids.len()), "{page}");
    cluster.orchestrators[0] = cluster.start_orchestrator(0);
    for id in &ids {
        let job = wait_terminal(&client, &gateway, id, DEADLINE).await;
        assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    }
    // The read model agrees with the orchestrator on every job, version by version.
    let (_, live) = get(
        &client,
        &format!("{}/api/jobs?limit=1000", cluster.orchestrator_url()),
    )
    .await;
    let versions: HashMap<&str, &Value> = live["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| (job["id"].as_str().expect("id"), &job["version"]))
        .collect();
    for id in &ids {
        wait_until(
            Duration::from_secs(30),
            "the read model to catch up",
            || async {
                let (_, job) = get(&client, &format!("{gateway}/api/jobs/{id}")).await;
                versions
                    .get(id.as_str())
                    .is_none_or(|version| job["version"] == **version)
            },
        )
        .await;
    }
    no_attempt_finished_twice(&cluster.ledger_lines());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_is_not_json_ends_in_job_dead_and_workers_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(cluster) = Cluster::start("distributed_job_dead", dir.path(), 1, 2, 10) else {
        return;
    };
    let channel = raw_channel(&cluster.amqp_url()).await;
    channel
        .basic_publish(
            "jobs.exchange",
            "job.medium",
            Default::default(),
            b"this is not JSON",
            lapin::BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    let client = http();
    let gateway = cluster.gateway_url();
    let id = submit_ok(&client, &gateway, &echo_job("MEDIUM", 1)).await;
    let job = wait_terminal(&client, &gateway, &id, DEADLINE).await;
    assert_eq!(job["jobStatus"], "COMPLETED");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let got = channel
            .basic_get("job.dead", lapin::options::BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        if let Some(got) = got {
            break Some(got.delivery.data);
        }
        if tokio::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.as_deref(), Some(&b"this is not JSON"[..]));
    assert!(cluster.workers[0].log_text().contains("job.dead"));
}

/// A raw SSE client: `job-update` events as (id, data).
struct SseClient {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    buffer: String,
}

impl SseClient {
    async fn connect(gateway: &str, last_event_id: Option<u64>) -> SseClient {
        let mut request = reqwest::Client::new().get(format!("{gateway}/api/jobs/stream"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("stream");
        assert_eq!(response.status().as_u16(), 200);
        SseClient {
            stream: Box::pin(futures::StreamExt::map(response.bytes_stream(), |chunk| {
                chunk.map(|bytes| bytes.to_vec())
            })),
            buffer: String::new(),
        }
    }

    /// The next `job-update` event, or `None` at the deadline.
    async fn next_update(&mut self, deadline: tokio::time::Instant) -> Option<(u64, Value)> {
        use futures::StreamExt;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    frame
                        .lines()
                        .find_map(|line| line.strip_prefix(name))
                        .map(|value| value.trim().to_string())
                };
                if field("event:").as_deref() == Some("job-update") {
                    let id = field("id:")?.parse().ok()?;
                    let data = serde_json::from_str(&field("data:")?).ok()?;
                    return Some((id, data));
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??
                .ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_minus_nine_of_the_gateway_loses_no_job_and_sse_resumes_from_last_event_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut cluster) = Cluster::start("distributed_gateway_kill", dir.path(), 2, 2, 10) else {
        return;
    };
    let gateway = cluster.gateway_url();
    let client = http();
    let mut sse = SseClient::connect(&gateway, None).await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(submit_ok(&client, &gateway, &sleep_job(300, "MEDIUM")).await);
    }
    // Follow the stream for a while: the last state seen of each job, and the last id.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut last_id = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while seen
        .values()
        .filter(|status| *status == "COMPLETED")
        .count()
        < 4
    {
        let (id, data) = sse
            .next_update(deadline)
            .await
            .expect("updates before the kill");
        last_id = id;
        seen.insert(
            data["jobId"].as_str().expect("jobId").to_string(),
            data["status"].as_str().expect("status").to_string(),
        );
    }
    cluster.gateway.kill();
    drop(sse);
    // The jobs go on without the gateway.
    let orchestrator = cluster.orchestrator_url();
    wait_until(DEADLINE, "every job to complete", || {
        let client = client.clone();
        let orchestrator = orchestrator.clone();
        let ids = ids.clone();
        async move {
            let (_, live) = get(&client, &format!("{orchestrator}/api/jobs?limit=1000")).await;
            let completed: HashSet<&str> = live["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|job| job["status"] == "COMPLETED")
                .filter_map(|job| job["id"].as_str())
                .collect();
            ids.iter().all(|id| completed.contains(id.as_str()))
        }
    })
    .await;
    cluster.gateway = cluster.start_gateway();
    let mut sse = SseClient::connect(&gateway, Some(last_id)).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let missing = |seen: &HashMap<String, String>| {
        ids.iter()
            .filter(|id| seen.get(*id).map(String::as_str) != Some("COMPLETED"))
            .count()
    };
    while missing(&seen) > 0 {
        let Some((id, data)) = sse.next_update(deadline).await else {
            panic!(
                "{} jobs that changed while the gateway was down never came as COMPLETED",
                missing(&seen)
            );
        };
        assert!(id > last_id, "replayed id {id} is not after {last_id}");
        seen.insert(
            data["jobId"].as_str().expect("jobId").to_string(),
            data["status"].as_str().expect("status").to_string(),
        );
    }
    // No accepted job is lost from the read model.
    for id in &ids {
        let job = wait_terminal(&client, &gateway, id, DEADLINE).await;
        assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_and_reports_the_running_job_and_hands_back_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut cluster) = Cluster::start("distributed_sigterm", dir.path(), 1, 1, 10) else {
        return;
    };
    let gateway = cluster.gateway_url();
    let client = http();
    let long = submit_ok(&client, &gateway, &sleep_job(2_000, "HIGH")).await;
    wait_started(&cluster.ledger("w0"), &long).await;
    let mut waiting = Vec::new();
    for n in 0..3 {
        waiting.push(submit_ok(&client, &gateway, &echo_job("LOW", n)).await);
    }
    let status = cluster.workers[0].terminate();
    assert!(status.success(), "worker exit: {status}");
    // The running job finished on w0 and its outcome was reported before the exit.
    let job = wait_terminal(&client, &gateway, &long, DEADLINE).await;
    assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    assert_eq!(job["workerId"], "w0");
    // Its last heartbeat said it runs nothing.
    let (_, workers) = get(
        &client,
        &format!("{}/api/cluster/status", cluster.orchestrator_url()),
    )
    .await;
    let w0 = workers["cluster"]["workers"]
        .as_array()
        .and_then(|workers| workers.iter().find(|worker| worker["workerId"] == "w0"))
        .cloned()
        .expect("w0 is known");
    assert_eq!(w0["currentLoad"], 0, "{w0}");
    // What it held but had not started runs elsewhere.
    let other = cluster.start_worker("w1", 2);
    cluster.workers.push(other);
    for id in &waiting {
        let job = wait_terminal(&client, &gateway, id, DEADLINE).await;
        assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
        assert_eq!(job["workerId"], "w1", "{job}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_share_one_read_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(cluster) = Cluster::start("distributed_two_gateways", dir.path(), 1, 4, 10) else {
        return;
    };
    if cluster.database.is_none() {
        eprintln!("skipped: gateways share a PostgreSQL read model (DQ_TEST_DATABASE_URL)");
        return;
    }
    let port = cluster::free_port();
    let _second = cluster.start_gateway_on(port);
    let first = cluster.gateway_url();
    let second = format!("http://127.0.0.1:{port}");
    let client = http();
    let mut submitted = Vec::new();
    for n in 0..100 {
        let (via, other) = if n % 2 == 0 {
            (&first, &second)
        } else {
            (&second, &first)
        };
        submitted.push((
            submit_ok(&client, via, &echo_job("MEDIUM", n)).await,
            other.clone(),
        ));
    }
    // Each gateway stores a share of the events (they share status.queue), into one database:
    // every job reads COMPLETED through the gateway it was not submitted to.
    for (id, other) in &submitted {
        let job = wait_terminal(&client, other, id, DEADLINE).await;
        assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    }
    for gateway in [&first, &second] {
        let (_, page) = get(
            &client,
            &format!("{gateway}/api/jobs?jobStatus=COMPLETED&size=1"),
        )
        .await;
        assert_eq!(page["page"]["totalElements"], 100, "{page}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_on_rabbitmq_lets_an_outside_worker_join() {
    let Some(vhost) = distriqueue_testkit::TestVhost::create("serve_amqp") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger-serve.jsonl");
    let serve = Serve::start(
        &dir.path().join("data"),
        &[
            "--amqp",
            vhost.url(),
            "--concurrency",
            "1",
            "--ledger",
            ledger.to_str().expect("utf-8 path"),
        ],
    );
    let outside_ledger = dir.path().join("ledger-outside.jsonl");
    let _outside = cluster::Proc::start(
        &[
            "worker".to_string(),
            "--amqp".into(),
            vhost.url().to_string(),
            "--orchestrator".into(),
            serve.orchestrator.clone(),
            "--concurrency".into(),
            "1".into(),
            "--worker-id".into(),
            "outside".into(),
            "--ledger".into(),
            outside_ledger.display().to_string(),
        ],
        dir.path().join("outside.log"),
        "worker",
    );
    let client = http();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(submit_ok(&client, &serve.gateway, &sleep_job(100, "MEDIUM")).await);
    }
    for id in &ids {
        let job = wait_terminal(&client, &serve.gateway, id, DEADLINE).await;
        assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    }
    let ran = |path: &std::path::Path| {
        read_ledger(path)
            .iter()
            .filter(|line| line.event == "finish")
            .count()
    };
    assert!(ran(&ledger) > 0, "serve's own worker ran nothing");
    assert!(ran(&outside_ledger) > 0, "the outside worker ran nothing");
    assert_eq!(ran(&ledger) + ran(&outside_ledger), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_restarted_under_the_same_id_gets_its_earlier_attempts_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A heartbeat timeout far longer than the test: only the restart can release the job.
    let Some(mut cluster) = Cluster::start("distributed_worker_restart", dir.path(), 1, 1, 120)
    else {
        return;
    };
    let gateway = cluster.gateway_url();
    let client = http();
    let id = submit_ok(
        &client,
        &gateway,
        &serde_json::json!({"type": "sleep", "jobPriority": "HIGH", "payload": {"ms": 60_000}}),
    )
    .await;
    wait_started(&cluster.ledger("w0"), &id).await;
    cluster.workers[0].kill();
    // The same worker id comes back: its first heartbeat says it is a new instance, and the
    // attempt of the one that died is retried at once (attempt 2), not at its execution timeout.
    cluster.workers[0] = cluster.start_worker("w0", 1);
    wait_until(Duration::from_secs(60), "attempt 2 to start", || async {
        read_ledger(&cluster.ledger("w0"))
            .iter()
            .any(|line| line.event == "start" && line.job_id == id && line.attempt == 2)
    })
    .await;
    let (_, job) = get(&client, &format!("{gateway}/api/jobs/{id}/attempts")).await;
    assert_eq!(job["attempts"][0]["state"], "LOST", "{job}");
    assert_eq!(job["attempts"][0]["errorMessage"], "worker lost", "{job}");
}

/// Issue 9: `distriqueue run --roles gateway,orchestrator` is one process with both roles;
/// a separate `distriqueue worker` takes the jobs over RabbitMQ and runs the seed example to
/// COMPLETED.
#[tokio::test(flavor = "multi_thread")]
async fn run_with_gateway_and_orchestrator_and_a_separate_worker_completes_the_seed_example() {
    let Some(vhost) = distriqueue_testkit::TestVhost::create("run_roles") else {
        return;
    };
    let database = distriqueue_testkit::TestDatabase::create("run_roles");
    let dir = tempfile::tempdir().expect("tempdir");
    let orchestrator = format!("http://127.0.0.1:{}", cluster::free_port());
    let mut args = vec![
        "run".to_string(),
        "--roles".into(),
        "gateway,orchestrator".into(),
        "--gateway-addr".into(),
        "127.0.0.1:0".into(),
        "--orchestrator-addr".into(),
        orchestrator.trim_start_matches("http://").to_string(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
        "--amqp".into(),
        vhost.url().to_string(),
    ];
    if let Some(database) = &database {
        args.extend(["--database".to_string(), database.url().to_string()]);
    }
    let both = cluster::Proc::start(&args, dir.path().join("run.log"), "gateway");
    let gateway = both.ready.clone();
    let _worker = cluster::Proc::start(
        &[
            "worker".to_string(),
            "--amqp".into(),
            vhost.url().to_string(),
            "--orchestrator".into(),
            orchestrator,
            "--worker-id".into(),
            "separate".into(),
        ],
        dir.path().join("worker.log"),
        "worker",
    );
    let client = http();
    let id = submit_ok(
        &client,
        &gateway,
        &json!({"type": "calculate", "jobPriority": "HIGH", "payload": {"operation": "sum", "numbers": [1, 2, 3, 4, 5]}}),
    )
    .await;
    let job = wait_terminal(&client, &gateway, &id, DEADLINE).await;
    assert_eq!(
        (
            job["jobStatus"].as_str(),
            job["result"]["sum"].as_f64(),
            job["workerId"].as_str()
        ),
        (Some("COMPLETED"), Some(15.0), Some("separate")),
        "{job}"
    );
}

/// Ready messages in the three job queues (what RabbitMQ holds but has not handed out).
async fn ready_job_messages(channel: &lapin::Channel) -> u32 {
    let mut total = 0;
    for queue in ["job.high", "job.medium", "job.low"] {
        let options = lapin::options::QueueDeclareOptions {
            passive: true,
            durable: true,
            ..Default::default()
        };
        let declared = channel
            .queue_declare(queue, options, lapin::types::FieldTable::default())
            .await
            .expect("passive declare of a job queue");
        total += declared.message_count();
    }
    total
}

/// Issue 13, item 3: a confirmed job message is not published again while its job waits its
/// turn. 20,000 jobs wait behind the one slot of the one worker, busy with a slow job, under a
/// 2 s dispatch timeout: 10 s later RabbitMQ was given one message per job and holds no more
/// than 20,000. Then the slow job is cancelled, a second worker helps drain the backlog, and
/// every job runs exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_behind_a_slow_slot_keeps_one_message_per_job_and_each_job_runs_once() {
    const N_JOBS: usize = 20_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = cluster::Spec {
        workers: 1,
        concurrency: 1,
        orchestrator_flags: vec!["--dispatch-timeout".into(), "2".into()],
        ..cluster::Spec::default()
    };
    let Some(mut cluster) = Cluster::start_spec("distributed_backlog", dir.path(), spec) else {
        return;
    };
    let tap = declare_tap(&cluster.amqp_url()).await;
    let gateway = cluster.gateway_url();
    let client = http();
    let slow = submit_ok(&client, &gateway, &sleep_job(600_000, "MEDIUM")).await;
    wait_started(&cluster.ledger("w0"), &slow).await;
    let mut ids = Vec::with_capacity(N_JOBS);
    for chunk in 0..N_JOBS / 1000 {
        let jobs: Vec<Value> = (0..1000)
            .map(|n| echo_job("MEDIUM", chunk * 1000 + n))
            .collect();
        let answer = client
            .post(format!("{gateway}/api/jobs/batch"))
            .json(&json!({ "jobs": jobs }))
            .send()
            .await
            .expect("POST /api/jobs/batch");
        assert_eq!(answer.status(), 202);
        let answer: Value = answer.json().await.expect("batch answer");
        assert_eq!(answer["successful"], 1000, "{answer}");
        ids.extend(
            answer["jobIds"]
                .as_array()
                .expect("jobIds")
                .iter()
                .map(|id| id.as_str().expect("job id").to_string()),
        );
    }
    // Five dispatch timeouts, with the only slot still busy.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        starts_per_job(&cluster.ledger("w0")).len() == 1,
        "the slow job ended early; the backlog moved"
    );
    let ready = ready_job_messages(&tap).await;
    let copies = drain_tap(&tap).await;
    let n_copies: usize = copies.values().sum();
    assert!(
        ready as usize <= N_JOBS,
        "{ready} job messages wait for {N_JOBS} jobs"
    );
    assert_eq!(
        n_copies,
        N_JOBS + 1,
        "job messages published for {N_JOBS} queued jobs and the slow one"
    );
    assert!(
        copies.values().all(|n| *n == 1),
        "a job was published twice"
    );

    // The slow job is cancelled (its slot frees) and a second worker helps drain the backlog.
    let (status, body) = post(&client, &format!("{gateway}/api/jobs/{slow}/cancel")).await;
    assert_eq!(status, 200, "{body}");
    let drainer = cluster.start_worker("w1", 8);
    cluster.workers.push(drainer);
    // Polled every 2 s: reading 40,000 ledger lines is not free on two cores.
    let deadline = std::time::Instant::now() + Duration::from_secs(900);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ledger = cluster.ledger_lines();
        let finished = ledger.iter().filter(|line| line.event == "finish").count();
        if finished >= N_JOBS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{finished} of {N_JOBS} jobs finished"
        );
    }
    let ledger = cluster.ledger_lines();
    ids.push(slow);
    scenarios::each_started_once(&ids, &ledger);
    no_attempt_finished_twice(&ledger);
}
