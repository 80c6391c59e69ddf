//! A distributed DistriQueue for tests: an orchestrator, a gateway and workers as separate
//! `distriqueue` processes over the test's own RabbitMQ vhost and its own PostgreSQL database
//! (SQLite when `DQ_TEST_DATABASE_URL` is unset). Every process is killed when the cluster is
//! dropped, also when the test fails; the vhost and the database are removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use distriqueue_testkit::{TestDatabase, TestVhost};

/// A free loopback port (bound, then released), so a role can restart on the same address.
/// Never the same port twice in one test binary: the kernel may hand a released port out again
/// at once, and two roles told the same port make one of them fail to listen.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// One `distriqueue` process; killed when dropped.
pub struct Proc {
    child: Option<Child>,
    /// Its stderr (the log).
    pub log: PathBuf,
    /// The value of its ready line (`name=VALUE`).
    pub ready: String,
}

impl Proc {
    /// Starts `distriqueue <args>` and waits for its ready line `distriqueue ...: key=VALUE`.
    pub fn start(args: &[String], log: PathBuf, key: &str) -> Proc {
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_distriqueue"));
        command
            .args(args)
            .env("DQ_LOG", "info,lapin=warn,openraft=warn,sqlx=warn")
            .env_remove("RABBITMQ_HOST")
            .stderr(Stdio::from(log_file));
        let (mut child, line) = super::spawn_until_ready(command);
        let prefix = format!("{key}=");
        let Some(ready) = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&prefix))
        else {
            let _ = child.kill();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{args:?} did not start: {line:?}\n{log}");
        };
        Proc {
            ready: ready.to_string(),
            child: Some(child),
            log,
        }
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal}");
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes.
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        self.child
            .take()
            .expect("running")
            .wait()
            .expect("wait for exit")
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process cannot die until it is continued.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// Orchestrator nodes, a gateway and workers, each its own process.
pub struct Cluster {
    pub dir: PathBuf,
    /// Node `i + 1` of the orchestrator cluster is `orchestrators[i]`.
    pub orchestrators: Vec<Proc>,
    pub gateway: Proc,
    pub workers: Vec<Proc>,
    orchestrator_ports: Vec<u16>,
    /// Node `i + 1`'s peer port (its `--peer-addr`), in a cluster of more than one node.
    peer_ports: Vec<u16>,
    /// The nodes the cluster was started with (`--peers`); later ones join with `add-node`.
    initial_members: usize,
    /// More flags for every orchestrator node.
    orchestrator_flags: Vec<String>,
    /// Partitionable clusters: node `i + 1` listens on 127.0.0.`i + 2`, and its peers reach it
    /// through `proxies[i]`.
    pub proxies: Vec<super::proxy::Proxy>,
    gateway_port: u16,
    heartbeat_timeout_s: u64,
    /// See [`Spec::api_keys`].
    api_keys: bool,
    // Dropped last: the processes first.
    pub database: Option<TestDatabase>,
    pub vhost: TestVhost,
}

/// What a test cluster is made of.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Orchestrator nodes in one Raft cluster (more than one: each gets `--peers`, and the
    /// gateway and workers get every node's URL).
    pub nodes: usize,
    pub workers: usize,
    /// Job slots per worker.
    pub concurrency: usize,
    pub heartbeat_timeout_s: u64,
    /// Raft traffic through a proxy per node, so the test can cut nodes off
    /// ([`Cluster::isolate`]); each node listens on its own loopback address.
    pub partitionable: bool,
    /// More flags for every orchestrator node.
    pub orchestrator_flags: Vec<String>,
    /// API keys on: the orchestrators and the gateway take [`CLIENT_KEY`], [`WORKER_KEY`] and
    /// [`ADMIN_KEY`], the gateway calls the orchestrators with the client key and the workers
    /// with the worker key ([`Cluster::http`] is a client that sends the client key).
    pub api_keys: bool,
}

/// The cluster secret of a test cluster of more than one node.
pub const CLUSTER_SECRET: &str = "the-test-cluster-secret";

/// The `client` key of a cluster with API keys.
pub const CLIENT_KEY: &str = "cluster-client-key-0123456789";
/// The `worker` key of a cluster with API keys.
pub const WORKER_KEY: &str = "cluster-worker-key-0123456789";
/// The `admin` key of a cluster with API keys.
pub const ADMIN_KEY: &str = "cluster-admin-key-0123456789";

impl Default for Spec {
    fn default() -> Spec {
        Spec {
            nodes: 1,
            workers: 2,
            concurrency: 4,
            heartbeat_timeout_s: 10,
            partitionable: false,
            orchestrator_flags: Vec::new(),
            api_keys: false,
        }
    }
}

impl Cluster {
    /// Starts the cluster in `dir` with `n_workers` workers of `concurrency` slots each, a
    /// heartbeat timeout of `heartbeat_timeout_s` seconds; `None` when RabbitMQ is not
    /// configured (the test skips).
    pub fn start(
        test: &str,
        dir: &Path,
        n_workers: usize,
        concurrency: usize,
        heartbeat_timeout_s: u64,
    ) -> Option<Cluster> {
        let spec = Spec {
            workers: n_workers,
            concurrency,
            heartbeat_timeout_s,
            ..Spec::default()
        };
        Cluster::start_spec(test, dir, spec)
    }

    /// Starts the cluster `spec` describes in `dir`; `None` when RabbitMQ is not configured
    /// (the test skips). Must be called within a Tokio runtime when `spec.partitionable`.
    pub fn start_spec(test: &str, dir: &Path, spec: Spec) -> Option<Cluster> {
        let Spec {
            nodes: n_nodes,
            workers: n_workers,
            concurrency,
            heartbeat_timeout_s,
            partitionable,
            orchestrator_flags,
            api_keys,
        } = spec;
        let vhost = TestVhost::create(test)?;
        let database = TestDatabase::create(test);
        let not_started = || Proc {
            child: None,
            log: PathBuf::new(),
            ready: String::new(),
        };
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            orchestrators: Vec::new(),
            gateway: not_started(),
            workers: Vec::new(),
            orchestrator_ports: (0..n_nodes).map(|_| free_port()).collect(),
            peer_ports: (0..n_nodes).map(|_| free_port()).collect(),
            proxies: Vec::new(),
            initial_members: n_nodes,
            orchestrator_flags,
            gateway_port: free_port(),
            heartbeat_timeout_s,
            api_keys,
            database,
            vhost,
        };
        if partitionable {
            cluster.proxies = (0..n_nodes)
                .map(|node| {
                    let target =
                        std::net::SocketAddr::new(cluster_ip(node), cluster.peer_ports[node]);
                    super::proxy::Proxy::start(target)
                })
                .collect();
        }
        for node in 0..n_nodes {
            let started = cluster.start_orchestrator(node);
            cluster.orchestrators.push(started);
        }
        cluster.gateway = cluster.start_gateway();
        for n in 0..n_workers {
            let worker = cluster.start_worker(&format!("w{n}"), concurrency);
            cluster.workers.push(worker);
        }
        Some(cluster)
    }

    /// Cuts node `index + 1` off from every other node, both ways.
    pub fn isolate(&self, index: usize) {
        let others: Vec<std::net::IpAddr> = (0..self.orchestrator_ports.len())
            .filter(|other| *other != index)
            .map(|other| self.node_ip(other))
            .collect();
        self.proxies[index].block(&others);
        for (other, proxy) in self.proxies.iter().enumerate() {
            if other != index {
                proxy.block(&[self.node_ip(index)]);
            }
        }
    }

    /// Starts one more orchestrator node, which waits to be added (`cluster add-node`): its
    /// `--peers` are the initial members, without itself. Returns its index.
    pub fn start_joining_node(&mut self) -> usize {
        self.orchestrator_ports.push(free_port());
        self.peer_ports.push(free_port());
        let index = self.orchestrator_ports.len() - 1;
        let node = self.start_orchestrator(index);
        self.orchestrators.push(node);
        index
    }

    /// Ends every partition.
    pub fn heal(&self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
    }

    /// The loopback address node `index + 1` listens on: 127.0.0.1, or 127.0.0.`index + 2` in
    /// a partitionable cluster.
    fn node_ip(&self, index: usize) -> std::net::IpAddr {
        if self.proxies.is_empty() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            cluster_ip(index)
        }
    }

    /// The gateway's base URL.
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    /// The first orchestrator node's base URL.
    pub fn orchestrator_url(&self) -> String {
        self.node_url(0)
    }

    /// The base URL of orchestrator node `index + 1` (direct, not through its proxy).
    pub fn node_url(&self, index: usize) -> String {
        format!(
            "http://{}:{}",
            self.node_ip(index),
            self.orchestrator_ports[index]
        )
    }

    /// The peer URL the other nodes reach node `index + 1` at: its proxy, if any, else its peer
    /// port.
    pub fn peer_url(&self, index: usize) -> String {
        match self.proxies.get(index) {
            Some(proxy) => format!("http://{}", proxy.addr),
            None => format!("http://{}:{}", self.node_ip(index), self.peer_ports[index]),
        }
    }

    /// Every orchestrator node's URL, comma-separated (for `--orchestrator`).
    fn orchestrator_urls(&self) -> String {
        (0..self.orchestrator_ports.len())
            .map(|index| self.node_url(index))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The AMQP URL of the test's vhost.
    pub fn amqp_url(&self) -> String {
        self.vhost.url().to_string()
    }

    /// (Re)starts orchestrator node `index + 1` on its port and data directory.
    pub fn start_orchestrator(&self, index: usize) -> Proc {
        let mut args = vec![
            "orchestrator".to_string(),
            "--addr".into(),
            format!("{}:{}", self.node_ip(index), self.orchestrator_ports[index]),
            "--data-dir".into(),
            self.dir
                .join(format!("orchestrator-{}", index + 1))
                .display()
                .to_string(),
            "--amqp".into(),
            self.amqp_url(),
            "--heartbeat-timeout".into(),
            self.heartbeat_timeout_s.to_string(),
            "--retry-backoff-base-ms".into(),
            "100".into(),
        ];
        if !self
            .orchestrator_flags
            .iter()
            .any(|flag| flag == "--dispatch-timeout")
        {
            args.extend(["--dispatch-timeout".into(), "10".into()]);
        }
        if self.orchestrator_ports.len() > 1 {
            let peers: Vec<String> = (0..self.initial_members)
                .map(|node| format!("{}={}", node + 1, self.peer_url(node)))
                .collect();
            args.extend([
                "--node-id".to_string(),
                (index + 1).to_string(),
                "--peers".into(),
                peers.join(","),
                "--peer-addr".into(),
                format!("{}:{}", self.node_ip(index), self.peer_ports[index]),
                "--cluster-secret".into(),
                CLUSTER_SECRET.into(),
            ]);
        }
        args.extend(self.orchestrator_flags.iter().cloned());
        args.extend(self.key_flags(None));
        let log = self.next_log(&format!("orchestrator-{}", index + 1));
        Proc::start(&args, log, "orchestrator")
    }

    /// (Re)starts the gateway on its port.
    pub fn start_gateway(&self) -> Proc {
        self.start_gateway_on(self.gateway_port)
    }

    /// Starts another gateway on `port`, sharing the read model, the orchestrator and
    /// `status.queue` with the first.
    pub fn start_gateway_on(&self, port: u16) -> Proc {
        let database = match &self.database {
            Some(database) => database.url().to_string(),
            None => format!("sqlite://{}", self.dir.join("readmodel.db").display()),
        };
        let args = vec![
            "gateway".to_string(),
            "--addr".into(),
            format!("127.0.0.1:{port}"),
            "--database".into(),
            database,
            "--amqp".into(),
            self.amqp_url(),
            "--orchestrator".into(),
            self.orchestrator_urls(),
        ];
        let args = [args, self.key_flags(Some(CLIENT_KEY))].concat();
        Proc::start(&args, self.next_log("gateway"), "gateway")
    }

    /// Starts a worker `id` with a ledger at `dir/ledger-<id>.jsonl`.
    pub fn start_worker(&self, id: &str, concurrency: usize) -> Proc {
        let args = vec![
            "worker".to_string(),
            "--amqp".into(),
            self.amqp_url(),
            "--orchestrator".into(),
            self.orchestrator_urls(),
            "--concurrency".into(),
            concurrency.to_string(),
            "--worker-id".into(),
            id.to_string(),
            "--ledger".into(),
            self.ledger(id).display().to_string(),
            "--heartbeat-timeout".into(),
            self.heartbeat_timeout_s.to_string(),
            "--shutdown-grace".into(),
            "10".into(),
        ];
        let args = [args, self.key_flags(Some(WORKER_KEY))].concat();
        Proc::start(&args, self.next_log(&format!("worker-{id}")), "worker")
    }

    /// With API keys: `--api-keys` (every key) and, for a process that calls the orchestrators,
    /// `--api-key` with `own`. Nothing without.
    fn key_flags(&self, own: Option<&str>) -> Vec<String> {
        if !self.api_keys {
            return Vec::new();
        }
        let mut flags = vec![
            "--api-keys".to_string(),
            format!("{CLIENT_KEY}:client,{WORKER_KEY}:worker,{ADMIN_KEY}:admin"),
        ];
        if let Some(key) = own {
            flags.extend(["--api-key".to_string(), key.to_string()]);
        }
        flags
    }

    /// An HTTP client for the test that sends the client key when the cluster has keys.
    pub fn http(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if self.api_keys {
            let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {CLIENT_KEY}"))
                .expect("a header");
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .default_headers(headers)
            .build()
            .expect("client")
    }

    /// The ledger of worker `id`.
    pub fn ledger(&self, id: &str) -> PathBuf {
        self.dir.join(format!("ledger-{id}.jsonl"))
    }

    /// A log file name not used yet for `role` (restarts get their own).
    fn next_log(&self, role: &str) -> PathBuf {
        (0..)
            .map(|n| self.dir.join(format!("{role}-{n}.log")))
            .find(|path| !path.exists())
            .expect("a free log name")
    }

    /// Every ledger line of every worker that ever ran here.
    pub fn ledger_lines(&self) -> Vec<super::LedgerLine> {
        let mut lines = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.starts_with("ledger-") {
                    lines.extend(super::read_ledger(&entry.path()));
                }
            }
        }
        lines
    }
}

/// The loopback address of node `index + 1` of a partitionable cluster.
fn cluster_ip(index: usize) -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, u8::try_from(index + 2).unwrap_or(255)])
}
