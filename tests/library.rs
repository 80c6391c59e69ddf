//! The `distriqueue` library as a Rust user embeds it: all roles in-process through the
//! composition root, on port 0, with a handler of the user's own.

mod common;

use std::time::Duration;

use async_trait::async_trait;
use common::*;
use distriqueue::Config;
use distriqueue_worker::{Handler, HandlerError, Handlers, JobContext};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct Double;

#[async_trait]
impl Handler for Double {
    async fn handle(&self, job: JobContext) -> Result<Value, HandlerError> {
        match job.payload.get("x").and_then(Value::as_i64) {
            Some(x) => Ok(json!({"doubled": x * 2, "attempt": job.attempt})),
            None => Err(HandlerError::Permanent(
                "payload.x must be an integer".into(),
            )),
        }
    }
}

/// Every role in this process (as `serve`), on free ports, over `data_dir`.
fn config(data_dir: &std::path::Path, max_queued_jobs: u64, concurrency: usize) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    config.gateway.addr = "127.0.0.1:0".parse().expect("addr");
    config.gateway.max_body_bytes = 64 * 1024;
    config.orchestrator.addr = "127.0.0.1:0".parse().expect("addr");
    config.orchestrator.max_queued_jobs = max_queued_jobs;
    config.worker.concurrency = Some(concurrency);
    config.worker.shutdown_grace = 5;
    config
}

/// The gateway's URL.
fn gateway_of(started: &distriqueue::Started) -> String {
    format!("http://{}", started.gateway_addr.expect("a gateway runs"))
}

#[tokio::test(flavor = "multi_thread")]
async fn user_registered_handler_runs_and_its_permanent_error_fails_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut handlers = Handlers::builtin();
    handlers.register("double", Double);
    let shutdown = CancellationToken::new();
    let served = distriqueue::start(&config(dir.path(), 1000, 2), handlers, shutdown.clone())
        .await
        .expect("start");
    let gateway = gateway_of(&served);
    let client = http();

    let id = submit_ok(
        &client,
        &gateway,
        &json!({"type": "Double", "jobPriority": "LOW", "payload": {"x": 21}}),
    )
    .await;
    let job = wait_terminal(&client, &gateway, &id, Duration::from_secs(60)).await;
    assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    assert_eq!(job["result"], json!({"doubled": 42, "attempt": 1}));

    let id = submit_ok(
        &client,
        &gateway,
        &json!({"type": "double", "jobPriority": "LOW", "payload": {}}),
    )
    .await;
    let job = wait_terminal(&client, &gateway, &id, Duration::from_secs(60)).await;
    assert_eq!(
        (job["jobStatus"].as_str(), job["errorMessage"].as_str()),
        (Some("FAILED"), Some("payload.x must be an integer"))
    );

    // Built-ins still answer next to the user's handler.
    let id = submit_ok(&client, &gateway, &echo_job("HIGH", 7)).await;
    assert_eq!(
        wait_terminal(&client, &gateway, &id, Duration::from_secs(60)).await["jobStatus"],
        "COMPLETED"
    );

    shutdown.cancel();
    served.stopped.await.expect("joined").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_queued_cap_submissions_get_429_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = CancellationToken::new();
    let served = distriqueue::start(
        &config(dir.path(), 2, 1),
        Handlers::builtin(),
        shutdown.clone(),
    )
    .await
    .expect("start");
    let gateway = gateway_of(&served);
    let client = http();
    let blocker = submit_ok(&client, &gateway, &sleep_job(2_000, "HIGH")).await;
    wait_until(Duration::from_secs(60), "the blocker to run", || {
        let client = client.clone();
        let url = format!("{gateway}/api/jobs/{blocker}");
        async move { get(&client, &url).await.1["jobStatus"] == "RUNNING" }
    })
    .await;
    submit_ok(&client, &gateway, &echo_job("LOW", 1)).await;
    submit_ok(&client, &gateway, &echo_job("LOW", 2)).await;
    let (status, body) = submit(&client, &gateway, &echo_job("LOW", 3)).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|message| message.contains("queue full")),
        "{body}"
    );
    let (_, page) = get(&client, &format!("{gateway}/api/jobs")).await;
    assert_eq!(page["page"]["totalElements"], 3, "{page}");

    shutdown.cancel();
    served.stopped.await.expect("joined").expect("clean stop");
}
