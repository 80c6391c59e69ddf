//! The metrics of issue 10, item 4, through the real binary: each metric moves when its event
//! happens (the test drives each event and reads the metric), every endpoint's text passes
//! `promtool check metrics`, and every metric the Grafana dashboard and the alerting rules of
//! `deploy/monitoring/` name exists. The replication lag of a follower is driven by the Raft
//! partition test (`orchestrator_cluster.rs`), which needs a cluster.
//!
//! promtool comes from Debian's `prometheus` package (`.ci/run` installs it): the promtool
//! checks skip without it, and fail instead when `DQ_REQUIRE_SERVICES=1`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::metrics::{families, metrics_named_in, scrape, wait_metric, CLUSTER_ONLY};
use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

fn promtool_ready(test: &str) -> bool {
    distriqueue_testkit::tool(
        test,
        "promtool",
        &["--version"],
        "apt-get install prometheus",
    )
}

/// `promtool check metrics` on `text`; panics with its complaints.
fn promtool_check_metrics(name: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool output");
    assert!(
        output.status.success(),
        "promtool check metrics of {name}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_moves_when_its_event_happens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(
        dir.path(),
        &[
            "--concurrency",
            "1",
            "--metrics-addr",
            "127.0.0.1:0",
            "--heartbeat-timeout",
            "3",
            "--retry-backoff-base-ms",
            "100",
        ],
    );
    let client = http();
    let gateway_metrics = format!("{}/api/actuator/prometheus", serve.gateway);
    let orchestrator_metrics = format!("{}/metrics", serve.orchestrator);
    let worker_metrics = format!(
        "{}/metrics",
        serve.metrics.as_deref().expect("a metrics address")
    );
    let gauge =
        |name: &'static str, labels: &'static [(&'static str, &'static str)]| (name, labels);

    // Raft and the worker's slots, from the start (gauges are refreshed every second).
    wait_metric(
        &client,
        &orchestrator_metrics,
        "distriqueue_orchestrator_raft_role",
        &[("role", "leader")],
        "1",
        |v| v == 1.0,
    )
    .await;
    let at_start = scrape(&client, &orchestrator_metrics).await;
    assert!(at_start.or_zero("distriqueue_orchestrator_raft_term", &[]) >= 1.0);
    // Counters without per-type labels are there at 0 from the start, so that their first
    // increase shows to `increase()` (and to the alerts).
    assert_eq!(
        at_start.value("distriqueue_workers_lost_total", &[]),
        Some(0.0),
        "{}",
        at_start.0
    );
    assert_eq!(
        at_start.value(
            "distriqueue_orchestrator_raft_role",
            &[("role", "follower")]
        ),
        Some(0.0)
    );
    assert_eq!(
        at_start.value("distriqueue_orchestrator_raft_has_leader", &[]),
        Some(1.0)
    );
    let applied_at_start = at_start.or_zero("distriqueue_orchestrator_raft_applied_index", &[]);
    wait_metric(
        &client,
        &worker_metrics,
        "distriqueue_worker_slots",
        &[],
        "1",
        |v| v == 1.0,
    )
    .await;

    // A job that completes: submitted, completed, the three times, a handler run, a log
    // entry, read-model writes, a request.
    let echo = submit_ok(
        &client,
        &serve.gateway,
        &json!({"type": "echo", "jobPriority": "HIGH", "payload": {}}),
    )
    .await;
    assert_eq!(
        wait_terminal(&client, &serve.gateway, &echo, WAIT).await["jobStatus"],
        "COMPLETED"
    );
    let echo_high = [("type", "echo"), ("priority", "HIGH")];
    for (name, labels) in [
        ("distriqueue_jobs_submitted_total", &echo_high[..]),
        ("distriqueue_jobs_completed_total", &echo_high[..]),
        (
            "distriqueue_job_queue_seconds_count",
            &[("type", "echo")][..],
        ),
        (
            "distriqueue_job_execution_seconds_count",
            &[("type", "echo")][..],
        ),
        (
            "distriqueue_job_end_to_end_seconds_count",
            &[("type", "echo")][..],
        ),
        ("distriqueue_orchestrator_log_entry_commands_count", &[][..]),
        (
            "distriqueue_gateway_readmodel_write_batch_size_count",
            &[][..],
        ),
        ("distriqueue_gateway_readmodel_write_seconds_count", &[][..]),
        (
            "distriqueue_gateway_http_requests_total",
            &[
                ("route", "/api/jobs"),
                ("method", "POST"),
                ("status", "202"),
            ][..],
        ),
        (
            "distriqueue_gateway_http_request_duration_seconds_count",
            &[("route", "/api/jobs"), ("method", "POST")][..],
        ),
    ] {
        wait_metric(&client, &gateway_metrics, name, labels, "counted", |v| {
            v >= 1.0
        })
        .await;
    }
    wait_metric(
        &client,
        &worker_metrics,
        "distriqueue_worker_handler_seconds_count",
        &[("type", "echo"), ("outcome", "completed")],
        "counted",
        |v| v == 1.0,
    )
    .await;
    wait_metric(
        &client,
        &orchestrator_metrics,
        "distriqueue_orchestrator_raft_applied_index",
        &[],
        "advanced",
        |v| v > applied_at_start,
    )
    .await;
    wait_metric(
        &client,
        &orchestrator_metrics,
        "distriqueue_orchestrator_raft_commit_index",
        &[],
        "advanced",
        |v| v > applied_at_start,
    )
    .await;
    // The orchestrator's own requests.
    let _ = get(&client, &format!("{}/api/health", serve.orchestrator)).await;
    wait_metric(
        &client,
        &orchestrator_metrics,
        "distriqueue_orchestrator_http_requests_total",
        &[
            ("route", "/api/health"),
            ("method", "GET"),
            ("status", "200"),
        ],
        "counted",
        |v| v >= 1.0,
    )
    .await;
    // A path no route serves counts as `unmatched`, whatever it was.
    let _ = get(
        &client,
        &format!("{}/api/no/such/{}", serve.gateway, uuid::Uuid::new_v4()),
    )
    .await;
    wait_metric(
        &client,
        &gateway_metrics,
        "distriqueue_gateway_http_requests_total",
        &[("route", "unmatched"), ("status", "404")],
        "counted",
        |v| v >= 1.0,
    )
    .await;

    // A retry, then a failure.
    let flaky = submit_ok(&client, &serve.gateway, &json!({"type": "flaky", "jobPriority": "LOW", "maxRetries": 1, "payload": {"failTimes": 1}})).await;
    assert_eq!(
        wait_terminal(&client, &serve.gateway, &flaky, WAIT).await["jobStatus"],
        "COMPLETED"
    );
    wait_metric(
        &client,
        &gateway_metrics,
        "distriqueue_jobs_retried_total",
        &[("type", "flaky"), ("priority", "LOW")],
        "counted",
        |v| v == 1.0,
    )
    .await;
    let failing = submit_ok(&client, &serve.gateway, &json!({"type": "no-such-handler", "jobPriority": "MEDIUM", "maxRetries": 0, "payload": {}})).await;
    assert_eq!(
        wait_terminal(&client, &serve.gateway, &failing, WAIT).await["jobStatus"],
        "FAILED"
    );
    wait_metric(
        &client,
        &gateway_metrics,
        "distriqueue_jobs_failed_total",
        &[("type", "no-such-handler"), ("priority", "MEDIUM")],
        "counted",
        |v| v == 1.0,
    )
    .await;
    wait_metric(
        &client,
        &worker_metrics,
        "distriqueue_worker_handler_seconds_count",
        &[("type", "flaky"), ("outcome", "failed")],
        "counted",
        |v| v == 1.0,
    )
    .await;
    // A type without a handler is labelled `unhandled`, whatever its name.
    wait_metric(
        &client,
        &worker_metrics,
        "distriqueue_worker_handler_seconds_count",
        &[("type", "unhandled"), ("outcome", "failed")],
        "counted",
        |v| v == 1.0,
    )
    .await;
    // A job type's failure counters are there at 0 once the type was seen.
    let seen = scrape(&client, &gateway_metrics).await;
    for priority in ["LOW", "MEDIUM", "HIGH", "CRITICAL"] {
        assert_eq!(
            seen.value(
                "distriqueue_jobs_failed_total",
                &[("type", "echo"), ("priority", priority)]
            ),
            Some(0.0),
            "{priority}"
        );
    }

    // A job running in the only slot: running, busy slots; a job behind it waits.
    let sleeper = submit_ok(&client, &serve.gateway, &json!({"type": "sleep", "jobPriority": "HIGH", "executionTimeout": 600, "maxRetries": 0, "payload": {"ms": 600_000}})).await;
    for (url, (name, labels)) in [
        (
            &orchestrator_metrics,
            gauge("distriqueue_jobs_running", &[]),
        ),
        (
            &orchestrator_metrics,
            gauge("distriqueue_workers_slots_busy", &[]),
        ),
        (
            &orchestrator_metrics,
            gauge("distriqueue_workers_slots", &[]),
        ),
        (
            &orchestrator_metrics,
            gauge("distriqueue_workers_alive", &[]),
        ),
        (&worker_metrics, gauge("distriqueue_worker_slots_busy", &[])),
    ] {
        wait_metric(&client, url, name, labels, "1", |v| v == 1.0).await;
    }
    let waiting = submit_ok(
        &client,
        &serve.gateway,
        &json!({"type": "echo", "jobPriority": "LOW", "payload": {}}),
    )
    .await;
    wait_metric(
        &client,
        &orchestrator_metrics,
        "distriqueue_jobs_waiting",
        &[("priority", "LOW")],
        "1",
        |v| v == 1.0,
    )
    .await;

    // An SSE client while its stream is open.
    let stream = client
        .get(format!("{}/api/jobs/stream", serve.gateway))
        .send()
        .await
        .expect("open the stream");
    assert_eq!(stream.status(), 200);
    wait_metric(
        &client,
        &gateway_metrics,
        "distriqueue_gateway_sse_clients",
        &[],
        "1",
        |v| v == 1.0,
    )
    .await;
    drop(stream);
    wait_metric(
        &client,
        &gateway_metrics,
        "distriqueue_gateway_sse_clients",
        &[],
        "back to 0",
        |v| v == 0.0,
    )
    .await;

    // A cancel frees the slot: the waiting job runs.
    let (status, body) = post(
        &client,
        &format!("{}/api/jobs/{sleeper}/cancel", serve.gateway),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_metric(
        &client,
        &gateway_metrics,
        "distriqueue_jobs_cancelled_total",
        &[("type", "sleep"), ("priority", "HIGH")],
        "counted",
        |v| v == 1.0,
    )
    .await;
    assert_eq!(
        wait_terminal(&client, &serve.gateway, &waiting, WAIT).await["jobStatus"],
        "COMPLETED"
    );
    wait_metric(
        &client,
        &orchestrator_metrics,
        "distriqueue_jobs_waiting",
        &[("priority", "LOW")],
        "back to 0",
        |v| v == 0.0,
    )
    .await;
    wait_metric(
        &client,
        &worker_metrics,
        "distriqueue_worker_handler_seconds_count",
        &[("type", "sleep"), ("outcome", "stopped")],
        "counted",
        |v| v == 1.0,
    )
    .await;

    // A timeout.
    let slow = submit_ok(&client, &serve.gateway, &json!({"type": "sleep", "jobPriority": "CRITICAL", "executionTimeout": 1, "maxRetries": 0, "payload": {"ms": 30_000}})).await;
    assert_eq!(
        wait_terminal(&client, &serve.gateway, &slow, WAIT).await["jobStatus"],
        "TIMEOUT"
    );
    wait_metric(
        &client,
        &gateway_metrics,
        "distriqueue_jobs_timed_out_total",
        &[("type", "sleep"), ("priority", "CRITICAL")],
        "counted",
        |v| v == 1.0,
    )
    .await;

    // A worker that heartbeats once and falls silent is declared lost.
    let heartbeat = json!({"worker_id": "ghost", "worker_type": "test", "capacity": 1, "current_load": 0, "total_jobs_processed": 0, "successful_jobs": 0, "failed_jobs": 0, "timestamp": 1});
    let response = client
        .post(format!("{}/api/workers/heartbeat", serve.orchestrator))
        .json(&heartbeat)
        .send()
        .await
        .expect("heartbeat");
    assert_eq!(response.status(), 200);
    wait_metric(
        &client,
        &orchestrator_metrics,
        "distriqueue_workers_lost_total",
        &[],
        "counted",
        |v| v >= 1.0,
    )
    .await;

    // The gauges of the outbox and the watermark are there (they move only for a moment in a
    // healthy process; RabbitMQ outages hold them up).
    let last = scrape(&client, &gateway_metrics).await;
    for name in [
        "distriqueue_orchestrator_outbox_backlog",
        "distriqueue_orchestrator_events_unacknowledged",
    ] {
        assert!(last.value(name, &[]).is_some(), "no {name}:\n{}", last.0);
    }

    // One registry per process: every endpoint shows every metric family.
    let endpoints = [
        ("gateway", &gateway_metrics),
        ("orchestrator", &orchestrator_metrics),
        ("worker", &worker_metrics),
    ];
    let mut scrapes = Vec::new();
    for (name, url) in endpoints {
        scrapes.push((name, scrape(&client, url).await));
    }
    let existing = families(&scrapes[0].1);
    for (name, scrape) in &scrapes {
        assert_eq!(families(scrape), existing, "the families of {name}");
    }
    // Every metric the dashboard and the alerts name exists.
    for file in [
        "deploy/monitoring/grafana-dashboard.json",
        "deploy/monitoring/alerts.yml",
    ] {
        let named = metrics_named_in(file);
        assert!(!named.is_empty(), "{file} names no metric");
        let missing: Vec<_> = named
            .difference(&existing)
            .filter(|name| !CLUSTER_ONLY.contains(&name.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics that do not exist: {missing:?}"
        );
    }
    if promtool_ready("metrics") {
        for (name, scrape) in &scrapes {
            promtool_check_metrics(name, &scrape.0);
        }
    }
}

#[test]
fn the_alerting_rules_and_the_scrape_configuration_pass_promtool() {
    if !promtool_ready("monitoring") {
        return;
    }
    let monitoring = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["check", "config", "prometheus.yml"][..],
        &["test", "rules", "alerts_test.yml"][..],
    ] {
        let output = Command::new("promtool")
            .args(args)
            .current_dir(&monitoring)
            .output()
            .expect("run promtool");
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
