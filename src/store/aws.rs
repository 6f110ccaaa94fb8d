//! The `aws_secrets_manager` store.
//!
//! Credentials come from the AWS default chain (environment, profile, web
//! identity / IRSA, container and instance metadata); region and endpoint
//! from the config or the standard AWS environment variables. Reads always
//! ask for `AWSCURRENT` explicitly (some emulators keep answering with an
//! old default version otherwise). Writes follow the staging-label protocol
//! AWS's own rotation uses: put the new version as `AWSPENDING`, then move
//! `AWSCURRENT` onto it from the version the writer read, which fails if
//! someone else moved it first — that is the compare-and-set. Secrets that
//! AWS rotates itself (its managed Twilio secrets, camelCase fields) are
//! served as they are.
//!
//! Answers are read to at most [`super::MAX_ANSWER_BYTES`] (a secret is
//! 64 KiB at most): the SDK would otherwise buffer a hostile or broken
//! endpoint's answer whole, however long.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_secretsmanager::{
    Client,
    config::{
        ConfigBag, Intercept, RuntimeComponents, http::HttpResponse,
        interceptors::BeforeDeserializationInterceptorContextMut,
    },
    error::{BoxError, ProvideErrorMetadata, SdkError},
    primitives::Blob,
};
use aws_smithy_types::body::SdkBody;

use super::{Document, SecretStore, StoreError, cas, errors::Class};
use crate::{config::AwsConfig, secret::SecretBytes};

/// How long one call may take, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";

/// An AWS Secrets Manager client for one `[stores.NAME]`.
pub struct AwsStore {
    name: String,
    client: Client,
}

impl AwsStore {
    /// Loads the AWS default chain, with `region` and `endpoint_url` from
    /// the config taking precedence over the environment.
    pub async fn new(name: &str, config: &AwsConfig) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(OPERATION_TIMEOUT)
                    .connect_timeout(Duration::from_secs(3))
                    .build(),
            )
            // The broker retries with its own backoff and serves stale meanwhile.
            .retry_config(RetryConfig::standard().with_max_attempts(2));
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        let config = aws_sdk_secretsmanager::config::Builder::from(&sdk)
            .interceptor(CapAnswers)
            .build();
        Self::with_client(name, Client::from_conf(config))
    }

    /// A store on a client the caller built (its own credentials provider,
    /// say); `new` is the usual way.
    pub fn with_client(name: &str, client: Client) -> Self {
        Self {
            name: name.to_owned(),
            client,
        }
    }

    /// Maps an SDK error: what the store should do about it, never a secret.
    fn error<E>(&self, path: &str, action: &str, err: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (class, detail) = match &err {
            SdkError::TimeoutError(_) => (Class::Transient, format!("{action}: timed out")),
            SdkError::DispatchFailure(f) => (
                Class::Transient,
                format!(
                    "{action}: {}",
                    if f.is_io() {
                        "cannot reach the endpoint"
                    } else if f.is_timeout() {
                        "timed out"
                    } else {
                        "request failed"
                    }
                ),
            ),
            SdkError::ResponseError(_) if too_long(&err) => (
                Class::Rejected,
                format!(
                    "{action}: the answer is larger than {} bytes; not read",
                    super::MAX_ANSWER_BYTES
                ),
            ),
            SdkError::ResponseError(_) => {
                (Class::Transient, format!("{action}: unreadable response"))
            }
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or("unknown");
                let status = service.raw().status().as_u16();
                let detail = service_detail(action, code, status, service.err().message());
                (class_of(code, status), detail)
            }
            _ => (
                Class::Rejected,
                format!("{action}: cannot build the request"),
            ),
        };
        class.error(&self.name, path, detail)
    }

    /// The version id holding `AWSCURRENT`, if the secret exists.
    async fn current_version(&self, path: &str) -> Result<Option<String>, StoreError> {
        match self.client.describe_secret().secret_id(path).send().await {
            Ok(out) => Ok(out.version_ids_to_stages.and_then(|versions| {
                versions
                    .into_iter()
                    .find(|(_, stages)| stages.iter().any(|s| s == CURRENT))
                    .map(|(id, _)| id)
            })),
            Err(e) => match self.error(path, "DescribeSecret", e) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }
}

/// Reads every answer through a cap of [`super::MAX_ANSWER_BYTES`]: the
/// SDK reads a body whole before it deserializes it, and this makes that
/// read fail (as a response error) as soon as the body passes the cap.
#[derive(Debug)]
struct CapAnswers;

impl Intercept for CapAnswers {
    fn name(&self) -> &'static str {
        "CapAnswers"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.response_mut().body_mut();
        let whole = std::mem::replace(body, SdkBody::taken());
        *body =
            SdkBody::from_body_1_x(http_body_util::Limited::new(whole, super::MAX_ANSWER_BYTES));
        Ok(())
    }
}

/// Whether `error` (or what caused it) is the cap of [`CapAnswers`].
fn too_long(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// What an AWS error `code` (or, for other codes, the HTTP `status`) means.
fn class_of(code: &str, status: u16) -> Class {
    match code {
        "ResourceNotFoundException" => Class::NotFound,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException" => Class::Denied,
        "ThrottlingException" | "InternalServiceError" | "ServiceUnavailable" => Class::Transient,
        // Any other code: what its HTTP status says, except that a 404
        // without ResourceNotFoundException is not taken for a missing
        // secret.
        _ => match Class::of_http(status) {
            Class::NotFound => Class::Rejected,
            class => class,
        },
    }
}

/// For the fuzz target (`fuzz/`): the error an AWS service error (`code`,
/// HTTP `status`, `message`) becomes, as `AwsStore` words it. Not an API.
#[doc(hidden)]
pub fn fuzz_error(code: &str, status: u16, message: &str) -> StoreError {
    let detail = service_detail("GetSecretValue", code, status, Some(message));
    class_of(code, status).error("aws", "p", detail)
}

/// The document of a GetSecretValue answer: its version id and the secret,
/// as text or binary. The SDK's buffers are moved into zeroizing ones; no copy.
fn document(
    store: &str,
    path: &str,
    version: Option<String>,
    text: Option<String>,
    binary: Option<Blob>,
) -> Result<Document, StoreError> {
    let malformed = |problem: &str| StoreError::Malformed {
        store: store.to_owned(),
        path: path.to_owned(),
        problem: problem.into(),
    };
    let bytes = match (text, binary) {
        (Some(s), _) => SecretBytes::new(s.into_bytes()),
        (None, Some(b)) => SecretBytes::new(b.into_inner()),
        (None, None) => {
            return Err(malformed(
                "the secret has neither SecretString nor SecretBinary",
            ));
        }
    };
    // The version is the compare-and-set's expected value: none is no answer.
    let version = version
        .filter(|v| !v.is_empty())
        .ok_or_else(|| malformed("the answer names no VersionId"))?;
    Ok(Document { bytes, version })
}

/// For the fuzz target (`fuzz/`): the document a GetSecretValue answer
/// (`version` id, SecretString `text`, SecretBinary `binary`) gives. Not an API.
#[doc(hidden)]
pub fn fuzz_read(
    version: Option<&str>,
    text: Option<&str>,
    binary: Option<&[u8]>,
) -> Result<Document, StoreError> {
    document(
        "aws",
        "p",
        version.map(str::to_owned),
        text.map(str::to_owned),
        binary.map(Blob::new),
    )
}

/// What an error says of the service's answer: the action, its code and
/// status, and its message, cut.
fn service_detail(action: &str, code: &str, status: u16, message: Option<&str>) -> String {
    format!(
        "{action}: {} (HTTP {status}){}",
        crate::text::said(code),
        message
            .map(|m| format!(": {}", crate::text::said(m)))
            .unwrap_or_default()
    )
}

#[async_trait]
impl SecretStore for AwsStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read(&self, path: &str) -> Result<Document, StoreError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(path)
            .version_stage(CURRENT)
            .send()
            .await
            .map_err(|e| self.error(path, "GetSecretValue", e))?;
        document(
            &self.name,
            path,
            out.version_id,
            out.secret_string,
            out.secret_binary,
        )
    }

    async fn write(
        &self,
        path: &str,
        document: SecretBytes,
        expected_version: Option<&str>,
    ) -> Result<String, StoreError> {
        let text =
            std::str::from_utf8(document.expose_secret()).map_err(|_| StoreError::Malformed {
                store: self.name.clone(),
                path: path.to_owned(),
                problem: "the new document is not UTF-8".into(),
            })?;
        let current = self.current_version(path).await?;
        cas::check(&self.name, path, current.as_deref(), expected_version)?;
        match expected_version {
            None => self.create(path, text).await,
            Some(expected) => self.replace(path, text, expected).await,
        }
    }
}

impl AwsStore {
    /// A new secret: creation itself is the compare-and-set.
    async fn create(&self, path: &str, text: &str) -> Result<String, StoreError> {
        let token = uuid::Uuid::new_v4().to_string();
        let out = self
            .client
            .create_secret()
            .name(path)
            .client_request_token(&token)
            .secret_string(text)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_exists_exception())
                {
                    cas::conflict(&self.name, path, None)
                } else {
                    self.error(path, "CreateSecret", e)
                }
            })?;
        Ok(out.version_id.unwrap_or(token))
    }

    /// A new version of secret `path` whose AWSCURRENT is `expected`: put as
    /// AWSPENDING, then AWSCURRENT moved onto it from `expected` (refused
    /// when AWSCURRENT has moved on: the compare-and-set).
    async fn replace(&self, path: &str, text: &str, expected: &str) -> Result<String, StoreError> {
        let conflict = || cas::conflict(&self.name, path, Some(expected));
        let token = uuid::Uuid::new_v4().to_string();
        let put = self
            .client
            .put_secret_value()
            .secret_id(path)
            .client_request_token(&token)
            .secret_string(text)
            .version_stages(PENDING)
            .send()
            .await
            .map_err(|e| self.error(path, "PutSecretValue", e))?;
        let new_version = put.version_id.unwrap_or(token);
        self.client
            .update_secret_version_stage()
            .secret_id(path)
            .version_stage(CURRENT)
            .move_to_version_id(&new_version)
            .remove_from_version_id(expected)
            .send()
            .await
            .map_err(|e| {
                // AWSCURRENT is no longer on the version we read: we lost.
                if e.as_service_error()
                    .is_some_and(|s| s.is_invalid_parameter_exception())
                {
                    conflict()
                } else {
                    self.error(path, "UpdateSecretVersionStage", e)
                }
            })?;
        // Belt and braces for emulators that do not check RemoveFromVersionId.
        if self.current_version(path).await?.as_deref() != Some(new_version.as_str()) {
            return Err(conflict());
        }
        // The write is done; AWSPENDING is for versions not yet promoted.
        if let Err(e) = self
            .client
            .update_secret_version_stage()
            .secret_id(path)
            .version_stage(PENDING)
            .remove_from_version_id(&new_version)
            .send()
            .await
        {
            let e = self.error(path, "UpdateSecretVersionStage", e);
            tracing::warn!(store = %self.name, %path, error = %e, "cannot remove AWSPENDING from the promoted version");
        }
        Ok(new_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_gives_its_secret_and_version_as_they_are() {
        let doc = fuzz_read(Some("v1"), Some(r#"{"accountSid":"AC1"}"#), Some(b"x")).unwrap();
        assert_eq!(doc.bytes.expose_secret(), br#"{"accountSid":"AC1"}"#);
        assert_eq!(doc.version, "v1");
        let doc = fuzz_read(Some("v2"), None, Some(b"\xff\x00")).unwrap();
        assert_eq!(doc.bytes.expose_secret(), b"\xff\x00");
    }

    /// The version is what the next write's compare-and-set expects: an
    /// answer without one is refused rather than read as version "".
    #[test]
    fn an_answer_without_a_version_or_a_secret_is_malformed() {
        for (version, text) in [
            (None, Some("{}")),
            (Some(""), Some("{}")),
            (Some("v1"), None),
        ] {
            let e = fuzz_read(version, text, None).unwrap_err();
            assert!(matches!(e, StoreError::Malformed { .. }), "{e}");
        }
    }
}
