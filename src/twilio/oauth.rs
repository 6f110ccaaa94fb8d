//! Twilio OAuth 2.0 client credentials: an OAuth app's client id and
//! secret exchanged at `POST {oauth_base}/v2/token` for a bearer token (a
//! JWT that expires within the hour by default), as twilio-python's
//! `ClientTokenManager` does it: form fields `grant_type=client_credentials`,
//! `client_id`, `client_secret`.
//!
//! One attempt per call: the `oauth_client` issuer owns the retries (with
//! the shared backoff) and decides what a failure means for the token it
//! serves. The client secret goes only into the form body, never into an
//! error; the token only into a [`SecretString`].

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::Value;

use super::client::{TwilioClient, TwilioError};
use crate::credential::OAuthClientId;
use crate::secret::{SecretJson, SecretString};

/// Longest access token accepted (Twilio's are about 1 KB).
pub const MAX_ACCESS_TOKEN_BYTES: usize = 16 * 1024;
/// Longest token lifetime believed: a day. A longer `expires_in` is cut to
/// this, so a broken answer cannot make the broker serve a token for ever.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

const ACTION: &str = "OAuth token";

/// A bearer token Twilio issued to an OAuth app. Holds a secret: no Debug.
pub struct BearerToken {
    /// The access token.
    pub token: SecretString,
    /// When it expires: `expires_in` after `now`, never past the JWT's own
    /// `exp` when it has one, and never more than [`MAX_TOKEN_LIFETIME`].
    pub expires_at: SystemTime,
}

impl TwilioClient {
    /// A new bearer token for OAuth app `client_id` with `client_secret`,
    /// its lifetime counted from `now`. One attempt: a 429 or 5xx, or no
    /// answer, is [`TwilioError::Unavailable`]; a refused secret
    /// [`TwilioError::Unauthorized`] with Twilio's code.
    pub async fn fetch_oauth_token(
        &self,
        client_id: &OAuthClientId,
        client_secret: &SecretString,
        now: SystemTime,
    ) -> Result<BearerToken, TwilioError> {
        let url = Self::url(&self.bases().oauth_base, "/v2/token");
        let sent = self
            .http()?
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose_secret()),
            ])
            .send()
            .await;
        let response = sent.map_err(|e| TwilioError::Unavailable {
            action: ACTION.into(),
            detail: if e.is_timeout() {
                "no answer in time".into()
            } else {
                "cannot reach Twilio".into()
            },
        })?;
        let mut answer = super::client::answer_once(ACTION, response).await?;
        read_token(&mut answer, now)
    }
}

/// The token in Twilio's answer (`oauth.v1.token`: `access_token`,
/// `token_type`, `expires_in`), its expiry counted from `now`.
fn read_token(answer: &mut SecretJson, now: SystemTime) -> Result<BearerToken, TwilioError> {
    let malformed = |detail: String| TwilioError::Malformed {
        action: ACTION.into(),
        detail,
    };
    if let Some(kind) = answer.0.get("token_type").and_then(Value::as_str)
        && !kind.eq_ignore_ascii_case("bearer")
    {
        // Not quoted: an answer's text could hold the token itself.
        return Err(malformed(
            "the answer's `token_type` is not `Bearer`".into(),
        ));
    }
    let expires_in = answer.0.get("expires_in").and_then(Value::as_u64);
    let Value::String(token) = answer.take_at("/access_token") else {
        return Err(malformed("the answer has no `access_token`".into()));
    };
    let token = SecretString::new(token);
    let t = token.expose_secret();
    if t.is_empty() || t.len() > MAX_ACCESS_TOKEN_BYTES || !t.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(malformed(format!(
            "the `access_token` is not 1 to {MAX_ACCESS_TOKEN_BYTES} printable ASCII characters"
        )));
    }
    let by_expires_in = expires_in
        .filter(|&s| s > 0)
        .map(|s| now + Duration::from_secs(s).min(MAX_TOKEN_LIFETIME));
    let by_exp = jwt_exp(t);
    let expires_at = match (by_expires_in, by_exp) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) => a,
        (None, Some(b)) => b.min(now + MAX_TOKEN_LIFETIME),
        (None, None) => {
            return Err(malformed(
                "the answer gives no lifetime (`expires_in`, or an `exp` in the token)".into(),
            ));
        }
    };
    if expires_at <= now {
        return Err(malformed("the token has expired already".into()));
    }
    Ok(BearerToken { token, expires_at })
}

/// The `exp` claim of a JWT (its payload read, its signature not checked:
/// only Twilio can check that), if it has one.
fn jwt_exp(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// For the fuzz target and tests: the token an answer `body` gives at `now`
/// (its text, when there is one), or the error. Not an API.
#[doc(hidden)]
pub fn fuzz_read_token(body: &[u8], now: SystemTime) -> Result<SystemTime, String> {
    let mut json = SecretJson(serde_json::from_slice(body).unwrap_or(Value::Null));
    read_token(&mut json, now)
        .map(|t| t.expires_at)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: u64) -> String {
        let enc = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.c2ln",
            enc(&serde_json::json!({"alg": "HS256"})),
            enc(&serde_json::json!({"sub": "OQ", "exp": exp}))
        )
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn expiry_is_the_earlier_of_expires_in_and_exp() {
        let now = at(1_000_000);
        let body = |exp: u64, expires_in: u64| {
            serde_json::json!({"access_token": jwt(exp), "token_type": "Bearer", "expires_in": expires_in})
                .to_string()
        };
        assert_eq!(
            fuzz_read_token(body(1_003_600, 3600).as_bytes(), now),
            Ok(at(1_003_600))
        );
        // The token's own exp is earlier than expires_in says: exp wins.
        assert_eq!(
            fuzz_read_token(body(1_000_600, 3600).as_bytes(), now),
            Ok(at(1_000_600))
        );
        // expires_in earlier than exp: expires_in wins.
        assert_eq!(
            fuzz_read_token(body(1_100_000, 60).as_bytes(), now),
            Ok(at(1_000_060))
        );
        // A lifetime of a year is cut to a day.
        let opaque = serde_json::json!({"access_token": "opaque", "expires_in": 31_536_000});
        assert_eq!(
            fuzz_read_token(opaque.to_string().as_bytes(), now),
            Ok(at(1_000_000 + 86_400))
        );
    }

    #[test]
    fn broken_answers_are_refused_without_quoting_the_token() {
        let now = at(1_000_000);
        for (body, says) in [
            (
                serde_json::json!({"token_type": "Bearer", "expires_in": 3600}),
                "no `access_token`",
            ),
            (
                serde_json::json!({"access_token": "tok3n-SECRET"}),
                "no lifetime",
            ),
            (
                serde_json::json!({"access_token": jwt(999_999), "expires_in": 3600}),
                "expired already",
            ),
            (
                serde_json::json!({"access_token": "tok3n-SECRET", "token_type": "mac", "expires_in": 60}),
                "not `Bearer`",
            ),
            (
                serde_json::json!({"access_token": "tok3n SECRET", "expires_in": 60}),
                "printable ASCII",
            ),
        ] {
            let e = fuzz_read_token(body.to_string().as_bytes(), now).unwrap_err();
            assert!(e.contains(says), "{e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
    }
}
