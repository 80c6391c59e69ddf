//! The `Handler` trait users implement for their own job types, and the registry that maps a
//! job `type` to a handler (the built-ins of CONTRACT.md included).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use distriqueue_core::JobId;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::builtin::{self, Builtin, HandlerError};

/// What a handler gets for one attempt.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's id.
    pub id: JobId,
    /// The job's `type` as submitted.
    pub job_type: String,
    /// The job's payload (a JSON object).
    pub payload: Map<String, Value>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Cancelled when the handler must stop: the job was cancelled, or the worker is shutting
    /// down or lost contact with the orchestrator. Long handlers should watch it; the runtime
    /// aborts them shortly after it fires.
    pub cancel: CancellationToken,
    /// Reports how far the handler got (0..=100): stored, returned as the job's `progress` and
    /// sent on SSE. Cheap to call often; only the latest value is sent.
    pub progress: Progress,
}

/// A handler's progress reporter (see [`JobContext::progress`]).
#[derive(Debug, Clone)]
pub struct Progress {
    latest: tokio::sync::watch::Sender<Option<u8>>,
}

impl Progress {
    /// A reporter and the receiver the runtime forwards from.
    pub(crate) fn channel() -> (Progress, tokio::sync::watch::Receiver<Option<u8>>) {
        let (latest, receiver) = tokio::sync::watch::channel(None);
        (Progress { latest }, receiver)
    }

    /// Reports `percent` done (values above 100 count as 100).
    pub fn report(&self, percent: u8) {
        self.latest.send_replace(Some(percent.min(100)));
    }
}

/// Runs jobs of one or more types.
///
/// Return the job's `result` (any JSON value; an object is customary) or a [`HandlerError`]:
/// `Permanent` for bad input (never retried), `Retryable` for transient failures.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt of a job: `Ok` is the job's `result` (COMPLETED); an error fails the
    /// attempt, retried by the job's policy unless [`HandlerError::Permanent`].
    async fn handle(&self, job: JobContext) -> Result<Value, HandlerError>;
}

/// Job types to handlers. Lookups are case-insensitive; a registered type wins over a built-in.
#[derive(Clone, Default)]
pub struct Handlers {
    by_type: HashMap<String, Arc<dyn Handler>>,
    builtins: bool,
}

impl Handlers {
    /// Every built-in handler of CONTRACT.md (calculate, transform, validate, sleep, echo and
    /// their aliases).
    pub fn builtin() -> Handlers {
        Handlers {
            by_type: HashMap::new(),
            builtins: true,
        }
    }

    /// No handlers at all.
    pub fn empty() -> Handlers {
        Handlers::default()
    }

    /// Registers `handler` for `job_type` (case-insensitive), replacing any earlier one.
    pub fn register(&mut self, job_type: &str, handler: impl Handler) -> &mut Handlers {
        self.by_type
            .insert(job_type.trim().to_lowercase(), Arc::new(handler));
        self
    }

    /// The handler for `job_type`, if any.
    pub fn find(&self, job_type: &str) -> Option<Arc<dyn Handler>> {
        let key = job_type.trim().to_lowercase();
        if let Some(handler) = self.by_type.get(&key) {
            return Some(Arc::clone(handler));
        }
        if !self.builtins {
            return None;
        }
        Builtin::for_type(&key).map(|family| Arc::new(BuiltinHandler(family)) as Arc<dyn Handler>)
    }
}

/// A built-in family as a [`Handler`].
struct BuiltinHandler(Builtin);

#[async_trait]
impl Handler for BuiltinHandler {
    async fn handle(&self, job: JobContext) -> Result<Value, HandlerError> {
        match self.0 {
            Builtin::Calculate => builtin::calculate(&job.job_type, &job.payload),
            Builtin::Transform => builtin::transform(&job.job_type, &job.payload),
            Builtin::Validate => builtin::validate(&job.job_type, &job.payload),
            Builtin::Echo => Ok(builtin::echo(&job.payload)),
            Builtin::Flaky => builtin::flaky(job.attempt, &job.payload),
            Builtin::Sleep => {
                let duration = builtin::sleep_duration(&job.payload)?;
                // Progress in quarters, so long sleeps show it.
                for quarter in 1..=4u8 {
                    tokio::select! {
                        () = tokio::time::sleep(duration / 4) => job.progress.report(quarter * 25),
                        () = job.cancel.cancelled() => return Err(HandlerError::Retryable("sleep cancelled".into())),
                    }
                }
                Ok(builtin::sleep_result(
                    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                ))
            }
        }
    }
}
