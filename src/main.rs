//! The `distriqueue` binary: `serve` (the default) and the CLI verbs against a gateway.

mod bench;
mod verbs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use distriqueue::ServeConfig;
use distriqueue_core::machine::Jitter;
use distriqueue_core::{RetryPolicy, WorkerId};
use distriqueue_worker::Handlers;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// DistriQueue: a distributed job-processing platform. With no subcommand it runs `serve`.
#[derive(Parser, Debug)]
#[command(name = "distriqueue", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Verb>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Run everything in one process: gateway, orchestrator, workers, read model, broker.
    Serve(ServeArgs),
    /// Run an orchestrator node (the lifecycle owner) over RabbitMQ.
    Orchestrator(OrchestratorArgs),
    /// Run a gateway (REST API, SSE, read model) over RabbitMQ and an orchestrator.
    Gateway(GatewayArgs),
    /// Run a worker that takes jobs from RabbitMQ and reports to an orchestrator.
    Worker(WorkerArgs),
    /// Submit a job and print it (or, with --wait, its final state).
    Submit {
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        args: verbs::SubmitArgs,
    },
    /// Print one job.
    Get {
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        args: verbs::GetArgs,
    },
    /// List jobs with filters, paging and sorting.
    List {
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        args: verbs::ListArgs,
    },
    /// Cancel a job.
    Cancel {
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        args: verbs::CancelArgs,
    },
    /// Run a FAILED, TIMEOUT or CANCELLED job again (a new chain of attempts).
    Retry {
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        args: verbs::GetArgs,
    },
    /// Print a job's attempts: worker, state, error and times of each.
    Attempts {
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        args: verbs::GetArgs,
    },
    /// Print lifecycle updates as they happen (all jobs, or one).
    Watch {
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        args: verbs::WatchArgs,
    },
    /// Manage the orchestrator cluster: status, add-node, remove-node.
    Cluster {
        /// Orchestrator URLs, comma-separated (any node: writes go to the leader).
        #[arg(
            long,
            env = "DQ_ORCHESTRATOR_URL",
            value_delimiter = ',',
            default_value = "http://127.0.0.1:8081"
        )]
        orchestrator: Vec<String>,
        #[command(subcommand)]
        command: ClusterVerb,
    },
    /// Measure throughput (default) or submit-to-start latency (--rate) against a gateway.
    Bench {
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
}

/// `distriqueue cluster ...`.
#[derive(Subcommand, Debug)]
enum ClusterVerb {
    /// Print the cluster's status (members, leader, term, each member's reachability and lag).
    Status,
    /// Add a running node (started with --node-id and --peers that leave it out) as a voter.
    AddNode {
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// The new node's base URL, as its peers reach it.
        #[arg(long)]
        url: String,
    },
    /// Remove a node from the cluster (stop its process afterwards).
    RemoveNode {
        /// The node's id.
        #[arg(long)]
        id: u64,
    },
}

/// Runs `distriqueue cluster ...` and prints the answer as JSON.
async fn cluster(orchestrators: &[String], command: ClusterVerb) -> anyhow::Result<()> {
    let client =
        distriqueue_client::OrchestratorClient::new(orchestrators, Duration::from_secs(30))
            .context("bad --orchestrator URL")?;
    let answer = match command {
        ClusterVerb::Status => client.cluster_status().await,
        ClusterVerb::AddNode { id, url } => client.add_node(id, &url).await,
        ClusterVerb::RemoveNode { id } => client.remove_node(id).await,
    }?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// The gateway a CLI verb talks to.
#[derive(Args, Debug)]
struct ServerArg {
    /// Gateway base URL.
    #[arg(long, env = "DQ_SERVER", default_value = "http://127.0.0.1:8082")]
    server: String,
}

/// Settings of `serve`; each has one `DQ_*` environment variable.
#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// Gateway (public REST API) address; port 0 picks a free port.
    #[arg(long, env = "DQ_GATEWAY_ADDR", default_value = "127.0.0.1:8082")]
    gateway_addr: SocketAddr,
    /// Orchestrator API address; port 0 picks a free port.
    #[arg(long, env = "DQ_ORCHESTRATOR_ADDR", default_value = "127.0.0.1:8081")]
    orchestrator_addr: SocketAddr,
    /// In-process job slots (default: 4 per CPU).
    #[arg(long, env = "DQ_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Where the raft log, snapshots and read model live.
    #[arg(long, env = "DQ_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Seconds running jobs may take to finish after Ctrl-C or SIGTERM.
    #[arg(long, env = "DQ_SHUTDOWN_GRACE", default_value_t = 30)]
    shutdown_grace: u64,
    /// Testing aid: append a JSON line per handler start and finish to this file.
    #[arg(long, env = "DQ_LEDGER")]
    ledger: Option<PathBuf>,
    /// Largest accepted request body in bytes (413 past it).
    #[arg(long, env = "DQ_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    #[command(flatten)]
    lifecycle: LifecycleArgs,
    /// Carry jobs, cancels and events over RabbitMQ (an AMQP URL) instead of in process, so
    /// outside workers can join.
    #[arg(long, env = "DQ_AMQP_URL")]
    amqp: Option<String>,
}

/// The orchestrator's lifecycle settings (`serve` and `orchestrator`).
#[derive(Args, Debug, Clone)]
struct LifecycleArgs {
    /// Most jobs waiting to run, PENDING + QUEUED (429 past it).
    #[arg(long, env = "DQ_MAX_QUEUED_JOBS", default_value_t = 100_000)]
    max_queued_jobs: u64,
    /// Backoff before the first retry, in ms; it doubles with each retry (a job's
    /// `retryBackoffMs` overrides it).
    #[arg(long, env = "DQ_RETRY_BACKOFF_BASE_MS", default_value_t = 1_000)]
    retry_backoff_base_ms: u64,
    /// Longest backoff between two attempts, in ms.
    #[arg(long, env = "DQ_RETRY_BACKOFF_MAX_MS", default_value_t = 300_000)]
    retry_backoff_max_ms: u64,
    /// Seconds a worker may stay silent before it is declared lost and its running attempts
    /// are retried elsewhere.
    #[arg(long, env = "DQ_HEARTBEAT_TIMEOUT", default_value_t = 30)]
    heartbeat_timeout: u64,
    /// Backoff jitter: `full` (a uniform draw up to the backoff) or `none`.
    #[arg(long, env = "DQ_RETRY_JITTER", value_enum, default_value_t = JitterArg::Full)]
    retry_jitter: JitterArg,
}

impl LifecycleArgs {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base_ms: self.retry_backoff_base_ms,
            max_ms: self.retry_backoff_max_ms.max(self.retry_backoff_base_ms),
            jitter: match self.retry_jitter {
                JitterArg::Full => Jitter::Full,
                JitterArg::None => Jitter::None,
            },
        }
    }

    fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat_timeout.max(1))
    }
}

/// Settings of `orchestrator`.
#[derive(Args, Debug, Clone)]
struct OrchestratorArgs {
    /// Orchestrator API address; port 0 picks a free port.
    #[arg(long, env = "DQ_ORCHESTRATOR_ADDR", default_value = "127.0.0.1:8081")]
    addr: SocketAddr,
    /// Where the raft log and snapshots live.
    #[arg(long, env = "DQ_DATA_DIR", default_value = "./data/orchestrator")]
    data_dir: PathBuf,
    /// RabbitMQ (AMQP URL).
    #[arg(
        long,
        env = "DQ_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp: String,
    /// Seconds a QUEUED attempt may wait unstarted before it is published again.
    #[arg(long, env = "DQ_DISPATCH_TIMEOUT", default_value_t = 60)]
    dispatch_timeout: u64,
    /// This node's id in the orchestrator cluster.
    #[arg(long, env = "DQ_NODE_ID", default_value_t = 1)]
    node_id: u64,
    /// Log entries between two snapshots; the log before a snapshot is purged (all but the
    /// last 500 entries), so disk and memory stay bounded.
    #[arg(long, env = "DQ_SNAPSHOT_EVERY", default_value_t = 20_000)]
    snapshot_every: u64,
    /// The cluster's members, this node included, as `ID=URL` pairs separated by commas
    /// (`1=http://127.0.0.1:8081,2=http://127.0.0.1:8091,3=http://127.0.0.1:8101`). Unset: a
    /// one-node cluster. The cluster initializes once, whichever node starts first.
    #[arg(long, env = "DQ_PEERS", value_delimiter = ',', value_parser = parse_peer)]
    peers: Vec<(u64, String)>,
    #[command(flatten)]
    lifecycle: LifecycleArgs,
}

/// Settings of `gateway`.
#[derive(Args, Debug, Clone)]
struct GatewayArgs {
    /// Gateway (public REST API) address; port 0 picks a free port.
    #[arg(long, env = "DQ_GATEWAY_ADDR", default_value = "127.0.0.1:8082")]
    addr: SocketAddr,
    /// The read model: `postgres://...` or `sqlite://FILE`.
    #[arg(
        long,
        env = "DQ_DATABASE_URL",
        default_value = "sqlite://./data/readmodel.db"
    )]
    database: String,
    /// RabbitMQ (AMQP URL).
    #[arg(
        long,
        env = "DQ_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp: String,
    /// Orchestrator URLs, comma-separated; the gateway fails over between them.
    #[arg(
        long,
        env = "DQ_ORCHESTRATOR_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8081"
    )]
    orchestrator: Vec<String>,
    /// Largest accepted request body in bytes (413 past it).
    #[arg(long, env = "DQ_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
}

/// Settings of `worker`. Besides its flags and `DQ_*` variables it reads the original workers'
/// `RABBITMQ_HOST`, `RABBITMQ_PORT`, `RABBITMQ_USERNAME`, `RABBITMQ_PASSWORD`,
/// `ORCHESTRATOR_URL`, `STATUS_UPDATE_URL`, `WORKER_ID` and `WORKER_CAPACITY`.
#[derive(Args, Debug, Clone)]
struct WorkerArgs {
    /// RabbitMQ (AMQP URL). Default: built from RABBITMQ_HOST, RABBITMQ_PORT,
    /// RABBITMQ_USERNAME and RABBITMQ_PASSWORD (127.0.0.1, 5672, guest, guest).
    #[arg(long, env = "DQ_AMQP_URL")]
    amqp: Option<String>,
    /// Orchestrator URLs, comma-separated. Default: ORCHESTRATOR_URL, else the orchestrator of
    /// STATUS_UPDATE_URL, else http://127.0.0.1:8081.
    #[arg(long, env = "DQ_ORCHESTRATOR_URL", value_delimiter = ',')]
    orchestrator: Vec<String>,
    /// Job slots. Default: WORKER_CAPACITY, else 4 per CPU.
    #[arg(long, env = "DQ_CONCURRENCY")]
    concurrency: Option<usize>,
    /// This worker's id. Default: WORKER_ID, else worker-<host>-<pid>.
    #[arg(long, env = "DQ_WORKER_ID")]
    worker_id: Option<String>,
    /// Testing aid: append a JSON line per handler start and finish to this file.
    #[arg(long, env = "DQ_LEDGER")]
    ledger: Option<PathBuf>,
    /// Seconds running jobs may take to finish after Ctrl-C or SIGTERM.
    #[arg(long, env = "DQ_SHUTDOWN_GRACE", default_value_t = 30)]
    shutdown_grace: u64,
    /// The orchestrator's heartbeat timeout in seconds: the worker heartbeats six times per
    /// timeout and stops its handlers when cut off for longer than most of it.
    #[arg(long, env = "DQ_HEARTBEAT_TIMEOUT", default_value_t = 30)]
    heartbeat_timeout: u64,
}

/// One `ID=URL` of `--peers`.
fn parse_peer(text: &str) -> Result<(u64, String), String> {
    let (id, url) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ID=URL"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("node id {id:?} is not a number"))?;
    let url = url.trim().trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{url:?} is not an http:// URL"));
    }
    Ok((id, url.to_string()))
}

/// An environment variable, when set and not blank.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

impl WorkerArgs {
    fn into_role(self) -> anyhow::Result<distriqueue::roles::WorkerRole> {
        let amqp = self.amqp.unwrap_or_else(|| {
            let host = env_var("RABBITMQ_HOST").unwrap_or_else(|| "127.0.0.1".into());
            let port = env_var("RABBITMQ_PORT").unwrap_or_else(|| "5672".into());
            let user = env_var("RABBITMQ_USERNAME").unwrap_or_else(|| "guest".into());
            let password = env_var("RABBITMQ_PASSWORD").unwrap_or_else(|| "guest".into());
            format!("amqp://{user}:{password}@{host}:{port}/%2f")
        });
        let orchestrators = if self.orchestrator.is_empty() {
            let from_status_url = || {
                env_var("STATUS_UPDATE_URL").map(|url| {
                    url.trim_end_matches('/')
                        .trim_end_matches("/api/jobs/status")
                        .to_string()
                })
            };
            vec![env_var("ORCHESTRATOR_URL")
                .or_else(from_status_url)
                .unwrap_or_else(|| "http://127.0.0.1:8081".into())]
        } else {
            self.orchestrator
        };
        let concurrency = match self.concurrency {
            Some(n) => n,
            None => match env_var("WORKER_CAPACITY") {
                Some(text) => text
                    .parse()
                    .with_context(|| format!("WORKER_CAPACITY {text:?} is not a number"))?,
                None => 4 * std::thread::available_parallelism().map_or(1, usize::from),
            },
        };
        anyhow::ensure!(concurrency >= 1, "--concurrency must be at least 1");
        let worker_id = self
            .worker_id
            .or_else(|| env_var("WORKER_ID"))
            .unwrap_or_else(|| {
                let host = env_var("HOSTNAME").unwrap_or_else(|| "local".into());
                format!("worker-{host}-{}", std::process::id())
            });
        Ok(distriqueue::roles::WorkerRole {
            amqp,
            orchestrators,
            worker_id: WorkerId(worker_id),
            concurrency,
            ledger: self.ledger,
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            heartbeat_timeout: Duration::from_secs(self.heartbeat_timeout.max(1)),
        })
    }
}

/// `--retry-jitter`.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum JitterArg {
    Full,
    None,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<ServeConfig> {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let concurrency = self.concurrency.unwrap_or(4 * cpus);
        anyhow::ensure!(concurrency >= 1, "--concurrency must be at least 1");
        Ok(ServeConfig {
            gateway_addr: self.gateway_addr,
            orchestrator_addr: self.orchestrator_addr,
            concurrency,
            data_dir: self.data_dir,
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            ledger: self.ledger,
            max_body_bytes: self.max_body_bytes,
            max_queued_jobs: self.lifecycle.max_queued_jobs,
            heartbeat_timeout: self.lifecycle.heartbeat_timeout(),
            retry_policy: self.lifecycle.retry_policy(),
            amqp: self.amqp,
        })
    }
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("DQ_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("DQ_LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: no new jobs; running jobs may finish");
    token.cancel();
}

/// A token cancelled on Ctrl-C or SIGTERM.
fn until_signal() -> CancellationToken {
    let token = CancellationToken::new();
    tokio::spawn(cancel_on_signal(token.clone()));
    token
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let shutdown = CancellationToken::new();
    let served = distriqueue::serve::start(config, Handlers::builtin(), shutdown.clone()).await?;
    println!(
        "distriqueue serving: gateway=http://{} orchestrator=http://{}",
        served.gateway_addr, served.orchestrator_addr
    );
    tokio::spawn(cancel_on_signal(shutdown));
    served.stopped.await??;
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Verb::Serve(args)) => serve(args).await,
        Some(Verb::Orchestrator(args)) => {
            let role = distriqueue::roles::OrchestratorRole {
                addr: args.addr,
                data_dir: args.data_dir,
                amqp: args.amqp,
                max_queued_jobs: args.lifecycle.max_queued_jobs,
                retry_policy: args.lifecycle.retry_policy(),
                heartbeat_timeout: args.lifecycle.heartbeat_timeout(),
                dispatch_timeout: Duration::from_secs(args.dispatch_timeout.max(1)),
                node_id: args.node_id,
                peers: args.peers.into_iter().collect(),
                snapshot_every: args.snapshot_every.max(1),
            };
            distriqueue::roles::run_orchestrator(role, until_signal()).await
        }
        Some(Verb::Gateway(args)) => {
            let role = distriqueue::roles::GatewayRole {
                addr: args.addr,
                database: args.database,
                amqp: args.amqp,
                orchestrators: args.orchestrator,
                max_body_bytes: args.max_body_bytes,
            };
            distriqueue::roles::run_gateway(role, until_signal()).await
        }
        Some(Verb::Worker(args)) => {
            let role = args.into_role()?;
            distriqueue::roles::run_worker(role, Handlers::builtin(), until_signal()).await
        }
        Some(Verb::Submit { server, args }) => verbs::submit(&server.server, args).await,
        Some(Verb::Get { server, args }) => verbs::get(&server.server, args).await,
        Some(Verb::List { server, args }) => verbs::list(&server.server, args).await,
        Some(Verb::Cancel { server, args }) => verbs::cancel(&server.server, args).await,
        Some(Verb::Retry { server, args }) => verbs::retry(&server.server, args).await,
        Some(Verb::Attempts { server, args }) => verbs::attempts(&server.server, args).await,
        Some(Verb::Watch { server, args }) => verbs::watch(&server.server, args).await,
        Some(Verb::Bench { server, args }) => bench::run(&server.server, args).await,
        Some(Verb::Cluster {
            orchestrator,
            command,
        }) => cluster(&orchestrator, command).await,
    }
}
