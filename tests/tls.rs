//! TLS (issue 11, item 5): `serve --tls-cert --tls-key` speaks HTTPS only, on the gateway and
//! the orchestrator API; the CLI (`--ca-cert`) and the cluster verb trust the test's own
//! certificate authority; a client without it, or speaking plain HTTP, gets nothing through.
//! `amqps://` trusts the same `--ca-cert` (through a TLS proxy in front of the test RabbitMQ;
//! skipped without `DQ_TEST_AMQP_URL`). The certificates are fixtures (tests/fixtures/tls: a CA, and a server certificate for
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

/// Runs `serve` on port 0 over `data` with `args`, expecting it to refuse to start; returns its
/// stderr.
fn serve_refused(data: &std::path::Path, args: &[&str]) -> String {
    let data = data.to_str().expect("utf-8 path");
    let mut all = vec![
        "serve",
        "--gateway-addr",
        "127.0.0.1:0",
        "--orchestrator-addr",
        "127.0.0.1:0",
        "--data-dir",
        data,
    ];
    all.extend_from_slice(args);
    let (ok, _, stderr) = run_cli(&all);
    assert!(!ok, "serve {args:?} started");
    stderr
}

#[test]
fn a_certificate_without_its_key_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stderr = serve_refused(dir.path(), &["--tls-cert", &fixture("server.pem")]);
    assert!(stderr.contains("tls"), "{stderr}");
}

/// A TLS endpoint on 127.0.0.1 in front of the test RabbitMQ's plain port (the machine's
/// RabbitMQ has no TLS listener), with the fixture certificate for localhost and 127.0.0.1.
/// Its tasks end with the test's runtime. Returns its port.
async fn amqps_proxy(rabbitmq: std::net::SocketAddr) -> u16 {
    let tls = distriqueue_util::serve::ServerTls::from_pem_files(
        fixture("server.pem").as_ref(),
        fixture("server.key").as_ref(),
    )
    .expect("the fixture certificate");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the TLS proxy");
    let port = listener.local_addr().expect("proxy address").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok(mut client) = tls.accept(stream).await else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(rabbitmq).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_with_the_ca_runs_jobs_and_without_it_is_refused() {
    let Some(vhost) = distriqueue_testkit::TestVhost::create("amqps") else {
        return;
    };
    // amqp://user:password@host:port/vhost -> amqps://user:password@localhost:<proxy>/vhost
    let (credentials, rest) = vhost
        .url()
        .strip_prefix("amqp://")
        .and_then(|url| url.split_once('@'))
        .expect("an amqp:// URL with credentials");
    let (authority, path) = rest.split_once('/').expect("a vhost in the URL");
    let rabbitmq = tokio::net::lookup_host(authority)
        .await
        .expect("RabbitMQ's address")
        .next()
        .expect("an address");
    let port = amqps_proxy(rabbitmq).await;
    let amqps = format!("amqps://{credentials}@localhost:{port}/{path}");

    let dir = tempfile::tempdir().expect("tempdir");
    let ca = fixture("ca.pem");
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--amqp", &amqps, "--ca-cert", &ca],
    );
    let client = http();
    let id = submit_ok(&client, &serve.gateway, &echo_job("HIGH", 5)).await;
    let job = wait_terminal(&client, &serve.gateway, &id, Duration::from_secs(120)).await;
    assert_eq!(job["jobStatus"], "COMPLETED", "{job}");
    drop(serve);

    // Without the CA, RabbitMQ's certificate is not trusted: serve refuses to start.
    let stderr = serve_refused(&dir.path().join("other"), &["--amqp", &amqps]);
    assert!(
        stderr.contains("RabbitMQ") && stderr.contains("certificate"),
        "{stderr}"
    );
}
