//! The example Python worker (examples/python_worker, pika + requests) processes jobs submitted
//! through the gateway of a distributed DistriQueue: it speaks only the contract (RabbitMQ
//! topology and the orchestrator's HTTP worker protocol).
//!
//! Needs RabbitMQ (`DQ_TEST_AMQP_URL`) and a Python 3 with the example's requirements
//! (`pip install -r examples/python_worker/requirements.txt`; `.ci/run` installs them). Skips
//! without them, and fails instead when `DQ_REQUIRE_SERVICES=1`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::{Cluster, Spec, WORKER_KEY};
use common::*;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(120);

/// The Python worker process; killed when dropped.
struct PythonWorker(Child);

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_python_worker_processes_jobs_submitted_through_the_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    // With API keys: the gateway, the orchestrator and the Python worker all use theirs.
    let spec = Spec {
        workers: 0,
        concurrency: 1,
        api_keys: true,
        ..Spec::default()
    };
    let Some(cluster) = Cluster::start_spec("python_worker", dir.path(), spec) else {
        return;
    };
    if !distriqueue_testkit::python_modules(
        "python_worker",
        &["pika", "requests"],
        "pip install -r examples/python_worker/requirements.txt",
    ) {
        return;
    }
    let log = std::fs::File::create(dir.path().join("python.log")).expect("log");
    let _worker = PythonWorker(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/python_worker/worker.py"
            ))
            .env("RABBITMQ_HOST", "127.0.0.1")
            .env("RABBITMQ_VHOST", cluster.vhost.name())
            .env("ORCHESTRATOR_URL", cluster.orchestrator_url())
            .env("WORKER_ID", "py-1")
            .env("DQ_API_KEY", WORKER_KEY)
            .env("HEARTBEAT_INTERVAL_S", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the Python worker"),
    );
    let client = cluster.http();
    let gateway = cluster.gateway_url();
    // Without the key, nothing.
    let (status, _) = submit(&http(), &gateway, &json!({"type": "echo"})).await;
    assert_eq!(status, 401);
    let cases = [
        (
            json!({"type": "echo", "jobPriority": "HIGH", "payload": {"hello": "python"}}),
            "COMPLETED",
            json!({"echo": {"hello": "python"}}),
        ),
        (
            json!({"type": "calculate", "jobPriority": "LOW",
                   "payload": {"operation": "sum", "numbers": [1, 2, 3, 4, 5]}}),
            "COMPLETED",
            json!({"sum": 15, "count": 5}),
        ),
        (
            json!({"type": "resize_image", "jobPriority": "MEDIUM", "maxRetries": 2}),
            "FAILED",
            json!("No handler for job type 'resize_image'"),
        ),
    ];
    let mut ids = Vec::new();
    for (request, _, _) in &cases {
        ids.push(submit_ok(&client, &gateway, request).await);
    }
    for (id, (request, status, expected)) in ids.iter().zip(&cases) {
        let job = wait_terminal(&client, &gateway, id, DEADLINE).await;
        assert_eq!(job["jobStatus"], *status, "{request} -> {job}");
        assert_eq!(job["workerId"], "py-1", "{job}");
        if *status == "COMPLETED" {
            assert!(
                scenarios::contains(&job["result"], expected),
                "{request}: expected {expected} in {job}"
            );
        } else {
            // Permanent: one attempt, whatever maxRetries.
            assert_eq!(job["errorMessage"], *expected, "{job}");
            assert_eq!(job["retryCount"], 0, "{job}");
        }
    }
    // Its heartbeats reach the orchestrator.
    let (_, status) = get(
        &client,
        &format!("{}/api/cluster/status", cluster.orchestrator_url()),
    )
    .await;
    assert!(
        status["cluster"]["workers"]
            .as_array()
            .is_some_and(|workers| workers.iter().any(|worker| worker["workerId"] == "py-1")),
        "{status}"
    );
}
