//! The lifecycle property test's command sequences (`crates/core/tests/steps`), replayed through
//! a three-node cluster (issue 5): three orchestrator nodes in this process, talking Raft over
//! HTTP on loopback. Every sequence goes to the leader; once every node has applied the whole
//! log, the three states are the same.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use distriqueue_broker::{Broker, InProcessBroker};
use distriqueue_core::machine::Applied;
use distriqueue_core::{Command, JobId, JobResponse, Timer, TimerKind};
use distriqueue_orchestrator::{Orchestrator, OrchestratorConfig, OrchestratorHandle};
use distriqueue_util::clock;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

#[path = "../../core/tests/steps/mod.rs"]
mod steps;

use steps::{job_id, retry, step_strategy, with_token, Step};

/// Generous: three nodes on a loaded CI machine.
const DEADLINE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Three nodes serving; stopped when `shutdown` is cancelled.
async fn three_nodes(
    dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> Vec<OrchestratorHandle> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let peers: BTreeMap<u64, String> = ports
        .iter()
        .enumerate()
        .map(|(index, (_, peer))| (index as u64 + 1, format!("http://127.0.0.1:{peer}")))
        .collect();
    let mut handles = Vec::new();
    for (index, (port, peer)) in ports.iter().enumerate() {
        let config = OrchestratorConfig {
            node_id: index as u64 + 1,
            peers: peers.clone(),
            peer_addr: Some(SocketAddr::from(([127, 0, 0, 1], *peer))),
            cluster_secret: Some("the-test-cluster-secret".into()),
            snapshot_every: 25,
            addr: SocketAddr::from(([127, 0, 0, 1], *port)),
            data_dir: dir.join(format!("node-{}", index + 1)),
            ..OrchestratorConfig::default()
        };
        let node = Orchestrator::start(config, Broker::InProcess(InProcessBroker::new()))
            .await
            .expect("node starts");
        handles.push(node.handle());
        tokio::spawn(node.run(shutdown.clone()));
    }
    handles
}

/// The node that leads and runs its duties.
async fn leader(handles: &[OrchestratorHandle]) -> OrchestratorHandle {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(leader) = handles.iter().find(|handle| handle.is_live_leader()) {
            return leader.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Turns a generated step into commands for the cluster, as the core test does for one state
/// machine (timers fire when due in real time; a restart is left to the restart tests).
fn commands(
    step: Step,
    leader: &OrchestratorHandle,
    snapshots: &BTreeMap<JobId, JobResponse>,
) -> Vec<Command> {
    let now = clock::now();
    match step {
        Step::Command(command) => vec![command],
        Step::Report(command, token) => {
            let current = match &command {
                Command::Report(report) => {
                    leader.read(|state| state.job(report.job_id).and_then(|job| job.lease.clone()))
                }
                _ => None,
            };
            vec![with_token(command, token, current)]
        }
        Step::FireDueTimers => leader
            .read(|state| state.timers())
            .into_iter()
            .filter(|timer| timer.at <= now)
            .map(Command::TimerFired)
            .collect(),
        Step::FireStaleTimer(n, attempt, kind) => {
            let kind = [
                TimerKind::Due,
                TimerKind::Retry,
                TimerKind::ExecutionTimeout,
            ][usize::from(kind)];
            vec![Command::TimerFired(Timer {
                at: now,
                job_id: job_id(n),
                attempt,
                kind,
            })]
        }
        Step::RetryFinished(n) => snapshots.get(&job_id(n)).map(retry).into_iter().collect(),
        Step::Restart => Vec::new(),
    }
}

/// Every node's applied log index, and its state as JSON.
fn applied_and_state(handle: &OrchestratorHandle) -> (Option<u64>, serde_json::Value) {
    let applied = handle.metrics().last_applied.map(|log_id| log_id.index);
    let state = handle.read(|state| serde_json::to_value(state).expect("serializable"));
    (applied, state)
}

async fn replay(steps: Vec<Step>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let shutdown = CancellationToken::new();
    let handles = three_nodes(dir.path(), &shutdown).await;
    let leader = leader(&handles).await;
    let mut snapshots: BTreeMap<JobId, JobResponse> = BTreeMap::new();
    for step in steps {
        for command in commands(step, &leader, &snapshots) {
            if let Ok(Ok(Applied { job: Some(job), .. })) = leader.submit(command).await {
                snapshots.insert(job.id, *job);
            }
        }
    }
    // The same log everywhere gives the same state everywhere.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let views: Vec<(Option<u64>, serde_json::Value)> =
            handles.iter().map(applied_and_state).collect();
        let same_log = views.iter().all(|(applied, _)| *applied == views[0].0);
        if same_log && views.iter().all(|(_, state)| *state == views[0].1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nodes differ after the same log: {:?}",
            views.iter().map(|(applied, _)| applied).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
}

proptest! {
    // Each case starts a three-node cluster: few cases, long sequences.
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn every_node_ends_with_the_same_state_after_the_same_log(
        steps in prop::collection::vec(step_strategy(), 20..120)
    ) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(replay(steps));
    }
}
