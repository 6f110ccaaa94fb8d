//! Vault's answers to KV reads: a document is always a JSON object, the
//! errors short (Vault's own text is cut) and never a panic.
#![no_main]

use credbroker::store::vault::fuzz_read;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (bool, u16, &[u8])| {
    let (v2, status, body) = input;
    match fuzz_read(if v2 { 2 } else { 1 }, status, body) {
        Ok(doc) => {
            let v: serde_json::Value =
                serde_json::from_slice(doc.bytes.expose_secret()).expect("JSON");
            assert!(v.is_object());
            assert!(!doc.version.is_empty());
        }
        Err(e) => assert!(e.to_string().len() < 1024, "{} bytes", e.to_string().len()),
    }
});
