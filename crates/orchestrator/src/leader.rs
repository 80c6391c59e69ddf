//! The leader's duties (issue 5, item 3): the outbox, the timers, worker liveness and the
//! event watermark run only on the leader. They start when this node becomes leader (after a
//! barrier entry, so the whole log is applied) and stop when it is not leader any more.

use std::sync::Arc;
use std::time::Duration;

use distriqueue_broker::Broker;
use distriqueue_core::{Batch, Command, State};
use distriqueue_util::clock;
use distriqueue_util::error_chain;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::handle::OrchestratorHandle;
use crate::liveness::{run_liveness, Registry};
use crate::outbox::{self, Outbox};
use crate::proposer::Proposer;
use crate::raft::{NodeId, TypeConfig};
use crate::state_machine::StateMachineStore;
use crate::timers::run_timers;

/// What the duties need; [`LeaderDuties::run`] follows openraft's metrics for the whole life
/// of the node.
pub(crate) struct LeaderDuties {
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) state_machine: StateMachineStore,
    pub(crate) broker: Broker,
    pub(crate) workers: Arc<Registry>,
    pub(crate) proposer: Proposer,
    pub(crate) handle: OrchestratorHandle,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) dispatch_timeout: Duration,
    /// The term of the running duties, `None` while this node does not lead.
    pub(crate) leading: watch::Sender<Option<u64>>,
}

impl LeaderDuties {
    /// Follows openraft's metrics: starts the duties on becoming leader (in a term), stops them
    /// on losing leadership. Runs until raft stops.
    pub(crate) async fn run(self) {
        let mut metrics = self.raft.metrics();
        let mut session: Option<(u64, Vec<JoinHandle<()>>)> = None;
        loop {
            let (is_leader, term) = {
                let now = metrics.borrow_and_update();
                (now.state == ServerState::Leader, now.current_term)
            };
            let current = session.as_ref().map(|(term, _)| *term);
            if current.is_some() && (!is_leader || current != Some(term)) {
                if let Some((old_term, tasks)) = session.take() {
                    for task in tasks {
                        task.abort();
                    }
                    self.state_machine.go_offline();
                    // What the stopped outbox held is derived again by the next leader.
                    self.handle
                        .outbox_backlog
                        .store(0, std::sync::atomic::Ordering::Release);
                    self.leading.send_replace(None);
                    tracing::info!(
                        term = old_term,
                        "not the leader any more: leader duties stopped"
                    );
                }
            }
            if is_leader && session.is_none() {
                match self.begin().await {
                    Ok(tasks) => {
                        session = Some((term, tasks));
                        self.leading.send_replace(Some(term));
                        tracing::info!(term, "leader: duties started");
                    }
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), term, "cannot start the leader's duties yet");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// Commits a barrier entry (every entry before it is then applied), grants every lease
    /// holder a full heartbeat timeout, then resumes dispatches, events and timers from the
    /// state (job messages RabbitMQ holds are not published again) and starts the outbox, the timers, liveness and (with RabbitMQ) the watermark.
    ///
    /// Errors: the barrier entry did not commit (leadership lost meanwhile, say).
    async fn begin(
        &self,
    ) -> Result<Vec<JoinHandle<()>>, RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>> {
        let now = clock::now().max(self.state_machine.read(State::leader_time));
        self.raft
            .client_write(Batch {
                seed: 0,
                now,
                commands: Vec::new(),
            })
            .await?;
        self.workers.reset();
        // A new leader grants every worker holding a lease a full heartbeat timeout.
        for worker_id in self.state_machine.read(State::lease_holders) {
            self.workers.grant_grace(&worker_id);
        }
        let backlog = Arc::clone(&self.handle.outbox_backlog);
        let (effects_sender, effects) = outbox::channel(Arc::clone(&backlog));
        let (timer_sender, timer_receiver) = mpsc::unbounded_channel();
        let (published_upto, published) = watch::channel(0);
        let outbox = Outbox {
            broker: self.broker.clone(),
            timers: timer_sender,
            workers: Arc::clone(&self.workers),
            state_machine: self.state_machine.clone(),
            proposer: self.proposer.clone(),
            dispatch_timeout: self.dispatch_timeout,
            published_upto,
            backlog,
        };
        // RabbitMQ keeps the job messages it confirmed; the in-process transport loses them
        // with the process.
        let waiting = self
            .state_machine
            .go_live(effects_sender, self.broker.confirms_events());
        let mut tasks = vec![
            tokio::spawn(outbox.run(effects, waiting)),
            tokio::spawn(run_liveness(
                Arc::clone(&self.workers),
                self.proposer.clone(),
                self.heartbeat_timeout,
            )),
            tokio::spawn(run_timers(
                timer_receiver,
                self.proposer.clone(),
                self.state_machine.clone(),
            )),
        ];
        if self.broker.confirms_events() {
            // RabbitMQ holds what it confirmed: the watermark follows the confirms.
            tasks.push(tokio::spawn(commit_watermark(
                self.handle.clone(),
                published,
            )));
        }
        Ok(tasks)
    }
}

/// Turns "events are safe up to seq N" (confirmed by RabbitMQ, or stored by the read model in
/// `serve`) into committed `AckEvents` commands, at most about ten per second: the "published
/// up to" watermark of DESIGN.md "Delivery", rule 6. Ends when the sender is gone.
pub async fn commit_watermark(handle: OrchestratorHandle, mut safe_upto: watch::Receiver<u64>) {
    let mut acknowledged = 0;
    while safe_upto.changed().await.is_ok() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let upto = *safe_upto.borrow_and_update();
        if upto > acknowledged {
            match handle.submit(Command::AckEvents { upto }).await {
                Ok(_) => acknowledged = upto,
                Err(error) => {
                    tracing::debug!(error = %error_chain(&error), "watermark not committed")
                }
            }
        }
    }
}
