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

    fake_follows_twilio_key_types(&twilio);
    rt.block_on(api_key_rotation_under_load(dir.path(), &twilio));
    rt.block_on(auth_token_rotation(dir.path(), &twilio));
    auth_token_waits_for_propagation(dir.path(), &twilio);
    key_that_works_after_a_delay_rotates(dir.path(), &twilio);
    a_cronjob_rotation_is_retired_by_the_daemon(dir.path(), &twilio);
    key_that_never_works_fails_the_test_step(dir.path(), &twilio);
    key_refused_in_every_attempt_is_dropped(dir.path(), &twilio);
    auth_token_refused_in_every_attempt_is_dropped(dir.path(), &twilio);
    restricted_key_keeps_its_policy(dir.path(), &twilio);
    validation_url_is_honoured(dir.path(), &twilio);
    retry_after_is_honoured(dir.path(), &twilio);
    lost_create_answer_is_not_retried(dir.path(), &twilio);
    hostile_twilio_answers_fail_clearly(dir.path(), &twilio);
    crash_at_every_step_then_resume(dir.path(), &twilio);
    two_rotators_at_once(dir.path(), &twilio);
    two_rotators_race_for_the_claim(dir.path(), &twilio);
    rt.block_on(one_process_rotates_a_credential_once_at_a_time(
        dir.path(),
        &twilio,
    ));
    bad_admin_and_outage_leave_a_resumable_document(dir.path(), &twilio);
    rotation_into_openbao_kv2(dir.path(), &twilio);
    // Seeds over a thousand keys: after the others, whose sweeps it would slow.
    sweep_reads_every_page(dir.path(), &twilio);
    twilio.assert_no_violations(dir.path());
    rotate_logs_are_clean(dir.path());
    // Last, since it makes Prism refuse exchanges on purpose.
    prism_check_catches_broken_exchanges(dir.path(), &twilio);
}

/// Two rotations of one credential in one process (the schedule and a
/// Rotate call share an owner id): they take turns, so one key is created
/// and promoted, and the second finds the grace window running.
async fn one_process_rotates_a_credential_once_at_a_time(root: &Path, t: &Twilio) {
    let (dir, config_path, old) = one_key_world(root, t, "turns", "1m", "propagation = \"30s\"\n");
    let config = credbroker::config::load(&config_path).unwrap();
    let stores = credbroker::store::build_all(&config, &Default::default())
        .await
        .unwrap();
    let rotator = credbroker::rotation::Rotator::new(
        &config,
        stores,
        credbroker::twilio::TwilioClient::new((&config.twilio).into()),
        credbroker::clock::Clock::new(),
        Box::new(|_| {}),
    );
    let creates = || {
        t.requests()
            .iter()
            .filter(|r| {
                r["method"] == "POST" && r["path"].as_str().is_some_and(|p| p.ends_with("/v1/Keys"))
            })
            .count()
    };
    let before = creates();
    // The new key takes 2 s to work: the first rotation is still testing it
    // when the second would start.
    t.set_propagation(2.0);
    let (a, b) = tokio::join!(rotator.rotate("turns", true), rotator.rotate("turns", true));
    t.set_propagation(0.0);
    let outcomes = [a.unwrap(), b.unwrap()];
    use credbroker::rotation::Outcome;
    assert!(
        matches!(outcomes[0], Outcome::Promoted { .. })
            && matches!(outcomes[1], Outcome::Waiting { .. }),
        "{outcomes:?}"
    );
    assert_eq!(creates() - before, 1, "both rotations created a key");
    assert_ne!(
        read_doc(&dir, "turns")["api_key_sid"].as_str().unwrap(),
        old
    );
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
    next_message(&mut watch, "the first message").await;

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
    // Rotate answers once the daemon serves what it wrote: a read right
    // after it gets the new key, with the old one as `previous`.
    let right_after = client.get("verify").await.unwrap();
    assert!(
        matches!(&right_after.secret, Some(proto::credential::Secret::ApiKey(k)) if k.sid != old_sid),
        "Rotate answered before the new key was served"
    );
    assert!(right_after.previous.is_some());

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
    // The key is deleted at Twilio first, then `previous` is dropped from
    // the document: the status turns idle once that write lands.
    let status = loop {
        let status = admin
            .get_rotation_status(proto::GetRotationStatusRequest {
                name: "verify".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if status.step == "idle" || std::time::Instant::now() >= deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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

/// A directory with one API-key credential `name` (a fresh Standard key)
/// and its `rotate` config; `rotation_extra` is more of its rotation table.
/// Returns (dir, config path, the key's SID).
fn one_key_world(
    root: &Path,
    t: &Twilio,
    name: &str,
    grace: &str,
    rotation_extra: &str,
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    let (sid, secret) = t.seed_key(&format!("initial {name} key"));
    write_secrets(&dir, &[(name.into(), key_doc(&sid, &secret))]);
    let config = dir.join("config.toml");
    let cfg = t.config_head("lease_ttl = \"1s\"\nrefresh_interval = \"1s\"")
        + &api_key_rotation(name, grace)
        + rotation_extra;
    fs::write(
        &config,
        cfg.replace("{dir}", &dir.display().to_string())
            .replace("{socket}", "/nonexistent.sock"),
    )
    .unwrap();
    (dir, config, sid)
}

/// The fake's requests for `path_suffix` with `username`: (status, time).
fn requests_by(t: &Twilio, method: &str, path_suffix: &str, user: &str) -> Vec<(u64, f64)> {
    t.requests()
        .iter()
        .filter(|r| {
            r["method"] == method
                && r["path"].as_str().is_some_and(|p| p.ends_with(path_suffix))
                && r["username"] == user
        })
        .map(|r| (r["status"].as_u64().unwrap(), r["time"].as_f64().unwrap()))
        .collect()
}

/// Twilio's key-type rules, through the Prism proxies as every client sees
/// them: a Standard key is refused the Account resource and the Keys
/// endpoints (401, 20003) but may read messages; a Restricted key only its
/// policy (70051 outside it); a Main key and the Auth Token everything.
fn fake_follows_twilio_key_types(t: &Twilio) {
    let account = format!("/2010-04-01/Accounts/{AC}.json");
    let messages = format!("/2010-04-01/Accounts/{AC}/Messages.json?PageSize=1");
    let calls = format!("/2010-04-01/Accounts/{AC}/Calls.json?PageSize=1");
    let keys_2010 = format!("/2010-04-01/Accounts/{AC}/Keys.json");
    let keys_v1 = format!("/v1/Keys?AccountSid={AC}");
    let (api, iam) = (t.api.url(), t.iam.url());
    let code = |(status, body): (u16, String)| -> (u16, u64) {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        (status, v["code"].as_u64().unwrap_or(0))
    };

    let (sid, secret) = t.seed_typed_key("standard", None);
    assert_eq!(
        code(t.get_as(&api, &account, &sid, &secret)),
        (401, 20003),
        "Standard key on /Accounts/{{sid}}.json"
    );
    assert_eq!(
        code(t.get_as(&api, &keys_2010, &sid, &secret)),
        (401, 20003),
        "Standard key on 2010 Keys"
    );
    assert_eq!(
        code(t.get_as(&iam, &keys_v1, &sid, &secret)),
        (401, 20003),
        "Standard key on /v1/Keys"
    );
    assert_eq!(
        t.get_as(&api, &messages, &sid, &secret).0,
        200,
        "Standard key reads messages"
    );

    let policy = r#"{"allow": ["/twilio/messaging/messages/read"]}"#;
    let (rsid, rsecret) = t.seed_typed_key("restricted", Some(policy));
    assert_eq!(
        t.get_as(&api, &messages, &rsid, &rsecret).0,
        200,
        "Restricted key inside its policy"
    );
    assert_eq!(
        code(t.get_as(&api, &calls, &rsid, &rsecret)),
        (401, 70051),
        "Restricted key outside its policy"
    );
    assert_eq!(
        code(t.get_as(&api, &account, &rsid, &rsecret)),
        (401, 70051),
        "Restricted key on /Accounts"
    );

    let (msid, msecret) = t.seed_typed_key("main", None);
    assert_eq!(
        t.get_as(&api, &account, &msid, &msecret).0,
        200,
        "Main key on /Accounts"
    );
    assert_eq!(
        t.get_as(&iam, &keys_v1, &msid, &msecret).0,
        200,
        "Main key on /v1/Keys"
    );
    assert_eq!(
        t.get_as(&api, &account, AC, ADMIN_TOKEN).0,
        200,
        "Auth Token on /Accounts"
    );

    // A key made while a propagation delay is set: refused (20003) at first.
    t.set_propagation(60.0);
    let (psid, psecret) = t.seed_typed_key("standard", None);
    let v = t.post(
        "keys",
        &serde_json::json!({"account_sid": AC, "type": "standard", "propagates": true}).to_string(),
    );
    let (dsid, dsecret) = (v["sid"].as_str().unwrap(), v["secret"].as_str().unwrap());
    assert_eq!(
        code(t.get_as(&api, &messages, dsid, dsecret)),
        (401, 20003),
        "a key still propagating"
    );
    assert_eq!(
        t.get_as(&api, &messages, &psid, &psecret).0,
        200,
        "seeded keys are not delayed"
    );
    t.release_propagation();
    assert_eq!(t.get_as(&api, &messages, dsid, dsecret).0, 200, "released");
}

/// A new key refused (20003) for 3 s is retried within `propagation` and
/// rotates; the fake saw the refusals, then the success, with that key.
fn key_that_works_after_a_delay_rotates(root: &Path, t: &Twilio) {
    let (dir, config, old) = one_key_world(root, t, "slow", "1m", "propagation = \"30s\"\n");
    t.set_propagation(3.0);
    let out = rotate_cli(&config, &["--credential", "slow"], None);
    t.set_propagation(0.0);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("slow: rotated"), "{}", stdout(&out));
    let doc = read_doc(&dir, "slow");
    let new = doc["api_key_sid"].as_str().unwrap();
    assert_ne!(new, old);
    let tests = requests_by(t, "GET", "/Messages.json", new);
    let refused = tests.iter().filter(|(s, _)| *s == 401).count();
    assert!(refused >= 1, "the delay was not exercised: {tests:?}");
    assert_eq!(tests.last().map(|r| r.0), Some(200), "{tests:?}");
    assert!(
        tests.last().unwrap().1 - tests[0].1 >= 2.5,
        "promoted before the key could work: {tests:?}"
    );
    assert!(
        stderr(&out).contains("waiting for it to propagate"),
        "{}",
        stderr(&out)
    );
}

/// `credbroker rotate` (a CronJob) promotes a new key and exits; the daemon,
/// whose own schedule is years away, sees the document change and retires
/// the old key at `retire_at` (before, it slept until its next cron slot,
/// and the old key stayed valid at Twilio until then).
fn a_cronjob_rotation_is_retired_by_the_daemon(root: &Path, t: &Twilio) {
    let (dir, config, old) = one_key_world(root, t, "cronjob", "3s", "");
    let daemon_cfg = t.config_head("lease_ttl = \"1s\"\nrefresh_interval = \"1s\"")
        + &api_key_rotation("cronjob", "3s");
    let daemon = Daemon::start(&dir, &daemon_cfg);
    let out = rotate_cli(&config, &["--credential", "cronjob"], None);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("cronjob: rotated"),
        "{}",
        stdout(&out)
    );
    assert!(read_doc(&dir, "cronjob")["previous"].is_object());
    assert!(t.keys().iter().any(|(s, _)| *s == old));
    wait_until(
        Duration::from_secs(30),
        "the daemon to retire the old key",
        || !t.keys().iter().any(|(s, _)| *s == old),
    );
    wait_until(Duration::from_secs(10), "previous dropped", || {
        read_doc(&dir, "cronjob").get("previous").is_none()
    });
    // The log is written by a background thread.
    wait_until(Duration::from_secs(10), "the retirement logged", || {
        daemon.log_text().contains("previous value retired")
    });
}

/// A key that never works: the test step fails once `propagation` has run
/// out, `pending` stays, nothing is promoted; when the key starts working,
/// the next run resumes with the same key.
fn key_that_never_works_fails_the_test_step(root: &Path, t: &Twilio) {
    let (dir, config, old) = one_key_world(root, t, "never", "1m", "propagation = \"3s\"\n");
    t.set_propagation(-1.0);
    let out = rotate_cli(&config, &["--credential", "never"], None);
    t.set_propagation(0.0);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("credential `never`")
            && err.contains("still refused when rotation.propagation ran out")
            && err.contains("code 20003"),
        "{err}"
    );
    let doc = read_doc(&dir, "never");
    assert_eq!(doc["api_key_sid"], old.as_str(), "nothing promoted");
    assert!(doc.get("previous").is_none(), "nothing promoted");
    let pending = doc["pending"]["api_key_sid"]
        .as_str()
        .expect("pending kept: resumable")
        .to_owned();
    let tests = requests_by(t, "GET", "/Messages.json", &pending);
    assert!(
        tests.len() >= 2 && tests.iter().all(|(s, _)| *s == 401),
        "{tests:?}"
    );
    assert_eq!(doc["pending"]["refused_tests"], 1, "the refusal is counted");
    assert!(
        tests.last().unwrap().1 - tests[0].1 >= 2.0,
        "gave up before propagation: {tests:?}"
    );

    t.release_propagation();
    let out = rotate_cli(&config, &["--credential", "never"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = read_doc(&dir, "never");
    assert_eq!(
        doc["api_key_sid"],
        pending.as_str(),
        "resumed with the same key"
    );
    assert_eq!(our_keys(t, "never"), [pending], "no second key");
}

/// A key still refused after `propagation` in every one of three attempts
/// will not work: the third drops it from the document and deletes it at
/// Twilio, saying why; the next rotation starts afresh with a new key.
fn key_refused_in_every_attempt_is_dropped(root: &Path, t: &Twilio) {
    let (dir, config, old) = one_key_world(root, t, "hopeless", "1m", "propagation = \"1s\"\n");
    t.set_propagation(-1.0);
    let mut pending = String::new();
    for attempt in 1..=2 {
        let out = rotate_cli(&config, &["--credential", "hopeless"], None);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let doc = read_doc(&dir, "hopeless");
        assert_eq!(doc["pending"]["refused_tests"], attempt, "{doc}");
        pending = doc["pending"]["api_key_sid"].as_str().unwrap().to_owned();
    }
    let out = rotate_cli(&config, &["--credential", "hopeless"], None);
    t.set_propagation(0.0);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("credential `hopeless`")
            && err.contains("in 3 attempts")
            && err.contains("dropped from the document and deleted at Twilio")
            && err.contains("code 20003"),
        "{err}"
    );
    let doc = read_doc(&dir, "hopeless");
    assert!(doc.get("pending").is_none(), "pending kept: {doc}");
    assert_eq!(doc["api_key_sid"], old.as_str(), "nothing promoted");
    assert!(
        !our_keys(t, "hopeless").contains(&pending),
        "the dropped key is still at Twilio"
    );

    let out = rotate_cli(&config, &["--credential", "hopeless"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = read_doc(&dir, "hopeless");
    let new = doc["api_key_sid"].as_str().unwrap();
    assert!(new != old && new != pending, "{doc}");
}

/// The same for a secondary Auth Token: dropped, and deleted at Twilio, so
/// that the next rotation can create one.
fn auth_token_refused_in_every_attempt_is_dropped(root: &Path, t: &Twilio) {
    let dir = root.join("token-hopeless");
    fs::create_dir_all(&dir).unwrap();
    write_secrets(&dir, &[]);
    let config = dir.join("config.toml");
    let cfg = t.config_head("lease_ttl = \"1s\"\nrefresh_interval = \"1s\"")
        + "[credentials.twilio-admin.rotation]\nschedule = \"0 0 0 1 1 * 2099\"\ngrace = \"1m\"\npropagation = \"1s\"\n";
    fs::write(
        &config,
        cfg.replace("{dir}", &dir.display().to_string())
            .replace("{socket}", "/nonexistent.sock"),
    )
    .unwrap();
    let has_secondary = || {
        t.state()["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["sid"] == AC)
            .unwrap()["has_secondary"]
            .as_bool()
            .unwrap()
    };
    t.set_propagation(-1.0);
    for attempt in 1..=2 {
        let out = rotate_cli(&config, &["--credential", "twilio-admin"], None);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(read_doc(&dir, "admin")["pending"]["refused_tests"], attempt);
        assert!(has_secondary());
    }
    let out = rotate_cli(&config, &["--credential", "twilio-admin"], None);
    t.set_propagation(0.0);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dropped from the document and deleted at Twilio"),
        "{}",
        stderr(&out)
    );
    assert!(
        !has_secondary(),
        "the dropped secondary token is still at Twilio"
    );
    let doc = read_doc(&dir, "admin");
    assert!(doc.get("pending").is_none(), "{doc}");
    assert_eq!(doc["auth_token"], ADMIN_TOKEN, "nothing promoted");
}

/// A Restricted key's successor is Restricted too, with the same policy:
/// rotation never widens a key to Standard.
fn restricted_key_keeps_its_policy(root: &Path, t: &Twilio) {
    let policy = r#"{"allow": ["/twilio/messaging/messages/read"]}"#;
    let (sid, secret) = t.seed_typed_key("restricted", Some(policy));
    let dir = root.join("narrow");
    fs::create_dir_all(&dir).unwrap();
    write_secrets(&dir, &[("narrow".into(), key_doc(&sid, &secret))]);
    let config = dir.join("config.toml");
    let cfg = t.config_head("lease_ttl = \"1s\"\nrefresh_interval = \"1s\"")
        + &api_key_rotation("narrow", "1m");
    fs::write(
        &config,
        cfg.replace("{dir}", &dir.display().to_string())
            .replace("{socket}", "/nonexistent.sock"),
    )
    .unwrap();
    let out = rotate_cli(&config, &["--credential", "narrow"], None);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let doc = read_doc(&dir, "narrow");
    let new = doc["api_key_sid"].as_str().unwrap();
    assert_ne!(new, sid);
    let state = t.state();
    let key = state["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["sid"] == new)
        .expect("the new key at Twilio");
    assert_eq!(key["type"], "restricted", "{key}");
    assert_eq!(
        key["policy"],
        serde_json::from_str::<serde_json::Value>(policy).unwrap(),
        "{key}"
    );
}

/// A secondary Auth Token that works only after a delay is waited for too.
fn auth_token_waits_for_propagation(root: &Path, t: &Twilio) {
    let dir = root.join("token-slow");
    fs::create_dir_all(&dir).unwrap();
    write_secrets(&dir, &[]);
    let config = dir.join("config.toml");
    let cfg = t.config_head("lease_ttl = \"1s\"\nrefresh_interval = \"1s\"")
        + "[credentials.twilio-admin.rotation]\nschedule = \"0 0 0 1 1 * 2099\"\ngrace = \"1m\"\npropagation = \"20s\"\n";
    fs::write(
        &config,
        cfg.replace("{dir}", &dir.display().to_string())
            .replace("{socket}", "/nonexistent.sock"),
    )
    .unwrap();
    t.set_propagation(2.0);
    let out = rotate_cli(&config, &["--credential", "twilio-admin"], None);
    t.set_propagation(0.0);
    assert!(out.status.success(), "{}", stderr(&out));
    let tests = requests_by(t, "GET", "/Messages.json", AC);
    assert!(
        tests.iter().any(|(s, _)| *s == 401) && tests.last().map(|r| r.0) == Some(200),
        "{tests:?}"
    );
    // Put the account back for the next scenarios.
    t.post(
        "accounts",
        &format!(r#"{{"sid": "{AC}", "auth_token": "{ADMIN_TOKEN}"}}"#),
    );
}

/// `validation_url` replaces the default test read.
fn validation_url_is_honoured(root: &Path, t: &Twilio) {
    let (dir, config, _) = one_key_world(
        root,
        t,
        "calls",
        "1m",
        "validation_url = \"/2010-04-01/Accounts/{account_sid}/Calls.json?PageSize=1\"\n",
    );
    let out = rotate_cli(&config, &["--credential", "calls"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let new = read_doc(&dir, "calls")["api_key_sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        requests_by(t, "GET", "/Calls.json", &new)
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        [200]
    );
    assert!(
        requests_by(t, "GET", "/Messages.json", &new).is_empty(),
        "the default read was used"
    );
}

/// Twilio answers the key list 429 with `Retry-After: 2` twice: the client
/// waits as told each time, then succeeds.
fn retry_after_is_honoured(root: &Path, t: &Twilio) {
    let (_, config, _) = one_key_world(root, t, "throttled", "1m", "");
    let keys = format!("/2010-04-01/Accounts/{AC}/Keys.json");
    t.post("fail", &serde_json::json!({"path_prefix": keys, "method": "GET", "status": 429, "count": 2, "retry_after": 2}).to_string());
    let out = rotate_cli(&config, &["--credential", "throttled"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let lists = requests_by(t, "GET", "/Keys.json", AC);
    let last3 = &lists[lists.len() - 3..];
    assert_eq!(
        last3.iter().map(|r| r.0).collect::<Vec<_>>(),
        [429, 429, 200],
        "{lists:?}"
    );
    for pair in last3.windows(2) {
        assert!(
            pair[1].1 - pair[0].1 >= 1.9,
            "Retry-After not honoured: {last3:?}"
        );
    }
}

/// `POST /v1/Keys` whose answer is lost (Twilio made the key): not sent
/// again; the step fails, and the next run sweeps that key as an orphan.
fn lost_create_answer_is_not_retried(root: &Path, t: &Twilio) {
    let (dir, config, _) = one_key_world(root, t, "lost", "1m", "");
    t.post("fail", r#"{"path_prefix": "/v1/Keys", "method": "POST", "status": 500, "count": 1, "after": true}"#);
    let before = requests_by(t, "POST", "/v1/Keys", AC).len();
    let out = rotate_cli(&config, &["--credential", "lost"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not retried"), "{}", stderr(&out));
    assert_eq!(
        requests_by(t, "POST", "/v1/Keys", AC).len(),
        before + 1,
        "the create was sent again"
    );
    let orphan = our_keys(t, "lost");
    assert_eq!(orphan.len(), 1, "Twilio made the key whose answer was lost");
    let out = rotate_cli(&config, &["--credential", "lost"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let current = read_doc(&dir, "lost")["api_key_sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(current, orphan[0]);
    assert_eq!(our_keys(t, "lost"), [current], "the orphan was swept");
}

/// A hostile Twilio: a key list whose `next_page_uri` points back at
/// itself for ever, then a 5 MB answer to the key create. Each fails the
/// rotation with a clear error — no endless loop, nothing buffered past
/// 4 MiB — and nothing is promoted; once Twilio behaves, the next run
/// completes and sweeps the key whose answer was too long.
fn hostile_twilio_answers_fail_clearly(root: &Path, t: &Twilio) {
    let (dir, config, old) = one_key_world(root, t, "hostile", "1m", "");
    let list = format!("/2010-04-01/Accounts/{AC}/Keys.json");
    t.post(
        "corrupt",
        &serde_json::json!({
            "path_prefix": list, "method": "GET", "count": 100,
            "set": {"next_page_uri": format!("{list}?PageSize=1000")},
        })
        .to_string(),
    );
    let out = rotate_cli(&config, &["--credential", "hostile"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("more than 100 pages"),
        "{}",
        stderr(&out)
    );
    let doc = read_doc(&dir, "hostile");
    assert_eq!(doc["api_key_sid"], old.as_str(), "nothing promoted");
    assert!(our_keys(t, "hostile").is_empty(), "a key was made");

    t.post(
        "corrupt",
        &serde_json::json!({
            "path_prefix": "/v1/Keys", "method": "POST", "count": 1,
            "set": {"padding": "x".repeat(5 << 20)},
        })
        .to_string(),
    );
    let out = rotate_cli(&config, &["--credential", "hostile"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("larger than 4194304 bytes"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read_doc(&dir, "hostile")["api_key_sid"], old.as_str());
    let orphan = our_keys(t, "hostile");
    assert_eq!(
        orphan.len(),
        1,
        "Twilio made the key whose answer was refused"
    );

    let out = rotate_cli(&config, &["--credential", "hostile"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let current = read_doc(&dir, "hostile")["api_key_sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(our_keys(t, "hostile"), [current], "the orphan was swept");
}

/// Over a thousand keys (Twilio's largest page): the orphan on the second
/// page, reached by the relative `next_page_uri` Twilio sends, is swept.
fn sweep_reads_every_page(root: &Path, t: &Twilio) {
    let (_, config, _) = one_key_world(root, t, "paged", "1m", "");
    t.post("keys", &serde_json::json!({"account_sid": AC, "count": 1000, "friendly_name": "someone else's", "type": "standard"}).to_string());
    let orphan = t.post("keys", &serde_json::json!({"account_sid": AC, "friendly_name": "credbroker:paged:0000orphan", "type": "standard"}).to_string())["sid"].as_str().unwrap().to_owned();
    assert!(t.keys().len() > 1001);
    let out = rotate_cli(&config, &["--credential", "paged"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !t.keys().iter().any(|(s, _)| *s == orphan),
        "the orphan on page 2 was not swept"
    );
    assert!(
        t.requests().iter().any(|r| r["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/Keys.json"))
            && r["status"] == 200
            && r["username"] == AC),
        "no key list"
    );
}

/// Waits until `hold.reached` exists (the paused rotator got there).
fn wait_paused(hold: &Path, child: &mut std::process::Child) {
    let reached = hold.with_extension("reached");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !reached.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the paused rotator exited first: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotator never reached its failpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `credbroker rotate` held at failpoint `pause:POINT` until `hold` is removed.
fn paused_rotate(config: &Path, name: &str, point: &str, hold: &Path) -> std::process::Child {
    fs::write(hold, "").unwrap();
    let _ = fs::remove_file(hold.with_extension("reached"));
    Command::new(bin())
        .args(["rotate", "--credential", name, "--config"])
        .arg(config)
        .env("CREDBROKER_FAILPOINT", format!("pause:{point}"))
        .env("CREDBROKER_FAILPOINT_FILE", hold)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// One rotator holds the claim, stopped between reading the document and
/// writing its new key: the other answers "being rotated by" that process
/// and does nothing; released, the first finishes alone.
fn two_rotators_at_once(root: &Path, t: &Twilio) {
    let (dir, config, sid) = one_key_world(root, t, "race", "1h", "");
    let hold = dir.join("hold");
    let mut a = paused_rotate(&config, "race", "after-create", &hold);
    wait_paused(&hold, &mut a);
    let b = rotate_cli(&config, &["--credential", "race"], None);
    assert!(b.status.success(), "{}", stderr(&b));
    assert!(
        stdout(&b).contains("being rotated by") && stdout(&b).contains(&format!(":{}", a.id())),
        "the loser does not name the holder: {}",
        stdout(&b)
    );
    assert_eq!(our_keys(t, "race").len(), 1, "the loser created a key");
    fs::remove_file(&hold).unwrap();
    let a = a.wait_with_output().unwrap();
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(stdout(&a).contains("race: rotated"), "{}", stdout(&a));
    let doc = read_doc(&dir, "race");
    assert_eq!(
        our_keys(t, "race"),
        [doc["api_key_sid"].as_str().unwrap().to_owned()]
    );
    assert_eq!(doc["previous"]["api_key_sid"], sid.as_str());
}

/// Both read the document before either claims it: one is held just
/// before its claim write while the other rotates; the held one's write
/// then fails compare-and-set, and it re-reads and does nothing more.
fn two_rotators_race_for_the_claim(root: &Path, t: &Twilio) {
    let (dir, config, sid) = one_key_world(root, t, "claim-race", "1h", "");
    let hold = dir.join("hold");
    let mut a = paused_rotate(&config, "claim-race", "before-claim", &hold);
    wait_paused(&hold, &mut a);
    let b = rotate_cli(&config, &["--credential", "claim-race"], None);
    assert!(
        stdout(&b).contains("claim-race: rotated"),
        "{}{}",
        stdout(&b),
        stderr(&b)
    );
    fs::remove_file(&hold).unwrap();
    let a = a.wait_with_output().unwrap();
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(!stdout(&a).contains("rotated"), "both won: {}", stdout(&a));
    assert!(stdout(&a).contains("grace window"), "{}", stdout(&a));
    let doc = read_doc(&dir, "claim-race");
    assert_eq!(
        our_keys(t, "claim-race"),
        [doc["api_key_sid"].as_str().unwrap().to_owned()]
    );
    assert_eq!(doc["previous"]["api_key_sid"], sid.as_str());
}

/// Rotation through the `vault` store into OpenBao's KV v2, on a mount
/// with `cas_required` (OpenBao refuses any write without check-and-set):
/// a rotation, then two rotators racing for the claim, where OpenBao's CAS
/// decides the loser.
fn rotation_into_openbao_kv2(root: &Path, t: &Twilio) {
    let dir = root.join("kv2");
    fs::create_dir_all(&dir).unwrap();
    let bao = OpenBao::start(&dir, "1h", "24h");
    bao.api("POST", "secret/config", r#"{"cas_required": true}"#);
    let (sid, secret) = t.seed_key("initial kv2 key");
    bao.put_v2_cas("twilio/kv2", &key_doc(&sid, &secret), 0);
    let (race_sid, race_secret) = t.seed_key("initial kv2race key");
    bao.put_v2_cas("twilio/kv2race", &key_doc(&race_sid, &race_secret), 0);
    write_secrets(&dir, &[]);
    let config = dir.join("config.toml");
    let cfg = t.config_head("")
        + &format!(
            r#"
[stores.vault]
type = "vault"
address = "{}"
mount = "secret"
kv_version = 2
auth = {{ method = "approle", role_id_file = "{d}/role_id", secret_id_file = "{d}/secret_id" }}

[credentials.kv2]
store = "vault"
path = "twilio/kv2"
[credentials.kv2.rotation]
schedule = "0 0 0 1 1 * 2099"
grace = "1h"
admin_credential = "twilio-admin"

[credentials.kv2race]
store = "vault"
path = "twilio/kv2race"
[credentials.kv2race.rotation]
schedule = "0 0 0 1 1 * 2099"
grace = "1h"
admin_credential = "twilio-admin"
"#,
            bao.url(),
            d = bao.dir.display()
        );
    fs::write(
        &config,
        cfg.replace("{dir}", &dir.display().to_string())
            .replace("{socket}", "/nonexistent.sock"),
    )
    .unwrap();
    let kv2 = || -> (serde_json::Value, u64) {
        let v: serde_json::Value =
            serde_json::from_str(&bao.api("GET", "secret/data/twilio/kv2", "")).unwrap();
        let version = v["data"]["metadata"]["version"].as_u64().unwrap();
        (v["data"]["data"].clone(), version)
    };

    let out = rotate_cli(&config, &["--credential", "kv2"], None);
    assert!(
        out.status.success() && stdout(&out).contains("kv2: rotated"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let (doc, version) = kv2();
    let new_sid = doc["api_key_sid"].as_str().unwrap().to_owned();
    assert_ne!(new_sid, sid);
    assert!(t.valid(&new_sid, doc["api_key_secret"].as_str().unwrap()));
    assert_eq!(doc["previous"]["api_key_sid"], sid.as_str());
    assert!(
        doc["previous"]["retire_at"].is_string(),
        "{}",
        doc["previous"]
    );
    assert!(doc.get("pending").is_none(), "pending left behind");
    assert!(
        version >= 3,
        "the claim, the new key and the promotion are versions of their own: {version}"
    );
    // Every version the rotation wrote, for the log scan at the end.
    for v in 1..=version {
        let old: serde_json::Value = serde_json::from_str(&bao.api(
            "GET",
            &format!("secret/data/twilio/kv2?version={v}"),
            "",
        ))
        .unwrap();
        fs::write(
            dir.join(format!("kv2-v{v}.json")),
            old["data"]["data"].to_string(),
        )
        .unwrap();
    }

    assert_eq!(our_keys(t, "kv2"), [new_sid]);

    // Two rotators read the same version; one is held before its claim
    // while the other rotates; OpenBao refuses the held one's write.
    let hold = dir.join("hold");
    let mut a = paused_rotate(&config, "kv2race", "before-claim", &hold);
    wait_paused(&hold, &mut a);
    let b = rotate_cli(&config, &["--credential", "kv2race"], None);
    assert!(
        stdout(&b).contains("kv2race: rotated"),
        "{}{}",
        stdout(&b),
        stderr(&b)
    );
    fs::remove_file(&hold).unwrap();
    let a = a.wait_with_output().unwrap();
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(!stdout(&a).contains("rotated"), "both won: {}", stdout(&a));
    assert!(stdout(&a).contains("grace window"), "{}", stdout(&a));
    let v: serde_json::Value =
        serde_json::from_str(&bao.api("GET", "secret/data/twilio/kv2race", "")).unwrap();
    let doc = &v["data"]["data"];
    fs::write(dir.join("kv2race.json"), doc.to_string()).unwrap();
    assert_eq!(doc["previous"]["api_key_sid"], race_sid.as_str());
    assert_eq!(
        our_keys(t, "kv2race"),
        [doc["api_key_sid"].as_str().unwrap().to_owned()],
        "the loser created a key"
    );
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
