//! API keys with roles (issue 11, items 1 and 2), through the real binary: every route of both
//! servers (read from their OpenAPI documents) answers 401 without a key and 403 with a key of
//! the wrong role, and its normal answer with the right one; health needs none. The CLI and a
//! worker process work with keys; a server on a non-loopback address without keys is refused.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::Proc;
use common::*;
use serde_json::{json, Value};

const CLIENT_KEY: &str = "client-key-for-the-auth-test";
const WORKER_KEY: &str = "worker-key-for-the-auth-test";
const ADMIN_KEY: &str = "admin-key-for-the-auth-test";

fn keys_flag() -> String {
    format!("{CLIENT_KEY}:client,{WORKER_KEY}:worker,{ADMIN_KEY}:admin")
}

/// The role a route asks for, as this test expects it (SECURITY.md's table).
fn expected_role(server: &str, method: &str, path: &str) -> Option<&'static str> {
    let read = method == "GET";
    match (server, path) {
        ("gateway", "/api/actuator/health") | ("orchestrator", "/api/health") => None,
        // The dashboard's files hold no data; /api/auth tells a key's own roles.
        ("gateway", "/" | "/dashboard" | "/dashboard/{file}" | "/api/auth") => None,
        ("orchestrator", path) if path.starts_with("/raft/") => None,
        ("gateway", _) if read => Some("client"),
        ("gateway", _) => Some("client"),
        ("orchestrator", "/api/cluster/nodes" | "/api/cluster/nodes/{id}") => Some("admin"),
        ("orchestrator", _) if read => Some("client"),
        (
            "orchestrator",
            "/api/jobs/status"
            | "/api/jobs/status/batch"
            | "/api/jobs/{id}/status"
            | "/api/workers/heartbeat",
        ) => Some("worker"),
        ("orchestrator", _) => Some("client"),
        _ => Some("admin"),
    }
}

/// A key of a role that is not enough for `role`.
fn wrong_key(role: &str) -> &'static str {
    match role {
        "worker" => CLIENT_KEY,
        "admin" => CLIENT_KEY,
        _ => WORKER_KEY,
    }
}

fn right_key(role: &str) -> &'static str {
    match role {
        "worker" => WORKER_KEY,
        "admin" => ADMIN_KEY,
        _ => CLIENT_KEY,
    }
}

/// Sends `method path` to `base` with `key` (as a bearer token, or `X-API-Key` when
/// `header_form`); returns the status.
async fn status_of(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    header_form: bool,
) -> u16 {
    let path = path
        .replace("{id}", &uuid::Uuid::new_v4().to_string())
        .replace("{file}", "index.css");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = client
        .request(method.clone(), format!("{base}{path}"))
        .timeout(Duration::from_secs(10));
    if method != reqwest::Method::GET {
        request = request.json(&json!({}));
    }
    if let Some(key) = key {
        request = match header_form {
            true => request.header("X-API-Key", key),
            false => request.bearer_auth(key),
        };
    }
    let response = request.send().await.expect("a request");
    let status = response.status().as_u16();
    if status == 401 || status == 403 {
        let body: Value = response.json().await.expect("a JSON error");
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_asks_for_its_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(
        dir.path(),
        &["--api-keys", &keys_flag(), "--metrics-addr", "127.0.0.1:0"],
    );
    let client = http();
    for (server, base) in [
        ("gateway", serve.gateway.clone()),
        ("orchestrator", serve.orchestrator.clone()),
    ] {
        // The documents themselves need a key.
        let docs = format!("{base}/api/v3/api-docs");
        assert_eq!(
            status_of(&client, &base, "GET", "/api/v3/api-docs", None, false).await,
            401
        );
        let document: Value = client
            .get(&docs)
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .expect("the document")
            .json()
            .await
            .expect("JSON");
        let paths = document["paths"].as_object().expect("paths");
        let mut checked = 0;
        for (path, item) in paths {
            for method in ["get", "post", "put", "delete"] {
                if item.get(method).is_none() || path == "/api/jobs/stream" && method != "get" {
                    continue;
                }
                let method = method.to_ascii_uppercase();
                let what = format!("{server} {method} {path}");
                let without = status_of(&client, &base, &method, path, None, false).await;
                match expected_role(server, &method, path) {
                    None => assert!(
                        without != 401 && without != 403,
                        "{what} needs no key, answered {without}"
                    ),
                    Some(role) => {
                        assert_eq!(without, 401, "{what} without a key");
                        let wrong =
                            status_of(&client, &base, &method, path, Some(wrong_key(role)), false)
                                .await;
                        assert_eq!(wrong, 403, "{what} with a key without {role}");
                        for header_form in [false, true] {
                            let right = status_of(
                                &client,
                                &base,
                                &method,
                                path,
                                Some(right_key(role)),
                                header_form,
                            )
                            .await;
                            assert!(
                                right != 401 && right != 403,
                                "{what} with a {role} key answered {right}"
                            );
                        }
                        let admin =
                            status_of(&client, &base, &method, path, Some(ADMIN_KEY), false).await;
                        assert!(
                            admin != 401 && admin != 403,
                            "{what} with the admin key: {admin}"
                        );
                        let unknown = status_of(
                            &client,
                            &base,
                            &method,
                            path,
                            Some("not-a-configured-key-000"),
                            false,
                        )
                        .await;
                        assert_eq!(unknown, 401, "{what} with an unknown key");
                    }
                }
                checked += 1;
            }
        }
        assert!(checked >= 10, "{server}: only {checked} routes");
    }
    // The worker's metrics server too.
    let metrics = serve.metrics.as_deref().expect("a metrics address");
    assert_eq!(
        status_of(&client, metrics, "GET", "/metrics", None, false).await,
        401
    );
    assert_eq!(
        status_of(&client, metrics, "GET", "/metrics", Some(WORKER_KEY), false).await,
        403
    );
    assert_eq!(
        status_of(&client, metrics, "GET", "/metrics", Some(CLIENT_KEY), false).await,
        200
    );

    // The CLI sends its key; without it the gateway says what is missing.
    let cli = |args: &[&str], key: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_distriqueue"));
        command.args(args).args(["--server", &serve.gateway]);
        if let Some(key) = key {
            command.args(["--api-key", key]);
        }
        command
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run the CLI")
    };
    let refused = cli(&["submit", "--type", "echo"], None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );
    let submitted = cli(&["submit", "--type", "echo", "--wait"], Some(CLIENT_KEY));
    assert!(submitted.status.success(), "{submitted:?}");
    let job: Value = serde_json::from_slice(&submitted.stdout).expect("the job");
    assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn public_reads_open_reads_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &["--api-keys", &keys_flag(), "--public-reads"]);
    let client = http();
    let gateway = serve.gateway.as_str();
    assert_eq!(
        status_of(&client, gateway, "GET", "/api/jobs", None, false).await,
        200
    );
    assert_eq!(
        status_of(&client, gateway, "POST", "/api/jobs", None, false).await,
        401
    );
    let orchestrator = serve.orchestrator.as_str();
    assert_eq!(
        status_of(
            &client,
            orchestrator,
            "GET",
            "/api/raft/status",
            None,
            false
        )
        .await,
        200
    );
    assert_eq!(
        status_of(
            &client,
            orchestrator,
            "POST",
            "/api/workers/heartbeat",
            None,
            false
        )
        .await,
        401
    );
}

#[test]
fn a_server_beyond_loopback_without_keys_is_refused_and_with_keys_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_distriqueue"))
        .args([
            "serve",
            "--gateway-addr",
            "0.0.0.0:0",
            "--orchestrator-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without API keys"), "{stderr}");
    assert!(stderr.contains("--api-keys"), "{stderr}");

    // With keys it starts (and is stopped when dropped).
    let data = dir.path().join("with-keys").display().to_string();
    let args: Vec<String> = [
        "serve",
        "--gateway-addr",
        "0.0.0.0:0",
        "--orchestrator-addr",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--api-keys",
        &keys_flag(),
    ]
    .map(str::to_string)
    .to_vec();
    let serve = Proc::start(&args, dir.path().join("serve.log"), "gateway");
    assert!(
        serve.ready.starts_with("http://0.0.0.0:"),
        "{}",
        serve.ready
    );
}
