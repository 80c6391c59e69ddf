//! A Rust user's own job type: register a `Handler` for type `greet` next to the built-ins and run
//! `serve` through the `distriqueue` library.
//!
//! Run: `cargo run --example custom_handler`, then
//! `curl -X POST localhost:8082/api/jobs -H 'Content-Type: application/json' \
//!   -d '{"type":"greet","jobPriority":"HIGH","payload":{"name":"Ada"}}'`.

use async_trait::async_trait;
use distriqueue::Config;
use distriqueue_worker::{Handler, HandlerError, Handlers, JobContext};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Answers `{"greeting": "hello, <name>"}`; a missing name is bad input, so never retried.
struct Greet;

#[async_trait]
impl Handler for Greet {
    async fn handle(&self, job: JobContext) -> Result<Value, HandlerError> {
        let name = job
            .payload
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| HandlerError::Permanent("payload.name must be a string".into()))?;
        Ok(json!({"greeting": format!("hello, {name}")}))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut handlers = Handlers::builtin();
    handlers.register("greet", Greet);
    // `serve`'s defaults: every role in this process, data in ./data.
    let config = Config::default();
    let shutdown = CancellationToken::new();
    let started = distriqueue::start(&config, handlers, shutdown.clone()).await?;
    println!("distriqueue with greet: {}", started.ready_line());
    tokio::signal::ctrl_c().await?;
    shutdown.cancel();
    started.stopped.await?
}
