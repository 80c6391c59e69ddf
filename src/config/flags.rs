//! The setting flags of each subcommand, made from [`SETTINGS`] for clap: a subcommand takes
//! every setting that names it, under the flag name it gives, with the setting's doc as help.
//! Flags have no defaults and no environment fallback of their own: those are layers of
//! [`super::load`].

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};

use super::setting::{Cmd, Setting};
use super::SETTINGS;

/// The setting flags given to subcommand `Cmd::ALL[C]`, as `(setting, flag, text)`.
#[derive(Debug, Clone, Default)]
pub struct SettingFlags<const C: usize> {
    /// The flags given, in the order of [`SETTINGS`].
    pub given: Vec<(&'static Setting, &'static str, String)>,
}

/// `distriqueue serve`'s setting flags.
pub type ServeFlags = SettingFlags<0>;
/// `distriqueue run`'s setting flags.
pub type RunFlags = SettingFlags<1>;
/// `distriqueue gateway`'s setting flags.
pub type GatewayFlags = SettingFlags<2>;
/// `distriqueue orchestrator`'s setting flags.
pub type OrchestratorFlags = SettingFlags<3>;
/// `distriqueue worker`'s setting flags.
pub type WorkerFlags = SettingFlags<4>;
/// The client verbs' setting flags.
pub type ClientFlags = SettingFlags<5>;
/// `distriqueue cluster`'s setting flags.
pub type ClusterFlags = SettingFlags<6>;

impl<const C: usize> SettingFlags<C> {
    /// The subcommand these flags belong to.
    pub const CMD: Cmd = Cmd::ALL[C];

    /// The settings this subcommand takes, with their flag names.
    fn taken() -> impl Iterator<Item = (&'static Setting, &'static str)> {
        SETTINGS
            .iter()
            .filter_map(|setting| setting.flag(Self::CMD).map(|flag| (setting, flag)))
    }
}

impl<const C: usize> FromArgMatches for SettingFlags<C> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let given = Self::taken()
            .filter_map(|(setting, flag)| {
                let values: Vec<&String> = matches.get_many::<String>(setting.path)?.collect();
                let text = values
                    .iter()
                    .map(|value| value.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                Some((setting, flag, text))
            })
            .collect();
        Ok(SettingFlags { given })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<const C: usize> Args for SettingFlags<C> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Self::taken().fold(cmd, |cmd, (setting, flag)| cmd.arg(arg(setting, flag)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The clap argument of `setting` under `--flag`: its text is checked by the setting's own
/// parser, its help is the setting's doc with its variable and key.
fn arg(setting: &'static Setting, flag: &'static str) -> Arg {
    let check = setting.parse;
    let long_help = format!(
        "{}\n[env: {}] [config: {}]",
        setting
            .doc
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" "),
        setting.env.join(", "),
        setting.path,
    );
    let arg = Arg::new(setting.path)
        .long(flag)
        .value_name(value_name(setting))
        .help(setting.summary().to_string())
        .long_help(long_help)
        .action(if setting.list {
            ArgAction::Append
        } else {
            ArgAction::Set
        })
        .value_parser(move |text: &str| check(text).map(|_| text.to_string()));
    if setting.switch {
        // `--public-reads` alone is true; only `--public-reads=false` takes a value.
        arg.num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
    } else {
        arg
    }
}

/// The placeholder in `--help`: the key in capitals (`--node-id <NODE_ID>`).
fn value_name(setting: &Setting) -> String {
    setting.key.to_ascii_uppercase()
}
