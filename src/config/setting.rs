//! One setting's declaration ([`Setting`]): its place in the file, its environment variables,
//! its flag on each subcommand, its doc, and how its text (from a flag or a variable) becomes a
//! value ([`FromText`]). The table of every setting ([`super::SETTINGS`]) is made from the
//! declarations in `config/mod.rs`, and every layer, flag, example and listing is made from it.

use std::net::SocketAddr;
use std::path::PathBuf;

use distriqueue_util::auth::KeySpec;
use figment::value::Value;

/// The subcommands that take setting flags (each may take a setting under its own flag name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cmd {
    /// `distriqueue serve` (and no subcommand): every role in one process.
    Serve,
    /// `distriqueue run --roles ...`: any set of roles in one process.
    Run,
    /// `distriqueue gateway`.
    Gateway,
    /// `distriqueue orchestrator`.
    Orchestrator,
    /// `distriqueue worker`.
    Worker,
    /// The client verbs against a gateway (`submit`, `stats`, `get`, `list`, ..., `bench`).
    Client,
    /// `distriqueue cluster ...` against the orchestrators.
    Cluster,
}

impl Cmd {
    /// Every subcommand, in the order of the const generic of `SettingFlags`.
    pub const ALL: [Cmd; 7] = [
        Cmd::Serve,
        Cmd::Run,
        Cmd::Gateway,
        Cmd::Orchestrator,
        Cmd::Worker,
        Cmd::Client,
        Cmd::Cluster,
    ];

    /// The subcommand's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Cmd::Serve => "serve",
            Cmd::Run => "run",
            Cmd::Gateway => "gateway",
            Cmd::Orchestrator => "orchestrator",
            Cmd::Worker => "worker",
            Cmd::Client => "submit|stats|get|list|cancel|retry|attempts|watch|bench",
            Cmd::Cluster => "cluster",
        }
    }
}

/// How `distriqueue config` shows a secret value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redact {
    /// Not a secret.
    No,
    /// A URL (or URLs) whose password is replaced by `***`.
    UrlPassword,
    /// A secret (or secrets) shown as `***`.
    Secret,
}

/// One declared setting.
#[derive(Debug)]
pub struct Setting {
    /// Its section (`gateway`, ...), or `""` for a top-level key.
    pub section: &'static str,
    /// Its key in the section.
    pub key: &'static str,
    /// `section.key` (or `key` at the top level): the figment path and the flag's clap id.
    pub path: &'static str,
    /// Its doc, one line per source line.
    pub doc: &'static str,
    /// Its environment variables, the `DQ_*` one first.
    pub env: &'static [&'static str],
    /// Its flag on each subcommand that takes it.
    pub flags: &'static [(Cmd, &'static str)],
    /// Whether and how it is redacted when shown.
    pub redact: Redact,
    /// True for a list (a flag may repeat; text is comma-separated).
    pub list: bool,
    /// True for a switch: its flag alone means `true` (`--flag=false` says otherwise).
    pub switch: bool,
    /// Reads the setting's text (a flag's or a variable's) as the value figment merges.
    pub parse: fn(&str) -> Result<Value, String>,
    /// The type as `distriqueue config --example` names it.
    pub kind: &'static str,
}

impl Setting {
    /// Its flag on `cmd`, when `cmd` takes it.
    pub fn flag(&self, cmd: Cmd) -> Option<&'static str> {
        self.flags
            .iter()
            .find(|(taken_by, _)| *taken_by == cmd)
            .map(|(_, flag)| *flag)
    }

    /// The doc's first sentence line, for `--help`.
    pub fn summary(&self) -> &'static str {
        self.doc.lines().next().map_or("", str::trim)
    }
}

/// A setting's type: how its text from a flag or an environment variable reads.
pub trait FromText: Sized + serde::Serialize {
    /// What `distriqueue config --example` calls the type.
    const KIND: &'static str;
    /// True for lists.
    const LIST: bool = false;
    /// True for switches (`bool`).
    const SWITCH: bool = false;

    /// Reads `text`; `Err` says what is wrong with it.
    fn from_text(text: &str) -> Result<Self, String>;
}

/// `text` read as a `T` and turned into the value figment merges.
pub fn parse_value<T: FromText>(text: &str) -> Result<Value, String> {
    let value = T::from_text(text)?;
    Value::serialize(&value).map_err(|error| error.to_string())
}

/// [`FromText`] through [`std::str::FromStr`], with the type's name.
macro_rules! from_str_text {
    ($($ty:ty => $kind:literal),* $(,)?) => {
        $(
            impl FromText for $ty {
                const KIND: &'static str = $kind;

                fn from_text(text: &str) -> Result<Self, String> {
                    text.trim()
                        .parse()
                        .map_err(|error| format!("{:?} is not {}: {error}", text, $kind))
                }
            }
        )*
    };
}

from_str_text!(
    u64 => "a whole number",
    usize => "a whole number",
    SocketAddr => "an IP address and port (127.0.0.1:9100)",
);

impl FromText for bool {
    const KIND: &'static str = "true or false";
    const SWITCH: bool = true;

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(true),
            "false" | "no" | "0" | "off" => Ok(false),
            _ => Err(format!("{text:?} is not true or false")),
        }
    }
}

impl FromText for KeySpec {
    const KIND: &'static str = "an API key, KEY or KEY:role+role (roles client, worker, admin)";

    fn from_text(text: &str) -> Result<Self, String> {
        KeySpec::parse(text)
    }
}

impl FromText for String {
    const KIND: &'static str = "text";

    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.trim().to_string())
    }
}

impl FromText for PathBuf {
    const KIND: &'static str = "a path";

    fn from_text(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text.trim()))
    }
}

impl<T: FromText> FromText for Option<T> {
    const KIND: &'static str = T::KIND;
    const LIST: bool = T::LIST;

    /// Blank text means unset.
    fn from_text(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            Ok(None)
        } else {
            T::from_text(text).map(Some)
        }
    }
}

impl<T: FromText> FromText for Vec<T> {
    const KIND: &'static str = T::KIND;
    const LIST: bool = true;

    /// Comma-separated; blank items are skipped.
    fn from_text(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(T::from_text)
            .collect()
    }
}

/// A span of time: whole seconds (`2592000`) or humantime's units (`30d`, `12h`, `90s`,
/// `1h 30m`); `0` for none. Written back in humantime's form (`30days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub std::time::Duration);

impl Span {
    /// `None` for a zero span (the setting is off), the duration otherwise.
    pub fn non_zero(self) -> Option<std::time::Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl FromText for Span {
    const KIND: &'static str = "a span of time (30d, 12h, 90s, or whole seconds; 0 for none)";

    fn from_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(seconds) = text.parse::<u64>() {
            return Ok(Span(std::time::Duration::from_secs(seconds)));
        }
        humantime::parse_duration(text)
            .map(Span)
            .map_err(|error| format!("{text:?} is not {}: {error}", Self::KIND))
    }
}

impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    /// A string in any form [`FromText`] reads, or whole seconds as a number.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            Seconds(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Seconds(seconds) => Ok(Span(std::time::Duration::from_secs(seconds))),
            Written::Text(text) => Span::from_text(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// `url` with its password (if any) replaced by `***`, for messages and listings.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("sqlite://./data/readmodel.db"),
            "sqlite://./data/readmodel.db"
        );
        assert_eq!(
            redact_url("postgres://root@127.0.0.1:5432/test"),
            "postgres://root@127.0.0.1:5432/test"
        );
    }

    #[test]
    fn spans_read_seconds_and_units_and_write_units() {
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(Span::from_text("30d"), Ok(Span(day * 30)));
        assert_eq!(Span::from_text(" 2592000 "), Ok(Span(day * 30)));
        assert_eq!(
            Span::from_text("1h 30m").map(|span| span.0.as_secs()),
            Ok(5_400)
        );
        assert_eq!(Span::from_text("0").map(Span::non_zero), Ok(None));
        let error = Span::from_text("soon").expect_err("soon is not a span");
        assert!(error.contains("is not a span of time"), "{error}");
        let written = serde_json::to_string(&Span(day * 30)).expect("serialize");
        assert_eq!(written, "\"30days\"");
        let read: Span = serde_json::from_str(&written).expect("deserialize");
        assert_eq!(read, Span(day * 30));
        assert_eq!(
            serde_json::from_str::<Span>("90").ok(),
            Some(Span(std::time::Duration::from_secs(90)))
        );
    }

    #[test]
    fn lists_and_options_read_from_text() {
        assert_eq!(Vec::<u64>::from_text("1, 2,,3"), Ok(vec![1, 2, 3]));
        assert_eq!(Option::<u64>::from_text(" "), Ok(None));
        let error = u64::from_text("ten").expect_err("ten is not a number");
        assert!(error.contains("is not a whole number"), "{error}");
    }
}
