//! A message RabbitMQ can never take (issue 11, item 7): with RabbitMQ's `max_message_size`
//! below a job's message, the outbox sets that message aside, the job ends FAILED with the
//! broker's reason, and every other job goes on.
//!
//! `max_message_size` is a setting of the whole RabbitMQ node, so this test is alone in its test
//! binary (cargo runs test binaries one after another) and puts the old value back when it ends,
//! also when it fails. It skips without `DQ_TEST_AMQP_URL`, like every service test.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::Cluster;
use common::metrics::wait_metric;
use common::*;
use distriqueue_testkit::TestVhost;
use serde_json::json;

/// The node's largest message while the test runs, in bytes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

fn rabbitmqctl_eval(expression: &str) -> String {
    let output = Command::new("rabbitmqctl")
        .args(["eval", expression])
        .output()
        .unwrap_or_else(|error| panic!("rabbitmqctl eval {expression}: {error}"));
    assert!(
        output.status.success(),
        "rabbitmqctl eval {expression}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Sets the node's `max_message_size` (read by each channel as it opens) and puts the earlier
/// value back when dropped.
struct MaxMessageSize {
    earlier: String,
}

impl MaxMessageSize {
    fn set(bytes: usize) -> MaxMessageSize {
        // `{ok,134217728}`, or `undefined` when the node runs with the built-in default.
        let earlier = rabbitmqctl_eval("application:get_env(rabbit, max_message_size).");
        rabbitmqctl_eval(&format!(
            "application:set_env(rabbit, max_message_size, {bytes})."
        ));
        MaxMessageSize { earlier }
    }
}

impl Drop for MaxMessageSize {
    fn drop(&mut self) {
        let restore = match self
            .earlier
            .strip_prefix("{ok,")
            .and_then(|rest| rest.strip_suffix('}'))
        {
            Some(value) => format!("application:set_env(rabbit, max_message_size, {value})."),
            None => "application:unset_env(rabbit, max_message_size).".to_string(),
        };
        rabbitmqctl_eval(&restore);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_the_broker_refuses_fails_its_job_and_the_rest_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Skips (or fails under DQ_REQUIRE_SERVICES=1) as every service test does, before the
    // node's setting is touched.
    let Some(probe) = TestVhost::create("rabbitmq_limits") else {
        return;
    };
    drop(probe);
    let _limit = MaxMessageSize::set(MAX_MESSAGE_BYTES);
    let Some(cluster) = Cluster::start("rabbitmq_limits", dir.path(), 1, 2, 10) else {
        return;
    };
    let gateway = cluster.gateway_url();
    let orchestrator = cluster.orchestrator_url();
    let client = http();

    // Valid for DistriQueue (under 1 MiB), too large for this RabbitMQ.
    let blob = "x".repeat(2 * MAX_MESSAGE_BYTES);
    let big = submit_ok(
        &client,
        &gateway,
        &json!({"type": "echo", "jobPriority": "MEDIUM", "payload": {"blob": blob}, "maxRetries": 3}),
    )
    .await;
    // Every job after it still runs.
    let mut small = Vec::new();
    for n in 0..20 {
        small.push(submit_ok(&client, &gateway, &echo_job("HIGH", n)).await);
    }
    for id in &small {
        let job = wait_terminal(&client, &gateway, id, Duration::from_secs(120)).await;
        assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    }

    // The big job failed for good on the orchestrator, with the broker's reason, never retried.
    // (Its events are as large as its message: the read model never hears of it.)
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let (status, page) = get(&client, &format!("{orchestrator}/api/jobs?status=FAILED")).await;
        assert_eq!(status, 200, "{page}");
        let found = page["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|job| job["id"] == big.as_str()))
            .cloned();
        if let Some(job) = found {
            break job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the big job did not fail: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Failed at its first version after the register: never retried, never started.
    assert_eq!(failed["attempt"], 1, "{failed}");
    assert_eq!(failed["version"], 2, "{failed}");
    assert_eq!(failed["started_at"], serde_json::Value::Null, "{failed}");
    let log = cluster.orchestrators[0].log_text();
    assert!(
        log.contains("the broker refused a message for good") && log.contains(&big),
        "no log line names the refused job {big}"
    );
    let metrics = format!("{orchestrator}/metrics");
    for kind in ["job", "event"] {
        wait_metric(
            &client,
            &metrics,
            "distriqueue_orchestrator_outbox_refused_total",
            &[("kind", kind)],
            "counted",
            |value| value >= 1.0,
        )
        .await;
    }

    // Nothing is wedged: a job submitted now completes too.
    let last = submit_ok(&client, &gateway, &echo_job("LOW", 99)).await;
    let job = wait_terminal(&client, &gateway, &last, Duration::from_secs(60)).await;
    assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
}
