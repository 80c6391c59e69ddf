//! The orchestrator role: the single writer of job lifecycle. It hosts the state machine of
//! `distriqueue-core` in openraft (one node in `serve`, or a cluster), carries out effects
//! through an outbox after commit, and serves the orchestrator HTTP API.
//!
//! Modules: `node` (start-up), `handle` ([`OrchestratorHandle`]), `proposer` (commands into
//! log entries), `leader` (the leader's duties), `outbox`, `timers`, `liveness` (heartbeats),
//! `api` (the HTTP API), `network` (Raft RPCs), `raft`, `log_store`, `state_machine`.

mod api;
mod handle;
mod leader;
mod liveness;
mod log_store;
pub mod metrics;
mod network;
mod node;
mod outbox;
mod peer;
mod proposer;
mod raft;
mod raft_view;
mod state_machine;
mod timers;

pub use api::{access, openapi, router};
pub use handle::OrchestratorHandle;
pub use leader::commit_watermark;
pub use node::{Orchestrator, OrchestratorConfig, OrchestratorError};
pub use proposer::{Committed, SubmitError};
pub use raft::{NodeId, TypeConfig};
