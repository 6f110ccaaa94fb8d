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
    rt.block_on(hostile_twilio_fails_clearly_and_others_serve(
        dir.path(),
        &twilio,
    ));
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

/// VmHWM of `pid`: the most it ever had resident, in kB.
fn peak_rss_kb(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The SIDs of keys at Twilio named for `per-workload`.
fn dynamic_keys(t: &Twilio) -> Vec<String> {
    t.keys()
        .into_iter()
        .filter(|(_, name)| name.starts_with("credbroker-dyn:per-workload:"))
        .map(|(sid, _)| sid)
        .collect()
}

/// The one key named for `per-workload` that is not in `before`.
fn new_key(t: &Twilio, before: &[String], what: &str) -> String {
    let new: Vec<_> = dynamic_keys(t)
        .into_iter()
        .filter(|s| !before.contains(s))
        .collect();
    assert_eq!(new.len(), 1, "{what}: Twilio made one key: {new:?}");
    new.into_iter().next().unwrap()
}

/// Twilio misbehaving under a dynamic credential, with the daemon running:
/// each failure is a clear error naming the credential, the file-stored
/// credential `local` is served throughout, and:
/// - an endless `next_page_uri` in the start's key list: the sweep stops
///   after 100 pages, saying so, and keys are still issued;
/// - a create Twilio carries out but answers 500, and one whose answer is
///   48 MiB: not retried, not read (the daemon's peak RSS stays put), and
///   the key Twilio made anyway is found again and deleted at its expiry;
/// - a key named as ours with an expiry in year 9999: deleted, not kept;
/// - a create that never answers: fails after the client's timeout while
///   other calls are answered at once and health stays SERVING, and
///   SIGTERM with such a create in flight still ends the daemon.
async fn hostile_twilio_fails_clearly_and_others_serve(root: &Path, t: &Twilio) {
    use tonic_health::pb::health_check_response::ServingStatus;
    let dir = root.join("hostile");
    fs::create_dir_all(&dir).unwrap();
    let local = token(0xd0d1);
    fs::write(
        dir.join("secrets.json"),
        format!(
            r#"{{"admin": {{"account_sid": "{AC}", "auth_token": "{ADMIN_TOKEN}"}}, "local": {}}}"#,
            auth_token_doc(&local)
        ),
    )
    .unwrap();
    let cfg = config(t) + "[credentials.local]\nstore = \"local\"\npath = \"local\"\n";
    let list = format!("/2010-04-01/Accounts/{AC}/Keys.json");
    t.post(
        "corrupt",
        &serde_json::json!({
            "path_prefix": list, "method": "GET", "count": 100,
            "set": {"next_page_uri": format!("{list}?PageSize=1000")},
        })
        .to_string(),
    );
    let started = std::time::Instant::now();
    let mut daemon = Daemon::start(&dir, &cfg).secrets(&[ADMIN_TOKEN, &local]);
    let sock = daemon.socket.display().to_string();
    let client = Client::connect(&daemon.socket).await.unwrap();
    let logged = |daemon: &Daemon, parts: &[&str]| {
        daemon
            .log_text()
            .lines()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    };
    wait_until(Duration::from_secs(30), "the sweep to give up", || {
        logged(
            &daemon,
            &[
                "credential=per-workload",
                "more than 100 pages",
                "cannot list keys to sweep",
            ],
        )
    });
    let (_, secret) = key_of(&client.get("per-workload").await.unwrap());
    daemon.add_secret(&secret);
    assert_eq!(secret_of(&client.get("local").await.unwrap()), local);

    // A create carried out whose answer is a 500.
    let before = dynamic_keys(t);
    t.post(
        "fail",
        r#"{"path_prefix": "/v1/Keys", "method": "POST", "status": 500, "count": 1, "after": true}"#,
    );
    let out = cli(&["get", "per-workload", "--socket", &sock], None);
    assert!(
        !out.status.success()
            && stderr(&out).contains("credential `per-workload`: Twilio key create")
            && stderr(&out).contains("HTTP 500")
            && stderr(&out).contains("not retried"),
        "{}",
        stderr(&out)
    );
    let lost = new_key(t, &before, "a 500 after the create");
    assert_eq!(secret_of(&client.get("local").await.unwrap()), local);

    // A create whose answer is 48 MiB.
    let before = dynamic_keys(t);
    let peak = peak_rss_kb(daemon.pid());
    t.post(
        "corrupt",
        &serde_json::json!({
            "path_prefix": "/v1/Keys", "method": "POST", "count": 1,
            "set": {"padding": "x".repeat(48 << 20)},
        })
        .to_string(),
    );
    let out = cli(&["get", "per-workload", "--socket", &sock], None);
    let peak_after = peak_rss_kb(daemon.pid());
    assert!(
        peak_after < peak + 16 * 1024,
        "peak RSS went from {peak} kB to {peak_after} kB on a 48 MiB answer"
    );
    assert!(
        !out.status.success()
            && stderr(&out).contains("credential `per-workload`: Twilio key create")
            && stderr(&out).contains("larger than 4194304 bytes"),
        "{}",
        stderr(&out)
    );
    let unread = new_key(t, &before, "an answer too long");
    assert_eq!(secret_of(&client.get("local").await.unwrap()), local);

    // A key named as ours that claims to live until 9999.
    let forever = t.post(
        "keys",
        &format!(
            r#"{{"account_sid": "{AC}", "friendly_name": "credbroker-dyn:per-workload:253402300799"}}"#
        ),
    )["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    // Any failed create lists the keys again: that finds all three.
    t.post(
        "fail",
        r#"{"path_prefix": "/v1/Keys", "method": "POST", "status": 500, "count": 1}"#,
    );
    let out = cli(&["get", "per-workload", "--socket", &sock], None);
    assert!(stderr(&out).contains("HTTP 500"), "{}", stderr(&out));
    wait_gone(t, &lost, "the key whose create answered 500 deleted");
    wait_gone(t, &unread, "the key whose answer was not read deleted");
    wait_gone(t, &forever, "the key named to live for ever deleted");

    // A create that never answers.
    let held = || t.state()["requests_held"].as_u64().unwrap();
    let held_before = held();
    t.post(
        "delay",
        r#"{"path_prefix": "/v1/Keys", "method": "POST", "seconds": 3600, "count": 1}"#,
    );
    let asked = std::time::Instant::now();
    let hung = tokio::spawn({
        let client = client.clone();
        async move { client.get("per-workload").await }
    });
    wait_until(Duration::from_secs(10), "the create held", || {
        held() > held_before
    });
    for _ in 0..10 {
        let at = std::time::Instant::now();
        assert_eq!(secret_of(&client.get("local").await.unwrap()), local);
        assert_eq!(client.health().await.unwrap(), ServingStatus::Serving);
        assert!(
            at.elapsed() < Duration::from_secs(1),
            "answered in {:?} while a create hangs",
            at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Err(err) = hung.await.unwrap() else {
        panic!("a create that never answered gave a key");
    };
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(
        err.to_string()
            .contains("credential `per-workload`: Twilio key create: unavailable (no answer in time; not retried"),
        "{err}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(25),
        "the hung create took {:?} to fail",
        asked.elapsed()
    );
    assert_eq!(client.health().await.unwrap(), ServingStatus::Serving);

    // SIGTERM while a create hangs.
    let held_before = held();
    t.post(
        "delay",
        r#"{"path_prefix": "/v1/Keys", "method": "POST", "seconds": 3600, "count": 1}"#,
    );
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.get("per-workload").await }
    });
    wait_until(Duration::from_secs(10), "the create held", || {
        held() > held_before
    });
    let stopping = std::time::Instant::now();
    daemon.signal(rustix::process::Signal::TERM);
    let status = daemon.wait_exit();
    assert!(status.success(), "{status}");
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(13),
        "shutdown took {took:?} with a create in flight"
    );
    let _ = in_flight.await;
    daemon.assert_log_clean();
    eprintln!(
        "hostile_twilio_fails_clearly_and_others_serve: {:?} (shutdown {took:?})",
        started.elapsed()
    );
}
