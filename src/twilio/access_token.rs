//! Twilio Access Tokens: the short-lived JWTs behind `MintAccessToken`.
//!
//! Client SDKs (Voice, Video, Conversations/Chat, Sync) authenticate with a
//! JWT signed HS256 by an API Key Secret. Minting it here means a workload
//! gets a token scoped to one identity and a few grants, never the key
//! secret that could mint any token for the account.
//!
//! The token is shaped as twilio-python's `AccessToken` (9.x) shapes it,
//! field for field, with two deliberate differences:
//! - `jti` is `{key sid}-{32 random hex digits}` rather than
//!   `{key sid}-{unix time}`: two tokens minted in the same second must not
//!   share an id.
//! - an `iat` claim is added (twilio-node's tokens carry one too), so
//!   `exp - iat` states the lifetime, which Twilio caps at 24 hours.
//!
//! No JWT crate: the format is three base64url parts and one HMAC, and
//! writing it out keeps the only copy of the secret inside the MAC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::secret::SecretString;

/// Twilio refuses Access Tokens that live longer than 24 hours.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The JOSE header: `cty` is how Twilio tells an Access Token
/// ("first-party application" token, version 1) from other JWTs.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1"}"#;

/// What the token lets its holder do. A grant left `None` is absent from
/// the token; a grant present with every field empty is sent as `{}`, as
/// twilio-python does (for Video, that means any room).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Programmable Voice (`"voice"`).
    pub voice: Option<VoiceGrant>,
    /// Programmable Video (`"video"`).
    pub video: Option<VideoGrant>,
    /// Conversations / Programmable Chat (`"chat"`).
    pub chat: Option<ChatGrant>,
    /// Sync (`"data_sync"`, twilio-python's `SyncGrant` key).
    pub sync: Option<SyncGrant>,
}

/// `"voice": {"incoming": {"allow": true}, "outgoing": {"application_sid": ...}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VoiceGrant {
    /// The TwiML App that outgoing calls run; empty means no outgoing calls.
    pub outgoing_application_sid: String,
    /// Whether the identity may receive calls.
    pub incoming_allow: bool,
}

/// `"video": {"room": ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoGrant {
    /// The one room the holder may join; empty means any room.
    pub room: String,
}

/// `"chat": {"service_sid": ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatGrant {
    /// The Conversations/Chat Service SID (`IS...`).
    pub service_sid: String,
}

/// `"data_sync": {"service_sid": ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncGrant {
    /// The Sync Service SID (`IS...`).
    pub service_sid: String,
}

/// Mints an Access Token for `identity`, valid from `now` for `ttl`
/// (whole seconds, at most [`MAX_TTL`]: a longer `ttl` is cut to it, since
/// Twilio would reject the token outright).
///
/// `key_sid` / `key_secret` are the API Key that signs (`iss`), and
/// `account_sid` the account it belongs to (`sub`). An empty `identity` is
/// left out, as twilio-python does; Voice, Video and Chat need one.
///
/// The token is a bearer credential, so it comes back as a
/// [`SecretString`].
pub fn mint(
    account_sid: &str,
    key_sid: &str,
    key_secret: &SecretString,
    identity: &str,
    ttl: Duration,
    grants: &Grants,
    now: SystemTime,
) -> SecretString {
    let nonce: [u8; 16] = rand::random();
    let jti = format!("{key_sid}-{}", hex::encode(nonce));
    let claims = claims(&jti, account_sid, key_sid, identity, ttl, grants, now);
    sign(&claims, key_secret)
}

/// The payload, in the order Twilio's docs show it.
fn claims(
    jti: &str,
    account_sid: &str,
    key_sid: &str,
    identity: &str,
    ttl: Duration,
    grants: &Grants,
    now: SystemTime,
) -> Value {
    // Before 1970 only on a broken clock; 0 then yields an expired token.
    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let exp = iat + ttl.min(MAX_TTL).as_secs();
    json!({
        "jti": jti,
        "iss": key_sid,
        "sub": account_sid,
        "iat": iat,
        "nbf": iat,
        "exp": exp,
        "grants": grants_payload(identity, grants),
    })
}

/// `grants` as twilio-python's `grants.py` builds each `to_payload()`:
/// a field is set only when it is non-empty (or `true`).
fn grants_payload(identity: &str, grants: &Grants) -> Value {
    let mut out = Map::new();
    if !identity.is_empty() {
        out.insert("identity".into(), identity.into());
    }
    if let Some(voice) = &grants.voice {
        let mut grant = Map::new();
        if voice.incoming_allow {
            grant.insert("incoming".into(), json!({ "allow": true }));
        }
        if !voice.outgoing_application_sid.is_empty() {
            grant.insert(
                "outgoing".into(),
                json!({ "application_sid": voice.outgoing_application_sid }),
            );
        }
        out.insert("voice".into(), grant.into());
    }
    let single = |key: &str, value: &str| {
        let mut grant = Map::new();
        if !value.is_empty() {
            grant.insert(key.into(), value.into());
        }
        Value::Object(grant)
    };
    if let Some(video) = &grants.video {
        out.insert("video".into(), single("room", &video.room));
    }
    if let Some(chat) = &grants.chat {
        out.insert("chat".into(), single("service_sid", &chat.service_sid));
    }
    if let Some(sync) = &grants.sync {
        out.insert("data_sync".into(), single("service_sid", &sync.service_sid));
    }
    Value::Object(out)
}

/// `base64url(header).base64url(claims).base64url(HMAC-SHA256)`, written
/// into one buffer sized up front so no reallocation leaves a copy of the
/// token behind.
fn sign(claims: &Value, key_secret: &SecretString) -> SecretString {
    let header = URL_SAFE_NO_PAD.encode(HEADER);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(key_secret.expose_secret().as_bytes())
        .expect("HMAC accepts a key of any length");
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    let tag = mac.finalize().into_bytes();
    let signature_len = base64::encoded_len(tag.len(), false).expect("32 bytes encode");
    let mut token = String::with_capacity(header.len() + payload.len() + signature_len + 2);
    token.push_str(&header);
    token.push('.');
    token.push_str(&payload);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, &mut token);
    SecretString::new(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const SK: &str = "SK0123456789abcdef0123456789abcdef";
    const SECRET: &str = "QuiteSecretValue0123456789abcdef";

    fn secret() -> SecretString {
        SecretString::new(SECRET.to_owned())
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn all_grants() -> Grants {
        Grants {
            voice: Some(VoiceGrant {
                outgoing_application_sid: "AP0123".into(),
                incoming_allow: true,
            }),
            video: Some(VideoGrant {
                room: "standup".into(),
            }),
            chat: Some(ChatGrant {
                service_sid: "IS0001".into(),
            }),
            sync: Some(SyncGrant {
                service_sid: "IS0002".into(),
            }),
        }
    }

    /// Splits and decodes a token: (header, claims, signing input, signature).
    fn parts(token: &SecretString) -> (Value, Value, String, Vec<u8>) {
        let t = token.expose_secret();
        let mut it = t.split('.');
        let (h, c, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        assert!(it.next().is_none(), "three parts");
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).unwrap();
        (
            serde_json::from_slice(&decode(h)).unwrap(),
            serde_json::from_slice(&decode(c)).unwrap(),
            format!("{h}.{c}"),
            decode(s),
        )
    }

    #[test]
    fn header_and_claims_shape() {
        let ttl = Duration::from_secs(3600);
        let token = mint(
            AC,
            SK,
            &secret(),
            "alice",
            ttl,
            &all_grants(),
            at(1_700_000_000),
        );
        let (header, claims, _, _) = parts(&token);
        assert_eq!(
            header,
            json!({"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"})
        );
        let jti = claims["jti"].as_str().unwrap();
        let nonce = jti.strip_prefix(&format!("{SK}-")).unwrap();
        assert_eq!(nonce.len(), 32);
        assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()));
        let mut expected = json!({
            "jti": jti,
            "iss": SK,
            "sub": AC,
            "iat": 1_700_000_000u64,
            "nbf": 1_700_000_000u64,
            "exp": 1_700_003_600u64,
            "grants": {
                "identity": "alice",
                "voice": {
                    "incoming": {"allow": true},
                    "outgoing": {"application_sid": "AP0123"}
                },
                "video": {"room": "standup"},
                "chat": {"service_sid": "IS0001"},
                "data_sync": {"service_sid": "IS0002"}
            }
        });
        assert_eq!(claims, expected);
        // Sub-second parts of `now` and `ttl` are dropped.
        let token = mint(
            AC,
            SK,
            &secret(),
            "alice",
            ttl + Duration::from_millis(999),
            &all_grants(),
            at(1_700_000_000) + Duration::from_millis(999),
        );
        let (_, claims, _, _) = parts(&token);
        expected["jti"] = claims["jti"].clone();
        assert_eq!(claims, expected);
    }

    #[test]
    fn exp_minus_iat_is_ttl_capped_at_a_day() {
        for (ttl, want) in [
            (0, 0),
            (1, 1),
            (900, 900),
            (86_400, 86_400),
            (86_401, 86_400),
        ] {
            let token = mint(
                AC,
                SK,
                &secret(),
                "a",
                Duration::from_secs(ttl),
                &Grants::default(),
                at(1_000),
            );
            let (_, claims, _, _) = parts(&token);
            assert_eq!(claims["iat"], 1_000);
            assert_eq!(claims["nbf"], 1_000);
            assert_eq!(claims["exp"].as_u64().unwrap() - 1_000, want, "ttl {ttl}");
        }
    }

    #[test]
    fn empty_fields_are_left_out_as_twilio_python_does() {
        let grants = Grants {
            voice: Some(VoiceGrant::default()),
            video: Some(VideoGrant::default()),
            chat: Some(ChatGrant::default()),
            sync: None,
        };
        let token = mint(
            AC,
            SK,
            &secret(),
            "",
            Duration::from_secs(60),
            &grants,
            at(5),
        );
        let (_, claims, _, _) = parts(&token);
        assert_eq!(
            claims["grants"],
            json!({"voice": {}, "video": {}, "chat": {}})
        );
        let outgoing_only = Grants {
            voice: Some(VoiceGrant {
                outgoing_application_sid: "AP1".into(),
                incoming_allow: false,
            }),
            ..Grants::default()
        };
        let token = mint(
            AC,
            SK,
            &secret(),
            "bob",
            Duration::from_secs(60),
            &outgoing_only,
            at(5),
        );
        let (_, claims, _, _) = parts(&token);
        assert_eq!(
            claims["grants"],
            json!({"identity": "bob", "voice": {"outgoing": {"application_sid": "AP1"}}})
        );
    }

    #[test]
    fn signature_is_hmac_sha256_with_the_key_secret() {
        let token = mint(
            AC,
            SK,
            &secret(),
            "a",
            Duration::from_secs(60),
            &all_grants(),
            at(9),
        );
        let (_, _, input, sig) = parts(&token);
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        mac.verify_slice(&sig).expect("signature verifies");
        let mut other = Hmac::<Sha256>::new_from_slice(b"another secret").unwrap();
        other.update(input.as_bytes());
        assert!(other.verify_slice(&sig).is_err());
        // No padding, URL-safe alphabet only.
        assert!(
            token
                .expose_secret()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
    }

    #[test]
    fn jti_differs_between_tokens_of_the_same_second() {
        let mint_one = || {
            let token = mint(
                AC,
                SK,
                &secret(),
                "a",
                Duration::from_secs(60),
                &Grants::default(),
                at(7),
            );
            parts(&token).1["jti"].as_str().unwrap().to_owned()
        };
        assert_ne!(mint_one(), mint_one());
    }

    #[test]
    fn debug_shows_no_secret() {
        let token = mint(
            AC,
            SK,
            &secret(),
            "a",
            Duration::from_secs(60),
            &all_grants(),
            at(9),
        );
        let shown = format!("{token:?} {:?} {:?}", secret(), all_grants());
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains(token.expose_secret()), "{shown}");
        let signature = token.expose_secret().rsplit('.').next().unwrap();
        assert!(!shown.contains(signature));
        // The key secret is not in the token either.
        assert!(!token.expose_secret().contains(SECRET));
        let (_, claims, _, _) = parts(&token);
        assert!(!claims.to_string().contains(SECRET));
    }
}
