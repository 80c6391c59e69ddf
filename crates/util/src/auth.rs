//! API keys with roles (issue 11; SECURITY.md): which key may call which route. A key is sent
//! as `Authorization: Bearer <key>` or `X-API-Key: <key>`; the servers keep only the SHA-256
//! of each key and compare digests in constant time, every configured key each time.
//!
//! Roles: `client` (submit, read, cancel, retry), `worker` (the worker protocol), `admin`
//! (membership, and everything else). A key with no role has them all. Each route asks for an
//! [`Access`]; [`ApiKeys::check`] says whether a request's key grants it. With no key
//! configured every request is let through: the process then serves loopback addresses only
//! (unless the operator allowed otherwise), which the composition root enforces.

use std::fmt;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use distriqueue_core::api::ErrorBody;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header that may carry a key instead of `Authorization: Bearer`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Shortest key accepted, in characters: a key is a secret, not a password to remember.
pub const MIN_KEY_LEN: usize = 16;

/// Longest key accepted, in characters.
pub const MAX_KEY_LEN: usize = 256;

/// A role a key may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// Submit, read, cancel and retry jobs (a gateway calling the orchestrators uses one).
    Client,
    /// The worker protocol: status reports and heartbeats.
    Worker,
    /// Everything: membership changes, and every route of the other roles.
    Admin,
}

impl KeyRole {
    /// Every role.
    pub const ALL: [KeyRole; 3] = [KeyRole::Client, KeyRole::Worker, KeyRole::Admin];

    /// The role's name (`client`, `worker`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Client => "client",
            KeyRole::Worker => "worker",
            KeyRole::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            KeyRole::Client => 1,
            KeyRole::Worker => 2,
            KeyRole::Admin => 4,
        }
    }
}

/// What a route asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: health checks.
    Public,
    /// Reading jobs, statistics, status, metrics and the API documents: `client` or `admin`
    /// (anyone with `--public-reads`).
    Read,
    /// Changing jobs (submit, cancel, retry, register): `client` or `admin`.
    Client,
    /// The worker protocol: `worker` or `admin`.
    Worker,
    /// Membership changes and anything no other class names: `admin`.
    Admin,
}

impl Access {
    /// The roles any one of which grants this access.
    fn granted_by(self) -> &'static [KeyRole] {
        match self {
            Access::Public => &[],
            Access::Read | Access::Client => &[KeyRole::Client, KeyRole::Admin],
            Access::Worker => &[KeyRole::Worker, KeyRole::Admin],
            Access::Admin => &[KeyRole::Admin],
        }
    }
}

/// A set of roles.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Roles(u8);

impl Roles {
    fn has_any(self, roles: &[KeyRole]) -> bool {
        roles.iter().any(|role| self.0 & role.bit() != 0)
    }

    /// The roles' names, in [`KeyRole::ALL`]'s order.
    fn names(self) -> Vec<&'static str> {
        KeyRole::ALL
            .into_iter()
            .filter(|role| self.has_any(&[*role]))
            .map(KeyRole::as_str)
            .collect()
    }
}

/// One configured key: `KEY` (every role) or `KEY:role+role` (`abcd...:client+worker`).
#[derive(Clone, PartialEq, Eq)]
pub struct KeySpec {
    key: String,
    roles: Roles,
}

impl KeySpec {
    /// Reads `KEY` or `KEY:role[+role...]`. Keys are 16 to 256 characters of letters, digits
    /// and `-._~+/=` (what a header carries unchanged).
    ///
    /// Errors: a short, long or ill-formed key, or an unknown role, said in words.
    pub fn parse(text: &str) -> Result<KeySpec, String> {
        let text = text.trim();
        let (key, roles) = match text.split_once(':') {
            Some((key, roles)) => (key, Some(roles)),
            None => (text, None),
        };
        check_key(key)?;
        let roles = match roles {
            None => Roles(KeyRole::ALL.iter().map(|role| role.bit()).sum()),
            Some(names) => {
                let mut roles = 0;
                for name in names.split('+').map(str::trim) {
                    let role = KeyRole::ALL
                        .into_iter()
                        .find(|role| role.as_str().eq_ignore_ascii_case(name))
                        .ok_or_else(|| {
                            format!("unknown role {name:?}: the roles are client, worker, admin")
                        })?;
                    roles |= role.bit();
                }
                Roles(roles)
            }
        };
        Ok(KeySpec {
            key: key.to_string(),
            roles,
        })
    }

    /// The roles' names, joined by `+`.
    pub fn role_names(&self) -> String {
        self.roles.names().join("+")
    }
}

/// Written as its text (`KEY:role+role`): the configuration's form.
impl serde::Serialize for KeySpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Read from its text (`KEY` or `KEY:role+role`), see [`KeySpec::parse`].
impl<'de> serde::Deserialize<'de> for KeySpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        KeySpec::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The key, never shown.
impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySpec(***:{})", self.role_names())
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key, self.role_names())
    }
}

/// Checks that `key` can be a key (see [`KeySpec::parse`]).
///
/// Errors: what is wrong with it, in words (the key itself is not repeated).
pub fn check_key(key: &str) -> Result<(), String> {
    let len = key.chars().count();
    if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&len) {
        return Err(format!(
            "an API key has {MIN_KEY_LEN} to {MAX_KEY_LEN} characters (this one has {len})"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    if !key.chars().all(allowed) {
        return Err("an API key has only letters, digits and -._~+/=".to_string());
    }
    Ok(())
}

/// The keys a server accepts, and whether reads are open to anyone.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKeys {
    /// SHA-256 of each key, with its roles.
    digests: Arc<Vec<([u8; 32], Roles)>>,
    public_reads: bool,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.digests.len())
            .field("public_reads", &self.public_reads)
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No key, or a key no one configured: 401.
    Unauthenticated,
    /// A key without a role the route asks for: 403.
    Forbidden(Access),
}

impl ApiKeys {
    /// The keys of `specs`; reads open to anyone when `public_reads`.
    pub fn new<'a>(specs: impl IntoIterator<Item = &'a KeySpec>, public_reads: bool) -> ApiKeys {
        ApiKeys {
            digests: Arc::new(
                specs
                    .into_iter()
                    .map(|spec| (digest(&spec.key), spec.roles))
                    .collect(),
            ),
            public_reads,
        }
    }

    /// True when no key is configured (every request is let through).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether the key in `headers` grants `access`.
    ///
    /// Errors: [`Refused`] (401 or 403).
    pub fn check(&self, headers: &HeaderMap, access: Access) -> Result<(), Refused> {
        let open = access == Access::Public
            || self.is_empty()
            || (self.public_reads && access == Access::Read);
        if open {
            return Ok(());
        }
        let roles = self.roles(headers).ok_or(Refused::Unauthenticated)?;
        if roles.has_any(access.granted_by()) {
            Ok(())
        } else {
            Err(Refused::Forbidden(access))
        }
    }

    /// Whether reads are open to anyone (`--public-reads`).
    pub fn public_reads(&self) -> bool {
        self.public_reads
    }

    /// The names of the roles the key in `headers` has (`client`, `worker`, `admin`), empty
    /// for no key or a key no one configured. The dashboard shows what a key allows with it.
    pub fn role_names_of(&self, headers: &HeaderMap) -> Vec<&'static str> {
        self.roles(headers).map(Roles::names).unwrap_or_default()
    }

    /// The roles of the key in `headers`; `None` for no key or an unknown one.
    fn roles(&self, headers: &HeaderMap) -> Option<Roles> {
        let presented = digest(presented_key(headers)?);
        // Every digest is compared, whichever matches: the time taken says nothing of the keys.
        let mut roles = 0u8;
        for (known, known_roles) in self.digests.iter() {
            let equal = known.ct_eq(&presented).unwrap_u8();
            roles |= known_roles.0 & 0u8.wrapping_sub(equal);
        }
        (roles != 0).then_some(Roles(roles))
    }
}

/// The key a request carries: `Authorization: Bearer <key>`, else `X-API-Key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, key) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
        });
    bearer.or_else(|| {
        headers
            .get(API_KEY_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    })
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// What the middleware needs: the keys and the role's map from a route to its [`Access`].
#[derive(Clone)]
pub struct Guard {
    /// The keys.
    pub keys: ApiKeys,
    /// The access a route asks for, by method and route pattern (`None`: no route matched).
    pub access: fn(&Method, Option<&str>) -> Access,
}

/// Middleware (`axum::middleware::from_fn_with_state(guard, require_key)`, layered on the
/// router so the matched route is known): refuses a request whose key does not grant its
/// route's access, with 401 (and `WWW-Authenticate: Bearer`) or 403 in the contract's error
/// shape. Nothing of the request is read before the check.
pub async fn require_key(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string());
    let access = (guard.access)(request.method(), route.as_deref());
    match guard.keys.check(request.headers(), access) {
        Ok(()) => next.run(request).await,
        Err(Refused::Unauthenticated) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(ErrorBody::new(
                "An API key is required: send Authorization: Bearer <key> or X-API-Key: <key>",
            )),
        )
            .into_response(),
        Err(Refused::Forbidden(access)) => {
            let roles: Vec<&str> = access
                .granted_by()
                .iter()
                .map(|role| role.as_str())
                .collect();
            (
                StatusCode::FORBIDDEN,
                Json(ErrorBody::new(format!(
                    "This API key may not do this: it needs the role {}",
                    roles.join(" or ")
                ))),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const CLIENT: &str = "client-key-0123456789";
    const WORKER: &str = "worker-key-0123456789";
    const ALL: &str = "every-role-0123456789";

    fn keys(public_reads: bool) -> ApiKeys {
        let specs: Vec<KeySpec> = [
            format!("{CLIENT}:client"),
            format!("{WORKER}:worker"),
            ALL.to_string(),
        ]
        .iter()
        .map(|text| KeySpec::parse(text).expect("a key"))
        .collect();
        ApiKeys::new(&specs, public_reads)
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {key}")).expect("a header");
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    #[test]
    fn each_access_takes_its_roles() {
        let keys = keys(false);
        let check = |key: &str, access| keys.check(&bearer(key), access);
        assert_eq!(check(CLIENT, Access::Client), Ok(()));
        assert_eq!(check(CLIENT, Access::Read), Ok(()));
        assert_eq!(
            check(CLIENT, Access::Worker),
            Err(Refused::Forbidden(Access::Worker))
        );
        assert_eq!(
            check(CLIENT, Access::Admin),
            Err(Refused::Forbidden(Access::Admin))
        );
        assert_eq!(check(WORKER, Access::Worker), Ok(()));
        assert_eq!(
            check(WORKER, Access::Read),
            Err(Refused::Forbidden(Access::Read))
        );
        for access in [Access::Read, Access::Client, Access::Worker, Access::Admin] {
            assert_eq!(check(ALL, access), Ok(()), "{access:?}");
        }
        assert_eq!(
            check("unknown-key-0123456789", Access::Read),
            Err(Refused::Unauthenticated)
        );
        assert_eq!(
            keys.check(&HeaderMap::new(), Access::Read),
            Err(Refused::Unauthenticated)
        );
        assert_eq!(keys.check(&HeaderMap::new(), Access::Public), Ok(()));
    }

    #[test]
    fn the_key_header_and_public_reads_work() {
        let keys = keys(true);
        let mut headers = HeaderMap::new();
        headers.insert(API_KEY_HEADER, HeaderValue::from_static(WORKER));
        assert_eq!(keys.check(&headers, Access::Worker), Ok(()));
        assert_eq!(keys.check(&HeaderMap::new(), Access::Read), Ok(()));
        assert_eq!(
            keys.check(&HeaderMap::new(), Access::Client),
            Err(Refused::Unauthenticated)
        );
        // No key configured: everything passes.
        assert_eq!(
            ApiKeys::default().check(&HeaderMap::new(), Access::Admin),
            Ok(())
        );
    }

    #[test]
    fn bad_key_specs_are_refused_in_words() {
        assert!(KeySpec::parse("short").is_err());
        assert!(KeySpec::parse("a-long-enough-key-with space").is_err());
        assert!(KeySpec::parse("a-long-enough-key-0123:reader").is_err());
        let spec = KeySpec::parse("a-long-enough-key-0123:Worker+admin").expect("a key");
        assert_eq!(spec.role_names(), "worker+admin");
        assert!(!format!("{spec:?}").contains("a-long-enough"));
    }
}
