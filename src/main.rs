//! The `distriqueue` binary: the roles (`serve`, the default, `run`, `gateway`,
//! `orchestrator`, `worker`), `config`, and the CLI verbs against a gateway or the
//! orchestrators. Every subcommand reads its settings through `distriqueue::config` (defaults,
//! `--config FILE`, `DQ_*` variables, flags) and starts roles through `distriqueue::start`.

mod bench;
mod bench_cpu;
mod bench_read_model;
mod bench_state;
mod verbs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use distriqueue::config::{
    self, ClientFlags, ClusterFlags, Config, GatewayFlags, Loaded, OrchestratorFlags, RunFlags,
    ServeFlags, SettingFlags, Sources, WorkerFlags,
};
use distriqueue_worker::Handlers;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// DistriQueue: a distributed job-processing platform. With no subcommand it runs `serve`.
///
/// Settings come from defaults, then a TOML file (--config FILE or DQ_CONFIG), then DQ_*
/// environment variables, then flags; `distriqueue config` shows the result.
#[derive(Parser, Debug)]
#[command(name = "distriqueue", version)]
struct Cli {
    /// A TOML configuration file (see distriqueue.example.toml). Default: DQ_CONFIG, else none.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Verb>,
    #[command(flatten)]
    serve: ServeFlags,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Run everything in one process: gateway, orchestrator, workers, read model, broker.
    Serve(ServeFlags),
    /// Run any set of roles in one process (--roles gateway,orchestrator), the others elsewhere.
    Run(RunFlags),
    /// Run an orchestrator node (the lifecycle owner) over RabbitMQ.
    Orchestrator(OrchestratorFlags),
    /// Run a gateway (REST API, SSE, read model) over RabbitMQ and an orchestrator.
    Gateway(GatewayFlags),
    /// Run a worker that takes jobs from RabbitMQ and reports to an orchestrator.
    Worker(WorkerFlags),
    /// Print the effective configuration as TOML, each value with where it came from (secrets
    /// redacted); the flags after a role's name are that role's (`config worker --concurrency
    /// 8`).
    Config(ConfigArgs),
    /// Print the OpenAPI 3.1 document of the gateway or the orchestrator, as YAML (the files
    /// docs/api-spec.yaml and docs/orchestrator-api-spec.yaml; the servers serve it as JSON at
    /// /api/v3/api-docs).
    Openapi {
        /// gateway or orchestrator.
        #[arg(value_parser = ["gateway", "orchestrator"])]
        role: String,
    },
    /// Submit a job and print it (or, with --wait, its final state).
    Submit {
        #[command(flatten)]
        client: ClientFlags,
        #[command(flatten)]
        args: verbs::SubmitArgs,
    },
    /// Print statistics of the jobs created in a range (GET /api/jobs/statistics).
    Stats {
        #[command(flatten)]
        client: ClientFlags,
        #[command(flatten)]
        args: verbs::StatsArgs,
    },
    /// Print one job.
    Get {
        #[command(flatten)]
        client: ClientFlags,
        #[command(flatten)]
        args: verbs::GetArgs,
    },
    /// List jobs with filters, paging and sorting.
    List {
        #[command(flatten)]
        client: ClientFlags,
        #[command(flatten)]
        args: verbs::ListArgs,
    },
    /// Cancel a job.
    Cancel {
        #[command(flatten)]
        client: ClientFlags,
        #[command(flatten)]
        args: verbs::CancelArgs,
    },
    /// Run a FAILED, TIMEOUT or CANCELLED job again (a new chain of attempts).
    Retry {
        #[command(flatten)]
        client: ClientFlags,
        #[command(flatten)]
        args: verbs::GetArgs,
    },
    /// Print a job's attempts: worker, state, error and times of each.
    Attempts {
        #[command(flatten)]
        client: ClientFlags,
        #[command(flatten)]
        args: verbs::GetArgs,
    },
    /// Print lifecycle updates as they happen (all jobs, or one).
    Watch {
        #[command(flatten)]
        client: ClientFlags,
        #[command(flatten)]
        args: verbs::WatchArgs,
    },
    /// Manage the orchestrator cluster: status, add-node, remove-node.
    Cluster {
        #[command(flatten)]
        flags: ClusterFlags,
        #[command(subcommand)]
        command: ClusterVerb,
    },
    /// Measure throughput (default) or submit-to-start latency (--rate) against a gateway, the
    /// dashboard's queries on a read model of N jobs (--read-model N), or the replicated
    /// state's snapshot at N jobs (--state N).
    Bench {
        #[command(flatten)]
        client: ClientFlags,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
}

/// `distriqueue config ...`.
#[derive(Args, Debug)]
struct ConfigArgs {
    /// Print the commented example configuration file (every setting at its default) instead.
    #[arg(long)]
    example: bool,
    /// The subcommand whose configuration to show (default: serve), with its flags.
    #[command(subcommand)]
    of: Option<ConfigOf>,
}

/// The subcommand `distriqueue config` shows the configuration of.
#[derive(Subcommand, Debug)]
enum ConfigOf {
    /// As `distriqueue serve` would run.
    Serve(ServeFlags),
    /// As `distriqueue run` would run.
    Run(RunFlags),
    /// As `distriqueue orchestrator` would run.
    Orchestrator(OrchestratorFlags),
    /// As `distriqueue gateway` would run.
    Gateway(GatewayFlags),
    /// As `distriqueue worker` would run.
    Worker(WorkerFlags),
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
        /// The new node's peer URL (its --peer-addr), as the other nodes reach it.
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

/// How long a `distriqueue cluster` call keeps trying the orchestrators.
const CLUSTER_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `distriqueue cluster ...` and prints the answer as JSON.
async fn cluster(config: &Config, command: ClusterVerb) -> anyhow::Result<()> {
    let mut client =
        distriqueue_client::OrchestratorClient::new(&config.client.orchestrator, CLUSTER_PATIENCE)
            .context("bad --orchestrator URL")?;
    if let Some(root) = config.client.root_certificate()? {
        client = client.with_root_certificate(&root)?;
    }
    let client = match &config.client.api_key {
        Some(key) => client.with_api_key(key),
        None => client,
    };
    let answer = match command {
        ClusterVerb::Status => serde_json::to_value(client.cluster_status().await?),
        ClusterVerb::AddNode { id, url } => serde_json::to_value(client.add_node(id, &url).await?),
        ClusterVerb::RemoveNode { id } => serde_json::to_value(client.remove_node(id).await?),
    }?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// The configuration of subcommand `C`, from `--config` (or `DQ_CONFIG`), the environment and
/// `flags`.
fn load<const C: usize>(file: Option<PathBuf>, flags: &SettingFlags<C>) -> anyhow::Result<Loaded> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let sources = Sources {
        cmd: SettingFlags::<C>::CMD,
        file,
        env: &env,
        flags: &flags.given,
    };
    config::load(&sources).context("bad configuration")
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

/// Runs the roles `config` enables until Ctrl-C or SIGTERM; prints `distriqueue VERB:
/// gateway=http://ADDR orchestrator=http://ADDR worker=ID` (the roles it runs) once they serve.
async fn run_roles(config: &Config, verb: &str) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let started = distriqueue::start(config, Handlers::builtin(), shutdown.clone()).await?;
    println!("distriqueue {verb}: {}", started.ready_line());
    tokio::spawn(cancel_on_signal(shutdown));
    started.stopped.await??;
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.command.is_some() && !cli.serve.given.is_empty() {
        // `distriqueue --gateway-addr X submit` would silently drop the flag.
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "setting flags go after the subcommand (distriqueue serve --gateway-addr ...)",
            )
            .exit();
    }
    init_tracing();
    let file = cli.config;
    match cli.command {
        None => run_roles(&load(file, &cli.serve)?.config, "serve").await,
        Some(Verb::Serve(flags)) => run_roles(&load(file, &flags)?.config, "serve").await,
        Some(Verb::Run(flags)) => run_roles(&load(file, &flags)?.config, "run").await,
        Some(Verb::Orchestrator(flags)) => {
            run_roles(&load(file, &flags)?.config, "orchestrator").await
        }
        Some(Verb::Gateway(flags)) => run_roles(&load(file, &flags)?.config, "gateway").await,
        Some(Verb::Worker(flags)) => run_roles(&load(file, &flags)?.config, "worker").await,
        Some(Verb::Config(args)) => {
            if args.example {
                print!("{}", config::example_file());
                return Ok(());
            }
            let loaded = match args.of {
                None => load(file, &ServeFlags::default())?,
                Some(ConfigOf::Serve(flags)) => load(file, &flags)?,
                Some(ConfigOf::Run(flags)) => load(file, &flags)?,
                Some(ConfigOf::Orchestrator(flags)) => load(file, &flags)?,
                Some(ConfigOf::Gateway(flags)) => load(file, &flags)?,
                Some(ConfigOf::Worker(flags)) => load(file, &flags)?,
            };
            print!("{}", config::effective(&loaded));
            Ok(())
        }
        Some(Verb::Openapi { role }) => {
            let role = config::FromText::from_text(&role).map_err(anyhow::Error::msg)?;
            let document = distriqueue::openapi::yaml(role)
                .map_err(|error| anyhow::anyhow!("cannot render the document: {error}"))?
                .context("that role has no HTTP API")?;
            print!("{document}");
            Ok(())
        }
        Some(Verb::Submit { client, args }) => {
            verbs::submit(&load(file, &client)?.config.client, args).await
        }
        Some(Verb::Stats { client, args }) => {
            verbs::stats(&load(file, &client)?.config.client, args).await
        }
        Some(Verb::Get { client, args }) => {
            verbs::get(&load(file, &client)?.config.client, args).await
        }
        Some(Verb::List { client, args }) => {
            verbs::list(&load(file, &client)?.config.client, args).await
        }
        Some(Verb::Cancel { client, args }) => {
            verbs::cancel(&load(file, &client)?.config.client, args).await
        }
        Some(Verb::Retry { client, args }) => {
            verbs::retry(&load(file, &client)?.config.client, args).await
        }
        Some(Verb::Attempts { client, args }) => {
            verbs::attempts(&load(file, &client)?.config.client, args).await
        }
        Some(Verb::Watch { client, args }) => {
            verbs::watch(&load(file, &client)?.config.client, args).await
        }
        Some(Verb::Bench { client, args }) => {
            bench::run(&load(file, &client)?.config.client, args).await
        }
        Some(Verb::Cluster { flags, command }) => {
            cluster(&load(file, &flags)?.config, command).await
        }
    }
}
