//! The `vault` store end to end through the daemon's own Vault client
//! (src/store/vault.rs, a hand-written reqwest client, not vaultrs).
//!
//! Against OpenBao 2.7.2 (the real server, same HTTP API as Vault): KV v1
//! and v2 served, a new version reaching a watcher, a policy that denies a
//! path, errors at start, AppRole token renewal and re-login past
//! `token_max_ttl`, an outage then a restart.
//!
//! The Kubernetes-auth tests at the bottom still run against the stateful
//! fake tests/support/vault_fake.py: OpenBao's real `kubernetes` auth method
//! with a faked TokenReview endpoint is not built yet (issue 12, part 3).

mod support;

use std::{fs, time::Duration};

use credbroker::client::Client;
use support::{services::*, *};
use tonic::Code;

/// A daemon config with one `vault` store and credential `verify`;
/// `auth` is the store's `auth = {...}` value, `extra` more TOML.
fn vault_config(address: &str, mount: &str, kv_version: u8, auth: &str, extra: &str) -> String {
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
address = "{address}"
mount = "{mount}"
kv_version = {kv_version}
auth = {auth}

[credentials.verify]
store = "vault"
path = "twilio/verify"
{extra}"#
    )
}

/// OpenBao with AppRole, on dev's KV v2 `secret` or the KV v1 `kv` mount.
fn bao_config(bao: &OpenBao, kv_version: u8, extra: &str) -> String {
    let mount = if kv_version == 1 { "kv" } else { "secret" };
    let auth = format!(
        r#"{{ method = "approle", role_id_file = "{d}/role_id", secret_id_file = "{d}/secret_id" }}"#,
        d = bao.dir.display()
    );
    vault_config(&bao.url(), mount, kv_version, &auth, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_kv2_approle_end_to_end_outage_and_restart() {
    let dir = world_dir();
    let mut bao = OpenBao::start(dir.path(), "1h", "24h");
    let (t1, t2, t3) = (token(0xb001), token(0xb002), token(0xb003));
    bao.put_v2("twilio/verify", &auth_token_doc(&t1));
    let daemon = Daemon::start(dir.path(), &bao_config(&bao, 2, "")).secrets(&[&t1, &t2, &t3]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let got = client.get("verify").await.unwrap();
    assert_eq!(secret_of(&got), t1);
    assert_eq!(
        got.version, "1",
        "KV v2 version numbers are the credential's version"
    );

    // A new version reaches a watcher.
    let mut watch = client.watch("verify").await.unwrap();
    watch.message().await.unwrap().unwrap();
    bao.put_v2("twilio/verify", &auth_token_doc(&t2));
    let next = next_matching(&mut watch, Duration::from_secs(5), "version 2", |c| {
        c.version == "2"
    })
    .await;
    assert_eq!(secret_of(&next), t2);

    // OpenBao is killed: stale, then UNAVAILABLE past max_stale.
    bao.service.kill();
    let stale = next_matching(&mut watch, Duration::from_secs(5), "stale", |c| c.stale).await;
    assert_eq!(secret_of(&stale), t2);
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

    // A dev server restarts empty: set up again and the value written again
    // (new AppRole ids, every old token gone): the store logs in anew and
    // serves without a daemon restart.
    bao.restart("1h", "24h");
    bao.put_v2("twilio/verify", &auth_token_doc(&t3));
    let back = get_fresh(&client, "verify", Duration::from_secs(15), "recovery").await;
    assert_eq!(secret_of(&back), t3);
    assert!(daemon.log_text().matches("logged in to Vault").count() >= 2);
    daemon.assert_http_log_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_kv1_served_and_a_denied_path_is_unavailable() {
    let dir = world_dir();
    let bao = OpenBao::start(dir.path(), "1h", "24h");
    let (t1, t2) = (token(0xb101), token(0xb102));
    bao.put_v1("twilio/verify", &auth_token_doc(&t1));
    bao.put_v1("twilio/denied", &auth_token_doc(&t2));
    let extra = "\n[credentials.denied]\nstore = \"vault\"\npath = \"twilio/denied\"\n";
    // At start, the denied path stops the daemon: exit 64 naming store, path, why.
    let mut d = Daemon::spawn(dir.path(), &bao_config(&bao, 1, extra)).secrets(&[&t1, &t2]);
    assert_eq!(d.wait_exit().code(), Some(64));
    let log = d.log_text();
    assert!(
        log.contains("store `vault`")
            && log.contains("twilio/denied")
            && log.contains("permission denied"),
        "{log}"
    );
    d.assert_no_secrets();

    let daemon = Daemon::start(dir.path(), &bao_config(&bao, 1, "")).secrets(&[&t1, &t2]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    assert_eq!(secret_of(&client.get("verify").await.unwrap()), t1);
    let mut watch = client.watch("verify").await.unwrap();
    watch.message().await.unwrap().unwrap();
    bao.put_v1("twilio/verify", &auth_token_doc(&t2));
    let next = next_matching(&mut watch, Duration::from_secs(5), "the new value", |c| {
        secret_of(c) == t2
    })
    .await;
    assert!(!next.stale);

    // The policy now denies the path while running: UNAVAILABLE at once.
    bao.api(
        "PUT",
        "sys/policies/acl/credbroker",
        &serde_json::json!({"policy": "path \"kv/twilio/other\" { capabilities = [\"read\"] }"})
            .to_string(),
    );
    let err = get_err(&client, "verify", Duration::from_secs(5), "verify denied").await;
    assert_unavailable_naming(&err, &["vault", "permission denied", "twilio/verify"]);
    daemon.assert_http_log_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_approle_token_renewed_then_relogin_past_max_ttl() {
    let dir = world_dir();
    // Tokens live 3 s, renewable up to 8 s: renew-self, then a fresh login.
    let bao = OpenBao::start(dir.path(), "3s", "8s");
    let t1 = token(0xb201);
    bao.put_v2("twilio/verify", &auth_token_doc(&t1));
    // The daemon logs at TRACE, so the debug-level "renewed" line is there.
    let daemon = Daemon::start(dir.path(), &bao_config(&bao, 2, "")).secrets(&[&t1]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    tokio::task::spawn_blocking({
        let log = daemon.log.clone();
        move || {
            wait_until(
                Duration::from_secs(30),
                "a renewal and two re-logins",
                || {
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    text.contains("renewed the Vault token")
                        && text.matches("logged in to Vault").count() >= 3
                },
            )
        }
    })
    .await
    .unwrap();
    assert!(
        !daemon.log_text().contains("cannot refresh credential"),
        "a refresh failed across token expiry:\n{}",
        daemon.log_text()
    );
    let got = client.get("verify").await.unwrap();
    assert_eq!(secret_of(&got), t1);
    assert!(!got.stale);
    daemon.assert_http_log_clean();
}

#[test]
fn openbao_startup_errors_name_store_and_path() {
    let dir = world_dir();
    let bao = OpenBao::start(dir.path(), "1h", "24h");
    // Nothing at twilio/verify yet.
    let mut d = Daemon::spawn(dir.path(), &bao_config(&bao, 2, ""));
    assert_eq!(d.wait_exit().code(), Some(64));
    assert!(
        d.log_text().contains("store `vault`")
            && d.log_text().contains("`twilio/verify` was not found"),
        "{}",
        d.log_text()
    );
    bao.put_v2("twilio/verify", &auth_token_doc(&token(0xb301)));
    fs::write(
        bao.dir.join("secret_id"),
        "00000000-0000-0000-0000-000000000000",
    )
    .unwrap();
    let mut d = Daemon::spawn(dir.path(), &bao_config(&bao, 2, ""));
    assert_eq!(d.wait_exit().code(), Some(64));
    let log = d.log_text();
    assert!(log.contains("AppRole login"), "{log}");
}

// ---- Kubernetes auth, still against tests/support/vault_fake.py ----

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

/// The Vault fake with Kubernetes auth, and a second credential `messaging`.
fn config(vault: &Vault, extra: &str) -> String {
    let extra = format!(
        "\n[credentials.messaging]\nstore = \"vault\"\npath = \"twilio/messaging\"\n{extra}"
    );
    let auth = r#"{ method = "kubernetes", role = "credbroker", jwt_file = "{dir}/jwt" }"#;
    vault_config(&vault.service.url(), "secret", 2, auth, &extra)
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
