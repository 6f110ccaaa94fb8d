//! The `gcp_secret_manager` store: documents are Secret Manager secrets in
//! one project, `path` is the secret id, and a document's version is the
//! secret version number (`"3"`) that Google assigns.
//!
//! Reads access `versions/latest` (the most recently created version, as
//! Google defines it) and check the payload's CRC32C when the service sends
//! one. Credentials are Application Default Credentials, which covers GKE
//! workload identity, a mounted service-account key and the metadata server;
//! with an `endpoint` (an emulator or the test fake) nothing is sent, since
//! an emulator has no use for a token and a real token must not leak to it.
//!
//! ## Compare-and-set on a service that has none
//!
//! `addVersion` takes no precondition, so two rotators that both read
//! version 3 could both add a version 4 and 5, and the second would silently
//! discard the first one's key. The secret resource itself does have an
//! etag, checked by `secrets.patch`, and a write uses it as a lock:
//!
//! 1. get the secret (its etag and annotations), creating it when the writer
//!    expects no version yet;
//! 2. check that `versions/latest` is `expected_version` and enabled;
//! 3. claim the base version: patch the annotations
//!    `credbroker-cas-base = <expected>` and `credbroker-cas-at = <now>` with
//!    the etag from step 1. Of two writers that read the same etag only one
//!    gets through; a writer that reads the secret after a claim on its base
//!    sees that claim and stops;
//! 4. add the version, with `dataCrc32c`.
//!
//! A claim is honoured for [`CLAIM_TTL`], so a writer that died between 3
//! and 4 blocks others only that long; a writer whose step 4 fails releases
//! its claim at once.
//!
//! Every call is bounded by [`REQUEST_TIMEOUT`], the SDK's own retries
//! included, so a hung endpoint turns into [`StoreError::Unavailable`] and
//! the broker keeps serving its last good value.
//!
//! Reads (`versions/latest:access`, what the broker does every refresh) go
//! through a small client of our own on the same credentials, not the SDK:
//! the SDK reads an answer whole, however long, and a hostile or broken
//! endpoint could make the daemon buffer any size. Ours reads at most
//! [`super::MAX_ANSWER_BYTES`] and refuses the rest unread. Writes, which
//! only rotation makes, still use the SDK.

use std::{
    collections::HashMap,
    future::Future,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use base64::Engine as _;
use google_cloud_auth::credentials::{
    Builder as Adc, CacheableResource, Credentials, anonymous::Builder as Anonymous,
};
use google_cloud_gax::{
    error::{
        Error as GaxError,
        rpc::{Code, Status},
    },
    retry_policy::{Aip194Strict, RetryPolicyExt},
};
use google_cloud_secretmanager_v1::{
    client::SecretManagerService,
    model::{Replication, Secret, SecretPayload, replication::Automatic, secret_version::State},
};
use serde_json::Value;

use super::{Document, SecretStore, StoreError, cas, errors::Class};
use crate::{
    config::GcpConfig,
    secret::{SecretBytes, SecretJson},
};

/// Where Secret Manager is, without an `endpoint`.
const DEFAULT_ENDPOINT: &str = "https://secretmanager.googleapis.com";

/// Upper bound on one store operation's every SDK call, retries included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write's claim on a base version keeps other writers off it.
///
/// Longer than the two calls a writer makes after claiming (add the version,
/// or release the claim), each bounded by [`REQUEST_TIMEOUT`].
pub const CLAIM_TTL: Duration = Duration::from_secs(60);

/// Annotation naming the version the last writer wrote on top of.
const CLAIM_BASE: &str = "credbroker-cas-base";
/// Annotation with the time of that claim (RFC 3339).
const CLAIM_AT: &str = "credbroker-cas-at";
/// The claim's base when the writer expected no version at all.
const NO_VERSION: &str = "none";

/// A Secret Manager project as a store.
///
/// Holds no secret itself (the SDK keeps its token), so no `Debug` is needed;
/// there is none, so that nobody adds a derived one that walks the client.
pub struct GcpStore {
    name: String,
    project: String,
    client: SecretManagerService,
    /// Our client for reads, capped (see the module doc).
    http: reqwest::Client,
    /// `https://secretmanager.googleapis.com`, or the configured endpoint.
    endpoint: String,
    /// What reads authenticate with; `None` with an `endpoint` (nothing is
    /// sent to an emulator).
    credentials: Option<Credentials>,
}

/// How to read a refusal: ALREADY_EXISTS, ABORTED or FAILED_PRECONDITION
/// mean a lost compare-and-set race only on the calls that asked for a check
/// (creating the secret, patching it with an etag).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    /// Any call without a precondition.
    Plain,
    /// A create or an etag-checked patch: refusals are conflicts.
    Claim,
}

impl GcpStore {
    /// A store over `config.project`. With `config.endpoint` (e.g.
    /// `http://127.0.0.1:8085`) requests go there without credentials;
    /// otherwise to Google with Application Default Credentials.
    ///
    /// Async because the SDK resolves credentials and the universe domain
    /// while building its client.
    pub async fn new(name: &str, config: &GcpConfig) -> Result<GcpStore, StoreError> {
        // The SDK retries idempotent calls for up to a minute by default; the
        // broker has its own backoff and stale-serving, so bound the SDK's
        // loop by our timeout and keep retries few.
        let mut builder = SecretManagerService::builder()
            .with_retry_policy(
                Aip194Strict
                    .with_attempt_limit(3)
                    .with_time_limit(REQUEST_TIMEOUT),
            )
            .with_attempt_timeout(REQUEST_TIMEOUT);
        let setup_error = |detail: String| StoreError::Rejected {
            store: name.to_owned(),
            path: "(client setup)".to_owned(),
            detail,
        };
        let credentials = if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_credentials(Anonymous::new().build());
            None
        } else {
            // One set of credentials (and token cache) for the SDK and our reads.
            let adc = Adc::default().build().map_err(|e| {
                setup_error(format!(
                    "cannot load Google credentials: {}",
                    crate::text::said(&e.to_string())
                ))
            })?;
            builder = builder.with_credentials(adc.clone());
            Some(adc)
        };
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| setup_error(format!("cannot build the HTTP client: {e}")))?;
        let client = match tokio::time::timeout(REQUEST_TIMEOUT, builder.build()).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(setup_error(format!(
                    "cannot set up the Secret Manager client: {e}"
                )));
            }
            Err(_) => {
                return Err(StoreError::Unavailable {
                    store: name.to_owned(),
                    path: "(client setup)".to_owned(),
                    detail: format!(
                        "setting up the Secret Manager client took over {}s",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                });
            }
        };
        Ok(GcpStore {
            name: name.to_owned(),
            project: config.project.clone(),
            client,
            http,
            endpoint: config
                .endpoint
                .as_deref()
                .unwrap_or(DEFAULT_ENDPOINT)
                .trim_end_matches('/')
                .to_owned(),
            credentials,
        })
    }

    fn secret_name(&self, path: &str) -> String {
        format!("projects/{}/secrets/{}", self.project, path)
    }

    /// Rejects a `path` that is not a secret id, before it is pasted into a
    /// resource name where `a/versions/1` would address something else.
    fn check_path(&self, path: &str) -> Result<(), StoreError> {
        if valid_secret_id(path) {
            Ok(())
        } else {
            Err(StoreError::Rejected {
                store: self.name.clone(),
                path: path.to_owned(),
                detail: "not a Secret Manager secret id (1 to 255 letters, digits, `-`, `_`)"
                    .to_owned(),
            })
        }
    }

    /// Runs one SDK call under [`REQUEST_TIMEOUT`], mapping its error.
    async fn call<T>(
        &self,
        path: &str,
        step: Step,
        fut: impl Future<Output = Result<T, GaxError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_error(path, step, &e)),
            Err(_) => Err(StoreError::Unavailable {
                store: self.name.clone(),
                path: path.to_owned(),
                detail: format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
            }),
        }
    }

    fn map_error(&self, path: &str, step: Step, e: &GaxError) -> StoreError {
        map_error(&self.name, path, step, e)
    }

    fn conflict(&self, path: &str, expected: Option<&str>) -> StoreError {
        cas::conflict(&self.name, path, expected)
    }

    fn malformed(&self, path: &str, problem: String) -> StoreError {
        StoreError::Malformed {
            store: self.name.clone(),
            path: path.to_owned(),
            problem,
        }
    }

    /// The secret, or `None` if it does not exist.
    async fn get_secret(&self, path: &str) -> Result<Option<Secret>, StoreError> {
        let req = self.client.get_secret().set_name(self.secret_name(path));
        match self.call(path, Step::Plain, req.send()).await {
            Ok(s) => Ok(Some(s)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The number and state of `versions/latest`, or `None` if the secret
    /// has no version.
    async fn latest_version(&self, path: &str) -> Result<Option<(String, State)>, StoreError> {
        let req = self
            .client
            .get_secret_version()
            .set_name(format!("{}/versions/latest", self.secret_name(path)));
        match self.call(path, Step::Plain, req.send()).await {
            Ok(v) => {
                let number = version_number(&v.name).ok_or_else(|| {
                    self.malformed(path, "the latest version has no version number".into())
                })?;
                Ok(Some((number.to_owned(), v.state)))
            }
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Step 1 for a writer that expects no version: creates the secret with
    /// the claim already on it, so creating is claiming. `Ok(None)` when
    /// another writer created it first.
    async fn create_claimed(&self, path: &str) -> Result<Option<Secret>, StoreError> {
        let secret = Secret::new()
            .set_replication(Replication::new().set_automatic(Automatic::new()))
            .set_annotations(claim_annotations(
                HashMap::new(),
                NO_VERSION,
                SystemTime::now(),
            ));
        let req = self
            .client
            .create_secret()
            .set_parent(format!("projects/{}", self.project))
            .set_secret_id(path)
            .set_secret(secret);
        match self.call(path, Step::Claim, req.send()).await {
            Ok(s) => Ok(Some(s)),
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Best effort: drops our claim after a failed add, so the writer's
    /// retry (or another writer) need not wait out [`CLAIM_TTL`].
    async fn release_claim(&self, path: &str, claimed: &Secret) {
        let mut annotations = claimed.annotations.clone();
        annotations.remove(CLAIM_BASE);
        annotations.remove(CLAIM_AT);
        let secret = Secret::new()
            .set_name(self.secret_name(path))
            .set_etag(claimed.etag.clone())
            .set_annotations(annotations);
        let req = self
            .client
            .update_secret()
            .set_secret(secret)
            .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(["annotations"]));
        if let Err(e) = self.call(path, Step::Claim, req.send()).await {
            tracing::debug!(store = %self.name, path, error = %e, "could not release a write claim; it expires by itself");
        }
    }
}

impl GcpStore {
    /// `versions/latest:access` of `path`, its answer read to at most
    /// [`super::MAX_ANSWER_BYTES`] (see the module doc).
    async fn access_latest(&self, path: &str) -> Result<SecretJson, StoreError> {
        let url = format!(
            "{}/v1/{}/versions/latest:access",
            self.endpoint,
            self.secret_name(path)
        );
        let mut request = self.http.get(url);
        if let Some(credentials) = &self.credentials {
            match credentials.headers(http::Extensions::new()).await {
                Ok(CacheableResource::New { data, .. }) => request = request.headers(data),
                Ok(CacheableResource::NotModified) => {
                    return Err(self.malformed(path, "no credentials to send".into()));
                }
                Err(e) => {
                    return Err(self.map_error(path, Step::Plain, &GaxError::authentication(e)));
                }
            }
        }
        let response = request.send().await.map_err(|e| {
            let why = if e.is_timeout() {
                format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())
            } else {
                "cannot reach the endpoint".to_owned()
            };
            Class::Transient.error(&self.name, path, format!("AccessSecretVersion: {why}"))
        })?;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = SecretBytes::read_capped(response, super::MAX_ANSWER_BYTES)
            .await
            .map_err(|too_long| {
                Class::Rejected.error(&self.name, path, format!("AccessSecretVersion: {too_long}"))
            })?;
        if !status.is_success() {
            // Google's error body says no more than the status; it holds no payload.
            let payload = bytes::Bytes::copy_from_slice(body.expose_secret());
            let code = status.as_u16();
            let error = match Status::try_from(&payload) {
                Ok(s) => GaxError::service_with_http_metadata(s, Some(code), Some(headers)),
                Err(_) => GaxError::http(code, headers, payload),
            };
            return Err(self.map_error(path, Step::Plain, &error));
        }
        serde_json::from_slice(body.expose_secret())
            .map(SecretJson)
            .map_err(|_| {
                self.malformed(
                    path,
                    "the service's answer does not parse as a Secret Manager response".into(),
                )
            })
    }
}

#[async_trait]
impl SecretStore for GcpStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read(&self, path: &str) -> Result<Document, StoreError> {
        self.check_path(path)?;
        let mut answer = self.access_latest(path).await?;
        let name = answer.0["name"].as_str().unwrap_or_default().to_owned();
        let crc = match &answer.0["payload"]["dataCrc32c"] {
            // int64 is a string in proto3 JSON; a number is read too.
            Value::String(n) => n.parse().ok(),
            n => n.as_i64(),
        };
        let Value::String(data) = answer.take_at("/payload/data") else {
            return Err(self.malformed(path, "the answer has no payload".into()));
        };
        let data = SecretBytes::new(data.into_bytes());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.expose_secret())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(data.expose_secret()))
            .map_err(|_| self.malformed(path, "the payload is not base64".into()))?;
        read_document(&self.name, path, &name, bytes::Bytes::from(decoded), crc)
    }

    async fn write(
        &self,
        path: &str,
        document: SecretBytes,
        expected_version: Option<&str>,
    ) -> Result<String, StoreError> {
        self.check_path(path)?;
        let now = SystemTime::now();

        // 1. The secret, its etag and any claim on it.
        let claimed = match self.get_secret(path).await? {
            None if expected_version.is_some() => return Err(self.conflict(path, expected_version)),
            None => match self.create_claimed(path).await? {
                Some(created) => created,
                None => return Err(self.conflict(path, expected_version)),
            },
            Some(secret) => self.claim(path, secret, expected_version, now).await?,
        };
        self.add_version(path, document, &claimed).await
    }
}

impl GcpStore {
    /// Steps 2 and 3 of a write over an existing secret: the latest version
    /// must still be the one the writer read (`expected`), and the writer
    /// claims it (an annotation, set under the secret's etag) unless another
    /// writer's claim is live.
    async fn claim(
        &self,
        path: &str,
        secret: Secret,
        expected: Option<&str>,
        now: SystemTime,
    ) -> Result<Secret, StoreError> {
        let latest = self.latest_version(path).await?;
        let current = match (&latest, expected) {
            (None, None) => true,
            (Some((n, State::Enabled)), Some(expected)) => n == expected,
            _ => false,
        };
        let base = expected.unwrap_or(NO_VERSION);
        if !current || claim_is_live(&secret.annotations, base, now) {
            return Err(self.conflict(path, expected));
        }
        let update = Secret::new()
            .set_name(self.secret_name(path))
            .set_etag(secret.etag.clone())
            .set_annotations(claim_annotations(secret.annotations, base, now));
        let req = self
            .client
            .update_secret()
            .set_secret(update)
            .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(["annotations"]));
        match self.call(path, Step::Claim, req.send()).await {
            Err(StoreError::Conflict { .. }) => Err(self.conflict(path, expected)),
            result => result,
        }
    }

    /// Step 4: adds `document` as the secret's new version; on failure,
    /// drops the `claimed` claim.
    async fn add_version(
        &self,
        path: &str,
        document: SecretBytes,
        claimed: &Secret,
    ) -> Result<String, StoreError> {
        // The copy into `Bytes` is the SDK's to send; the
        // zeroizing allocator wipes it when the request is dropped.
        let data = bytes::Bytes::copy_from_slice(document.expose_secret());
        let payload = SecretPayload::new()
            .set_data_crc32c(i64::from(crc32c(&data)))
            .set_data(data);
        drop(document);
        let req = self
            .client
            .add_secret_version()
            .set_parent(self.secret_name(path))
            .set_payload(payload);
        match self.call(path, Step::Plain, req.send()).await {
            Ok(v) => version_number(&v.name).map(str::to_owned).ok_or_else(|| {
                self.malformed(path, "the new version has no version number".into())
            }),
            Err(e) => {
                self.release_claim(path, claimed).await;
                Err(e)
            }
        }
    }
}

/// The document of an AccessSecretVersion answer: the version `name`
/// (`…/versions/N`), the payload `data` and its CRC32C when sent.
fn read_document(
    store: &str,
    path: &str,
    name: &str,
    data: bytes::Bytes,
    crc: Option<i64>,
) -> Result<Document, StoreError> {
    let version = version_number(name)
        .ok_or_else(|| StoreError::Malformed {
            store: store.to_owned(),
            path: path.to_owned(),
            problem: "the answer names no version".into(),
        })?
        .to_owned();
    if let Some(expected) = crc
        && i64::from(crc32c(&data)) != expected
    {
        // Corrupted on the way: another read may well be fine.
        return Err(StoreError::Unavailable {
            store: store.to_owned(),
            path: path.to_owned(),
            detail: format!("version {version}: the payload does not match its CRC32C"),
        });
    }
    // `Bytes` → `Vec` reuses the buffer the SDK decoded into when it is the
    // only owner, which it is here: no extra copy of the secret.
    let bytes = SecretBytes::new(Vec::from(data));
    Ok(Document { bytes, version })
}

/// For the fuzz target (`fuzz/`): the document of an answer (version
/// `name`, `data`, its CRC32C), whether `id` is taken for a secret id, and
/// whether a claim by `annotations` on `base` is live at `now`. Not an API.
#[doc(hidden)]
pub fn fuzz_answer(
    name: &str,
    data: &[u8],
    crc: Option<i64>,
    id: &str,
    annotations: &HashMap<String, String>,
    base: &str,
    now: SystemTime,
) -> (Result<Document, StoreError>, bool, bool) {
    let data = bytes::Bytes::copy_from_slice(data);
    (
        read_document("gcp", "p", name, data, crc),
        valid_secret_id(id),
        claim_is_live(annotations, base, now),
    )
}

/// The names of the annotations a claim is made of.
#[doc(hidden)]
pub const CLAIM_KEYS: [&str; 2] = [CLAIM_BASE, CLAIM_AT];

/// The annotations of a secret with a claim on `base` made at `at`.
fn claim_annotations(
    mut annotations: HashMap<String, String>,
    base: &str,
    at: SystemTime,
) -> HashMap<String, String> {
    annotations.insert(CLAIM_BASE.to_owned(), base.to_owned());
    annotations.insert(
        CLAIM_AT.to_owned(),
        humantime::format_rfc3339_seconds(at).to_string(),
    );
    annotations
}

/// Whether another writer claimed `base` less than [`CLAIM_TTL`] ago. A claim
/// with an unreadable time is treated as expired, so it cannot block forever.
fn claim_is_live(annotations: &HashMap<String, String>, base: &str, now: SystemTime) -> bool {
    if annotations.get(CLAIM_BASE).map(String::as_str) != Some(base) {
        return false;
    }
    let Some(at) = annotations
        .get(CLAIM_AT)
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
    else {
        return false;
    };
    // A claim from the future (clock skew) counts as made now, and one
    // further ahead than CLAIM_TTL as expired: no time can block forever.
    match now.duration_since(at) {
        Ok(age) => age < CLAIM_TTL,
        Err(ahead) => ahead.duration() < CLAIM_TTL,
    }
}

/// The last segment of `projects/P/secrets/S/versions/N`, when it is a number.
fn version_number(name: &str) -> Option<&str> {
    let (_, n) = name.rsplit_once("/versions/")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(n)
}

/// Secret Manager's rule for secret ids.
fn valid_secret_id(id: &str) -> bool {
    (1..=255).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Maps an SDK error to the store's error. Messages come from the status the
/// service sent (which never quotes payloads) or name the error's kind; the
/// SDK's parse errors are not quoted, since they can quote the response.
fn map_error(store: &str, path: &str, step: Step, e: &GaxError) -> StoreError {
    let http = e.http_status_code();
    if let Some(status) = e.status() {
        let detail = match http {
            Some(h) => format!(
                "{} ({h}): {}",
                status.code.name(),
                crate::text::said(&status.message)
            ),
            None => format!(
                "{}: {}",
                status.code.name(),
                crate::text::said(&status.message)
            ),
        };
        let class = match status.code {
            // An etag refusal (Google: FAILED_PRECONDITION; ABORTED in
            // places) or a create that lost the race, where we asked.
            Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists
                if step == Step::Claim =>
            {
                return StoreError::Conflict {
                    store: store.to_owned(),
                    path: path.to_owned(),
                    expected: String::new(),
                };
            }
            Code::NotFound => Class::NotFound,
            Code::PermissionDenied | Code::Unauthenticated => Class::Denied,
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled => Class::Transient,
            _ if http.is_some_and(|h| h >= 500 || h == 429) => Class::Transient,
            // FAILED_PRECONDITION on a read: the version is disabled or destroyed.
            _ => Class::Rejected,
        };
        return class.error(store, path, detail);
    }
    if let Some(h) = http {
        // An HTTP error without Google's error body (a proxy, a load balancer).
        return Class::of_http(h).error(store, path, format!("HTTP {h}"));
    }
    if e.is_timeout() || e.is_connect() || e.is_io() || e.is_transport() || e.is_exhausted() {
        return Class::Transient.error(store, path, crate::text::said(&e.to_string()));
    }
    if e.is_authentication() {
        // A transient failure to get a token (metadata server busy) is
        // retried like any outage; a bad credential is not.
        let class = if e.is_transient_and_before_rpc() {
            Class::Transient
        } else {
            Class::Rejected
        };
        let e = crate::text::said(&e.to_string());
        return class.error(store, path, format!("cannot get Google credentials: {e}"));
    }
    if e.is_deserialization() {
        return StoreError::Malformed {
            store: store.to_owned(),
            path: path.to_owned(),
            problem: "the service's answer does not parse as a Secret Manager response".into(),
        };
    }
    Class::Rejected.error(
        store,
        path,
        "the request could not be made (bad resource name or request)".into(),
    )
}

/// CRC-32C (Castagnoli), the checksum Secret Manager keeps per version.
fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_gax::error::rpc::Status;

    // Only the SDK's public constructors: its transport-level ones are
    // `doc(hidden)`. The end-to-end test against the fake covers those.
    fn service(code: Code) -> GaxError {
        GaxError::service(Status::default().set_code(code).set_message("msg"))
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"hello"), 2_591_144_780);
    }

    #[test]
    fn version_number_is_the_last_numeric_segment() {
        assert_eq!(
            version_number("projects/p/secrets/s/versions/12"),
            Some("12")
        );
        assert_eq!(
            version_number("projects/123/secrets/s/versions/1"),
            Some("1")
        );
        assert_eq!(version_number("projects/p/secrets/s/versions/latest"), None);
        assert_eq!(version_number("projects/p/secrets/s/versions/"), None);
        assert_eq!(version_number("projects/p/secrets/s"), None);
    }

    #[test]
    fn secret_ids_are_checked() {
        assert!(valid_secret_id("twilio-verify_1"));
        assert!(!valid_secret_id(""));
        assert!(!valid_secret_id("a/versions/1"));
        assert!(!valid_secret_id("twilio.verify"));
        assert!(!valid_secret_id(&"a".repeat(256)));
    }

    #[test]
    fn claims_expire_and_are_per_base() {
        let now = SystemTime::now();
        let fresh = claim_annotations(HashMap::new(), "3", now);
        assert!(claim_is_live(&fresh, "3", now));
        assert!(!claim_is_live(&fresh, "4", now), "a claim on another base");
        assert!(!claim_is_live(
            &fresh,
            "3",
            now + CLAIM_TTL + Duration::from_secs(1)
        ));
        assert!(!claim_is_live(&HashMap::new(), NO_VERSION, now));
        let mut garbled = fresh.clone();
        garbled.insert(CLAIM_AT.into(), "yesterday".into());
        assert!(!claim_is_live(&garbled, "3", now));
        // A claim from the future: live for a skew under CLAIM_TTL, never
        // for ever (a claim dated year 9999 blocked every write before).
        let skewed = claim_annotations(HashMap::new(), "3", now + Duration::from_secs(60));
        assert!(claim_is_live(&skewed, "3", now));
        let far = claim_annotations(HashMap::new(), "3", now + 100 * CLAIM_TTL);
        assert!(
            !claim_is_live(&far, "3", now),
            "a claim far in the future blocks for ever"
        );
        // Other annotations survive a claim.
        let mut other = HashMap::new();
        other.insert("owner".to_owned(), "team".to_owned());
        assert_eq!(claim_annotations(other, "3", now)["owner"], "team");
    }

    #[test]
    fn errors_map_to_store_errors() {
        let m = |e: GaxError, step| map_error("gcp", "verify", step, &e);
        assert!(matches!(
            m(service(Code::NotFound), Step::Plain),
            StoreError::NotFound { .. }
        ));
        assert!(matches!(
            m(service(Code::PermissionDenied), Step::Plain),
            StoreError::PermissionDenied { .. }
        ));
        assert!(matches!(
            m(service(Code::Unauthenticated), Step::Plain),
            StoreError::PermissionDenied { .. }
        ));
        // A disabled or destroyed version is permanent on a read...
        let e = m(service(Code::FailedPrecondition), Step::Plain);
        assert!(matches!(e, StoreError::Rejected { .. }) && !e.is_transient());
        // ...and an etag refusal on a claim is a lost race.
        assert!(matches!(
            m(service(Code::FailedPrecondition), Step::Claim),
            StoreError::Conflict { .. }
        ));
        assert!(matches!(
            m(service(Code::AlreadyExists), Step::Claim),
            StoreError::Conflict { .. }
        ));
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Internal,
            Code::Aborted,
        ] {
            let e = m(service(code), Step::Plain);
            assert!(e.is_transient(), "{code:?}: {e}");
        }
        assert!(matches!(
            m(service(Code::InvalidArgument), Step::Plain),
            StoreError::Rejected { .. }
        ));
        assert!(m(GaxError::timeout("slow"), Step::Plain).is_transient());
        assert!(m(GaxError::exhausted("retries"), Step::Plain).is_transient());
    }

    #[test]
    fn messages_name_store_and_path_never_the_response_body() {
        let e = map_error(
            "gcp",
            "verify",
            Step::Plain,
            &GaxError::deser("invalid type: string \"f00dfeedf00dfeedf00dfeedf00dfeed\""),
        );
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("gcp") && shown.contains("verify"), "{shown}");
        assert!(!shown.contains("f00dfeed"), "{shown}");
    }
}
