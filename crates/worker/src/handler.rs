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
    pub id: JobId,
    /// The job's `type` as submitted.
    pub job_type: String,
    /// The job's payload (a JSON object).
    pub payload: Map<String, Value>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Cancelled when the handler must stop (the worker's shutdown grace ran out). Long handlers
    /// should watch it; the runtime aborts them shortly after it fires.
    pub cancel: CancellationToken,
}

/// Runs jobs of one or more types.
///
/// Return the job's `result` (any JSON value; an object is customary) or a [`HandlerError`]:
/// `Permanent` for bad input (never retried), `Retryable` for transient failures.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
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
            Builtin::Sleep => {
                let duration = builtin::sleep_duration(&job.payload)?;
                tokio::select! {
                    () = tokio::time::sleep(duration) => {
                        Ok(builtin::sleep_result(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)))
                    }
                    () = job.cancel.cancelled() => Err(HandlerError::Retryable("sleep cancelled".into())),
                }
            }
        }
    }
}
