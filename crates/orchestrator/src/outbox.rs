//! The outbox, one of the leader's duties: carries out effects after commit, in commit order
//! (DESIGN.md "Delivery", rules 2 and 6). Dispatches go to the job queues, stops to workers,
//! timers to the timer task, events to the event feed. A publish that fails is retried with
//! backoff until the transport takes it; a dispatched attempt not started within the dispatch
//! timeout is published again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distriqueue_broker::Broker;
use distriqueue_core::machine::JobRecord;
use distriqueue_core::{ControlMessage, Effect, JobId, JobStatus};
use distriqueue_util::retry::{until_ok, Backoff};
use tokio::sync::{mpsc, watch};

use crate::liveness::Registry;
use crate::state_machine::StateMachineStore;
use crate::timers::TimerOp;

/// Between two tries of a publish the transport did not take.
const PUBLISH_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Most effect batches (one per applied entry) carried out together.
const EFFECT_BATCHES: usize = 256;

/// Published attempts not yet started: job -> (attempt, when published).
type Unstarted = HashMap<JobId, (u32, tokio::time::Instant)>;

/// The state machine's end of the channel to the outbox: counts each batch of effects sent until
/// the outbox has carried it out (the backlog gauge of docs/metrics.md).
#[derive(Clone)]
pub(crate) struct EffectSender {
    sender: mpsc::UnboundedSender<Vec<Effect>>,
    backlog: Arc<AtomicUsize>,
}

impl EffectSender {
    /// Hands one applied entry's effects to the outbox (dropped when the outbox is gone: the
    /// node stopped leading, and the next leader derives what is pending from the state).
    pub(crate) fn send(&self, effects: Vec<Effect>) {
        // Counted before the send, so the outbox never takes away more than was counted.
        self.backlog.fetch_add(1, Ordering::AcqRel);
        if self.sender.send(effects).is_err() {
            self.backlog.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A channel from the state machine to an outbox, counting into `backlog` (reset to 0: a new
/// term's outbox starts empty).
pub(crate) fn channel(
    backlog: Arc<AtomicUsize>,
) -> (EffectSender, mpsc::UnboundedReceiver<Vec<Effect>>) {
    backlog.store(0, Ordering::Release);
    let (sender, receiver) = mpsc::unbounded_channel();
    (EffectSender { sender, backlog }, receiver)
}

/// The outbox of one leadership term.
pub(crate) struct Outbox {
    pub(crate) broker: Broker,
    pub(crate) timers: mpsc::UnboundedSender<TimerOp>,
    pub(crate) workers: Arc<Registry>,
    pub(crate) state_machine: StateMachineStore,
    pub(crate) dispatch_timeout: Duration,
    /// The highest `seq` the transport confirmed.
    pub(crate) published_upto: watch::Sender<u64>,
    /// Effect batches sent and not yet carried out (see [`EffectSender`]).
    pub(crate) backlog: Arc<AtomicUsize>,
}

impl Outbox {
    /// Carries out every effect batch the state machine sends, until it stops sending.
    pub(crate) async fn run(self, mut effects: mpsc::UnboundedReceiver<Vec<Effect>>) {
        let mut unstarted = Unstarted::new();
        let mut sweep =
            tokio::time::interval((self.dispatch_timeout / 4).max(Duration::from_millis(50)));
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                received = effects.recv_many(&mut batch, EFFECT_BATCHES) => {
                    if received == 0 {
                        return;
                    }
                    self.carry_out(batch.drain(..).flatten(), &mut unstarted).await;
                    self.backlog.fetch_sub(received, Ordering::AcqRel);
                }
                _ = sweep.tick() => self.publish_again(&mut unstarted).await,
            }
        }
    }

    async fn carry_out(&self, effects: impl Iterator<Item = Effect>, unstarted: &mut Unstarted) {
        let mut dispatches = Vec::new();
        let mut stops = Vec::new();
        let mut events = Vec::new();
        for effect in effects {
            match effect {
                Effect::Dispatch(message) => dispatches.push(*message),
                Effect::StopAttempt(control) => stops.push(control),
                Effect::ArmTimer(timer) => {
                    let _ = self.timers.send(TimerOp::Arm(timer));
                }
                Effect::Emit(event) => {
                    if event.status.is_terminal() {
                        let _ = self.timers.send(TimerOp::Disarm(event.job_id));
                    }
                    if event.status != JobStatus::Queued {
                        unstarted.remove(&event.job_id);
                    }
                    events.push(*event);
                }
            }
        }
        if !dispatches.is_empty() {
            until_ok("publish job messages", PUBLISH_BACKOFF, || {
                self.broker.publish_jobs(&dispatches)
            })
            .await;
            let now = tokio::time::Instant::now();
            for message in &dispatches {
                unstarted.insert(message.id, (message.attempt, now));
            }
        }
        for control in stops {
            let routed = until_ok("publish a cancel", PUBLISH_BACKOFF, || {
                self.broker.publish_control(&control)
            })
            .await;
            if !routed {
                // Workers without a control queue learn it from their next heartbeat reply.
                let ControlMessage::Cancel {
                    worker_id,
                    job_id,
                    attempt,
                } = control;
                self.workers.queue_cancel(&worker_id, job_id, attempt);
            }
        }
        if let Some(highest) = events.iter().map(|event| event.seq).max() {
            until_ok("publish lifecycle events", PUBLISH_BACKOFF, || {
                self.broker.publish_events(&events)
            })
            .await;
            crate::metrics::record_events(&events);
            self.published_upto.send_if_modified(|upto| {
                let advanced = highest > *upto;
                *upto = (*upto).max(highest);
                advanced
            });
        }
    }

    /// Publishes again every attempt still QUEUED a dispatch timeout after its last publish.
    async fn publish_again(&self, unstarted: &mut Unstarted) {
        let now = tokio::time::Instant::now();
        let due: Vec<(JobId, u32)> = unstarted
            .iter()
            .filter(|(_, (_, published))| now.duration_since(*published) >= self.dispatch_timeout)
            .map(|(job_id, (attempt, _))| (*job_id, *attempt))
            .collect();
        if due.is_empty() {
            return;
        }
        let messages: Vec<_> = self.state_machine.read(|state| {
            due.iter()
                .filter_map(|(job_id, attempt)| {
                    state
                        .job(*job_id)
                        .filter(|job| job.status == JobStatus::Queued && job.attempt == *attempt)
                        .map(JobRecord::message)
                })
                .collect()
        });
        for (job_id, _) in &due {
            unstarted.remove(job_id);
        }
        if messages.is_empty() {
            return;
        }
        tracing::info!(
            n_jobs = messages.len(),
            "attempts not started within the dispatch timeout: publishing them again"
        );
        until_ok("publish job messages again", PUBLISH_BACKOFF, || {
            self.broker.publish_jobs(&messages)
        })
        .await;
        for message in &messages {
            unstarted.insert(message.id, (message.attempt, now));
        }
    }
}
