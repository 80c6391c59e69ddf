//! The outbox, one of the leader's duties: carries out effects after commit, in commit order
//! (DESIGN.md "Delivery", rules 2 and 6). Dispatches go to the job queues, stops to workers,
//! timers to the timer task, events to the event feed. A publish that fails is retried with
//! backoff until the transport takes it, one message at a time after a failure: a message the
//! broker refuses for good ([`BrokerError::is_refusal`]) is set aside, logged and counted, and
//! its job fails (`Command::Undeliverable`), so one message never holds up the rest (issue 11).
//! A dispatched attempt not started within the dispatch timeout is published again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distriqueue_broker::{Broker, BrokerError};
use distriqueue_core::machine::JobRecord;
use distriqueue_core::{Command, ControlMessage, Effect, JobId, JobMessage, JobStatus};
use distriqueue_util::retry::{retry_while, Backoff};
use tokio::sync::{mpsc, watch};

use crate::liveness::Registry;
use crate::proposer::Proposer;
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
    /// Commits `Undeliverable` for a job message the broker refused.
    pub(crate) proposer: Proposer,
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
            self.dispatch("publish job messages", &dispatches, unstarted)
                .await;
        }
        for control in stops {
            let routed = retry_while(
                "publish a cancel",
                PUBLISH_BACKOFF,
                |error: &BrokerError| !error.is_refusal(),
                || self.broker.publish_control(&control),
            )
            .await
            .unwrap_or_else(|error| {
                set_aside("control", &error, &control.worker_id().0);
                false
            });
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
            // A refused event is skipped: the read model misses that one snapshot, and the
            // job's next event (or a retry) brings it up to date.
            for (event, error) in
                publish_or_set_aside("publish lifecycle events", &events, |events| {
                    self.broker.publish_events(events)
                })
                .await
            {
                set_aside("event", &error, &event.job_id.to_string());
            }
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
        self.dispatch("publish job messages again", &messages, unstarted)
            .await;
    }

    /// Publishes job messages and records them as published now; a message the broker refuses
    /// fails its job (`Command::Undeliverable`) instead.
    async fn dispatch(&self, what: &str, messages: &[JobMessage], unstarted: &mut Unstarted) {
        let refused = publish_or_set_aside(what, messages, |messages| {
            self.broker.publish_jobs(messages)
        })
        .await;
        let now = tokio::time::Instant::now();
        for message in messages {
            unstarted.insert(message.id, (message.attempt, now));
        }
        if refused.is_empty() {
            return;
        }
        let mut commands = Vec::with_capacity(refused.len());
        for (message, error) in refused {
            set_aside("job", &error, &message.id.to_string());
            unstarted.remove(&message.id);
            commands.push(Command::Undeliverable {
                id: message.id,
                attempt: message.attempt,
                error: format!(
                    "the broker refused the job message: {}",
                    distriqueue_util::error_chain(&error)
                ),
            });
        }
        if let Err(error) = self.proposer.submit(commands).await {
            // The next leader publishes the attempt again, and the broker refuses it again.
            tracing::warn!(error = %distriqueue_util::error_chain(&error), "could not fail jobs whose messages the broker refused");
        }
    }
}

/// Publishes `messages` with `publish`: all at once, and after a failure one at a time, so that
/// a message the broker refuses for good ([`BrokerError::is_refusal`]) is set aside instead of
/// holding up the rest. Other failures are retried with backoff, without end. Returns the
/// refused messages with the broker's answer.
async fn publish_or_set_aside<'m, T, F, Fut>(
    what: &str,
    messages: &'m [T],
    publish: F,
) -> Vec<(&'m T, BrokerError)>
where
    F: Fn(&'m [T]) -> Fut,
    Fut: Future<Output = Result<(), BrokerError>>,
{
    let error = match publish(messages).await {
        Ok(()) => return Vec::new(),
        Err(error) => error,
    };
    if let ([message], true) = (messages, error.is_refusal()) {
        return vec![(message, error)];
    }
    tracing::warn!(what, n_messages = messages.len(), error = %distriqueue_util::error_chain(&error), "publish failed; publishing one message at a time");
    let mut refused = Vec::new();
    for message in messages {
        let one = std::slice::from_ref(message);
        let published = retry_while(
            what,
            PUBLISH_BACKOFF,
            |error: &BrokerError| !error.is_refusal(),
            || publish(one),
        )
        .await;
        if let Err(error) = published {
            refused.push((message, error));
        }
    }
    refused
}

/// Logs and counts a message the broker refused for good (`kind`: job, event or control).
fn set_aside(kind: &'static str, error: &BrokerError, about: &str) {
    tracing::error!(kind, about, error = %distriqueue_util::error_chain(error), "the broker refused a message for good: set aside");
    crate::metrics::record_refused(kind);
}
