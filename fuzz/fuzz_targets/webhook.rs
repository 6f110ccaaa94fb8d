//! Webhook checks: a form request signed as Twilio signs it passes, in any
//! parameter order; another token, or a body the URL does not cover, fails;
//! nothing panics.
#![no_main]

use arbitrary::Arbitrary;
use credbroker::{
    secret::SecretString,
    twilio::webhook::{self, WebhookRequest},
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    token: [u8; 16],
    url: String,
    params: Vec<(String, String)>,
    body: Vec<u8>,
    signature: String,
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
    if input.url.contains("bodySHA256") {
        return;
    }
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
