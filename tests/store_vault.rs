//! The `vault` store end to end through the daemon's own Vault client
//! (src/store/vault.rs, a hand-written reqwest client, not vaultrs: its
//! module comment says why).
//!
//! Everything runs against OpenBao 2.7.2 (the real server, same HTTP API as
//! Vault): KV v1 and v2 served, a new version reaching a watcher, a policy
//! that denies a path, errors at start, AppRole token renewal and re-login
//! past `token_max_ttl`, an outage then a restart, a namespace, the store's
//! check-and-set write with two writers, and OpenBao's real `kubernetes`
//! auth method (renewal, re-login, a revoked service account, refused
//! logins). The only fake is the Kubernetes TokenReview API that method
//! calls (tests/support/k8s_tokenreview_fake.py, TLS with a CA it makes);
//! no Vault fake is left. Rotation written into KV v2 is in
//! tests/rotation.rs (it needs the Twilio fake behind Prism).

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
    next_message(&mut watch, "the first message").await;
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
    wait_until(
        Duration::from_secs(3),
        "a second Vault login in the log",
        || daemon.log_text().matches("logged in to Vault").count() >= 2,
    );
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
    next_message(&mut watch, "the first message").await;
    bao.put_v1("twilio/verify", &auth_token_doc(&t2));
    let next = next_matching(&mut watch, Duration::from_secs(5), "the new value", |c| {
        secret_of(c) == t2
    })
    .await;
    assert!(!next.stale);

    // The policy now denies the path while running. A refusal may pass (an
    // expired token, skew): served stale, then UNAVAILABLE once max_stale
    // has passed, naming the refusal.
    bao.api(
        "PUT",
        "sys/policies/acl/credbroker",
        &serde_json::json!({"policy": "path \"kv/twilio/other\" { capabilities = [\"read\"] }"})
            .to_string(),
    );
    stale_then_unavailable(
        &client,
        "verify",
        &t2,
        &["max_stale", "vault", "permission denied", "twilio/verify"],
    )
    .await;
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

// ---- Kubernetes auth: OpenBao's real `kubernetes` method, faked TokenReview ----

/// OpenBao with its `kubernetes` auth method on the TokenReview fake, and
/// the daemon logging in as service account `apps/credbroker`.
fn k8s_config(bao: &OpenBao, extra: &str) -> String {
    let auth = format!(
        r#"{{ method = "kubernetes", role = "credbroker", jwt_file = "{}/jwt" }}"#,
        bao.dir.display()
    );
    let extra = format!(
        "\n[credentials.messaging]\nstore = \"vault\"\npath = \"twilio/messaging\"\n{extra}"
    );
    vault_config(&bao.url(), "secret", 2, &auth, &extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_kubernetes_auth_renewal_relogin_and_a_revoked_service_account() {
    let dir = world_dir();
    let k8s = TokenReviewApi::start(dir.path());
    let bao = OpenBao::start(dir.path(), "1h", "24h");
    // Vault tokens live 3 s, renewable up to 6 s: renew-self, then re-login.
    let jwt = bao.enable_kubernetes(&k8s, "3s", "6s", true);
    let (t1, t2, k1) = (token(0xc001), token(0xc002), key_secret(12001));
    bao.put_v2("twilio/verify", &auth_token_doc(&t1));
    bao.put_v2("twilio/messaging", &api_key_doc(&k1));
    let mut daemon =
        Daemon::start(dir.path(), &k8s_config(&bao, "")).secrets(&[&t1, &t2, &k1, &jwt]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let got = client.get("verify").await.unwrap();
    assert_eq!(secret_of(&got), t1);
    assert_eq!(got.version, "1");
    assert_eq!(secret_of(&client.get("messaging").await.unwrap()), k1);
    assert!(
        k8s.stats()["authenticated"].as_u64().unwrap() >= 1,
        "OpenBao asked the TokenReview API: {}",
        k8s.stats()
    );

    // A new version reaches a watcher.
    let mut watch = client.watch("verify").await.unwrap();
    next_matching(
        &mut watch,
        Duration::from_secs(5),
        "the first value",
        |_| true,
    )
    .await;
    bao.put_v2("twilio/verify", &auth_token_doc(&t2));
    let next = next_matching(&mut watch, Duration::from_secs(5), "version 2", |c| {
        c.version == "2"
    })
    .await;
    assert_eq!(secret_of(&next), t2);

    // The token is renewed, then past token_max_ttl the store logs in again,
    // and OpenBao reviews the service-account token each time.
    tokio::task::spawn_blocking({
        let log = daemon.log.clone();
        move || {
            wait_until(
                Duration::from_secs(30),
                "a renewal and two re-logins",
                || {
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    text.contains("renewed the Vault token")
                        && text.matches("method=\"Kubernetes login\"").count() >= 3
                },
            )
        }
    })
    .await
    .unwrap();
    assert!(
        k8s.stats()["authenticated"].as_u64().unwrap() >= 3,
        "{}",
        k8s.stats()
    );
    assert!(
        !daemon.log_text().contains("cannot refresh credential"),
        "a refresh failed across token expiry:\n{}",
        daemon.log_text()
    );
    assert!(!client.get("verify").await.unwrap().stale);

    // The service account's token is revoked: once the Vault token runs
    // out, the login is refused. A refusal may pass: served stale, then
    // UNAVAILABLE once max_stale has passed, naming the store, the login
    // and why.
    k8s.revoke(&jwt);
    let end = tokio::time::timeout(Duration::from_secs(25), async {
        loop {
            match watch.message().await {
                Ok(Some(c)) => assert_eq!(secret_of(&c), t2),
                other => return other,
            }
        }
    })
    .await
    .expect("the watch ends once the login is refused");
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    let err = get_err(&client, "verify", Duration::from_secs(5), "refused login").await;
    assert_unavailable_naming(
        &err,
        &["store `vault`", "Kubernetes login", "permission denied"],
    );
    assert!(
        k8s.stats()["refused"].as_u64().unwrap() >= 1,
        "{}",
        k8s.stats()
    );

    // The kubelet mounts a new token: jwt_file is read at every login.
    let fresh_jwt = k8s.service_account_token("apps", "credbroker");
    daemon.add_secret(&fresh_jwt);
    replace_file(&bao.dir.join("jwt"), &fresh_jwt);
    let back = get_fresh(&client, "verify", Duration::from_secs(15), "recovery").await;
    assert_eq!(secret_of(&back), t2);
    daemon.assert_http_log_clean();
}

#[test]
fn openbao_kubernetes_login_errors_at_start() {
    let dir = world_dir();
    let k8s = TokenReviewApi::start(dir.path());
    let bao = OpenBao::start(dir.path(), "1h", "24h");
    bao.enable_kubernetes(&k8s, "1h", "24h", true);
    bao.put_v2("twilio/verify", &auth_token_doc(&token(0xe001)));
    bao.put_v2("twilio/messaging", &api_key_doc(&key_secret(14001)));

    // A service account the role is not bound to.
    let other = k8s.service_account_token("apps", "someone-else");
    fs::write(bao.dir.join("jwt"), &other).unwrap();
    let mut d = Daemon::spawn(dir.path(), &k8s_config(&bao, "")).secrets(&[&other]);
    assert_eq!(d.wait_exit().code(), Some(64));
    let log = d.log_text();
    assert!(
        log.contains("store `vault`")
            && log.contains("Kubernetes login")
            && log.contains("service account name not authorized"),
        "{log}"
    );
    d.assert_no_secrets();

    // A token the API server never issued (another cluster's): OpenBao asks
    // TokenReview, which does not authenticate it.
    // (The bound account's claims with another token's signature: OpenBao
    // has no pem_keys, so only TokenReview can tell.)
    let genuine = k8s.service_account_token("apps", "credbroker");
    let forged = {
        let (head_claims, _) = genuine.rsplit_once('.').unwrap();
        let (_, other_signature) = other.rsplit_once('.').unwrap();
        format!("{head_claims}.{other_signature}")
    };
    fs::write(bao.dir.join("jwt"), &forged).unwrap();
    let refused_before = k8s.stats()["refused"].as_u64().unwrap();
    let mut d = Daemon::spawn(dir.path(), &k8s_config(&bao, "")).secrets(&[&forged]);
    assert_eq!(d.wait_exit().code(), Some(64));
    let log = d.log_text();
    assert!(
        log.contains("Kubernetes login") && log.contains("permission denied"),
        "{log}"
    );
    assert!(
        k8s.stats()["refused"].as_u64().unwrap() > refused_before,
        "TokenReview refused the forged token: {}",
        k8s.stats()
    );
}

/// OpenBao's TokenReview calls carry the reviewer's token, and the fake
/// refuses one it does not know (401), as a Kubernetes API server does: the
/// login fails even with a valid service-account token.
#[test]
fn openbao_kubernetes_reviewer_refused_by_the_api() {
    let dir = world_dir();
    let k8s = TokenReviewApi::start(dir.path());
    let bao = OpenBao::start(dir.path(), "1h", "24h");
    let jwt = bao.enable_kubernetes(&k8s, "1h", "24h", false);
    bao.put_v2("twilio/verify", &auth_token_doc(&token(0xe101)));
    bao.put_v2("twilio/messaging", &api_key_doc(&key_secret(14101)));
    let mut d = Daemon::spawn(dir.path(), &k8s_config(&bao, "")).secrets(&[&jwt]);
    assert_eq!(d.wait_exit().code(), Some(64));
    let log = d.log_text();
    assert!(log.contains("Kubernetes login"), "{log}");
    let stats = k8s.stats();
    assert!(stats["unauthorized"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["authenticated"], 0, "{stats}");
}

// ---- Namespaces, writes and check-and-set ----

/// `namespace` is sent as `X-Vault-Namespace`: OpenBao (2.3 and later has
/// namespaces, as Vault Enterprise does) serves the namespace's KV, not the
/// root's at the same path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_namespace_is_sent() {
    let dir = world_dir();
    let bao = OpenBao::start(dir.path(), "1h", "24h");
    let (in_ns, in_root) = (token(0xf001), token(0xf002));
    bao.api("POST", "sys/namespaces/team1", "{}");
    bao.api_ns(
        "team1",
        "POST",
        "sys/mounts/secret",
        r#"{"type": "kv", "options": {"version": "2"}}"#,
    );
    bao.api_ns(
        "team1",
        "POST",
        "secret/data/twilio/verify",
        &format!(r#"{{"data": {}}}"#, auth_token_doc(&in_ns)),
    );
    bao.put_v2("twilio/verify", &auth_token_doc(&in_root));
    fs::write(dir.path().join("root-token"), BAO_ROOT).unwrap();
    let auth = format!(
        r#"{{ method = "token", token_file = "{}/root-token" }}"#,
        dir.path().display()
    );
    let cfg = vault_config(&bao.url(), "secret", 2, &auth, "")
        .replace("kv_version = 2", "kv_version = 2\nnamespace = \"team1\"");
    let daemon = Daemon::start(dir.path(), &cfg).secrets(&[&in_ns, &in_root, BAO_ROOT]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    assert_eq!(secret_of(&client.get("verify").await.unwrap()), in_ns);
    daemon.assert_http_log_clean();
}

/// The store's own KV v2 write is a check-and-set on the version read: of
/// two writers that read the same version, exactly one wins and the other
/// gets `StoreError::Conflict`; a write that expects nothing where a
/// document exists loses too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_kv2_check_and_set_one_writer_wins() {
    use credbroker::{
        config::{VaultAuth, VaultConfig},
        secret::SecretBytes,
        store::{SecretStore, StoreError, vault::VaultStore},
    };
    let dir = world_dir();
    let bao = OpenBao::start(dir.path(), "1h", "24h");
    // Writes without `cas` are refused on this mount: the store must send it.
    bao.api("POST", "secret/config", r#"{"cas_required": true}"#);
    let (t1, t2, t3) = (token(0xf101), token(0xf102), token(0xf103));
    bao.put_v2_cas("twilio/verify", &auth_token_doc(&t1), 0);
    let settings = VaultConfig {
        address: bao.url(),
        mount: "secret".into(),
        kv_version: 2,
        auth: VaultAuth::AppRole {
            role_id_file: bao.dir.join("role_id"),
            secret_id_file: bao.dir.join("secret_id"),
            mount: "approle".into(),
        },
        namespace: None,
        ca_cert: None,
    };
    let a = VaultStore::new("vault", settings.clone(), None).unwrap();
    let b = VaultStore::new("vault", settings, None).unwrap();
    let read = a.read("twilio/verify").await.unwrap();
    assert_eq!(read.version, "1");
    let doc = |t: &str| SecretBytes::new(auth_token_doc(t).into_bytes());
    let (ra, rb) = tokio::join!(
        a.write("twilio/verify", doc(&t2), Some(&read.version)),
        b.write("twilio/verify", doc(&t3), Some(&read.version)),
    );
    let (won, lost, winner) = match (ra, rb) {
        (Ok(v), Err(e)) => (v, e, t2.clone()),
        (Err(e), Ok(v)) => (v, e, t3.clone()),
        (ra, rb) => panic!("exactly one writer must win: {ra:?} / {rb:?}"),
    };
    assert_eq!(won, "2");
    match lost {
        StoreError::Conflict {
            store,
            path,
            expected,
        } => assert_eq!(
            (store.as_str(), path.as_str(), expected.as_str()),
            ("vault", "twilio/verify", "1")
        ),
        other => panic!("the loser gets Conflict, not {other:?}"),
    }
    let now = b.read("twilio/verify").await.unwrap();
    assert_eq!(now.version, "2");
    let held: serde_json::Value = serde_json::from_slice(now.bytes.expose_secret()).unwrap();
    assert_eq!(held["auth_token"], winner.as_str());
    // Creating where a document exists is a conflict too.
    match a.write("twilio/verify", doc(&t1), None).await {
        Err(StoreError::Conflict { expected, .. }) => assert_eq!(expected, "(none)"),
        other => panic!("a create over an existing document: {other:?}"),
    }
    // And a write on the current version wins.
    assert_eq!(
        a.write("twilio/verify", doc(&t1), Some("2")).await.unwrap(),
        "3"
    );
}
