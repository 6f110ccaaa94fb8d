//! Secrets Manager's answers. A GetSecretValue answer gives exactly the
//! SecretString (else the SecretBinary) it carries, under a non-empty
//! version, or an error that never quotes the secret. A service error
//! (whatever code, status and message) is short, on one line, and a
//! refusal is never taken for a missing secret unless AWS said so.
#![no_main]

use arbitrary::Arbitrary;
use credbroker::store::{
    StoreError,
    aws::{fuzz_error, fuzz_read},
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    code: &'a str,
    status: u16,
    message: &'a str,
    version: Option<&'a str>,
    text: Option<&'a str>,
    binary: Option<&'a [u8]>,
}

fn check_error(input: &Input) {
    let e = fuzz_error(input.code, input.status, input.message);
    let text = e.to_string();
    assert!(text.len() < 1200, "an error of {} bytes", text.len());
    assert!(!text.contains('\n'));
    if matches!(e, StoreError::NotFound { .. }) {
        assert_eq!(input.code, "ResourceNotFoundException");
    }
}

fn check_read(input: &Input) {
    match fuzz_read(input.version, input.text, input.binary) {
        Ok(doc) => {
            let sent = input.text.map(str::as_bytes).or(input.binary);
            assert_eq!(Some(doc.bytes.expose_secret()), sent);
            assert_eq!(Some(doc.version.as_str()), input.version);
            assert!(!doc.version.is_empty());
        }
        Err(e) => {
            let e = e.to_string();
            for secret in [input.text.map(str::as_bytes), input.binary]
                .into_iter()
                .flatten()
            {
                // Longer than any fixed text an error has.
                if secret.len() > 64 {
                    assert!(!e.as_bytes().windows(secret.len()).any(|w| w == secret));
                }
            }
        }
    }
}

fuzz_target!(|input: Input| {
    check_error(&input);
    check_read(&input);
});
