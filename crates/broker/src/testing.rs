//! Test support: a throwaway RabbitMQ vhost per test (DESIGN.md "Tests": each test uses its
//! own vhost, so parallel tests never take each other's messages).
//!
//! Reads `DQ_TEST_AMQP_URL` (such as `amqp://guest:guest@127.0.0.1:5672/%2f`). Unset: the test
//! skips, saying so. Set but unreachable: the test skips, unless `DQ_REQUIRE_SERVICES=1`, which
//! makes it fail. The vhost is made and removed with `rabbitmqctl`.

use std::process::Command;

/// A vhost created for one test; deleted on drop.
pub struct TestVhost {
    name: String,
    url: String,
}

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run rabbitmqctl: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn services_required() -> bool {
    std::env::var("DQ_REQUIRE_SERVICES").is_ok_and(|value| value == "1")
}

impl TestVhost {
    /// A fresh vhost `dq-test-<random>` on the server of `DQ_TEST_AMQP_URL`, with full
    /// permissions for that URL's user; `None` (after printing why) when the test must skip.
    ///
    /// Panics when `DQ_REQUIRE_SERVICES=1` and RabbitMQ cannot be used.
    pub fn create(test: &str) -> Option<TestVhost> {
        let Ok(base) = std::env::var("DQ_TEST_AMQP_URL") else {
            eprintln!("skipped {test}: DQ_TEST_AMQP_URL is not set");
            return None;
        };
        let name = format!("dq-test-{}", &uuid_like());
        let user = base
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(credentials, _)| credentials.split(':').next().unwrap_or("guest"))
            .unwrap_or("guest")
            .to_string();
        let made = rabbitmqctl(&["add_vhost", &name])
            .and_then(|()| rabbitmqctl(&["set_permissions", "-p", &name, &user, ".*", ".*", ".*"]));
        if let Err(error) = made {
            if services_required() {
                panic!("{test}: RabbitMQ is required (DQ_REQUIRE_SERVICES=1): {error}");
            }
            eprintln!("skipped {test}: {error}");
            return None;
        }
        let url = with_vhost(&base, &name);
        Some(TestVhost { name, url })
    }

    /// The AMQP URL of this vhost.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The vhost's name (for `rabbitmqctl -p`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        if let Err(error) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("cannot delete test vhost {}: {error}", self.name);
        }
    }
}

/// lapin, for tests that publish or read raw AMQP messages.
pub use lapin;

/// A raw channel into `url`'s vhost on the current Tokio runtime (for tests that publish
/// malformed messages or read queues directly).
///
/// Panics when RabbitMQ cannot be reached (the test made the vhost a moment ago).
pub async fn raw_channel(url: &str) -> lapin::Channel {
    let properties = lapin::ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let connection = lapin::Connection::connect(url, properties)
        .await
        .unwrap_or_else(|error| panic!("connect to {url}: {error}"));
    connection
        .create_channel()
        .await
        .unwrap_or_else(|error| panic!("channel on {url}: {error}"))
}

/// `url` with its vhost path replaced by `vhost`.
fn with_vhost(url: &str, vhost: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("amqp", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}/{vhost}")
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{:x}-{:x}", std::process::id(), nanos)
}

#[cfg(test)]
mod tests {
    use super::with_vhost;

    #[test]
    fn vhost_replaces_the_path() {
        assert_eq!(
            with_vhost("amqp://guest:guest@127.0.0.1:5672/%2f", "dq-test-1"),
            "amqp://guest:guest@127.0.0.1:5672/dq-test-1"
        );
        assert_eq!(
            with_vhost("amqp://127.0.0.1:5672", "v"),
            "amqp://127.0.0.1:5672/v"
        );
    }
}
