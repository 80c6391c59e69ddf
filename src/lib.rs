//! The composition root: starts any set of DistriQueue's roles in one process and wires them
//! through a broker (in process or RabbitMQ) and the traits each role defines
//! (`gateway::Orchestrator`, `worker::Reporter`). The binary (`main.rs`) and the tests start
//! DistriQueue through here: [`serve`] for everything in one process, [`roles`] for one role
//! per process.

pub mod roles;
pub mod serve;

pub use serve::{ServeConfig, Served};
