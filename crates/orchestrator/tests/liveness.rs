//! Worker liveness on the orchestrator: a worker that stops heartbeating is declared lost after
//! the heartbeat timeout, and its running attempt is retried by policy.

use std::net::SocketAddr;
use std::time::Duration;

use distriqueue_broker::{Broker, InProcessBroker};
use distriqueue_core::machine::Jitter;
use distriqueue_core::request::parse_job_request;
use distriqueue_core::{
    Command, JobStatus, Report, ReportKind, RetryPolicy, WorkerHeartbeat, WorkerId,
};
use distriqueue_orchestrator::{Orchestrator, OrchestratorConfig};
use distriqueue_util::clock;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn silent_worker_is_declared_lost_and_its_attempt_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = OrchestratorConfig {
        heartbeat_timeout: Duration::from_millis(600),
        retry_policy: RetryPolicy {
            base_ms: 50,
            max_ms: 50,
            jitter: Jitter::None,
        },
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().to_path_buf(),
        ..OrchestratorConfig::default()
    };
    let broker = InProcessBroker::new();
    let orchestrator = Orchestrator::start(config, Broker::InProcess(broker.clone()))
        .await
        .expect("start");
    let handle = orchestrator.handle();
    let id = clock::new_job_id();
    let spec =
        parse_job_request(&json!({"type": "echo", "jobPriority": "LOW"}), "").expect("valid");
    let register = Command::Register {
        id,
        spec: Box::new(spec),
        max_queued: None,
        max_queued_bytes: None,
        policy: handle.retry_policy(),
    };
    handle
        .submit(register)
        .await
        .expect("committed")
        .expect("registered");
    let worker = WorkerId("quiet".into());
    let heartbeat = WorkerHeartbeat {
        worker_id: worker.clone(),
        worker_type: "test".into(),
        capacity: 1,
        current_load: 1,
        total_jobs_processed: 0,
        successful_jobs: 0,
        failed_jobs: 0,
        timestamp: 0,
        instance: None,
    };
    assert!(handle
        .heartbeat(heartbeat)
        .await
        .expect("recorded")
        .is_empty());
    let running = Command::Report(Report {
        job_id: id,
        attempt: Some(1),
        worker_id: worker,
        kind: ReportKind::Running,
        lease: handle.read(|state| state.job(id).and_then(|job| job.lease.clone())),
    });
    handle
        .submit(running)
        .await
        .expect("committed")
        .expect("lease");

    // No more heartbeats: after the timeout the attempt fails ("worker lost") and, after its
    // backoff, is dispatched again as attempt 2.
    let second = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(message) = broker.try_next_job() {
                if message.attempt == 2 {
                    return message;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("attempt 2 dispatched");
    assert_eq!(second.id, id);
    let job = handle.read(|state| state.job(id).cloned()).expect("live");
    assert_eq!((job.status, job.retry_count), (JobStatus::Queued, 1));
    assert_eq!(job.attempts[0].error.as_deref(), Some("worker lost"));

    let shutdown = CancellationToken::new();
    shutdown.cancel();
    orchestrator.run(shutdown).await.expect("clean stop");
}
