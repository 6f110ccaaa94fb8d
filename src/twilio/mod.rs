//! Twilio: the REST client rotation drives (API keys, Auth Tokens, the
//! authenticated account read that tests a credential).

pub mod client;

pub use client::{KeyInfo, NewKey, TwilioClient, TwilioError};
