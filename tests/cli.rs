//! The CLI verbs against a running `serve` (submit with --wait or --file, stats, get, list,
//! cancel, bench with --batch and --json), and `distriqueue config`.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn cli(server: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend(["--server", server]);
    run_cli(&all)
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

    // Watching a finished job prints its state and ends.
    let (ok, stdout, stderr) = cli(&serve.gateway, &["watch", id]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("COMPLETED"), "{stdout}");

    // A job that fails under --wait is printed and the exit code says so.
    let (ok, stdout, stderr) = cli(
        &serve.gateway,
        &["submit", "--type", "no-such-type", "--wait"],
    );
    assert!(!ok, "a FAILED job must not exit 0");
    assert!(
        stdout.contains("FAILED") && stderr.contains("FAILED"),
        "{stdout} / {stderr}"
    );

    // Retry and attempts of the failed job.
    let failed: Value = serde_json::from_str(&stdout).expect("the failed job as JSON");
    let failed_id = failed["id"].as_str().expect("id");
    let (ok, stdout, stderr) = cli(&serve.gateway, &["retry", failed_id]);
    assert!(ok, "{stderr}");
    let retried: Value = serde_json::from_str(&stdout).expect("retry prints the job");
    assert_eq!(
        (retried["jobStatus"].as_str(), retried["attempt"].as_u64()),
        (Some("QUEUED"), Some(2)),
        "{retried}"
    );
    let (ok, stdout, stderr) = cli(&serve.gateway, &["attempts", failed_id]);
    assert!(ok, "{stderr}");
    let attempts: Value = serde_json::from_str(&stdout).expect("attempts as JSON");
    assert_eq!(attempts["attempts"][0]["state"], "FAILED", "{attempts}");

    // The same idempotency key twice: one job.
    let submit_keyed = || {
        cli(
            &serve.gateway,
            &[
                "submit",
                "--type",
                "echo",
                "--idempotency-key",
                "cli-1",
                "--delay-seconds",
                "1",
            ],
        )
    };
    let (first, second) = (submit_keyed(), submit_keyed());
    assert!(first.0 && second.0, "{} {}", first.2, second.2);
    let id_of = |text: &str| serde_json::from_str::<Value>(text).expect("job")["id"].clone();
    assert_eq!(id_of(&first.1), id_of(&second.1));

    let (ok, _, stderr) = cli(
        &serve.gateway,
        &["submit", "--type", "echo", "--payload", "[1]"],
    );
    assert!(!ok);
    assert!(stderr.to_lowercase().contains("object"), "{stderr}");
}

/// `distriqueue config` through the real binary: each value with its source, the AMQP
/// password redacted, and a bad file refused naming the key.
#[test]
fn config_shows_each_source_and_refuses_an_unknown_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("distriqueue.toml");
    std::fs::write(
        &file,
        "[worker]\nshutdown_grace = 7\nledger = \"jobs.jsonl\"\n",
    )
    .expect("write the file");
    let output = Command::new(env!("CARGO_BIN_EXE_distriqueue"))
        .arg("config")
        .arg("--config")
        .arg(&file)
        .args([
            "worker",
            "--amqp",
            "amqp://user:s3cret@rabbit:5672/%2f",
            "--ledger",
            "flag.jsonl",
        ])
        .env("DQ_CONCURRENCY", "3")
        .env_remove("RABBITMQ_HOST")
        .output()
        .expect("run distriqueue config");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("s3cret"), "{stdout}");
    for line in [
        "amqp = \"amqp://user:***@rabbit:5672/%2f\"  # flag --amqp".to_string(),
        "concurrency = 3  # env DQ_CONCURRENCY".to_string(),
        format!("shutdown_grace = 7  # file {}", file.display()),
        "ledger = \"flag.jsonl\"  # flag --ledger".to_string(),
        "heartbeat_timeout = 30  # default".to_string(),
        "roles = [\"worker\"]  # subcommand worker".to_string(),
    ] {
        assert!(
            stdout.lines().any(|shown| shown == line),
            "no {line:?} in\n{stdout}"
        );
    }

    std::fs::write(&file, "[worker]\nslots = 7\n").expect("write the file");
    let output = Command::new(env!("CARGO_BIN_EXE_distriqueue"))
        .arg("config")
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run distriqueue config");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("worker.slots"), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
}

/// `submit --file` sends every line in batches (reporting a bad line by its number) and
/// `stats` prints the statistics.
#[test]
fn submit_file_and_stats_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let file = dir.path().join("jobs.jsonl");
    let mut lines: Vec<String> = (0..25)
        .map(|n| format!(r#"{{"type":"echo","jobPriority":"LOW","payload":{{"n":{n}}}}}"#))
        .collect();
    lines.insert(3, String::new());
    lines.push(r#"{"type":"","jobPriority":"LOW"}"#.to_string());
    std::fs::write(&file, lines.join("\n")).expect("write the jobs");
    let file_arg = file.display().to_string();
    let (ok, stdout, _) = cli(
        &serve.gateway,
        &["submit", "--file", &file_arg, "--batch-size", "10"],
    );
    assert!(!ok, "a refused line fails the command");
    let summary: Value = serde_json::from_str(&stdout).expect("a JSON summary");
    assert_eq!(summary["totalJobs"], 26, "{summary}");
    assert_eq!(summary["successful"], 25, "{summary}");
    // Keyed by the line of the file; the violation names the job's own field.
    assert!(
        summary["errors"]["27"]["violations"]["type"].is_string(),
        "{summary}"
    );
    assert_eq!(
        summary["errors"].as_object().map(|e| e.len()),
        Some(1),
        "{summary}"
    );

    let (ok, stdout, stderr) = cli(&serve.gateway, &["stats", "--type", "echo"]);
    assert!(ok, "{stderr}");
    let stats: Value = serde_json::from_str(&stdout).expect("statistics as JSON");
    assert_eq!(stats["totalJobs"], 25, "{stats}");
}

#[test]
fn bench_in_batches_prints_one_json_object_with_latencies_and_server_cpu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let (ok, stdout, stderr) = cli(
        &serve.gateway,
        &[
            "bench",
            "--jobs",
            "300",
            "--batch",
            "50",
            "--clients",
            "2",
            "--json",
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    let figures: Value = serde_json::from_str(stdout.trim()).expect("stdout is one JSON object");
    assert_eq!(figures["jobs"], 300, "{figures}");
    assert_eq!(figures["batch"], 50, "{figures}");
    assert_eq!(figures["completed"], 300, "{figures}");
    assert_eq!(figures["failed"], 0, "{figures}");
    for rate in ["submit_jobs_per_s", "e2e_jobs_per_s"] {
        assert!(
            figures[rate].as_f64().is_some_and(|r| r > 0.0),
            "{rate}: {figures}"
        );
    }
    for latency in ["start_latency_ms", "finish_latency_ms"] {
        for point in ["p50", "p90", "p99", "max"] {
            assert!(
                figures[latency][point].as_f64().is_some(),
                "{latency}.{point}: {figures}"
            );
        }
        assert_eq!(figures[latency]["n"], 300, "{figures}");
    }
    // The gateway is on 127.0.0.1: the serve process's CPU is read from /proc.
    assert!(
        figures["server_cpu_s_per_1000_jobs"]
            .as_f64()
            .is_some_and(|cpu| cpu > 0.0),
        "{figures}"
    );
    assert!(
        stderr.contains("submit-to-start"),
        "the report for people goes to stderr"
    );

    let (ok, _, stderr) = cli(&serve.gateway, &["bench", "--batch", "0"]);
    assert!(!ok);
    assert!(stderr.contains("--batch"), "{stderr}");
}
