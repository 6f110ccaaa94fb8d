//! Configuration: raw TOML → validated [`Config`].
//!
//! Two stages, so that every problem is found before anything starts: serde
//! rejects unknown keys and wrong types (naming the key path), then
//! [`validate`] checks ranges and cross-references and reports every problem
//! it finds at once, each naming the file, the key and what was expected.
//! The config never holds a secret, only where to find one.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Component, Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::Deserialize;

use crate::secret::Kind;

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
/// Twilio's limit on an Access Token's lifetime.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(86_400);
/// Grants a `[credentials.X.access_tokens]` policy may list.
pub const GRANTS: [&str; 4] = ["voice", "video", "chat", "sync"];
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
    pub credentials: BTreeMap<String, CredentialConfig>,
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

/// `[stores.NAME]`: where documents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A JSON file of documents, or a directory of one file per document.
    File {
        /// The file or directory.
        path: PathBuf,
    },
    /// HashiCorp Vault KV.
    Vault {
        /// `https://host:8200`.
        address: String,
        /// The KV mount.
        mount: String,
        /// 1 or 2.
        kv_version: u8,
        /// How to log in.
        auth: VaultAuth,
        /// Vault Enterprise namespace.
        namespace: Option<String>,
        /// CA bundle for the server's certificate.
        ca_cert: Option<PathBuf>,
    },
    /// AWS Secrets Manager.
    AwsSecretsManager {
        /// Region; else the AWS default chain's.
        region: Option<String>,
        /// Emulator endpoint.
        endpoint_url: Option<String>,
    },
    /// GCP Secret Manager.
    GcpSecretManager {
        /// The project id.
        project: String,
        /// Emulator endpoint (then no credentials are sent).
        endpoint: Option<String>,
    },
}

impl StoreConfig {
    /// The `type` spelling.
    pub fn type_name(&self) -> &'static str {
        match self {
            StoreConfig::File { .. } => "file",
            StoreConfig::Vault { .. } => "vault",
            StoreConfig::AwsSecretsManager { .. } => "aws_secrets_manager",
            StoreConfig::GcpSecretManager { .. } => "gcp_secret_manager",
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
    pub rotation: Option<RotationConfig>,
    /// MintAccessToken policy.
    pub access_tokens: Option<AccessTokenPolicy>,
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

// ---- raw stage -----------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    stores: BTreeMap<String, RawStore>,
    #[serde(default)]
    twilio: RawTwilio,
    #[serde(default)]
    credentials: BTreeMap<String, RawCredential>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    socket: Option<String>,
    socket_mode: Option<RawMode>,
    metrics_addr: Option<String>,
    admin: Option<RawAllow>,
    lock_memory: Option<bool>,
    allow_root: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawMode {
    Text(String),
    Number(i64),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    #[serde(default)]
    uids: Vec<u32>,
    #[serde(default)]
    gids: Vec<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    lease_ttl: Option<String>,
    refresh_interval: Option<String>,
    max_stale: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawStore {
    File {
        path: String,
    },
    Vault {
        address: String,
        mount: Option<String>,
        kv_version: Option<i64>,
        auth: RawVaultAuth,
        namespace: Option<String>,
        ca_cert: Option<String>,
    },
    AwsSecretsManager {
        region: Option<String>,
        endpoint_url: Option<String>,
    },
    GcpSecretManager {
        project: String,
        endpoint: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
enum RawVaultAuth {
    Token {
        token_file: Option<String>,
    },
    Approle {
        role_id_file: String,
        secret_id_file: String,
        mount: Option<String>,
    },
    Kubernetes {
        role: String,
        jwt_file: Option<String>,
        mount: Option<String>,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTwilio {
    api_base: Option<String>,
    iam_base: Option<String>,
    accounts_base: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    store: Option<String>,
    path: Option<String>,
    kind: Option<String>,
    allow: Option<RawAllow>,
    lease_ttl: Option<String>,
    refresh_interval: Option<String>,
    max_stale: Option<String>,
    rotation: Option<RawRotation>,
    access_tokens: Option<RawAccessTokens>,
    admin_credential: Option<String>,
    ttl: Option<String>,
    max_live_keys: Option<i64>,
    policy: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    schedule: String,
    grace: String,
    admin_credential: Option<String>,
    validation_url: Option<String>,
    propagation: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessTokens {
    max_ttl: Option<String>,
    #[serde(default)]
    grants: Vec<String>,
    identity_prefix: Option<String>,
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
                StoreConfig::File { path } => fix(path),
                StoreConfig::Vault { auth, ca_cert, .. } => {
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
                StoreConfig::AwsSecretsManager { .. } | StoreConfig::GcpSecretManager { .. } => {}
            }
        }
    }
}

/// Checks `rotation.validation_url`: a Twilio REST API path on `api_base`
/// (`/2010-04-01/…` or `/vN/…`), read with GET, whose only placeholder is
/// `{account_sid}`. Hosts are not accepted: the read goes to the configured
/// `api_base`, so tests and proxies see it like every other call.
fn check_validation_url(url: &str) -> Result<(), String> {
    let expected = "a Twilio REST API path such as \"/2010-04-01/Accounts/{account_sid}/Calls.json?PageSize=1\" (a path on [twilio] api_base, starting /2010-04-01/ or /v1/)";
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut segments = path.strip_prefix('/').unwrap_or("").split('/');
    let version = segments.next().unwrap_or("");
    let dated = version.len() == 10
        && version.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    let numbered = version
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    let rest: Vec<&str> = segments.collect();
    if !path.starts_with('/') || !(dated || numbered) || rest.is_empty() {
        return Err(format!("{expected}, not {url:?}"));
    }
    if rest.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(format!(
            "{expected}; empty, `.` and `..` segments are refused, not {url:?}"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~%{}=&+,:".contains(c);
    if let Some(bad) = path
        .chars()
        .chain(query.chars())
        .find(|c| !allowed(*c) && *c != '/')
    {
        return Err(format!("{expected}; {bad:?} is not allowed in it"));
    }
    let without = url.replace("{account_sid}", "");
    if without.contains('{') || without.contains('}') {
        return Err(format!(
            "{expected}; the only placeholder is {{account_sid}}, not {url:?}"
        ));
    }
    Ok(())
}

/// Collects problems, so one run of `check-config` lists them all.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, expected: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            expected: expected.into(),
        });
    }

    fn duration(&mut self, key: &str, value: Option<&str>, fallback: Duration) -> Duration {
        match value {
            None => fallback,
            Some(v) => match humantime::parse_duration(v) {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    self.push(
                        key,
                        format!("a positive duration such as \"90s\", \"5m\" or \"1h\", not {v:?}"),
                    );
                    fallback
                }
            },
        }
    }

    fn url(&mut self, key: &str, value: Option<String>, fallback: &str) -> String {
        let v = value.unwrap_or_else(|| fallback.to_owned());
        let rest = v
            .strip_prefix("https://")
            .or_else(|| v.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.starts_with('/') => {
                v.trim_end_matches('/').to_owned()
            }
            _ => {
                self.push(key, format!("an http:// or https:// URL, not {v:?}"));
                v
            }
        }
    }
}

fn allow_list(raw: Option<RawAllow>) -> AllowList {
    let raw = raw.unwrap_or_default();
    AllowList {
        uids: raw.uids,
        gids: raw.gids,
    }
}

fn validate(file: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let mut p = Problems::default();
    let server = server(&mut p, raw.server);
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
            (name, cfg)
        })
        .collect();

    if p.0.is_empty() {
        Ok(Config {
            source: file.to_owned(),
            server,
            stores,
            twilio,
            credentials,
        })
    } else {
        Err(ConfigError::Invalid {
            file: file.to_owned(),
            problems: p.0,
        })
    }
}

/// `[server]`.
fn server(p: &mut Problems, raw: RawServer) -> ServerConfig {
    let socket_mode = match raw.socket_mode {
        None => 0o660,
        Some(RawMode::Text(s)) => match u32::from_str_radix(&s, 8) {
            Ok(m) if m <= 0o777 && !s.is_empty() => m,
            _ => {
                p.push(
                    "server.socket_mode",
                    format!("an octal mode such as \"0660\", not {s:?}"),
                );
                0o660
            }
        },
        Some(RawMode::Number(n)) => match u32::try_from(n) {
            Ok(m) if m <= 0o777 => m,
            _ => {
                p.push(
                    "server.socket_mode",
                    "an octal mode such as \"0660\" or 0o660",
                );
                0o660
            }
        },
    };
    if socket_mode & 0o600 != 0o600 {
        p.push(
            "server.socket_mode",
            "a mode that lets the owner read and write (0600 at least)",
        );
    }
    let socket = match raw.socket.as_deref() {
        None => PathBuf::from(DEFAULT_SOCKET),
        Some("") => {
            p.push("server.socket", "a socket path");
            PathBuf::from(DEFAULT_SOCKET)
        }
        Some(s) => PathBuf::from(s),
    };
    let metrics_addr = raw.metrics_addr.as_deref().and_then(|a| {
        SocketAddr::from_str(a)
            .map_err(|_| {
                p.push(
                    "server.metrics_addr",
                    format!("an address such as \"127.0.0.1:9464\", not {a:?}"),
                )
            })
            .ok()
    });
    ServerConfig {
        socket,
        socket_mode,
        metrics_addr,
        admin: allow_list(raw.admin),
        lock_memory: raw.lock_memory.unwrap_or(true),
        allow_root: raw.allow_root.unwrap_or(false),
    }
}

/// `[defaults]`: what each credential's own keys fall back to.
struct Defaults {
    lease_ttl: Duration,
    refresh_interval: Duration,
    max_stale: Duration,
}

/// `[defaults]`.
fn defaults(p: &mut Problems, d: &RawDefaults) -> Defaults {
    let lease_ttl = p.duration(
        "defaults.lease_ttl",
        d.lease_ttl.as_deref(),
        DEFAULT_LEASE_TTL,
    );
    let refresh_interval = p.duration(
        "defaults.refresh_interval",
        d.refresh_interval.as_deref(),
        DEFAULT_REFRESH_INTERVAL,
    );
    let max_stale = p.duration(
        "defaults.max_stale",
        d.max_stale.as_deref(),
        DEFAULT_MAX_STALE,
    );
    if lease_ttl > MAX_ACCESS_TOKEN_TTL {
        p.push("defaults.lease_ttl", "a lease of at most 24h");
    }
    Defaults {
        lease_ttl,
        refresh_interval,
        max_stale,
    }
}

/// One `[stores.NAME]`; `key` is `stores.NAME`.
fn store(p: &mut Problems, key: &str, raw: RawStore) -> StoreConfig {
    match raw {
        RawStore::File { path } => {
            if path.is_empty() {
                p.push(format!("{key}.path"), "a file or directory path");
            }
            StoreConfig::File { path: path.into() }
        }
        RawStore::Vault {
            address,
            mount,
            kv_version,
            auth,
            namespace,
            ca_cert,
        } => {
            let address = p.url(&format!("{key}.address"), Some(address), "");
            let kv_version = match kv_version {
                None => 2,
                Some(v @ (1 | 2)) => v as u8,
                Some(_) => {
                    p.push(format!("{key}.kv_version"), "1 or 2");
                    2
                }
            };
            StoreConfig::Vault {
                address,
                mount: mount.unwrap_or_else(|| "secret".into()),
                kv_version,
                auth: vault_auth(auth),
                namespace,
                ca_cert: ca_cert.map(PathBuf::from),
            }
        }
        RawStore::AwsSecretsManager {
            region,
            endpoint_url,
        } => StoreConfig::AwsSecretsManager {
            region,
            endpoint_url: endpoint_url.map(|u| p.url(&format!("{key}.endpoint_url"), Some(u), "")),
        },
        RawStore::GcpSecretManager { project, endpoint } => {
            if project.is_empty() {
                p.push(format!("{key}.project"), "a GCP project id");
            }
            StoreConfig::GcpSecretManager {
                project,
                endpoint: endpoint.map(|u| p.url(&format!("{key}.endpoint"), Some(u), "")),
            }
        }
    }
}

/// A Vault store's `auth = {...}`, with its defaults.
fn vault_auth(auth: RawVaultAuth) -> VaultAuth {
    match auth {
        RawVaultAuth::Token { token_file } => VaultAuth::Token {
            token_file: token_file.map(PathBuf::from),
        },
        RawVaultAuth::Approle {
            role_id_file,
            secret_id_file,
            mount,
        } => VaultAuth::AppRole {
            role_id_file: role_id_file.into(),
            secret_id_file: secret_id_file.into(),
            mount: mount.unwrap_or_else(|| "approle".into()),
        },
        RawVaultAuth::Kubernetes {
            role,
            jwt_file,
            mount,
        } => VaultAuth::Kubernetes {
            role,
            jwt_file: jwt_file
                .unwrap_or_else(|| "/var/run/secrets/kubernetes.io/serviceaccount/token".into())
                .into(),
            mount: mount.unwrap_or_else(|| "kubernetes".into()),
        },
    }
}

/// `[twilio]`.
fn twilio(p: &mut Problems, raw: RawTwilio) -> TwilioConfig {
    TwilioConfig {
        api_base: p.url("twilio.api_base", raw.api_base, DEFAULT_API_BASE),
        iam_base: p.url("twilio.iam_base", raw.iam_base, DEFAULT_IAM_BASE),
        accounts_base: p.url(
            "twilio.accounts_base",
            raw.accounts_base,
            DEFAULT_ACCOUNTS_BASE,
        ),
    }
}

/// The credentials an `admin_credential` may name.
struct Admins {
    names: Vec<String>,
    dynamic: Vec<String>,
}

impl Admins {
    fn of(credentials: &BTreeMap<String, RawCredential>) -> Admins {
        Admins {
            names: credentials.keys().cloned().collect(),
            dynamic: credentials
                .iter()
                .filter(|(_, c)| c.kind.as_deref() == Some(DYNAMIC_API_KEY))
                .map(|(n, _)| n.clone())
                .collect(),
        }
    }

    /// `admin`, named at `key` by credential `me`, is another, static credential.
    fn check(&self, p: &mut Problems, key: String, admin: &str, me: &str) {
        if admin == me {
            p.push(key, "another credential's name (not this one's)");
        } else if !self.names.iter().any(|n| n == admin) {
            p.push(
                key,
                format!("the name of a configured credential; there is no `{admin}`"),
            );
        } else if self.dynamic.iter().any(|n| n == admin) {
            p.push(
                key,
                format!("a static credential; `{admin}` is a dynamic_api_key"),
            );
        }
    }
}

/// One `[credentials.NAME]`.
fn credential(
    p: &mut Problems,
    name: String,
    c: RawCredential,
    defaults: &Defaults,
    stores: &BTreeMap<String, StoreConfig>,
    admins: &Admins,
) -> CredentialConfig {
    let key = format!("credentials.{name}");
    // `:` separates the name in the friendly names of the keys rotation
    // and dynamic credentials create, which are matched by prefix.
    if name.is_empty()
        || name
            .chars()
            .any(|ch| ch.is_control() || ch == '/' || ch == ':')
    {
        p.push(&key, "a name without control characters, `/` or `:`");
    }
    let dynamic = c.kind.as_deref() == Some(DYNAMIC_API_KEY);
    let kind = match c.kind.as_deref() {
        None => None,
        Some(_) if dynamic => Some(Kind::ApiKey),
        Some(k) => match Kind::parse(k) {
            Some(k) => Some(k),
            None => {
                p.push(
                    format!("{key}.kind"),
                    format!("one of \"auth_token\", \"api_key\", \"{DYNAMIC_API_KEY}\", not {k:?}"),
                );
                None
            }
        },
    };
    let lease_ttl = p.duration(
        &format!("{key}.lease_ttl"),
        c.lease_ttl.as_deref(),
        defaults.lease_ttl,
    );
    let refresh_interval = p.duration(
        &format!("{key}.refresh_interval"),
        c.refresh_interval.as_deref(),
        defaults.refresh_interval,
    );
    let max_stale = p.duration(
        &format!("{key}.max_stale"),
        c.max_stale.as_deref(),
        defaults.max_stale,
    );
    if c.lease_ttl.is_some() && lease_ttl > MAX_ACCESS_TOKEN_TTL {
        p.push(format!("{key}.lease_ttl"), "a lease of at most 24h");
    }
    let source = if dynamic {
        dynamic_source(p, &key, &name, &c, admins)
    } else {
        store_source(p, &key, &c, stores, kind)
    };
    let rotation = c.rotation.map(|r| {
        let policy = RotationLimits {
            kind,
            lease_ttl,
            refresh_interval,
        };
        rotation(p, &key, &name, r, &policy, admins)
    });
    let access_tokens = c.access_tokens.map(|a| access_tokens(p, &key, a, kind));
    CredentialConfig {
        name,
        source,
        allow: allow_list(c.allow),
        lease_ttl,
        refresh_interval,
        max_stale,
        rotation,
        access_tokens,
    }
}

/// A `dynamic_api_key`'s source: minted at Twilio, not read from a store.
fn dynamic_source(
    p: &mut Problems,
    key: &str,
    name: &str,
    c: &RawCredential,
    admins: &Admins,
) -> Source {
    for (field, set) in [("store", c.store.is_some()), ("path", c.path.is_some())] {
        if set {
            p.push(
                format!("{key}.{field}"),
                "nothing: a dynamic_api_key is minted at Twilio, not read from a store",
            );
        }
    }
    if c.rotation.is_some() {
        p.push(
            format!("{key}.rotation"),
            "nothing: dynamic keys expire on their own and are not rotated",
        );
    }
    let admin = c.admin_credential.clone().unwrap_or_default();
    if admin.is_empty() {
        p.push(
            format!("{key}.admin_credential"),
            "the credential that creates the keys",
        );
    } else {
        admins.check(p, format!("{key}.admin_credential"), &admin, name);
    }
    let ttl = match c.ttl.as_deref() {
        None => {
            p.push(format!("{key}.ttl"), "each key's lifetime, such as \"15m\"");
            Duration::from_secs(900)
        }
        Some(t) => p.duration(&format!("{key}.ttl"), Some(t), Duration::from_secs(900)),
    };
    let max_live_keys = match c.max_live_keys {
        None => 100,
        Some(n) if (1..=100_000).contains(&n) => n as u32,
        Some(_) => {
            p.push(format!("{key}.max_live_keys"), "a number from 1 to 100000");
            100
        }
    };
    let policy = c.policy.clone().unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(&policy) {
        Ok(serde_json::Value::Object(_)) => {}
        _ => p.push(
            format!("{key}.policy"),
            "a Twilio restricted-key Policy as a JSON object",
        ),
    }
    Source::Dynamic(DynamicKeyConfig {
        admin_credential: admin,
        ttl,
        max_live_keys,
        policy,
    })
}

/// A stored credential's source: a path in one of the `[stores]`.
fn store_source(
    p: &mut Problems,
    key: &str,
    c: &RawCredential,
    stores: &BTreeMap<String, StoreConfig>,
    kind: Option<Kind>,
) -> Source {
    for (field, set) in [
        ("admin_credential", c.admin_credential.is_some()),
        ("ttl", c.ttl.is_some()),
        ("max_live_keys", c.max_live_keys.is_some()),
        ("policy", c.policy.is_some()),
    ] {
        if set {
            p.push(
                format!("{key}.{field}"),
                "nothing: this key is only for kind = \"dynamic_api_key\"",
            );
        }
    }
    let store = c.store.clone().unwrap_or_default();
    match stores.get(&store) {
        _ if store.is_empty() => {
            p.push(format!("{key}.store"), "the name of a [stores.NAME] table")
        }
        None => p.push(
            format!("{key}.store"),
            format!("the name of a [stores.NAME] table; there is no `{store}`"),
        ),
        Some(StoreConfig::File { .. }) => {
            let path = c.path.as_deref().unwrap_or_default();
            if !path.is_empty()
                && !Path::new(path)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))
            {
                p.push(
                    format!("{key}.path"),
                    "a key inside the file store (no leading `/`, no `..`)",
                );
            }
        }
        Some(_) => {}
    }
    let path = c.path.clone().unwrap_or_default();
    if path.is_empty() {
        p.push(format!("{key}.path"), "the document's path in its store");
    }
    Source::Store { store, path, kind }
}

/// What a credential's `[rotation]` is checked against.
struct RotationLimits {
    kind: Option<Kind>,
    lease_ttl: Duration,
    refresh_interval: Duration,
}

/// A credential's `[credentials.NAME.rotation]`.
fn rotation(
    p: &mut Problems,
    key: &str,
    name: &str,
    r: RawRotation,
    limits: &RotationLimits,
    admins: &Admins,
) -> RotationConfig {
    let schedule = cron::Schedule::from_str(&r.schedule).unwrap_or_else(|e| {
        p.push(
            format!("{key}.rotation.schedule"),
            format!(
                "a cron expression with the seconds field first, such as \"0 0 3 * * Sun\" ({e})"
            ),
        );
        cron::Schedule::from_str("0 0 0 1 1 *").expect("a valid fallback")
    });
    let grace = p.duration(
        &format!("{key}.rotation.grace"),
        Some(&r.grace),
        limits.lease_ttl,
    );
    // A broker may serve the old value until its next refresh, and a
    // lease issued then runs lease_ttl more: the old value must stay
    // valid that long after the switch.
    let overlap = limits.lease_ttl + limits.refresh_interval;
    if grace < overlap {
        p.push(
            format!("{key}.rotation.grace"),
            format!(
                "at least lease_ttl + refresh_interval ({}), so no lease handed out on the old value outlives it",
                humantime::format_duration(overlap)
            ),
        );
    }
    if let Some(admin) = &r.admin_credential {
        admins.check(p, format!("{key}.rotation.admin_credential"), admin, name);
    } else if limits.kind == Some(Kind::ApiKey) {
        p.push(
            format!("{key}.rotation.admin_credential"),
            "the credential allowed to create and delete API keys",
        );
    }
    let validation_url = r
        .validation_url
        .unwrap_or_else(|| DEFAULT_VALIDATION_URL.to_owned());
    if let Err(why) = check_validation_url(&validation_url) {
        p.push(format!("{key}.rotation.validation_url"), why);
    }
    // Unset, it is 60 s, or the grace window when that is shorter.
    let propagation = p.duration(
        &format!("{key}.rotation.propagation"),
        r.propagation.as_deref(),
        DEFAULT_PROPAGATION.min(grace),
    );
    // The old value must outlive the wait for the new one: a grace
    // shorter than propagation can retire a value still being served
    // when the new one was slow to start working.
    if propagation > grace {
        p.push(
            format!("{key}.rotation.propagation"),
            format!(
                "at most rotation.grace ({})",
                humantime::format_duration(grace)
            ),
        );
    }
    RotationConfig {
        schedule,
        grace,
        admin_credential: r.admin_credential,
        validation_url,
        propagation,
    }
}

/// A credential's `[credentials.NAME.access_tokens]`.
fn access_tokens(
    p: &mut Problems,
    key: &str,
    a: RawAccessTokens,
    kind: Option<Kind>,
) -> AccessTokenPolicy {
    if kind == Some(Kind::AuthToken) {
        p.push(
            format!("{key}.access_tokens"),
            "an API key credential: Access Tokens are signed with an API Key Secret",
        );
    }
    let max_ttl = p.duration(
        &format!("{key}.access_tokens.max_ttl"),
        a.max_ttl.as_deref(),
        Duration::from_secs(3600),
    );
    if max_ttl > MAX_ACCESS_TOKEN_TTL {
        p.push(
            format!("{key}.access_tokens.max_ttl"),
            "at most 24h, Twilio's limit",
        );
    }
    for g in &a.grants {
        if !GRANTS.contains(&g.as_str()) {
            p.push(
                format!("{key}.access_tokens.grants"),
                format!("grants among \"voice\", \"video\", \"chat\", \"sync\", not {g:?}"),
            );
        }
    }
    AccessTokenPolicy {
        max_ttl,
        grants: a.grants,
        identity_prefix: a.identity_prefix.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("test.toml"), text)
    }

    const MINIMAL: &str = r#"
[stores.local]
type = "file"
path = "/tmp/secrets.json"

[credentials.verify]
store = "local"
path = "twilio/verify"
"#;

    #[test]
    fn defaults_apply() {
        let c = parse_str(MINIMAL).unwrap();
        assert_eq!(c.server.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.server.socket_mode, 0o660);
        assert!(c.server.lock_memory);
        assert!(!c.server.allow_root);
        let v = &c.credentials["verify"];
        assert_eq!(v.lease_ttl, DEFAULT_LEASE_TTL);
        assert_eq!(v.refresh_interval, DEFAULT_REFRESH_INTERVAL);
        assert_eq!(v.max_stale, DEFAULT_MAX_STALE);
        assert_eq!(c.twilio.api_base, DEFAULT_API_BASE);
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = parse_str(&format!("{MINIMAL}\nalow = {{ uids = [1] }}\n")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("test.toml: credentials.verify"), "{msg}");
        assert!(msg.contains("alow"), "{msg}");
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
[server]
socket_mode = "999"
[defaults]
lease_ttl = "soon"
[stores.local]
type = "file"
path = "/tmp/x"
[credentials.a]
store = "nowhere"
path = "a"
[credentials.b]
store = "local"
path = "../etc/passwd"
[credentials.b.rotation]
schedule = "every day"
grace = "1m"
"#;
        let ConfigError::Invalid { problems, .. } = parse_str(text).unwrap_err() else {
            panic!("expected Invalid");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "server.socket_mode",
            "defaults.lease_ttl",
            "credentials.a.store",
            "credentials.b.path",
            "credentials.b.rotation.schedule",
            "credentials.b.rotation.grace",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn validation_url_and_propagation_are_checked() {
        let rotation = "lease_ttl = \"10s\"\nrefresh_interval = \"5s\"\n[credentials.verify.rotation]\nschedule = \"0 0 3 * * Sun\"\ngrace = \"2m\"\n";
        let c = parse_str(&format!("{MINIMAL}{rotation}")).unwrap();
        let r = c.credentials["verify"].rotation.clone().unwrap();
        assert_eq!(r.validation_url, DEFAULT_VALIDATION_URL);
        assert_eq!(r.propagation, Duration::from_secs(60));
        let short = parse_str(&format!("{MINIMAL}{}", rotation.replace("2m", "30s"))).unwrap();
        assert_eq!(
            short.credentials["verify"]
                .rotation
                .as_ref()
                .unwrap()
                .propagation,
            Duration::from_secs(30),
            "unset, propagation is capped at grace"
        );
        for bad in [
            "https://api.twilio.com/2010-04-01/Accounts.json",
            "2010-04-01/Accounts.json",
            "/Accounts/{account_sid}.json",
            "/2010-04-01/",
            "/2010-04-01/Accounts/../Keys.json",
            "/2010-04-01/Accounts/{sid}/Calls.json",
            "/2010-04-01/Accounts/{account_sid}/Calls.json#x",
            "/v1/Services list",
        ] {
            let text = format!("{MINIMAL}{rotation}validation_url = {bad:?}\n");
            let e = parse_str(&text).unwrap_err().to_string();
            assert!(
                e.contains("`credentials.verify.rotation.validation_url`: a Twilio REST API path"),
                "{bad}: {e}"
            );
        }
        for good in [
            "/2010-04-01/Accounts/{account_sid}/Calls.json?PageSize=1",
            "/v1/Services?PageSize=1",
        ] {
            let text = format!("{MINIMAL}{rotation}validation_url = {good:?}\n");
            let c = parse_str(&text).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(
                c.credentials["verify"]
                    .rotation
                    .as_ref()
                    .unwrap()
                    .validation_url,
                good
            );
        }
        let long = format!("{MINIMAL}{rotation}propagation = \"5m\"\n");
        let e = parse_str(&long).unwrap_err().to_string();
        assert!(
            e.contains("`credentials.verify.rotation.propagation`: at most rotation.grace (2m)"),
            "{e}"
        );
    }

    #[test]
    fn grace_must_cover_lease() {
        let text = format!(
            "{MINIMAL}lease_ttl = \"10m\"\n[credentials.verify.rotation]\nschedule = \"0 0 3 * * Sun\"\ngrace = \"10m\"\n"
        );
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(e.contains("credentials.verify.rotation.grace"), "{e}");
        let ok = text.replace("grace = \"10m\"", "grace = \"1h\"");
        let c = parse_str(&ok).unwrap();
        assert_eq!(
            c.credentials["verify"].rotation.as_ref().unwrap().grace,
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn dynamic_keys_are_checked() {
        let text = format!(
            "{MINIMAL}\n[credentials.dyn]\nkind = \"dynamic_api_key\"\nadmin_credential = \"verify\"\nttl = \"15m\"\npolicy = '{{\"allow\": []}}'\n"
        );
        let c = parse_str(&text).unwrap();
        assert!(matches!(c.credentials["dyn"].source, Source::Dynamic(_)));
        let bad = text.replace(
            "admin_credential = \"verify\"",
            "admin_credential = \"nobody\"",
        );
        assert!(
            parse_str(&bad)
                .unwrap_err()
                .to_string()
                .contains("there is no `nobody`")
        );
    }

    #[test]
    fn vault_and_cloud_stores_parse() {
        let text = r#"
[stores.vault]
type = "vault"
address = "https://vault.example:8200"
auth = { method = "kubernetes", role = "credbroker" }
[stores.aws]
type = "aws_secrets_manager"
region = "us-east-1"
[stores.gcp]
type = "gcp_secret_manager"
project = "p"
"#;
        let c = parse_str(text).unwrap();
        match &c.stores["vault"] {
            StoreConfig::Vault {
                mount,
                kv_version,
                auth,
                ..
            } => {
                assert_eq!(mount, "secret");
                assert_eq!(*kv_version, 2);
                assert!(
                    matches!(auth, VaultAuth::Kubernetes { mount, .. } if mount == "kubernetes")
                );
            }
            other => panic!("{other:?}"),
        }
        let bad = text.replace("method = \"kubernetes\"", "method = \"ldap\"");
        let e = parse_str(&bad).unwrap_err().to_string();
        assert!(
            e.contains("stores.vault") && e.contains("unknown variant `ldap`"),
            "{e}"
        );
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c = parse(
            Path::new("/etc/credbroker/config.toml"),
            &MINIMAL.replace("/tmp/secrets.json", "secrets.json"),
        )
        .unwrap();
        assert_eq!(
            c.stores["local"],
            StoreConfig::File {
                path: "/etc/credbroker/secrets.json".into()
            }
        );
    }

    #[test]
    fn allow_list_defaults_to_own_uid() {
        let empty = AllowList::default();
        assert!(empty.permits(1000, 1000, 1000));
        assert!(!empty.permits(1001, 1000, 1000));
        let by_gid = AllowList {
            uids: vec![],
            gids: vec![50],
        };
        assert!(by_gid.permits(7, 50, 0));
        assert!(!by_gid.permits(7, 51, 0));
    }
}
