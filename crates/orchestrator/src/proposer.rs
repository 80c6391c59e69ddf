//! The proposer: submitted commands in, log entries out. Whatever waits (up to `max_batch`
//! commands) becomes one entry, stamped with the leader's time, never earlier than any committed
//! entry's, and a fresh random seed (the state machine's only source of randomness). One entry
//! is in flight at a time: while it commits, the next one gathers every command that arrives
//! (group commit), which beats more, smaller entries because the log store writes one entry
//! batch per fsync. Large commands weigh more, so an entry stays a few MiB whatever its commands
//! carry. It runs on every node; a follower's answer is "not the leader".

use std::sync::Arc;

use distriqueue_core::{Batch, Command, Outcome, State};
use distriqueue_util::{clock, Batcher};
use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::{BasicNode, Raft};

use crate::raft::{NodeId, TypeConfig};
use crate::state_machine::StateMachineStore;

/// The proposer's handle. An item is a group of commands committed together, in one log
/// entry: [`Batcher::call`] commits a group and answers its outcomes, [`Batcher::submit`]
/// commits it without waiting (timers, liveness).
pub(crate) type Proposer = Batcher<Vec<Command>, Result<Committed, SubmitError>>;

/// Command groups waiting for an entry at most; past it, submitters wait for room.
const WAITING_GROUPS: usize = 16 * 1024;

/// Encoded bytes that weigh as much as one command: an entry holds at most `max_batch`
/// commands, and at most `max_batch` times this many bytes of them (4 MiB with the default
/// 1024), unless one group alone is larger (its route's body limit bounds it). So every entry
/// fits a peer request (`peer::APPEND_LIMIT`).
const BYTES_PER_COMMAND: usize = 4096;

/// A group's weight: each command 1, plus 1 per [`BYTES_PER_COMMAND`] of its JSON.
fn weight(group: &[Command]) -> usize {
    group.len() + distriqueue_util::encoded_len(group) / BYTES_PER_COMMAND
}

/// A group of commands as committed: the outcome of each, in order, and the index of the log
/// entry that holds them all.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// One outcome per command of the group, in order.
    pub outcomes: Vec<Outcome>,
    /// The Raft log index of the entry.
    pub log_index: u64,
}

/// Why a command got no outcome. The proposer answers only after the entry committed or
/// failed, so a command answered with an error was not applied, unless raft failed after
/// replicating it (then a repeat is harmless: every command is idempotent or fenced).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// A heartbeat under a new worker id while the leader knows as many workers as it keeps
    /// (429).
    #[error("the leader knows {cap} workers already; a new worker id waits until silent ones are forgotten")]
    TooManyWorkers {
        /// [`MAX_WORKERS`](crate::liveness::MAX_WORKERS).
        cap: usize,
    },
    /// The node is shutting down.
    #[error("the orchestrator is shutting down")]
    ShuttingDown,
    /// This node does not lead; `leader` is the one it knows of.
    #[error("this node is not the leader (the leader is node {})", leader.map_or_else(|| "unknown".to_string(), |id| id.to_string()))]
    NotLeader {
        /// The leader's node id, when known.
        leader: Option<NodeId>,
    },
    /// Raft could not commit the entry.
    #[error("the log entry was not committed")]
    Raft(#[source] Arc<RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>),
    /// This node leads but cannot reach a majority of the cluster.
    #[error("this node has lost contact with the majority of the cluster")]
    NoQuorum,
}

impl From<RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>> for SubmitError {
    fn from(error: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> SubmitError {
        match &error {
            RaftError::Fatal(Fatal::Stopped) => SubmitError::ShuttingDown,
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                SubmitError::NotLeader {
                    leader: forward.leader_id,
                }
            }
            _ => SubmitError::Raft(Arc::new(error)),
        }
    }
}

/// Starts the proposer of `raft`: an entry holds up to `max_batch` commands, unless a single
/// group is larger (a group is never split across entries).
pub(crate) fn start(
    raft: Raft<TypeConfig>,
    max_batch: usize,
    state_machine: StateMachineStore,
) -> Proposer {
    // Leader time never goes backwards, also across restarts, leader changes and clock steps.
    let mut last_now = state_machine.read(State::leader_time);
    Batcher::start_weighted(
        max_batch,
        WAITING_GROUPS,
        |group: &Vec<Command>| weight(group),
        move |groups: Vec<Vec<Command>>| {
            last_now = last_now
                .max(clock::now())
                .max(state_machine.read(State::leader_time));
            let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
            let batch = Batch {
                seed: clock::random_u64(),
                now: last_now,
                commands: groups.into_iter().flatten().collect(),
            };
            let raft = raft.clone();
            async move {
                match raft.client_write(batch).await {
                    Ok(response) => {
                        metrics::histogram!(crate::metrics::LOG_ENTRY_COMMANDS)
                            .record(response.data.len() as f64);
                        let log_index = response.log_id.index;
                        let mut outcomes = response.data.into_iter();
                        sizes
                            .iter()
                            .map(|n| {
                                Ok(Committed {
                                    outcomes: outcomes.by_ref().take(*n).collect(),
                                    log_index,
                                })
                            })
                            .collect()
                    }
                    Err(error) => {
                        let error = SubmitError::from(error);
                        sizes.iter().map(|_| Err(error.clone())).collect()
                    }
                }
            }
        },
    )
}
