//! Stored documents, parsed once into the credential model; a parse error
//! names the credential and the field and never quotes a value.

use serde_json::{Map, Value};

use super::{model::*, strict_json};
use crate::secret::SecretString;

/// A stored document that does not parse or fails validation.
///
/// Names the credential and the field; never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credential `{credential}`: {field}: {problem}")]
pub struct DocumentError {
    /// The credential's config name.
    pub credential: String,
    /// The JSON field, as a dotted path, or `document` for the whole thing.
    pub field: String,
    /// What was expected.
    pub problem: String,
}

/// The two spellings of each field a document may use.
const ACCOUNT_SID: [&str; 2] = ["account_sid", "accountSid"];
const AUTH_TOKEN: [&str; 2] = ["auth_token", "authToken"];
const API_KEY_SID: [&str; 2] = ["api_key_sid", "apiKeySid"];
const API_KEY_SECRET: [&str; 2] = ["api_key_secret", "apiKeySecret"];
const CLIENT_ID: [&str; 2] = ["client_id", "clientId"];
const CLIENT_SECRET: [&str; 2] = ["client_secret", "clientSecret"];
/// Longest OAuth client secret accepted (Twilio does not document a
/// format; this bounds what a document can make the broker hold and send).
pub const MAX_CLIENT_SECRET_BYTES: usize = 1024;

/// Parses a stored document for credential `name`.
///
/// `kind` is the configured kind, when there is one; otherwise the kind is
/// read off the fields present. Unknown fields are ignored, so documents that
/// other tools write (AWS's managed Twilio secrets) are served as they are.
/// `pending` and `previous` must be values of the current one's kind, and
/// `pending` of its account.
pub fn parse_document(
    name: &str,
    bytes: &[u8],
    kind: Option<Kind>,
) -> Result<CredentialDocument, DocumentError> {
    let err = |field: &str, problem: String| DocumentError {
        credential: name.to_owned(),
        field: field.to_owned(),
        problem,
    };
    // serde_json's own messages can quote input; report only the position,
    // or the path of a key given twice.
    let value = strict_json::parse(bytes).map_err(|refused| match refused {
        strict_json::Refused::Syntax { line, column } => err(
            "document",
            format!("not valid JSON (line {line}, column {column})"),
        ),
        // Keys are the document's text: cut, control characters blanked.
        strict_json::Refused::Duplicate(path) => err(
            &crate::text::said(&path),
            "given twice: a field may appear once (JSON readers differ on which copy counts)"
                .into(),
        ),
    })?;
    let Value::Object(mut object) = value else {
        return Err(err("document", "expected a JSON object".into()));
    };
    let current = take_credential(&mut object, "", None, kind).map_err(|(f, p)| err(&f, p))?;
    // A pending or previous value is of the current one's kind: promoting
    // an Auth Token over an API key would leave a document with both.
    let current_kind = kind.unwrap_or(current.secret.kind());
    let kind = Some(current_kind);
    if current_kind == Kind::OAuthClient {
        // Rotation does not apply: the app's secret is replaced in Twilio's
        // Console and then in the store.
        for field in ["pending", "previous"] {
            if object.get(field).is_some_and(|v| !v.is_null()) {
                return Err(err(
                    field,
                    "an oauth_client document has no rotation bookkeeping".into(),
                ));
            }
        }
    }
    let pending = match object.remove("pending") {
        None | Some(Value::Null) => None,
        // A rotation's claim comes before its new value: no secret yet.
        Some(Value::Object(o)) if !has_secret_field(&o) => None,
        Some(Value::Object(mut o)) => {
            only_fields_of(&o, current_kind, "pending.").map_err(|(f, p)| err(&f, p))?;
            Some(
                take_credential(&mut o, "pending.", Some(&current.account_sid), kind)
                    .map_err(|(f, p)| err(&f, p))?,
            )
        }
        Some(_) => return Err(err("pending", "expected a JSON object".into())),
    };
    let previous = match object.remove("previous") {
        None | Some(Value::Null) => None,
        Some(Value::Object(mut o)) => {
            only_fields_of(&o, current_kind, "previous.").map_err(|(f, p)| err(&f, p))?;
            Some(take_previous(&mut o, &current.account_sid, kind).map_err(|(f, p)| err(&f, p))?)
        }
        Some(_) => return Err(err("previous", "expected a JSON object".into())),
    };
    same_credential(&current, pending.as_ref()).map_err(|(f, p)| err(&f, p))?;
    Ok(CredentialDocument {
        current,
        pending: pending.map(Box::new),
        previous: previous.map(Box::new),
    })
}

type FieldError = (String, String);

/// Refuses a pending value of another account than the current one:
/// promoting it keeps the current account SID, which would pair the new key
/// with the wrong account. (Its kind is checked by `only_fields_of` and
/// `take_credential`.) A previous value may name another account: it is
/// served as it is and never promoted.
fn same_credential(
    current: &TwilioCredential,
    pending: Option<&TwilioCredential>,
) -> Result<(), FieldError> {
    if pending.is_some_and(|p| p.account_sid != current.account_sid) {
        return Err((
            "pending.account_sid".into(),
            "not the current value's account (a rotation keeps the account)".into(),
        ));
    }
    Ok(())
}

/// The `previous` object: the replaced credential (its account inherited
/// from the current one when not given), when it retires, its version.
fn take_previous(
    o: &mut Map<String, Value>,
    account: &AccountSid,
    kind: Option<Kind>,
) -> Result<PreviousCredential, FieldError> {
    let credential = take_credential(o, "previous.", Some(account), kind)?;
    let retire_at = match take_string(o, &["retire_at", "retireAt"], "previous.")? {
        Some(s) => humantime::parse_rfc3339_weak(&s).map_err(|_| {
            (
                "previous.retire_at".to_owned(),
                "expected an RFC 3339 timestamp".to_owned(),
            )
        })?,
        None => {
            return Err((
                "previous.retire_at".into(),
                "missing: a previous credential needs its retire time".into(),
            ));
        }
    };
    let version = take_string(o, &["version"], "previous.")?;
    Ok(PreviousCredential {
        credential,
        version,
        retire_at,
    })
}

/// Refuses a field of the other kind in a pending or previous `object`:
/// rotation moves every secret field it finds, so an API key's successor
/// with an `auth_token` beside it would leave a document with both.
fn only_fields_of(object: &Map<String, Value>, kind: Kind, prefix: &str) -> Result<(), FieldError> {
    let other: &[&str] = match kind {
        Kind::AuthToken => &[API_KEY_SID, API_KEY_SECRET, CLIENT_ID, CLIENT_SECRET].concat(),
        Kind::ApiKey => &[AUTH_TOKEN, CLIENT_ID, CLIENT_SECRET].concat(),
        Kind::OAuthClient => &[AUTH_TOKEN, API_KEY_SID, API_KEY_SECRET].concat(),
    };
    match other.iter().find(|f| object.contains_key(**f)) {
        Some(f) => Err((
            format!("{prefix}{f}"),
            format!(
                "a field of another kind of credential than the current one ({})",
                kind.as_str()
            ),
        )),
        None => Ok(()),
    }
}

/// Whether a (pending) object carries any secret field yet.
fn has_secret_field(object: &Map<String, Value>) -> bool {
    AUTH_TOKEN
        .iter()
        .chain(&API_KEY_SID)
        .chain(&API_KEY_SECRET)
        .chain(&CLIENT_ID)
        .chain(&CLIENT_SECRET)
        .any(|f| object.contains_key(*f))
}

/// The spellings a document may use for each credential field, snake_case
/// first: rotation writes a field back under the spelling it found.
pub const FIELD_SPELLINGS: [[&str; 2]; 4] = [ACCOUNT_SID, AUTH_TOKEN, API_KEY_SID, API_KEY_SECRET];

/// Removes a string field under either spelling, moving it out of the JSON
/// tree so that the only remaining copy is the one we zeroize.
fn take_string(
    object: &mut Map<String, Value>,
    spellings: &[&str],
    prefix: &str,
) -> Result<Option<String>, FieldError> {
    let mut found = None;
    for spelling in spellings {
        if let Some(v) = object.remove(*spelling) {
            if found.is_some() {
                return Err((
                    format!("{prefix}{}", spellings[0]),
                    format!("given twice (as `{}`)", spellings.join("` and `")),
                ));
            }
            match v {
                Value::String(s) => found = Some(s),
                Value::Null => {}
                _ => return Err((format!("{prefix}{spelling}"), "expected a string".into())),
            }
        }
    }
    Ok(found)
}

fn take_credential(
    object: &mut Map<String, Value>,
    prefix: &str,
    inherit_account: Option<&AccountSid>,
    kind: Option<Kind>,
) -> Result<TwilioCredential, FieldError> {
    let field = |name: &str| format!("{prefix}{name}");
    let account_sid = match take_string(object, &ACCOUNT_SID, prefix)? {
        Some(s) => AccountSid::parse(&s).map_err(|p| (field(ACCOUNT_SID[0]), p.to_owned()))?,
        None => match inherit_account {
            Some(a) => a.clone(),
            None => return Err((field(ACCOUNT_SID[0]), "missing".into())),
        },
    };
    let token = take_string(object, &AUTH_TOKEN, prefix)?.map(SecretString::new);
    let key_sid = take_string(object, &API_KEY_SID, prefix)?;
    let key_secret = take_string(object, &API_KEY_SECRET, prefix)?.map(SecretString::new);
    let client_id = take_string(object, &CLIENT_ID, prefix)?;
    let client_secret = take_string(object, &CLIENT_SECRET, prefix)?.map(SecretString::new);
    let oauth = client_id.is_some() || client_secret.is_some();
    let secret = match kind_of(kind, &token, &key_sid, &key_secret, oauth, &field)? {
        Kind::AuthToken => auth_token(token, &field)?,
        Kind::ApiKey => api_key(key_sid, key_secret, &field)?,
        Kind::OAuthClient => oauth_client(client_id, client_secret, &field)?,
    };
    Ok(TwilioCredential {
        account_sid,
        secret,
    })
}

/// The configured kind, or the one the fields present show.
fn kind_of(
    kind: Option<Kind>,
    token: &Option<SecretString>,
    key_sid: &Option<String>,
    key_secret: &Option<SecretString>,
    oauth: bool,
    field: &dyn Fn(&str) -> String,
) -> Result<Kind, FieldError> {
    if let Some(kind) = kind {
        return Ok(kind);
    }
    let key = key_sid.is_some() || key_secret.is_some();
    match (token.is_some(), key, oauth) {
        (true, false, false) => Ok(Kind::AuthToken),
        (false, true, false) => Ok(Kind::ApiKey),
        (false, false, true) => Ok(Kind::OAuthClient),
        (false, false, false) => Err((
            field("auth_token"),
            "missing: expected `auth_token`, `api_key_sid` and `api_key_secret`, or `client_id` and `client_secret`".into(),
        )),
        _ => Err((
            field("auth_token"),
            "fields of more than one kind of credential are present: set `kind` in the credential's config to choose one".into(),
        )),
    }
}

/// A Twilio OAuth app: its client id, and a client secret of printable
/// ASCII (at most [`MAX_CLIENT_SECRET_BYTES`]).
fn oauth_client(
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    field: &dyn Fn(&str) -> String,
) -> Result<Secret, FieldError> {
    let id = client_id.ok_or_else(|| (field(CLIENT_ID[0]), "missing".to_owned()))?;
    let client_id = OAuthClientId::parse(&id).map_err(|p| (field(CLIENT_ID[0]), p.to_owned()))?;
    let client_secret =
        client_secret.ok_or_else(|| (field(CLIENT_SECRET[0]), "missing".to_owned()))?;
    let s = client_secret.expose_secret();
    if s.is_empty() || s.len() > MAX_CLIENT_SECRET_BYTES || !s.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err((
            field(CLIENT_SECRET[0]),
            format!("expected 1 to {MAX_CLIENT_SECRET_BYTES} printable ASCII characters"),
        ));
    }
    Ok(Secret::OAuthClient {
        client_id,
        client_secret,
    })
}

/// An Auth Token: 32 hexadecimal digits.
fn auth_token(
    token: Option<SecretString>,
    field: &dyn Fn(&str) -> String,
) -> Result<Secret, FieldError> {
    let token = token.ok_or_else(|| (field(AUTH_TOKEN[0]), "missing".to_owned()))?;
    let t = token.expose_secret();
    if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err((
            field(AUTH_TOKEN[0]),
            "expected 32 hexadecimal digits".into(),
        ));
    }
    Ok(Secret::AuthToken(token))
}

/// An API key: its SID, and a secret of 32 letters and digits.
fn api_key(
    key_sid: Option<String>,
    key_secret: Option<SecretString>,
    field: &dyn Fn(&str) -> String,
) -> Result<Secret, FieldError> {
    let sid = key_sid.ok_or_else(|| (field(API_KEY_SID[0]), "missing".to_owned()))?;
    let sid = ApiKeySid::parse(&sid).map_err(|p| (field(API_KEY_SID[0]), p.to_owned()))?;
    let secret = key_secret.ok_or_else(|| (field(API_KEY_SECRET[0]), "missing".to_owned()))?;
    let s = secret.expose_secret();
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err((
            field(API_KEY_SECRET[0]),
            "expected 32 letters and digits".into(),
        ));
    }
    Ok(Secret::ApiKey { sid, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const SK: &str = "SK0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";
    const KEY_SECRET: &str = "QuiteSecretValue0123456789abcdef";

    /// A pending value of another kind than the current one is refused:
    /// promoting it would leave a document with both (found by the
    /// `document` fuzz target).
    #[test]
    fn pending_and_previous_are_of_the_current_kind() {
        let doc = format!(
            r#"{{"account_sid":"{AC}","api_key_sid":"{SK}","api_key_secret":"{KEY_SECRET}","pending":{{"auth_token":"{TOKEN}"}}}}"#
        );
        let e = parse_document("verify", doc.as_bytes(), None).unwrap_err();
        assert_eq!(e.field, "pending.auth_token", "{e}");
        assert!(e.to_string().contains("another kind"), "{e}");
        let doc = format!(
            r#"{{"account_sid":"{AC}","auth_token":"{TOKEN}","previous":{{"api_key_sid":"{SK}","api_key_secret":"{KEY_SECRET}","retire_at":"2026-01-01T00:00:00Z"}}}}"#
        );
        let e = parse_document("verify", doc.as_bytes(), None).unwrap_err();
        assert_eq!(e.field, "previous.api_key_sid", "{e}");
    }

    #[test]
    fn debug_of_parsed_document_hides_secrets() {
        let doc = format!(
            r#"{{"account_sid":"{AC}","auth_token":"{TOKEN}","previous":{{"auth_token":"{}","retire_at":"2026-01-01T00:00:00Z"}}}}"#,
            TOKEN.replace('f', "a")
        );
        let parsed = parse_document("verify", doc.as_bytes(), None).unwrap();
        let shown = format!("{parsed:?}");
        assert!(!shown.contains(TOKEN));
        assert!(!shown.contains(&TOKEN.replace('f', "a")));
        assert!(shown.contains(AC), "SIDs are not secret: {shown}");
    }

    #[test]
    fn parses_both_spellings() {
        let snake = format!(
            r#"{{"account_sid":"{AC}","api_key_sid":"{SK}","api_key_secret":"{KEY_SECRET}"}}"#
        );
        let camel = format!(
            r#"{{"accountSid":"{AC}","apiKeySid":"{SK}","apiKeySecret":"{KEY_SECRET}","other":1}}"#
        );
        for doc in [snake, camel] {
            let d = parse_document("k", doc.as_bytes(), None).unwrap();
            assert_eq!(d.kind(), Kind::ApiKey);
            assert_eq!(d.current.account_sid.as_str(), AC);
            match d.current.secret {
                Secret::ApiKey { sid, secret } => {
                    assert_eq!(sid.as_str(), SK);
                    assert_eq!(secret.expose_secret(), KEY_SECRET);
                }
                _ => panic!("wrong kind"),
            }
        }
    }

    #[test]
    fn errors_name_field_never_value() {
        let bad_token = "not-a-token-but-a-secret-anyway!";
        let doc = format!(r#"{{"account_sid":"{AC}","auth_token":"{bad_token}"}}"#);
        let e = parse_document("verify", doc.as_bytes(), None).unwrap_err();
        assert_eq!(e.field, "auth_token");
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("verify"));
        assert!(!shown.contains(bad_token), "{shown}");

        let doc = format!(
            r#"{{"account_sid":"XX{}","auth_token":"{TOKEN}"}}"#,
            &AC[2..]
        );
        let e = parse_document("verify", doc.as_bytes(), None).unwrap_err();
        assert_eq!(e.field, "account_sid");
        assert!(e.problem.contains("AC"));

        let doc =
            format!(r#"{{"account_sid":"{AC}","authToken":"{TOKEN}","auth_token":"{TOKEN}"}}"#);
        let e = parse_document("verify", doc.as_bytes(), None).unwrap_err();
        assert!(e.problem.contains("twice"));
        assert!(!e.to_string().contains(TOKEN));

        // The same key twice: serde_json would keep the last one silently.
        let other = "f00dfeedf00dfeedf00dfeedf00dfee2";
        let doc =
            format!(r#"{{"account_sid":"{AC}","auth_token":"{TOKEN}","auth_token":"{other}"}}"#);
        let e = parse_document("verify", doc.as_bytes(), None).unwrap_err();
        assert_eq!(
            (e.credential.as_str(), e.field.as_str()),
            ("verify", "auth_token")
        );
        assert!(e.problem.starts_with("given twice"), "{e}");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(TOKEN) && !shown.contains(other), "{shown}");
        let doc = format!(
            r#"{{"account_sid":"{AC}","auth_token":"{TOKEN}","previous":{{"auth_token":"{other}","auth_token":"{other}","retire_at":"2030-01-01T00:00:00Z"}}}}"#
        );
        let e = parse_document("verify", doc.as_bytes(), None).unwrap_err();
        assert_eq!(e.field, "previous.auth_token");
    }

    #[test]
    fn bad_json_reports_position_only() {
        let doc = format!(r#"{{"account_sid":"{AC}","auth_token":"{TOKEN}" oops"#);
        let e = parse_document("verify", doc.as_bytes(), None).unwrap_err();
        assert_eq!(e.field, "document");
        assert!(e.problem.contains("line 1"));
        assert!(!e.to_string().contains(TOKEN));
    }

    #[test]
    fn configured_kind_wins_and_missing_fields_are_named() {
        let doc = format!(r#"{{"account_sid":"{AC}","auth_token":"{TOKEN}"}}"#);
        let e = parse_document("k", doc.as_bytes(), Some(Kind::ApiKey)).unwrap_err();
        assert_eq!(e.field, "api_key_sid");
        let both = format!(
            r#"{{"account_sid":"{AC}","auth_token":"{TOKEN}","api_key_sid":"{SK}","api_key_secret":"{KEY_SECRET}"}}"#
        );
        let e = parse_document("k", both.as_bytes(), None).unwrap_err();
        assert_eq!(e.field, "auth_token");
        assert!(
            e.to_string().contains("credential `k`") && e.to_string().contains("set `kind`"),
            "{e}"
        );
        let d = parse_document("k", both.as_bytes(), Some(Kind::AuthToken)).unwrap();
        assert_eq!(d.kind(), Kind::AuthToken);
    }

    #[test]
    fn previous_needs_retire_at_and_inherits_account() {
        let doc = format!(
            r#"{{"account_sid":"{AC}","auth_token":"{TOKEN}","previous":{{"auth_token":"{TOKEN}"}}}}"#
        );
        let e = parse_document("k", doc.as_bytes(), None).unwrap_err();
        assert_eq!(e.field, "previous.retire_at");
        let doc = format!(
            r#"{{"account_sid":"{AC}","auth_token":"{TOKEN}","previous":{{"auth_token":"{TOKEN}","retire_at":"2030-01-02T03:04:05Z","version":"v1"}}}}"#
        );
        let d = parse_document("k", doc.as_bytes(), None).unwrap();
        let p = d.previous.unwrap();
        assert_eq!(p.credential.account_sid.as_str(), AC);
        assert_eq!(p.version.as_deref(), Some("v1"));
    }

    /// Found by the `document` fuzz target: a pending value of another
    /// account parsed, and promoting it paired its key with the current
    /// account SID. A previous value may name another account (it is
    /// served as it is, and never promoted).
    #[test]
    fn a_pending_value_is_of_the_current_account() {
        let other = AC.replace("ab", "ba");
        let doc = format!(
            r#"{{"account_sid":"{AC}","auth_token":"{TOKEN}","pending":{{"account_sid":"{other}","auth_token":"{TOKEN}"}}}}"#
        );
        let e = parse_document("k", doc.as_bytes(), None).unwrap_err();
        assert_eq!(e.field, "pending.account_sid");
        let doc = doc.replace(
            "pending\":{",
            "previous\":{\"retire_at\":\"2030-01-02T03:04:05Z\",",
        );
        let d = parse_document("k", doc.as_bytes(), None).unwrap();
        assert_eq!(d.previous.unwrap().credential.account_sid.as_str(), other);
    }

    /// Found by the `document` fuzz target: the path of a key given twice
    /// deep in long keys made an error of any length, with any character.
    #[test]
    fn the_path_of_a_duplicate_key_is_cut() {
        let key = "k\\n".repeat(200);
        let doc = format!(r#"{{"{key}": {{"{key}": 1, "{key}": 2}}}}"#);
        let e = parse_document("k", doc.as_bytes(), None).unwrap_err();
        assert!(
            e.field.len() < 300 && e.field.ends_with("bytes)"),
            "{}",
            e.field
        );
        assert!(!e.to_string().contains(char::is_control), "{e}");
    }

    #[test]
    fn arbitrary_input_never_panics_or_leaks() {
        // A cheap property test: mutate a valid document byte by byte.
        let doc = format!(r#"{{"account_sid":"{AC}","auth_token":"{TOKEN}"}}"#).into_bytes();
        for i in 0..doc.len() {
            for b in [b'"', b'{', b'}', b'x', b'0', b' ', b'\\', 0xff] {
                let mut m = doc.clone();
                m[i] = b;
                if let Err(e) = parse_document("k", &m, None) {
                    assert!(!e.to_string().contains(TOKEN));
                }
            }
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A credential's fields as a document spells them: (snake, camel).
        #[derive(Debug, Clone)]
        enum Value {
            Token(String),
            Key(String, String),
        }

        fn value() -> impl Strategy<Value = Value> {
            prop_oneof![
                "[0-9a-f]{32}".prop_map(Value::Token),
                ("[0-9a-f]{32}", "[A-Za-z0-9]{32}")
                    .prop_map(|(h, s)| Value::Key(format!("SK{h}"), s)),
            ]
        }

        fn fields(v: &Value, camel: bool) -> serde_json::Map<String, serde_json::Value> {
            let mut m = serde_json::Map::new();
            let name =
                |snake: &str, camel_name: &str| if camel { camel_name } else { snake }.to_owned();
            match v {
                Value::Token(t) => {
                    m.insert(name("auth_token", "authToken"), t.clone().into());
                }
                Value::Key(sid, secret) => {
                    m.insert(name("api_key_sid", "apiKeySid"), sid.clone().into());
                    m.insert(
                        name("api_key_secret", "apiKeySecret"),
                        secret.clone().into(),
                    );
                }
            }
            m
        }

        fn shown(c: &TwilioCredential) -> (String, String) {
            match &c.secret {
                Secret::AuthToken(t) => (String::new(), t.expose_secret().to_owned()),
                Secret::ApiKey { sid, secret } => {
                    (sid.as_str().to_owned(), secret.expose_secret().to_owned())
                }
                Secret::OAuthClient {
                    client_id,
                    client_secret,
                } => (
                    client_id.as_str().to_owned(),
                    client_secret.expose_secret().to_owned(),
                ),
                Secret::Bearer { token, .. } => (String::new(), token.expose_secret().to_owned()),
            }
        }

        fn expected(v: &Value) -> (String, String) {
            match v {
                Value::Token(t) => (String::new(), t.clone()),
                Value::Key(sid, secret) => (sid.clone(), secret.clone()),
            }
        }

        proptest! {
            /// Any valid document, in either spelling, with or without a
            /// pending and a previous value of the same kind, parses to
            /// exactly the values written.
            #[test]
            fn documents_round_trip(
                account in "[0-9a-f]{32}",
                current in value(),
                pending in proptest::option::of(value()),
                previous in proptest::option::of(value()),
                camel in any::<bool>(),
                retire in 0u64..4_000_000_000,
            ) {
                let same_kind = |v: &Value| std::mem::discriminant(v) == std::mem::discriminant(&current);
                let pending = pending.filter(same_kind);
                let previous = previous.filter(same_kind);
                let account = format!("AC{account}");
                let mut doc = fields(&current, camel);
                doc.insert(if camel { "accountSid" } else { "account_sid" }.into(), account.clone().into());
                if let Some(p) = &pending {
                    doc.insert("pending".into(), fields(p, camel).into());
                }
                let retire_at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(retire);
                if let Some(p) = &previous {
                    let mut m = fields(p, camel);
                    m.insert(
                        "retire_at".into(),
                        humantime::format_rfc3339_seconds(retire_at).to_string().into(),
                    );
                    doc.insert("previous".into(), m.into());
                }
                let bytes = serde_json::to_vec(&doc).unwrap();
                let parsed = parse_document("verify", &bytes, None).unwrap();
                prop_assert_eq!(parsed.current.account_sid.as_str(), account.as_str());
                prop_assert_eq!(shown(&parsed.current), expected(&current));
                prop_assert_eq!(parsed.pending.as_deref().map(shown), pending.as_ref().map(expected));
                prop_assert_eq!(
                    parsed.previous.as_ref().map(|p| (shown(&p.credential), p.retire_at)),
                    previous.as_ref().map(|p| (expected(p), retire_at))
                );
            }
        }
    }
}
