//! The gateway over a real socket: bind on port 0, serve, shut down gracefully; the answers a
//! real client gets for bodies beyond the limit.

use std::sync::Arc;
use std::time::Duration;

use common::FakeOrchestrator;
use distriqueue_gateway::{Gateway, GatewayConfig};
use distriqueue_store::Store;
use distriqueue_util::clock;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

mod common;

struct Running {
    base: String,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<Result<(), distriqueue_gateway::GatewayError>>,
}

async fn start() -> Running {
    let store = Store::open("sqlite::memory:").await.expect("store opens");
    let orchestrator = Arc::new(FakeOrchestrator::new());
    let config = GatewayConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        ..GatewayConfig::default()
    };
    let gateway = Gateway::bind(config, store, orchestrator.clone())
        .await
        .expect("binds");
    gateway.consume_events(
        orchestrator.broker.take_event_receiver().expect("receiver"),
        distriqueue_gateway::FeedRole::Store,
    );
    let addr = gateway.local_addr();
    assert_ne!(addr.port(), 0);
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(gateway.run(shutdown.clone()));
    Running {
        base: format!("http://{addr}"),
        addr,
        shutdown,
        served,
    }
}

#[tokio::test]
async fn ten_megabyte_post_gets_a_json_413_over_the_wire() {
    let server = start().await;
    let client = reqwest::Client::new();
    let padding = "x".repeat(10 * 1024 * 1024);
    let response = client
        .post(format!("{}/api/jobs", server.base))
        .json(&json!({"type": "echo", "jobPriority": "LOW", "payload": {"pad": padding}}))
        .send()
        .await
        .expect("the 413 arrives, not a connection reset");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("JSON body");
    assert!(body["error"].is_string(), "{body}");

    // The server still serves after it.
    let response = client
        .post(format!("{}/api/jobs", server.base))
        .json(&json!({"type": "echo", "jobPriority": "LOW"}))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 202);
    server.shutdown.cancel();
    server.served.await.expect("joined").expect("served");
}

#[tokio::test]
async fn oversized_body_announced_with_expect_continue_is_refused_before_it_is_sent() {
    let server = start().await;
    let mut socket = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connects");
    let request = format!(
        "POST /api/jobs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        server.addr,
        10 * 1024 * 1024
    );
    socket.write_all(request.as_bytes()).await.expect("writes");
    let mut answer = vec![0u8; 4096];
    let n_read = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut answer))
        .await
        .expect("answer in time")
        .expect("reads");
    let answer = String::from_utf8_lossy(&answer[..n_read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    server.shutdown.cancel();
    server.served.await.expect("joined").expect("served");
}

#[tokio::test]
async fn shutdown_ends_open_sse_streams_and_run_returns() {
    let server = start().await;
    let response = reqwest::get(format!("{}/api/jobs/stream", server.base))
        .await
        .expect("stream opens");
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let first = stream.next().await.expect("a frame").expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("event: connected"));

    server.shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = stream.next().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends at shutdown");
    tokio::time::timeout(Duration::from_secs(10), server.served)
        .await
        .expect("run returns after shutdown")
        .expect("joined")
        .expect("served");
}

#[tokio::test]
async fn the_read_model_is_reconciled_with_the_orchestrators_live_snapshots() {
    let store = Store::open("sqlite::memory:").await.expect("store opens");
    let orchestrator = Arc::new(FakeOrchestrator::new());
    let config = GatewayConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        reconcile_every: Duration::from_secs(1),
        ..GatewayConfig::default()
    };
    // No event feed: the only way the job can reach this read model is reconciliation.
    let gateway = Gateway::bind(config, store, orchestrator.clone())
        .await
        .expect("binds");
    let base = format!("http://{}", gateway.local_addr());
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(gateway.run(shutdown.clone()));
    let spec = distriqueue_core::request::parse_job_request(
        &json!({"type": "echo", "jobPriority": "HIGH"}),
        "",
    )
    .expect("valid");
    let id = clock::new_job_id();
    distriqueue_gateway::Orchestrator::register(orchestrator.as_ref(), id, spec)
        .await
        .expect("registered behind the gateway's back");
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = client
            .get(format!("{base}/api/jobs/{id}"))
            .send()
            .await
            .expect("GET");
        if response.status().as_u16() == 200 {
            let job: Value = response.json().await.expect("JSON");
            assert_eq!(job["jobStatus"], "QUEUED");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never reached the read model"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    served.await.expect("joined").expect("served");
}
