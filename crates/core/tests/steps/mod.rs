//! Random lifecycle command sequences, shared by the state machine's property test
//! (`crates/core/tests/machine.rs`) and its replay through a three-node cluster
//! (`crates/orchestrator/tests/cluster_replay.rs`, which includes this file by path).

#![allow(dead_code)] // each including test uses a different part

use distriqueue_core::machine::Jitter;
use distriqueue_core::request::parse_job_request;
use distriqueue_core::{Command, JobId, Report, ReportKind, RetryPolicy, WorkerId};
use proptest::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

pub fn job_id(n: u8) -> JobId {
    JobId(Uuid::from_u128(u128::from(n) + 1))
}

pub fn worker(n: u8) -> WorkerId {
    WorkerId(format!("w{n}"))
}

/// No jitter, 100 ms base: delays 100, 200, 400, ...
pub const POLICY: RetryPolicy = RetryPolicy {
    base_ms: 100,
    max_ms: 10_000,
    jitter: Jitter::None,
};

pub fn register_with(n: u8, request: Value) -> Command {
    let mut body = json!({"type": "echo", "jobPriority": "HIGH"});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), request.as_object()) {
        body.extend(extra.clone());
    }
    let spec = parse_job_request(&body, "").expect("valid request");
    Command::Register {
        id: job_id(n),
        spec: Box::new(spec),
        max_queued: None,
        max_queued_bytes: None,
        policy: POLICY,
    }
}

pub fn report(n: u8, attempt: Option<u32>, w: u8, kind: ReportKind) -> Command {
    Command::Report(Report {
        job_id: job_id(n),
        attempt,
        worker_id: worker(w),
        kind,
        lease: None,
    })
}

/// Which lease token a generated report carries: none, the job's current one (looked up when
/// the step runs), or a forged one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Absent,
    Current,
    Forged,
}

/// The report `command` carrying the token `choice` names; `current` is the job's token now.
pub fn with_token(mut command: Command, choice: Token, current: Option<String>) -> Command {
    if let Command::Report(report) = &mut command {
        report.lease = match choice {
            Token::Absent => None,
            Token::Current => current,
            Token::Forged => Some("0123456789abcdef0123456789abcdef".into()),
        };
    }
    command
}

/// Commands over 3 jobs and 3 workers, with time passing, including timers (valid, early and
/// stale), retries of finished jobs, heartbeats stopping (worker lost) and restarts (the state
/// serialized and read back, as a snapshot would).
#[derive(Debug, Clone)]
pub enum Step {
    Command(Command),
    Report(Command, Token),
    FireDueTimers,
    FireStaleTimer(u8, u32, u8),
    RetryFinished(u8),
    Restart,
}

pub fn step_strategy() -> impl Strategy<Value = Step> {
    let job = 0u8..3;
    let attempt = prop_oneof![Just(None), (1u32..5).prop_map(Some)];
    let token = prop_oneof![
        1 => Just(Token::Absent),
        4 => Just(Token::Current),
        1 => Just(Token::Forged),
    ];
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
    let register = (
        job.clone(),
        0u32..3,
        prop_oneof![Just(None), (0u64..3).prop_map(Some)],
        any::<bool>(),
    )
        .prop_map(|(n, max_retries, delay, keyed)| {
            let mut request = json!({"maxRetries": max_retries, "executionTimeout": 2});
            if let Some(delay) = delay {
                request["delaySeconds"] = json!(delay);
            }
            if keyed {
                request["idempotencyKey"] = json!(format!("key-{}", n % 2));
            }
            register_with(n, request)
        });
    prop_oneof![
        3 => register.prop_map(Step::Command),
        8 => (job.clone(), attempt, 0u8..3, kind, token).prop_map(|(n, attempt, w, kind, token)| Step::Report(report(n, attempt, w, kind), token)),
        1 => job.clone().prop_map(|n| Step::Command(Command::Cancel { id: job_id(n) })),
        1 => (0u8..3).prop_map(|w| Step::Command(Command::WorkerLost { worker_id: worker(w) })),
        1 => (0u64..60).prop_map(|upto| Step::Command(Command::AckEvents { upto })),
        3 => Just(Step::FireDueTimers),
        1 => (job.clone(), 1u32..5, 0u8..3).prop_map(|(n, attempt, kind)| Step::FireStaleTimer(n, attempt, kind)),
        1 => job.prop_map(Step::RetryFinished),
        1 => Just(Step::Restart),
    ]
}

/// `Retry` of a finished job, given its last snapshot (what the read model would hold).
pub fn retry(job: &distriqueue_core::JobResponse) -> Command {
    Command::Retry {
        id: job.id,
        spec: Box::new(distriqueue_core::request::JobSpec::from_response(job)),
        created_at: distriqueue_core::Millis(0),
        attempt_floor: job.attempt,
        version_floor: job.version,
        previous_attempts: job.attempts.clone(),
        policy: POLICY,
    }
}
