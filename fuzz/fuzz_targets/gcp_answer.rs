//! Secret Manager's answers: a version name gives a numeric version or an
//! error, a payload that fails its CRC32C is never a document and never
//! quoted, secret ids follow Google's rule, no claim time keeps a claim live
//! for ever, and a claim is live only for the base it names.
#![no_main]

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use arbitrary::Arbitrary;
use credbroker::store::gcp::{CLAIM_KEYS, fuzz_answer};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    name: &'a str,
    data: &'a [u8],
    crc: Option<i64>,
    id: &'a str,
    base: &'a str,
    claim_at: &'a str,
    now: u32,
}

fuzz_target!(|input: Input| {
    let annotations = HashMap::from([
        (CLAIM_KEYS[0].to_owned(), input.base.to_owned()),
        (CLAIM_KEYS[1].to_owned(), input.claim_at.to_owned()),
    ]);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(input.now));
    let (doc, id_ok, live) = fuzz_answer(
        input.name,
        input.data,
        input.crc,
        input.id,
        &annotations,
        input.base,
        now,
    );
    match doc {
        Ok(doc) => {
            assert!(doc.version.bytes().all(|b| b.is_ascii_digit()) && !doc.version.is_empty());
            assert_eq!(doc.bytes.expose_secret(), input.data);
        }
        // Longer than any fixed text an error has: never quoted.
        Err(e) if input.data.len() > 64 => {
            let e = e.to_string();
            assert!(
                !e.as_bytes()
                    .windows(input.data.len())
                    .any(|w| w == input.data)
            );
        }
        Err(_) => {}
    }
    // A claim is on one base: another base's claim is never live.
    let other = format!("{}/", input.base);
    let (_, _, live_elsewhere) = fuzz_answer(
        input.name,
        input.data,
        input.crc,
        input.id,
        &annotations,
        &other,
        now,
    );
    assert!(
        !live_elsewhere,
        "a claim on {:?} is live for {other:?}",
        input.base
    );
    if id_ok {
        assert!((1..=255).contains(&input.id.len()));
    }
    // A claim stays live at most CLAIM_TTL (10 minutes) either side of now.
    if live {
        let at = humantime::parse_rfc3339_weak(input.claim_at).expect("a live claim has a time");
        let gap = now.duration_since(at).unwrap_or_else(|e| e.duration());
        assert!(
            gap < Duration::from_secs(600),
            "live with a claim {gap:?} away"
        );
    }
});
