//! The worker role: job slots that consume dispatches, take the lease, run handlers and report
//! outcomes. Workers only execute; they never decide retries (DESIGN.md, "Who owns what").

mod builtin;
mod handler;
mod ledger;
pub mod metrics;
mod runtime;

pub use builtin::{Builtin, HandlerError};
pub use handler::{Handler, Handlers, JobContext, Progress};
pub use ledger::Ledger;
pub use runtime::{ReportError, Reporter, Worker, WorkerConfig, WorkerError};
