//! Stored documents. An error never depends on a secret's bytes (only on
//! their kind: hex, letters, length). What parses reads the same under its
//! configured kind and in either spelling, and survives the rotation's raw
//! edits: a round trip, a new pending value, promote (current ← pending,
//! previous ← current) and retire (previous dropped), each of which still
//! parses to what the edit says.
#![no_main]

use std::time::{Duration, SystemTime};

use credbroker::{
    credential::{
        CredentialDocument, FIELD_SPELLINGS, Kind, Secret, TwilioCredential, parse_document,
    },
    rotation::RawDocument,
    secret::{SecretBytes, SecretString},
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// A credential as plain strings: (account, secret or `sid:secret`).
type Id = (String, String);

fn id(c: &TwilioCredential) -> Id {
    let secret = match &c.secret {
        Secret::AuthToken(t) => t.expose_secret().to_owned(),
        Secret::ApiKey { sid, secret } => format!("{}:{}", sid.as_str(), secret.expose_secret()),
        Secret::OAuthClient {
            client_id,
            client_secret,
        } => format!("{}:{}", client_id.as_str(), client_secret.expose_secret()),
        Secret::Bearer { .. } => panic!("a document never holds a bearer token"),
    };
    (c.account_sid.as_str().to_owned(), secret)
}

/// Every value of a document, as plain strings.
fn ids(d: &CredentialDocument) -> (Id, Option<Id>, Option<(Id, SystemTime)>) {
    (
        id(&d.current),
        d.pending.as_deref().map(id),
        d.previous
            .as_ref()
            .map(|p| (id(&p.credential), p.retire_at)),
    )
}

fn parse(bytes: &[u8], what: &str) -> CredentialDocument {
    parse_document("fuzz", bytes, None).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The secret fields' string values, anywhere a credential is read.
fn secret_values(doc: &Value) -> Vec<String> {
    let secret_fields = [
        FIELD_SPELLINGS[1],
        FIELD_SPELLINGS[3],
        ["client_secret", "clientSecret"],
    ]
    .concat();
    let mut objects = vec![doc];
    for nested in ["pending", "previous"] {
        objects.extend(doc.get(nested));
    }
    objects
        .iter()
        .flat_map(|o| secret_fields.iter().filter_map(|f| o.get(*f)?.as_str()))
        .map(str::to_owned)
        .collect()
}

/// `s` with each letter and digit replaced by another of the same class
/// (hex digit for hex digit, letter for letter): what a document parser may
/// judge of a secret is unchanged, its bytes are not.
fn twin(s: &str) -> String {
    let rotate = |c: char, from: u8, n: u8| (from + (c as u8 - from + 1) % n) as char;
    s.chars()
        .map(|c| match c {
            '0'..='9' => rotate(c, b'0', 10),
            'a'..='f' => rotate(c, b'a', 6),
            'A'..='F' => rotate(c, b'A', 6),
            'g'..='z' => rotate(c, b'g', 20),
            'G'..='Z' => rotate(c, b'G', 20),
            c => c,
        })
        .collect()
}

/// Where `needle` occurs in `haystack`, every time.
fn occurrences(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// A refused document: the error is short, and the same when each secret
/// is replaced by its twin, so it can neither quote nor hint at one.
fn check_error(data: &[u8], error: &str) {
    assert!(error.len() < 1024, "an error of {} bytes", error.len());
    assert!(!error.contains(char::is_control), "{error:?}");
    let Ok(lenient) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for secret in secret_values(&lenient) {
        let quoted = format!("\"{secret}\"");
        let at = occurrences(data, quoted.as_bytes());
        // Only a value written once and plainly (no escapes) can be swapped
        // in the bytes without touching anything else.
        if at.len() != 1 || twin(&secret) == secret {
            continue;
        }
        let mut swapped = data.to_vec();
        let start = at[0] + 1;
        swapped[start..start + secret.len()].copy_from_slice(twin(&secret).as_bytes());
        let Err(e) = parse_document("fuzz", &swapped, None) else {
            panic!("refused with one secret, accepted with its twin: {error}");
        };
        assert_eq!(
            e.to_string(),
            error,
            "the error depends on a secret's bytes"
        );
    }
}

/// The document with every credential field renamed to spelling `which`
/// (0: snake_case, 1: camelCase).
fn respelled(data: &[u8], which: usize) -> Vec<u8> {
    let Ok(Value::Object(mut doc)) = serde_json::from_slice::<Value>(data) else {
        panic!("a parsed document is a JSON object");
    };
    let rename = |o: &mut Map<String, Value>| {
        for spellings in FIELD_SPELLINGS {
            for s in spellings {
                if let Some(v) = o.remove(s) {
                    o.insert(spellings[which].to_owned(), v);
                }
            }
        }
    };
    for nested in ["pending", "previous"] {
        if let Some(Value::Object(o)) = doc.get_mut(nested) {
            rename(o);
        }
    }
    rename(&mut doc);
    serde_json::to_vec(&doc).expect("JSON")
}

/// A new pending value of `kind` recorded, then promoted: the old current
/// becomes previous, the new value current, in the spelling it had.
fn rotate_once(mut raw: RawDocument, doc: &CredentialDocument) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    raw.clear_pending();
    raw.set_claim("r1", "fuzz:1", now);
    let new = SecretString::new("5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e".into());
    match doc.kind() {
        Kind::AuthToken => raw.set_pending_token(&new),
        Kind::ApiKey => raw.set_pending_key("SK5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e", &new),
        // Not rotated: its document has no pending value (a test above
        // checks that one is refused).
        Kind::OAuthClient => return,
    }
    let pending = parse(raw.to_bytes().expose_secret(), "a new pending value");
    let pending = pending.pending.expect("the pending value is read");
    promote_and_retire(raw, doc, &pending);
}

/// Promote, then retire: the document parses to what each step says.
fn promote_and_retire(mut raw: RawDocument, doc: &CredentialDocument, pending: &TwilioCredential) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let retire_at = now + Duration::from_secs(3600);
    raw.promote(retire_at, "v1", now);
    let promoted = parse(raw.to_bytes().expose_secret(), "promoted");
    assert_eq!(id(&promoted.current), id(pending));
    assert!(promoted.pending.is_none());
    let previous = promoted.previous.expect("the old value as previous");
    assert_eq!(id(&previous.credential), id(&doc.current));
    assert_eq!(previous.retire_at, retire_at);
    assert_eq!(raw.retire_at(), Some(retire_at));
    raw.drop_previous();
    let retired = parse(raw.to_bytes().expose_secret(), "retired");
    assert!(retired.previous.is_none());
    assert_eq!(id(&retired.current), id(pending));
}

fuzz_target!(|data: &[u8]| {
    let doc = match parse_document("fuzz", data, None) {
        Ok(doc) => doc,
        Err(e) => return check_error(data, &e.to_string()),
    };
    let configured = parse_document("fuzz", data, Some(doc.kind()));
    let configured = configured.unwrap_or_else(|e| panic!("refused as {:?}: {e}", doc.kind()));
    assert_eq!(ids(&configured), ids(&doc));
    for which in [0, 1] {
        assert_eq!(ids(&parse(&respelled(data, which), "respelled")), ids(&doc));
    }
    let raw = RawDocument::parse(&SecretBytes::new(data.to_vec())).expect("a raw object");
    assert_eq!(
        ids(&parse(raw.to_bytes().expose_secret(), "round trip")),
        ids(&doc)
    );
    match &doc.pending {
        // Either spelling of a pending value is promoted (the seed
        // `camel_pending` found that promote read snake_case only).
        Some(pending) => promote_and_retire(raw, &doc, pending),
        None => rotate_once(raw, &doc),
    }
});
