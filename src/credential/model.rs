//! The Twilio credential model: SIDs, the secret half of a credential,
//! and a parsed stored document with its rotation bookkeeping.

use std::{fmt, time::SystemTime};

use crate::secret::SecretString;

/// What a stored credential is, as named in the config and in
/// `CredentialInfo.kind`. (`dynamic_api_key` is not stored: it is a source,
/// `config::Source::Dynamic`, whose keys are API keys.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Account SID + Auth Token.
    AuthToken,
    /// Account SID + API Key SID + API Key Secret.
    ApiKey,
    /// Account SID + a Twilio OAuth app's client id and client secret,
    /// stored; what callers get is a bearer token fetched with them.
    OAuthClient,
}

impl Kind {
    /// The wire and config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AuthToken => "auth_token",
            Kind::ApiKey => "api_key",
            Kind::OAuthClient => "oauth_client",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "auth_token" => Some(Kind::AuthToken),
            "api_key" => Some(Kind::ApiKey),
            "oauth_client" => Some(Kind::OAuthClient),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Twilio Account SID: `AC` followed by 32 hex digits. Not a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSid(String);

impl AccountSid {
    /// Validates `s`; the error says what was expected, never what was found.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if is_sid(s, "AC") {
            Ok(Self(s.to_owned()))
        } else {
            Err("expected `AC` followed by 32 hexadecimal digits")
        }
    }

    /// The SID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Twilio API Key SID: `SK` followed by 32 hex digits. Not a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeySid(String);

impl ApiKeySid {
    /// Validates `s`; the error says what was expected, never what was found.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if is_sid(s, "SK") {
            Ok(Self(s.to_owned()))
        } else {
            Err("expected `SK` followed by 32 hexadecimal digits")
        }
    }

    /// The SID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Twilio OAuth app's client id: `OQ` followed by 32 hex digits. Not a
/// secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthClientId(String);

impl OAuthClientId {
    /// Validates `s`; the error says what was expected, never what was found.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if is_sid(s, "OQ") {
            Ok(Self(s.to_owned()))
        } else {
            Err("expected `OQ` followed by 32 hexadecimal digits")
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The secret half of a credential.
///
/// `Debug` here and on every type that holds one is written by hand: it
/// names the fields it shows (secrets through their redacting `Debug`), so
/// a field added later is left out rather than leaked.
#[derive(Clone)]
pub enum Secret {
    /// An Auth Token: 32 hex digits.
    AuthToken(SecretString),
    /// An API key: its SID and its secret (32 letters and digits).
    ApiKey {
        /// The key's SID, which is not secret.
        sid: ApiKeySid,
        /// The key's secret.
        secret: SecretString,
    },
    /// A Twilio OAuth app, as stored: never served.
    OAuthClient {
        /// The app's client id, which is not secret.
        client_id: OAuthClientId,
        /// The app's client secret: it never leaves the broker.
        client_secret: SecretString,
    },
    /// A bearer token fetched with an OAuth app's client secret: what an
    /// `oauth_client` credential serves. Never stored.
    Bearer {
        /// The access token (a JWT).
        token: SecretString,
        /// The token's own expiry.
        expires_at: SystemTime,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::AuthToken(token) => f.debug_tuple("AuthToken").field(token).finish(),
            Secret::ApiKey { sid, secret } => f
                .debug_struct("ApiKey")
                .field("sid", sid)
                .field("secret", secret)
                .finish(),
            Secret::OAuthClient {
                client_id,
                client_secret,
            } => f
                .debug_struct("OAuthClient")
                .field("client_id", client_id)
                .field("client_secret", client_secret)
                .finish(),
            Secret::Bearer { token, expires_at } => f
                .debug_struct("Bearer")
                .field("token", token)
                .field("expires_at", expires_at)
                .finish(),
        }
    }
}

impl Secret {
    /// The kind of credential this is a value of (a bearer token is an
    /// `oauth_client`'s).
    pub fn kind(&self) -> Kind {
        match self {
            Secret::AuthToken(_) => Kind::AuthToken,
            Secret::ApiKey { .. } => Kind::ApiKey,
            Secret::OAuthClient { .. } | Secret::Bearer { .. } => Kind::OAuthClient,
        }
    }
}

/// An Account SID with its Auth Token or API key.
#[derive(Clone)]
pub struct TwilioCredential {
    /// The account the credential belongs to.
    pub account_sid: AccountSid,
    /// The token or key.
    pub secret: Secret,
}

impl std::fmt::Debug for TwilioCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioCredential")
            .field("account_sid", &self.account_sid)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// The value a rotation replaced, kept until `retire_at`.
#[derive(Clone)]
pub struct PreviousCredential {
    /// The replaced value.
    pub credential: TwilioCredential,
    /// The version that carried it, when the rotator recorded one.
    pub version: Option<String>,
    /// When it is deleted (API key) or stops being valid (Auth Token).
    pub retire_at: SystemTime,
}

impl std::fmt::Debug for PreviousCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousCredential")
            .field("credential", &self.credential)
            .field("version", &self.version)
            .field("retire_at", &self.retire_at)
            .finish_non_exhaustive()
    }
}

/// A parsed stored document: the current credential plus rotation bookkeeping.
#[derive(Clone)]
pub struct CredentialDocument {
    /// What the broker serves.
    pub current: TwilioCredential,
    /// A value a rotation created but has not promoted yet. Boxed, as is
    /// `previous`: most documents have neither, and every credential keeps
    /// its document for its whole life.
    pub pending: Option<Box<TwilioCredential>>,
    /// The value a rotation replaced, during its grace window.
    pub previous: Option<Box<PreviousCredential>>,
}

impl std::fmt::Debug for CredentialDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialDocument")
            .field("current", &self.current)
            .field("pending", &self.pending)
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

impl CredentialDocument {
    /// The kind of the current credential.
    pub fn kind(&self) -> Kind {
        self.current.secret.kind()
    }
}
