//! The Twilio credential model (`model.rs`) and the stored documents it is
//! parsed from (`document.rs`). Built on the secret types of `secret`.

mod document;
mod model;
mod strict_json;

pub use document::{DocumentError, FIELD_SPELLINGS, parse_document};
pub use model::{
    AccountSid, ApiKeySid, CredentialDocument, Kind, OAuthClientId, PreviousCredential, Secret,
    TwilioCredential,
};
