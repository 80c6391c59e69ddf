//! The lifecycle state machine through its public surface: transition tables, backoff bounds and
//! a property test over random command sequences with simulated time.

use std::collections::{BTreeMap, BTreeSet};

use distriqueue_core::machine::{Applied, Jitter, MachineConfig};
use distriqueue_core::{
    Batch, Command, ControlMessage, Effect, JobId, JobResponse, JobStatus, Millis, Outcome,
    Refusal, ReportKind, RetryPolicy, State, Timer, TimerKind, WorkerId,
};
use proptest::prelude::*;
use serde_json::json;

mod steps;

use steps::*;

fn register(n: u8) -> Command {
    register_with(n, json!({}))
}

fn failed(permanent: bool) -> ReportKind {
    ReportKind::Failed {
        error: "boom".into(),
        permanent,
    }
}

/// Applies a command as a well-behaved worker sends it: a report naming its attempt carries the
/// attempt's lease token from the job message.
fn apply(state: &mut State, now: i64, command: Command) -> (Outcome, Vec<Effect>) {
    let command = match &command {
        Command::Report(report) if report.attempt.is_some() && report.lease.is_none() => {
            let current = state.job(report.job_id).and_then(|job| job.lease.clone());
            with_token(command, Token::Current, current)
        }
        _ => command,
    };
    apply_raw(state, now, command)
}

/// Applies a command as it is.
fn apply_raw(state: &mut State, now: i64, command: Command) -> (Outcome, Vec<Effect>) {
    let (mut outcomes, effects) = state.apply(&Batch {
        now: Millis(now),
        seed: 42,
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
    job_of(outcome).status
}

fn job_of(outcome: &Outcome) -> &JobResponse {
    match outcome {
        Ok(Applied { job: Some(job), .. }) => job,
        other => panic!("expected a job, got {other:?}"),
    }
}

fn timers(effects: &[Effect]) -> Vec<Timer> {
    effects
        .iter()
        .filter_map(|effect| {
            if let Effect::ArmTimer(timer) = effect {
                Some(*timer)
            } else {
                None
            }
        })
        .collect()
}

fn dispatched_attempts(effects: &[Effect]) -> Vec<u32> {
    effects
        .iter()
        .filter_map(|effect| {
            if let Effect::Dispatch(message) = effect {
                Some(message.attempt)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn happy_path_queues_runs_and_completes() {
    let mut state = State::default();
    let (outcome, effects) = apply(&mut state, 1_000, register(0));
    assert_eq!(status_of(&outcome), JobStatus::Queued);
    assert_eq!(dispatched_attempts(&effects), [1]);
    assert!(
        matches!(effects.last(), Some(Effect::Emit(event)) if event.seq == 1 && event.version == 1)
    );

    let (outcome, effects) = apply(
        &mut state,
        1_500,
        report(0, Some(1), 1, ReportKind::Running),
    );
    assert_eq!(status_of(&outcome), JobStatus::Running);
    assert_eq!(timers(&effects)[0].kind, TimerKind::ExecutionTimeout);
    assert_eq!(timers(&effects)[0].at, Millis(1_500 + 300_000));
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
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(job.attempts[0].state, "COMPLETED");
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
    // A repeated `running` from the holder (its answer was lost) is answered as the first and
    // changes nothing.
    let (outcome, effects) = apply(&mut state, 2, report(0, Some(1), 1, ReportKind::Running));
    assert_eq!(outcome, Ok(Applied::default()));
    assert!(effects.is_empty());
    // The lease was taken with its token: a report without it is refused, attempt or not.
    let (outcome, effects) = apply_raw(&mut state, 3, report(0, None, 1, failed(true)));
    assert_eq!(
        outcome,
        Err(Refusal::WrongLease {
            id: job_id(0),
            attempt: 1
        })
    );
    assert!(effects.is_empty());
    // With the token, a report without attempt from the holder counts for the current attempt.
    let token = state.job(job_id(0)).and_then(|job| job.lease.clone());
    let (outcome, _) = apply_raw(
        &mut state,
        3,
        with_token(report(0, None, 1, failed(true)), Token::Current, token),
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

/// The lease token of the first job message among `effects`.
fn dispatched_lease(effects: &[Effect]) -> Option<String> {
    effects.iter().find_map(|effect| match effect {
        Effect::Dispatch(message) => message.lease.clone(),
        _ => None,
    })
}

#[test]
fn lease_tokens_fence_reports_naming_their_attempt() {
    let mut state = State::default();
    let effects = step(&mut state, 0, register(0));
    let token = dispatched_lease(&effects).expect("the job message carries a lease token");
    assert_eq!(token.len(), 32);
    assert_eq!(
        state.job(job_id(0)).and_then(|job| job.lease.clone()),
        Some(token.clone())
    );
    // Naming the attempt without the token, or with another one, is refused and changes nothing.
    for forged in [Token::Absent, Token::Forged] {
        let before = state.job(job_id(0)).cloned();
        let command = with_token(report(0, Some(1), 1, ReportKind::Running), forged, None);
        let (outcome, effects) = apply_raw(&mut state, 1, command);
        let refusal = outcome.expect_err("refused");
        assert_eq!(refusal.http_status(), 409);
        assert!(matches!(refusal, Refusal::WrongLease { attempt: 1, .. }));
        assert!(effects.is_empty());
        assert_eq!(state.job(job_id(0)).cloned(), before);
    }
    // The token is not part of what clients see.
    let view =
        serde_json::to_string(&state.job(job_id(0)).map(|job| job.response())).expect("json");
    assert!(!view.contains(&token));
    // The next attempt has its own token.
    let command = with_token(
        report(0, Some(1), 1, ReportKind::Running),
        Token::Current,
        Some(token.clone()),
    );
    assert!(apply_raw(&mut state, 1, command).0.is_ok());
    let (_, effects) = apply(&mut state, 2, report(0, Some(1), 1, failed(false)));
    let retry = timers(&effects)[0];
    let (_, effects) = apply(&mut state, retry.at.0, Command::TimerFired(retry));
    let next = dispatched_lease(&effects).expect("the retry's job message carries a lease token");
    assert_ne!(next, token);
}

#[test]
fn original_workers_without_attempt_or_token_keep_the_worker_id_rule() {
    let mut state = State::default();
    step(&mut state, 0, register(0));
    step(&mut state, 1, report(0, None, 1, ReportKind::Running));
    let (outcome, _) = apply(&mut state, 2, report(0, None, 2, failed(true)));
    assert!(matches!(outcome, Err(Refusal::LeaseHeld { .. })));
    let (outcome, _) = apply(
        &mut state,
        2,
        report(0, None, 1, ReportKind::Completed { result: json!({}) }),
    );
    assert_eq!(status_of(&outcome), JobStatus::Completed);
}

#[test]
fn failed_attempts_retry_after_exponential_backoff_then_fail_for_good() {
    let mut state = State::default();
    step(&mut state, 0, register_with(0, json!({"maxRetries": 2})));
    let mut now = 0;
    for (attempt, expected_delay) in [(1, 100), (2, 200)] {
        step(
            &mut state,
            now,
            report(0, Some(attempt), 1, ReportKind::Running),
        );
        let (outcome, effects) = apply(
            &mut state,
            now + 10,
            report(0, Some(attempt), 1, failed(false)),
        );
        let Ok(Applied { job: Some(job), .. }) = outcome else {
            panic!("retrying")
        };
        assert_eq!(
            (job.status, job.retry_count, job.error_message.as_deref()),
            (JobStatus::Retrying, attempt, Some("boom"))
        );
        let timer = timers(&effects)[0];
        assert_eq!(
            (timer.kind, timer.at, timer.attempt),
            (TimerKind::Retry, Millis(now + 10 + expected_delay), attempt)
        );
        // Early or stale firings change nothing.
        let (_, early) = apply(&mut state, now + 11, Command::TimerFired(timer));
        assert!(early.is_empty(), "{early:?}");
        let (outcome, effects) = apply(&mut state, timer.at.0, Command::TimerFired(timer));
        assert_eq!(status_of(&outcome), JobStatus::Queued);
        assert_eq!(dispatched_attempts(&effects), [attempt + 1]);
        let (_, again) = apply(&mut state, timer.at.0 + 1, Command::TimerFired(timer));
        assert!(again.is_empty(), "a timer fires once: {again:?}");
        now = timer.at.0;
    }
    step(&mut state, now, report(0, Some(3), 2, ReportKind::Running));
    let (outcome, effects) = apply(&mut state, now + 5, report(0, Some(3), 2, failed(false)));
    let Ok(Applied { job: Some(job), .. }) = outcome else {
        panic!("failed")
    };
    assert_eq!(
        (job.status, job.retry_count, job.attempts.len()),
        (JobStatus::Failed, 2, 3)
    );
    assert!(timers(&effects).is_empty());
}

#[test]
fn permanent_failures_and_zero_retries_end_at_once() {
    let mut state = State::default();
    step(&mut state, 0, register(0));
    step(&mut state, 0, report(0, Some(1), 1, ReportKind::Running));
    assert_eq!(
        status_of(&apply(&mut state, 1, report(0, Some(1), 1, failed(true))).0),
        JobStatus::Failed
    );
    step(&mut state, 0, register_with(1, json!({"maxRetries": 0})));
    step(&mut state, 0, report(1, Some(1), 1, ReportKind::Running));
    assert_eq!(
        status_of(&apply(&mut state, 1, report(1, Some(1), 1, failed(false))).0),
        JobStatus::Failed
    );
}

#[test]
fn an_undeliverable_message_fails_its_queued_attempt_for_good() {
    let mut state = State::default();
    step(&mut state, 0, register_with(0, json!({"maxRetries": 3})));
    assert_eq!(state.n_waiting(), 1);
    let undeliverable = |attempt| Command::Undeliverable {
        id: job_id(0),
        attempt,
        error: "message too large for the broker".into(),
    };
    // Another attempt's refusal changes nothing.
    let (outcome, effects) = apply(&mut state, 1, undeliverable(2));
    assert_eq!(outcome, Ok(Applied::default()));
    assert!(effects.is_empty());
    let (outcome, effects) = apply(&mut state, 2, undeliverable(1));
    assert_eq!(status_of(&outcome), JobStatus::Failed);
    assert!(timers(&effects).is_empty(), "never retried: {effects:?}");
    assert!(dispatched_attempts(&effects).is_empty());
    assert_eq!(state.n_waiting(), 0);
    assert_eq!(state.bytes_waiting(), 0);
    let job = job_of(&outcome);
    assert_eq!(
        job.error_message.as_deref(),
        Some("message too large for the broker")
    );
    // Once terminal, a repeat changes nothing.
    let (outcome, effects) = apply(&mut state, 3, undeliverable(1));
    assert_eq!(outcome, Ok(Applied::default()));
    assert!(effects.is_empty());
}

#[test]
fn execution_timeout_stops_the_worker_and_retries_then_times_out() {
    let mut state = State::default();
    step(
        &mut state,
        0,
        register_with(0, json!({"executionTimeout": 1, "maxRetries": 1})),
    );
    let effects = step(&mut state, 0, report(0, Some(1), 3, ReportKind::Running));
    let timer = timers(&effects)[0];
    assert_eq!(timer.at, Millis(1_000));
    let (outcome, effects) = apply(&mut state, 1_000, Command::TimerFired(timer));
    assert_eq!(status_of(&outcome), JobStatus::Retrying);
    assert!(
        effects.contains(&Effect::StopAttempt(ControlMessage::Cancel {
            worker_id: worker(3),
            job_id: job_id(0),
            attempt: 1
        }))
    );
    let retry = timers(&effects)[0];
    step(&mut state, retry.at.0, Command::TimerFired(retry));
    let effects = step(
        &mut state,
        retry.at.0,
        report(0, Some(2), 3, ReportKind::Running),
    );
    let timeout = timers(&effects)[0];
    let (outcome, _) = apply(&mut state, timeout.at.0, Command::TimerFired(timeout));
    let Ok(Applied { job: Some(job), .. }) = outcome else {
        panic!("timed out")
    };
    assert_eq!(job.status, JobStatus::Timeout);
    assert_eq!(
        job.error_message.as_deref(),
        Some("execution timed out after 1 s")
    );
    // The late result of the timed-out attempt is refused.
    let (outcome, _) = apply(
        &mut state,
        timeout.at.0 + 1,
        report(0, Some(2), 3, ReportKind::Completed { result: json!({}) }),
    );
    assert_eq!(outcome.expect_err("refused").http_status(), 409);
}

#[test]
fn scheduled_jobs_wait_pending_until_due() {
    let mut state = State::default();
    let (outcome, effects) = apply(
        &mut state,
        1_000,
        register_with(0, json!({"delaySeconds": 3})),
    );
    assert_eq!(status_of(&outcome), JobStatus::Pending);
    assert!(dispatched_attempts(&effects).is_empty());
    let due = timers(&effects)[0];
    assert_eq!((due.kind, due.at), (TimerKind::Due, Millis(4_000)));
    assert_eq!(state.n_waiting(), 1);
    assert_eq!(
        state.timers(),
        [due],
        "a restarted host re-arms it from the state"
    );
    let (_, effects) = apply(&mut state, 3_999, Command::TimerFired(due));
    assert!(effects.is_empty(), "not due yet");
    let (outcome, effects) = apply(&mut state, 4_000, Command::TimerFired(due));
    assert_eq!(status_of(&outcome), JobStatus::Queued);
    assert_eq!(dispatched_attempts(&effects), [1]);
    // A schedule in the past runs now.
    let (outcome, _) = apply(
        &mut state,
        5_000,
        register_with(1, json!({"scheduleAt": "1970-01-01T00:00:01Z"})),
    );
    assert_eq!(status_of(&outcome), JobStatus::Queued);
}

#[test]
fn idempotency_key_answers_with_the_first_job_within_the_window() {
    let mut state = State::new(MachineConfig {
        tombstone_retention_ms: 1_000,
        idempotency_retention_ms: 10_000,
        ..MachineConfig::default()
    });
    step(
        &mut state,
        0,
        register_with(0, json!({"idempotencyKey": "k"})),
    );
    let (outcome, effects) = apply(
        &mut state,
        1,
        register_with(1, json!({"idempotencyKey": "k"})),
    );
    let applied = outcome.expect("answered");
    assert_eq!((applied.created, applied.job_id), (false, Some(job_id(0))));
    assert!(effects.is_empty());
    assert!(state.job(job_id(1)).is_none());
    // Still answered after the first job finished and its tombstone expired.
    step(&mut state, 2, Command::Cancel { id: job_id(0) });
    let (outcome, _) = apply(
        &mut state,
        5_000,
        register_with(2, json!({"idempotencyKey": "k"})),
    );
    assert_eq!(outcome.expect("answered").job_id, Some(job_id(0)));
    // After the window the key is free again.
    let (outcome, _) = apply(
        &mut state,
        10_001,
        register_with(3, json!({"idempotencyKey": "k"})),
    );
    assert_eq!(outcome.expect("created").job_id, Some(job_id(3)));
}

#[test]
fn retry_starts_a_new_chain_for_finished_jobs_only() {
    let mut state = State::default();
    step(&mut state, 0, register_with(0, json!({"maxRetries": 0})));
    step(&mut state, 0, report(0, Some(1), 1, ReportKind::Running));
    let failed_effects = step(&mut state, 1, report(0, Some(1), 1, failed(false)));
    let Some(Effect::Emit(event)) = failed_effects.last() else {
        panic!("event")
    };
    let stored = event.job.clone();
    let retry = |spec_from: &JobResponse| Command::Retry {
        id: spec_from.id,
        spec: Box::new(distriqueue_core::request::JobSpec::from_response(spec_from)),
        created_at: Millis(0),
        attempt_floor: spec_from.attempt,
        version_floor: spec_from.version,
        previous_attempts: spec_from.attempts.clone(),
        policy: POLICY,
    };
    let (outcome, effects) = apply(&mut state, 2, retry(&stored));
    let Ok(Applied { job: Some(job), .. }) = outcome else {
        panic!("retried")
    };
    assert_eq!(
        (job.status, job.attempt, job.retry_count),
        (JobStatus::Queued, 2, 0)
    );
    assert!(job.version > stored.version);
    assert_eq!(
        job.attempts
            .iter()
            .map(|a| (a.attempt, a.state.as_str()))
            .collect::<Vec<_>>(),
        [(1, "FAILED"), (2, "QUEUED")]
    );
    assert_eq!(dispatched_attempts(&effects), [2]);
    // Not while it is live; not for a completed job.
    assert_eq!(
        apply(&mut state, 3, retry(&job))
            .0
            .expect_err("live")
            .http_status(),
        409
    );
    step(&mut state, 3, report(0, Some(2), 1, ReportKind::Running));
    step(
        &mut state,
        4,
        report(0, Some(2), 1, ReportKind::Completed { result: json!({}) }),
    );
    assert_eq!(
        apply(&mut state, 5, retry(&job))
            .0
            .expect_err("completed")
            .http_status(),
        409
    );
    // A job the orchestrator forgot is retried from the read model's floors.
    let mut forgotten = stored.clone();
    forgotten.id = job_id(9);
    forgotten.attempt = 4;
    let (outcome, _) = apply(&mut state, 6, retry(&forgotten));
    let Ok(Applied { job: Some(job), .. }) = outcome else {
        panic!("retried")
    };
    assert_eq!(job.attempt, 5);
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
            job: Some(_),
            ..
        })
    ));
    assert!(effects.is_empty(), "a repeated register dispatches nothing");
    let Command::Register {
        id, spec, policy, ..
    } = register(1)
    else {
        unreachable!()
    };
    let (outcome, _) = apply(
        &mut state,
        2,
        Command::Register {
            id,
            spec,
            max_queued: Some(1),
            max_queued_bytes: None,
            policy,
        },
    );
    assert_eq!(outcome, Err(Refusal::QueueFull { cap: 1 }));
    // The cap in bytes: the waiting job's payload (`{}`, 2 bytes) plus a new one's.
    let waiting = state.bytes_waiting();
    assert!(waiting > 0);
    let Command::Register {
        id, spec, policy, ..
    } = register(2)
    else {
        unreachable!()
    };
    let command = |cap_bytes| Command::Register {
        id,
        spec: spec.clone(),
        max_queued: None,
        max_queued_bytes: Some(cap_bytes),
        policy,
    };
    let (outcome, _) = apply(&mut state, 3, command(waiting));
    assert_eq!(outcome, Err(Refusal::QueueFullBytes { cap_bytes: waiting }));
    assert_eq!(outcome.expect_err("refused").http_status(), 429);
    let (outcome, _) = apply(&mut state, 3, command(2 * waiting + 1_000));
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(state.bytes_waiting() > waiting);
}

#[test]
fn lost_worker_fails_its_attempts_which_retry_by_policy() {
    let mut state = State::default();
    step(&mut state, 0, register(0));
    step(&mut state, 1, report(0, Some(1), 1, ReportKind::Running));
    assert_eq!(
        state.lease_holders().into_iter().collect::<Vec<_>>(),
        [worker(1)]
    );
    let effects = step(
        &mut state,
        2,
        Command::WorkerLost {
            worker_id: worker(1),
        },
    );
    // Should the lost worker come back, it is told to stop the attempt.
    assert_eq!(
        effects[0],
        Effect::StopAttempt(ControlMessage::Cancel {
            worker_id: worker(1),
            job_id: job_id(0),
            attempt: 1
        })
    );
    let job = state.job(job_id(0)).expect("live");
    assert_eq!(
        (job.status, job.error_message.as_deref()),
        (JobStatus::Retrying, Some("worker lost"))
    );
    let retry = timers(&effects)[0];
    let effects = step(&mut state, retry.at.0, Command::TimerFired(retry));
    assert_eq!(dispatched_attempts(&effects), [2]);
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
            .queued()
            .iter()
            .map(|record| record.attempt)
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
        ..MachineConfig::default()
    });
    step(&mut state, 0, register(0));
    step(&mut state, 10, Command::Cancel { id: job_id(0) });
    step(&mut state, 1_010, Command::AckEvents { upto: 0 });
    assert!(state.tombstone(job_id(0)).is_some());
    step(&mut state, 1_011, Command::AckEvents { upto: 0 });
    assert!(state.tombstone(job_id(0)).is_none());
}

#[test]
fn tombstones_and_keys_past_their_caps_go_oldest_first() {
    let mut state = State::new(MachineConfig {
        max_tombstones: 3,
        max_keys: 4,
        ..MachineConfig::default()
    });
    for n in 0..6 {
        let key = format!("key-{n}");
        step(
            &mut state,
            0,
            register_with(n, json!({"idempotencyKey": key})),
        );
        step(&mut state, 0, Command::Cancel { id: job_id(n) });
    }
    // Pruning runs before each entry: the next one sees the caps held.
    step(&mut state, 1, Command::AckEvents { upto: 0 });
    let held: Vec<bool> = (0..6)
        .map(|n| state.tombstone(job_id(n)).is_some())
        .collect();
    assert_eq!(held, [false, false, false, true, true, true]);
    // The oldest keys went too: key-1 registers a new job, key-5 answers with job 5.
    let (outcome, _) = apply(
        &mut state,
        2,
        register_with(7, json!({"idempotencyKey": "key-1"})),
    );
    assert!(outcome.expect("registered").created);
    let (outcome, _) = apply(
        &mut state,
        2,
        register_with(8, json!({"idempotencyKey": "key-5"})),
    );
    let applied = outcome.expect("answered");
    assert_eq!((applied.created, applied.job_id), (false, Some(job_id(5))));
}

#[test]
fn state_round_trips_through_json() {
    let mut state = State::default();
    step(&mut state, 0, register(0));
    step(&mut state, 1, report(0, Some(1), 1, ReportKind::Running));
    step(
        &mut state,
        2,
        register_with(1, json!({"delaySeconds": 5, "idempotencyKey": "x"})),
    );
    let text = serde_json::to_string(&state).expect("serializable");
    let back: State = serde_json::from_str(&text).expect("deserializable");
    assert_eq!(back, state);
}

#[test]
fn backoff_delays_stay_within_policy_bounds_for_any_seed() {
    let full = RetryPolicy {
        base_ms: 1_000,
        max_ms: 300_000,
        jitter: Jitter::Full,
    };
    let none = RetryPolicy {
        jitter: Jitter::None,
        ..full
    };
    let mut random = 0x2545_F491_4F6C_DD1Du64; // xorshift, seeded: the same draws every run
    for retry in 1..=12u32 {
        let ceiling = (1_000u64 << (retry - 1)).min(300_000);
        assert_eq!(full.ceiling_ms(retry), ceiling);
        assert_eq!(none.delay_ms(retry, random), ceiling);
        let mut seen_low_half = false;
        for _ in 0..1_000 {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let delay = full.delay_ms(retry, random);
            assert!(delay <= ceiling, "retry {retry}: {delay} > {ceiling}");
            seen_low_half |= delay < ceiling / 2;
        }
        assert!(seen_low_half, "full jitter draws from the whole range");
    }
    assert_eq!(
        full.ceiling_ms(200),
        300_000,
        "no overflow for large retry numbers"
    );
}

/// The test's own record of what happened, checked against the state after every step.
#[derive(Default)]
struct Oracle {
    /// Terminal status of each finished chain, until a `Retry` restarts it.
    terminal: BTreeMap<JobId, JobStatus>,
    leases: BTreeMap<(JobId, u32), WorkerId>,
    outcomes: BTreeSet<(JobId, u32)>,
    versions: BTreeMap<JobId, u64>,
    dispatched: BTreeSet<(JobId, u32)>,
    armed: BTreeSet<Timer>,
    last_seq: u64,
    /// The last snapshot seen of each job, for `Retry` from "the read model".
    snapshots: BTreeMap<JobId, JobResponse>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// After every step: a terminal state changes only by an explicit retry; at most one lease
    /// and one accepted outcome per attempt; `retryCount` never exceeds `maxRetries`; versions
    /// and sequence numbers only grow; the waiting count is exact; every non-terminal job has a
    /// live attempt, a pending dispatch or a pending timer.
    #[test]
    fn invariants_hold_for_any_command_sequence(steps in prop::collection::vec((step_strategy(), 0i64..2_500), 1..60)) {
        let mut state = State::default();
        let mut now = 0i64;
        let mut oracle = Oracle::default();
        for (step, advance) in steps {
            now += advance;
            let mut forged = false;
            let commands: Vec<Command> = match step {
                Step::Command(command) => vec![command],
                Step::Report(command, token) => {
                    let current = match &command {
                        Command::Report(r) => state.job(r.job_id).and_then(|j| j.lease.clone()),
                        _ => None,
                    };
                    forged = token == Token::Forged;
                    vec![with_token(command, token, current)]
                }
                Step::FireDueTimers => {
                    let due: Vec<Timer> = oracle.armed.iter().filter(|timer| timer.at.0 <= now).copied().collect();
                    due.into_iter().map(|timer| { oracle.armed.remove(&timer); Command::TimerFired(timer) }).collect()
                }
                Step::FireStaleTimer(n, attempt, kind) => {
                    let kind = [TimerKind::Due, TimerKind::Retry, TimerKind::ExecutionTimeout][usize::from(kind)];
                    vec![Command::TimerFired(Timer { at: Millis(now), job_id: job_id(n), attempt, kind })]
                }
                Step::RetryFinished(n) => oracle.snapshots.get(&job_id(n)).map(retry).into_iter().collect(),
                Step::Restart => {
                    let text = serde_json::to_string(&state).expect("serializable");
                    state = serde_json::from_str(&text).expect("deserializable");
                    // A restarted host re-arms every timer from the state.
                    oracle.armed.extend(state.timers());
                    Vec::new()
                }
            };
            for command in commands {
                let before = match &command {
                    Command::Report(r) => state.job(r.job_id).map(|j| j.attempt),
                    _ => None,
                };
                let (outcome, effects) = apply_raw(&mut state, now, command.clone());
                prop_assert!(!(forged && outcome.is_ok()), "a forged lease token was accepted");
                if let (Command::Report(r), Ok(_), Some(attempt)) = (&command, &outcome, before) {
                    match r.kind {
                        ReportKind::Running => {
                            // A repeat from the holder is answered as the first.
                            let previous = oracle.leases.insert((r.job_id, attempt), r.worker_id.clone());
                            prop_assert!(previous.is_none() || previous.as_ref() == Some(&r.worker_id), "second lease");
                        }
                        ReportKind::Completed { .. } | ReportKind::Failed { .. } => {
                            prop_assert_eq!(oracle.leases.get(&(r.job_id, attempt)), Some(&r.worker_id));
                            prop_assert!(oracle.outcomes.insert((r.job_id, attempt)), "second outcome");
                        }
                        ReportKind::Progress { .. } => {}
                    }
                }
                for effect in &effects {
                    match effect {
                        Effect::Dispatch(message) => {
                            prop_assert!(oracle.dispatched.insert((message.id, message.attempt)), "attempt number reused");
                        }
                        Effect::ArmTimer(timer) => { oracle.armed.insert(*timer); }
                        Effect::StopAttempt(ControlMessage::Cancel { worker_id, job_id, attempt }) => {
                            prop_assert_eq!(oracle.leases.get(&(*job_id, *attempt)), Some(worker_id));
                        }
                        Effect::Emit(event) => {
                            prop_assert!(event.seq > oracle.last_seq);
                            oracle.last_seq = event.seq;
                            let previous = oracle.versions.insert(event.job_id, event.version).unwrap_or(0);
                            prop_assert!(event.version > previous);
                            if let Some(status) = oracle.terminal.get(&event.job_id) {
                                let is_retry = matches!(command, Command::Retry { .. });
                                prop_assert!(is_retry, "terminal job {} ({}) changed by {:?}", event.job_id, status, command);
                                oracle.terminal.remove(&event.job_id);
                            }
                            prop_assert!(event.job.retry_count <= event.job.max_retries, "retryCount past maxRetries");
                            if event.status.is_terminal() { oracle.terminal.insert(event.job_id, event.status); }
                            oracle.snapshots.insert(event.job_id, event.job.clone());
                        }
                    }
                }
            }
            for (id, status) in &oracle.terminal {
                prop_assert!(state.job(*id).is_none());
                if let Some(tombstone) = state.tombstone(*id) {
                    prop_assert_eq!(tombstone.status, *status);
                }
            }
            let waiting = state.jobs().filter(|j| matches!(j.status, JobStatus::Pending | JobStatus::Queued)).count() as u64;
            prop_assert_eq!(state.n_waiting(), waiting);
            let bytes: u64 = state.jobs().filter(|j| matches!(j.status, JobStatus::Pending | JobStatus::Queued)).map(|j| j.payload_bytes).sum();
            prop_assert_eq!(state.bytes_waiting(), bytes);
            for job in state.jobs() {
                let has_timer = |kind| oracle.armed.iter().any(|t| t.job_id == job.id && t.attempt == job.attempt && t.kind == kind);
                match job.status {
                    JobStatus::Queued => prop_assert!(oracle.dispatched.contains(&(job.id, job.attempt))),
                    JobStatus::Running => prop_assert!(job.worker_id.is_some() && has_timer(TimerKind::ExecutionTimeout)),
                    JobStatus::Pending => prop_assert!(has_timer(TimerKind::Due)),
                    JobStatus::Retrying => prop_assert!(has_timer(TimerKind::Retry)),
                    other => prop_assert!(false, "unexpected live status {}", other),
                }
            }
        }
    }
}
