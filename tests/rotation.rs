//! Rotation end to end: the daemon and `credbroker rotate` against the
//! stateful Twilio fake, every Twilio call going through Prism proxies that
//! check requests and responses against Twilio's own OpenAPI documents (a
//! violation becomes an HTTP 500 the rotation reports, failing the test).
//!
//! One harness (fake + three Prism proxies) serves every scenario, run in
//! sequence: Prism takes long to load the 2 MB 2010 spec.

mod support;

use std::{
    fs,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use credbroker::{client::Client, proto};
use support::{services::*, twilio::*, *};

fn api_key_rotation(name: &str, grace: &str) -> String {
    format!(
        "[credentials.{name}]\nstore = \"local\"\npath = \"{name}\"\n[credentials.{name}.rotation]\nschedule = \"0 0 0 1 1 * 2099\"\ngrace = \"{grace}\"\nadmin_credential = \"twilio-admin\"\n"
    )
}

fn write_secrets(dir: &Path, docs: &[(String, String)]) {
    let mut all = serde_json::Map::new();
    all.insert(
        "admin".into(),
        serde_json::from_str(&format!(
            r#"{{"account_sid": "{AC}", "auth_token": "{ADMIN_TOKEN}"}}"#
        ))
        .unwrap(),
    );
    for (path, doc) in docs {
        all.insert(path.clone(), serde_json::from_str(doc).unwrap());
    }
    fs::write(
        dir.join("secrets.json"),
        serde_json::to_string_pretty(&all).unwrap(),
    )
    .unwrap();
}

fn read_doc(dir: &Path, path: &str) -> serde_json::Value {
    let all: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("secrets.json")).unwrap()).unwrap();
    all[path].clone()
}

fn key_doc(sid: &str, secret: &str) -> String {
    format!(r#"{{"account_sid": "{AC}", "api_key_sid": "{sid}", "api_key_secret": "{secret}"}}"#)
}

fn rotate_cli(config: &Path, args: &[&str], failpoint: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.arg("rotate").args(args).arg("--config").arg(config);
    cmd.env("CREDBROKER_LOG", "trace");
    if let Some(fp) = failpoint {
        cmd.env("CREDBROKER_FAILPOINT", fp);
    }
    let out = cmd.output().unwrap();
    ROTATE_LOGS
        .lock()
        .unwrap()
        .push_str(&String::from_utf8_lossy(&out.stderr));
    out
}

/// Everything `credbroker rotate` wrote (at TRACE), scanned at the end of
/// the suite against every secret any document of the run held.
static ROTATE_LOGS: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Every string value under a `*secret*` or `*token*` key of the JSON
/// documents below `dir`: the values the rotations made and replaced.
fn secrets_in_documents(dir: &Path, out: &mut Vec<String>) {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let k = k.to_ascii_lowercase();
                    match v.as_str() {
                        Some(s) if k.contains("secret") || k.contains("token") => {
                            out.push(s.to_owned())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            secrets_in_documents(&path, out);
        } else if path.file_name().is_some_and(|n| n == "secrets.json") {
            walk(
                &serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap(),
                out,
            );
        }
    }
}

/// `credbroker rotate` logged the HTTP layers at TRACE and no secret.
fn rotate_logs_are_clean(dir: &Path) {
    let logs = ROTATE_LOGS.lock().unwrap();
    // rotate serves no gRPC and speaks HTTP/1.1 to Prism: no h2 here.
    let missing = missing_trace_targets(&logs, &["hyper", "reqwest"]);
    assert!(
        missing.is_empty(),
        "rotate logged no TRACE lines from {missing:?}"
    );
    let mut secrets = vec![ADMIN_TOKEN.to_owned()];
    secrets_in_documents(dir, &mut secrets);
    assert!(
        secrets.len() > 5,
        "too few secrets to scan for: {}",
        secrets.len()
    );
    for secret in &secrets {
        if let Some(how) = secret_leak(&logs, secret) {
            panic!("a secret value appears in rotate's log ({how})");
        }
    }
}

fn our_keys(t: &Twilio, name: &str) -> Vec<String> {
    t.keys()
        .into_iter()
        .filter(|(_, f)| f.starts_with(&format!("credbroker:{name}:")))
        .map(|(s, _)| s)
        .collect()
}

#[test]
fn rotation_suite() {
    let dir = world_dir();
    let twilio = Twilio::start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    rt.block_on(api_key_rotation_under_load(dir.path(), &twilio));
    rt.block_on(auth_token_rotation(dir.path(), &twilio));
    crash_at_every_step_then_resume(dir.path(), &twilio);
    two_rotators_at_once(dir.path(), &twilio);
    bad_admin_and_outage_leave_a_resumable_document(dir.path(), &twilio);
    twilio.assert_no_violations(dir.path());
    rotate_logs_are_clean(dir.path());
    // Last, since it makes Prism refuse exchanges on purpose.
    prism_check_catches_broken_exchanges(dir.path(), &twilio);
}

/// The control of `assert_no_violations`: an answer that breaks Twilio's
/// spec and a request that does (no Authorization) must both be reported.
fn prism_check_catches_broken_exchanges(dir: &Path, t: &Twilio) {
    use base64::Engine as _;
    let log = || fs::read_to_string(dir.join("prism-api.log")).unwrap();
    assert!(prism_violations(&log()).is_empty(), "{}", log());
    let keys = format!("/2010-04-01/Accounts/{AC}/Keys.json");
    t.post(
        "corrupt",
        &serde_json::json!({"path_prefix": keys, "count": 1, "method": "GET",
            "set": {"page_size": "not a number"}})
        .to_string(),
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{AC}:{ADMIN_TOKEN}"));
    let (status, _) = http(
        "GET",
        &format!("{}{keys}", t.api.url()),
        None,
        &[("Authorization", &format!("Basic {basic}"))],
    );
    assert_eq!(status, 500, "Prism lets a broken answer through");
    let found = prism_violations(&log());
    assert!(
        found.len() == 1 && found[0].contains("errors#VIOLATIONS"),
        "the broken answer is not reported: {found:?}"
    );
    // A request Prism refuses before it reaches the fake counts too.
    let (status, _) = http("GET", &format!("{}{keys}", t.api.url()), None, &[]);
    assert_eq!(status, 401, "Prism forwards a request with no credentials");
    let found = prism_violations(&log());
    assert!(
        found.len() == 2 && found[1].contains("errors#UNAUTHORIZED"),
        "the refused request is not reported: {found:?}"
    );
}

async fn api_key_rotation_under_load(root: &Path, t: &Twilio) {
    let dir = root.join("load");
    fs::create_dir_all(&dir).unwrap();
    let (old_sid, old_secret) = t.seed_key("initial verify key");
    write_secrets(&dir, &[("verify".into(), key_doc(&old_sid, &old_secret))]);
    let cfg = t.config_head("lease_ttl = \"2s\"\nrefresh_interval = \"1s\"")
        + &api_key_rotation("verify", "4s");
    let mut daemon = Daemon::start(&dir, &cfg).secrets(&[&old_secret, ADMIN_TOKEN]);
    let client = Client::connect(&daemon.socket).await.unwrap();

    // Continuous load from several clients; every credential handed out is
    // checked against the fake Twilio at once.
    let stop = Arc::new(AtomicBool::new(false));
    // Stops the load even when an assertion below fails.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_guard = StopOnDrop(stop.clone());
    let (calls, failed, invalid) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let fake_url = t.fake.url();
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, stop, calls, failed, invalid, fake_url) = (
            client.clone(),
            stop.clone(),
            calls.clone(),
            failed.clone(),
            invalid.clone(),
            fake_url.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                calls.fetch_add(1, Ordering::Relaxed);
                match client.get("verify").await {
                    Ok(c) => {
                        let Some(proto::credential::Secret::ApiKey(k)) = c.secret else {
                            panic!("not an API key")
                        };
                        let body = serde_json::json!({"username": k.sid, "password": k.secret})
                            .to_string();
                        let url = fake_url.clone();
                        let valid = tokio::task::spawn_blocking(move || {
                            let (_, b) =
                                http("POST", &format!("{url}/__fake/check"), Some(&body), &[]);
                            b.contains("\"valid\": true")
                        })
                        .await
                        .unwrap();
                        if !valid {
                            invalid.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut watch = client.watch("verify").await.unwrap();
    watch.message().await.unwrap().unwrap();

    let mut admin = proto::rotation_admin_client::RotationAdminClient::new(client.channel());
    let status = admin
        .rotate(proto::RotateRequest {
            name: "verify".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.step, "promoted", "{status:?}");
    assert!(status.last_success.is_some());

    // Watchers are pushed the new key at once, with the old one as `previous`.
    let new = next_matching(
        &mut watch,
        Duration::from_secs(3),
        "the new key",
        |c| matches!(&c.secret, Some(proto::credential::Secret::ApiKey(k)) if k.sid != old_sid),
    )
    .await;
    let Some(proto::credential::Secret::ApiKey(new_key)) = new.secret.clone() else {
        unreachable!()
    };
    daemon.add_secret(&new_key.secret);
    let previous = new
        .previous
        .clone()
        .expect("previous during the grace window");
    assert!(
        matches!(previous.secret, Some(proto::previous_credential::Secret::ApiKey(ref k)) if k.sid == old_sid)
    );
    assert!(
        t.valid(&old_sid, &old_secret) && t.valid(&new_key.sid, &new_key.secret),
        "both keys work during the grace window"
    );

    // The daemon retires the old key at retire_at by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while t.keys().iter().any(|(s, _)| *s == old_sid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the old key was not deleted after the grace window"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = admin
        .get_rotation_status(proto::GetRotationStatusRequest {
            name: "verify".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.step, "idle", "{status:?}");
    assert!(status.next_run.is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (calls, failed, invalid) = (
        calls.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        invalid.load(Ordering::Relaxed),
    );
    assert!(calls > 50, "too little load to mean anything: {calls}");
    assert_eq!(
        (failed, invalid),
        (0, 0),
        "of {calls} calls: {failed} failed, {invalid} handed out a credential Twilio refused"
    );
    assert_eq!(
        our_keys(t, "verify"),
        std::slice::from_ref(&new_key.sid),
        "exactly one key of ours left"
    );
    let doc = read_doc(&dir, "verify");
    assert!(
        doc.get("previous").is_none() && doc.get("pending").is_none(),
        "{}",
        doc.get("previous").is_some()
    );
    daemon.signal(rustix::process::Signal::TERM);
    daemon.wait_exit();
    daemon.assert_http_log_clean();
}

async fn auth_token_rotation(root: &Path, t: &Twilio) {
    let dir = root.join("token");
    fs::create_dir_all(&dir).unwrap();
    // The account's own credential (the admin's token) is the one rotated here.
    write_secrets(&dir, &[]);
    let cfg = t.config_head("lease_ttl = \"1s\"\nrefresh_interval = \"1s\"")
        + "[credentials.twilio-admin.rotation]\nschedule = \"0 0 0 1 1 * 2099\"\ngrace = \"3s\"\n";
    let mut daemon = Daemon::start(&dir, &cfg).secrets(&[ADMIN_TOKEN]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut admin = proto::rotation_admin_client::RotationAdminClient::new(client.channel());
    let status = admin
        .rotate(proto::RotateRequest {
            name: "twilio-admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.step, "promoted", "{status:?}");
    let current = get_until(
        &client,
        "twilio-admin",
        Duration::from_secs(5),
        "the secondary token",
        |r| r.as_ref().is_ok_and(|c| secret_of(c) != ADMIN_TOKEN),
    )
    .await
    .unwrap();
    let new_token = secret_of(&current).to_owned();
    daemon.add_secret(&new_token);
    assert!(
        t.valid(AC, ADMIN_TOKEN) && t.valid(AC, &new_token),
        "both tokens valid during the window"
    );
    assert!(
        matches!(current.previous.and_then(|p| p.secret), Some(proto::previous_credential::Secret::AuthToken(p)) if p.token == ADMIN_TOKEN)
    );

    // After the grace window the daemon promotes the secondary at Twilio.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while t.valid(AC, ADMIN_TOKEN) {
        assert!(
            std::time::Instant::now() < deadline,
            "the old token still works after the grace window"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        t.valid(AC, &new_token),
        "only the new token works after promote"
    );
    daemon.signal(rustix::process::Signal::TERM);
    daemon.wait_exit();
    daemon.assert_http_log_clean();
    // Put the account back for the next scenarios.
    t.post(
        "accounts",
        &format!(r#"{{"sid": "{AC}", "auth_token": "{ADMIN_TOKEN}"}}"#),
    );
}

const FAILPOINTS: [&str; 6] = [
    "after-claim",
    "after-create",
    "after-write-pending",
    "after-test",
    "after-promote",
    "after-retire-at-twilio",
];

fn crash_at_every_step_then_resume(root: &Path, t: &Twilio) {
    let dir = root.join("crash");
    fs::create_dir_all(&dir).unwrap();
    let mut docs = Vec::new();
    let mut olds = Vec::new();
    let mut cfg = t.config_head("lease_ttl = \"1s\"\nrefresh_interval = \"1s\"");
    for (i, _) in FAILPOINTS.iter().enumerate() {
        let name = format!("crash{i}");
        let (sid, secret) = t.seed_key(&format!("initial {name}"));
        docs.push((name.clone(), key_doc(&sid, &secret)));
        olds.push(sid);
        cfg += &api_key_rotation(&name, "2s");
    }
    write_secrets(&dir, &docs);
    let config = dir.join("config.toml");
    fs::write(
        &config,
        cfg.replace("{dir}", &dir.display().to_string())
            .replace("{socket}", "/nonexistent.sock"),
    )
    .unwrap();

    for (i, fp) in FAILPOINTS.iter().enumerate() {
        let name = format!("crash{i}");
        let retire_case = *fp == "after-retire-at-twilio";
        if retire_case {
            let out = rotate_cli(&config, &["--credential", &name], None);
            assert!(out.status.success(), "{}", stderr(&out));
            std::thread::sleep(Duration::from_millis(2100));
        }
        let args: &[&str] = if retire_case {
            &["--credential", &name, "--no-start"]
        } else {
            &["--credential", &name]
        };
        let crashed = rotate_cli(&config, args, Some(fp));
        assert!(
            crashed.status.code().is_none(),
            "{fp}: the failpoint did not crash the process: {}",
            stderr(&crashed)
        );
        // Resume: the dead process's claim is taken over at once.
        let out = rotate_cli(&config, args, None);
        assert!(
            out.status.success(),
            "{fp}: resume failed: {}{}",
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(2100));
        let out = rotate_cli(&config, &["--credential", &name, "--no-start"], None);
        assert!(
            out.status.success(),
            "{fp}: retire failed: {}",
            stderr(&out)
        );

        let doc = read_doc(&dir, &name);
        let current = doc["api_key_sid"].as_str().unwrap().to_owned();
        assert_ne!(current, olds[i], "{fp}: not rotated");
        assert!(
            doc.get("pending").is_none() && doc.get("previous").is_none(),
            "{fp}: document not settled"
        );
        assert_eq!(
            our_keys(t, &name),
            std::slice::from_ref(&current),
            "{fp}: exactly one new key, no orphan"
        );
        assert!(
            !t.keys().iter().any(|(s, _)| *s == olds[i]),
            "{fp}: the old key is still at Twilio"
        );
        assert!(
            t.valid(&current, doc["api_key_secret"].as_str().unwrap()),
            "{fp}: the new key does not work"
        );
    }
}

fn two_rotators_at_once(root: &Path, t: &Twilio) {
    let dir = root.join("race");
    fs::create_dir_all(&dir).unwrap();
    let (sid, secret) = t.seed_key("initial race key");
    write_secrets(&dir, &[("race".into(), key_doc(&sid, &secret))]);
    let config = dir.join("config.toml");
    let cfg = t.config_head("lease_ttl = \"1s\"\nrefresh_interval = \"1s\"")
        + &api_key_rotation("race", "1h");
    fs::write(
        &config,
        cfg.replace("{dir}", &dir.display().to_string())
            .replace("{socket}", "/nonexistent.sock"),
    )
    .unwrap();
    let outs: Vec<_> = std::thread::scope(|s| {
        let a = s.spawn(|| rotate_cli(&config, &["--credential", "race"], None));
        let b = s.spawn(|| rotate_cli(&config, &["--credential", "race"], None));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    for out in &outs {
        assert!(out.status.success(), "{}", stderr(out));
    }
    let rotated = outs
        .iter()
        .filter(|o| stdout(o).contains("race: rotated"))
        .count();
    assert_eq!(
        rotated,
        1,
        "exactly one rotation: {:?}",
        outs.iter().map(stdout).collect::<Vec<_>>()
    );
    let doc = read_doc(&dir, "race");
    assert_eq!(
        our_keys(t, "race"),
        [doc["api_key_sid"].as_str().unwrap().to_owned()]
    );
    assert_eq!(doc["previous"]["api_key_sid"], sid.as_str());
}

fn bad_admin_and_outage_leave_a_resumable_document(root: &Path, t: &Twilio) {
    let dir = root.join("bad");
    fs::create_dir_all(&dir).unwrap();
    let (sid, secret) = t.seed_key("initial bad key");
    write_secrets(&dir, &[("bad".into(), key_doc(&sid, &secret))]);
    let config = dir.join("config.toml");
    let cfg = t.config_head("lease_ttl = \"1s\"\nrefresh_interval = \"1s\"")
        + &api_key_rotation("bad", "1h");
    fs::write(
        &config,
        cfg.replace("{dir}", &dir.display().to_string())
            .replace("{socket}", "/nonexistent.sock"),
    )
    .unwrap();

    // A wrong admin token: Twilio says 401; the error says which step and why.
    let good = fs::read_to_string(dir.join("secrets.json")).unwrap();
    fs::write(
        dir.join("secrets.json"),
        good.replace(ADMIN_TOKEN, "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"),
    )
    .unwrap();
    let out = rotate_cli(&config, &["--credential", "bad"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("credential `bad`") && err.contains("refused the credential (HTTP 401"),
        "{err}"
    );
    assert!(
        !err.contains(ADMIN_TOKEN) && !err.contains("b0b0b0b0"),
        "a secret in an error"
    );
    assert!(
        read_doc(&dir, "bad").get("pending").is_some(),
        "the claim stays: resumable"
    );
    let fixed = fs::read_to_string(dir.join("secrets.json"))
        .unwrap()
        .replace("b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0", ADMIN_TOKEN);
    fs::write(dir.join("secrets.json"), fixed).unwrap();

    // Twilio down while creating the key: a clear error, still resumable.
    t.post(
        "fail",
        r#"{"path_prefix": "/v1/Keys", "method": "POST", "status": 503, "count": 100}"#,
    );
    let out = rotate_cli(&config, &["--credential", "bad"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unavailable"), "{}", stderr(&out));
    t.post("fail", r#"{"path_prefix": "/v1/Keys", "count": 0}"#);
    let out = rotate_cli(&config, &["--credential", "bad"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("bad: rotated"), "{}", stdout(&out));
    assert_eq!(our_keys(t, "bad").len(), 1);
}
