//! A small Twilio REST client: exactly the calls rotation needs.
//!
//! - API keys: create and delete through IAM v1 (`/v1/Keys`), list through
//!   the 2010 API (`/2010-04-01/Accounts/{sid}/Keys.json`), which pages by
//!   account without extra parameters;
//! - Auth Tokens: create and delete the secondary, promote it (accounts v1);
//! - `GET /2010-04-01/Accounts/{sid}.json`: the authenticated read that
//!   tests a credential.
//!
//! Every call authenticates with HTTP Basic from a [`TwilioCredential`]
//! (Account SID + Auth Token, or API Key SID + Secret), retries 429 and 5xx
//! with backoff, and never logs or returns a secret: errors carry the HTTP
//! status and Twilio's error code and message only.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use crate::{
    config::TwilioConfig,
    secret::{ApiKeySid, Secret, SecretBytes, SecretString, TwilioCredential},
};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts per call when Twilio answers 429 or 5xx, or cannot be reached.
const ATTEMPTS: u32 = 4;

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
}

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

/// The Twilio REST API at the configured base URLs.
#[derive(Clone)]
pub struct TwilioClient {
    /// Built on first use: a daemon that never calls Twilio never runs (and
    /// keeps resident) the TLS setup and never loads the root certificates.
    http: Arc<OnceLock<reqwest::Client>>,
    bases: TwilioConfig,
}

impl TwilioClient {
    /// A client for the `[twilio]` base URLs. The HTTP client is set up at
    /// the first request; a failure there is that request's error.
    pub fn new(bases: &TwilioConfig) -> Result<Self, TwilioError> {
        Ok(Self {
            http: Arc::default(),
            bases: bases.clone(),
        })
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

    fn http(&self) -> Result<&reqwest::Client, TwilioError> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let built = Self::build_http()?;
        Ok(self.http.get_or_init(|| built))
    }

    /// Sends a request built by `build` with Basic auth from `auth`,
    /// retrying 429/5xx and connection failures with backoff.
    async fn send(
        &self,
        action: &str,
        auth: &TwilioCredential,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<SecretJson, TwilioError> {
        let (user, password) = basic(auth);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let wait = Duration::from_millis(250 * (1 << attempt));
                tokio::time::sleep(wait).await;
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
                    continue;
                }
            };
            let status = response.status();
            let bytes = SecretBytes::new(
                response
                    .bytes()
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default(),
            );
            let body: Value = serde_json::from_slice(bytes.expose_secret()).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(SecretJson(body));
            }
            let detail = match (body["code"].as_u64(), body["message"].as_str()) {
                (Some(code), Some(message)) => format!(", code {code}: {message}"),
                (None, Some(message)) => format!(": {message}"),
                _ => String::new(),
            };
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                last = format!("HTTP {}{detail}", status.as_u16());
                continue;
            }
            let (action, status) = (action.to_owned(), status.as_u16());
            return Err(if status == 401 || status == 403 {
                TwilioError::Unauthorized {
                    action,
                    status,
                    detail,
                }
            } else {
                TwilioError::Rejected {
                    action,
                    status,
                    detail,
                }
            });
        }
        Err(TwilioError::Unavailable {
            action: action.to_owned(),
            detail: format!("{last}, after {ATTEMPTS} attempts"),
        })
    }

    fn url(base: &str, path: &str) -> String {
        format!("{}{path}", base.trim_end_matches('/'))
    }

    /// An authenticated read of the account: does `credential` work now?
    pub async fn test_credential(&self, credential: &TwilioCredential) -> Result<(), TwilioError> {
        let url = Self::url(
            &self.bases.api_base,
            &format!(
                "/2010-04-01/Accounts/{}.json",
                credential.account_sid.as_str()
            ),
        );
        self.send("account read", credential, |http| http.get(&url))
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
            .send("key create", admin, |http| {
                http.request(Method::POST, &url).form(&form)
            })
            .await?;
        let malformed = |what: &str| TwilioError::Malformed {
            action: "key create".into(),
            detail: format!("the answer has no valid `{what}`"),
        };
        let sid = answer.0["sid"]
            .as_str()
            .and_then(|s| ApiKeySid::parse(s).ok())
            .ok_or_else(|| malformed("sid"))?;
        let Value::String(secret) = answer.0["secret"].take() else {
            return Err(malformed("secret"));
        };
        Ok(NewKey {
            sid,
            secret: SecretString::new(secret),
        })
    }

    /// Every API key on `admin`'s account (all pages).
    pub async fn list_keys(&self, admin: &TwilioCredential) -> Result<Vec<KeyInfo>, TwilioError> {
        let mut url = Self::url(
            &self.bases.api_base,
            &format!(
                "/2010-04-01/Accounts/{}/Keys.json?PageSize=1000",
                admin.account_sid.as_str()
            ),
        );
        let mut keys = Vec::new();
        loop {
            let answer = self.send("key list", admin, |http| http.get(&url)).await?;
            for key in answer.0["keys"].as_array().into_iter().flatten() {
                if let (Some(sid), Some(name)) =
                    (key["sid"].as_str(), key["friendly_name"].as_str())
                {
                    keys.push(KeyInfo {
                        sid: sid.to_owned(),
                        friendly_name: name.to_owned(),
                    });
                }
            }
            match answer.0["next_page_uri"].as_str() {
                // Twilio sends a path; some send an absolute URL. Only the
                // path and query are used, on the configured base.
                Some(next) if !next.is_empty() => {
                    let path = match next.split_once("://") {
                        Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
                        None => next,
                    };
                    url = Self::url(&self.bases.api_base, path);
                }
                _ => return Ok(keys),
            }
        }
    }

    /// Deletes API key `sid` (IAM v1). Already gone is success.
    pub async fn delete_key(&self, admin: &TwilioCredential, sid: &str) -> Result<(), TwilioError> {
        let url = Self::url(&self.bases.iam_base, &format!("/v1/Keys/{sid}"));
        match self
            .send("key delete", admin, |http| http.delete(&url))
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
            .send("secondary Auth Token create", current, |http| {
                http.post(&url)
            })
            .await?;
        match answer.0["secondary_auth_token"].take() {
            Value::String(token) => Ok(SecretString::new(token)),
            _ => Err(TwilioError::Malformed {
                action: "secondary Auth Token create".into(),
                detail: "the answer has no `secondary_auth_token`".into(),
            }),
        }
    }

    /// Deletes the secondary Auth Token. None there is success.
    pub async fn delete_secondary_token(
        &self,
        current: &TwilioCredential,
    ) -> Result<(), TwilioError> {
        let url = Self::url(&self.bases.accounts_base, "/v1/AuthTokens/Secondary");
        match self
            .send("secondary Auth Token delete", current, |http| {
                http.delete(&url)
            })
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
        self.send("Auth Token promote", auth, |http| http.post(&url))
            .await
            .map(drop)
    }
}

/// Basic-auth user and password of a credential.
fn basic(credential: &TwilioCredential) -> (&str, &SecretString) {
    match &credential.secret {
        Secret::AuthToken(token) => (credential.account_sid.as_str(), token),
        Secret::ApiKey { sid, secret } => (sid.as_str(), secret),
    }
}

/// A JSON answer that may hold secrets: no Debug, no Display.
struct SecretJson(Value);
