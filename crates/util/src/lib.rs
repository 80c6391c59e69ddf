//! Async building blocks DistriQueue's roles share, so each lives in one place: gathering
//! concurrent calls into one write ([`Batcher`]), retrying with backoff ([`retry`]), the wall
//! clock and random ids that only the edges may read ([`clock`]), the HTTP roles' shared
//! answers ([`http`]) and metrics helpers ([`metrics`]), and a task aborted when its owner goes away ([`AbortOnDrop`]).
//!
//! `distriqueue-core` stays pure (DESIGN.md "Who owns what"): it reads no clock and draws no
//! random number. Whatever does lives here, and the hosts stamp it into commands.

pub mod auth;
mod batch;
pub mod clock;
pub mod http;
pub mod metrics;
pub mod retry;
pub mod serve;

pub use batch::{Batcher, BatcherStopped};

/// An error with every cause after it, one line: `cannot publish: connection refused (os
/// error 111)`. For log lines and error bodies, so no cause is lost at a crate boundary.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source's text (`#[error(transparent)]`, or "{0}").
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Aborts a task when dropped: a background task that must not outlive its owner.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub use distriqueue_core::encoded_len;
