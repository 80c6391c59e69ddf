//! Start-up of an orchestrator node: opens the log and the state machine, starts openraft,
//! initializes the cluster on first start, starts the proposer and the leader's duties, and
//! serves the HTTP API until shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use distriqueue_broker::Broker;
use distriqueue_core::machine::MachineConfig;
use distriqueue_core::RetryPolicy;
use distriqueue_util::auth::ApiKeys;
use distriqueue_util::metrics::PrometheusText;
use distriqueue_util::serve::{self, ServerLimits, ServerTls};
use distriqueue_util::AbortOnDrop;
use openraft::error::{Fatal, InitializeError, RaftError};
use openraft::{BasicNode, Config, ConfigError, Raft, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::handle::OrchestratorHandle;
use crate::leader::LeaderDuties;
use crate::liveness::Registry;
use crate::log_store::LogStore;
use crate::metrics;
use crate::network::HttpNetwork;
use crate::peer::{self, PeerContact, PeerKey, PeerServer, MIN_SECRET_LEN};
use crate::proposer;
use crate::raft::{NodeId, TypeConfig};
use crate::state_machine::StateMachineStore;

/// Settings of one orchestrator node. `Default` holds DistriQueue's defaults (the settings of
/// `distriqueue serve` and `distriqueue orchestrator` start from them).
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Where the HTTP API listens; port 0 picks a free port. Default `127.0.0.1:8081`.
    pub addr: SocketAddr,
    /// Holds `raft-log.redb` and `snapshot.json`. Default `./data/orchestrator`.
    pub data_dir: PathBuf,
    /// This node's id in the Raft cluster. Default 1.
    pub node_id: NodeId,
    /// The admission cap on PENDING + QUEUED jobs (429 past it); `None` for no cap. Default
    /// 100,000.
    pub max_queued: Option<u64>,
    /// The admission cap in bytes: most bytes of payload (JSON) the PENDING + QUEUED jobs may
    /// hold together (429 past it); `None` for no cap. Default 1 GiB.
    pub max_queued_bytes: Option<u64>,
    /// How failed attempts are retried (stamped into each job at registration).
    pub retry_policy: RetryPolicy,
    /// A worker silent for longer than this is declared lost (its running attempts fail and
    /// are retried by policy). Default 30 s.
    pub heartbeat_timeout: Duration,
    /// Most commands in one log entry. Default 1024.
    pub max_batch: usize,
    /// Log entries between two snapshots. Default 20,000.
    pub snapshot_every: u64,
    /// A QUEUED attempt whose message left its queue is published again when it is still not
    /// started this long after an attempt published after it at its priority started (the
    /// lease fences the copies; DESIGN.md "Delivery", rule 2; issue 13: an attempt waiting its
    /// turn is never published again). Default 60 s.
    pub dispatch_timeout: Duration,
    /// The cluster's members, node id to peer URL (`http://10.0.0.1:8091`, where each serves
    /// its `peer_addr`), this node included (a node left out waits to be added). Empty (the
    /// default): a one-node cluster, which needs no peer port.
    pub peers: BTreeMap<NodeId, String>,
    /// Where the Raft RPCs listen (the peer port, SECURITY.md), apart from the public API;
    /// needed by a node of a cluster (`peers` not empty, or to be added to one). `None` (the
    /// default): no peer port.
    pub peer_addr: Option<SocketAddr>,
    /// The secret every peer request is signed with (at least 16 bytes), the same on every
    /// node; needed with `peer_addr`.
    pub cluster_secret: Option<String>,
    /// The base URL of this node's API as the other nodes and clients reach it (followers
    /// forward writes there). `None` (the default): `http://<the bound address>`.
    pub api_url: Option<String>,
    /// The process's Prometheus registry, served at `GET /metrics` (docs/metrics.md); the
    /// node then also keeps its gauges current. `None` (the default): no metrics, and
    /// `/metrics` answers 404. One orchestrator per process exports metrics: the registry is
    /// the process's.
    pub prometheus: Option<PrometheusText>,
    /// The API keys every route but health asks for (SECURITY.md); none (the default): every
    /// request is let through.
    pub api_keys: ApiKeys,
    /// Serve the API over TLS (`--tls-cert`, `--tls-key`); its default `api_url` is then
    /// `https://`. The peer port stays plain HTTP with signed requests. `None` (the default):
    /// plain HTTP.
    pub tls: Option<ServerTls>,
    /// Certificates to trust, beyond the public roots, when this node calls another's API (a
    /// follower forwarding a write to an `https://` leader): `--ca-cert`.
    pub tls_roots: Vec<reqwest::Certificate>,
}

impl Default for OrchestratorConfig {
    fn default() -> OrchestratorConfig {
        OrchestratorConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            data_dir: PathBuf::from("./data/orchestrator"),
            node_id: 1,
            max_queued: Some(100_000),
            max_queued_bytes: Some(1 << 30),
            retry_policy: RetryPolicy::default(),
            heartbeat_timeout: Duration::from_secs(30),
            max_batch: 1024,
            snapshot_every: 20_000,
            dispatch_timeout: Duration::from_secs(60),
            peers: BTreeMap::new(),
            peer_addr: None,
            cluster_secret: None,
            api_url: None,
            prometheus: None,
            api_keys: ApiKeys::default(),
            tls: None,
            tls_roots: Vec::new(),
        }
    }
}

/// Why the orchestrator could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The data directory cannot be created or read.
    #[error("cannot use data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// The Raft log cannot be opened.
    #[error("cannot open the raft log {path} (is another distriqueue using this data directory?)")]
    LogStore {
        /// The log's file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: redb::DatabaseError,
    },
    /// openraft refused the configuration.
    #[error("bad raft configuration")]
    RaftConfig(#[source] ConfigError),
    /// The HTTP client for calls to other nodes could not be built (a `--ca-cert` rustls
    /// refuses).
    #[error("cannot build the HTTP client for other nodes")]
    HttpClient(#[source] reqwest::Error),
    /// Raft stopped with a fatal error (at start, or while initializing).
    #[error("raft failed")]
    Raft(#[source] Fatal<NodeId>),
    /// The cluster could not be initialized.
    #[error("cannot initialize the cluster")]
    Initialize(#[source] RaftError<NodeId, InitializeError<NodeId, BasicNode>>),
    /// A one-node cluster did not elect itself in time.
    #[error("this node did not become leader within {0:?}")]
    NotLeader(Duration),
    /// The listener cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("the orchestrator's http server failed")]
    Serve(#[source] std::io::Error),
    /// A cluster node without its peer port or cluster secret, or a secret too short.
    #[error("{0}")]
    Peering(String),
}

/// The key that signs this node's peer requests: from the cluster secret, which a node with a
/// peer port (and any node of a cluster) must have. A one-node cluster without a peer port
/// signs with a random secret nobody else has (it sends nothing).
///
/// Errors: what is missing, in words.
fn peer_key(config: &OrchestratorConfig) -> Result<PeerKey, String> {
    let clustered = config.peer_addr.is_some() || !config.peers.is_empty();
    match (&config.cluster_secret, clustered) {
        (Some(secret), _) if secret.len() >= MIN_SECRET_LEN => {
            Ok(PeerKey::new(secret, config.node_id))
        }
        (Some(_), _) => Err(format!(
            "the cluster secret must have at least {MIN_SECRET_LEN} bytes"
        )),
        (None, false) => {
            let random = distriqueue_util::clock::random_u64;
            let secret = format!("{:016x}{:016x}", random(), random());
            Ok(PeerKey::new(&secret, config.node_id))
        }
        (None, true) => Err(
            "a node of a cluster needs --cluster-secret (DQ_CLUSTER_SECRET): the secret, the \
             same on every node, that signs the Raft traffic"
                .into(),
        ),
    }
    .and_then(|key| {
        if !config.peers.is_empty() && config.peer_addr.is_none() {
            return Err(
                "a node of a cluster needs --peer-addr: the address its Raft traffic listens \
                 on, apart from the public API (the URLs of --peers are the nodes' peer URLs)"
                    .into(),
            );
        }
        Ok(key)
    })
}

/// How long a one-node cluster may take to lead after start.
const LEAD_WITHIN: Duration = Duration::from_secs(30);

/// A started orchestrator node: raft is up and the proposer and the leader's duties run (a
/// one-node cluster leads already); [`Orchestrator::run`] serves the HTTP API.
pub struct Orchestrator {
    handle: OrchestratorHandle,
    listener: TcpListener,
    raft: Raft<TypeConfig>,
    duties: tokio::task::JoinHandle<()>,
    /// The peer port's listener and router, when this node has one.
    peer: Option<(TcpListener, axum::Router)>,
    /// Keeps the metrics' gauges current while the node runs.
    _gauges: Option<AbortOnDrop>,
    /// The API's TLS set-up, if it serves over TLS.
    tls: Option<ServerTls>,
}

impl Orchestrator {
    /// Opens the data directory, starts raft (initializing the cluster on first start), binds
    /// the HTTP API and starts the proposer and the leader's duties, which resume every QUEUED
    /// dispatch and every event past the watermark through `broker` once this node leads. A
    /// one-node cluster returns once it leads.
    ///
    /// Errors: see [`OrchestratorError`].
    pub async fn start(
        config: OrchestratorConfig,
        broker: Broker,
    ) -> Result<Orchestrator, OrchestratorError> {
        let data_dir_error = |source| OrchestratorError::DataDir {
            path: config.data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error)?;
        let log_path = config.data_dir.join("raft-log.redb");
        let log_store =
            LogStore::open(&log_path).map_err(|source| OrchestratorError::LogStore {
                path: log_path.clone(),
                source,
            })?;
        let state_machine = StateMachineStore::open(&config.data_dir, MachineConfig::default())
            .map_err(data_dir_error)?;
        let bind_error = |source| OrchestratorError::Bind {
            addr: config.addr,
            source,
        };
        let listener = TcpListener::bind(config.addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let key = peer_key(&config).map_err(OrchestratorError::Peering)?;
        let peer_listener = match config.peer_addr {
            Some(addr) => {
                let bind_error = |source| OrchestratorError::Bind { addr, source };
                let peer_listener = TcpListener::bind(addr).await.map_err(bind_error)?;
                let bound = peer_listener.local_addr().map_err(bind_error)?;
                Some((peer_listener, bound))
            }
            None => None,
        };
        // The address this node's Raft traffic comes from and goes to.
        let raft_addr = peer_listener
            .as_ref()
            .map_or(local_addr, |(_, bound)| *bound);
        let api_url = config
            .api_url
            .clone()
            .unwrap_or_else(|| {
                let scheme = if config.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{local_addr}")
            })
            .trim_end_matches('/')
            .to_string();
        let contact = Arc::new(PeerContact::default());
        let network = HttpNetwork::new(
            Some(raft_addr.ip()).filter(|ip| !ip.is_unspecified()),
            key.clone(),
            Arc::clone(&contact),
        );

        let raft_config = Config {
            cluster_name: "distriqueue".into(),
            heartbeat_interval: 250,
            election_timeout_min: 600,
            election_timeout_max: 1200,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            // Purge the log up to a snapshot but for a few entries: a follower a little behind
            // catches up from the log, one further behind gets the snapshot.
            max_in_snapshot_log_to_keep: config.snapshot_every.min(500),
            // Snapshot chunks travel as JSON arrays of numbers: keep each request small.
            snapshot_max_chunk_size: 256 * 1024,
            max_payload_entries: 64,
            ..Config::default()
        }
        .validate()
        .map_err(OrchestratorError::RaftConfig)?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network.clone(),
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(OrchestratorError::Raft)?;
        let one_node = config.peers.is_empty();
        initialize(&raft, &config, raft_addr).await?;

        let workers = Arc::new(Registry::new(config.heartbeat_timeout));
        let proposer = proposer::start(raft.clone(), config.max_batch, state_machine.clone());
        let (leading_sender, leading) = watch::channel(None);
        let handle = OrchestratorHandle {
            proposer: proposer.clone(),
            state_machine: state_machine.clone(),
            raft: raft.clone(),
            node_id: config.node_id,
            max_queued: config.max_queued,
            max_queued_bytes: config.max_queued_bytes,
            retry_policy: config.retry_policy,
            workers: Arc::clone(&workers),
            leading,
            http: config
                .tls_roots
                .iter()
                .fold(reqwest::Client::builder(), |builder, root| {
                    builder.add_root_certificate(root.clone())
                })
                .build()
                .map_err(OrchestratorError::HttpClient)?,
            prometheus: config.prometheus.clone(),
            api_keys: config.api_keys.clone(),
            api_url,
            peer_contact: contact,
            api_urls: Arc::default(),
            network,
            outbox_backlog: Arc::default(),
        };
        let gauges = config
            .prometheus
            .is_some()
            .then(|| AbortOnDrop(tokio::spawn(metrics::run_gauges(handle.clone()))));
        let duties = LeaderDuties {
            raft: raft.clone(),
            state_machine,
            broker,
            workers,
            proposer,
            handle: handle.clone(),
            heartbeat_timeout: config.heartbeat_timeout,
            dispatch_timeout: config.dispatch_timeout,
            leading: leading_sender,
        };
        let duties = tokio::spawn(duties.run());
        if one_node {
            // `serve` writes (and reads the recovered state) right after start: wait until this
            // node leads and its duties run.
            let mut leading = handle.leading.clone();
            let led = tokio::time::timeout(LEAD_WITHIN, leading.wait_for(Option::is_some))
                .await
                .is_ok_and(|waited| waited.is_ok());
            if !led {
                return Err(OrchestratorError::NotLeader(LEAD_WITHIN));
            }
        }
        let peer = peer_listener.map(|(peer_listener, _)| {
            let server = PeerServer {
                handle: handle.clone(),
                key,
                configured: Arc::new(config.peers.keys().copied().collect()),
                snapshot_offsets: Arc::default(),
            };
            (peer_listener, peer::router(server))
        });
        Ok(Orchestrator {
            handle,
            listener,
            peer,
            raft,
            duties,
            _gauges: gauges,
            tls: config.tls.clone(),
        })
    }

    /// A handle to submit commands and read state.
    pub fn handle(&self) -> OrchestratorHandle {
        self.handle.clone()
    }

    /// The bound address of the HTTP API.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves the HTTP API until `shutdown` is cancelled, then stops raft.
    ///
    /// Errors: [`OrchestratorError::Serve`] when the server fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), OrchestratorError> {
        let Orchestrator {
            handle,
            listener,
            peer,
            raft,
            duties,
            _gauges,
            tls,
        } = self;
        // The peer port serves until the API has stopped: raft keeps running until then.
        let peer_shutdown = CancellationToken::new();
        let peer_server = peer.map(|(peer_listener, router)| {
            let stop = peer_shutdown.clone();
            AbortOnDrop(tokio::spawn(async move {
                // Every peer request is signed: a rebinding page cannot forge one.
                let limits = ServerLimits {
                    check_host_on_loopback: false,
                    ..ServerLimits::default()
                };
                if let Err(error) =
                    serve::serve(peer_listener, router, limits, None, stop.cancelled_owned()).await
                {
                    tracing::error!(%error, "the peer port's server failed");
                }
            }))
        });
        let limits = ServerLimits {
            check_host_on_loopback: handle.api_keys.is_empty(),
            ..ServerLimits::default()
        };
        let served = serve::serve(
            listener,
            api::router(handle),
            limits,
            tls,
            shutdown.cancelled_owned(),
        )
        .await
        .map_err(OrchestratorError::Serve);
        peer_shutdown.cancel();
        drop(peer_server);
        if let Err(error) = raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
        duties.abort();
        served
    }
}

/// Initializes the cluster on first start: every node of a new cluster does this with the
/// same members, openraft makes the first one win and the others' calls harmless (NotAllowed
/// once a log exists). A node whose `peers` leave it out waits to be added (`cluster
/// add-node`). A one-node cluster restarting elects itself at once instead of waiting out an
/// election timeout.
async fn initialize(
    raft: &Raft<TypeConfig>,
    config: &OrchestratorConfig,
    local_addr: SocketAddr,
) -> Result<(), OrchestratorError> {
    let one_node = config.peers.is_empty();
    let members: BTreeMap<NodeId, BasicNode> = if one_node {
        BTreeMap::from([(
            config.node_id,
            BasicNode {
                addr: format!("http://{local_addr}"),
            },
        )])
    } else {
        config
            .peers
            .iter()
            .map(|(id, url)| (*id, BasicNode { addr: url.clone() }))
            .collect()
    };
    let initialized = raft
        .is_initialized()
        .await
        .map_err(OrchestratorError::Raft)?;
    if !initialized && members.contains_key(&config.node_id) {
        match raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(error) => return Err(OrchestratorError::Initialize(error)),
        }
    } else if one_node {
        let _ = raft.trigger().elect().await;
    }
    Ok(())
}
