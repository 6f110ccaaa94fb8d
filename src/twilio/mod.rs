//! Twilio: the REST client rotation drives (API keys, Auth Tokens, the
//! authenticated account read that tests a credential), X-Twilio-Signature
//! validation and Access Token minting, so workloads need not hold the
//! long-lived secrets those take.

pub mod access_token;
pub mod client;
pub mod webhook;

pub use client::{KeyInfo, NewKey, TwilioClient, TwilioError};
