//! The orchestrator host across restarts: the log and snapshots on disk bring back the same
//! state, and a restarted node publishes again every QUEUED attempt and every unacknowledged event.

use std::net::SocketAddr;
use std::time::Duration;

use distriqueue_broker::{Broker, InProcessBroker};
use distriqueue_core::request::parse_job_request;
use distriqueue_core::{Command, JobId, Report, ReportKind, WorkerId};
use distriqueue_orchestrator::{Orchestrator, OrchestratorConfig};
use distriqueue_util::clock;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn config(dir: &std::path::Path) -> OrchestratorConfig {
    OrchestratorConfig {
        snapshot_every: 10,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_path_buf(),
        ..OrchestratorConfig::default()
    }
}

fn register(id: JobId) -> Command {
    let spec =
        parse_job_request(&json!({"type": "echo", "jobPriority": "LOW"}), "").expect("valid");
    Command::Register {
        id,
        spec: Box::new(spec),
        max_queued: None,
        max_queued_bytes: None,
        policy: Default::default(),
    }
}

async fn stop(orchestrator: Orchestrator) {
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    orchestrator.run(shutdown).await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_from_snapshot_and_log_restores_state_and_resumes_dispatches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = InProcessBroker::new();
    let orchestrator = Orchestrator::start(config(dir.path()), Broker::InProcess(broker.clone()))
        .await
        .expect("start");
    let handle = orchestrator.handle();
    let ids: Vec<JobId> = (0..60).map(|_| clock::new_job_id()).collect();
    // One command per entry, so the log passes several snapshot points.
    for id in &ids {
        handle
            .submit(register(*id))
            .await
            .expect("committed")
            .expect("registered");
    }
    let worker = WorkerId("w1".into());
    for id in &ids[..20] {
        let lease = handle.read(|state| state.job(*id).and_then(|job| job.lease.clone()));
        let report = |kind| {
            Command::Report(Report {
                job_id: *id,
                attempt: Some(1),
                worker_id: worker.clone(),
                kind,
                lease: lease.clone(),
            })
        };
        handle
            .submit(report(ReportKind::Running))
            .await
            .expect("committed")
            .expect("lease");
        handle
            .submit(report(ReportKind::Completed { result: json!({}) }))
            .await
            .expect("committed")
            .expect("done");
    }
    handle
        .submit(Command::AckEvents { upto: 30 })
        .await
        .expect("committed")
        .expect("acked");
    let before = handle.read(|state| state.clone());
    assert_eq!(before.published_upto(), 30);
    tokio::time::timeout(Duration::from_secs(30), async {
        while !dir.path().join("snapshot.json").exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a snapshot was written");
    stop(orchestrator).await;

    let broker = InProcessBroker::new();
    let mut events = broker.take_event_receiver().expect("event feed");
    let orchestrator = Orchestrator::start(config(dir.path()), Broker::InProcess(broker.clone()))
        .await
        .expect("restart");
    let after = orchestrator.handle().read(|state| state.clone());
    assert!(
        after.leader_time() >= before.leader_time(),
        "leader time went backwards"
    );
    // The start-up barrier entry moves only the leader time.
    let without_time = |state: &distriqueue_core::State| {
        let mut value = serde_json::to_value(state).expect("serializable");
        value
            .as_object_mut()
            .map(|fields| fields.remove("leader_time"));
        value
    };
    assert_eq!(
        without_time(&after),
        without_time(&before),
        "the restarted state equals the state before the stop"
    );

    // Every QUEUED attempt is dispatched again...
    let mut dispatched = Vec::new();
    while let Some(message) = broker.try_next_job() {
        dispatched.push(message.id);
    }
    assert_eq!(dispatched, ids[20..].to_vec());
    // ...and every event past the watermark is published again, in order.
    let mut seqs = Vec::new();
    while seqs.last() != Some(&before.last_seq()) {
        let batch = tokio::time::timeout(Duration::from_secs(10), events.recv_batch(1000))
            .await
            .expect("events are published again")
            .expect("feed open");
        seqs.extend(batch.into_iter().map(|event| event.seq));
    }
    assert_eq!(seqs, (31..=before.last_seq()).collect::<Vec<_>>());
    stop(orchestrator).await;
}
