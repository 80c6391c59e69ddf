//! The worker runtime against a scripted reporter: the lease rule (no handler without an
//! accepted `running`), outcome reports, retries of unavailable reports, and shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use distriqueue_broker::{Broker, InProcessBroker};
use distriqueue_core::machine::JobRecord;
use distriqueue_core::request::parse_job_request;
use distriqueue_core::{
    ControlMessage, JobId, JobMessage, Millis, Refusal, Report, ReportKind, WorkerHeartbeat,
    WorkerId,
};
use distriqueue_util::clock;
use distriqueue_worker::{Handlers, ReportError, Reporter, Worker, WorkerConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Refuses `running` for the listed jobs, answers "unavailable" to the first `n_unavailable`
/// reports, and records every report it accepted.
#[derive(Default)]
struct Script {
    /// Heartbeats after the first fail: the orchestrator goes out of reach once the worker
    /// started.
    unreachable: bool,
    n_heartbeats: Mutex<usize>,
    refuse: Vec<JobId>,
    n_unavailable: Mutex<usize>,
    accepted: Mutex<Vec<Report>>,
}

#[async_trait]
impl Reporter for Script {
    async fn report(&self, report: Report) -> Result<(), ReportError> {
        {
            let mut n_unavailable = self.n_unavailable.lock().expect("lock");
            if *n_unavailable > 0 {
                *n_unavailable -= 1;
                return Err(ReportError::unavailable("scripted"));
            }
        }
        if report.kind == ReportKind::Running && self.refuse.contains(&report.job_id) {
            return Err(ReportError::Refused(Refusal::LeaseHeld {
                id: report.job_id,
                attempt: 1,
                holder: WorkerId("other".into()),
            }));
        }
        self.accepted.lock().expect("lock").push(report);
        Ok(())
    }

    async fn heartbeat(&self, _heartbeat: WorkerHeartbeat) -> Result<Vec<JobId>, ReportError> {
        let mut n_heartbeats = self.n_heartbeats.lock().expect("lock");
        *n_heartbeats += 1;
        if self.unreachable && *n_heartbeats > 1 {
            return Err(ReportError::unavailable("scripted"));
        }
        Ok(Vec::new())
    }
}

fn message(job_type: &str, payload: serde_json::Value) -> JobMessage {
    let spec = parse_job_request(
        &json!({"type": job_type, "jobPriority": "HIGH", "payload": payload}),
        "",
    )
    .expect("valid request");
    JobRecord::queued(clock::new_job_id(), spec, Millis(0)).message()
}

fn config(ledger: Option<std::path::PathBuf>) -> WorkerConfig {
    config_with_timeout(ledger, Duration::from_secs(30))
}

fn config_with_timeout(
    ledger: Option<std::path::PathBuf>,
    heartbeat_timeout: Duration,
) -> WorkerConfig {
    WorkerConfig {
        worker_id: WorkerId("w1".into()),
        concurrency: 2,
        ledger,
        shutdown_grace: Duration::from_secs(5),
        heartbeat_timeout,
    }
}

/// Starts a two-slot worker on `broker` reporting to `script`; returns its shutdown token and task.
fn start(
    broker: &InProcessBroker,
    script: &Arc<Script>,
    ledger: Option<std::path::PathBuf>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let reporter = Arc::clone(script) as Arc<dyn Reporter>;
    let worker = Worker::new(
        config(ledger),
        Handlers::builtin(),
        &Broker::InProcess(broker.clone()),
        reporter,
    )
    .expect("worker");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    (shutdown, running)
}

async fn wait_for_reports(script: &Script, n: usize) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while script.accepted.lock().expect("lock").len() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("reports arrive");
}

#[tokio::test]
async fn refused_running_report_means_the_handler_never_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.jsonl");
    let broker = InProcessBroker::new();
    let refused = message("echo", json!({"n": 1}));
    let accepted = message("calculate", json!({"operation": "sum", "numbers": [1, 2]}));
    let script = Arc::new(Script {
        refuse: vec![refused.id],
        n_unavailable: Mutex::new(1),
        ..Script::default()
    });
    let (shutdown, running) = start(&broker, &script, Some(ledger.clone()));
    broker.publish_job(refused.clone());
    broker.publish_job(accepted.clone());
    wait_for_reports(&script, 2).await;
    shutdown.cancel();
    running.await.expect("worker stops");

    let reports = script.accepted.lock().expect("lock").clone();
    assert!(
        reports.iter().all(|report| report.job_id == accepted.id),
        "{reports:?}"
    );
    assert_eq!(reports[0].kind, ReportKind::Running);
    assert_eq!(
        reports[1].kind,
        ReportKind::Completed {
            result: json!({"sum": 3, "count": 2})
        }
    );
    assert_eq!(reports[1].attempt, Some(1));
    let ledger = std::fs::read_to_string(&ledger).expect("ledger");
    assert!(
        !ledger.contains(&refused.id.to_string()),
        "the refused job ran: {ledger}"
    );
    assert_eq!(
        ledger.lines().count(),
        2,
        "one start and one finish: {ledger}"
    );
}

#[tokio::test]
async fn bad_input_and_unknown_types_are_permanent_failures() {
    let broker = InProcessBroker::new();
    let script = Arc::new(Script::default());
    let (shutdown, running) = start(&broker, &script, None);
    broker.publish_job(message("nope", json!({})));
    wait_for_reports(&script, 2).await;
    broker.publish_job(message("sum", json!({"numbers": []})));
    wait_for_reports(&script, 4).await;
    shutdown.cancel();
    running.await.expect("worker stops");
    let failures: Vec<(String, bool)> = script
        .accepted
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|report| match &report.kind {
            ReportKind::Failed { error, permanent } => Some((error.clone(), *permanent)),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(
        failures[0],
        ("No handler for job type 'nope'".to_string(), true)
    );
    assert!(
        failures[1].1 && failures[1].0.contains("numbers"),
        "{failures:?}"
    );
}

#[tokio::test]
async fn shutdown_lets_a_running_handler_finish_and_report() {
    let broker = InProcessBroker::new();
    let script = Arc::new(Script::default());
    let (shutdown, running) = start(&broker, &script, None);
    broker.publish_job(message("sleep", json!({"ms": 300})));
    wait_for_reports(&script, 1).await;
    shutdown.cancel();
    running.await.expect("worker stops");
    let reports = script.accepted.lock().expect("lock").clone();
    assert!(
        matches!(
            reports.last().map(|report| &report.kind),
            Some(ReportKind::Completed { .. })
        ),
        "{reports:?}"
    );
}

#[tokio::test]
async fn cancel_stops_the_running_handler_and_reports_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.jsonl");
    let broker = InProcessBroker::new();
    let script = Arc::new(Script::default());
    let (shutdown, running) = start(&broker, &script, Some(ledger.clone()));
    let sleeper = message("sleep", json!({"ms": 60_000}));
    broker.publish_job(sleeper.clone());
    wait_for_reports(&script, 1).await;
    broker.publish_control(ControlMessage::Cancel {
        worker_id: WorkerId("w1".into()),
        job_id: sleeper.id,
        attempt: 1,
    });
    // The slot is free again: the next job runs and completes.
    let next = message("echo", json!({}));
    broker.publish_job(next.clone());
    wait_for_reports(&script, 3).await;
    shutdown.cancel();
    running.await.expect("worker stops");
    let reports = script.accepted.lock().expect("lock").clone();
    assert!(
        reports
            .iter()
            .filter(|report| report.job_id == sleeper.id)
            .all(|report| report.kind == ReportKind::Running),
        "{reports:?}"
    );
    let ledger = std::fs::read_to_string(&ledger).expect("ledger");
    let sleeper_lines: Vec<&str> = ledger
        .lines()
        .filter(|line| line.contains(&sleeper.id.to_string()))
        .collect();
    assert_eq!(sleeper_lines.len(), 1, "started, never finished: {ledger}");
    assert!(sleeper_lines[0].contains("\"start\""), "{ledger}");
}

#[tokio::test]
async fn worker_that_cannot_reach_the_orchestrator_stops_its_own_handlers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.jsonl");
    let broker = InProcessBroker::new();
    let script = Arc::new(Script {
        unreachable: true,
        ..Script::default()
    });
    let reporter = Arc::clone(&script) as Arc<dyn Reporter>;
    let config = config_with_timeout(Some(ledger.clone()), Duration::from_millis(300));
    let worker = Worker::new(
        config,
        Handlers::builtin(),
        &Broker::InProcess(broker.clone()),
        reporter,
    )
    .expect("worker");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let sleeper = message("sleep", json!({"ms": 60_000}));
    broker.publish_job(sleeper.clone());
    wait_for_reports(&script, 1).await;
    // The slot is free again once self-fencing stopped the sleeper.
    let next = message("echo", json!({}));
    let second_slot_busy = message("sleep", json!({"ms": 60_000}));
    broker.publish_job(second_slot_busy);
    broker.publish_job(next.clone());
    tokio::time::timeout(Duration::from_secs(30), async {
        while !script.accepted.lock().expect("lock").iter().any(|report| {
            report.job_id == next.id && matches!(report.kind, ReportKind::Completed { .. })
        }) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the fenced slots run the next job");
    shutdown.cancel();
    running.await.expect("worker stops");
    let text = std::fs::read_to_string(&ledger).expect("ledger");
    let sleeper_lines = text
        .lines()
        .filter(|line| line.contains(&sleeper.id.to_string()))
        .count();
    assert_eq!(
        sleeper_lines, 1,
        "the fenced handler started and never finished: {text}"
    );
}

#[tokio::test]
async fn a_second_copy_of_a_running_attempt_is_dropped_without_asking_for_the_lease() {
    let broker = InProcessBroker::new();
    let script = Arc::new(Script::default());
    let (shutdown, running) = start(&broker, &script, None);
    let job = message("sleep", json!({"ms": 300}));
    broker.publish_job(job.clone());
    wait_for_reports(&script, 1).await;
    broker.publish_job(job.clone());
    tokio::time::timeout(Duration::from_secs(30), async {
        while !script
            .accepted
            .lock()
            .expect("lock")
            .iter()
            .any(|report| matches!(report.kind, ReportKind::Completed { .. }))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the job completes");
    shutdown.cancel();
    running.await.expect("worker stops");
    let reports = script.accepted.lock().expect("lock").clone();
    let n_running = reports
        .iter()
        .filter(|report| report.kind == ReportKind::Running)
        .count();
    let n_outcomes = reports
        .iter()
        .filter(|report| {
            matches!(
                report.kind,
                ReportKind::Completed { .. } | ReportKind::Failed { .. }
            )
        })
        .count();
    assert_eq!(
        (n_running, n_outcomes),
        (1, 1),
        "one lease request, one outcome: {reports:?}"
    );
}

#[tokio::test]
async fn a_worker_takes_no_job_before_the_orchestrator_answers_a_heartbeat() {
    struct Unreachable;
    #[async_trait]
    impl Reporter for Unreachable {
        async fn report(&self, _report: Report) -> Result<(), ReportError> {
            Err(ReportError::unavailable("scripted"))
        }
        async fn heartbeat(&self, _: WorkerHeartbeat) -> Result<Vec<JobId>, ReportError> {
            Err(ReportError::unavailable("scripted"))
        }
    }
    let broker = InProcessBroker::new();
    let worker = Worker::new(
        config(None),
        Handlers::builtin(),
        &Broker::InProcess(broker.clone()),
        Arc::new(Unreachable),
    )
    .expect("worker");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    broker.publish_job(message("echo", json!({})));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        broker.depths().iter().map(|(_, n)| n).sum::<usize>(),
        1,
        "the message stays in its queue"
    );
    shutdown.cancel();
    running.await.expect("the worker stops while waiting");
}
