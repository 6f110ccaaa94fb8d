//! Secret stores: where credential documents are read from and, for
//! rotation, written back to.
//!
//! Every backend implements [`SecretStore`] and is chosen by the `type` of
//! its `[stores.NAME]` table. A store deals in whole documents (JSON bytes,
//! held as [`SecretBytes`]) and opaque version ids; parsing them is
//! `secret`'s job. Writes are compare-and-set on the version read, which is
//! what keeps two rotators from both winning.

#[cfg(feature = "aws")]
pub mod aws;
mod cas;
mod errors;
pub mod file;
#[cfg(feature = "gcp")]
pub mod gcp;
#[cfg(feature = "vault")]
pub mod vault;

use std::{io, sync::Arc};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::{config::StoreConfig, secret::SecretBytes};

/// Largest answer read from a store's server. A document is a few hundred
/// bytes (a secret is 64 KiB at most in AWS and GCP), a Vault login answer
/// a few KiB; a longer answer fails the call unread, so a hostile or broken
/// server cannot make the daemon hold more.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A document as the store holds it, with the store's version id.
pub struct Document {
    /// The JSON document.
    pub bytes: SecretBytes,
    /// The store's version id; equal ids mean equal documents.
    pub version: String,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("bytes", &self.bytes)
            .field("version", &self.version)
            .finish()
    }
}

/// A backend that holds credential documents.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// The `[stores.NAME]` key, for messages.
    fn name(&self) -> &str;

    /// Reads the document at `path`.
    async fn read(&self, path: &str) -> Result<Document, StoreError>;

    /// Writes `document` at `path` if the store still holds `expected_version`
    /// there (`None`: only if nothing is there yet). Returns the new version.
    async fn write(
        &self,
        path: &str,
        document: SecretBytes,
        expected_version: Option<&str>,
    ) -> Result<String, StoreError>;

    /// Forgets what the store keeps between reads (the file store's parse
    /// of its whole file, every document in it): the broker calls it when a
    /// burst of reads is over, such as the first load of every credential,
    /// so those copies are wiped now rather than when they expire.
    fn forget_cached_reads(&self) {}

    /// A counter that moves whenever the store knows its content changed
    /// (inotify for files), so the broker need not wait for its next refresh.
    fn changes(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// Why a store read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Nothing at that path.
    #[error("store `{store}`: `{path}` was not found{detail}")]
    NotFound {
        /// Store name.
        store: String,
        /// Document path.
        path: String,
        /// Extra context, e.g. the file read.
        detail: String,
    },
    /// The store refused us.
    #[error("store `{store}`: permission denied reading `{path}`{detail}")]
    PermissionDenied {
        /// Store name.
        store: String,
        /// Document path.
        path: String,
        /// Extra context.
        detail: String,
    },
    /// The store answered with something that is not a document container.
    #[error("store `{store}`: `{path}`: {problem}")]
    Malformed {
        /// Store name.
        store: String,
        /// Document path.
        path: String,
        /// What was wrong, never the content.
        problem: String,
    },
    /// A compare-and-set write lost: someone else wrote first.
    #[error("store `{store}`: `{path}` changed since version {expected}; write refused")]
    Conflict {
        /// Store name.
        store: String,
        /// Document path.
        path: String,
        /// The version the writer had read.
        expected: String,
    },
    /// An I/O or network failure; may pass.
    #[error("store `{store}`: `{path}`: {source}")]
    Io {
        /// Store name.
        store: String,
        /// Document path.
        path: String,
        /// The failure.
        source: io::Error,
    },
    /// The store could not be reached, timed out, throttled us or answered
    /// with a server error: retrying may help.
    #[error("store `{store}`: `{path}`: store unavailable: {detail}")]
    Unavailable {
        /// Store name.
        store: String,
        /// Document path.
        path: String,
        /// What happened (status, error kind), never a secret.
        detail: String,
    },
    /// The store refused the request for another reason (login failed, a
    /// 4xx other than 403/404, a disabled or destroyed version).
    #[error("store `{store}`: `{path}`: {detail}")]
    Rejected {
        /// Store name.
        store: String,
        /// Document path.
        path: String,
        /// What happened, never a secret.
        detail: String,
    },
    /// A store type this build cannot construct.
    #[error("store `{store}`: type `{kind}` is not available in this build of credbroker")]
    Unsupported {
        /// Store name.
        store: String,
        /// The `type` value.
        kind: String,
    },
}

impl StoreError {
    /// Whether retrying may help (I/O, timeouts, 5xx); the broker serves the
    /// last good value meanwhile. Permanent errors (not found, denied, bad
    /// content) are reported at once.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ),
            StoreError::Unavailable { .. } => true,
            _ => false,
        }
    }
}

/// A short digest of a document, its version where the backend has none
/// (a file, Vault KV v1): equal documents, equal versions.
pub(crate) fn digest_version(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(bytes)[..8])
}

/// What stores take from the process environment, taken out of it once in
/// `main` before any thread starts (`hygiene::take_env`), so tests can pass
/// their own (the AWS and GCP SDKs read theirs themselves).
#[derive(Clone, Default)]
pub struct StoreEnv {
    /// `VAULT_TOKEN`.
    pub vault_token: Option<crate::secret::SecretString>,
}

impl StoreEnv {
    /// `vault_token` as `VAULT_TOKEN` held it (empty is unset).
    pub fn new(vault_token: Option<String>) -> Self {
        Self {
            vault_token: vault_token
                .filter(|t| !t.is_empty())
                .map(crate::secret::SecretString::new),
        }
    }
}

/// Builds every `[stores.NAME]` of `config`.
pub async fn build_all(
    config: &crate::config::Config,
    env: &StoreEnv,
) -> Result<std::collections::BTreeMap<String, Arc<dyn SecretStore>>, StoreError> {
    let mut stores = std::collections::BTreeMap::new();
    for (name, cfg) in &config.stores {
        stores.insert(name.clone(), build(name, cfg, env).await?);
    }
    Ok(stores)
}

/// Builds the store `name` from its config.
pub async fn build(
    name: &str,
    config: &StoreConfig,
    env: &StoreEnv,
) -> Result<Arc<dyn SecretStore>, StoreError> {
    match config {
        StoreConfig::File(c) => Ok(Arc::new(file::FileStore::new(name, c.path.clone()))),
        #[cfg(feature = "aws")]
        StoreConfig::AwsSecretsManager(c) => Ok(Arc::new(aws::AwsStore::new(name, c).await)),
        #[cfg(feature = "vault")]
        StoreConfig::Vault(c) => Ok(Arc::new(vault::VaultStore::new(
            name,
            c.clone(),
            env.vault_token.clone(),
        )?)),
        #[cfg(feature = "gcp")]
        StoreConfig::GcpSecretManager(c) => Ok(Arc::new(gcp::GcpStore::new(name, c).await?)),
        #[allow(unreachable_patterns)]
        other => Err(StoreError::Unsupported {
            store: name.to_owned(),
            kind: other.type_name().to_owned(),
        }),
    }
}
