//! The orchestrator role: the single writer of job lifecycle. It hosts the state machine of
//! `distriqueue-core` in openraft (one node in `serve`), carries out effects through an outbox
//! after commit, and serves the orchestrator HTTP API.

mod api;
mod log_store;
mod network;
mod node;
mod raft;
mod state_machine;
mod workers;

pub use api::router;
pub use node::{
    commit_watermark, Orchestrator, OrchestratorConfig, OrchestratorError, OrchestratorHandle,
    SubmitError,
};
pub use raft::{NodeId, TypeConfig};
