//! Test support for DistriQueue's own tests, used only as a dev-dependency so none of it is in
//! a library's public API: a throwaway RabbitMQ vhost ([`TestVhost`]) and PostgreSQL database
//! ([`TestDatabase`]) per test (DESIGN.md "Tests": parallel tests never share a queue or a
//! table).
//!
//! Services come from `DQ_TEST_AMQP_URL` (such as `amqp://guest:guest@127.0.0.1:5672/%2f`) and
//! `DQ_TEST_DATABASE_URL` (such as `postgres://root@127.0.0.1:5432/test`). Unset: the test
//! skips, saying so. Set but unusable: the test skips, unless `DQ_REQUIRE_SERVICES=1`, which
//! makes it fail. Vhosts are made and removed with `rabbitmqctl`, databases with `psql`. Tests
//! that run tools ([`python_modules`], [`tool`]: schemathesis, promtool, Chromium) follow the same rule.

use std::process::Command;

/// lapin, for tests that publish or read raw AMQP messages.
pub use lapin;

/// True when `DQ_REQUIRE_SERVICES=1`: a service a test needs must be there (CI sets it).
pub fn services_required() -> bool {
    std::env::var("DQ_REQUIRE_SERVICES").is_ok_and(|value| value == "1")
}

/// `None` (saying why: the test skips, or goes on without the service) or, when services are
/// required, fails the test.
fn unusable<T>(test: &str, service: &str, error: &str) -> Option<T> {
    assert!(
        !services_required(),
        "{test}: {service} is required (DQ_REQUIRE_SERVICES=1): {error}"
    );
    eprintln!("{test}: no {service}: {error}");
    None
}

/// Runs a command; `Err` carries its stderr.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A name no other test uses.
fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// True when `python3` imports every module of `modules`. Otherwise `false` (the test skips,
/// saying so) or, when services are required, the test fails with `install` as the hint.
pub fn python_modules(test: &str, modules: &[&str], install: &str) -> bool {
    let import = format!("import {}", modules.join(", "));
    tool(test, "python3", &["-c", &import], install)
}

/// True when `program args` runs and succeeds (a probe such as `promtool --version`).
/// Otherwise `false` (the test skips, saying so) or, when services are required, the test fails
/// with `install` as the hint.
pub fn tool(test: &str, program: &str, args: &[&str], install: &str) -> bool {
    let ready = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !ready {
        let missing = format!("`{program} {}` fails ({install})", args.join(" "));
        return unusable::<()>(test, program, &missing).is_some();
    }
    true
}

/// A vhost created for one test; deleted on drop.
#[derive(Debug)]
pub struct TestVhost {
    name: String,
    url: String,
}

impl TestVhost {
    /// A fresh vhost `dq-test-<random>` on the server of `DQ_TEST_AMQP_URL`, with full
    /// permissions for that URL's user; `None` (after printing why) without RabbitMQ.
    ///
    /// Panics when `DQ_REQUIRE_SERVICES=1` and RabbitMQ cannot be used.
    pub fn create(test: &str) -> Option<TestVhost> {
        let Ok(base) = std::env::var("DQ_TEST_AMQP_URL") else {
            eprintln!("{test}: no RabbitMQ: DQ_TEST_AMQP_URL is not set");
            return None;
        };
        let name = unique_name("dq-test-");
        let user = base
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(credentials, _)| credentials.split(':').next().unwrap_or("guest"))
            .unwrap_or("guest")
            .to_string();
        let made = run("rabbitmqctl", &["add_vhost", &name]).and_then(|()| {
            run(
                "rabbitmqctl",
                &["set_permissions", "-p", &name, &user, ".*", ".*", ".*"],
            )
        });
        if let Err(error) = made {
            return unusable(test, "RabbitMQ", &error);
        }
        let url = with_path(&base, &name);
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
        if let Err(error) = run("rabbitmqctl", &["delete_vhost", &self.name]) {
            eprintln!("cannot delete test vhost {}: {error}", self.name);
        }
    }
}

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

/// A PostgreSQL database made for one test; dropped (with its connections) on drop.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// A fresh database `dq_test_<random>` on the server of `DQ_TEST_DATABASE_URL`; `None`
    /// (after printing why) without PostgreSQL.
    ///
    /// Panics when `DQ_REQUIRE_SERVICES=1` and PostgreSQL cannot be used.
    pub fn create(test: &str) -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var("DQ_TEST_DATABASE_URL") else {
            eprintln!("{test}: no PostgreSQL: DQ_TEST_DATABASE_URL is not set");
            return None;
        };
        let name = unique_name("dq_test_");
        if let Err(error) = psql(&admin_url, &format!("CREATE DATABASE {name}")) {
            return unusable(test, "PostgreSQL", &error);
        }
        let url = with_path(&admin_url, &name);
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// The URL of this database (the admin URL's server, user and query, this database).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(error) = psql(&self.admin_url, &drop) {
            eprintln!("cannot drop test database {}: {error}", self.name);
        }
    }
}

/// Runs one SQL statement with `psql`.
fn psql(url: &str, sql: &str) -> Result<(), String> {
    run("psql", &[url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
}

/// `url` with its path (the vhost, or the database) replaced by `path`; a query is kept.
fn with_path(url: &str, path: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("amqp", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let query = rest.split_once('?').map(|(_, query)| format!("?{query}"));
    format!("{scheme}://{authority}/{path}{}", query.unwrap_or_default())
}

/// The (method, path) pairs an OpenAPI document lists.
pub fn openapi_routes(
    document: &serde_json::Value,
) -> std::collections::BTreeSet<(String, String)> {
    let methods = [
        "get", "put", "post", "delete", "patch", "options", "head", "trace",
    ];
    document["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            methods
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(|method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

/// The (method, path) pairs an axum router serves, read from its `Debug` form (axum prints
/// each route's path and its `Allow` methods): a walk of the router that needs no list kept
/// beside it. `HEAD` (axum adds it to every `GET`) is left out.
///
/// Panics when the form holds no route (a newer axum printing differently).
pub fn router_routes(router_debug: &str) -> std::collections::BTreeSet<(String, String)> {
    // `Node { paths: {RouteId(2): "/api/x", ...} }` of the path router (the first one printed;
    // the fallback router's follows).
    let path_router = router_debug
        .split("fallback_router")
        .next()
        .unwrap_or(router_debug);
    let mut paths = std::collections::BTreeMap::new();
    if let Some(node) = path_router.split("Node { paths: {").nth(1) {
        for entry in node.split("RouteId(").skip(1) {
            let Some((id, rest)) = entry.split_once("): \"") else {
                continue;
            };
            let Some((path, _)) = rest.split_once('"') else {
                continue;
            };
            paths.insert(id.to_string(), path.to_string());
        }
    }
    let mut routes = std::collections::BTreeSet::new();
    for entry in path_router.split("RouteId(").skip(1) {
        let Some((id, rest)) = entry.split_once("): MethodRouter(") else {
            continue;
        };
        let Some(methods) = rest
            .split("allow_header: Bytes(b\"")
            .nth(1)
            .and_then(|tail| tail.split('"').next())
        else {
            continue;
        };
        let Some(path) = paths.get(id) else { continue };
        for method in methods.split(',').filter(|method| *method != "HEAD") {
            routes.insert((method.to_string(), path.clone()));
        }
    }
    assert!(!routes.is_empty(), "no route found in {router_debug}");
    routes
}

#[cfg(test)]
mod tests {
    use super::with_path;

    #[test]
    fn routes_are_read_from_a_routers_debug_form() {
        let debug = r#"Router { path_router: PathRouter { routes: {RouteId(1): MethodRouter(MethodRouter { get: BoxedHandler, allow_header: Bytes(b"GET,HEAD") }), RouteId(2): MethodRouter(MethodRouter { post: BoxedHandler, allow_header: Bytes(b"POST,PUT") })}, node: Node { paths: {RouteId(2): "/api/x", RouteId(1): "/api/jobs/{id}"} } }, fallback_router: PathRouter { routes: {RouteId(1): Route(Route)}, node: Node { paths: {RouteId(1): "/"} } } }"#;
        let routes: Vec<(String, String)> = super::router_routes(debug).into_iter().collect();
        let expected = [
            ("GET", "/api/jobs/{id}"),
            ("POST", "/api/x"),
            ("PUT", "/api/x"),
        ];
        assert_eq!(
            routes,
            expected.map(|(method, path)| (method.to_string(), path.to_string()))
        );
    }

    #[test]
    fn path_is_replaced_and_query_kept() {
        assert_eq!(
            with_path("amqp://guest:guest@127.0.0.1:5672/%2f", "dq-test-1"),
            "amqp://guest:guest@127.0.0.1:5672/dq-test-1"
        );
        assert_eq!(
            with_path("amqp://127.0.0.1:5672", "v"),
            "amqp://127.0.0.1:5672/v"
        );
        assert_eq!(
            with_path("postgres://root@localhost", "db"),
            "postgres://root@localhost/db"
        );
        assert_eq!(
            with_path("postgres://root@127.0.0.1:5432/test?sslmode=disable", "db"),
            "postgres://root@127.0.0.1:5432/db?sslmode=disable"
        );
    }
}
