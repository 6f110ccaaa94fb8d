//! Twilio's answers to key lists, key creates, key fetches and secondary
//! Auth Token creates, as a hostile Twilio could send them: errors stay
//! short (Twilio's message is cut) and never depend on a secret in the
//! answer, a next page is only ever a path on our base, a created key has a
//! valid SID and the secret Twilio sent, a policy is JSON text; an OAuth
//! token answer gives a token that expires in the future and within a day,
//! or a short error that never quotes the token.
#![no_main]

use std::time::{Duration, SystemTime};

use credbroker::twilio::client::{FuzzReading, fuzz_answer};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Where Twilio puts a secret in an answer.
const SECRETS: [&str; 2] = ["secret", "secondary_auth_token"];

fn error_text<T, E: ToString>(r: &Result<T, E>) -> Option<String> {
    r.as_ref().err().map(ToString::to_string)
}

/// Every error `status` and `body` give, as text.
fn errors(status: u16, body: &[u8]) -> Vec<Option<String>> {
    match fuzz_answer(status, body) {
        Err(e) => vec![Some(e)],
        Ok(r) => vec![
            error_text(&r.page),
            error_text(&r.key),
            error_text(&r.policy),
            error_text(&r.secondary),
        ],
    }
}

/// The body with each secret replaced by another string: when the answer
/// is a JSON object with a secret in it.
fn with_other_secrets(body: &[u8]) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut o)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let mut changed = false;
    for field in SECRETS {
        if let Some(Value::String(s)) = o.get_mut(field) {
            s.push('x');
            changed = true;
        }
    }
    changed.then(|| serde_json::to_vec(&o).expect("JSON"))
}

fn check(reading: FuzzReading, body: &[u8]) {
    if let Ok((keys, next)) = reading.page {
        if let Some(next) = next {
            assert!(next.starts_with('/') && !next.starts_with("//"), "{next:?}");
        }
        assert!(keys.iter().all(|k| k.sid.len() < body.len()));
    }
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Ok(key) = reading.key {
        assert!(key.sid.as_str().starts_with("SK") && key.sid.as_str().len() == 34);
        assert_eq!(Some(key.secret.expose_secret()), json["secret"].as_str());
    }
    if let Ok(Some(policy)) = reading.policy {
        assert!(
            matches!(json["policy"], Value::String(_))
                || serde_json::from_str::<Value>(&policy).is_ok()
        );
    }
    if let Ok(token) = reading.secondary {
        assert_eq!(
            Some(token.expose_secret()),
            json["secondary_auth_token"].as_str()
        );
    }
}

fuzz_target!(|input: (u16, &[u8])| {
    let (status, body) = input;
    let said = errors(status, body);
    for e in said.iter().flatten() {
        assert!(e.len() < 1024, "an error of {} bytes", e.len());
    }
    if let Some(other) = with_other_secrets(body) {
        assert_eq!(errors(status, &other), said, "an error depends on a secret");
    }
    if let Ok(reading) = fuzz_answer(status, body) {
        check(reading, body);
    }
    check_token(body);
});

/// The body read as an OAuth token answer.
fn check_token(body: &[u8]) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    match credbroker::twilio::oauth::fuzz_read_token(body, now) {
        Ok(expires_at) => {
            assert!(expires_at > now, "a token that has expired already");
            assert!(
                expires_at <= now + Duration::from_secs(86_400),
                "a token for more than a day"
            );
        }
        Err(e) => {
            assert!(e.len() < 1024, "an error of {} bytes", e.len());
            let token = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("access_token")?.as_str().map(str::to_owned));
            if let Some(t) = token.filter(|t| t.len() >= 8) {
                assert!(!e.contains(&t), "the error quotes the token: {e}");
            }
        }
    }
}
