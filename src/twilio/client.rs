//! A small Twilio REST client: exactly the calls rotation needs.
//!
//! - API keys: create and delete through IAM v1 (`/v1/Keys`), list through
//!   the 2010 API (`/2010-04-01/Accounts/{sid}/Keys.json`), which pages by
//!   account without extra parameters;
//! - Auth Tokens: create and delete the secondary, promote it (accounts v1);
//! - the `rotation.validation_url` read (by default
//!   `GET /2010-04-01/Accounts/{sid}/Messages.json?PageSize=1`) that tests a
//!   credential: a read every key type but a narrow Restricted key may make.
//!   `/Accounts/{sid}.json` is no test: Twilio refuses it to Standard keys.
//!
//! Every call authenticates with HTTP Basic from a [`TwilioCredential`]
//! (Account SID + Auth Token, or API Key SID + Secret) and never logs or
//! returns a secret: errors carry the HTTP status and Twilio's error code
//! and message only.
//!
//! Retries: a read or delete is retried on 429 (after `Retry-After` when
//! Twilio sends one), 5xx and network failures, with [`crate::retry`]'s
//! backoff. A create (`POST /v1/Keys`, the secondary Auth Token) is not
//! idempotent: it is retried only when the request provably never reached
//! Twilio (the connection could not be made). After any other failure the
//! rotation step fails and stays resumable; a key that Twilio made anyway
//! carries our friendly-name prefix and the orphan sweep deletes it.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use crate::credential::{ApiKeySid, Secret, TwilioCredential};
use crate::secret::{SecretBytes, SecretJson, SecretString};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts per call when Twilio answers 429 or 5xx, or cannot be reached.
const ATTEMPTS: u32 = 4;
/// First wait between attempts; it doubles, with jitter, up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// Longest wait between attempts, `Retry-After` included: a longer
/// `Retry-After` is cut to this, so one call never waits for minutes.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Largest answer read from Twilio (a page of 1,000 keys is a few hundred
/// KiB); a longer one is refused, not buffered.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Most pages of a key list followed (1,000 keys each).
pub const MAX_PAGES: usize = 100;

/// Whether a request may be sent again after a failure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// A read, a delete, a promote: repeating it does no harm.
    Idempotent,
    /// A create: only when the connection was never made, so Twilio cannot
    /// have acted on it.
    OnlyUnsent,
}

/// Why a Twilio call failed.
#[derive(Debug, thiserror::Error)]
pub enum TwilioError {
    /// Twilio refused the credential (401) or the action (403).
    #[error("Twilio {action}: refused the credential (HTTP {status}{detail})")]
    Unauthorized {
        /// What we tried.
        action: String,
        /// 401 or 403.
        status: u16,
        /// Twilio's error code: 20003 "Authenticate" (a wrong credential,
        /// a key not yet working, or a Standard key on `/Accounts` or Keys),
        /// 70051 (a Restricted key outside its policy).
        code: Option<u64>,
        /// Twilio's code and message.
        detail: String,
    },
    /// Twilio could not be reached, or kept answering 429/5xx.
    #[error("Twilio {action}: unavailable ({detail})")]
    Unavailable {
        /// What we tried.
        action: String,
        /// What happened.
        detail: String,
    },
    /// Any other refusal (400, 404, …).
    #[error("Twilio {action}: HTTP {status}{detail}")]
    Rejected {
        /// What we tried.
        action: String,
        /// The HTTP status.
        status: u16,
        /// Twilio's code and message.
        detail: String,
    },
    /// The credential cannot make this call: an `oauth_client` where an
    /// Auth Token or API key is needed (an `admin_credential`, a rotation).
    #[error(
        "Twilio {action}: an oauth_client credential cannot make this call; use an Auth Token or an API key"
    )]
    WrongKind {
        /// What we tried.
        action: String,
    },
    /// An answer we could not read.
    #[error("Twilio {action}: {detail}")]
    Malformed {
        /// What we tried.
        action: String,
        /// What was missing.
        detail: String,
    },
}

impl TwilioError {
    /// 404: the thing is not there (a key already deleted, no secondary token).
    pub fn is_not_found(&self) -> bool {
        matches!(self, TwilioError::Rejected { status: 404, .. })
    }

    /// Whether waiting may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, TwilioError::Unavailable { .. })
    }

    /// Twilio's 20003 "Authenticate": what a key or secondary Auth Token
    /// just created answers until it has propagated at Twilio.
    pub fn is_authenticate(&self) -> bool {
        matches!(
            self,
            TwilioError::Unauthorized {
                code: Some(AUTHENTICATE),
                ..
            }
        )
    }
}

/// Twilio's error code for a credential it does not accept.
pub const AUTHENTICATE: u64 = 20003;

/// A key as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// `SK…`.
    pub sid: String,
    /// The name given at creation.
    pub friendly_name: String,
}

/// A key just created: the only time Twilio shows its secret.
pub struct NewKey {
    /// `SK…`.
    pub sid: ApiKeySid,
    /// The key's secret.
    pub secret: SecretString,
}

/// Where Twilio's APIs are (`[twilio]` in the config; tests point them at
/// a fake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// REST API (`/2010-04-01/...`).
    pub api_base: String,
    /// IAM (`/v1/Keys`).
    pub iam_base: String,
    /// Accounts (`/v1/AuthTokens/...`).
    pub accounts_base: String,
    /// OAuth (`/v2/token`).
    pub oauth_base: String,
}

/// The Twilio REST API at the configured base URLs.
#[derive(Clone)]
pub struct TwilioClient {
    /// Built on first use: a daemon that never calls Twilio never runs (and
    /// keeps resident) the TLS setup and never loads the root certificates.
    http: Arc<OnceLock<reqwest::Client>>,
    bases: Endpoints,
}

impl TwilioClient {
    /// A client for the `[twilio]` base URLs. The HTTP client is set up at
    /// the first request; a failure there is that request's error.
    pub fn new(bases: Endpoints) -> Self {
        Self {
            http: Arc::default(),
            bases,
        }
    }

    fn build_http() -> Result<reqwest::Client, TwilioError> {
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("credbroker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TwilioError::Malformed {
                action: "client setup".into(),
                detail: e.to_string(),
            })
    }

    /// The base URLs.
    pub(super) fn bases(&self) -> &Endpoints {
        &self.bases
    }

    pub(super) fn http(&self) -> Result<&reqwest::Client, TwilioError> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let built = Self::build_http()?;
        Ok(self.http.get_or_init(|| built))
    }

    /// Sends a request built by `build` with Basic auth from `auth`,
    /// retrying as `retry` allows (see the module doc).
    pub(super) async fn send(
        &self,
        action: &str,
        auth: &TwilioCredential,
        retry: Retry,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<SecretJson, TwilioError> {
        let (user, password) = basic(action, auth)?;
        let mut last = String::new();
        let mut wait = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let backoff = crate::retry::backoff(attempt, FIRST_WAIT, MAX_WAIT);
                tokio::time::sleep(wait.take().unwrap_or(backoff)).await;
            }
            let response = match build(self.http()?)
                .basic_auth(user, Some(password.expose_secret()))
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last = if e.is_timeout() {
                        "no answer in time".into()
                    } else {
                        "cannot reach Twilio".into()
                    };
                    if retry == Retry::OnlyUnsent && !e.is_connect() {
                        return Err(not_retried(action, &last));
                    }
                    continue;
                }
            };
            match answer(action, response).await {
                Answer::Done(result) => return result,
                Answer::Passing { why, retry_after } => {
                    last = why;
                    if retry == Retry::OnlyUnsent {
                        return Err(not_retried(action, &last));
                    }
                    wait = retry_after;
                }
            }
        }
        Err(TwilioError::Unavailable {
            action: action.to_owned(),
            detail: format!("{last}, after {ATTEMPTS} attempts"),
        })
    }

    pub(super) fn url(base: &str, path: &str) -> String {
        format!("{}{path}", base.trim_end_matches('/'))
    }

    /// The test read `validation_url` (a path on `api_base`, its
    /// `{account_sid}` replaced) with `credential`: does it work now?
    pub async fn validate(
        &self,
        credential: &TwilioCredential,
        validation_url: &str,
    ) -> Result<(), TwilioError> {
        let path = validation_url.replace("{account_sid}", credential.account_sid.as_str());
        let url = Self::url(&self.bases.api_base, &path);
        let action = format!("test read GET {}", path.split('?').next().unwrap_or(&path));
        self.send(&action, credential, Retry::Idempotent, |http| {
            http.get(&url)
        })
        .await
        .map(drop)
    }

    /// Creates an API key on `admin`'s account (IAM v1). `policy`, when set,
    /// makes it a restricted key with that Policy (JSON).
    pub async fn create_key(
        &self,
        admin: &TwilioCredential,
        friendly_name: &str,
        policy: Option<&str>,
    ) -> Result<NewKey, TwilioError> {
        let url = Self::url(&self.bases.iam_base, "/v1/Keys");
        let account = admin.account_sid.as_str().to_owned();
        let mut form = vec![
            ("AccountSid", account.as_str()),
            ("FriendlyName", friendly_name),
        ];
        if let Some(policy) = policy {
            form.push(("KeyType", "restricted"));
            form.push(("Policy", policy));
        }
        let mut answer = self
            .send("key create", admin, Retry::OnlyUnsent, |http| {
                http.request(Method::POST, &url).form(&form)
            })
            .await?;
        new_key(&mut answer)
    }

    /// The Policy (JSON) of API key `sid` on `admin`'s account, or `None`
    /// for a key with none: a Standard or Main key (IAM v1 fetch; Twilio
    /// does not say which of the two).
    pub async fn key_policy(
        &self,
        admin: &TwilioCredential,
        sid: &str,
    ) -> Result<Option<String>, TwilioError> {
        let url = Self::url(&self.bases.iam_base, &format!("/v1/Keys/{sid}"));
        let answer = self
            .send("key fetch", admin, Retry::Idempotent, |http| http.get(&url))
            .await?;
        key_policy(&answer.0)
    }

    /// Every API key on `admin`'s account (all pages).
    pub async fn list_keys(&self, admin: &TwilioCredential) -> Result<Vec<KeyInfo>, TwilioError> {
        let path = format!(
            "/2010-04-01/Accounts/{}/Keys.json?PageSize=1000",
            admin.account_sid.as_str()
        );
        self.list_2010("key list", admin, &path, "keys", keys_of)
            .await
    }

    /// Every item of a 2010 API list from `path` (on `api_base`), read off
    /// each page by `take`, following `next_page_uri` for at most
    /// [`MAX_PAGES`] pages; `what` names the items in the error past that.
    pub(super) async fn list_2010<T>(
        &self,
        action: &str,
        admin: &TwilioCredential,
        path: &str,
        what: &str,
        take: impl Fn(&Value, &mut Vec<T>),
    ) -> Result<Vec<T>, TwilioError> {
        let malformed = |detail| TwilioError::Malformed {
            action: action.into(),
            detail,
        };
        let mut url = Self::url(&self.bases.api_base, path);
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let answer = self
                .send(action, admin, Retry::Idempotent, |http| http.get(&url))
                .await?;
            take(&answer.0, &mut items);
            match next_page(&answer.0) {
                Ok(Some(path)) => url = Self::url(&self.bases.api_base, path),
                Ok(None) => return Ok(items),
                Err(detail) => return Err(malformed(detail)),
            }
        }
        Err(malformed(format!(
            "more than {MAX_PAGES} pages ({} {what} so far); stopped following next_page_uri",
            items.len()
        )))
    }

    /// Deletes API key `sid` (IAM v1). Already gone is success.
    pub async fn delete_key(&self, admin: &TwilioCredential, sid: &str) -> Result<(), TwilioError> {
        let url = Self::url(&self.bases.iam_base, &format!("/v1/Keys/{sid}"));
        match self
            .send("key delete", admin, Retry::Idempotent, |http| {
                http.delete(&url)
            })
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(drop),
        }
    }

    /// Creates the account's secondary Auth Token.
    pub async fn create_secondary_token(
        &self,
        current: &TwilioCredential,
    ) -> Result<SecretString, TwilioError> {
        let url = Self::url(&self.bases.accounts_base, "/v1/AuthTokens/Secondary");
        let mut answer = self
            .send(
                "secondary Auth Token create",
                current,
                Retry::OnlyUnsent,
                |http| http.post(&url),
            )
            .await?;
        secondary_token(&mut answer)
    }

    /// Deletes the secondary Auth Token. None there is success.
    pub async fn delete_secondary_token(
        &self,
        current: &TwilioCredential,
    ) -> Result<(), TwilioError> {
        let url = Self::url(&self.bases.accounts_base, "/v1/AuthTokens/Secondary");
        match self
            .send(
                "secondary Auth Token delete",
                current,
                Retry::Idempotent,
                |http| http.delete(&url),
            )
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(drop),
        }
    }

    /// Makes the secondary Auth Token the primary; the old primary stops working.
    pub async fn promote_secondary_token(
        &self,
        auth: &TwilioCredential,
    ) -> Result<(), TwilioError> {
        let url = Self::url(&self.bases.accounts_base, "/v1/AuthTokens/Promote");
        self.send("Auth Token promote", auth, Retry::Idempotent, |http| {
            http.post(&url)
        })
        .await
        .map(drop)
    }
}

/// The keys of one page of a key list (added to `keys`), and the path of
/// the next page. Twilio sends a path; some send an absolute URL: only the
/// path and query are used, on the configured base. Anything that is not a
/// path from `/` is refused: appended to the base, `@evil.example/…` or
/// `.evil.example/…` would send the admin credential to another host.
fn keys_page<'a>(page: &'a Value, keys: &mut Vec<KeyInfo>) -> Result<Option<&'a str>, String> {
    keys_of(page, keys);
    next_page(page)
}

/// The keys of one page of a key list, added to `keys`.
fn keys_of(page: &Value, keys: &mut Vec<KeyInfo>) {
    for key in page["keys"].as_array().into_iter().flatten() {
        if let (Some(sid), Some(name)) = (key["sid"].as_str(), key["friendly_name"].as_str()) {
            keys.push(KeyInfo {
                sid: sid.to_owned(),
                friendly_name: name.to_owned(),
            });
        }
    }
}

/// The path of the page after `page` of a 2010 list, if there is one
/// (see [`keys_page`]: only a path on the configured base is followed).
fn next_page(page: &Value) -> Result<Option<&str>, String> {
    let Some(next) = page["next_page_uri"].as_str().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let path = match next.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
        None => next,
    };
    if !path.starts_with('/') || path.starts_with("//") {
        return Err(format!(
            "next_page_uri {:?} is not a path on the API base; not followed",
            crate::text::cut(next, 64)
        ));
    }
    Ok(Some(path))
}

/// The Policy in Twilio's answer to a key fetch: `None` for a key without
/// one, the JSON text (a string as it is) otherwise.
fn key_policy(answer: &Value) -> Result<Option<String>, TwilioError> {
    match &answer["policy"] {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        policy @ Value::Object(_) => Ok(Some(policy.to_string())),
        _ => Err(TwilioError::Malformed {
            action: "key fetch".into(),
            detail: "the answer's `policy` is neither an object nor null".into(),
        }),
    }
}

/// The token in Twilio's answer to a secondary Auth Token create; moved out.
fn secondary_token(answer: &mut SecretJson) -> Result<SecretString, TwilioError> {
    match answer.take_at("/secondary_auth_token") {
        Value::String(token) => Ok(SecretString::new(token)),
        _ => Err(TwilioError::Malformed {
            action: "secondary Auth Token create".into(),
            detail: "the answer has no `secondary_auth_token`".into(),
        }),
    }
}

/// The key in Twilio's answer to a key create; the secret is moved out.
fn new_key(answer: &mut SecretJson) -> Result<NewKey, TwilioError> {
    let malformed = |what: &str| TwilioError::Malformed {
        action: "key create".into(),
        detail: format!("the answer has no valid `{what}`"),
    };
    let sid = answer.0["sid"]
        .as_str()
        .and_then(|s| ApiKeySid::parse(s).ok())
        .ok_or_else(|| malformed("sid"))?;
    let Value::String(secret) = answer.take_at("/secret") else {
        return Err(malformed("secret"));
    };
    Ok(NewKey {
        sid,
        secret: SecretString::new(secret),
    })
}

/// What the client makes of one successful answer read as the answer to
/// each call (fuzzing only). Holds secrets: no Debug.
#[doc(hidden)]
pub struct FuzzReading {
    /// As a key list page: its keys, and the next page's path.
    pub page: Result<(Vec<KeyInfo>, Option<String>), String>,
    /// As a key create.
    pub key: Result<NewKey, TwilioError>,
    /// As a key fetch: the key's Policy.
    pub policy: Result<Option<String>, TwilioError>,
    /// As a secondary Auth Token create.
    pub secondary: Result<SecretString, TwilioError>,
}

/// For the fuzz target (`fuzz/`): what the client makes of Twilio's answer
/// `status` and `body` to each call whose answer it reads. An error (a
/// failed call) is the error's text. Not an API.
#[doc(hidden)]
pub fn fuzz_answer(status: u16, body: &[u8]) -> Result<FuzzReading, String> {
    let status = StatusCode::from_u16(status).map_err(|e| e.to_string())?;
    match judge("fuzz", status, None, &SecretBytes::new(body.to_vec())) {
        Answer::Passing { why, .. } => Err(why),
        Answer::Done(Err(e)) => Err(e.to_string()),
        Answer::Done(Ok(json)) => {
            let mut keys = Vec::new();
            let page = keys_page(&json.0, &mut keys).map(|next| (keys, next.map(str::to_owned)));
            let policy = key_policy(&json.0);
            let (mut for_key, mut for_token) = (SecretJson(json.0.clone()), json);
            Ok(FuzzReading {
                page,
                key: new_key(&mut for_key),
                policy,
                secondary: secondary_token(&mut for_token),
            })
        }
    }
}

/// What one answer from Twilio means.
enum Answer {
    /// The call succeeded, or failed in a way retrying will not fix.
    Done(Result<SecretJson, TwilioError>),
    /// Throttled or a server error: worth another attempt, after
    /// `retry_after` when Twilio said how long.
    Passing {
        why: String,
        retry_after: Option<Duration>,
    },
}

/// Reads `response` to `action`; a failure's error names the status,
/// Twilio's code and its message.
async fn answer(action: &str, response: reqwest::Response) -> Answer {
    let status = response.status();
    let retry_after = retry_after(&response);
    match SecretBytes::read_capped(response, MAX_ANSWER_BYTES).await {
        Ok(bytes) => judge(action, status, retry_after, &bytes),
        Err(too_long) => Answer::Done(Err(TwilioError::Malformed {
            action: action.to_owned(),
            detail: too_long,
        })),
    }
}

/// Reads `response` to `action`, for a call made once: a throttled or
/// failing Twilio is [`TwilioError::Unavailable`] (the caller retries).
pub(super) async fn answer_once(
    action: &str,
    response: reqwest::Response,
) -> Result<SecretJson, TwilioError> {
    match answer(action, response).await {
        Answer::Done(result) => result,
        Answer::Passing { why, .. } => Err(TwilioError::Unavailable {
            action: action.to_owned(),
            detail: why,
        }),
    }
}

/// What Twilio's answer (`status`, `bytes`) to `action` means.
fn judge(
    action: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    bytes: &SecretBytes,
) -> Answer {
    let body: Value = serde_json::from_slice(bytes.expose_secret()).unwrap_or(Value::Null);
    if status.is_success() {
        return Answer::Done(Ok(SecretJson(body)));
    }
    let code = body["code"].as_u64();
    let detail = match (code, body["message"].as_str().map(crate::text::said)) {
        (Some(code), Some(message)) => format!(", code {code}: {message}"),
        (None, Some(message)) => format!(": {message}"),
        _ => String::new(),
    };
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Answer::Passing {
            why: format!("HTTP {}{detail}", status.as_u16()),
            retry_after,
        };
    }
    let (action, status) = (action.to_owned(), status.as_u16());
    Answer::Done(Err(if status == 401 || status == 403 {
        TwilioError::Unauthorized {
            action,
            status,
            code,
            detail,
        }
    } else {
        TwilioError::Rejected {
            action,
            status,
            detail,
        }
    }))
}

/// A create that failed after it may have reached Twilio: not sent again.
fn not_retried(action: &str, what: &str) -> TwilioError {
    TwilioError::Unavailable {
        action: action.to_owned(),
        detail: format!(
            "{what}; not retried, since Twilio may have acted on it (a key made anyway is swept as an orphan)"
        ),
    }
}

/// `Retry-After` in seconds (what Twilio sends with a 429), at most
/// [`MAX_WAIT`]; an HTTP date or garbage is ignored (the backoff applies).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_WAIT))
}

/// Basic-auth user and password of a credential; an OAuth app has none.
fn basic<'a>(
    action: &str,
    credential: &'a TwilioCredential,
) -> Result<(&'a str, &'a SecretString), TwilioError> {
    match &credential.secret {
        Secret::AuthToken(token) => Ok((credential.account_sid.as_str(), token)),
        Secret::ApiKey { sid, secret } => Ok((sid.as_str(), secret)),
        Secret::OAuthClient { .. } | Secret::Bearer { .. } => Err(TwilioError::WrongKind {
            action: action.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{credential::AccountSid, secret::SecretString};

    const AC: &str = "AC0123456789abcdef0123456789abcdef";

    /// A hostile Twilio on loopback: every request gets `answer(n)`, the
    /// n-th request's bytes after the headers are read; the connection is
    /// closed after it. The client and the request count.
    async fn hostile(
        answer: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
    ) -> (TwilioClient, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let reply = answer(n);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => got.extend_from_slice(&buf[..k]),
                        }
                    }
                    let _ = stream.write_all(&reply).await;
                });
            }
        });
        let client = TwilioClient::new(Endpoints {
            api_base: base.clone(),
            iam_base: base.clone(),
            accounts_base: base.clone(),
            oauth_base: base,
        });
        (client, count)
    }

    fn admin() -> TwilioCredential {
        TwilioCredential {
            account_sid: AccountSid::parse(AC).unwrap(),
            secret: Secret::AuthToken(SecretString::new("0123456789abcdef0123456789abcdef".into())),
        }
    }

    fn json_reply(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn an_endless_key_list_stops_after_max_pages() {
        let (client, requests) = hostile(|n| {
            json_reply(&format!(
                r#"{{"keys": [{{"sid": "SK{n:032}", "friendly_name": "k"}}], "next_page_uri": "/2010-04-01/Accounts/{AC}/Keys.json?Page={}"}}"#,
                n + 1
            ))
        })
        .await;
        let e = client.list_keys(&admin()).await.unwrap_err().to_string();
        assert!(e.contains("more than 100 pages (100 keys so far)"), "{e}");
        assert_eq!(
            requests.load(std::sync::atomic::Ordering::SeqCst),
            MAX_PAGES
        );
    }

    #[tokio::test]
    async fn an_answer_past_the_cap_is_refused_not_buffered() {
        // Announced too long.
        let (client, _) = hostile(|_| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{",
                MAX_ANSWER_BYTES + 1
            )
            .into_bytes()
        })
        .await;
        let e = client.list_keys(&admin()).await.unwrap_err().to_string();
        assert!(e.contains("larger than 4194304 bytes"), "{e}");
        // Chunked, with no length announced: refused as it arrives.
        let (client, _) = hostile(|_| {
            let mut reply =
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..(MAX_ANSWER_BYTES / chunk.len() + 2) {
                reply.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                reply.extend_from_slice(&chunk);
                reply.extend_from_slice(b"\r\n");
            }
            reply.extend_from_slice(b"0\r\n\r\n");
            reply
        })
        .await;
        let e = client.list_keys(&admin()).await.unwrap_err().to_string();
        assert!(e.contains("larger than 4194304 bytes"), "{e}");
    }

    /// Twilio's message is quoted in the error, cut to a bound, with no
    /// newline that could forge a log line.
    #[tokio::test]
    async fn a_long_message_from_twilio_is_cut_in_the_error() {
        let message = format!("line one\nline two {}", "x".repeat(1 << 20));
        let body = serde_json::json!({"code": 20001, "message": message}).to_string();
        let (client, _) = hostile(move |_| {
            format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .await;
        let e = client.list_keys(&admin()).await.unwrap_err().to_string();
        assert!(e.contains("code 20001: line one line two xxx"), "{e:.200}");
        assert!(e.len() < 600, "an error of {} bytes", e.len());
    }

    /// A next page that is not a path on the API base is not followed:
    /// appended to the base it would send the admin credential elsewhere.
    #[test]
    fn a_next_page_elsewhere_is_refused() {
        let page = |next: &str| serde_json::json!({"keys": [], "next_page_uri": next});
        let mut keys = Vec::new();
        for hostile in [
            "@evil.example/x",
            ".evil.example/x",
            "evil",
            "//evil.example/x",
        ] {
            let e = keys_page(&page(hostile), &mut keys).unwrap_err();
            assert!(e.contains("not a path on the API base"), "{hostile}: {e}");
        }
        assert_eq!(
            keys_page(
                &page("https://evil.example/2010-04-01/Keys.json?Page=2"),
                &mut keys
            ),
            Ok(Some("/2010-04-01/Keys.json?Page=2")),
            "an absolute URL: only its path, on our base"
        );
        assert_eq!(keys_page(&page("/next"), &mut keys), Ok(Some("/next")));
        assert_eq!(
            keys_page(&serde_json::json!({"keys": []}), &mut keys),
            Ok(None)
        );
    }
}
