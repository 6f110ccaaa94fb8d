//! The `gcp_secret_manager` store against the stateful Secret Manager v1
//! REST fake (tests/support/gcp_fake.py; the registries hold no emulator),
//! end to end through the daemon and the official Google SDK.

mod support;

use std::time::Duration;

use credbroker::client::Client;
use support::{services::*, *};

const PROJECT: &str = "credbroker-test";

struct Gcp {
    service: Service,
}

impl Gcp {
    fn start(dir: &std::path::Path) -> Gcp {
        Gcp {
            service: Service::python_fake("gcp_fake.py", dir, &[]),
        }
    }

    fn secrets_url(&self) -> String {
        format!("{}/v1/projects/{PROJECT}/secrets", self.service.url())
    }

    fn create(&self, id: &str) {
        let (status, body) = http(
            "POST",
            &format!("{}?secretId={id}", self.secrets_url()),
            Some(r#"{"replication": {"automatic": {}}}"#),
            &[],
        );
        assert_eq!(status, 200, "{body}");
    }

    /// Adds a version; returns its number.
    fn add(&self, id: &str, doc: &str) -> String {
        let (status, body) = http(
            "POST",
            &format!("{}/{id}:addVersion", self.secrets_url()),
            Some(&format!(
                r#"{{"payload": {{"data": "{}"}}}}"#,
                base64_encode(doc.as_bytes())
            )),
            &[],
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["name"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned()
    }

    fn control(&self, what: &str, body: &str) {
        let (status, body) = http(
            "POST",
            &format!("{}/__fake/{what}", self.service.url()),
            Some(body),
            &[],
        );
        assert_eq!(status, 200, "{body}");
    }
}

fn config(gcp: &Gcp) -> String {
    format!(
        r#"
[server]
socket = "{{socket}}"
allow_root = true

[defaults]
refresh_interval = "1s"
max_stale = "4s"
lease_ttl = "1m"

[stores.gcp]
type = "gcp_secret_manager"
project = "{PROJECT}"
endpoint = "{}"

[credentials.verify]
store = "gcp"
path = "twilio-verify"

[credentials.messaging]
store = "gcp"
path = "twilio-messaging"
"#,
        gcp.service.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_secret_manager_end_to_end() {
    let dir = world_dir();
    let mut gcp = Gcp::start(dir.path());
    let (t1, t2, t3, k1) = (
        token(0x2e01),
        token(0x2e02),
        token(0x2e03),
        key_secret(16001),
    );
    gcp.create("twilio-verify");
    gcp.create("twilio-messaging");
    assert_eq!(gcp.add("twilio-verify", &auth_token_doc(&t1)), "1");
    gcp.add("twilio-messaging", &api_key_doc(&k1));
    let daemon = Daemon::start(dir.path(), &config(&gcp)).secrets(&[&t1, &t2, &t3, &k1]);
    let client = Client::connect(&daemon.socket).await.unwrap();

    let got = client.get("verify").await.unwrap();
    assert_eq!((secret_of(&got), got.version.as_str()), (t1.as_str(), "1"));
    assert_eq!(secret_of(&client.get("messaging").await.unwrap()), k1);

    // A new version reaches a watcher within refresh_interval.
    let mut watch = client.watch("verify").await.unwrap();
    next_message(&mut watch, "the first message").await;
    gcp.add("twilio-verify", &auth_token_doc(&t2));
    let next = next_matching(&mut watch, Duration::from_secs(3), "version 2", |c| {
        c.version == "2"
    })
    .await;
    assert_eq!(secret_of(&next), t2);

    // Access refused for one secret: that credential is served stale (a
    // refusal may pass), then fails once max_stale has passed, naming the
    // store, the path and why; the other serves on.
    gcp.control("deny", r#"{"secret": "twilio-messaging", "deny": true}"#);
    let stale = get_stale(
        &client,
        "messaging",
        Duration::from_secs(5),
        "stale while denied",
    )
    .await;
    assert!(stale.stale);
    let err = get_err(&client, "messaging", Duration::from_secs(10), "denied").await;
    assert_unavailable_naming(
        &err,
        &[
            "max_stale",
            "permission denied",
            "store `gcp`",
            "twilio-messaging",
        ],
    );
    assert_eq!(secret_of(&client.get("verify").await.unwrap()), t2);
    gcp.control("deny", r#"{"secret": "twilio-messaging", "deny": false}"#);
    get_ok(
        &client,
        "messaging",
        Duration::from_secs(5),
        "allowed again",
    )
    .await;

    // A malformed document: stale, and the log names credential and field.
    gcp.add("twilio-verify", &api_key_doc(&k1).replace("SK", "sk"));
    let stale = next_matching(&mut watch, Duration::from_secs(3), "stale", |c| c.stale).await;
    assert_eq!(secret_of(&stale), t2);
    // The log is written by a background thread: give it a moment.
    wait_until(
        Duration::from_secs(3),
        "a log line naming the credential and the field",
        || {
            daemon
                .log_text()
                .lines()
                .any(|l| l.contains("credential `verify`") && l.contains("api_key_sid"))
        },
    );
    gcp.add("twilio-verify", &auth_token_doc(&t3));
    let fixed = next_matching(&mut watch, Duration::from_secs(3), "fixed", |c| !c.stale).await;
    assert_eq!(
        (secret_of(&fixed), fixed.version.as_str()),
        (t3.as_str(), "4")
    );

    // The emulator endpoint gets no credentials.
    let (_, requests) = http(
        "GET",
        &format!("{}/__fake/requests", gcp.service.url()),
        None,
        &[],
    );
    assert!(requests.contains(":access"), "{requests}");
    assert!(
        !requests.contains("\"authorization\": true"),
        "a token was sent to the emulator: {requests}"
    );

    // Secret Manager goes down: stale, then UNAVAILABLE; back: recovered.
    gcp.service.kill();
    let down = get_err(&client, "verify", Duration::from_secs(15), "unavailable").await;
    assert_unavailable_naming(&down, &[]);
    gcp.service.restart();
    let back = get_fresh(&client, "verify", Duration::from_secs(15), "recovery").await;
    assert_eq!(secret_of(&back), t3);
    daemon.assert_log_clean();
}

#[test]
fn startup_with_a_missing_secret_exits_64_naming_store_and_path() {
    let dir = world_dir();
    let gcp = Gcp::start(dir.path());
    gcp.create("twilio-verify");
    gcp.add("twilio-verify", &auth_token_doc(&token(0x2f01)));
    let mut d = Daemon::spawn(dir.path(), &config(&gcp));
    assert_eq!(d.wait_exit().code(), Some(64));
    let log = d.log_text();
    assert!(
        log.contains("store `gcp`") && log.contains("`twilio-messaging` was not found"),
        "{log}"
    );
}
