//! Access Tokens: whatever the identity, lifetime and grants, the token is
//! a JWT whose claims say exactly that (lifetime cut to Twilio's 24 h).
#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use base64::Engine as _;
use credbroker::{
    secret::SecretString,
    twilio::access_token::{self, ChatGrant, Grants, SyncGrant, VideoGrant, VoiceGrant},
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    identity: String,
    ttl: u32,
    voice: Option<(String, bool)>,
    video: Option<String>,
    chat: Option<String>,
    sync: Option<String>,
    now: u32,
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
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(input.now));
    let secret = SecretString::new("0123456789abcdef0123456789abcdef".into());
    let ttl = Duration::from_secs(u64::from(input.ttl));
    let token = access_token::mint(AC, SK, &secret, &input.identity, ttl, &grants, now);
    let parts: Vec<&str> = token.expose_secret().split('.').collect();
    assert_eq!(parts.len(), 3);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .expect("base64url payload");
    let claims: serde_json::Value = serde_json::from_slice(&payload).expect("JSON claims");
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(iat, u64::from(input.now));
    assert_eq!(exp - iat, u64::from(input.ttl).min(86_400));
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
