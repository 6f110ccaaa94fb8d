//! The rotation bookkeeping inside a stored document, edited as JSON so that
//! fields other tools put there (AWS's managed-secret fields, anything
//! unknown) survive, and current fields keep the spelling they had.
//!
//! ```json
//! { "account_sid": "AC…", "api_key_sid": "SK…", "api_key_secret": "…",
//!   "pending":  { "rotation_id": "…", "owner": "host:pid", "claimed_at": "…",
//!                 "api_key_sid": "SK…", "api_key_secret": "…" },
//!   "previous": { "api_key_sid": "SK…", "api_key_secret": "…",
//!                 "retire_at": "…", "version": "…" },
//!   "rotated_at": "…" }
//! ```
//!
//! `pending` holds a claim (who rotates, since when) and, once created, the
//! new value. `rotated_at` is when the last rotation was promoted; the
//! scheduler reads it to tell a missed run.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::credential::FIELD_SPELLINGS;
use crate::secret::{SecretBytes, SecretString};

/// A document as JSON. Holds secrets: no Debug, no Display, and no way to
/// its JSON but through the methods below; secrets go in only from the
/// secret types, and come out only as the `SecretBytes` to store. Freed
/// JSON is wiped by the zeroizing allocator.
pub struct RawDocument(Map<String, Value>);

/// Who holds a rotation's claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Goes into the new key's friendly name.
    pub rotation_id: String,
    /// `hostname:pid` of the rotating process.
    pub owner: String,
    /// When the owner last wrote a step.
    pub claimed_at: SystemTime,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How `previous.retire_at` may be spelled (as the parser reads it).
const RETIRE_AT: [&str; 2] = ["retire_at", "retireAt"];

/// The value of a field under whichever of its `spellings` the object has.
/// The parser refuses a field given under two spellings, so at most one is.
fn field<'a>(object: &'a Map<String, Value>, spellings: &[&str]) -> Option<&'a Value> {
    spellings.iter().find_map(|s| object.get(*s))
}

fn parse_time(v: &Value) -> Option<SystemTime> {
    v.as_str()
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
}

impl RawDocument {
    /// Parses stored bytes (already validated by `parse_document`).
    pub fn parse(bytes: &SecretBytes) -> Option<RawDocument> {
        match serde_json::from_slice(bytes.expose_secret()) {
            Ok(Value::Object(map)) => Some(RawDocument(map)),
            _ => None,
        }
    }

    /// The bytes to store.
    pub fn to_bytes(&self) -> SecretBytes {
        SecretBytes::new(serde_json::to_vec(&self.0).expect("a JSON object serializes"))
    }

    fn pending(&self) -> Option<&Map<String, Value>> {
        self.0.get("pending").and_then(Value::as_object)
    }

    fn pending_mut(&mut self) -> &mut Map<String, Value> {
        let entry = self
            .0
            .entry("pending")
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        entry.as_object_mut().expect("just made an object")
    }

    /// The rotation claim, if any.
    pub fn claim(&self) -> Option<Claim> {
        let p = self.pending()?;
        Some(Claim {
            rotation_id: p.get("rotation_id")?.as_str()?.to_owned(),
            owner: p
                .get("owner")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            claimed_at: p
                .get("claimed_at")
                .and_then(parse_time)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    /// Claims (or re-claims) the rotation for `owner` at `now`.
    pub fn set_claim(&mut self, rotation_id: &str, owner: &str, now: SystemTime) {
        let p = self.pending_mut();
        p.insert("rotation_id".into(), rotation_id.into());
        p.insert("owner".into(), owner.into());
        p.insert("claimed_at".into(), rfc3339(now).into());
    }

    /// Whether the pending value has been created (and recorded).
    pub fn has_pending_value(&self) -> bool {
        self.pending().is_some_and(|p| {
            field(p, &FIELD_SPELLINGS[2]).is_some() || field(p, &FIELD_SPELLINGS[1]).is_some()
        })
    }

    /// The pending API key's SID.
    pub fn pending_key_sid(&self) -> Option<String> {
        Some(
            field(self.pending()?, &FIELD_SPELLINGS[2])?
                .as_str()?
                .to_owned(),
        )
    }

    /// Records a new API key as pending.
    pub fn set_pending_key(&mut self, sid: &str, secret: &SecretString) {
        let p = self.pending_mut();
        p.insert("api_key_sid".into(), sid.into());
        p.insert("api_key_secret".into(), secret.expose_secret().into());
    }

    /// Records a new Auth Token as pending.
    pub fn set_pending_token(&mut self, token: &SecretString) {
        self.pending_mut()
            .insert("auth_token".into(), token.expose_secret().into());
    }

    /// How many attempts found the pending value still refused (Twilio
    /// 20003) once `rotation.propagation` had run out.
    pub fn pending_refusals(&self) -> u32 {
        self.pending()
            .and_then(|p| p.get("refused_tests"))
            .and_then(Value::as_u64)
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Records `n` refused attempts of the pending value.
    pub fn set_pending_refusals(&mut self, n: u32) {
        self.pending_mut().insert("refused_tests".into(), n.into());
    }

    /// Drops the claim and anything pending.
    pub fn clear_pending(&mut self) {
        self.0.remove("pending");
    }

    /// The previous value's API key SID.
    pub fn previous_key_sid(&self) -> Option<String> {
        let previous = self.0.get("previous")?.as_object()?;
        Some(field(previous, &FIELD_SPELLINGS[2])?.as_str()?.to_owned())
    }

    /// When the previous value retires.
    pub fn retire_at(&self) -> Option<SystemTime> {
        field(self.0.get("previous")?.as_object()?, &RETIRE_AT).and_then(parse_time)
    }

    /// The current API key SID, under whichever spelling it has.
    pub fn current_key_sid(&self) -> Option<String> {
        FIELD_SPELLINGS[2]
            .iter()
            .find_map(|f| self.0.get(*f)?.as_str().map(str::to_owned))
    }

    /// When the last rotation was promoted.
    pub fn rotated_at(&self) -> Option<SystemTime> {
        self.0.get("rotated_at").and_then(parse_time)
    }

    /// current ← pending, previous ← old current (retiring at `retire_at`,
    /// carrying `old_version`), pending dropped. Current fields keep their
    /// spelling; the account SID stays.
    pub fn promote(&mut self, retire_at: SystemTime, old_version: &str, now: SystemTime) {
        let Some(Value::Object(pending)) = self.0.remove("pending") else {
            return;
        };
        let mut previous = Map::new();
        for spellings in &FIELD_SPELLINGS[1..] {
            let snake = spellings[0];
            // The pending value may be spelled either way; it takes the
            // current field's spelling.
            let Some(new) = field(&pending, spellings) else {
                continue;
            };
            // Where the current document keeps this field (default snake_case).
            let key = spellings
                .iter()
                .find(|s| self.0.contains_key(**s))
                .copied()
                .unwrap_or(snake);
            if let Some(old) = self.0.insert(key.to_owned(), new.clone()) {
                previous.insert(snake.to_owned(), old);
            }
        }
        previous.insert("retire_at".into(), rfc3339(retire_at).into());
        previous.insert("version".into(), old_version.into());
        self.0.insert("previous".into(), Value::Object(previous));
        self.0.insert("rotated_at".into(), json!(rfc3339(now)));
    }

    /// Drops `previous`, once it is retired.
    pub fn drop_previous(&mut self) {
        self.0.remove("previous");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promote_keeps_spelling_and_unknown_fields() {
        let doc = r#"{"accountSid":"AC1","apiKeySid":"SK_old","apiKeySecret":"old","other":7}"#;
        let mut d = RawDocument::parse(&SecretBytes::new(doc.as_bytes().to_vec())).unwrap();
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        d.set_claim("r1", "host:1", now);
        assert_eq!(d.claim().unwrap().rotation_id, "r1");
        assert!(!d.has_pending_value());
        d.set_pending_key("SK_new", &SecretString::new("new".into()));
        assert!(d.has_pending_value());
        d.promote(now + std::time::Duration::from_secs(3600), "v1", now);
        assert_eq!(d.0["apiKeySid"], "SK_new");
        assert_eq!(d.0["apiKeySecret"], "new");
        assert!(!d.0.contains_key("api_key_sid"), "spelling kept");
        assert_eq!(d.0["other"], 7);
        assert_eq!(d.previous_key_sid().as_deref(), Some("SK_old"));
        assert_eq!(d.0["previous"]["version"], "v1");
        assert!(d.claim().is_none());
        assert_eq!(d.rotated_at(), Some(now));
        assert_eq!(
            d.retire_at(),
            Some(now + std::time::Duration::from_secs(3600))
        );
        d.drop_previous();
        assert!(d.retire_at().is_none());
    }

    /// A pending value spelled in camelCase (which the parser accepts) is
    /// seen and promoted: before, promote read snake_case only, wrote the
    /// pending value nowhere, and a later rotation wrote snake_case fields
    /// beside the camelCase ones (a document that no longer parses).
    #[test]
    fn camel_case_pending_and_previous_are_read() {
        let doc = r#"{"account_sid":"AC1","auth_token":"old","pending":{"rotation_id":"r1","authToken":"new"}}"#;
        let mut d = RawDocument::parse(&SecretBytes::new(doc.as_bytes().to_vec())).unwrap();
        assert!(d.has_pending_value());
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        d.promote(now, "v1", now);
        assert_eq!(d.0["auth_token"], "new");
        assert_eq!(d.0["previous"]["auth_token"], "old");
        assert!(!d.0.contains_key("authToken"));
        let (ac, cur, new, old) = (
            format!("AC{}", "0a".repeat(16)),
            format!("SK{}", "1b".repeat(16)),
            format!("SK{}", "2c".repeat(16)),
            format!("SK{}", "3d".repeat(16)),
        );
        let (s1, s2, s3) = ("S".repeat(32), "T".repeat(32), "U".repeat(32));
        let doc = format!(
            r#"{{"accountSid":"{ac}","apiKeySid":"{cur}","apiKeySecret":"{s1}","pending":{{"apiKeySid":"{new}","apiKeySecret":"{s2}"}},"previous":{{"apiKeySid":"{old}","apiKeySecret":"{s3}","retireAt":"2030-01-02T03:04:05Z"}}}}"#
        );
        let mut d = RawDocument::parse(&SecretBytes::new(doc.as_bytes().to_vec())).unwrap();
        assert_eq!(d.pending_key_sid(), Some(new.clone()));
        assert_eq!(d.previous_key_sid(), Some(old));
        assert!(d.retire_at().is_some());
        d.promote(now, "v2", now);
        assert_eq!(d.0["apiKeySid"], new.as_str());
        assert_eq!(d.0["apiKeySecret"], s2.as_str());
        assert_eq!(d.previous_key_sid(), Some(cur));
        let bytes = d.to_bytes();
        crate::credential::parse_document("c", bytes.expose_secret(), None)
            .map_err(|e| e.to_string())
            .expect("the promoted document parses");
    }
}
