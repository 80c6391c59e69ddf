//! The outbox, one of the leader's duties: carries out effects after commit, in commit order
//! (DESIGN.md "Delivery", rules 2 and 6). Dispatches go to the job queues, stops to workers,
//! timers to the timer task, events to the event feed. A publish that fails is retried with
//! backoff until the transport takes it, one message at a time after a failure: a message the
//! broker refuses for good ([`BrokerError::is_refusal`]) is set aside, logged and counted, and
//! its job fails (`Command::Undeliverable`), so one message never holds up the rest (issue 11).
//!
//! A confirmed job message is not published again while it waits its turn (issue 13): a
//! backlog of B jobs keeps B messages. RabbitMQ gives back what a closed connection held
//! unacknowledged, and a lease recovers a started job. The one case left is a message that
//! left its queue and was not started: taken by a worker that does not start it (frozen, or
//! holding it while its slots are busy), or lost (a purge, a worker acking early and dying).
//! Each queue is FIFO within one priority, so the outbox sees it: an attempt still unstarted a
//! dispatch timeout after an attempt published later at the same priority started is published
//! again ([`Unstarted`]); the lease fences the copies.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distriqueue_broker::{Broker, BrokerError};
use distriqueue_core::machine::JobRecord;
use distriqueue_core::{Command, ControlMessage, Effect, JobId, JobMessage, JobStatus, Priority};
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

/// A QUEUED attempt whose message a previous leader (or this node before a restart) published
/// and RabbitMQ confirmed: [`StateMachineStore::go_live`] hands these to the new outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Waiting {
    pub(crate) id: JobId,
    pub(crate) attempt: u32,
    pub(crate) priority: Priority,
}

/// One published attempt not yet started.
struct Published {
    attempt: u32,
    priority: Priority,
    /// Publish order of its latest copy within this outbox (0: published before it started).
    order: u64,
    /// Publish order of its first copy. When the attempt starts, which copy started is unknown:
    /// only what was published before the first copy is known to have left the queue.
    first_order: u64,
}

/// The published attempts not yet started, and what shows that one of them left its queue
/// unstarted: an attempt of its priority published after it started (each queue is FIFO within
/// a priority). An attempt that stays unstarted a dispatch timeout after that is due to be
/// published again; one that waits its turn never is.
#[derive(Default)]
struct Unstarted {
    attempts: HashMap<JobId, Published>,
    /// The last publish order given out.
    last_order: u64,
    /// By priority: the highest publish order of a started attempt.
    started: HashMap<Priority, u64>,
    /// `started` as it was at each sweep, oldest first, back to a dispatch timeout ago.
    checkpoints: VecDeque<(tokio::time::Instant, HashMap<Priority, u64>)>,
}

impl Unstarted {
    /// Watches attempts published before this outbox started: every later publish at their
    /// priority is behind them in the queue.
    fn new(waiting: Vec<Waiting>) -> Unstarted {
        let attempts = waiting
            .into_iter()
            .map(|waiting| {
                let published = Published {
                    attempt: waiting.attempt,
                    priority: waiting.priority,
                    order: 0,
                    first_order: 0,
                };
                (waiting.id, published)
            })
            .collect();
        Unstarted {
            attempts,
            ..Unstarted::default()
        }
    }

    /// Records a publish of attempt `attempt` of job `id`: the latest copy is at the back of
    /// its priority's queue.
    fn published(&mut self, id: JobId, attempt: u32, priority: Priority) {
        self.last_order += 1;
        let first_order = self
            .attempts
            .get(&id)
            .filter(|earlier| earlier.attempt == attempt)
            .map_or(self.last_order, |earlier| earlier.first_order);
        let published = Published {
            attempt,
            priority,
            order: self.last_order,
            first_order,
        };
        self.attempts.insert(id, published);
    }

    /// Records that `job_id` left QUEUED (`started`: it is RUNNING).
    fn left_queued(&mut self, job_id: JobId, started: bool) {
        let Some(published) = self.attempts.remove(&job_id) else {
            return;
        };
        if started {
            let highest = self.started.entry(published.priority).or_default();
            *highest = (*highest).max(published.first_order);
        }
    }

    /// The attempts due to be published again at `now`: those still unstarted a
    /// `dispatch_timeout` after an attempt published later at their priority started. They stay
    /// recorded: publishing again keeps their first order ([`Unstarted::published`]).
    fn take_passed_over(
        &mut self,
        now: tokio::time::Instant,
        dispatch_timeout: Duration,
    ) -> Vec<(JobId, u32)> {
        self.checkpoints.push_back((now, self.started.clone()));
        // The newest checkpoint at least a dispatch timeout old says what was passed over then;
        // older ones are of no more use.
        let old_enough = |at: &tokio::time::Instant| now.duration_since(*at) >= dispatch_timeout;
        while self
            .checkpoints
            .get(1)
            .is_some_and(|(at, _)| old_enough(at))
        {
            self.checkpoints.pop_front();
        }
        let Some((_, passed)) = self.checkpoints.front().filter(|(at, _)| old_enough(at)) else {
            return Vec::new();
        };
        let due: Vec<(JobId, u32)> = self
            .attempts
            .iter()
            .filter(|(_, published)| {
                passed
                    .get(&published.priority)
                    .is_some_and(|started| *started > published.order)
            })
            .map(|(id, published)| (*id, published.attempt))
            .collect();
        due
    }
}

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
    /// Carries out every effect batch the state machine sends, until it stops sending;
    /// `waiting`: the QUEUED attempts whose messages RabbitMQ already holds.
    pub(crate) async fn run(
        self,
        mut effects: mpsc::UnboundedReceiver<Vec<Effect>>,
        waiting: Vec<Waiting>,
    ) {
        let mut unstarted = Unstarted::new(waiting);
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
                Effect::Dispatch(message) => {
                    // Recorded in effect order, so a later event of the same job finds it.
                    unstarted.published(message.id, message.attempt, message.priority());
                    dispatches.push(*message);
                }
                Effect::StopAttempt(control) => stops.push(control),
                Effect::ArmTimer(timer) => {
                    let _ = self.timers.send(TimerOp::Arm(timer));
                }
                Effect::Emit(event) => {
                    if event.status.is_terminal() {
                        let _ = self.timers.send(TimerOp::Disarm(event.job_id));
                    }
                    if event.status != JobStatus::Queued {
                        unstarted.left_queued(event.job_id, event.status == JobStatus::Running);
                    }
                    events.push(*event);
                }
            }
        }
        if !dispatches.is_empty() {
            self.dispatch("dispatch", &dispatches).await;
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

    /// Publishes again every attempt [`Unstarted::take_passed_over`] finds, if still QUEUED.
    async fn publish_again(&self, unstarted: &mut Unstarted) {
        let due = unstarted.take_passed_over(tokio::time::Instant::now(), self.dispatch_timeout);
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
        // An attempt no longer QUEUED left without its event reaching this outbox: forget it.
        for (job_id, _) in &due {
            if !messages.iter().any(|message| message.id == *job_id) {
                unstarted.attempts.remove(job_id);
            }
        }
        if messages.is_empty() {
            return;
        }
        tracing::info!(
            n_jobs = messages.len(),
            "attempts left their queue but were not started within the dispatch timeout: publishing them again"
        );
        for message in &messages {
            unstarted.published(message.id, message.attempt, message.priority());
        }
        self.dispatch("passed_over", &messages).await;
    }

    /// Publishes job messages, which the caller recorded in [`Unstarted`] (counted under
    /// `reason`, one of [`crate::metrics::PUBLISH_REASONS`]); a message the broker refuses
    /// fails its job (`Command::Undeliverable`) instead.
    async fn dispatch(&self, reason: &'static str, messages: &[JobMessage]) {
        let what = if reason == "dispatch" {
            "publish job messages"
        } else {
            "publish job messages again"
        };
        let refused = publish_or_set_aside(what, messages, |messages| {
            self.broker.publish_jobs(messages)
        })
        .await;
        crate::metrics::record_published(reason, messages.len() - refused.len());
        if refused.is_empty() {
            return;
        }
        let mut commands = Vec::with_capacity(refused.len());
        for (message, error) in refused {
            set_aside("job", &error, &message.id.to_string());
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
            // The attempt stays QUEUED and watched: published again once passed over, it is
            // refused again and `Undeliverable` proposed again.
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

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn job(n: u128) -> JobId {
        JobId(uuid::Uuid::from_u128(n))
    }

    /// Sweeps at `start` and every half timeout up to `until`, publishing again and returning
    /// everything due.
    fn sweep(
        unstarted: &mut Unstarted,
        start: tokio::time::Instant,
        until: Duration,
    ) -> Vec<JobId> {
        let mut due = Vec::new();
        let mut elapsed = Duration::ZERO;
        while elapsed <= until {
            for (id, attempt) in unstarted.take_passed_over(start + elapsed, TIMEOUT) {
                // Published again, as the outbox does.
                let priority = unstarted.attempts[&id].priority;
                unstarted.published(id, attempt, priority);
                due.push(id);
            }
            elapsed += TIMEOUT / 2;
        }
        due
    }

    #[test]
    fn an_attempt_waiting_its_turn_is_never_due() {
        let mut unstarted = Unstarted::default();
        for n in 0..3 {
            unstarted.published(job(n), 1, Priority::Medium);
        }
        // Another priority's later attempt starting does not pass the normal queue.
        unstarted.published(job(9), 1, Priority::High);
        unstarted.left_queued(job(9), true);
        let start = tokio::time::Instant::now();
        assert!(sweep(&mut unstarted, start, TIMEOUT * 10).is_empty());
        assert_eq!(unstarted.attempts.len(), 3);
    }

    #[test]
    fn an_attempt_passed_over_is_due_a_dispatch_timeout_later_once() {
        let mut unstarted = Unstarted::default();
        unstarted.published(job(1), 1, Priority::Medium);
        unstarted.published(job(2), 1, Priority::Medium);
        unstarted.published(job(3), 1, Priority::Medium);
        let start = tokio::time::Instant::now();
        assert!(unstarted.take_passed_over(start, TIMEOUT).is_empty());
        // Job 2 starts: job 1 left the queue before it and was not started.
        unstarted.left_queued(job(2), true);
        let just_before = start + TIMEOUT / 2 + TIMEOUT - Duration::from_millis(1);
        assert!(unstarted
            .take_passed_over(start + TIMEOUT / 2, TIMEOUT)
            .is_empty());
        assert!(unstarted.take_passed_over(just_before, TIMEOUT).is_empty());
        let due = unstarted.take_passed_over(start + TIMEOUT / 2 + TIMEOUT, TIMEOUT);
        assert_eq!(due, [(job(1), 1)]);
        unstarted.published(job(1), 1, Priority::Medium);
        // Job 3, behind job 2, is waiting its turn; job 1 is not due again by itself.
        assert!(sweep(&mut unstarted, start + TIMEOUT * 2, TIMEOUT * 10).is_empty());
        assert!(unstarted.attempts.contains_key(&job(3)));
    }

    #[test]
    fn a_republished_attempt_is_at_the_back_of_its_queue() {
        let mut unstarted = Unstarted::default();
        unstarted.published(job(1), 1, Priority::Low);
        unstarted.published(job(2), 1, Priority::Low);
        unstarted.left_queued(job(2), true);
        let start = tokio::time::Instant::now();
        assert_eq!(sweep(&mut unstarted, start, TIMEOUT * 2), [job(1)]);
        unstarted.published(job(3), 1, Priority::Low);
        // Job 3 was published after the copy: its start passes the copy over.
        unstarted.left_queued(job(3), true);
        let later = start + TIMEOUT * 3;
        assert_eq!(sweep(&mut unstarted, later, TIMEOUT * 2), [job(1)]);
    }

    #[test]
    fn the_original_of_a_republished_attempt_starting_passes_nothing_over() {
        let mut unstarted = Unstarted::default();
        unstarted.published(job(1), 1, Priority::Medium);
        unstarted.published(job(2), 1, Priority::Medium);
        // A backlog that waits its turn behind them.
        for n in 10..20 {
            unstarted.published(job(n), 1, Priority::Medium);
        }
        unstarted.left_queued(job(2), true);
        let start = tokio::time::Instant::now();
        // Job 1 was passed over: published again, behind the backlog.
        assert_eq!(sweep(&mut unstarted, start, TIMEOUT * 2), [job(1)]);
        // The worker that held its first copy starts it: the backlog was not passed over.
        unstarted.left_queued(job(1), true);
        assert!(sweep(&mut unstarted, start + TIMEOUT * 3, TIMEOUT * 5).is_empty());
        assert_eq!(unstarted.attempts.len(), 10);
    }

    #[test]
    fn attempts_published_before_the_outbox_started_are_ahead_of_every_later_one() {
        let waiting = vec![Waiting {
            id: job(1),
            attempt: 4,
            priority: Priority::Critical,
        }];
        let mut unstarted = Unstarted::new(waiting);
        let start = tokio::time::Instant::now();
        assert!(sweep(&mut unstarted, start, TIMEOUT * 3).is_empty());
        unstarted.published(job(2), 1, Priority::Critical);
        unstarted.left_queued(job(2), true);
        let later = start + TIMEOUT * 4;
        assert_eq!(sweep(&mut unstarted, later, TIMEOUT * 2), [job(1)]);
        // Cancelled while queued: it leaves without passing anything over.
        unstarted.published(job(5), 1, Priority::Critical);
        unstarted.published(job(6), 1, Priority::Critical);
        unstarted.left_queued(job(6), false);
        assert!(sweep(&mut unstarted, later + TIMEOUT * 3, TIMEOUT * 3).is_empty());
    }
}
