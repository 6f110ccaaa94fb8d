//! Access Tokens: whatever the identity, lifetime, grants, key secret and
//! clock, the token is an HS256 JWT signed with the key secret whose claims
//! say exactly that (lifetime cut to Twilio's 24 h).
#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use base64::Engine as _;
use credbroker::{
    secret::SecretString,
    twilio::access_token::{self, ChatGrant, Grants, SyncGrant, VideoGrant, VoiceGrant},
};
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

#[derive(Arbitrary, Debug)]
struct Input {
    identity: String,
    ttl: u32,
    voice: Option<(String, bool)>,
    video: Option<String>,
    chat: Option<String>,
    sync: Option<String>,
    now: u64,
    secret: String,
}

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const SK: &str = "SK0123456789abcdef0123456789abcdef";

fuzz_target!(|input: Input| {
    let grants = Grants {
        voice: input.voice.map(|(sid, incoming)| VoiceGrant {
            outgoing_application_sid: sid,
            incoming_allow: incoming,
        }),
        video: input.video.map(|room| VideoGrant { room }),
        chat: input.chat.map(|service_sid| ChatGrant { service_sid }),
        sync: input.sync.map(|service_sid| SyncGrant { service_sid }),
    };
    let Some(now) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(input.now)) else {
        return;
    };
    let secret = SecretString::new(input.secret.clone());
    let ttl = Duration::from_secs(u64::from(input.ttl));
    let token = access_token::mint(AC, SK, &secret, &input.identity, ttl, &grants, now);
    let parts: Vec<&str> = token.expose_secret().split('.').collect();
    assert_eq!(parts.len(), 3);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[0]).expect("base64url header")).expect("JSON");
    assert_eq!(header["alg"], "HS256");
    let mut mac = Hmac::<Sha256>::new_from_slice(input.secret.as_bytes()).expect("any key");
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    let tag = b64.decode(parts[2]).expect("base64url signature");
    mac.verify_slice(&tag).expect("signed with the key secret");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .expect("base64url payload");
    let claims: serde_json::Value = serde_json::from_slice(&payload).expect("JSON claims");
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(iat, input.now);
    assert_eq!(claims["nbf"].as_u64(), Some(iat));
    assert_eq!(exp - iat, u64::from(input.ttl).min(86_400));
    assert!(
        claims["jti"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{SK}-"))
    );
    assert_eq!(claims["iss"], SK);
    assert_eq!(claims["sub"], AC);
    if input.identity.is_empty() {
        assert!(claims["grants"].get("identity").is_none());
    } else {
        assert_eq!(claims["grants"]["identity"], input.identity.as_str());
    }
    assert_eq!(
        claims["grants"].get("voice").is_some(),
        grants.voice.is_some()
    );
    assert_eq!(
        claims["grants"].get("data_sync").is_some(),
        grants.sync.is_some()
    );
});
