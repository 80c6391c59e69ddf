//! `distriqueue bench`: load against a gateway, measured by the client.
//!
//! Throughput (the default): `--clients` tasks share one keep-alive connection pool and submit
//! `--jobs` jobs as single POSTs; the figure runs from the first submit to the last terminal
//! state seen on the SSE stream, which is opened before the first submit. Latency (`--rate`):
//! one POST per tick for `--duration` seconds; each job's submit-to-start (and -complete) runs
//! from just before its POST to the arrival of its RUNNING (and COMPLETED) SSE event. Events
//! may arrive before the POST's answer, so arrivals are kept by job id and joined afterwards.
//! Both modes print figures for people, then one JSON line with all of them (with `--json`,
//! only the JSON object on stdout, the rest on stderr), with a progress bar of finished jobs
//! on stderr, and, when the gateway is on this machine, the CPU seconds the local DistriQueue
//! processes spent per 1,000 jobs (`bench_cpu.rs`, from /proc). `--batch B` submits through
//! `POST /api/jobs/batch`. `--read-model N` times the dashboard's read-model queries instead
//! (`bench_read_model.rs`), `--state N` the replicated state's snapshot (`bench_state.rs`).

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use distriqueue::config::ClientSettings;
use distriqueue_client::{ClientError, GatewayClient, SseEvent};
use distriqueue_core::{JobId, JobStatus, Priority};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, timeout, timeout_at, Instant, MissedTickBehavior};

/// How long opening the event stream (up to its `connected` event) may take.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Pause between rounds of the polling fallback.
const POLL_PAUSE: Duration = Duration::from_millis(200);

/// Arguments of `distriqueue bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Throughput mode: how many jobs to submit
    #[arg(long, default_value_t = 10_000, conflicts_with = "rate")]
    pub jobs: usize,
    /// Throughput mode: concurrent submitting tasks (sharing one keep-alive connection pool)
    #[arg(long, default_value_t = 32, conflicts_with = "rate")]
    pub clients: usize,
    /// Latency mode: submit this many jobs per second, steadily
    #[arg(long)]
    pub rate: Option<f64>,
    /// Latency mode: for this many seconds
    #[arg(long, default_value_t = 30, requires = "rate", value_name = "SECONDS")]
    pub duration: u64,
    /// The job type
    #[arg(long = "type", default_value = "echo")]
    pub job_type: String,
    /// LOW, MEDIUM, HIGH or CRITICAL
    #[arg(long, default_value = "HIGH")]
    pub priority: String,
    /// Every job's payload, a JSON object
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// The whole run ends after this many seconds, whether the jobs have finished or not
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
    /// Throughput mode: submit through `POST /api/jobs/batch`, this many jobs a request
    /// (1 to 1000)
    #[arg(long, value_name = "B", conflicts_with = "rate")]
    pub batch: Option<usize>,
    /// Print only one JSON object on stdout (jobs, completed, failed, submit_jobs_per_s,
    /// e2e_jobs_per_s, start_latency_ms and finish_latency_ms with p50, p90, p99, max, and
    /// server_cpu_s_per_1000_jobs when the server is local); the report for people goes to
    /// stderr
    #[arg(long)]
    pub json: bool,
    /// Read-model mode (no gateway): fill a fresh read model with this many jobs and time the
    /// dashboard's queries on it
    #[arg(long, value_name = "JOBS", conflicts_with = "rate")]
    pub read_model: Option<usize>,
    /// State mode (no gateway): build the replicated state with this many jobs (half live,
    /// half finished) and time a snapshot's clone and the entries applied around it
    #[arg(long, value_name = "JOBS", conflicts_with_all = ["rate", "read_model"])]
    pub state: Option<usize>,
    /// Read-model mode: the database to fill (a SQLite path or a postgres:// URL of an empty
    /// database); default a SQLite file in a temporary directory, removed afterwards
    #[arg(long, requires = "read_model", value_name = "URL")]
    pub database: Option<String>,
}

/// `bench`: runs the mode `args` selects against the gateway at `server`, prints its figures.
///
/// # Errors
/// Bad arguments, a gateway that cannot be reached or refuses the event stream, or no job
/// accepted at all. Jobs that fail or do not finish in time are counted, not errors.
pub async fn run(target: &ClientSettings, args: BenchArgs) -> anyhow::Result<()> {
    if let Some(n_jobs) = args.state {
        anyhow::ensure!(n_jobs > 0, "--state must be at least 1");
        return crate::bench_state::run(n_jobs);
    }
    if let Some(n_jobs) = args.read_model {
        anyhow::ensure!(n_jobs > 0, "--read-model must be at least 1");
        return crate::bench_read_model::run(n_jobs, args.database.as_deref()).await;
    }
    let server = target.server.as_str();
    let request = Arc::new(job_request(&args)?);
    anyhow::ensure!(args.timeout > 0, "--timeout must be at least 1 second");
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            (0.01..=100_000.0).contains(&rate),
            "--rate must be in 0.01..=100000"
        );
        anyhow::ensure!(args.duration > 0, "--duration must be at least 1 second");
        anyhow::ensure!(
            args.duration < args.timeout,
            "--duration must be below --timeout"
        );
    } else {
        anyhow::ensure!(
            args.jobs > 0 && args.clients > 0,
            "--jobs and --clients must be > 0"
        );
    }
    if let Some(batch) = args.batch {
        anyhow::ensure!(
            (1..=1000).contains(&batch),
            "--batch must be 1 to 1000 jobs a request"
        );
    }
    REPORT_TO_STDERR.store(args.json, Ordering::Relaxed);
    let client = crate::verbs::client(target)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let local = crate::bench_cpu::is_local(server);
    let cpu_before = local.then(crate::bench_cpu::server_cpu_seconds);
    let mut tracker = Tracker::connect(&client, server).await?;
    let mut figures = match args.rate {
        None => throughput(&client, request, &args, &mut tracker, deadline).await?,
        Some(rate) => latency(&client, request, rate, &args, &mut tracker, deadline).await?,
    };
    tracker.progress.finish_and_clear();
    if let Some(before) = cpu_before {
        let used = crate::bench_cpu::server_cpu_seconds() - before;
        let jobs = figures["jobs"].as_u64().unwrap_or_default().max(1) as f64;
        let per_1000 = round3(used / jobs * 1000.0);
        line(
            "server CPU",
            format_args!(
                "{used:.2} s for {jobs} jobs: {per_1000} s per 1,000 jobs (every local distriqueue process but this one)"
            ),
        );
        figures["server_cpu_s_per_1000_jobs"] = json!(per_1000);
    }
    if args.json {
        println!("{figures}");
    } else {
        say(format_args!("{figures}"));
    }
    Ok(())
}

/// With `--json`, the report for people goes to stderr and stdout holds only the JSON object.
static REPORT_TO_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints a line of the report for people (stdout, or stderr with `--json`).
fn say(text: impl Display) {
    if REPORT_TO_STDERR.load(Ordering::Relaxed) {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
}

/// `value` rounded to three decimals.
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// The throughput mode: prints its figures and returns them as JSON.
async fn throughput(
    client: &GatewayClient,
    request: Arc<Value>,
    args: &BenchArgs,
    tracker: &mut Tracker,
    deadline: Instant,
) -> anyhow::Result<Value> {
    eprintln!(
        "submitting {} jobs from {} clients",
        args.jobs, args.clients
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    let per_request = args.batch.unwrap_or(1);
    tracker.progress.set_length(args.jobs as u64);
    for _ in 0..args.clients {
        let (client, request, next, n_jobs) =
            (client.clone(), request.clone(), next.clone(), args.jobs);
        let batched = args.batch.is_some();
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            while Instant::now() < deadline {
                let first = next.fetch_add(per_request, Ordering::Relaxed);
                if first >= n_jobs {
                    break;
                }
                let n = per_request.min(n_jobs - first);
                if batched {
                    outcomes.extend(submit_batch(&client, &request, n, deadline).await);
                } else {
                    outcomes.push(submit(&client, &request, deadline).await);
                }
            }
            outcomes
        });
    }
    let mut submits = Submits::default();
    while let Some(done) = tasks.join_next().await {
        done.context("a submitting task failed")?
            .into_iter()
            .for_each(|outcome| submits.add(outcome));
    }
    let accepted = submits.accepted()?;
    let first_sent = accepted
        .iter()
        .map(|job| job.sent_at)
        .min()
        .unwrap_or(deadline);
    let last_answer = accepted
        .iter()
        .map(|job| job.sent_at + job.latency)
        .max()
        .unwrap_or(deadline);
    let submit_time = last_answer.saturating_duration_since(first_sent);
    let ids: Vec<JobId> = accepted.iter().map(|job| job.id).collect();
    // Keep a fifth of the run (at most 30 s) for the polling fallback.
    let reserve = (deadline.saturating_duration_since(first_sent) / 5).min(Duration::from_secs(30));
    let mut pending = tracker.wait(&ids, deadline - reserve).await;
    let (mut fallback, mut note) = (Value::Null, None);
    if !pending.is_empty() {
        let why = tracker
            .ended
            .clone()
            .unwrap_or_else(|| "the deadline approached".to_owned());
        eprintln!(
            "{why}; polling GET /api/jobs/{{id}} for {} jobs",
            pending.len()
        );
        let n_pending = pending.len();
        pending = poll(client, tracker, pending, args.clients, deadline).await;
        let n_found = n_pending - pending.len();
        note = Some(format!(
            "{why}: polled {n_pending} jobs, {n_found} found terminal (at upper-bound times)"
        ));
        fallback = json!({"reason": why, "pending": n_pending, "found_terminal": n_found});
    }
    let terminal: Vec<_> = ids
        .iter()
        .filter_map(|id| tracker.finished.get(id))
        .collect();
    let last_terminal = terminal
        .iter()
        .map(|(_, at)| *at)
        .max()
        .unwrap_or(first_sent);
    let end_to_end = last_terminal.saturating_duration_since(first_sent);
    let n_completed = terminal
        .iter()
        .filter(|(status, _)| *status == JobStatus::Completed)
        .count();
    let latencies = accepted.iter().map(|job| job.latency).collect();
    let (latency_text, latency_json) = describe(latencies, &[50.0, 99.0]);
    let (to_start, to_finish) = job_latencies(&accepted, tracker);
    let (start_text, start_json) = describe(to_start, &PERCENTILES);
    let (finish_text, finish_json) = describe(to_finish, &PERCENTILES);
    let n_failed = terminal
        .iter()
        .filter(|(status, _)| *status != JobStatus::Completed)
        .count();
    say(format_args!(
        "throughput: {} {} jobs ({}) from {} clients{}",
        args.jobs,
        args.job_type,
        args.priority,
        args.clients,
        args.batch
            .map(|batch| format!(", {batch} a batch"))
            .unwrap_or_default()
    ));
    let submit_rate = rate(accepted.len(), submit_time);
    line(
        "submit phase",
        format_args!(
            "{:.3} s, {submit_rate:.1} jobs/s ({} accepted{})",
            submit_time.as_secs_f64(),
            accepted.len(),
            submits.errors_text()
        ),
    );
    let throughput = rate(terminal.len(), end_to_end);
    line(
        "end to end",
        format_args!(
            "{:.3} s, {throughput:.1} jobs/s (first submit to last terminal state of {} jobs)",
            end_to_end.as_secs_f64(),
            terminal.len()
        ),
    );
    line(
        "outcome",
        format_args!(
            "{n_completed} completed, {} not completed, {} not terminal by the deadline",
            args.jobs - n_completed,
            pending.len()
        ),
    );
    line("submit latency", latency_text);
    line("submit-to-start", start_text);
    line("submit-to-finish", finish_text);
    if let Some(note) = note {
        line("note", note);
    }
    Ok(json!({
        "mode": "throughput", "jobs": args.jobs, "clients": args.clients, "type": args.job_type,
        "priority": args.priority, "accepted": accepted.len(), "submit_errors": submits.n_errors,
        "submit_secs": secs(submit_time), "submit_rate": round1(submit_rate),
        "end_to_end_secs": secs(end_to_end), "throughput": round1(throughput),
        "completed": n_completed, "not_completed": args.jobs - n_completed,
        "unfinished": pending.len(), "submit_latency_ms": latency_json, "fallback": fallback,
        "batch": args.batch, "failed": n_failed, "submit_jobs_per_s": round1(submit_rate),
        "e2e_jobs_per_s": round1(throughput), "start_latency_ms": start_json,
        "finish_latency_ms": finish_json,
    }))
}

/// The latency mode: prints its figures and returns them as JSON.
async fn latency(
    client: &GatewayClient,
    request: Arc<Value>,
    per_second: f64,
    args: &BenchArgs,
    tracker: &mut Tracker,
    deadline: Instant,
) -> anyhow::Result<Value> {
    eprintln!("submitting {per_second} jobs/s for {} s", args.duration);
    tracker
        .progress
        .set_length((per_second * args.duration as f64).round() as u64);
    // Delay, not Burst: a late tick shifts the schedule instead of firing a catch-up burst,
    // which would queue jobs behind each other and inflate the latency being measured.
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let submit_end = Instant::now() + Duration::from_secs(args.duration);
    let (mut tasks, mut submits) = (JoinSet::new(), Submits::default());
    while ticks.tick().await < submit_end {
        let (client, request) = (client.clone(), request.clone());
        tasks.spawn(async move { submit(&client, &request, deadline).await });
        while let Some(done) = tasks.try_join_next() {
            submits.add(done.context("a submitting task failed")?);
        }
    }
    while let Some(done) = tasks.join_next().await {
        submits.add(done.context("a submitting task failed")?);
    }
    let accepted = submits.accepted()?;
    let ids: Vec<JobId> = accepted.iter().map(|job| job.id).collect();
    let pending = tracker.wait(&ids, deadline).await;
    let (to_start, to_complete) = job_latencies(&accepted, tracker);
    let n_attempted = accepted.len() + submits.n_errors;
    let n_completed = accepted
        .iter()
        .filter(|job| {
            matches!(
                tracker.finished.get(&job.id),
                Some((JobStatus::Completed, _))
            )
        })
        .count();
    let n_failed = accepted
        .iter()
        .filter(|job| matches!(tracker.finished.get(&job.id), Some((status, _)) if *status != JobStatus::Completed))
        .count();
    let achieved = n_attempted as f64 / args.duration as f64;
    let (start_text, start_json) = describe(to_start, &PERCENTILES);
    let (complete_text, complete_json) = describe(to_complete, &PERCENTILES);
    let (post_text, post_json) = describe(
        accepted.iter().map(|job| job.latency).collect(),
        &PERCENTILES,
    );
    say(format_args!(
        "latency: {per_second} {} jobs/s ({}) for {} s, MissedTickBehavior::Delay",
        args.job_type, args.priority, args.duration
    ));
    line(
        "submitted",
        format_args!(
            "{n_attempted} ({achieved:.1} jobs/s), {} accepted{}",
            accepted.len(),
            submits.errors_text()
        ),
    );
    line("submit-to-start", start_text);
    line("submit-to-finish", complete_text);
    line("POST latency", post_text);
    line(
        "outcome",
        format_args!(
            "{n_completed} completed, {} not terminal by the deadline",
            pending.len()
        ),
    );
    if let Some(why) = &tracker.ended {
        line(
            "note",
            format_args!("{why}: jobs whose events were lost are not measured"),
        );
    }
    Ok(json!({
        "mode": "latency", "rate": per_second, "duration_secs": args.duration,
        "missed_tick_behavior": "Delay", "type": args.job_type, "priority": args.priority,
        "submitted": n_attempted, "achieved_rate": round1(achieved), "accepted": accepted.len(),
        "submit_errors": submits.n_errors, "completed": n_completed, "unfinished": pending.len(),
        "submit_to_start_ms": start_json, "submit_to_complete_ms": complete_json,
        "submit_latency_ms": post_json, "stream_ended": tracker.ended,
        "jobs": n_attempted, "failed": n_failed, "submit_jobs_per_s": round1(achieved),
        "e2e_jobs_per_s": round1(n_completed as f64 / args.duration as f64),
        "start_latency_ms": start_json, "finish_latency_ms": complete_json,
    }))
}

/// The percentiles every latency is reported at (and its max).
const PERCENTILES: [f64; 3] = [50.0, 90.0, 99.0];

/// Each accepted job's submit-to-start (its first RUNNING event) and submit-to-finish (its
/// first terminal event), for the jobs whose events arrived.
fn job_latencies(accepted: &[Submitted], tracker: &Tracker) -> (Vec<Duration>, Vec<Duration>) {
    let mut to_start = Vec::new();
    let mut to_finish = Vec::new();
    for job in accepted {
        if let Some(at) = tracker.started.get(&job.id) {
            to_start.push(at.saturating_duration_since(job.sent_at));
        }
        if let Some((_, at)) = tracker.finished.get(&job.id) {
            to_finish.push(at.saturating_duration_since(job.sent_at));
        }
    }
    (to_start, to_finish)
}

/// Prints one indented `label  text` line of figures.
fn line(label: &str, text: impl Display) {
    say(format_args!("  {label:<19} {text}"));
}

/// One accepted job: its id, when its POST was about to be sent, and how long the POST took.
struct Submitted {
    id: JobId,
    sent_at: Instant,
    latency: Duration,
}

/// POSTs one job, bounded by `deadline`.
async fn submit(
    client: &GatewayClient,
    request: &Value,
    deadline: Instant,
) -> Result<Submitted, String> {
    let sent_at = Instant::now();
    match timeout_at(deadline, client.submit(request)).await {
        Ok(Ok(job)) => Ok(Submitted {
            id: job.id,
            sent_at,
            latency: sent_at.elapsed(),
        }),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("the --timeout deadline passed".to_owned()),
    }
}

/// POSTs `n` copies of `request` as one batch, bounded by `deadline`: one outcome per job.
async fn submit_batch(
    client: &GatewayClient,
    request: &Value,
    n: usize,
    deadline: Instant,
) -> Vec<Result<Submitted, String>> {
    let sent_at = Instant::now();
    let jobs = vec![request.clone(); n];
    match timeout_at(deadline, client.submit_batch(&jobs)).await {
        Ok(Ok(batch)) => {
            let latency = sent_at.elapsed();
            batch
                .job_ids
                .into_iter()
                .enumerate()
                .map(|(index, id)| match id {
                    Some(id) => Ok(Submitted {
                        id,
                        sent_at,
                        latency,
                    }),
                    None => Err(batch
                        .errors
                        .get(&index)
                        .map_or_else(|| "refused".to_owned(), |error| error.error.clone())),
                })
                .collect()
        }
        Ok(Err(err)) => (0..n).map(|_| Err(err.to_string())).collect(),
        Err(_) => (0..n)
            .map(|_| Err("the --timeout deadline passed".to_owned()))
            .collect(),
    }
}

/// The submits of a run: accepted jobs, and how many failed (with the first error).
#[derive(Default)]
struct Submits {
    accepted: Vec<Submitted>,
    n_errors: usize,
    first_error: Option<String>,
}

impl Submits {
    fn add(&mut self, outcome: Result<Submitted, String>) {
        match outcome {
            Ok(job) => self.accepted.push(job),
            Err(err) => {
                self.n_errors += 1;
                self.first_error.get_or_insert(err);
            }
        }
    }

    /// The accepted jobs; an error when there is none.
    fn accepted(&mut self) -> anyhow::Result<Vec<Submitted>> {
        if self.accepted.is_empty() {
            bail!(
                "no job was accepted: {}",
                self.first_error.as_deref().unwrap_or("none sent")
            );
        }
        Ok(std::mem::take(&mut self.accepted))
    }

    fn errors_text(&self) -> String {
        match &self.first_error {
            Some(err) => format!(", {} submit errors, the first: {err}", self.n_errors),
            None => ", 0 submit errors".to_owned(),
        }
    }
}

/// The lifecycle events of the SSE stream as they arrived, by job id.
struct Tracker {
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    reader: JoinHandle<String>,
    /// Why the stream ended, once it has.
    ended: Option<String>,
    /// The arrival of each job's first RUNNING event.
    started: HashMap<JobId, Instant>,
    /// Each job's first terminal state and its arrival.
    finished: HashMap<JobId, (JobStatus, Instant)>,
    /// Jobs seen terminal, on stderr (hidden when stderr is not a terminal).
    progress: indicatif::ProgressBar,
}

/// One `job-update` event and when it arrived.
struct Arrival {
    id: JobId,
    status: JobStatus,
    at: Instant,
}

/// The fields of `job-update` data the bench reads.
#[derive(Deserialize)]
struct UpdateData {
    #[serde(rename = "jobId")]
    job_id: JobId,
    status: JobStatus,
}

impl Tracker {
    /// Opens `GET /api/jobs/stream`, waits for its `connected` event, and starts reading it.
    async fn connect(client: &GatewayClient, server: &str) -> anyhow::Result<Tracker> {
        let opening = timeout(CONNECT_WAIT, async {
            let mut events = Box::pin(client.watch(None).await?);
            let first = events.next().await.transpose()?;
            Ok::<_, ClientError>((events, first))
        });
        let (events, first) = match opening.await {
            Ok(Ok(opened)) => opened,
            Ok(Err(err @ ClientError::Transport(_))) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("cannot reach the gateway at {server}")));
            }
            Ok(Err(err)) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("the gateway at {server} refused its event stream")));
            }
            Err(_) => {
                bail!("the gateway at {server} did not open its event stream in {CONNECT_WAIT:?}")
            }
        };
        match first {
            Some(event) if event.event == "connected" => {}
            Some(event) => bail!("the event stream of {server} began with {:?}", event.event),
            None => bail!("the gateway at {server} closed its event stream at once"),
        }
        let (sender, arrivals) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_events(events, sender));
        Ok(Tracker {
            arrivals,
            reader,
            ended: None,
            started: HashMap::new(),
            finished: HashMap::new(),
            progress: progress_bar(),
        })
    }

    fn record(&mut self, arrival: Arrival) {
        if arrival.status == JobStatus::Running {
            self.started.entry(arrival.id).or_insert(arrival.at);
        } else if arrival.status.is_terminal() {
            if let std::collections::hash_map::Entry::Vacant(entry) =
                self.finished.entry(arrival.id)
            {
                entry.insert((arrival.status, arrival.at));
                self.progress.inc(1);
            }
        }
    }

    /// Records every event received so far.
    fn drain(&mut self) {
        while let Ok(arrival) = self.arrivals.try_recv() {
            self.record(arrival);
        }
    }

    /// Records events until every job of `ids` is terminal, the stream ends, or `until`;
    /// returns the jobs not seen terminal, in the order of `ids`.
    async fn wait(&mut self, ids: &[JobId], until: Instant) -> Vec<JobId> {
        self.drain();
        let mut pending: HashSet<&JobId> = ids
            .iter()
            .filter(|id| !self.finished.contains_key(id))
            .collect();
        while !pending.is_empty() && self.ended.is_none() {
            let arrival = tokio::select! {
                arrival = self.arrivals.recv() => arrival,
                () = sleep_until(until) => break,
            };
            match arrival {
                Some(arrival) if arrival.status.is_terminal() => {
                    pending.remove(&arrival.id);
                    self.record(arrival);
                }
                Some(arrival) => self.record(arrival),
                None => {
                    let why = (&mut self.reader).await;
                    self.ended =
                        Some(why.unwrap_or_else(|err| format!("the event reader failed: {err}")));
                }
            }
        }
        ids.iter()
            .filter(|id| !self.finished.contains_key(id))
            .copied()
            .collect()
    }
}

/// The progress bar of finished jobs (its length set once the number of jobs is known).
fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        None,
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} jobs finished, {per_sec}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Forwards each `job-update` with its arrival time; returns why the stream ended.
async fn read_events(
    mut events: impl Stream<Item = Result<SseEvent, ClientError>> + Unpin,
    arrivals: mpsc::UnboundedSender<Arrival>,
) -> String {
    while let Some(item) = events.next().await {
        let at = Instant::now();
        match item {
            Ok(event) if event.event == "job-update" => {
                let Ok(data) = serde_json::from_str::<UpdateData>(&event.data) else {
                    continue;
                };
                if arrivals
                    .send(Arrival {
                        id: data.job_id,
                        status: data.status,
                        at,
                    })
                    .is_err()
                {
                    return "the bench stopped reading".to_owned();
                }
            }
            Ok(_) => {}
            Err(err) => return format!("the event stream broke ({err})"),
        }
    }
    "the gateway closed the event stream (it does so to a lagging subscriber, or at shutdown)"
        .to_owned()
}

/// Polls `GET /api/jobs/{id}` for `pending`, `concurrency` at a time, in rounds until all are
/// terminal or `deadline`; a polled terminal state counts from the answer's arrival. Returns
/// the jobs still not terminal.
async fn poll(
    client: &GatewayClient,
    tracker: &mut Tracker,
    mut pending: Vec<JobId>,
    concurrency: usize,
    deadline: Instant,
) -> Vec<JobId> {
    while !pending.is_empty() && Instant::now() < deadline {
        tracker.drain();
        let answers: Vec<_> = futures::stream::iter(pending.iter().copied())
            .map(|id| async move {
                let answer = timeout_at(deadline, client.get(&id.to_string())).await;
                (id, answer, Instant::now())
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for (id, answer, at) in answers {
            let Ok(Ok(job)) = answer else { continue };
            if job.status.is_terminal() {
                tracker.finished.entry(id).or_insert((job.status, at));
            }
        }
        pending.retain(|id| !tracker.finished.contains_key(id));
        if !pending.is_empty() {
            sleep_until((Instant::now() + POLL_PAUSE).min(deadline)).await;
        }
    }
    pending
}

/// The `POST /api/jobs` body of every job, checked locally.
fn job_request(args: &BenchArgs) -> anyhow::Result<Value> {
    let Some(priority) = Priority::parse(&args.priority) else {
        bail!(
            "invalid --priority {:?}: expected LOW, MEDIUM, HIGH or CRITICAL",
            args.priority
        );
    };
    let payload: Value =
        serde_json::from_str(&args.payload).context("invalid --payload: not JSON")?;
    anyhow::ensure!(
        payload.is_object(),
        "invalid --payload: must be a JSON object"
    );
    Ok(json!({"type": args.job_type, "jobPriority": priority.as_str(), "payload": payload}))
}

/// Jobs per second over `elapsed` (0 when nothing elapsed).
fn rate(n_jobs: usize, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    n_jobs as f64 / elapsed.as_secs_f64()
}

/// Seconds, rounded to the millisecond.
fn secs(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e3).round() / 1e3
}

/// `value` rounded to one decimal.
fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Milliseconds, rounded to the microsecond.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// The nearest-rank `p`th percentile (0 < p <= 100) of ascending `sorted`; `None` when empty.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// `samples` at the percentiles `points` and their maximum, as text and as JSON milliseconds.
fn describe(mut samples: Vec<Duration>, points: &[f64]) -> (String, Value) {
    samples.sort_unstable();
    let Some(max) = samples.last().copied() else {
        return ("no samples".to_owned(), json!({"n": 0}));
    };
    let mut figures = serde_json::Map::from_iter([("n".to_owned(), json!(samples.len()))]);
    let named = points
        .iter()
        .map(|p| (format!("p{p}"), percentile(&samples, *p)));
    let mut text = Vec::new();
    for (name, value) in named.chain([("max".to_owned(), Some(max))]) {
        let value = millis(value.unwrap_or(max));
        text.push(format!("{name} {value:.3} ms"));
        figures.insert(name, json!(value));
    }
    (
        format!("{} (n = {})", text.join(", "), samples.len()),
        Value::Object(figures),
    )
}

/// The median and the slowest of `samples` (ms): each timing of `--read-model` and `--state`.
pub(crate) fn median_and_max(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let median = samples.get(samples.len() / 2).copied().unwrap_or(0.0);
    (median, samples.last().copied().unwrap_or(0.0))
}

/// Prints one timing (`name`, median and slowest in ms) and adds it to `figures` as
/// `{median_ms, max_ms}`, for the JSON line of `--read-model` and `--state`.
pub(crate) fn report_timing(
    figures: &mut serde_json::Map<String, Value>,
    name: &str,
    (median, max): (f64, f64),
) {
    println!("{name:<40} median {median:>9.2} ms   max {max:>9.2} ms");
    figures.insert(
        name.to_string(),
        json!({"median_ms": median, "max_ms": max}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis_list(values: impl IntoIterator<Item = u64>) -> Vec<Duration> {
        values.into_iter().map(Duration::from_millis).collect()
    }

    #[test]
    fn percentile_is_the_nearest_rank() {
        let hundred = millis_list(1..=100);
        for (p, expected) in [
            (0.5, 1),
            (50.0, 50),
            (90.0, 90),
            (99.0, 99),
            (99.9, 100),
            (100.0, 100),
        ] {
            assert_eq!(
                percentile(&hundred, p),
                Some(Duration::from_millis(expected)),
                "p{p}"
            );
        }
        let ten = millis_list(1..=10);
        assert_eq!(percentile(&ten, 50.0), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&ten, 99.0), Some(Duration::from_millis(10)));
    }

    #[test]
    fn percentile_of_one_sample_is_that_sample_and_of_none_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
        let one = millis_list([7]);
        for p in [0.0, 1.0, 50.0, 99.0, 100.0] {
            assert_eq!(percentile(&one, p), Some(Duration::from_millis(7)), "p{p}");
        }
    }

    #[test]
    fn describe_sorts_and_names_the_points() {
        let (text, figures) = describe(millis_list([3, 1, 2, 4]), &[50.0, 99.0]);
        assert_eq!(text, "p50 2.000 ms, p99 4.000 ms, max 4.000 ms (n = 4)");
        assert_eq!(figures, json!({"n": 4, "p50": 2.0, "p99": 4.0, "max": 4.0}));
        assert_eq!(
            describe(Vec::new(), &[50.0]),
            ("no samples".to_owned(), json!({"n": 0}))
        );
    }
}
