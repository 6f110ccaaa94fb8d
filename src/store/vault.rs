//! The `vault` store: HashiCorp Vault's KV engine (v1 or v2) through vaultrs.
//!
//! Login is by token (a file, re-read at every login so a Vault Agent sink
//! works, else `VAULT_TOKEN`), AppRole or Kubernetes service-account JWT.
//! The token is renewed when a third of its TTL is left, before the
//! request that would otherwise run on it; when renewal fails, or a request
//! is refused because the token is no longer valid, the store logs in again
//! and retries once. Everything read from a file for a login is held in
//! secret types and dropped after the login.
//!
//! KV v2 reads return the document and its version in one response, and
//! writes use check-and-set on the version read. KV v1 has no versions: the
//! version is a digest of the document, and a write re-reads and compares
//! first, which narrows the race between two writers but cannot close it
//! (use KV v2 for rotation).

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::{sync::RwLock, time::Instant};
use vaultrs::{
    api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions},
    client::{VaultClient, VaultClientSettingsBuilder},
    error::ClientError,
};

use super::{Document, SecretStore, StoreError};
use crate::{config::VaultAuth, secret::SecretBytes, secret::SecretString};

/// How long one HTTP request to Vault may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of one `[stores.NAME]` of type `vault`.
#[derive(Clone)]
pub struct VaultSettings {
    /// `https://host:8200`.
    pub address: String,
    /// KV mount.
    pub mount: String,
    /// 1 or 2.
    pub kv_version: u8,
    /// How to log in.
    pub auth: VaultAuth,
    /// Vault Enterprise namespace.
    pub namespace: Option<String>,
    /// Extra CA bundle (PEM).
    pub ca_cert: Option<std::path::PathBuf>,
    /// `VAULT_TOKEN`, for token auth without a file; passed in, not read
    /// here, so tests need not touch the process environment.
    pub env_token: Option<SecretString>,
}

struct Session {
    client: Arc<VaultClient>,
    /// When the token stops working; `None`: it does not expire (or unknown).
    expires_at: Option<Instant>,
    ttl: Duration,
    renewable: bool,
}

/// A Vault KV store with its login session.
pub struct VaultStore {
    name: String,
    settings: VaultSettings,
    session: RwLock<Option<Session>>,
}

/// A Vault call's failure, before it is named for a path.
enum Failure {
    /// HTTP status with Vault's error strings (never secrets).
    Status(u16, String),
    /// Could not reach Vault, or no answer in time.
    Network(String),
    /// Anything else (a response we could not parse, a bad request).
    Other(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::APIError { code, errors } => Failure::Status(code, errors.join("; ")),
            ClientError::RestClientError { source } => match source {
                rustify::errors::ClientError::ServerResponseError { code, .. } => {
                    Failure::Status(code, String::new())
                }
                rustify::errors::ClientError::RequestError { .. } => {
                    Failure::Network("cannot reach Vault or no answer in time".into())
                }
                other => Failure::Other(format!("{other}")),
            },
            ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
                Failure::Other("Vault answered with no data".into())
            }
            ClientError::JsonParseError { .. } => {
                Failure::Other("Vault's answer is not the JSON expected".into())
            }
            other => Failure::Other(other.to_string()),
        }
    }
}

impl VaultStore {
    /// A store that logs in on first use.
    pub fn new(name: &str, settings: VaultSettings) -> Self {
        Self {
            name: name.to_owned(),
            settings,
            session: RwLock::new(None),
        }
    }

    fn error(&self, path: &str, action: &str, failure: Failure) -> StoreError {
        let store = self.name.clone();
        let path = path.to_owned();
        match failure {
            Failure::Status(404, _) => StoreError::NotFound {
                store,
                path,
                detail: format!(" ({action}: HTTP 404)"),
            },
            Failure::Status(code @ (401 | 403), why) => StoreError::PermissionDenied {
                store,
                path,
                detail: format!(" ({action}: HTTP {code}{})", reason(&why)),
            },
            Failure::Status(code, why) if code >= 500 || code == 429 || code == 412 => {
                StoreError::Unavailable {
                    store,
                    path,
                    detail: format!("{action}: HTTP {code}{}", reason(&why)),
                }
            }
            Failure::Status(code, why) => StoreError::Rejected {
                store,
                path,
                detail: format!("{action}: HTTP {code}{}", reason(&why)),
            },
            Failure::Network(why) => StoreError::Unavailable {
                store,
                path,
                detail: format!("{action}: {why}"),
            },
            Failure::Other(why) => StoreError::Rejected {
                store,
                path,
                detail: format!("{action}: {why}"),
            },
        }
    }

    fn client_with(&self, token: &str) -> Result<VaultClient, StoreError> {
        let s = &self.settings;
        let mut builder = VaultClientSettingsBuilder::default();
        builder
            .address(&s.address)
            .token(token)
            .timeout(Some(REQUEST_TIMEOUT))
            .verify(true)
            .ca_certs(s.ca_cert.iter().map(|p| p.display().to_string()).collect());
        if let Some(ns) = &s.namespace {
            builder.set_namespace(ns.clone());
        }
        let settings = builder
            .build()
            .map_err(|e| self.login_error(format!("client settings: {e}")))?;
        VaultClient::new(settings).map_err(|e| self.login_error(format!("client: {e}")))
    }

    fn login_error(&self, detail: String) -> StoreError {
        StoreError::Rejected {
            store: self.name.clone(),
            path: "(login)".into(),
            detail,
        }
    }

    fn read_secret_file(&self, file: &Path, what: &str) -> Result<SecretString, StoreError> {
        let bytes = std::fs::read(file).map_err(|e| StoreError::Io {
            store: self.name.clone(),
            path: "(login)".into(),
            source: std::io::Error::new(e.kind(), format!("{what} {}: {e}", file.display())),
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| self.login_error(format!("{what} {} is not UTF-8", file.display())))?;
        let secret = SecretString::new(text);
        Ok(SecretString::new(secret.expose_secret().trim().to_owned()))
    }

    /// Logs in with the configured method and returns a fresh session.
    async fn login(&self) -> Result<Session, StoreError> {
        let anonymous = self.client_with("")?;
        let as_login_error = |action: &str, e: ClientError| self.error("(login)", action, e.into());
        let (token, ttl, renewable) = match &self.settings.auth {
            VaultAuth::Token { token_file } => {
                let token = match token_file {
                    Some(file) => self.read_secret_file(file, "token_file")?,
                    None => self.settings.env_token.clone().ok_or_else(|| {
                        self.login_error(
                            "auth method `token` needs `token_file` or VAULT_TOKEN".into(),
                        )
                    })?,
                };
                let client = self.client_with(token.expose_secret())?;
                let info = vaultrs::token::lookup_self(&client)
                    .await
                    .map_err(|e| as_login_error("token lookup-self", e))?;
                return Ok(Session {
                    client: Arc::new(client),
                    expires_at: (info.ttl > 0)
                        .then(|| Instant::now() + Duration::from_secs(info.ttl)),
                    ttl: Duration::from_secs(info.ttl),
                    renewable: info.renewable.unwrap_or(false),
                });
            }
            VaultAuth::AppRole {
                role_id_file,
                secret_id_file,
                mount,
            } => {
                let role_id = self.read_secret_file(role_id_file, "role_id_file")?;
                let secret_id = self.read_secret_file(secret_id_file, "secret_id_file")?;
                let info = vaultrs::auth::approle::login(
                    &anonymous,
                    mount,
                    role_id.expose_secret(),
                    secret_id.expose_secret(),
                )
                .await
                .map_err(|e| as_login_error("AppRole login", e))?;
                (
                    SecretString::new(info.client_token),
                    info.lease_duration,
                    info.renewable,
                )
            }
            VaultAuth::Kubernetes {
                role,
                jwt_file,
                mount,
            } => {
                let jwt = self.read_secret_file(jwt_file, "jwt_file")?;
                let info =
                    vaultrs::auth::kubernetes::login(&anonymous, mount, role, jwt.expose_secret())
                        .await
                        .map_err(|e| as_login_error("Kubernetes login", e))?;
                (
                    SecretString::new(info.client_token),
                    info.lease_duration,
                    info.renewable,
                )
            }
        };
        tracing::info!(store = %self.name, ttl_seconds = ttl, "logged in to Vault");
        Ok(Session {
            client: Arc::new(self.client_with(token.expose_secret())?),
            expires_at: (ttl > 0).then(|| Instant::now() + Duration::from_secs(ttl)),
            ttl: Duration::from_secs(ttl),
            renewable,
        })
    }

    /// Makes sure there is a session whose token has more than a third of
    /// its TTL left: renews it, or logs in again when renewal fails.
    async fn ensure_session(&self, force_login: bool) -> Result<(), StoreError> {
        let needs_work = |s: &Option<Session>| match s {
            None => true,
            Some(_) if force_login => true,
            Some(s) => s
                .expires_at
                .is_some_and(|at| at.saturating_duration_since(Instant::now()) < s.ttl / 3),
        };
        if !needs_work(&*self.session.read().await) {
            return Ok(());
        }
        let mut guard = self.session.write().await;
        if !force_login && !needs_work(&guard) {
            return Ok(());
        }
        if let Some(session) = guard.as_mut().filter(|s| s.renewable && !force_login) {
            match vaultrs::token::renew_self(&*session.client, None).await {
                Ok(info) => {
                    session.ttl = Duration::from_secs(info.lease_duration);
                    session.expires_at = Some(Instant::now() + session.ttl);
                    tracing::debug!(store = %self.name, ttl_seconds = info.lease_duration, "renewed the Vault token");
                    // A token at its max TTL renews for less each time: log in
                    // again when what is left is too short to be worth keeping.
                    if session.ttl >= Duration::from_secs(3) {
                        return Ok(());
                    }
                }
                Err(e) => {
                    let e = self.error("(login)", "token renew-self", e.into());
                    tracing::warn!(store = %self.name, error = %e, "cannot renew the Vault token; logging in again");
                }
            }
        }
        *guard = Some(self.login().await?);
        Ok(())
    }

    /// Runs `call` with the session's client; when Vault refuses and the
    /// token turns out to be invalid, logs in again and retries once.
    async fn with_session<T, F, Fut>(
        &self,
        path: &str,
        action: &str,
        call: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        self.ensure_session(false).await?;
        let client = self.current_client().await;
        match call(Arc::clone(&client)).await {
            Ok(v) => Ok(v),
            Err(e) => match Failure::from(e) {
                Failure::Status(403, _) if vaultrs::token::lookup_self(&*client).await.is_err() => {
                    tracing::info!(store = %self.name, "the Vault token is no longer valid; logging in again");
                    self.ensure_session(true).await?;
                    let client = self.current_client().await;
                    call(client)
                        .await
                        .map_err(|e| self.error(path, action, e.into()))
                }
                failure => Err(self.error(path, action, failure)),
            },
        }
    }

    async fn current_client(&self) -> Arc<VaultClient> {
        let guard = self.session.read().await;
        Arc::clone(
            &guard
                .as_ref()
                .expect("ensure_session left a session")
                .client,
        )
    }
}

fn reason(why: &str) -> String {
    let why = why.trim();
    if why.is_empty() {
        String::new()
    } else {
        format!(": {}", why.replace('\n', " "))
    }
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

fn to_document(data: Value) -> SecretBytes {
    SecretBytes::new(serde_json::to_vec(&data).expect("a JSON value serializes"))
}

#[async_trait]
impl SecretStore for VaultStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read(&self, path: &str) -> Result<Document, StoreError> {
        let mount = self.settings.mount.clone();
        if self.settings.kv_version == 2 {
            let response = self
                .with_session(path, "KV v2 read", |client| {
                    let (mount, path) = (mount.clone(), path.to_owned());
                    async move {
                        let endpoint = ReadSecretRequest::builder()
                            .mount(mount)
                            .path(path)
                            .build()
                            .expect("mount and path are set");
                        vaultrs::api::exec_with_result(&*client, endpoint).await
                    }
                })
                .await?;
            if response.data.is_null() {
                return Err(StoreError::NotFound {
                    store: self.name.clone(),
                    path: path.to_owned(),
                    detail: " (the latest version is deleted)".into(),
                });
            }
            Ok(Document {
                version: response.metadata.version.to_string(),
                bytes: to_document(response.data),
            })
        } else {
            let data: Value = self
                .with_session(path, "KV v1 read", |client| {
                    let (mount, path) = (mount.clone(), path.to_owned());
                    async move { vaultrs::kv1::get::<Value>(&*client, &mount, &path).await }
                })
                .await?;
            let bytes = to_document(data);
            Ok(Document {
                version: digest(bytes.expose_secret()),
                bytes,
            })
        }
    }

    async fn write(
        &self,
        path: &str,
        document: SecretBytes,
        expected_version: Option<&str>,
    ) -> Result<String, StoreError> {
        let malformed = |problem: &str| StoreError::Malformed {
            store: self.name.clone(),
            path: path.to_owned(),
            problem: problem.to_owned(),
        };
        let conflict = || StoreError::Conflict {
            store: self.name.clone(),
            path: path.to_owned(),
            expected: expected_version.unwrap_or("(none)").to_owned(),
        };
        let data: HashMap<String, Value> = serde_json::from_slice(document.expose_secret())
            .map_err(|_| malformed("the new document is not a JSON object"))?;
        let mount = self.settings.mount.clone();
        if self.settings.kv_version == 2 {
            let cas = match expected_version {
                None => 0,
                Some(v) => v.parse::<u32>().map_err(|_| conflict())?,
            };
            let result = self
                .with_session(path, "KV v2 write", |client| {
                    let (mount, path, data) = (mount.clone(), path.to_owned(), &data);
                    async move {
                        vaultrs::kv2::set_with_options(
                            &*client,
                            &mount,
                            &path,
                            data,
                            SetSecretRequestOptions { cas },
                        )
                        .await
                    }
                })
                .await;
            match result {
                Ok(meta) => Ok(meta.version.to_string()),
                Err(StoreError::Rejected { detail, .. }) if detail.contains("check-and-set") => {
                    Err(conflict())
                }
                Err(e) => Err(e),
            }
        } else {
            let current = match self.read(path).await {
                Ok(doc) => Some(doc.version),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            if current.as_deref() != expected_version {
                return Err(conflict());
            }
            let borrowed: HashMap<&str, &Value> =
                data.iter().map(|(k, v)| (k.as_str(), v)).collect();
            self.with_session(path, "KV v1 write", |client| {
                let (mount, path, data) = (mount.clone(), path.to_owned(), &borrowed);
                async move { vaultrs::kv1::set(&*client, &mount, &path, data).await }
            })
            .await?;
            Ok(digest(
                to_document(Value::Object(data.into_iter().collect())).expose_secret(),
            ))
        }
    }
}
