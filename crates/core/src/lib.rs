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

/// The length of `value` encoded as JSON, counted without keeping the encoding: what batching
/// weighs items by, so that a batch stays a few MiB whatever its items carry. A value that
/// cannot be encoded counts as what was written before the failure.
pub fn encoded_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    /// Counts what is written, keeping nothing.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// `bytes` as lower-case hexadecimal, two digits a byte (lease tokens, peer signatures).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
