//! Test harness: starts the real `distriqueue` binary on free ports with its own data directory,
//! and stops it when dropped, also when the test fails.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod cluster;
pub mod metrics;
pub mod proxy;
pub mod scenarios;

/// A running `distriqueue serve`.
pub struct Serve {
    child: Option<Child>,
    pub gateway: String,
    pub orchestrator: String,
    /// The worker's metrics server (`--metrics-addr`), when it serves one.
    pub metrics: Option<String>,
    pub data_dir: PathBuf,
}

impl Serve {
    /// Starts `serve` with `args` on port 0 over `data_dir`; waits for its "serving" line.
    pub fn start(data_dir: &Path, args: &[&str]) -> Serve {
        let mut command = Command::new(env!("CARGO_BIN_EXE_distriqueue"));
        command
            .arg("serve")
            .args([
                "--gateway-addr",
                "127.0.0.1:0",
                "--orchestrator-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("DQ_LOG", "warn")
            .stderr(Stdio::inherit());
        let (child, line) = spawn_until_ready(command);
        let find = |name: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(&format!("{name}=")))
                .map(str::to_string)
        };
        let address =
            |name: &str| find(name).unwrap_or_else(|| panic!("no {name} address in {line:?}"));
        Serve {
            gateway: address("gateway"),
            orchestrator: address("orchestrator"),
            metrics: find("metrics"),
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("still running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        child.wait().expect("wait for exit")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `command` with stdout piped and returns it with its first stdout line (the ready
/// line every role prints once it serves).
pub fn spawn_until_ready(mut command: Command) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the distriqueue binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the ready line");
    (child, line)
}

/// Starts `serve` over `dir/data` with `args` and a ledger at `dir/ledger.jsonl`.
pub fn start_with_ledger(dir: &Path, args: &[&str]) -> (Serve, PathBuf) {
    let ledger = dir.join("ledger.jsonl");
    let ledger_arg = ledger.to_str().expect("utf-8 path").to_string();
    let mut all_args = args.to_vec();
    all_args.extend(["--ledger", &ledger_arg]);
    (Serve::start(&dir.join("data"), &all_args), ledger)
}

/// Waits until the ledger shows a start of job `id`.
pub async fn wait_started(ledger: &Path, id: &str) {
    wait_until(
        Duration::from_secs(120),
        "the job to start",
        || async move { starts_per_job(ledger).contains_key(id) },
    )
    .await;
}

/// Runs the `distriqueue` binary with `args` to its end; returns (success, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_distriqueue"))
        .args(args)
        .env("DQ_LOG", "warn")
        .output()
        .expect("run the CLI");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// An HTTP client for the tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POST /api/jobs; returns (status, body).
pub async fn submit(client: &reqwest::Client, gateway: &str, body: &Value) -> (u16, Value) {
    let response = client
        .post(format!("{gateway}/api/jobs"))
        .json(body)
        .send()
        .await
        .expect("POST /api/jobs");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POST /api/jobs that must be accepted; returns the job id.
pub async fn submit_ok(client: &reqwest::Client, gateway: &str, body: &Value) -> String {
    let (status, job) = submit(client, gateway, body).await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().expect("id").to_string()
}

/// POST without a body (cancel, retry); returns (status, body).
pub async fn post(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.post(url).send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// GET a path; returns (status, body).
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `GET /api/jobs/{id}` until the job is terminal or `deadline` passes.
pub async fn wait_terminal(
    client: &reqwest::Client,
    gateway: &str,
    id: &str,
    deadline: Duration,
) -> Value {
    let start = Instant::now();
    loop {
        let (status, job) = get(client, &format!("{gateway}/api/jobs/{id}")).await;
        let state = job["jobStatus"].as_str().unwrap_or("");
        if status == 200 && ["COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"].contains(&state) {
            return job;
        }
        assert!(
            start.elapsed() < deadline,
            "job {id} not terminal after {deadline:?}: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `check` holds or `deadline` passes.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One line of the ledger.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LedgerLine {
    pub event: String,
    #[serde(rename = "jobId")]
    pub job_id: String,
    pub attempt: u32,
    #[serde(rename = "workerId")]
    pub worker_id: String,
    pub ts: String,
}

/// Reads every line of a ledger file (none when it does not exist yet).
pub fn read_ledger(path: &Path) -> Vec<LedgerLine> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("ledger line is JSON"))
        .collect()
}

/// Ledger starts per job id.
pub fn starts_per_job(path: &Path) -> std::collections::HashMap<String, usize> {
    let mut starts = std::collections::HashMap::new();
    for line in read_ledger(path)
        .into_iter()
        .filter(|line| line.event == "start")
    {
        *starts.entry(line.job_id).or_insert(0) += 1;
    }
    starts
}

/// A job that sleeps `ms` milliseconds.
pub fn sleep_job(ms: u64, priority: &str) -> Value {
    json!({"type": "sleep", "jobPriority": priority, "payload": {"ms": ms}})
}

/// An echo job.
pub fn echo_job(priority: &str, n: usize) -> Value {
    json!({"type": "echo", "jobPriority": priority, "payload": {"n": n}})
}

/// No (job, attempt) has two `finish` lines in the ledgers.
pub fn no_attempt_finished_twice(ledger: &[LedgerLine]) {
    let mut finishes = std::collections::HashSet::new();
    for line in ledger.iter().filter(|line| line.event == "finish") {
        assert!(
            finishes.insert((line.job_id.clone(), line.attempt)),
            "attempt {} of job {} ran to completion twice",
            line.attempt,
            line.job_id
        );
    }
}
