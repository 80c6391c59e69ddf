//! The event feed never wedges on a row the read model can never store (issue 11, item 7):
//! on PostgreSQL, which refuses NUL in text, an event whose snapshot carries one is logged and
//! skipped, and the events around it are stored.

use std::sync::Arc;
use std::time::Duration;

use distriqueue_core::{JobResponse, StatusEvent};
use distriqueue_gateway::{AppState, FeedRole, GatewayConfig};
use distriqueue_store::Store;
use distriqueue_testkit::TestDatabase;

mod common;

use common::FakeOrchestrator;

/// A lifecycle event carrying `job` at `seq`.
fn event(job: &JobResponse, seq: u64) -> StatusEvent {
    StatusEvent {
        seq,
        job_id: job.id,
        status: job.status,
        worker_id: None,
        result: None,
        error_message: None,
        progress: None,
        attempt: job.attempt,
        version: job.version,
        occurred_at: job.created_at.clone(),
        job: job.clone(),
        format: 1,
    }
}

/// Waits until the feed has stored every event up to `seq`.
async fn wait_stored(stored_upto: &mut tokio::sync::watch::Receiver<u64>, seq: u64) {
    tokio::time::timeout(
        Duration::from_secs(30),
        stored_upto.wait_for(|upto| *upto >= seq),
    )
    .await
    .expect("events stored in time")
    .expect("feed alive");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_postgresql_refuses_is_skipped_and_the_feed_moves_on() {
    let Some(database) = TestDatabase::create("gateway_unstorable_row") else {
        return;
    };
    let store = Store::open(database.url()).await.expect("store opens");
    let orchestrator = Arc::new(FakeOrchestrator::new());
    let state = AppState::new(
        store.clone(),
        orchestrator.clone(),
        GatewayConfig::default(),
    );
    let receiver = orchestrator.broker.take_event_receiver().expect("receiver");
    let mut stored_upto = state.consume_events(receiver, FeedRole::Store);

    let jobs: Vec<JobResponse> = (0..3)
        .map(|n| {
            let body =
                serde_json::json!({"type": "echo", "jobPriority": "HIGH", "payload": {"n": n}});
            let spec = distriqueue_core::request::parse_job_request(&body, "").expect("valid");
            let id = distriqueue_util::clock::new_job_id();
            let mut job = distriqueue_core::machine::JobRecord::queued(
                id,
                spec,
                distriqueue_util::clock::now(),
            )
            .response();
            job.version = 1;
            job
        })
        .collect();
    let mut poisoned = jobs[1].clone();
    poisoned.job_type = "echo\u{0}".to_string();
    orchestrator.broker.publish_events([
        event(&jobs[0], 1),
        event(&poisoned, 2),
        event(&jobs[2], 3),
    ]);
    // The feed moves past the unstorable row.
    wait_stored(&mut stored_upto, 3).await;
    for job in [&jobs[0], &jobs[2]] {
        let stored = store.get(job.id).await.expect("read");
        assert_eq!(stored.map(|job| job.version), Some(1));
    }
    assert_eq!(store.get(poisoned.id).await.expect("read"), None);
    // The feed goes on storing what comes next.
    let mut next = jobs[1].clone();
    next.version = 2;
    orchestrator.broker.publish_events([event(&next, 4)]);
    wait_stored(&mut stored_upto, 4).await;
    let stored = store.get(next.id).await.expect("read");
    assert_eq!(stored.map(|job| job.version), Some(2));
}
