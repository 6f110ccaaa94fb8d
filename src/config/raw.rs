//! The raw stage: the TOML exactly as written. serde rejects unknown keys
//! and wrong types here, naming the key path; nothing is checked yet.

use super::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) defaults: RawDefaults,
    #[serde(default)]
    pub(super) stores: BTreeMap<String, RawStore>,
    #[serde(default)]
    pub(super) twilio: RawTwilio,
    #[serde(default)]
    pub(super) credentials: BTreeMap<String, RawCredential>,
    #[serde(default)]
    pub(super) usage: BTreeMap<String, RawUsage>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) socket: Option<String>,
    pub(super) socket_mode: Option<RawMode>,
    pub(super) metrics_addr: Option<String>,
    pub(super) admin: Option<RawAllow>,
    pub(super) lock_memory: Option<bool>,
    pub(super) allow_root: Option<bool>,
    pub(super) allow_overflow_uid: Option<bool>,
    pub(super) max_connections: Option<i64>,
    pub(super) max_connections_per_uid: Option<i64>,
    pub(super) max_streams_per_connection: Option<i64>,
    pub(super) max_watches_per_uid: Option<i64>,
    pub(super) preface_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawMode {
    Text(String),
    Number(i64),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAllow {
    #[serde(default)]
    pub(super) uids: Vec<u32>,
    #[serde(default)]
    pub(super) gids: Vec<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) lease_ttl: Option<String>,
    pub(super) refresh_interval: Option<String>,
    pub(super) max_stale: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawStore {
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
pub(super) enum RawVaultAuth {
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
pub(super) struct RawTwilio {
    pub(super) api_base: Option<String>,
    pub(super) iam_base: Option<String>,
    pub(super) accounts_base: Option<String>,
    pub(super) oauth_base: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    pub(super) store: Option<String>,
    pub(super) path: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) allow: Option<RawAllow>,
    pub(super) lease_ttl: Option<String>,
    pub(super) refresh_interval: Option<String>,
    pub(super) max_stale: Option<String>,
    pub(super) rotation: Option<RawRotation>,
    pub(super) access_tokens: Option<RawAccessTokens>,
    pub(super) admin_credential: Option<String>,
    pub(super) ttl: Option<String>,
    pub(super) max_live_keys: Option<i64>,
    pub(super) max_live_keys_per_uid: Option<i64>,
    pub(super) policy: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRotation {
    pub(super) schedule: String,
    pub(super) grace: String,
    pub(super) admin_credential: Option<String>,
    pub(super) validation_url: Option<String>,
    pub(super) propagation: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessTokens {
    pub(super) max_ttl: Option<String>,
    #[serde(default)]
    pub(super) grants: Vec<String>,
    pub(super) identity_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUsage {
    pub(super) admin_credential: String,
    pub(super) categories: Vec<String>,
    pub(super) poll_interval: Option<String>,
    pub(super) window: Option<String>,
    pub(super) factor: Option<f64>,
    pub(super) baseline: Option<i64>,
    pub(super) max_per_window: Option<i64>,
    pub(super) on_spike: Option<String>,
    #[serde(default)]
    pub(super) rotate: Vec<String>,
    pub(super) trigger_url: Option<String>,
    pub(super) trigger_value: Option<i64>,
}
