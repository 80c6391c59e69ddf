//! The CLI verbs against a running `serve`: submit (with --wait), get, list, cancel.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn cli(server: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_distriqueue"))
        .args(args)
        .args(["--server", server])
        .env("DQ_LOG", "warn")
        .output()
        .expect("run the CLI");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn submit_wait_get_list_and_cancel_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &[]);
    let payload = r#"{"operation":"sum","numbers":[1,2,3,4,5]}"#;
    let (ok, stdout, stderr) = cli(
        &serve.gateway,
        &[
            "submit",
            "--type",
            "calculate",
            "--priority",
            "HIGH",
            "--payload",
            payload,
            "--wait",
        ],
    );
    assert!(ok, "{stderr}");
    let job: Value = serde_json::from_str(&stdout).expect("submit prints the job as JSON");
    assert_eq!(
        (job["jobStatus"].as_str(), job["result"]["sum"].as_i64()),
        (Some("COMPLETED"), Some(15)),
        "{job}"
    );
    let id = job["id"].as_str().expect("id");

    let (ok, stdout, stderr) = cli(&serve.gateway, &["get", id]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("COMPLETED"), "{stdout}");

    let (ok, stdout, stderr) = cli(&serve.gateway, &["list", "--status", "completed"]);
    assert!(ok, "{stderr}");
    let page: Value = serde_json::from_str(&stdout).expect("list prints the page as JSON");
    assert_eq!(page["page"]["totalElements"], 1, "{page}");

    let (ok, _, stderr) = cli(&serve.gateway, &["cancel", id]);
    assert!(!ok, "cancelling a completed job must fail");
    assert!(stderr.contains("409"), "{stderr}");

    let (ok, _, stderr) = cli(
        &serve.gateway,
        &["submit", "--type", "echo", "--payload", "[1]"],
    );
    assert!(!ok);
    assert!(stderr.to_lowercase().contains("object"), "{stderr}");
}
