//! Vault's answers to KV reads: a document is always a JSON object, the
//! errors short (Vault's own text is cut), never dependent on the secret
//! data in the answer, and never a panic. A KV v1 version (a digest of the
//! document) is stable: the document read, served back, reads as the same
//! version, as the compare-and-set of the next rotation step needs.
#![no_main]

use credbroker::store::vault::fuzz_read;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// Every string inside `v` changed.
fn change_strings(v: &mut Value) {
    match v {
        Value::String(s) => s.push('x'),
        Value::Array(a) => a.iter_mut().for_each(change_strings),
        Value::Object(o) => o.values_mut().for_each(change_strings),
        _ => {}
    }
}

/// The answer with every string of its data (the document: secrets)
/// changed, when it is a JSON object with data.
fn with_other_data(body: &[u8], v2: bool) -> Option<Vec<u8>> {
    let mut answer: Value = serde_json::from_slice(body).ok()?;
    let data = answer.get_mut("data")?;
    let doc = if v2 { data.get_mut("data")? } else { data };
    change_strings(doc);
    Some(serde_json::to_vec(&answer).expect("JSON"))
}

fuzz_target!(|input: (bool, u16, &[u8])| {
    let (v2, status, body) = input;
    let kv = if v2 { 2 } else { 1 };
    match fuzz_read(kv, status, body) {
        Ok(doc) => {
            let v: Value = serde_json::from_slice(doc.bytes.expose_secret()).expect("JSON");
            assert!(v.is_object());
            assert!(!doc.version.is_empty());
            if !v2 {
                let again = serde_json::to_vec(&json!({ "data": v })).expect("JSON");
                let reread = fuzz_read(1, 200, &again).expect("the same document reads again");
                assert_eq!(reread.version, doc.version, "a KV v1 version is not stable");
                assert_eq!(reread.bytes.expose_secret(), doc.bytes.expose_secret());
            }
        }
        Err(e) => {
            let e = e.to_string();
            assert!(e.len() < 1024, "{} bytes", e.len());
            if let Some(other) = with_other_data(body, v2) {
                let again = fuzz_read(kv, status, &other)
                    .map(drop)
                    .map_err(|e| e.to_string());
                assert_eq!(again, Err(e), "the error depends on the data");
            }
        }
    }
});
