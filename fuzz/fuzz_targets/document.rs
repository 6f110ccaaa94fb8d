//! Stored documents: what parses also survives the rotation's raw edits —
//! a round trip, promote (current ← pending, previous ← current) and retire
//! (previous dropped) — and still parses to what the edit says.
#![no_main]

use std::time::{Duration, SystemTime};

use credbroker::{
    credential::{CredentialDocument, Secret, TwilioCredential, parse_document},
    rotation::RawDocument,
    secret::SecretBytes,
};
use libfuzzer_sys::fuzz_target;

fn id(c: &TwilioCredential) -> (String, String) {
    let secret = match &c.secret {
        Secret::AuthToken(t) => t.expose_secret().to_owned(),
        Secret::ApiKey { sid, secret } => format!("{}:{}", sid.as_str(), secret.expose_secret()),
    };
    (c.account_sid.as_str().to_owned(), secret)
}

fn parse(bytes: &SecretBytes) -> CredentialDocument {
    parse_document("fuzz", bytes.expose_secret(), None).expect("an edited document parses")
}

fuzz_target!(|data: &[u8]| {
    let doc = match parse_document("fuzz", data, None) {
        Ok(doc) => doc,
        Err(e) => {
            // Errors name the field, never quote the document.
            assert!(e.to_string().len() < 1024, "{} bytes", e.to_string().len());
            return;
        }
    };
    let mut raw = RawDocument::parse(&SecretBytes::new(data.to_vec())).expect("a raw object");
    let again = parse(&raw.to_bytes());
    assert_eq!(id(&again.current), id(&doc.current));
    assert_eq!(again.pending.as_ref().map(id), doc.pending.as_ref().map(id));
    assert_eq!(
        again.previous.as_ref().map(|p| id(&p.credential)),
        doc.previous.as_ref().map(|p| id(&p.credential))
    );
    let Some(pending) = &doc.pending else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let retire_at = now + Duration::from_secs(3600);
    raw.promote(retire_at, "v1", now);
    let promoted = parse(&raw.to_bytes());
    assert_eq!(id(&promoted.current), id(pending));
    assert!(promoted.pending.is_none());
    let previous = promoted
        .previous
        .as_ref()
        .expect("the old value as previous");
    assert_eq!(id(&previous.credential), id(&doc.current));
    assert_eq!(previous.retire_at, retire_at);
    assert_eq!(raw.retire_at(), Some(retire_at));
    raw.drop_previous();
    let retired = parse(&raw.to_bytes());
    assert!(retired.previous.is_none());
    assert_eq!(id(&retired.current), id(pending));
});
