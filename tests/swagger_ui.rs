//! Swagger UI (issue 10, item 3) loads in headless Chromium from the gateway alone: every
//! route of the gateway's document is rendered, and no request of the page leaves 127.0.0.1
//! (read from Chromium's network log). Names outside 127.0.0.1 do not even resolve in the
//! browser, so a page that needed an outside asset would not render.
//!
//! Needs Chromium (Debian's `chromium`, which `.ci/run` installs): skips without it, and fails
//! instead when `DQ_REQUIRE_SERVICES=1`.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// The URLs the page requested (its own frame and what it loaded), read from a Chromium network
/// log: requests on the page's network isolation key or with an origin as initiator. The
/// browser's own background requests (update checks, say) have neither.
fn page_requests(net_log: &Value, page_site: &str) -> Vec<String> {
    let start_job = net_log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .expect("the net log names URL_REQUEST_START_JOB");
    net_log["events"]
        .as_array()
        .expect("net log events")
        .iter()
        .filter(|event| event["type"].as_u64() == Some(start_job))
        .map(|event| &event["params"])
        .filter(|params| {
            let initiator = params["initiator"].as_str().unwrap_or("not an origin");
            let isolation = params["network_isolation_key"].as_str().unwrap_or("");
            initiator != "not an origin" || isolation.contains(page_site)
        })
        .filter_map(|params| params["url"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn swagger_ui_renders_every_route_with_nothing_from_outside() {
    if !distriqueue_testkit::tool(
        "swagger_ui",
        "chromium",
        &["--version"],
        "apt-get install chromium",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let net_log = dir.path().join("net-log.json");
    let output = tokio::task::spawn_blocking({
        let url = format!("{}/api/swagger-ui.html", serve.gateway);
        let profile = dir.path().join("profile");
        let net_log = net_log.clone();
        move || {
            // Killed after 2 minutes: a hung browser fails the test instead of hanging CI.
            Command::new("timeout")
                .args(["--kill-after=10", "120", "chromium"])
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-default-apps",
                    "--disable-domain-reliability",
                    "--disable-features=AutofillServerCommunication,OptimizationHints,MediaRouter",
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                    "--virtual-time-budget=20000",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(format!("--log-net-log={}", net_log.display()))
                .arg("--dump-dom")
                .arg(url)
                .output()
                .expect("run chromium")
        }
    })
    .await
    .expect("chromium task");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dom = String::from_utf8_lossy(&output.stdout);

    // Rendered: the title, and every route of the document as an operation.
    assert!(dom.contains("DistriQueue gateway"), "no title in {dom}");
    let (status, document) = get(&http(), &format!("{}/api/v3/api-docs", serve.gateway)).await;
    assert_eq!(status, 200);
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 10, "{document}");
    for path in paths.keys() {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "Swagger UI did not render {path}"
        );
    }

    // Nothing the page asked for left 127.0.0.1.
    let log: Value =
        serde_json::from_str(&std::fs::read_to_string(&net_log).expect("read the net log"))
            .expect("the net log is JSON");
    let requests = page_requests(&log, "http://127.0.0.1");
    assert!(
        requests.iter().any(|url| url.ends_with("/api/v3/api-docs")),
        "the page did not load the document: {requests:?}"
    );
    let outside: Vec<&String> = requests
        .iter()
        .filter(|url| !url.starts_with("http://127.0.0.1:"))
        .collect();
    assert!(
        outside.is_empty(),
        "requests that left 127.0.0.1: {outside:?}"
    );
}
