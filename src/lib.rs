//! The composition root: starts any set of DistriQueue's roles in one process and wires them
//! through the in-process broker and the traits each role defines (`gateway::Orchestrator`,
//! `worker::Reporter`). The binary (`main.rs`) and the tests start DistriQueue through here.

pub mod serve;

pub use serve::{ServeConfig, Served};
