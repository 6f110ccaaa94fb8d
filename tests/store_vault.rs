//! The `vault` store against the stateful Vault fake (KV v2, Kubernetes
//! auth, token self-endpoints — what RustyVault lacks), end to end through
//! the daemon's real vaultrs code.

mod support;

use std::{fs, time::Duration};

use credbroker::client::Client;
use support::{services::*, *};
use tonic::Code;

const ROOT: &str = "fake-root-token-for-tests";

struct Vault {
    service: Service,
}

impl Vault {
    fn start(dir: &std::path::Path, token_ttl: u32) -> Vault {
        fs::write(dir.join("jwt"), "k8s-service-account-jwt-for-tests").unwrap();
        let args = [
            "--k8s-role",
            "credbroker",
            "--k8s-jwt-file",
            &dir.join("jwt").display().to_string(),
            "--root-token",
            ROOT,
            "--token-ttl",
            &token_ttl.to_string(),
            "--token-max-ttl",
            "3600",
        ]
        .map(String::from);
        Vault {
            service: Service::python_fake("vault_fake.py", dir, &args),
        }
    }

    fn put(&self, path: &str, doc: &str) {
        let (status, body) = http(
            "POST",
            &format!("{}/v1/secret/data/{path}", self.service.url()),
            Some(&format!(r#"{{"data": {doc}}}"#)),
            &[("X-Vault-Token", ROOT)],
        );
        assert_eq!(status, 200, "{body}");
    }

    fn control(&self, endpoint: &str, body: &str) -> String {
        let (status, body) = http(
            "POST",
            &format!("{}/__fake/{endpoint}", self.service.url()),
            Some(body),
            &[],
        );
        assert_eq!(status, 200, "{body}");
        body
    }

    fn stats(&self) -> serde_json::Value {
        let (_, body) = http(
            "GET",
            &format!("{}/__fake/stats", self.service.url()),
            None,
            &[],
        );
        serde_json::from_str(&body).unwrap()
    }
}

fn config(vault: &Vault, extra: &str) -> String {
    format!(
        r#"
[server]
socket = "{{socket}}"
allow_root = true

[defaults]
refresh_interval = "1s"
max_stale = "4s"
lease_ttl = "1m"

[stores.vault]
type = "vault"
address = "{}"
mount = "secret"
kv_version = 2
auth = {{ method = "kubernetes", role = "credbroker", jwt_file = "{{dir}}/jwt" }}

[credentials.verify]
store = "vault"
path = "twilio/verify"

[credentials.messaging]
store = "vault"
path = "twilio/messaging"
{extra}"#,
        vault.service.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_with_kubernetes_auth_end_to_end() {
    let dir = world_dir();
    let mut vault = Vault::start(dir.path(), 3600);
    let (t1, t2, t3, t4, k1) = (
        token(0xc001),
        token(0xc002),
        token(0xc003),
        token(0xc004),
        key_secret(12001),
    );
    vault.put("twilio/verify", &auth_token_doc(&t1));
    vault.put("twilio/messaging", &api_key_doc(&k1));
    let daemon = Daemon::start(dir.path(), &config(&vault, "")).secrets(&[&t1, &t2, &t3, &t4, &k1]);
    let client = Client::connect(&daemon.socket).await.unwrap();

    let got = client.get("verify").await.unwrap();
    assert_eq!(secret_of(&got), t1);
    assert_eq!(
        got.version, "1",
        "KV v2 version numbers are the credential's version"
    );
    assert_eq!(secret_of(&client.get("messaging").await.unwrap()), k1);
    assert_eq!(vault.stats()["logins"], 1);

    // A new version reaches a watcher within refresh_interval.
    let mut watch = client.watch("verify").await.unwrap();
    watch.message().await.unwrap().unwrap();
    vault.put("twilio/verify", &auth_token_doc(&t2));
    let next = next_matching(&mut watch, Duration::from_secs(3), "version 2", |c| {
        c.version == "2"
    })
    .await;
    assert_eq!(secret_of(&next), t2);

    // The token expires (revoked, TTL passed): the store logs in again.
    vault.control("expire-tokens", "{}");
    vault.put("twilio/verify", &auth_token_doc(&t3));
    let next = next_matching(
        &mut watch,
        Duration::from_secs(5),
        "version 3 after re-login",
        |c| c.version == "3",
    )
    .await;
    assert_eq!(secret_of(&next), t3);
    assert!(
        vault.stats()["logins"].as_u64().unwrap() >= 2,
        "{}",
        vault.stats()
    );
    assert!(!next.stale);

    // Access revoked for one path: that credential is unavailable at once,
    // the other keeps serving.
    vault.control("deny", r#"{"path": "twilio/messaging", "deny": true}"#);
    let err = get_err(
        &client,
        "messaging",
        Duration::from_secs(5),
        "messaging denied",
    )
    .await;
    assert_unavailable_naming(&err, &["permission denied", "twilio/messaging"]);
    assert_eq!(secret_of(&client.get("verify").await.unwrap()), t3);
    vault.control("deny", r#"{"path": "twilio/messaging", "deny": false}"#);
    get_ok(
        &client,
        "messaging",
        Duration::from_secs(5),
        "messaging back",
    )
    .await;

    // A malformed document: the last good value stays, stale; the log names
    // the credential and the field.
    vault.put("twilio/verify", &auth_token_doc(&t4).replace("AC", "XX"));
    let stale = next_matching(&mut watch, Duration::from_secs(5), "stale", |c| c.stale).await;
    assert_eq!(secret_of(&stale), t3);
    assert!(
        daemon
            .log_text()
            .lines()
            .any(|l| l.contains("credential `verify`") && l.contains("account_sid"))
    );
    vault.put("twilio/verify", &auth_token_doc(&t4));
    let fixed = next_matching(&mut watch, Duration::from_secs(5), "fixed", |c| !c.stale).await;
    assert_eq!(secret_of(&fixed), t4);

    // Vault goes down: stale until max_stale, then UNAVAILABLE; it comes
    // back (same data): served again without a restart.
    vault.service.kill();
    let stale = next_matching(
        &mut watch,
        Duration::from_secs(5),
        "stale during the outage",
        |c| c.stale,
    )
    .await;
    assert_eq!(secret_of(&stale), t4);
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch ends once max_stale has passed");
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    assert_eq!(
        client.get("verify").await.unwrap_err().code(),
        Code::Unavailable
    );
    vault.service.restart();
    let back = get_fresh(&client, "verify", Duration::from_secs(10), "recovery").await;
    assert_eq!(secret_of(&back), t4);
    daemon.assert_http_log_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_renewed_before_it_expires() {
    let dir = world_dir();
    let vault = Vault::start(dir.path(), 3);
    let (t1, k1) = (token(0xd001), key_secret(13001));
    vault.put("twilio/verify", &auth_token_doc(&t1));
    vault.put("twilio/messaging", &api_key_doc(&k1));
    let daemon = Daemon::start(dir.path(), &config(&vault, "")).secrets(&[&t1, &k1]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    // Reads every second on a 3 s token: it must be renewed, not left to lapse.
    tokio::task::spawn_blocking({
        let url = vault.service.url();
        move || {
            wait_until(Duration::from_secs(15), "two token renewals", || {
                let (_, body) = http("GET", &format!("{url}/__fake/stats"), None, &[]);
                let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
                stats["renewals"].as_u64().unwrap_or(0) >= 2
            })
        }
    })
    .await
    .unwrap();
    let stats = vault.stats();
    assert_eq!(
        stats["permission_denied"], 0,
        "a read ran on an expired token: {stats}"
    );
    assert_eq!(secret_of(&client.get("verify").await.unwrap()), t1);
    daemon.assert_log_clean();
}

#[test]
fn startup_errors_name_store_and_path() {
    let dir = world_dir();
    let vault = Vault::start(dir.path(), 3600);
    let t1 = token(0xe001);
    vault.put("twilio/verify", &auth_token_doc(&t1));
    // twilio/messaging does not exist.
    let mut d = Daemon::spawn(dir.path(), &config(&vault, "")).secrets(&[&t1]);
    assert_eq!(d.wait_exit().code(), Some(64));
    let log = d.log_text();
    assert!(
        log.contains("store `vault`") && log.contains("`twilio/messaging` was not found"),
        "{log}"
    );
    d.assert_no_secrets();

    // A wrong service-account JWT: the login is refused, and says so.
    vault.put("twilio/messaging", &api_key_doc(&key_secret(14001)));
    let cfg = config(&vault, "").replace("{dir}/jwt", "{dir}/wrong-jwt");
    fs::write(dir.path().join("wrong-jwt"), "not-the-right-jwt").unwrap();
    let mut d = Daemon::spawn(dir.path(), &cfg);
    assert_eq!(d.wait_exit().code(), Some(64));
    assert!(
        d.log_text().contains("Kubernetes login") && d.log_text().contains("permission denied"),
        "{}",
        d.log_text()
    );
}
