//! The web dashboard (issue 12) in a real browser: `tests/browser/dashboard.py` drives headless
//! Chromium (Debian's chromium and chromedriver, through Selenium) against live servers.
//!
//! - Against `serve`: the overview's counts match the API after 200 jobs, a job submitted
//!   through the form completes on its page without a reload, a bad payload is refused in the
//!   form, a FAILED job retried from its page runs again, a dead-letter group's retry re-runs
//!   every job of it, filters and paging show what the API shows, "retry all matching" re-runs
//!   every job of a filter, workers and the cluster show, every view's text passes WCAG AA
//!   contrast, and the keyboard reaches every section.
//! - Against a three-node cluster (RabbitMQ and PostgreSQL): the cluster view marks the leader
//!   and, after that node is killed, the new one.
//! - With API keys and public reads: without a key the page offers no action, with a client
//!   key it does, and they work.
//!
//! Every run also checks that the console has no error and no request left 127.0.0.1. Skips
//! without chromium, chromedriver or Python's selenium (and the cluster test without RabbitMQ),
//! and fails instead when `DQ_REQUIRE_SERVICES=1` (`.ci/run` installs them). With
//! `DQ_UPDATE_SCREENSHOTS=1` the screenshots go to docs/dashboard/ (the README shows them),
//! otherwise to a temporary directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::{Cluster, Spec};
use common::*;

/// True when the browser, its driver and Selenium are there (or the test must fail).
fn browser_ready(test: &str) -> bool {
    distriqueue_testkit::tool(test, "chromium", &["--version"], "apt-get install chromium")
        && distriqueue_testkit::tool(
            test,
            "chromedriver",
            &["--version"],
            "apt-get install chromium-driver",
        )
        && distriqueue_testkit::tool(
            test,
            "python3",
            &["-c", "import selenium, requests"],
            "pip install -r tests/requirements.txt",
        )
}

/// Where screenshots go: docs/dashboard/ with `DQ_UPDATE_SCREENSHOTS=1`, else under `dir`.
fn screenshot_dir(dir: &Path) -> PathBuf {
    let shots = if std::env::var("DQ_UPDATE_SCREENSHOTS").is_ok_and(|value| value == "1") {
        [env!("CARGO_MANIFEST_DIR"), "docs", "dashboard"]
            .iter()
            .collect::<PathBuf>()
    } else {
        dir.join("screenshots")
    };
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    shots
}

/// Starts the browser script in `mode` against `gateway` (killed after 5 minutes: a hung
/// browser fails the test instead of hanging CI).
fn start_script(mode: &str, gateway: &str, shots: &Path, extra: &[&str]) -> Child {
    let script: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "browser",
        "dashboard.py",
    ]
    .iter()
    .collect();
    Command::new("timeout")
        .args(["--kill-after=10", "300", "python3"])
        .arg(script)
        .args([mode, gateway])
        .arg(shots)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the browser test")
}

/// Waits for the script to end and asserts that every check passed.
async fn script_passed(child: Child) {
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("the browser test's thread")
        .expect("wait for the browser test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("every check passed"),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    eprint!("{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_what_the_api_shows_and_acts_on_it() {
    if !browser_ready("dashboard") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let shots = screenshot_dir(dir.path());
    script_passed(start_script("serve", &serve.gateway, &shots, &[])).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_offers_the_actions_a_key_allows() {
    if !browser_ready("dashboard_keys") {
        return;
    }
    const CLIENT: &str = "dashboard-client-key-0123456789";
    const WORKER: &str = "dashboard-worker-key-0123456789";
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(
        &dir.path().join("data"),
        &[
            "--api-keys",
            &format!("{CLIENT}:client,{WORKER}:worker"),
            "--public-reads",
        ],
    );
    let shots = screenshot_dir(dir.path());
    script_passed(start_script("keys", &serve.gateway, &shots, &[CLIENT])).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_view_marks_the_new_leader_after_the_old_one_is_killed() {
    if !browser_ready("dashboard_cluster") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = Spec {
        nodes: 3,
        workers: 1,
        ..Spec::default()
    };
    let Some(mut cluster) = Cluster::start_spec("dashboard_cluster", dir.path(), spec) else {
        return;
    };
    let shots = screenshot_dir(dir.path());
    let signals = dir.path().join("signals");
    std::fs::create_dir_all(&signals).expect("signal directory");
    let child = start_script(
        "cluster",
        &cluster.gateway_url(),
        &shots,
        &[signals.to_str().expect("utf-8 path")],
    );
    let leader_file = signals.join("leader");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let node = loop {
        if let Some(node) = std::fs::read_to_string(&leader_file)
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
        {
            break node;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the page showed no leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!((1..=3).contains(&node), "leader {node}");
    cluster.orchestrators[node - 1].kill();
    std::fs::write(signals.join("killed"), b"").expect("signal the kill");
    script_passed(child).await;
}
