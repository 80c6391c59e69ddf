//! DistriQueue's configuration: one [`Config`] with a section per role (`[gateway]`,
//! `[orchestrator]`, `[worker]`, `[client]`) and a few process-wide keys, built in layers
//! (DESIGN.md "Configuration"): defaults, then a TOML file (`--config FILE` or `DQ_CONFIG`),
//! then environment variables (`DQ_*`, and for `distriqueue worker` the original workers'
//! `RABBITMQ_*`, `ORCHESTRATOR_URL`, `STATUS_UPDATE_URL`, `WORKER_ID`, `WORKER_CAPACITY`), then
//! flags. An unknown key or a value of the wrong type is an error that names the key and where
//! it came from.
//!
//! Each setting is declared once, below: its type, default, environment variable, flag on each
//! subcommand and doc. The struct fields, the flags (`flags`), the layers (`load`), the
//! listing of `distriqueue config` and the example file (`render`) are all made from that one
//! declaration. Defaults of the roles' own knobs come from the role crates' `Default`.

mod flags;
mod load;
mod render;
mod setting;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use distriqueue_core::machine::Jitter;
use distriqueue_core::RetryPolicy;
use distriqueue_gateway::GatewayConfig;
use distriqueue_orchestrator::OrchestratorConfig;
use distriqueue_util::auth::{check_key, ApiKeys, KeySpec};
use distriqueue_util::serve::ServerTls;
use serde::{Deserialize, Serialize};

pub use self::flags::{
    ClientFlags, ClusterFlags, GatewayFlags, OrchestratorFlags, RunFlags, ServeFlags, SettingFlags,
    WorkerFlags,
};
pub use self::load::{load, ConfigError, Loaded, Sources};
pub use self::render::{effective, example_file};
use self::setting::parse_value;
pub use self::setting::{redact_url, Cmd, FromText, Redact, Setting, Span};

/// Declares the settings: [`Config`] and its sections (with `Default`), and [`SETTINGS`].
macro_rules! settings {
    (
        $(#[doc = $config_doc:literal])*
        top {
            $(
                $(#[doc = $doc:literal])*
                $field:ident: $ty:ty = $default:expr;
                    env [$($env:literal),*] flags [$($cmd:ident $flag:literal),*] redact $redact:ident;
            )*
        }
        $(
            $(#[doc = $section_doc:literal])*
            [$section:ident] $Section:ident {
                $(
                    $(#[doc = $sdoc:literal])*
                    $sfield:ident: $sty:ty = $sdefault:expr;
                        env [$($senv:literal),*] flags [$($scmd:ident $sflag:literal),*] redact $sredact:ident;
                )*
            }
        )*
    ) => {
        $(#[doc = $config_doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            $( $(#[doc = $section_doc])* pub $section: $Section, )*
        }

        impl Default for Config {
            fn default() -> Config {
                Config {
                    $( $field: $default, )*
                    $( $section: $Section::default(), )*
                }
            }
        }

        $(
            $(#[doc = $section_doc])*
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            #[serde(deny_unknown_fields, default)]
            pub struct $Section {
                $( $(#[doc = $sdoc])* pub $sfield: $sty, )*
            }

            impl Default for $Section {
                fn default() -> $Section {
                    $Section { $( $sfield: $sdefault, )* }
                }
            }
        )*

        /// Every setting, in the order of the file: the one table the flags, the layers, the
        /// listing and the example file are made from.
        pub static SETTINGS: &[Setting] = &[
            $(
                Setting {
                    section: "",
                    key: stringify!($field),
                    path: stringify!($field),
                    doc: concat!($($doc, "\n"),*),
                    env: &[$($env),*],
                    flags: &[$((Cmd::$cmd, $flag)),*],
                    redact: Redact::$redact,
                    list: <$ty as FromText>::LIST,
                    switch: <$ty as FromText>::SWITCH,
                    parse: parse_value::<$ty>,
                    kind: <$ty as FromText>::KIND,
                },
            )*
            $($(
                Setting {
                    section: stringify!($section),
                    key: stringify!($sfield),
                    path: concat!(stringify!($section), ".", stringify!($sfield)),
                    doc: concat!($($sdoc, "\n"),*),
                    env: &[$($senv),*],
                    flags: &[$((Cmd::$scmd, $sflag)),*],
                    redact: Redact::$sredact,
                    list: <$sty as FromText>::LIST,
                    switch: <$sty as FromText>::SWITCH,
                    parse: parse_value::<$sty>,
                    kind: <$sty as FromText>::KIND,
                },
            )*)*
        ];
    };
}

settings! {
    /// The whole configuration of a `distriqueue` process: the process-wide keys and one
    /// section per role. `Config::default()` is what `distriqueue serve` runs with.
    top {
        /// The roles this process runs, for `distriqueue run` (`gateway`, `orchestrator`,
        /// `worker`); the other subcommands fix their own: `serve` runs all three, `gateway`,
        /// `orchestrator` and `worker` one each.
        roles: Vec<Role> = Role::ALL.to_vec();
            env ["DQ_ROLES"] flags [Run "roles"] redact No;
        /// Where this process keeps its data: the orchestrator's Raft log and snapshots in
        /// `<data_dir>/orchestrator`, and the gateway's SQLite read model in
        /// `<data_dir>/readmodel.db` unless `gateway.database` names another.
        data_dir: PathBuf = PathBuf::from("./data");
            env ["DQ_DATA_DIR"]
            flags [Serve "data-dir", Run "data-dir", Gateway "data-dir", Orchestrator "data-dir"]
            redact No;
        /// RabbitMQ's AMQP URL (`amqp://user:password@host:5672/%2f`). Unset: a process that
        /// runs every role carries jobs, cancels and events in process (no outside worker can
        /// join); any other uses `amqp://guest:guest@127.0.0.1:5672/%2f`.
        amqp: Option<String> = None;
            env ["DQ_AMQP_URL"]
            flags [Serve "amqp", Run "amqp", Gateway "amqp", Orchestrator "amqp", Worker "amqp"]
            redact UrlPassword;
    }

    /// The gateway: the public REST API, SSE and the read model.
    [gateway] GatewaySettings {
        /// Where the public REST API listens; port 0 picks a free port.
        addr: SocketAddr = GatewayConfig::default().addr;
            env ["DQ_GATEWAY_ADDR"]
            flags [Serve "gateway-addr", Run "gateway-addr", Gateway "addr"]
            redact No;
        /// The read model: `postgres://user:password@host/database` or `sqlite://FILE`. Unset:
        /// `sqlite://<data_dir>/readmodel.db`.
        database: Option<String> = None;
            env ["DQ_DATABASE_URL"]
            flags [Serve "database", Run "database", Gateway "database"]
            redact UrlPassword;
        /// Largest accepted request body, in bytes (413 past it).
        max_body_bytes: usize = GatewayConfig::default().body_limit_bytes;
            env ["DQ_MAX_BODY_BYTES"]
            flags [Serve "max-body-bytes", Run "max-body-bytes", Gateway "max-body-bytes"]
            redact No;
        /// Most jobs in one batch submission (`POST /api/jobs/batch`).
        max_batch_jobs: usize = GatewayConfig::default().max_batch_jobs;
            env ["DQ_MAX_BATCH_JOBS"]
            flags [Serve "max-batch-jobs", Run "max-batch-jobs", Gateway "max-batch-jobs"]
            redact No;
        /// Largest accepted body of a batch submission, in bytes (413 past it).
        max_batch_body_bytes: usize = GatewayConfig::default().batch_body_limit_bytes;
            env ["DQ_MAX_BATCH_BODY_BYTES"]
            flags [
                Serve "max-batch-body-bytes",
                Run "max-batch-body-bytes",
                Gateway "max-batch-body-bytes"
            ]
            redact No;
        /// Seconds between two reconciliations of the read model with the orchestrator's live
        /// jobs (also once at start).
        reconcile_every: u64 = GatewayConfig::default().reconcile_every.as_secs();
            env ["DQ_RECONCILE_EVERY"]
            flags [Serve "reconcile-every", Run "reconcile-every", Gateway "reconcile-every"]
            redact No;
        /// How long finished jobs (COMPLETED, FAILED, TIMEOUT, CANCELLED) stay in the read
        /// model after they ended; older ones leave it in small batches, and the statistics keep
        /// counting them. `0`: keep every job.
        retention: Span = Span(GatewayConfig::default().retention.unwrap_or_default());
            env ["DQ_RETENTION"]
            flags [Serve "retention", Run "retention", Gateway "retention"]
            redact No;
        /// Seconds between two keep-alive comments on an open SSE stream.
        sse_keep_alive: u64 = GatewayConfig::default().sse_keep_alive.as_secs();
            env ["DQ_SSE_KEEP_ALIVE"]
            flags [Serve "sse-keep-alive", Run "sse-keep-alive", Gateway "sse-keep-alive"]
            redact No;
    }

    /// The orchestrator: the lifecycle owner, a node of a Raft cluster.
    [orchestrator] OrchestratorSettings {
        /// Where the orchestrator API (and the Raft RPCs) listen; port 0 picks a free port.
        addr: SocketAddr = OrchestratorConfig::default().addr;
            env ["DQ_ORCHESTRATOR_ADDR"]
            flags [Serve "orchestrator-addr", Run "orchestrator-addr", Orchestrator "addr"]
            redact No;
        /// This node's id in the orchestrator cluster.
        node_id: u64 = OrchestratorConfig::default().node_id;
            env ["DQ_NODE_ID"] flags [Run "node-id", Orchestrator "node-id"] redact No;
        /// The cluster's members, this node included, as `ID=PEER_URL` items, each node's peer
        /// URL being where its `peer_addr` is reached
        /// (`1=http://10.0.0.1:8091,2=http://10.0.0.2:8091,3=http://10.0.0.3:8091`). Empty: a
        /// one-node cluster. The cluster initializes once, whichever node starts first.
        peers: Vec<Peer> = Vec::new();
            env ["DQ_PEERS"] flags [Run "peers", Orchestrator "peers"] redact No;
        /// Where this node's Raft traffic listens (the peer port), apart from the public API:
        /// needed by every node of a cluster, and reached only by the other nodes.
        peer_addr: Option<SocketAddr> = None;
            env ["DQ_PEER_ADDR"] flags [Run "peer-addr", Orchestrator "peer-addr"] redact No;
        /// The secret that signs every Raft request between the nodes (at least 16 bytes, the
        /// same on every node): needed by every node of a cluster.
        cluster_secret: Option<String> = None;
            env ["DQ_CLUSTER_SECRET"]
            flags [Run "cluster-secret", Orchestrator "cluster-secret"]
            redact Secret;
        /// This node's API URL as the other nodes and the clients reach it (followers forward
        /// writes to the leader's). Unset: `http://<addr>` with the bound address.
        api_url: Option<String> = None;
            env ["DQ_API_URL"] flags [Run "api-url", Orchestrator "api-url"] redact No;
        /// Log entries between two snapshots; the log before a snapshot is purged (all but the
        /// last 500 entries), so disk and memory stay bounded.
        snapshot_every: u64 = OrchestratorConfig::default().snapshot_every;
            env ["DQ_SNAPSHOT_EVERY"]
            flags [Serve "snapshot-every", Run "snapshot-every", Orchestrator "snapshot-every"]
            redact No;
        /// Seconds a job message that left its queue may stay unstarted, once a job queued after
        /// it at its priority started, before it is published again (a job waiting its turn in
        /// its queue is never published again).
        dispatch_timeout: u64 = OrchestratorConfig::default().dispatch_timeout.as_secs();
            env ["DQ_DISPATCH_TIMEOUT"]
            flags [Serve "dispatch-timeout", Run "dispatch-timeout", Orchestrator "dispatch-timeout"]
            redact No;
        /// Most jobs waiting to run, PENDING + QUEUED (429 past it).
        max_queued_jobs: u64 = OrchestratorConfig::default().max_queued.unwrap_or(u64::MAX);
            env ["DQ_MAX_QUEUED_JOBS"]
            flags [Serve "max-queued-jobs", Run "max-queued-jobs", Orchestrator "max-queued-jobs"]
            redact No;
        /// Most bytes of payload (JSON) the PENDING + QUEUED jobs may hold together (429 past
        /// it): the replicated state keeps them in memory on every node.
        max_queued_bytes: u64 = OrchestratorConfig::default().max_queued_bytes.unwrap_or(u64::MAX);
            env ["DQ_MAX_QUEUED_BYTES"]
            flags [Serve "max-queued-bytes", Run "max-queued-bytes", Orchestrator "max-queued-bytes"]
            redact No;
        /// Backoff before the first retry, in milliseconds; it doubles with each retry (a job's
        /// `retryBackoffMs` overrides it).
        retry_backoff_base_ms: u64 = RetryPolicy::default().base_ms;
            env ["DQ_RETRY_BACKOFF_BASE_MS"]
            flags [
                Serve "retry-backoff-base-ms",
                Run "retry-backoff-base-ms",
                Orchestrator "retry-backoff-base-ms"
            ]
            redact No;
        /// Longest backoff between two attempts, in milliseconds.
        retry_backoff_max_ms: u64 = RetryPolicy::default().max_ms;
            env ["DQ_RETRY_BACKOFF_MAX_MS"]
            flags [
                Serve "retry-backoff-max-ms",
                Run "retry-backoff-max-ms",
                Orchestrator "retry-backoff-max-ms"
            ]
            redact No;
        /// Backoff jitter: `full` (a uniform draw up to the backoff) or `none`.
        retry_jitter: RetryJitter = RetryJitter::from(RetryPolicy::default().jitter);
            env ["DQ_RETRY_JITTER"]
            flags [Serve "retry-jitter", Run "retry-jitter", Orchestrator "retry-jitter"]
            redact No;
        /// Seconds a worker may stay silent before it is declared lost and its running
        /// attempts are retried elsewhere. Workers heartbeat six times per timeout and stop
        /// their handlers when cut off for longer than most of it, so give them the same value.
        heartbeat_timeout: u64 = OrchestratorConfig::default().heartbeat_timeout.as_secs();
            env ["DQ_HEARTBEAT_TIMEOUT"]
            flags [
                Serve "heartbeat-timeout",
                Run "heartbeat-timeout",
                Orchestrator "heartbeat-timeout",
                Worker "heartbeat-timeout"
            ]
            redact No;
    }

    /// The worker: job slots that run handlers.
    [worker] WorkerSettings {
        /// Job slots: how many handlers run at once. Unset: 4 per CPU (`distriqueue worker`
        /// also reads `WORKER_CAPACITY`).
        concurrency: Option<usize> = None;
            env ["DQ_CONCURRENCY"]
            flags [Serve "concurrency", Run "concurrency", Worker "concurrency"]
            redact No;
        /// This worker's id. Unset: `worker-<host>-<pid>` (`distriqueue worker` also reads
        /// `WORKER_ID`), or, in a process that also runs the orchestrator, a fresh id per start.
        worker_id: Option<String> = None;
            env ["DQ_WORKER_ID"]
            flags [Serve "worker-id", Run "worker-id", Worker "worker-id"]
            redact No;
        /// Testing aid: append a JSON line per handler start and finish to this file.
        ledger: Option<PathBuf> = None;
            env ["DQ_LEDGER"] flags [Serve "ledger", Run "ledger", Worker "ledger"] redact No;
        /// Seconds running jobs may take to finish after Ctrl-C or SIGTERM.
        shutdown_grace: u64 = 30;
            env ["DQ_SHUTDOWN_GRACE"]
            flags [Serve "shutdown-grace", Run "shutdown-grace", Worker "shutdown-grace"]
            redact No;
        /// Where the worker serves its Prometheus metrics (`GET /metrics`, docs/metrics.md);
        /// port 0 picks a free port. Unset: not served (in a process that also runs a gateway
        /// or an orchestrator, their metrics routes show the worker's metrics too).
        metrics_addr: Option<SocketAddr> = None;
            env ["DQ_METRICS_ADDR"]
            flags [Serve "metrics-addr", Run "metrics-addr", Worker "metrics-addr"]
            redact No;
    }

    /// Who may call this process's servers (SECURITY.md): API keys with roles, checked on
    /// every route but health. With no key, the servers listen on loopback addresses only.
    [security] SecuritySettings {
        /// The API keys the gateway and the orchestrator accept, as `KEY` (every role) or
        /// `KEY:role+role` items; the roles are `client` (submit, read, cancel, retry),
        /// `worker` (the worker protocol) and `admin` (membership, everything). Keys are 16 to
        /// 256 characters of letters, digits and `-._~+/=`. Clients send one as
        /// `Authorization: Bearer KEY` or `X-API-Key: KEY`.
        api_keys: Vec<KeySpec> = Vec::new();
            env ["DQ_API_KEYS"]
            flags [
                Serve "api-keys",
                Run "api-keys",
                Gateway "api-keys",
                Orchestrator "api-keys",
                Worker "api-keys"
            ]
            redact Secret;
        /// A file of more API keys: one `KEY` or `KEY role role` a line; `#` starts a comment.
        api_key_file: Option<PathBuf> = None;
            env ["DQ_API_KEY_FILE"]
            flags [
                Serve "api-key-file",
                Run "api-key-file",
                Gateway "api-key-file",
                Orchestrator "api-key-file",
                Worker "api-key-file"
            ]
            redact No;
        /// Lets anyone read (jobs, statistics, status, metrics, the API documents) without a
        /// key; changes still need one.
        public_reads: bool = false;
            env ["DQ_PUBLIC_READS"]
            flags [
                Serve "public-reads",
                Run "public-reads",
                Gateway "public-reads",
                Orchestrator "public-reads",
                Worker "public-reads"
            ]
            redact No;
        /// The TLS certificate chain (PEM, server certificate first) the gateway and the
        /// orchestrator API serve with; with `tls_key`, they speak only HTTPS (SECURITY.md).
        tls_cert: Option<PathBuf> = None;
            env ["DQ_TLS_CERT"]
            flags [Serve "tls-cert", Run "tls-cert", Gateway "tls-cert", Orchestrator "tls-cert"]
            redact No;
        /// The private key (PEM) of `tls_cert`.
        tls_key: Option<PathBuf> = None;
            env ["DQ_TLS_KEY"]
            flags [Serve "tls-key", Run "tls-key", Gateway "tls-key", Orchestrator "tls-key"]
            redact No;
        /// Lets a server without API keys listen on an address other than loopback (anyone
        /// who reaches it may do anything; a warning is logged every minute).
        allow_unauthenticated: bool = false;
            env ["DQ_ALLOW_UNAUTHENTICATED"]
            flags [
                Serve "allow-unauthenticated",
                Run "allow-unauthenticated",
                Gateway "allow-unauthenticated",
                Orchestrator "allow-unauthenticated",
                Worker "allow-unauthenticated"
            ]
            redact No;
    }

    /// How this process reaches the other roles: the gateway (client verbs) and the
    /// orchestrators (gateways, workers, `distriqueue cluster`).
    [client] ClientSettings {
        /// The gateway the client verbs talk to.
        server: String = "http://127.0.0.1:8082".to_string();
            env ["DQ_SERVER"] flags [Client "server"] redact UrlPassword;
        /// The orchestrators' base URLs (any node of the cluster: writes go to the leader);
        /// gateways and workers fail over between them. `distriqueue worker` also reads
        /// `ORCHESTRATOR_URL` and `STATUS_UPDATE_URL`.
        orchestrator: Vec<String> = vec!["http://127.0.0.1:8081".to_string()];
            env ["DQ_ORCHESTRATOR_URL"]
            flags [
                Run "orchestrator",
                Gateway "orchestrator",
                Worker "orchestrator",
                Cluster "orchestrator"
            ]
            redact UrlPassword;
        /// The API key this process sends to the gateway (client verbs: a `client` key) or the
        /// orchestrators (a gateway: `client`; a worker: `worker`; `distriqueue cluster`:
        /// `admin`).
        api_key: Option<String> = None;
            env ["DQ_API_KEY"]
            flags [
                Client "api-key",
                Run "api-key",
                Gateway "api-key",
                Worker "api-key",
                Cluster "api-key"
            ]
            redact Secret;
        /// A certificate authority (PEM) to trust, besides the public roots, for `https://`
        /// gateways and orchestrators and for `amqps://` RabbitMQ (a self-signed or private
        /// CA).
        ca_cert: Option<PathBuf> = None;
            env ["DQ_CA_CERT"]
            flags [
                Serve "ca-cert",
                Client "ca-cert",
                Run "ca-cert",
                Gateway "ca-cert",
                Orchestrator "ca-cert",
                Worker "ca-cert",
                Cluster "ca-cert"
            ]
            redact No;
    }
}

impl ClientSettings {
    /// The certificate authority of `ca_cert` for the HTTP clients, if set: its first
    /// certificate (read as [`ClientSettings::ca_certificates`] reads the file).
    ///
    /// Errors: [`ConfigError::Invalid`] when the file cannot be read or holds no certificate.
    pub fn root_certificate(&self) -> Result<Option<distriqueue_client::Certificate>, ConfigError> {
        let Some(first) = self.ca_certificates()?.into_iter().next() else {
            return Ok(None);
        };
        distriqueue_client::Certificate::from_der(&first)
            .map(Some)
            .map_err(|error| ca_cert_invalid(distriqueue_util::error_chain(&error)))
    }

    /// The certificates of `ca_cert` (empty when unset), for `amqps://`.
    ///
    /// Errors: [`ConfigError::Invalid`] when the file cannot be read or holds no certificate.
    pub fn ca_certificates(
        &self,
    ) -> Result<Vec<distriqueue_broker::CertificateDer<'static>>, ConfigError> {
        let Some(path) = &self.ca_cert else {
            return Ok(Vec::new());
        };
        distriqueue_util::serve::certificates_from_pem_file(path)
            .map_err(|error| ca_cert_invalid(error.to_string()))
    }
}

/// `client.ca_cert` is unusable, for `problem`.
fn ca_cert_invalid(problem: String) -> ConfigError {
    ConfigError::Invalid {
        key: "client.ca_cert".to_string(),
        problem,
    }
}

/// The largest request body a gateway may be set to take: whatever it takes becomes one log
/// entry, which must fit a peer request.
const MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;

/// A role a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The REST API, SSE and the read model.
    Gateway,
    /// The lifecycle owner.
    Orchestrator,
    /// Job slots running handlers.
    Worker,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Gateway, Role::Orchestrator, Role::Worker];

    /// The role's name (`gateway`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Orchestrator => "orchestrator",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromText for Role {
    const KIND: &'static str = "a role: gateway, orchestrator or worker";

    fn from_text(text: &str) -> Result<Role, String> {
        let text = text.trim();
        Role::ALL
            .into_iter()
            .find(|role| role.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("{text:?} is not a role: gateway, orchestrator or worker"))
    }
}

/// Backoff jitter as the settings spell it: `full` or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryJitter {
    /// A uniform draw from 0 to the backoff.
    Full,
    /// The backoff exactly.
    None,
}

impl From<Jitter> for RetryJitter {
    fn from(jitter: Jitter) -> RetryJitter {
        match jitter {
            Jitter::Full => RetryJitter::Full,
            Jitter::None => RetryJitter::None,
        }
    }
}

impl From<RetryJitter> for Jitter {
    fn from(jitter: RetryJitter) -> Jitter {
        match jitter {
            RetryJitter::Full => Jitter::Full,
            RetryJitter::None => Jitter::None,
        }
    }
}

impl FromText for RetryJitter {
    const KIND: &'static str = "full or none";

    fn from_text(text: &str) -> Result<RetryJitter, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(RetryJitter::Full),
            "none" => Ok(RetryJitter::None),
            _ => Err(format!("{text:?} is not full or none")),
        }
    }
}

/// One member of `orchestrator.peers`: a node id and its base URL, written `ID=URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node's id.
    pub id: u64,
    /// Its base URL (`http://10.0.0.2:8081`), without a trailing slash.
    pub url: String,
}

impl FromStr for Peer {
    type Err = String;

    fn from_str(text: &str) -> Result<Peer, String> {
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
        Ok(Peer {
            id,
            url: url.to_string(),
        })
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.id, self.url)
    }
}

impl Serialize for Peer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Peer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Peer, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromText for Peer {
    const KIND: &'static str = "ID=URL";

    fn from_text(text: &str) -> Result<Peer, String> {
        text.parse()
    }
}

/// The default RabbitMQ URL of a process that does not run every role.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl Config {
    /// True when this process runs `role`.
    pub fn runs(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The RabbitMQ URL to use, or `None` for the in-process broker: only a process running
    /// every role without `amqp` set carries messages in process.
    pub fn amqp_url(&self) -> Option<String> {
        match &self.amqp {
            Some(url) => Some(url.clone()),
            None if Role::ALL.iter().all(|role| self.runs(*role)) => None,
            None => Some(DEFAULT_AMQP_URL.to_string()),
        }
    }

    /// The read model's URL: `gateway.database`, or the SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        self.gateway
            .database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("readmodel.db").display()))
    }

    /// The orchestrator's settings as its crate takes them; its data lives in
    /// `<data_dir>/orchestrator`.
    pub fn orchestrator_config(&self) -> OrchestratorConfig {
        let settings = &self.orchestrator;
        OrchestratorConfig {
            addr: settings.addr,
            data_dir: self.data_dir.join("orchestrator"),
            node_id: settings.node_id,
            max_queued: Some(settings.max_queued_jobs),
            max_queued_bytes: Some(settings.max_queued_bytes),
            retry_policy: RetryPolicy {
                base_ms: settings.retry_backoff_base_ms,
                max_ms: settings.retry_backoff_max_ms,
                jitter: settings.retry_jitter.into(),
            },
            heartbeat_timeout: self.heartbeat_timeout(),
            snapshot_every: settings.snapshot_every,
            dispatch_timeout: Duration::from_secs(settings.dispatch_timeout),
            peers: settings
                .peers
                .iter()
                .map(|peer| (peer.id, peer.url.clone()))
                .collect::<BTreeMap<_, _>>(),
            peer_addr: settings.peer_addr,
            cluster_secret: settings.cluster_secret.clone(),
            api_url: settings.api_url.clone(),
            ..OrchestratorConfig::default()
        }
    }

    /// The gateway's settings as its crate takes them.
    pub fn gateway_config(&self) -> GatewayConfig {
        let settings = &self.gateway;
        GatewayConfig {
            addr: settings.addr,
            body_limit_bytes: settings.max_body_bytes,
            max_batch_jobs: settings.max_batch_jobs,
            batch_body_limit_bytes: settings.max_batch_body_bytes,
            sse_keep_alive: Duration::from_secs(settings.sse_keep_alive),
            reconcile_every: Duration::from_secs(settings.reconcile_every),
            retention: settings.retention.non_zero(),
            prometheus: None,
            api_keys: ApiKeys::default(),
            tls: None,
        }
    }

    /// The API keys the servers accept: `security.api_keys` and the lines of
    /// `security.api_key_file` (`KEY` or `KEY role role`; `#` starts a comment), with
    /// `security.public_reads`.
    ///
    /// Errors: [`ConfigError::Invalid`] when the file cannot be read or a line is not a key.
    pub fn api_keys(&self) -> Result<ApiKeys, ConfigError> {
        let mut specs = self.security.api_keys.clone();
        if let Some(path) = &self.security.api_key_file {
            let invalid = |problem: String| ConfigError::Invalid {
                key: "security.api_key_file".to_string(),
                problem,
            };
            let text = std::fs::read_to_string(path)
                .map_err(|error| invalid(format!("cannot read {}: {error}", path.display())))?;
            for (number, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or_default().trim();
                if line.is_empty() {
                    continue;
                }
                let mut words = line.split_whitespace();
                let key = words.next().unwrap_or_default();
                let roles: Vec<&str> = words.collect();
                let text = match roles.is_empty() {
                    true => key.to_string(),
                    false => format!("{key}:{}", roles.join("+")),
                };
                let spec = KeySpec::parse(&text).map_err(|problem| {
                    invalid(format!("{} line {}: {problem}", path.display(), number + 1))
                })?;
                specs.push(spec);
            }
        }
        Ok(ApiKeys::new(&specs, self.security.public_reads))
    }

    /// The servers' TLS set-up from `security.tls_cert` and `security.tls_key`; `None` without
    /// them.
    ///
    /// Errors: [`ConfigError::Invalid`] when only one is set, or a file cannot be used.
    pub fn server_tls(&self) -> Result<Option<ServerTls>, ConfigError> {
        match (&self.security.tls_cert, &self.security.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                ServerTls::from_pem_files(cert, key)
                    .map(Some)
                    .map_err(|error| ConfigError::Invalid {
                        key: "security.tls_cert".to_string(),
                        problem: distriqueue_util::error_chain(&error),
                    })
            }
            (Some(_), None) | (None, Some(_)) => Err(ConfigError::Invalid {
                key: "security.tls_key".to_string(),
                problem: "give both --tls-cert and --tls-key, or neither".to_string(),
            }),
        }
    }

    /// The heartbeat timeout the orchestrator enforces and the workers keep to.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.orchestrator.heartbeat_timeout)
    }

    /// Job slots of an in-process worker: `worker.concurrency`, or 4 per CPU.
    pub fn concurrency(&self) -> usize {
        self.worker
            .concurrency
            .unwrap_or_else(|| 4 * std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// Checks what the types alone cannot: at least one role, durations and sizes within their
    /// bounds (at least 1; at most a day for most timeouts, a week for the dispatch timeout
    /// and the backoff cap, 32 MiB for bodies, 10,000 job slots and jobs in a batch), URLs of
    /// the right schemes.
    ///
    /// Errors: [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                problem,
            })
        };
        if self.roles.is_empty() {
            return invalid("roles", "name at least one role".into());
        }
        // Bounds keep every duration within what timers and intervals can take.
        const DAY: u64 = 86_400;
        for (key, value, max) in [
            (
                "orchestrator.heartbeat_timeout",
                self.orchestrator.heartbeat_timeout,
                DAY,
            ),
            (
                "orchestrator.dispatch_timeout",
                self.orchestrator.dispatch_timeout,
                7 * DAY,
            ),
            (
                "orchestrator.snapshot_every",
                self.orchestrator.snapshot_every,
                u64::MAX,
            ),
            (
                "orchestrator.retry_backoff_max_ms",
                self.orchestrator.retry_backoff_max_ms,
                7 * DAY * 1000,
            ),
            ("gateway.reconcile_every", self.gateway.reconcile_every, DAY),
            ("gateway.sse_keep_alive", self.gateway.sse_keep_alive, 3_600),
            // A body becomes one log entry, which must fit a peer request (64 MiB).
            (
                "gateway.max_body_bytes",
                self.gateway.max_body_bytes as u64,
                MAX_BODY_BYTES,
            ),
            (
                "gateway.max_batch_body_bytes",
                self.gateway.max_batch_body_bytes as u64,
                MAX_BODY_BYTES,
            ),
            (
                "gateway.max_batch_jobs",
                self.gateway.max_batch_jobs as u64,
                10_000,
            ),
            ("worker.shutdown_grace", self.worker.shutdown_grace, DAY),
            (
                "worker.concurrency",
                self.worker.concurrency.unwrap_or(1) as u64,
                10_000,
            ),
        ] {
            if value == 0 || value > max {
                return invalid(key, format!("{value} is not between 1 and {max}"));
            }
        }
        if self.orchestrator.retry_backoff_base_ms > self.orchestrator.retry_backoff_max_ms {
            return invalid(
                "orchestrator.retry_backoff_base_ms",
                "must not be above retry_backoff_max_ms".into(),
            );
        }
        if let Some(url) = &self.amqp {
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return invalid("amqp", format!("{} is not an amqp:// URL", redact_url(url)));
            }
        }
        if let Some(url) = &self.gateway.database {
            let known = ["postgres://", "postgresql://", "sqlite:"];
            if !known.iter().any(|scheme| url.starts_with(scheme)) {
                return invalid(
                    "gateway.database",
                    format!(
                        "{} is neither postgres://... nor sqlite://...",
                        redact_url(url)
                    ),
                );
            }
        }
        if self.client.orchestrator.is_empty() {
            return invalid("client.orchestrator", "name at least one URL".into());
        }
        if let Some(key) = &self.client.api_key {
            if let Err(problem) = check_key(key) {
                return invalid("client.api_key", problem);
            }
        }
        for url in self.client.orchestrator.iter().chain([&self.client.server]) {
            if !(url.starts_with("http://") || url.starts_with("https://") || !url.contains("://"))
            {
                return invalid(
                    "client",
                    format!("{} is not an http:// URL", redact_url(url)),
                );
            }
        }
        Ok(())
    }
}
