//! ValidateWebhook and MintAccessToken over the socket, checked against
//! Twilio's own Python library (tests/support/twilio_ref.py: twilio's
//! RequestValidator and AccessToken, PyJWT), so the algorithms are checked
//! against Twilio's code, not against our reading of it.

mod support;

use std::{fs, time::Duration};

use credbroker::{client::Client, proto};
use rand::{Rng, SeedableRng};
use support::{services::*, *};
use tonic::Code;

/// Runs twilio_ref.py on a batch of requests.
fn reference(requests: &[serde_json::Value]) -> Vec<serde_json::Value> {
    use std::io::Write;
    let python = Service::venv_python();
    assert!(
        python.exists(),
        "{} missing: run scripts/test-all",
        python.display()
    );
    let mut child = std::process::Command::new(python)
        .arg(repo().join("tests/support/twilio_ref.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            serde_json::Value::Array(requests.to_vec())
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "twilio_ref.py failed");
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for a in &answers {
        assert!(a.get("error").is_none(), "twilio_ref.py: {a}");
    }
    answers
}

fn config() -> &'static str {
    r#"
[server]
socket = "{socket}"
allow_root = true

[stores.local]
type = "file"
path = "{dir}/secrets.json"

[credentials.main]
store = "local"
path = "main"

[credentials.signing]
store = "local"
path = "signing"
[credentials.signing.access_tokens]
max_ttl = "1h"
grants = ["voice", "video"]
identity_prefix = "user-"

[credentials.plain]
store = "local"
path = "plain"
"#
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_and_access_tokens_agree_with_twilio_python() {
    let dir = world_dir();
    let (current, previous, other) = (token(0x7e01), token(0x7e02), token(0x7e03));
    let key_secret = key_secret(17001);
    let main_doc = format!(
        r#"{{"account_sid": "{AC}", "auth_token": "{current}", "previous": {{"auth_token": "{previous}", "retire_at": "2099-01-01T00:00:00Z"}}}}"#
    );
    fs::write(
        dir.path().join("secrets.json"),
        format!(
            r#"{{"main": {main_doc}, "signing": {}, "plain": {}}}"#,
            api_key_doc(&key_secret),
            api_key_doc(&key_secret)
        ),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path(), config()).secrets(&[&current, &previous, &key_secret]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut broker = proto::credential_broker_client::CredentialBrokerClient::new(client.channel());

    // Random form webhooks, signed by twilio-python with each token.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut cases = Vec::new();
    for i in 0..60 {
        let host = [
            "example.com",
            "hooks.example.org:8443",
            "a.example.net:443",
            "b.example.net",
        ][i % 4];
        let scheme = if i % 3 == 0 { "http" } else { "https" };
        let url = format!(
            "{scheme}://{host}/twilio/sms{}?id={}&x=%20y",
            i % 5,
            rng.random::<u16>()
        );
        let params: Vec<(String, String)> = (0..rng.random_range(0..6))
            .map(|_| {
                let k = ["From", "To", "Body", "MediaUrl", "Body"][rng.random_range(0..5)];
                (
                    k.to_owned(),
                    format!("v{}-ü {}", rng.random::<u32>(), rng.random::<u8>()),
                )
            })
            .collect();
        let signer = [&current, &previous, &other][i % 3].clone();
        cases.push((url, params, signer));
    }
    let requests: Vec<_> = cases
        .iter()
        .map(|(url, params, token)| serde_json::json!({"op": "sign", "token": token, "url": url, "params": params}))
        .collect();
    let signatures = reference(&requests);
    for ((url, params, signer), answer) in cases.iter().zip(&signatures) {
        let request = proto::ValidateWebhookRequest {
            credential: "main".into(),
            url: url.clone(),
            params: params
                .iter()
                .map(|(k, v)| proto::FormParam {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            body: vec![],
            signature: answer["signature"].as_str().unwrap().to_owned(),
        };
        let got = broker.validate_webhook(request).await.unwrap().into_inner();
        let expected = if *signer == current {
            "current"
        } else if *signer == previous {
            "previous"
        } else {
            ""
        };
        assert_eq!(got.matched, expected, "{url} {params:?}");
        assert_eq!(got.valid, !expected.is_empty());
    }

    // JSON webhooks: bodySHA256 in the URL, the signature over the URL.
    let body = br#"{"event":"message.delivered","sid":"SM123"}"#;
    use base64::Engine;
    let signed = &reference(&[serde_json::json!({
        "op": "sign_body", "token": current, "url": "https://example.com/hooks/json",
        "body_b64": base64::engine::general_purpose::STANDARD.encode(body)
    })])[0];
    let json_request = |body: &[u8]| proto::ValidateWebhookRequest {
        credential: "main".into(),
        url: signed["url"].as_str().unwrap().to_owned(),
        params: vec![],
        body: body.to_vec(),
        signature: signed["signature"].as_str().unwrap().to_owned(),
    };
    assert!(
        broker
            .validate_webhook(json_request(body))
            .await
            .unwrap()
            .into_inner()
            .valid
    );
    let tampered = broker
        .validate_webhook(json_request(b"{}"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !tampered.valid,
        "a body that does not match bodySHA256 is refused"
    );

    // An API key credential cannot check webhook signatures.
    let err = broker
        .validate_webhook(proto::ValidateWebhookRequest {
            credential: "signing".into(),
            url: "https://example.com/".into(),
            signature: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // MintAccessToken: decoded by PyJWT with the key secret; claims as
    // twilio-python's AccessToken makes them for the same input.
    let minted = broker
        .mint_access_token(proto::MintAccessTokenRequest {
            credential: "signing".into(),
            identity: "user-42".into(),
            ttl_seconds: 600,
            voice: Some(proto::VoiceGrant {
                outgoing_application_sid: "AP0123456789abcdef0123456789abcdef".into(),
                incoming_allow: true,
            }),
            video: Some(proto::VideoGrant {
                room: "lobby".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let answers = reference(&[
        serde_json::json!({"op": "decode", "token": minted.token, "secret": key_secret}),
        serde_json::json!({"op": "access_token", "account_sid": AC, "key_sid": SK, "key_secret": key_secret,
            "identity": "user-42", "ttl": 600,
            "grants": {"voice": {"outgoing_application_sid": "AP0123456789abcdef0123456789abcdef", "incoming_allow": true}, "video": {"room": "lobby"}}}),
    ]);
    let (ours, theirs) = (&answers[0], &answers[1]);
    assert_eq!(ours["header"]["cty"], "twilio-fpa;v=1");
    assert_eq!(ours["header"]["alg"], "HS256");
    assert_eq!(ours["payload"]["iss"], SK);
    assert_eq!(ours["payload"]["sub"], AC);
    assert!(
        ours["payload"]["jti"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{SK}-"))
    );
    let (iat, exp) = (
        ours["payload"]["iat"].as_u64().unwrap(),
        ours["payload"]["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 600);
    assert_eq!(
        ours["payload"]["grants"], theirs["claims"]["grants"],
        "grants as twilio-python makes them"
    );
    let expires = std::time::SystemTime::try_from(minted.expires_at.unwrap()).unwrap();
    assert_eq!(
        expires
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        exp
    );

    // Refusals say why.
    let mint =
        |identity: &str, ttl: u32, chat: bool, credential: &str| proto::MintAccessTokenRequest {
            credential: credential.into(),
            identity: identity.into(),
            ttl_seconds: ttl,
            chat: chat.then(|| proto::ChatGrant {
                service_sid: "IS0123".into(),
            }),
            ..Default::default()
        };
    for (request, code, why) in [
        (
            mint("user-1", 60, true, "signing"),
            Code::PermissionDenied,
            "`chat` grant",
        ),
        (
            mint("admin", 60, false, "signing"),
            Code::PermissionDenied,
            "must start with",
        ),
        (
            mint("user-1", 7200, false, "signing"),
            Code::InvalidArgument,
            "at most 3600",
        ),
        (
            mint("user-1", 60, false, "plain"),
            Code::PermissionDenied,
            "no [credentials.plain.access_tokens]",
        ),
        (
            mint("", 60, false, "signing"),
            Code::InvalidArgument,
            "identity",
        ),
    ] {
        let err = broker.mint_access_token(request).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(why), "{err:?}");
    }
    // A last call whose audit line must reach the log: once it is there,
    // every line of the calls before it is too (one writer, in order).
    broker
        .list_credentials(proto::ListCredentialsRequest::default())
        .await
        .unwrap();
    tokio::task::spawn_blocking({
        let log = daemon.log.clone();
        move || {
            wait_until(Duration::from_secs(5), "the last call's audit line", || {
                fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("method=\"ListCredentials\"")
            })
        }
    })
    .await
    .unwrap();
    daemon.assert_log_clean();
}
