//! Webhook checks: a form request signed as Twilio signs it passes, in any
//! parameter order; another token, or a body the URL does not cover, fails.
//! A JSON webhook (the body's SHA-256 in the URL) passes with its body and
//! fails with another body or with form parameters. Nothing panics.
#![no_main]

use arbitrary::Arbitrary;
use credbroker::{
    secret::SecretString,
    twilio::webhook::{self, WebhookRequest},
};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};

#[derive(Arbitrary, Debug)]
struct Input {
    token: [u8; 16],
    url: String,
    params: Vec<(String, String)>,
    body: Vec<u8>,
    signature: String,
}

/// Whether `url`, percent- and plus-decoded, names `bodySHA256` anywhere:
/// then it may already be a JSON webhook (the check decodes field names).
fn may_carry_body_hash(url: &str) -> bool {
    let mut decoded = Vec::with_capacity(url.len());
    let mut bytes = url.bytes();
    while let Some(b) = bytes.next() {
        let hex = |b: Option<u8>| b.and_then(|b| (b as char).to_digit(16));
        match b {
            b'%' => {
                let mut ahead = bytes.clone();
                match (hex(ahead.next()), hex(ahead.next())) {
                    (Some(h), Some(l)) => {
                        decoded.push((h * 16 + l) as u8);
                        bytes = ahead;
                    }
                    _ => decoded.push(b'%'),
                }
            }
            b'+' => decoded.push(b' '),
            b => decoded.push(b),
        }
    }
    decoded
        .windows(10)
        .any(|w| w == webhook::BODY_HASH_PARAM.as_bytes())
}

/// A JSON webhook to `url` (when it has no fragment): its body's hash
/// added to the query, the signature over that URL alone.
fn check_json(token: &SecretString, url: &str, body: &[u8], params: &[(String, String)]) {
    if url.contains('#') {
        return;
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}bodySHA256={}", hex::encode(Sha256::digest(body)));
    let signed = webhook::signature(token, &url, &[]);
    let req = WebhookRequest {
        url: &url,
        params: &[],
        body,
        signature: &signed,
    };
    assert!(
        webhook::validate(token, &req),
        "a signed JSON webhook fails"
    );
    let other_body = [body, b"x"].concat();
    let changed = WebhookRequest {
        body: &other_body,
        ..req
    };
    assert!(!webhook::validate(token, &changed), "another body passes");
    if !params.is_empty() {
        let with_params = WebhookRequest { params, ..req };
        assert!(
            !webhook::validate(token, &with_params),
            "form parameters pass"
        );
    }
}

fuzz_target!(|input: Input| {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let token = SecretString::new(hex(&input.token));
    let any = WebhookRequest {
        url: &input.url,
        params: &input.params,
        body: &input.body,
        signature: &input.signature,
    };
    let _ = webhook::validate(&token, &any);
    if may_carry_body_hash(&input.url) {
        return;
    }
    check_json(&token, &input.url, &input.body, &input.params);
    let signed = webhook::signature(&token, &input.url, &input.params);
    let mut reversed = input.params.clone();
    reversed.reverse();
    for params in [&input.params, &reversed] {
        let req = WebhookRequest {
            url: &input.url,
            params,
            body: &[],
            signature: &signed,
        };
        assert!(webhook::validate(&token, &req), "a signed request fails");
        let other = SecretString::new(hex(&input.token.map(|b| b ^ 0x5a)));
        assert!(!webhook::validate(&other, &req), "another token passes");
        if !input.body.is_empty() {
            let with_body = WebhookRequest {
                body: &input.body,
                ..req
            };
            assert!(
                !webhook::validate(&token, &with_body),
                "an uncovered body passes"
            );
        }
    }
});
