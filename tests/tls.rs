//! TLS (issue 11, item 5): `serve --tls-cert --tls-key` speaks HTTPS only, on the gateway and
//! the orchestrator API; the CLI (`--ca-cert`) and the cluster verb trust the test's own
//! certificate authority; a client without it, or speaking plain HTTP, gets nothing through.
//! The certificates are fixtures (tests/fixtures/tls: a CA, and a server certificate for
//! localhost and 127.0.0.1 that it signed, valid for a hundred years).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

fn fixture(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", "tls", name]
        .iter()
        .collect();
    path.to_str().expect("utf-8 path").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_over_tls_answers_only_https_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, ca) = (
        fixture("server.pem"),
        fixture("server.key"),
        fixture("ca.pem"),
    );
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    assert!(serve.gateway.starts_with("https://"), "{}", serve.gateway);
    assert!(
        serve.orchestrator.starts_with("https://"),
        "{}",
        serve.orchestrator
    );

    // A client trusting the CA submits a job and sees it complete.
    let pem = std::fs::read(&ca).expect("read the CA");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a certificate"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let id = submit_ok(&client, &serve.gateway, &echo_job("HIGH", 3)).await;
    let job = wait_terminal(&client, &serve.gateway, &id, Duration::from_secs(120)).await;
    assert_eq!(job["jobStatus"], "COMPLETED", "{job}");

    // The CLI with --ca-cert.
    let (ok, stdout, stderr) = run_cli(&[
        "submit",
        "--type",
        "echo",
        "--priority",
        "HIGH",
        "--wait",
        "--server",
        &serve.gateway,
        "--ca-cert",
        &ca,
    ]);
    assert!(ok, "{stdout} / {stderr}");
    assert!(stdout.contains("COMPLETED"), "{stdout}");
    let (ok, stdout, stderr) = run_cli(&[
        "cluster",
        "--orchestrator",
        &serve.orchestrator,
        "--ca-cert",
        &ca,
        "status",
    ]);
    assert!(ok, "{stdout} / {stderr}");
    assert!(stdout.contains("leader"), "{stdout}");

    // Without the CA the certificate is not trusted; plain HTTP gets no answer.
    let (ok, _, stderr) = run_cli(&["get", &id, "--server", &serve.gateway]);
    assert!(!ok, "a client without the CA must not get through");
    assert!(!stderr.is_empty());
    for base in [&serve.gateway, &serve.orchestrator] {
        let plain = base.replacen("https://", "http://", 1);
        let answer = http().get(format!("{plain}/api/health")).send().await;
        assert!(
            answer.is_err(),
            "plain HTTP to {plain} answered: {answer:?}"
        );
    }
    let untrusting = http()
        .get(format!("{}/api/health", serve.gateway))
        .send()
        .await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    let (status, health) = get(&client, &format!("{}/api/health", serve.orchestrator)).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "UP", "{health}");
}

#[test]
fn a_certificate_without_its_key_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    let (ok, _, stderr) = run_cli(&[
        "serve",
        "--gateway-addr",
        "127.0.0.1:0",
        "--orchestrator-addr",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--tls-cert",
        &fixture("server.pem"),
    ]);
    assert!(!ok);
    assert!(stderr.contains("tls"), "{stderr}");
}
