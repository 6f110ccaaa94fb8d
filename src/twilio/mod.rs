//! Twilio: the REST client rotation drives (API keys, Auth Tokens, the
//! authenticated account read that tests a credential), OAuth bearer tokens
//! for `oauth_client` credentials, usage records and Usage Triggers,
//! X-Twilio-Signature
//! validation and Access Token minting, so workloads need not hold the
//! long-lived secrets those take.

pub mod access_token;
pub mod client;
pub mod oauth;
pub mod usage;
pub mod webhook;

pub use client::{Endpoints, KeyInfo, NewKey, TwilioClient, TwilioError};

/// `<tag>:<name>:`, the friendly-name prefix of the keys credbroker creates
/// for credential `name`, matched by prefix when sweeping. Twilio allows 64
/// characters in a friendly name: a name longer than `max_name` is replaced
/// by a digest of it, leaving room for the suffix that follows.
pub fn key_prefix(tag: &str, name: &str, max_name: usize) -> String {
    use sha2::Digest;
    if name.len() <= max_name {
        format!("{tag}:{name}:")
    } else {
        format!(
            "{tag}:{}:",
            &hex::encode(sha2::Sha256::digest(name.as_bytes()))[..16]
        )
    }
}
