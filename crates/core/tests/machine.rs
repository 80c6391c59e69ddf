//! The lifecycle state machine through its public surface: transition tables and a property test
//! over random command sequences with simulated time.

use std::collections::{BTreeMap, BTreeSet};

use distriqueue_core::machine::{Applied, MachineConfig};
use distriqueue_core::request::parse_job_request;
use distriqueue_core::{
    Batch, Command, ControlMessage, Effect, JobId, JobStatus, Millis, Outcome, Refusal, Report,
    ReportKind, State, WorkerId,
};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

fn job_id(n: u8) -> JobId {
    JobId(Uuid::from_u128(u128::from(n) + 1))
}

fn worker(n: u8) -> WorkerId {
    WorkerId(format!("w{n}"))
}

fn register(n: u8) -> Command {
    let spec = parse_job_request(&json!({"type": "echo", "jobPriority": "HIGH"}), "")
        .expect("valid request");
    Command::Register {
        id: job_id(n),
        spec: Box::new(spec),
        max_queued: None,
    }
}

fn report(n: u8, attempt: Option<u32>, w: u8, kind: ReportKind) -> Command {
    Command::Report(Report {
        job_id: job_id(n),
        attempt,
        worker_id: worker(w),
        kind,
    })
}

fn apply(state: &mut State, now: i64, command: Command) -> (Outcome, Vec<Effect>) {
    let (mut outcomes, effects) = state.apply(&Batch {
        now: Millis(now),
        commands: vec![command],
    });
    (outcomes.remove(0), effects)
}

/// Applies a command that must succeed.
fn step(state: &mut State, now: i64, command: Command) -> Vec<Effect> {
    let (outcome, effects) = apply(state, now, command);
    assert!(outcome.is_ok(), "{outcome:?}");
    effects
}

fn status_of(outcome: &Outcome) -> JobStatus {
    match outcome {
        Ok(Applied { job: Some(job), .. }) => job.status,
        other => panic!("expected a job, got {other:?}"),
    }
}

#[test]
fn happy_path_queues_runs_and_completes() {
    let mut state = State::default();
    let (outcome, effects) = apply(&mut state, 1_000, register(0));
    assert_eq!(status_of(&outcome), JobStatus::Queued);
    assert!(matches!(&effects[0], Effect::Dispatch(message) if message.attempt == 1));
    assert!(matches!(&effects[1], Effect::Emit(event) if event.seq == 1 && event.version == 1));

    let (outcome, _) = apply(
        &mut state,
        1_500,
        report(0, Some(1), 1, ReportKind::Running),
    );
    assert_eq!(status_of(&outcome), JobStatus::Running);
    let (outcome, effects) = apply(
        &mut state,
        2_000,
        report(
            0,
            Some(1),
            1,
            ReportKind::Completed {
                result: json!({"ok": true}),
            },
        ),
    );
    let Ok(Applied { job: Some(job), .. }) = outcome else {
        panic!("completed")
    };
    assert_eq!(
        (
            job.status,
            job.queue_time_ms,
            job.execution_time_ms,
            job.total_duration_ms
        ),
        (JobStatus::Completed, 500, 500, Some(1_000))
    );
    assert_eq!(job.worker_id.as_deref(), Some("w1"));
    assert!(
        matches!(&effects[0], Effect::Emit(event) if event.seq == 3 && event.version == 3 && event.result.is_some())
    );
    assert_eq!(
        state.tombstone(job_id(0)).map(|t| t.status),
        Some(JobStatus::Completed)
    );
}

#[test]
fn lease_rule_refuses_every_other_report() {
    let mut state = State::default();
    step(&mut state, 0, register(0));
    assert!(
        apply(&mut state, 1, report(0, Some(1), 1, ReportKind::Running))
            .0
            .is_ok()
    );
    for (command, expected_status) in [
        (report(0, Some(1), 2, ReportKind::Running), 409),
        (report(0, Some(1), 1, ReportKind::Running), 409),
        (report(0, Some(2), 1, ReportKind::Running), 409),
        (
            report(0, None, 2, ReportKind::Completed { result: json!({}) }),
            409,
        ),
        (
            report(0, Some(1), 2, ReportKind::Progress { percent: 5 }),
            409,
        ),
        (report(9, Some(1), 1, ReportKind::Running), 404),
    ] {
        let (outcome, effects) = apply(&mut state, 2, command.clone());
        let refusal = outcome.expect_err("refused");
        assert_eq!(
            refusal.http_status(),
            expected_status,
            "{command:?}: {refusal}"
        );
        assert!(effects.is_empty());
    }
    // A report without attempt from the holder counts for the current attempt.
    let (outcome, _) = apply(
        &mut state,
        3,
        report(
            0,
            None,
            1,
            ReportKind::Failed {
                error: "boom".into(),
                permanent: true,
            },
        ),
    );
    assert_eq!(status_of(&outcome), JobStatus::Failed);
    let (outcome, _) = apply(
        &mut state,
        4,
        report(0, Some(1), 1, ReportKind::Completed { result: json!({}) }),
    );
    assert_eq!(
        outcome,
        Err(Refusal::Terminal {
            id: job_id(0),
            status: JobStatus::Failed
        })
    );
}

#[test]
fn cancel_is_final_and_refused_when_terminal() {
    let mut state = State::default();
    step(&mut state, 0, register(0));
    let (outcome, effects) = apply(&mut state, 1, Command::Cancel { id: job_id(0) });
    assert_eq!(status_of(&outcome), JobStatus::Cancelled);
    assert_eq!(effects.len(), 1);
    assert_eq!(state.n_waiting(), 0);
    let (outcome, _) = apply(&mut state, 2, report(0, Some(1), 1, ReportKind::Running));
    assert_eq!(outcome.expect_err("late start refused").http_status(), 409);
    let (outcome, _) = apply(&mut state, 3, Command::Cancel { id: job_id(0) });
    assert_eq!(outcome.expect_err("second cancel").http_status(), 409);
    let (outcome, _) = apply(&mut state, 3, Command::Cancel { id: job_id(7) });
    assert_eq!(outcome, Err(Refusal::NotFound(job_id(7))));
}

#[test]
fn cancel_of_running_job_tells_its_worker_to_stop() {
    let mut state = State::default();
    step(&mut state, 0, register(0));
    step(&mut state, 1, report(0, Some(1), 2, ReportKind::Running));
    let (outcome, effects) = apply(&mut state, 2, Command::Cancel { id: job_id(0) });
    assert_eq!(status_of(&outcome), JobStatus::Cancelled);
    assert_eq!(
        effects[0],
        Effect::StopAttempt(ControlMessage::Cancel {
            worker_id: worker(2),
            job_id: job_id(0),
            attempt: 1
        })
    );
    assert!(matches!(&effects[1], Effect::Emit(event) if event.status == JobStatus::Cancelled));
    // A queued job has no worker to tell.
    step(&mut state, 3, register(1));
    let (_, effects) = apply(&mut state, 4, Command::Cancel { id: job_id(1) });
    assert!(
        effects
            .iter()
            .all(|effect| matches!(effect, Effect::Emit(_))),
        "{effects:?}"
    );
}

#[test]
fn register_is_idempotent_and_capped() {
    let mut state = State::default();
    step(&mut state, 0, register(0));
    let (outcome, effects) = apply(&mut state, 1, register(0));
    assert!(matches!(
        outcome,
        Ok(Applied {
            created: false,
            job: Some(_)
        })
    ));
    assert!(effects.is_empty(), "a repeated register dispatches nothing");
    let Command::Register { id, spec, .. } = register(1) else {
        unreachable!()
    };
    let (outcome, _) = apply(
        &mut state,
        2,
        Command::Register {
            id,
            spec,
            max_queued: Some(1),
        },
    );
    assert_eq!(outcome, Err(Refusal::QueueFull { cap: 1 }));
}

#[test]
fn worker_lost_dispatches_a_new_attempt_and_fences_the_old_one() {
    let mut state = State::default();
    step(&mut state, 0, register(0));
    step(&mut state, 1, report(0, Some(1), 1, ReportKind::Running));
    assert_eq!(
        state.lease_holders().into_iter().collect::<Vec<_>>(),
        [worker(1)]
    );
    let (_, effects) = apply(
        &mut state,
        2,
        Command::WorkerLost {
            worker_id: worker(1),
        },
    );
    assert!(matches!(&effects[0], Effect::Dispatch(message) if message.attempt == 2));
    let (outcome, _) = apply(
        &mut state,
        3,
        report(0, Some(1), 1, ReportKind::Completed { result: json!({}) }),
    );
    assert_eq!(
        outcome,
        Err(Refusal::StaleAttempt {
            id: job_id(0),
            reported: 1,
            current: 2
        })
    );
    assert_eq!(
        state
            .pending_dispatches()
            .iter()
            .map(|m| m.attempt)
            .collect::<Vec<_>>(),
        [2]
    );
}

#[test]
fn acked_events_leave_the_unpublished_buffer() {
    let mut state = State::default();
    step(&mut state, 0, register(0));
    step(&mut state, 0, register(1));
    step(&mut state, 0, Command::Cancel { id: job_id(0) });
    assert_eq!(
        state.unpublished().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    step(&mut state, 0, Command::AckEvents { upto: 2 });
    assert_eq!(state.unpublished().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    step(&mut state, 0, Command::AckEvents { upto: 99 });
    assert_eq!(
        (state.published_upto(), state.unpublished().count()),
        (3, 0)
    );
}

#[test]
fn tombstones_expire_after_retention() {
    let mut state = State::new(MachineConfig {
        tombstone_retention_ms: 1_000,
    });
    step(&mut state, 0, register(0));
    step(&mut state, 10, Command::Cancel { id: job_id(0) });
    step(&mut state, 1_010, Command::AckEvents { upto: 0 });
    assert!(state.tombstone(job_id(0)).is_some());
    step(&mut state, 1_011, Command::AckEvents { upto: 0 });
    assert!(state.tombstone(job_id(0)).is_none());
}

#[test]
fn state_round_trips_through_json() {
    let mut state = State::default();
    step(&mut state, 0, register(0));
    step(&mut state, 1, report(0, Some(1), 1, ReportKind::Running));
    step(&mut state, 2, register(1));
    let text = serde_json::to_string(&state).expect("serializable");
    let back: State = serde_json::from_str(&text).expect("deserializable");
    assert_eq!(back, state);
}

fn command_strategy() -> impl Strategy<Value = Command> {
    let job = 0u8..4;
    let attempt = prop_oneof![Just(None), (1u32..4).prop_map(Some)];
    let kind = prop_oneof![
        Just(ReportKind::Running),
        (0u8..=100).prop_map(|percent| ReportKind::Progress { percent }),
        Just(ReportKind::Completed {
            result: json!({"ok": 1})
        }),
        any::<bool>().prop_map(|permanent| ReportKind::Failed {
            error: "e".into(),
            permanent
        }),
    ];
    prop_oneof![
        2 => job.clone().prop_map(register),
        6 => (job.clone(), attempt, 0u8..3, kind).prop_map(|(n, attempt, w, kind)| report(n, attempt, w, kind)),
        1 => job.prop_map(|n| Command::Cancel { id: job_id(n) }),
        1 => (0u8..3).prop_map(|w| Command::WorkerLost { worker_id: worker(w) }),
        1 => (0u64..40).prop_map(|upto| Command::AckEvents { upto }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// After every step: terminal states never change; at most one lease and one outcome per
    /// attempt; versions and sequence numbers only grow; the waiting count is exact; every
    /// QUEUED attempt was dispatched and every RUNNING one has a holder.
    #[test]
    fn invariants_hold_for_any_command_sequence(steps in prop::collection::vec((command_strategy(), 0i64..5_000), 1..80)) {
        let mut state = State::default();
        let mut now = 0i64;
        let mut terminal: BTreeMap<JobId, JobStatus> = BTreeMap::new();
        let mut leases: BTreeMap<(JobId, u32), WorkerId> = BTreeMap::new();
        let mut outcomes_per_attempt: BTreeSet<(JobId, u32)> = BTreeSet::new();
        let mut versions: BTreeMap<JobId, u64> = BTreeMap::new();
        let mut dispatched: BTreeSet<(JobId, u32)> = BTreeSet::new();
        let mut last_seq = 0u64;
        for (command, advance) in steps {
            now += advance;
            let attempt_before = match &command {
                Command::Report(r) => state.job(r.job_id).map(|j| j.attempt),
                _ => None,
            };
            let (outcome, effects) = apply(&mut state, now, command.clone());
            if let (Command::Report(r), Ok(_), Some(attempt)) = (&command, &outcome, attempt_before) {
                match r.kind {
                    ReportKind::Running => {
                        prop_assert!(leases.insert((r.job_id, attempt), r.worker_id.clone()).is_none(), "second lease");
                    }
                    ReportKind::Completed { .. } | ReportKind::Failed { .. } => {
                        prop_assert_eq!(leases.get(&(r.job_id, attempt)), Some(&r.worker_id));
                        prop_assert!(outcomes_per_attempt.insert((r.job_id, attempt)), "second outcome");
                    }
                    ReportKind::Progress { .. } => {}
                }
            }
            for effect in &effects {
                match effect {
                    Effect::Dispatch(message) => { dispatched.insert((message.id, message.attempt)); }
                    // A stop goes to the lease holder of the attempt, and only on cancel.
                    Effect::StopAttempt(ControlMessage::Cancel { worker_id, job_id, attempt }) => {
                        let is_cancel = matches!(command, Command::Cancel { .. });
                        prop_assert!(is_cancel, "stop from {:?}", command);
                        prop_assert_eq!(leases.get(&(*job_id, *attempt)), Some(worker_id));
                    }
                    Effect::Emit(event) => {
                        prop_assert!(event.seq > last_seq);
                        last_seq = event.seq;
                        let previous = versions.insert(event.job_id, event.version).unwrap_or(0);
                        prop_assert!(event.version > previous);
                        if let Some(status) = terminal.get(&event.job_id) {
                            prop_assert!(false, "event for terminal job {} ({status})", event.job_id);
                        }
                        if event.status.is_terminal() { terminal.insert(event.job_id, event.status); }
                    }
                }
            }
            for (id, status) in &terminal {
                prop_assert!(state.job(*id).is_none());
                prop_assert_eq!(state.tombstone(*id).map(|t| t.status), Some(*status));
            }
            let waiting = state.jobs().filter(|j| matches!(j.status, JobStatus::Pending | JobStatus::Queued)).count() as u64;
            prop_assert_eq!(state.n_waiting(), waiting);
            for job in state.jobs() {
                match job.status {
                    JobStatus::Queued => prop_assert!(dispatched.contains(&(job.id, job.attempt))),
                    JobStatus::Running => prop_assert!(job.worker_id.is_some()),
                    other => prop_assert!(false, "unexpected live status {other}"),
                }
            }
            prop_assert!(outcomes_per_attempt.iter().all(|(id, _)| terminal.contains_key(id)));
        }
    }
}
