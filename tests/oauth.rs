//! `kind = "oauth_client"` end to end: the real daemon serves bearer tokens
//! it fetches from the Twilio fake through a Prism proxy that checks every
//! token exchange against Twilio's OAuth document; a workload's REST call
//! with a served token works at the fake until the token's `exp`, and not
//! after. (The token lifecycle under paused time is in
//! src/issuer/oauth/tests.rs; here it runs on real time with tokens of a
//! few seconds.)

mod support;

use std::{
    fs,
    path::Path,
    time::{Duration, SystemTime},
};

use credbroker::{client::Client, proto};
use support::{twilio::*, *};
use tonic::Code;

const CLIENT_ID: &str = "OQ00112233445566778899aabbccddeeff";
const SECRET_1: &str = "first-Client-Secret-0123456789abcdef";
const SECRET_2: &str = "second-Client-Secret-0123456789abcdef";
const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

fn write_app(dir: &Path, secret: &str) {
    replace_file(
        &dir.join("secrets.json"),
        &serde_json::json!({
            "app": {"accountSid": AC, "clientId": CLIENT_ID, "clientSecret": secret},
            "verify": {"account_sid": AC, "auth_token": ADMIN_TOKEN},
        })
        .to_string(),
    );
}

fn config(o: &OAuth) -> String {
    format!(
        r#"
[server]
socket = "{{socket}}"
allow_root = true
admin = {{ uids = [0] }}

[twilio]
oauth_base = "{}"

[stores.local]
type = "file"
path = "{{dir}}/secrets.json"

[credentials.app]
store = "local"
path = "app"
refresh_interval = "1h"

[credentials.verify]
store = "local"
path = "verify"
"#,
        o.v2.url()
    )
}

fn bearer(c: &proto::Credential) -> (String, SystemTime) {
    match &c.secret {
        Some(proto::credential::Secret::Bearer(b)) => (
            b.access_token.clone(),
            SystemTime::try_from(b.expires_at.unwrap()).unwrap(),
        ),
        other => panic!("not a bearer token: {}", other.is_some()),
    }
}

/// The `exp` claim of a JWT, read here independently of the daemon.
fn jwt_exp(token: &str) -> SystemTime {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs(claims["exp"].as_u64().unwrap())
}

fn lease_end(c: &proto::Credential) -> SystemTime {
    SystemTime::try_from(c.expires_at.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_served_refreshed_and_refused_after_exp() {
    let dir = world_dir();
    let o = OAuth::start(dir.path());
    o.app(CLIENT_ID, SECRET_1);
    // Tokens of 9 s: the daemon fetches the next one at 6 s.
    o.token_ttl(9);
    write_app(dir.path(), SECRET_1);
    let mut daemon = Daemon::start(dir.path(), &config(&o)).secrets(&[SECRET_1]);
    let client = Client::connect(&daemon.socket).await.unwrap();

    let kinds: Vec<_> = client
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.kind))
        .collect();
    assert!(
        kinds.contains(&("app".into(), "oauth_client".into())),
        "{kinds:?}"
    );

    let mut watch = client.watch("app").await.unwrap();
    let first = next_message(&mut watch, "the first token").await;
    let (t1, exp1) = bearer(&first);
    daemon.add_secret(&t1);
    assert_eq!(first.account_sid, AC);
    assert!(!first.stale);
    assert!(first.previous.is_none());
    // The lease ends with the token: its own exp (or `expires_in` from
    // when it came, a little earlier), never later.
    assert!(
        exp1 <= jwt_exp(&t1) && exp1 + Duration::from_secs(2) > jwt_exp(&t1),
        "{exp1:?} against exp {:?}",
        jwt_exp(&t1)
    );
    assert_eq!(lease_end(&first), exp1);
    let got = client.get("app").await.unwrap();
    assert_eq!(bearer(&got).0, t1);
    assert!(lease_end(&got) <= exp1);

    // A workload's REST call with the served token works at the fake.
    assert_eq!(o.rest_with(&t1, MESSAGES), 200);
    // It is an OAuth app's token, not an Auth Token: no Account resource.
    assert_eq!(
        o.rest_with(
            &t1,
            "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef.json"
        ),
        401
    );

    // Two thirds into its life a new token is pushed to the watcher.
    let second = next_matching(
        &mut watch,
        Duration::from_secs(30),
        "the refreshed token",
        |c| bearer(c).0 != t1,
    )
    .await;
    let (t2, exp2) = bearer(&second);
    daemon.add_secret(&t2);
    assert!(exp2 > exp1);
    assert_ne!(second.version, first.version);
    assert!(
        SystemTime::now() < exp1,
        "the new token came only after the old one expired"
    );
    // The old token still works until its exp, then the fake refuses it.
    wait_until(Duration::from_secs(20), "the first token's exp", || {
        SystemTime::now() >= exp1 + Duration::from_millis(100)
    });
    assert_eq!(
        o.rest_with(&t1, MESSAGES),
        401,
        "an expired token still works"
    );
    let now = client.get("app").await.unwrap();
    assert_ne!(bearer(&now).0, t1, "an expired token is served");
    assert_eq!(o.rest_with(&bearer(&now).0, MESSAGES), 200);

    // The calls that need another kind say why.
    let mut broker = proto::credential_broker_client::CredentialBrokerClient::new(client.channel());
    let e = broker
        .validate_webhook(proto::ValidateWebhookRequest {
            credential: "app".into(),
            url: "https://example.com/hook".into(),
            signature: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("bearer tokens only"),
        "{}",
        e.message()
    );
    let e = broker
        .mint_access_token(proto::MintAccessTokenRequest {
            credential: "app".into(),
            identity: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let mut admin = proto::rotation_admin_client::RotationAdminClient::new(client.channel());
    let e = admin
        .rotate(proto::RotateRequest { name: "app".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // The CLI shows the token redacted unless asked.
    let sock = daemon.socket.display().to_string();
    let out = cli(&["get", "app", "--socket", &sock, "--json"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["kind"], "oauth_client");
    assert_eq!(shown["access_token"], "<redacted>");

    o.assert_no_violations(dir.path());
    daemon.assert_http_log_clean();
    drop(daemon);

    // A [rotation] on it (its kind read off the document, so the config
    // could not tell) stops the start, saying why.
    let rotating = config(&o).replace(
        "refresh_interval = \"1h\"\n",
        "refresh_interval = \"1h\"\n[credentials.app.rotation]\nschedule = \"0 0 3 * * Sun\"\ngrace = \"2h\"\nadmin_credential = \"verify\"\n",
    );
    assert!(rotating.contains("[credentials.app.rotation]"));
    assert_start_refused(dir.path(), &rotating, "an oauth_client has no [rotation]");
}

/// The daemon on `config` exits 64 at start, naming credential `app` and
/// saying `why`.
fn assert_start_refused(dir: &Path, config: &str, why: &str) {
    let mut refused = Daemon::spawn(dir, config);
    assert_eq!(refused.wait_exit().code(), Some(64));
    let log = refused.log_text();
    assert!(
        log.contains("credential `app`") && log.contains(why),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_secret_outage_and_refusal() {
    let dir = world_dir();
    let o = OAuth::start(dir.path());
    o.app(CLIENT_ID, SECRET_1);
    o.token_ttl(3600);
    write_app(dir.path(), SECRET_1);
    let mut daemon = Daemon::start(dir.path(), &config(&o)).secrets(&[SECRET_1, SECRET_2]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut watch = client.watch("app").await.unwrap();
    let first = next_message(&mut watch, "the first token").await;
    let (t1, _) = bearer(&first);
    daemon.add_secret(&t1);

    // A new client secret (replaced in the Console, then in the store): a
    // new token at once, though the old one has most of its hour left.
    o.app(CLIENT_ID, SECRET_2);
    let issued = o.tokens_issued();
    write_app(dir.path(), SECRET_2);
    let fresh = next_matching(
        &mut watch,
        Duration::from_secs(30),
        "a token fetched with the new secret",
        |c| bearer(c).0 != t1,
    )
    .await;
    daemon.add_secret(&bearer(&fresh).0);
    assert_eq!(o.tokens_issued(), issued + 1);
    assert_eq!(o.rest_with(&bearer(&fresh).0, MESSAGES), 200);

    // The token endpoint down: the current token is served stale until its
    // own exp, then UNAVAILABLE. (Short tokens from here: 6 s, refreshed
    // at 4 s.)
    o.token_ttl(6);
    // Any change of the document fetches at once: this one brings a 6 s token.
    fs::write(
        dir.path().join("secrets.json"),
        serde_json::json!({
            "app": {"accountSid": AC, "clientId": CLIENT_ID, "clientSecret": SECRET_2, "note": 1},
            "verify": {"account_sid": AC, "auth_token": ADMIN_TOKEN},
        })
        .to_string(),
    )
    .unwrap();
    let short = next_matching(&mut watch, Duration::from_secs(30), "a 6 s token", |c| {
        bearer(c).1 < SystemTime::now() + Duration::from_secs(7)
    })
    .await;
    let (t3, exp3) = bearer(&short);
    daemon.add_secret(&t3);
    o.post(
        "fail",
        r#"{"path_prefix": "/v2/token", "status": 503, "count": 1000}"#,
    );
    let stale = next_matching(
        &mut watch,
        Duration::from_secs(30),
        "the token served stale",
        |c| c.stale,
    )
    .await;
    assert_eq!(bearer(&stale).0, t3);
    assert!(stale.stale_since.is_some());
    // Until the token's exp only the stale token; then the error.
    let status = loop {
        let got = tokio::time::timeout(Duration::from_secs(20), watch.message())
            .await
            .expect("no news at the token's exp");
        match got {
            Ok(Some(c)) => {
                assert_eq!(bearer(&c).0, t3);
                assert!(c.stale && SystemTime::now() < exp3, "{:?}", c.expires_at);
            }
            Ok(None) => panic!("the watch ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(SystemTime::now() >= exp3);
    assert!(
        status.message().contains("credential `app`")
            && status.message().contains("bearer token expired")
            && status.message().contains("503"),
        "{}",
        status.message()
    );
    let e = client.get("app").await.unwrap_err();
    assert_unavailable_naming(&e, &["app", "bearer token expired"]);

    // Twilio back, but the store holds a secret Twilio refuses: UNAVAILABLE
    // at once (no stale token), naming the credential and Twilio's code.
    o.post("fail", r#"{"path_prefix": "/v2/token", "count": 0}"#);
    write_app(dir.path(), "a-wrong-secret-0123456789abcdef");
    daemon.add_secret("a-wrong-secret-0123456789abcdef");
    wait_until(Duration::from_secs(20), "the refusal to show", || {
        daemon
            .log_text()
            .lines()
            .any(|l| l.contains("could not fetch a bearer token") && l.contains("20003"))
    });
    let e = client.get("app").await.unwrap_err();
    assert_unavailable_naming(&e, &["credential `app`", "bearer token", "20003"]);

    o.assert_no_violations(dir.path());
    daemon.assert_http_log_clean();
    drop(client);
    drop(daemon);

    // At start, a refused secret stops the daemon (exit 64), as a store's
    // refusal does: there is nothing to serve until the store changes.
    assert_start_refused(dir.path(), &config(&o), "20003");
}

/// The fake's token answer against Twilio's own document, unchanged:
/// POST /v1/token through Prism with `twilio_oauth_v1.json` (201,
/// `oauth.v1.token`), and a refused secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_token_endpoint_follows_twilios_document() {
    let dir = world_dir();
    let o = OAuth::start(dir.path());
    o.app(CLIENT_ID, SECRET_1);
    let http = reqwest::Client::new();
    // A client-credentials grant for SECRET at Twilio's v1 endpoint (the
    // document's field names) or the v2 one (what twilio-python sends).
    let post = |v1: bool, secret: &'static str| {
        let (url, names) = if v1 {
            (
                format!("{}/v1/token", o.v1.url()),
                ["GrantType", "ClientId", "ClientSecret"],
            )
        } else {
            (
                format!("{}/v2/token", o.v2.url()),
                ["grant_type", "client_id", "client_secret"],
            )
        };
        let form = names
            .into_iter()
            .zip(["client_credentials", CLIENT_ID, secret])
            .collect::<Vec<_>>();
        http.post(url).form(&form).send()
    };
    let ok = post(true, SECRET_1).await.unwrap();
    assert_eq!(ok.status(), 201);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let v2 = post(false, SECRET_1).await.unwrap();
    assert_eq!(v2.status(), 200);
    let refused = post(false, SECRET_2).await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], 20003);
    o.assert_no_violations(dir.path());

    // And Prism does catch a token answer that breaks the schema.
    o.post(
        "corrupt",
        r#"{"path_prefix": "/v1/token", "count": 1, "set": {"expires_in": "an hour"}}"#,
    );
    let broken = post(true, SECRET_1).await.unwrap();
    assert_eq!(
        broken.status(),
        500,
        "Prism let a broken token answer through"
    );
    // Prism writes its log after it answers.
    let log = || fs::read_to_string(dir.path().join("prism-oauth-v1.log")).unwrap();
    wait_until(
        Duration::from_secs(10),
        "Prism to log the violation",
        || !prism_violations(&log()).is_empty(),
    );
}
