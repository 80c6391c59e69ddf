//! DistriQueue's core: the job model, the lifecycle state machine (pure, no I/O) and the wire
//! formats of CONTRACT.md. Every other crate meets through these types.

pub mod api;
pub mod machine;
pub mod model;
pub mod protocol;
pub mod request;
pub mod time;
pub mod wire;

pub use machine::{
    Batch, Command, Effect, Outcome, Refusal, Report, ReportKind, RetryPolicy, State, Timer,
    TimerKind,
};
pub use model::{JobId, JobStatus, Priority, WorkerId};
pub use time::Millis;
pub use wire::{
    AttemptView, ControlMessage, JobMessage, JobResponse, StatusEvent, WorkerHeartbeat,
};
