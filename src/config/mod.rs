//! Configuration: raw TOML → validated [`Config`].
//!
//! Two stages, so that every problem is found before anything starts: serde
//! rejects unknown keys and wrong types (naming the key path), then
//! `validate` checks ranges and cross-references and reports every problem
//! it finds at once, each naming the file, the key and what was expected.
//! The config never holds a secret, only where to find one.
//!
//! - `raw.rs`: the serde types, exactly the TOML's shape.
//! - `server.rs`, `stores.rs`, `credentials.rs`, `usage.rs`: one file per section,
//!   each validating its raw table into the types below.
//! - `problems.rs`: the collected problems and the shared value checks.
//! - `tests.rs`: reads the fixtures under `tests/fixtures/config/`.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Component, Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;

use crate::credential::Kind;

mod credentials;
mod problems;
mod raw;
mod server;
mod stores;
#[cfg(test)]
mod tests;
mod usage;

pub use self::usage::{MAX_CATEGORIES, MAX_SAMPLES, MIN_POLL_INTERVAL};
use self::{
    credentials::{Admins, credential},
    problems::{Problems, allow_list},
    raw::*,
    server::{Defaults, check_socket, defaults, server, twilio},
    stores::store,
};

/// Where `serve` listens when the config does not say.
pub const DEFAULT_SOCKET: &str = "/run/credbroker/broker.sock";
/// Lease length when neither the credential nor `[defaults]` sets one.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5 * 60);
/// Store re-read period when neither the credential nor `[defaults]` sets one.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// How long a last good value may be served while its store is down.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(15 * 60);
/// Twilio's public endpoints.
pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";
/// Twilio's IAM endpoint (API keys).
pub const DEFAULT_IAM_BASE: &str = "https://iam.twilio.com";
/// Twilio's accounts endpoint (Auth Tokens).
pub const DEFAULT_ACCOUNTS_BASE: &str = "https://accounts.twilio.com";
/// Twilio's OAuth endpoint (bearer tokens for `oauth_client`).
pub const DEFAULT_OAUTH_BASE: &str = "https://oauth.twilio.com";
/// Twilio's limit on an Access Token's lifetime.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(86_400);
/// Grants a `[credentials.X.access_tokens]` policy may list.
pub const GRANTS: [&str; 4] = ["voice", "video", "chat", "sync"];
/// The longest socket path the kernel takes: `sun_path` is 108 bytes, the
/// terminating NUL included.
pub const MAX_SOCKET_PATH: usize = 107;
/// The longest duration any key takes: sums of durations, and times plus
/// durations, stay far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);
/// The `kind` of a credential whose restricted keys are minted per caller
/// (`Source::Dynamic`); the other kinds are stored ([`Kind`]).
pub const DYNAMIC_API_KEY: &str = "dynamic_api_key";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, for messages.
    pub source: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[stores.NAME]`, by name.
    pub stores: BTreeMap<String, StoreConfig>,
    /// `[twilio]`.
    pub twilio: TwilioConfig,
    /// `[credentials.NAME]`, by name.
    pub credentials: BTreeMap<String, Arc<CredentialConfig>>,
    /// `[usage.NAME]`, by name: the Twilio accounts whose usage is watched.
    pub usage: BTreeMap<String, UsageConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The Unix socket path.
    pub socket: PathBuf,
    /// The socket file's permission bits.
    pub socket_mode: u32,
    /// Prometheus `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: Option<SocketAddr>,
    /// Who may call RotationAdmin.
    pub admin: AllowList,
    /// `mlockall` at start.
    pub lock_memory: bool,
    /// Whether `serve` may run as root.
    pub allow_root: bool,
    /// Whether `serve` may run as the kernel's overflow uid (65534, what
    /// unmapped uids show as), which every unmapped peer would equal.
    pub allow_overflow_uid: bool,
    /// What one caller can make the daemon hold.
    pub limits: Limits,
}

/// What callers can make the daemon hold: connections, streams, time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections on the socket, in all (also bounded by the
    /// descriptors the process may open).
    pub max_connections: u32,
    /// Open connections per peer uid.
    pub max_connections_per_uid: u32,
    /// Concurrent HTTP/2 streams (calls) per connection.
    pub max_streams_per_connection: u32,
    /// Open WatchCredential streams per peer uid.
    pub max_watches_per_uid: u32,
    /// How long a new connection may take to send its first bytes (the
    /// HTTP/2 preface) before it is closed.
    pub preface_timeout: Duration,
    /// How long a connection may stay open with no call in flight before
    /// it is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_uid: 64,
            max_streams_per_connection: 100,
            max_watches_per_uid: 256,
            preface_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Peers allowed by uid or by (primary) gid. Empty: only the daemon's own uid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    /// Allowed user ids.
    pub uids: Vec<u32>,
    /// Allowed group ids (the peer's primary gid, as SO_PEERCRED reports it).
    pub gids: Vec<u32>,
}

impl AllowList {
    /// Whether a peer with `uid`/`gid` is allowed, for a daemon running as `own_uid`.
    pub fn permits(&self, uid: u32, gid: u32, own_uid: u32) -> bool {
        if self.uids.is_empty() && self.gids.is_empty() {
            return uid == own_uid;
        }
        self.uids.contains(&uid) || self.gids.contains(&gid)
    }
}

/// `[stores.NAME]`: where documents come from. Each backend is built from
/// its own section's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A JSON file of documents, or a directory of one file per document.
    File(FileConfig),
    /// HashiCorp Vault KV.
    Vault(VaultConfig),
    /// AWS Secrets Manager.
    AwsSecretsManager(AwsConfig),
    /// GCP Secret Manager.
    GcpSecretManager(GcpConfig),
}

/// `type = "file"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// The file or directory.
    pub path: PathBuf,
}

/// `type = "vault"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// `https://host:8200`.
    pub address: String,
    /// The KV mount.
    pub mount: String,
    /// 1 or 2.
    pub kv_version: u8,
    /// How to log in.
    pub auth: VaultAuth,
    /// Vault Enterprise namespace.
    pub namespace: Option<String>,
    /// CA bundle for the server's certificate.
    pub ca_cert: Option<PathBuf>,
}

/// `type = "aws_secrets_manager"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// Region; else the AWS default chain's.
    pub region: Option<String>,
    /// Emulator endpoint.
    pub endpoint_url: Option<String>,
}

/// `type = "gcp_secret_manager"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpConfig {
    /// The project id.
    pub project: String,
    /// Emulator endpoint (then no credentials are sent).
    pub endpoint: Option<String>,
}

impl StoreConfig {
    /// The `type` spelling.
    pub fn type_name(&self) -> &'static str {
        match self {
            StoreConfig::File(_) => "file",
            StoreConfig::Vault(_) => "vault",
            StoreConfig::AwsSecretsManager(_) => "aws_secrets_manager",
            StoreConfig::GcpSecretManager(_) => "gcp_secret_manager",
        }
    }
}

/// How the Vault store logs in. Secrets are read from files at login time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token from a file, else `VAULT_TOKEN`.
    Token {
        /// File holding the token.
        token_file: Option<PathBuf>,
    },
    /// AppRole login.
    AppRole {
        /// File holding the role id.
        role_id_file: PathBuf,
        /// File holding the secret id.
        secret_id_file: PathBuf,
        /// Auth mount.
        mount: String,
    },
    /// Kubernetes service-account login.
    Kubernetes {
        /// Vault role.
        role: String,
        /// The projected service-account token.
        jwt_file: PathBuf,
        /// Auth mount.
        mount: String,
    },
}

/// `[twilio]`: base URLs, configurable so tests can point them at a fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioConfig {
    /// REST API (`/2010-04-01/...`).
    pub api_base: String,
    /// IAM (`/v1/Keys`).
    pub iam_base: String,
    /// Accounts (`/v1/AuthTokens/...`).
    pub accounts_base: String,
    /// OAuth (`/v2/token`), for `oauth_client` credentials.
    pub oauth_base: String,
}

/// `[credentials.NAME]`.
#[derive(Debug, Clone)]
pub struct CredentialConfig {
    /// The config key, which clients ask for.
    pub name: String,
    /// Where the credential comes from.
    pub source: Source,
    /// Who may read it.
    pub allow: AllowList,
    /// Lease length.
    pub lease_ttl: Duration,
    /// Store re-read period.
    pub refresh_interval: Duration,
    /// Longest a last good value is served while the store is down.
    pub max_stale: Duration,
    /// Scheduled rotation.
    pub rotation: Option<Box<RotationConfig>>,
    /// MintAccessToken policy (boxed: few credentials have one).
    pub access_tokens: Option<Box<AccessTokenPolicy>>,
}

/// Where a credential comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A document in a store.
    Store {
        /// The `[stores.NAME]` key.
        store: String,
        /// Vault path, AWS secret id, GCP secret id, or file key.
        path: String,
        /// Configured kind; `None` means read it off the document.
        kind: Option<Kind>,
    },
    /// Restricted keys minted per caller.
    Dynamic(DynamicKeyConfig),
}

/// `kind = "dynamic_api_key"` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicKeyConfig {
    /// Credential allowed to create and delete keys.
    pub admin_credential: String,
    /// Each key's lifetime.
    pub ttl: Duration,
    /// Most keys alive at once.
    pub max_live_keys: u32,
    /// Most keys alive at once for one peer uid (its processes together).
    pub max_live_keys_per_uid: u32,
    /// Twilio restricted-key Policy (JSON).
    pub policy: String,
}

/// `[credentials.NAME.rotation]`.
#[derive(Debug, Clone)]
pub struct RotationConfig {
    /// Cron, seconds field first, UTC.
    pub schedule: cron::Schedule,
    /// How long the replaced value stays valid after the switch.
    pub grace: Duration,
    /// Credential allowed to create and delete keys.
    pub admin_credential: Option<String>,
    /// The read that tests a new value: a path on `[twilio] api_base`, with
    /// `{account_sid}` replaced by the credential's account.
    pub validation_url: String,
    /// How long a new value may be refused (Twilio code 20003) before the
    /// test step fails: a key or token just made takes a while to work.
    pub propagation: Duration,
}

/// The test read a Standard key may make (Twilio refuses it `/Accounts/{sid}.json`).
pub const DEFAULT_VALIDATION_URL: &str =
    "/2010-04-01/Accounts/{account_sid}/Messages.json?PageSize=1";
/// `rotation.propagation` when unset: AWS's managed Twilio rotation waits as long.
pub const DEFAULT_PROPAGATION: Duration = Duration::from_secs(60);

/// `[credentials.NAME.access_tokens]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenPolicy {
    /// Longest TTL a caller may ask for.
    pub max_ttl: Duration,
    /// Grants callers may ask for.
    pub grants: Vec<String>,
    /// Every identity must start with this.
    pub identity_prefix: String,
}

/// `usage.poll_interval` when unset.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// `usage.window` when unset.
pub const DEFAULT_USAGE_WINDOW: Duration = Duration::from_secs(3600);
/// `usage.factor` when unset.
pub const DEFAULT_FACTOR: f64 = 5.0;
/// `usage.baseline` when unset: a day of hourly windows.
pub const DEFAULT_BASELINE: u32 = 24;

/// `[usage.NAME]`: one Twilio account's usage, polled and checked for
/// spikes, and what to do about one.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageConfig {
    /// The table's name: the `account` label of the usage metrics.
    pub name: String,
    /// The stored credential (Auth Token or Main key) that reads the
    /// account's usage and keeps its Usage Triggers.
    pub admin_credential: String,
    /// Twilio usage categories watched (`sms`, `calls`, …).
    pub categories: Vec<String>,
    /// How often Usage Records Today is read.
    pub poll_interval: Duration,
    /// The spike rule's window.
    pub window: Duration,
    /// A window's count above `factor` × the median of the `baseline`
    /// windows before it is a spike.
    pub factor: f64,
    /// How many earlier windows the median is taken over.
    pub baseline: u32,
    /// A window's count above this is a spike, whatever came before.
    pub max_per_window: Option<u64>,
    /// What a spike does.
    pub on_spike: OnSpike,
    /// With [`OnSpike::Rotate`]: the credentials rotated.
    pub rotate: Vec<String>,
    /// Where Twilio's Usage Triggers call (the metrics listener's
    /// `/twilio/usage-trigger`, as Twilio reaches it).
    pub trigger_url: Option<String>,
    /// The day's count per category at which a trigger fires.
    pub trigger_value: Option<u64>,
}

/// `usage.on_spike`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSpike {
    /// Log it, and set the metric and the alert state.
    Alert,
    /// Also refuse new dynamic keys on the account until ClearAlert.
    FreezeDynamicKeys,
    /// Also start a rotation of `rotate`'s credentials at once.
    Rotate,
}

impl OnSpike {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnSpike::Alert => "alert",
            OnSpike::FreezeDynamicKeys => "freeze_dynamic_keys",
            OnSpike::Rotate => "rotate",
        }
    }
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the config: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("{file}: {key}: {message}")]
    Parse {
        /// The config file.
        file: PathBuf,
        /// Dotted key path.
        key: String,
        /// What the parser said.
        message: String,
    },
    /// Values that parse but make no sense; every one found.
    #[error("{}", .problems.iter().map(|p| format!("{}: `{}`: {}", .file.display(), p.key, p.expected)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// One entry per bad key.
        problems: Vec<Problem>,
    },
}

/// One bad key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path.
    pub key: String,
    /// What was expected.
    pub expected: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.expected)
    }
}

// ---- loading -------------------------------------------------------------

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates `text`; `file` is only used in messages.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            key: "(document)".into(),
            message: e.to_string().trim().to_owned(),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Parse {
                file: file.to_owned(),
                key: if key == "." { "(document)".into() } else { key },
                message: e.into_inner().to_string().trim().to_owned(),
            }
        })?
    };
    let mut config = validate(file, raw)?;
    config.resolve_relative_paths();
    Ok(config)
}

impl Config {
    /// Relative paths in a config are relative to the config file's
    /// directory, so a config and its files can move together.
    fn resolve_relative_paths(&mut self) {
        let Some(base) = self.source.parent().filter(|b| !b.as_os_str().is_empty()) else {
            return;
        };
        let base = base.to_owned();
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.server.socket);
        for store in self.stores.values_mut() {
            match store {
                StoreConfig::File(FileConfig { path }) => fix(path),
                StoreConfig::Vault(VaultConfig { auth, ca_cert, .. }) => {
                    if let Some(ca) = ca_cert {
                        fix(ca);
                    }
                    match auth {
                        VaultAuth::Token { token_file } => {
                            if let Some(t) = token_file {
                                fix(t);
                            }
                        }
                        VaultAuth::AppRole {
                            role_id_file,
                            secret_id_file,
                            ..
                        } => {
                            fix(role_id_file);
                            fix(secret_id_file);
                        }
                        VaultAuth::Kubernetes { jwt_file, .. } => fix(jwt_file),
                    }
                }
                StoreConfig::AwsSecretsManager(_) | StoreConfig::GcpSecretManager(_) => {}
            }
        }
    }
}

fn validate(file: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let mut p = Problems::default();
    let server = server(&mut p, raw.server);
    check_socket(&mut p, file, &server.socket);
    let defaults = defaults(&mut p, &raw.defaults);
    let stores: BTreeMap<String, StoreConfig> = raw
        .stores
        .into_iter()
        .map(|(name, raw)| {
            let cfg = store(&mut p, &format!("stores.{name}"), raw);
            (name, cfg)
        })
        .collect();
    let twilio = twilio(&mut p, raw.twilio);
    let admins = Admins::of(&raw.credentials);
    let credentials = raw
        .credentials
        .into_iter()
        .map(|(name, c)| {
            let cfg = credential(&mut p, name.clone(), c, &defaults, &stores, &admins);
            (name, Arc::new(cfg))
        })
        .collect::<BTreeMap<_, _>>();
    let usage = raw
        .usage
        .into_iter()
        .map(|(name, u)| {
            let cfg = usage::usage(&mut p, name.clone(), u, &credentials, server.metrics_addr);
            (name, cfg)
        })
        .collect();
    usage::check_accounts(&mut p, &usage);

    if p.0.is_empty() {
        Ok(Config {
            source: file.to_owned(),
            server,
            stores,
            twilio,
            credentials,
            usage,
        })
    } else {
        Err(ConfigError::Invalid {
            file: file.to_owned(),
            problems: p.0,
        })
    }
}
