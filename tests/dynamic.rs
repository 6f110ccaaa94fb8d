//! Short-lived per-workload API keys (`kind = "dynamic_api_key"`) and the
//! example Verify workload, against the Twilio fake behind Prism.

mod support;

use std::{fs, path::Path, time::Duration};

use credbroker::{client::Client, proto};
use support::{twilio::*, *};
use tonic::Code;

const POLICY: &str = r#"{"allow": ["/twilio/verify/services/verifications/create"]}"#;

/// Uid 0 and 65533 may lease keys: three alive at most, two per uid.
fn config(t: &Twilio) -> String {
    t.config_head("lease_ttl = \"1m\"\nrefresh_interval = \"1s\"")
        .replace(
            "allow_root = true",
            "allow_root = true\nsocket_mode = \"0666\"",
        )
        + &format!(
            "[credentials.per-workload]\nkind = \"dynamic_api_key\"\nadmin_credential = \"twilio-admin\"\nttl = \"6s\"\nmax_live_keys = 3\nmax_live_keys_per_uid = 2\npolicy = '{POLICY}'\nallow = {{ uids = [0, 65533] }}\n"
        )
}

fn write_admin(dir: &Path) {
    fs::write(
        dir.join("secrets.json"),
        format!(r#"{{"admin": {{"account_sid": "{AC}", "auth_token": "{ADMIN_TOKEN}"}}}}"#),
    )
    .unwrap();
}

fn key_of(c: &proto::Credential) -> (String, String) {
    match &c.secret {
        Some(proto::credential::Secret::ApiKey(k)) => (k.sid.clone(), k.secret.clone()),
        _ => panic!("not an API key"),
    }
}

fn example(name: &str) -> std::path::PathBuf {
    // target/debug/deps/<test> → target/debug/examples/<name>
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

fn wait_gone(t: &Twilio, sid: &str, what: &str) {
    wait_until(Duration::from_secs(20), what, || {
        !t.keys().iter().any(|(s, _)| s == sid)
    });
}

#[test]
fn dynamic_keys_suite() {
    let dir = world_dir();
    let twilio = Twilio::start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(created_reused_capped_deleted_and_used(dir.path(), &twilio));
    swept_after_a_crash(dir.path(), &twilio);
    twilio.assert_no_violations(dir.path());
}

async fn created_reused_capped_deleted_and_used(root: &Path, t: &Twilio) {
    let dir = root.join("dyn");
    fs::create_dir_all(&dir).unwrap();
    write_admin(&dir);
    let mut daemon = Daemon::start(&dir, &config(t)).secrets(&[ADMIN_TOKEN]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let names: Vec<_> = client
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.kind))
        .collect();
    assert!(
        names.contains(&("per-workload".into(), "dynamic_api_key".into())),
        "{names:?}"
    );

    // A restricted key for this process, valid at Twilio, leased to its end.
    let first = client.get("per-workload").await.unwrap();
    let (sid_a, secret_a) = key_of(&first);
    daemon.add_secret(&secret_a);
    assert!(t.valid(&sid_a, &secret_a));
    let (_, body) = services::http(
        "POST",
        &format!("{}/__fake/check", t.fake.url()),
        Some(&serde_json::json!({"username": sid_a, "password": secret_a}).to_string()),
        &[],
    );
    assert!(body.contains("restricted"), "{body}");
    let issued = std::time::SystemTime::try_from(first.issued_at.unwrap()).unwrap();
    let expires = std::time::SystemTime::try_from(first.expires_at.unwrap()).unwrap();
    assert!(expires.duration_since(issued).unwrap() <= Duration::from_secs(6));
    // The same caller gets the same key until half its TTL has passed.
    assert_eq!(key_of(&client.get("per-workload").await.unwrap()).0, sid_a);

    // Another process is another caller: a second key; a third is over the
    // cap. Twilio takes 3 s to create that key, and meanwhile the first
    // caller is answered at once: no lock is held across the Twilio call.
    let sock = daemon.socket.display().to_string();
    t.post(
        "delay",
        r#"{"path_prefix": "/v1/Keys", "method": "POST", "seconds": 3, "count": 1}"#,
    );
    let spawned = std::time::Instant::now();
    let slow = std::process::Command::new(bin())
        .args([
            "get",
            "per-workload",
            "--socket",
            &sock,
            "--json",
            "--reveal",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    assert_eq!(key_of(&client.get("per-workload").await.unwrap()).0, sid_a);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a caller with a live key waited {:?} behind a slow create",
        started.elapsed()
    );
    let out = slow.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        spawned.elapsed() >= Duration::from_millis(2500),
        "the create was not slowed: {:?}",
        spawned.elapsed()
    );
    let second: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let sid_b = second["api_key_sid"].as_str().unwrap().to_owned();
    daemon.add_secret(second["api_key_secret"].as_str().unwrap());
    assert_ne!(sid_b, sid_a);
    // A third process of the same uid is over that uid's cap…
    let out = cli(&["get", "per-workload", "--socket", &sock], None);
    assert!(
        stderr(&out).contains("ResourceExhausted")
            && stderr(&out).contains("uid 0 has 2 keys alive already (max_live_keys_per_uid)"),
        "{}",
        stderr(&out)
    );
    // …another uid still gets one, until the credential's cap.
    let other = Some((65533, 65533));
    let out = cli(&["get", "per-workload", "--socket", &sock, "--json"], other);
    assert!(out.status.success(), "{}", stderr(&out));
    let third: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let sid_c = third["api_key_sid"].as_str().unwrap().to_owned();
    let out = cli(&["get", "per-workload", "--socket", &sock], other);
    assert!(
        stderr(&out).contains("ResourceExhausted")
            && stderr(&out).contains("3 keys are alive already (max_live_keys)"),
        "{}",
        stderr(&out)
    );
    // Watching a per-call credential is refused with the reason.
    let Err(err) = client.watch("per-workload").await else {
        panic!("watching a per-call credential was accepted");
    };
    assert_eq!(err.code(), Code::FailedPrecondition);

    // At the end of their TTL both keys are deleted at Twilio.
    wait_gone(t, &sid_a, "key A deleted at its expiry");
    wait_gone(t, &sid_b, "key B deleted at its expiry");
    wait_gone(t, &sid_c, "key C deleted at its expiry");
    assert!(!t.valid(&sid_a, &secret_a));

    // The example workload: a fresh restricted key starts a Verify verification.
    let service = t.post("services", &format!(r#"{{"account_sid": "{AC}"}}"#))["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let bin = example("verify_client");
    if !bin.exists() {
        // `cargo test --all-targets` builds it; a narrower `cargo test` may not.
        let built = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", "verify_client"])
            .current_dir(support::services::repo())
            .status()
            .unwrap();
        assert!(
            built.success() && bin.exists(),
            "cannot build examples/verify_client.rs"
        );
    }
    let out = std::process::Command::new(&bin)
        .args([
            "--socket",
            &sock,
            "--credential",
            "per-workload",
            "--service",
            &service,
            "--to",
            "+15005550006",
        ])
        .arg("--verify-base")
        .arg(t.verify.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("to +15005550006 by sms: pending"),
        "{}",
        stdout(&out)
    );
    daemon.signal(rustix::process::Signal::TERM);
    daemon.wait_exit();
    daemon.assert_http_log_clean();
}

fn swept_after_a_crash(root: &Path, t: &Twilio) {
    let dir = root.join("crash");
    fs::create_dir_all(&dir).unwrap();
    write_admin(&dir);
    let mut daemon = Daemon::start(&dir, &config(t));
    let sock = daemon.socket.display().to_string();
    let out = cli(&["get", "per-workload", "--socket", &sock, "--json"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let sid = v["api_key_sid"].as_str().unwrap().to_owned();
    // Crash: nobody deletes the key at its expiry.
    daemon.child.kill().unwrap();
    daemon.wait_exit();
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        t.keys().iter().any(|(s, _)| *s == sid),
        "the crashed daemon's key is still there"
    );
    // Another replica's keys, alive for an hour: as many as the cap.
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    t.post(
        "keys",
        &format!(
            r#"{{"count": 3, "account_sid": "{AC}", "friendly_name": "credbroker-dyn:per-workload:{expiry}"}}"#
        ),
    );
    // A restarted daemon finds the crashed one's key by its name and deletes
    // it; the other replica's keys take none of its slots.
    let daemon = Daemon::start(&dir, &config(t));
    wait_gone(t, &sid, "the expired key swept after the restart");
    let out = cli(
        &[
            "get",
            "per-workload",
            "--socket",
            &daemon.socket.display().to_string(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "adopted keys took the slots: {}",
        stderr(&out)
    );
    drop(daemon);
}
