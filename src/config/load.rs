//! The layers (figment): defaults, the TOML file, environment variables, flags, and the roles
//! a subcommand fixes, each later one winning. The environment comes in as a map
//! ([`Sources::env`]), so tests never touch the process environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::setting::{Cmd, Setting};
use super::{Config, Role, SETTINGS};

/// Where a configuration comes from.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    /// The subcommand being run (it decides which flags exist, which roles run, and whether the
    /// original workers' variables count).
    pub cmd: Cmd,
    /// `--config FILE`; without it `DQ_CONFIG` from `env` names the file; without both there is
    /// no file.
    pub file: Option<PathBuf>,
    /// The environment, as a map.
    pub env: &'a BTreeMap<String, String>,
    /// The setting flags given, as `(setting, flag, text)`.
    pub flags: &'a [(&'static Setting, &'static str, String)],
}

/// A loaded configuration, with the layers it came from (for `distriqueue config`).
#[derive(Debug)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// The merged layers: [`Figment::find_metadata`] says where each value came from.
    pub figment: Figment,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` or `DQ_CONFIG` names a file that cannot be read.
    #[error("cannot read the configuration file {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// An environment variable's value does not fit its setting.
    #[error("environment variable {var}: {problem}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with its value.
        problem: String,
    },
    /// The layers do not make a configuration: an unknown key, or a value of the wrong type;
    /// the message names the key and the layer (the file, a variable, a flag).
    #[error(transparent)]
    Layers(#[from] Box<figment::Error>),
    /// A value breaks a rule the types cannot express.
    #[error("{key}: {problem}")]
    Invalid {
        /// The setting (`orchestrator.heartbeat_timeout`).
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// Builds the configuration from its layers and checks it ([`Config::validate`]).
///
/// Errors: see [`ConfigError`].
pub fn load(sources: &Sources<'_>) -> Result<Loaded, ConfigError> {
    let mut figment = Figment::from(Layer::named("default", Config::default()));
    let file = sources
        .file
        .clone()
        .or_else(|| non_blank(sources.env, "DQ_CONFIG").map(PathBuf::from));
    if let Some(path) = &file {
        // figment reads a missing file as empty; a file asked for must exist.
        std::fs::metadata(path).map_err(|source| ConfigError::File {
            path: path.clone(),
            source,
        })?;
        figment = figment.merge(Layer::file(path));
    }
    if sources.cmd == Cmd::Worker {
        for (name, dict) in original_worker_variables(sources.env) {
            figment = figment.merge(Layer::dict(name, dict));
        }
    }
    // A variable counts for the subcommands that take its setting (those with a flag for it):
    // a stray DQ_PEERS does not make `serve` a cluster node, nor DQ_HEARTBEAT_TIMEOUT=0 stop
    // `submit`.
    for setting in SETTINGS
        .iter()
        .filter(|setting| setting.flag(sources.cmd).is_some())
    {
        for var in setting.env.iter().rev() {
            if let Some(text) = non_blank(sources.env, var) {
                let value = (setting.parse)(&text).map_err(|problem| ConfigError::Env {
                    var: (*var).to_string(),
                    problem,
                })?;
                figment = figment.merge(Layer::value(format!("env {var}"), setting, value));
            }
        }
    }
    for (setting, flag, text) in sources.flags {
        // clap checked the text already; a second look costs nothing and keeps one path.
        let value = (setting.parse)(text).map_err(|problem| ConfigError::Invalid {
            key: setting.path.to_string(),
            problem,
        })?;
        figment = figment.merge(Layer::value(format!("flag --{flag}"), setting, value));
    }
    let roles: Option<Vec<Role>> = match sources.cmd {
        Cmd::Serve => Some(Role::ALL.to_vec()),
        Cmd::Gateway => Some(vec![Role::Gateway]),
        Cmd::Orchestrator => Some(vec![Role::Orchestrator]),
        Cmd::Worker => Some(vec![Role::Worker]),
        Cmd::Run | Cmd::Client | Cmd::Cluster => None,
    };
    if let Some(roles) = roles {
        let setting = SETTINGS
            .iter()
            .find(|setting| setting.path == "roles")
            .ok_or_else(|| ConfigError::Invalid {
                key: "roles".into(),
                problem: "not declared".into(),
            })?;
        let value = Value::serialize(&roles).map_err(Box::new)?;
        let name = format!("subcommand {}", sources.cmd.name());
        figment = figment.merge(Layer::value(name, setting, value));
    }
    let mut config: Config = figment.extract().map_err(Box::new)?;
    config.roles.sort();
    config.roles.dedup();
    config.validate()?;
    Ok(Loaded {
        config,
        figment,
        file,
    })
}

/// An environment variable, when set and not blank.
fn non_blank(env: &BTreeMap<String, String>, name: &str) -> Option<String> {
    env.get(name)
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// The original workers' variables (CONTRACT.md "Workers"), read by `distriqueue worker` below
/// the `DQ_*` ones: `RABBITMQ_HOST`, `RABBITMQ_PORT`, `RABBITMQ_USERNAME`, `RABBITMQ_PASSWORD`
/// (an AMQP URL, defaults 127.0.0.1, 5672, guest, guest), `ORCHESTRATOR_URL` (else the
/// orchestrator of `STATUS_UPDATE_URL`), `WORKER_ID` and `WORKER_CAPACITY`. Each comes as its
/// own layer, named after its variables.
fn original_worker_variables(env: &BTreeMap<String, String>) -> Vec<(String, Dict)> {
    let mut layers = Vec::new();
    let rabbit = [
        "RABBITMQ_HOST",
        "RABBITMQ_PORT",
        "RABBITMQ_USERNAME",
        "RABBITMQ_PASSWORD",
    ];
    if rabbit.iter().any(|var| non_blank(env, var).is_some()) {
        let part = |var: &str, default: &str| non_blank(env, var).unwrap_or(default.into());
        let url = format!(
            "amqp://{}:{}@{}:{}/%2f",
            part("RABBITMQ_USERNAME", "guest"),
            part("RABBITMQ_PASSWORD", "guest"),
            part("RABBITMQ_HOST", "127.0.0.1"),
            part("RABBITMQ_PORT", "5672"),
        );
        layers.push((
            "env RABBITMQ_*".to_string(),
            nested("", "amqp", Value::from(url)),
        ));
    }
    let orchestrator = non_blank(env, "ORCHESTRATOR_URL")
        .map(|url| ("env ORCHESTRATOR_URL", url))
        .or_else(|| {
            non_blank(env, "STATUS_UPDATE_URL").map(|url| {
                let base = url
                    .trim_end_matches('/')
                    .trim_end_matches("/api/jobs/status")
                    .to_string();
                ("env STATUS_UPDATE_URL", base)
            })
        });
    if let Some((name, url)) = orchestrator {
        layers.push((
            name.to_string(),
            nested(
                "client",
                "orchestrator",
                Value::from(vec![Value::from(url)]),
            ),
        ));
    }
    if let Some(id) = non_blank(env, "WORKER_ID") {
        layers.push((
            "env WORKER_ID".to_string(),
            nested("worker", "worker_id", Value::from(id)),
        ));
    }
    if let Some(capacity) = non_blank(env, "WORKER_CAPACITY") {
        // A number when it reads as one; figment names the variable when it does not.
        let value = capacity
            .parse::<u64>()
            .map_or_else(|_| Value::from(capacity), Value::from);
        layers.push((
            "env WORKER_CAPACITY".to_string(),
            nested("worker", "concurrency", value),
        ));
    }
    layers
}

/// `{section: {key: value}}`, or `{key: value}` at the top level.
fn nested(section: &str, key: &str, value: Value) -> Dict {
    let mut inner = Dict::new();
    inner.insert(key.to_string(), value);
    if section.is_empty() {
        return inner;
    }
    let mut outer = Dict::new();
    outer.insert(section.to_string(), Value::from(inner));
    outer
}

/// One layer: values under a name that says where they came from (`default`, `file PATH`,
/// `env DQ_NODE_ID`, `flag --node-id`, `subcommand serve`); errors name a key by its path in
/// the file (`gateway.addr`).
struct Layer {
    name: String,
    data: Result<Dict, Box<figment::Error>>,
}

impl Layer {
    fn file(path: &std::path::Path) -> Layer {
        let data = Toml::file_exact(path)
            .data()
            .map(|mut profiles| profiles.remove(&Profile::Default).unwrap_or_default())
            .map_err(Box::new);
        Layer {
            name: format!("file {}", path.display()),
            data,
        }
    }

    fn named(name: &str, config: Config) -> Layer {
        let data = Serialized::defaults(config)
            .data()
            .map(|mut profiles| profiles.remove(&Profile::Default).unwrap_or_default())
            .map_err(Box::new);
        Layer {
            name: name.to_string(),
            data,
        }
    }

    fn value(name: String, setting: &Setting, value: Value) -> Layer {
        Layer::dict(name, nested(setting.section, setting.key, value))
    }

    fn dict(name: String, dict: Dict) -> Layer {
        Layer {
            name,
            data: Ok(dict),
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone()).interpolater(|_profile, keys| keys.join("."))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        match &self.data {
            Ok(dict) => Ok(Map::from([(Profile::Default, dict.clone())])),
            Err(error) => Err((**error).clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches};

    use super::*;
    use crate::config::{render, SettingFlags};

    /// A config file in a temporary directory (kept alive by the returned guard).
    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("distriqueue.toml");
        std::fs::write(&path, text).expect("write the config file");
        (dir, path)
    }

    /// The flags of subcommand `C` as clap parses `args`.
    fn flags<const C: usize>(args: &[&str]) -> SettingFlags<C> {
        let command = SettingFlags::<C>::augment_args(clap::Command::new("distriqueue"));
        let matches = command
            .try_get_matches_from(std::iter::once("distriqueue").chain(args.iter().copied()))
            .expect("the flags parse");
        SettingFlags::<C>::from_arg_matches(&matches).expect("the flags read")
    }

    /// Loads the configuration of subcommand `C` from `file`, `env` and `args`.
    fn load_with<const C: usize>(
        file: Option<&PathBuf>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Loaded, ConfigError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let flags = flags::<C>(args);
        load(&Sources {
            cmd: SettingFlags::<C>::CMD,
            file: file.cloned(),
            env: &env,
            flags: &flags.given,
        })
    }

    fn source(loaded: &Loaded, path: &str) -> String {
        loaded.figment.find_metadata(path).map_or_else(
            || "default".to_string(),
            |metadata| metadata.name.to_string(),
        )
    }

    #[test]
    fn a_file_sets_a_value() {
        let (_dir, path) = file("[orchestrator]\nnode_id = 7\nsnapshot_every = 99\n");
        let loaded = load_with::<3>(Some(&path), &[], &[]).expect("loads");
        assert_eq!(loaded.config.orchestrator.node_id, 7);
        assert_eq!(loaded.config.orchestrator.snapshot_every, 99);
        assert_eq!(
            source(&loaded, "orchestrator.node_id"),
            format!("file {}", path.display())
        );
        assert_eq!(source(&loaded, "orchestrator.heartbeat_timeout"), "default");
    }

    #[test]
    fn the_environment_overrides_the_file_and_dq_config_names_it() {
        let (_dir, path) = file("[orchestrator]\nnode_id = 7\nsnapshot_every = 99\n");
        let config_path = path.display().to_string();
        let env = [("DQ_CONFIG", config_path.as_str()), ("DQ_NODE_ID", "8")];
        let loaded = load_with::<3>(None, &env, &[]).expect("loads");
        assert_eq!(loaded.config.orchestrator.node_id, 8);
        assert_eq!(loaded.config.orchestrator.snapshot_every, 99);
        assert_eq!(source(&loaded, "orchestrator.node_id"), "env DQ_NODE_ID");
    }

    #[test]
    fn a_flag_overrides_the_file_and_the_environment() {
        let (_dir, path) = file("[orchestrator]\nnode_id = 7\n");
        let loaded = load_with::<3>(Some(&path), &[("DQ_NODE_ID", "8")], &["--node-id", "9"])
            .expect("loads");
        assert_eq!(loaded.config.orchestrator.node_id, 9);
        assert_eq!(source(&loaded, "orchestrator.node_id"), "flag --node-id");
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_name_and_file() {
        let (_dir, path) = file("[gateway]\nmax_body = 5\n");
        let error = load_with::<0>(Some(&path), &[], &[]).expect_err("unknown key");
        let message = error.to_string();
        assert!(message.contains("gateway.max_body"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        let (_dir, path) = file("colour = \"blue\"\n");
        let message = load_with::<0>(Some(&path), &[], &[])
            .expect_err("unknown top-level key")
            .to_string();
        assert!(message.contains("colour"), "{message}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused_with_its_key() {
        let (_dir, path) = file("[orchestrator]\nnode_id = \"three\"\n");
        let message = load_with::<3>(Some(&path), &[], &[])
            .expect_err("wrong type")
            .to_string();
        assert!(message.contains("orchestrator.node_id"), "{message}");
        let message = load_with::<3>(None, &[("DQ_NODE_ID", "three")], &[])
            .expect_err("wrong type in the environment")
            .to_string();
        assert!(message.contains("DQ_NODE_ID"), "{message}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let missing = PathBuf::from("/nonexistent/distriqueue.toml");
        assert!(matches!(
            load_with::<0>(Some(&missing), &[], &[]),
            Err(ConfigError::File { .. })
        ));
    }

    #[test]
    fn a_variable_counts_only_for_subcommands_that_take_its_setting() {
        let env = [
            ("DQ_PEERS", "2=http://10.0.0.2:8081"),
            ("DQ_HEARTBEAT_TIMEOUT", "0"),
        ];
        let loaded = load_with::<5>(None, &env, &[]).expect("submit ignores both");
        assert!(loaded.config.orchestrator.peers.is_empty());
        let loaded = load_with::<0>(None, &env[..1], &[]).expect("serve ignores DQ_PEERS");
        assert!(loaded.config.orchestrator.peers.is_empty());
        let loaded = load_with::<3>(None, &env[..1], &[]).expect("the orchestrator takes it");
        assert_eq!(loaded.config.orchestrator.peers.len(), 1);
    }

    #[test]
    fn the_worker_reads_the_original_workers_variables_below_dq_ones() {
        let env = [
            ("RABBITMQ_HOST", "rabbit"),
            ("RABBITMQ_PASSWORD", "pw"),
            (
                "STATUS_UPDATE_URL",
                "http://orchestrator:8081/api/jobs/status",
            ),
            ("WORKER_ID", "legacy-1"),
            ("WORKER_CAPACITY", "3"),
            ("DQ_CONCURRENCY", "5"),
        ];
        let loaded = load_with::<4>(None, &env, &[]).expect("loads");
        let config = &loaded.config;
        assert_eq!(
            config.amqp.as_deref(),
            Some("amqp://guest:pw@rabbit:5672/%2f")
        );
        assert_eq!(config.client.orchestrator, ["http://orchestrator:8081"]);
        assert_eq!(config.worker.worker_id.as_deref(), Some("legacy-1"));
        assert_eq!(config.worker.concurrency, Some(5));
        assert_eq!(config.roles, [Role::Worker]);
        // Other subcommands ignore them.
        let loaded = load_with::<0>(None, &env, &[]).expect("loads");
        assert_eq!(loaded.config.amqp, None);
    }

    #[test]
    fn subcommands_fix_their_roles_and_run_takes_them() {
        let loaded = load_with::<3>(None, &[("DQ_ROLES", "gateway")], &[]).expect("loads");
        assert_eq!(loaded.config.roles, [Role::Orchestrator]);
        let loaded =
            load_with::<1>(None, &[], &["--roles", "orchestrator,gateway"]).expect("loads");
        assert_eq!(loaded.config.roles, [Role::Gateway, Role::Orchestrator]);
        assert_eq!(
            loaded.config.amqp_url().as_deref(),
            Some(crate::config::DEFAULT_AMQP_URL)
        );
        let loaded = load_with::<1>(None, &[], &[]).expect("loads");
        assert_eq!(loaded.config.amqp_url(), None, "every role: in process");
    }

    #[test]
    fn the_listing_names_each_source_and_redacts_passwords() {
        let (_dir, path) = file("[gateway]\nmax_body_bytes = 2048\n");
        let loaded = load_with::<0>(
            Some(&path),
            &[("DQ_DATABASE_URL", "postgres://app:hunter2@db:5432/jobs")],
            &[
                "--amqp",
                "amqp://user:s3cret@rabbit:5672/%2f",
                "--gateway-addr",
                "0.0.0.0:1",
            ],
        )
        .expect("loads");
        let listing = render::effective(&loaded);
        assert!(
            !listing.contains("s3cret") && !listing.contains("hunter2"),
            "{listing}"
        );
        for line in [
            "amqp = \"amqp://user:***@rabbit:5672/%2f\"  # flag --amqp".to_string(),
            "addr = \"0.0.0.0:1\"  # flag --gateway-addr".to_string(),
            "database = \"postgres://app:***@db:5432/jobs\"  # env DQ_DATABASE_URL".to_string(),
            format!("max_body_bytes = 2048  # file {}", path.display()),
            "sse_keep_alive = 15  # default".to_string(),
            "roles = [\"gateway\", \"orchestrator\", \"worker\"]  # subcommand serve".to_string(),
        ] {
            assert!(
                listing.lines().any(|shown| shown == line),
                "no {line:?} in\n{listing}"
            );
        }
    }

    #[test]
    fn rules_beyond_the_types_are_checked() {
        let message = load_with::<3>(None, &[], &["--heartbeat-timeout", "0"])
            .expect_err("a zero timeout")
            .to_string();
        assert!(
            message.contains("orchestrator.heartbeat_timeout"),
            "{message}"
        );
        let message = load_with::<2>(None, &[], &["--reconcile-every", "99999999999"])
            .expect_err("an interval no timer takes")
            .to_string();
        assert!(message.contains("gateway.reconcile_every"), "{message}");
        let message = load_with::<2>(None, &[("DQ_DATABASE_URL", "mysql://x")], &[])
            .expect_err("an unknown database")
            .to_string();
        assert!(message.contains("gateway.database"), "{message}");
    }
}
