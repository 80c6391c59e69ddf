//! Retry with exponential backoff: the one way DistriQueue's roles retry an operation that may
//! fail for a while (a publish while RabbitMQ restarts, a read-model write while PostgreSQL is
//! away, a report while no orchestrator leads). The delays come from backon's exponential
//! backoff with jitter, so a crowd of workers reconnecting at once spreads out.

use std::error::Error;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Exponential backoff between tries: about `first` after the first failure, doubling with
/// each further one up to `max`, with no limit on the number of tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub first: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `first` up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The delays, without end: `first`, then doubling up to `max`, each with jitter but
    /// never above `max`.
    pub fn delays(self) -> impl Iterator<Item = Duration> + Send {
        let max = self.max.max(self.first);
        ExponentialBuilder::default()
            .with_min_delay(self.first)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times()
            .build()
            .chain(std::iter::repeat(max))
            .map(move |delay| delay.min(max))
    }
}

/// Runs `operation` until it succeeds and returns its value. Each failure is logged as a
/// warning naming `what` (with the error's causes), then waited out with `backoff`.
pub async fn until_ok<T, E, F, Fut>(what: &str, backoff: Backoff, mut operation: F) -> T
where
    E: Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = backoff.delays();
    let mut n_failures: u32 = 0;
    loop {
        match operation().await {
            Ok(value) => {
                if n_failures > 0 {
                    tracing::info!(what, n_failures, "succeeded after retrying");
                }
                return value;
            }
            Err(error) => {
                n_failures += 1;
                let delay = delays.next().unwrap_or(backoff.max);
                tracing::warn!(what, error = %crate::error_chain(&error), n_failures, retry_in_ms = delay_ms(delay), "failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Runs `operation` until it succeeds, or fails with an error that `retryable` says not to
/// retry, which is returned. Retried failures are logged as warnings naming `what`.
pub async fn retry_while<T, E, F, Fut, R>(
    what: &str,
    backoff: Backoff,
    mut retryable: R,
    mut operation: F,
) -> Result<T, E>
where
    E: Error + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    R: FnMut(&E) -> bool,
{
    let mut delays = backoff.delays();
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if retryable(&error) => {
                let delay = delays.next().unwrap_or(backoff.max);
                tracing::warn!(what, error = %crate::error_chain(&error), retry_in_ms = delay_ms(delay), "failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(error) => return Err(error),
        }
    }
}

fn delay_ms(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));

    /// A failure for the tests.
    fn failure(text: &'static str) -> std::io::Error {
        std::io::Error::other(text)
    }

    #[test]
    fn delays_grow_to_the_cap_and_go_on_without_passing_it() {
        let delays: Vec<Duration> = FAST.delays().take(50).collect();
        assert_eq!(delays.len(), 50);
        assert!(delays
            .iter()
            .all(|delay| *delay <= Duration::from_millis(4)));
        assert!(delays[40..]
            .iter()
            .all(|delay| *delay >= Duration::from_millis(2)));
    }

    #[tokio::test]
    async fn until_ok_retries_until_the_operation_succeeds() {
        let mut n_tries = 0;
        let value = until_ok("test", FAST, || {
            n_tries += 1;
            let n = n_tries;
            async move {
                if n < 4 {
                    Err(failure("not yet"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(value, 4);
    }

    #[tokio::test]
    async fn retry_while_stops_at_an_error_not_to_retry() {
        let mut n_tries = 0;
        let result: Result<(), std::io::Error> = retry_while(
            "test",
            FAST,
            |error: &std::io::Error| error.to_string() == "again",
            || {
                n_tries += 1;
                let n = n_tries;
                async move { Err(failure(if n < 3 { "again" } else { "refused" })) }
            },
        )
        .await;
        assert_eq!(
            result.map_err(|error| error.to_string()),
            Err("refused".to_string())
        );
        assert_eq!(n_tries, 3);
    }
}
