//! The timers, one of the leader's duties: each `Effect::ArmTimer` (a schedule due, a retry
//! backoff over, an execution timeout) waits here until due, then comes back as a committed
//! `Command::TimerFired`, unless the state no longer waits on exactly that timer.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use distriqueue_core::machine::JobRecord;
use distriqueue_core::{Command, JobId, Timer};
use distriqueue_util::clock;
use tokio::sync::mpsc;

use crate::proposer::Proposer;
use crate::state_machine::StateMachineStore;

/// What the outbox tells the timer task.
pub(crate) enum TimerOp {
    /// Wait for this timer.
    Arm(Timer),
    /// The job is finished: forget its timers.
    Disarm(JobId),
}

/// Keeps the armed timers and, when one is due, commits `TimerFired` for it if the state still
/// waits on exactly that timer (a stale one would be a no-op command; it is dropped here).
/// Runs until the outbox or the proposer stops.
pub(crate) async fn run_timers(
    mut ops: mpsc::UnboundedReceiver<TimerOp>,
    proposer: Proposer,
    state_machine: StateMachineStore,
) {
    let mut armed: BTreeSet<Timer> = BTreeSet::new();
    let mut by_job: HashMap<JobId, Vec<Timer>> = HashMap::new();
    loop {
        let next_due = armed.first().map(|timer| timer.at);
        let sleep = async {
            match next_due {
                Some(at) => {
                    let wait_ms = u64::try_from(at.0.saturating_sub(clock::now().0)).unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            op = ops.recv() => match op {
                Some(TimerOp::Arm(timer)) => {
                    armed.insert(timer);
                    by_job.entry(timer.job_id).or_default().push(timer);
                }
                Some(TimerOp::Disarm(job_id)) => {
                    for timer in by_job.remove(&job_id).unwrap_or_default() {
                        armed.remove(&timer);
                    }
                }
                None => return,
            },
            () = sleep => {
                let now = clock::now();
                while armed.first().is_some_and(|timer| timer.at <= now) {
                    let Some(timer) = armed.pop_first() else { break };
                    if let Some(timers) = by_job.get_mut(&timer.job_id) {
                        timers.retain(|other| *other != timer);
                        if timers.is_empty() {
                            by_job.remove(&timer.job_id);
                        }
                    }
                    let current = state_machine.read(|state| state.job(timer.job_id).and_then(JobRecord::timer));
                    if current != Some(timer) {
                        continue;
                    }
                    if proposer.submit(vec![Command::TimerFired(timer)]).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
