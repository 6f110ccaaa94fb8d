//! End to end over a real socket: the `credbroker` binary with a file
//! store, driven through the CLI and the Rust client.

mod support;

use std::{fs, time::Duration};

use credbroker::{client::Client, proto};
use support::*;
use tonic::Code;

const NOBODY: (u32, u32) = (65534, 65534);
const STRANGER: (u32, u32) = (65533, 65533);

fn config(extra: &str) -> String {
    format!(
        r#"
[server]
socket = "{{socket}}"
socket_mode = "0666"
allow_root = true

[defaults]
lease_ttl = "5m"
refresh_interval = "1h"
max_stale = "15m"

[stores.local]
type = "file"
path = "{{dir}}/secrets.json"

[credentials.verify]
store = "local"
path = "twilio/verify"

[credentials.messaging]
store = "local"
path = "twilio/messaging"
allow = {{ uids = [0, 65534] }}
{extra}"#
    )
}

fn secrets_json(verify_token: &str, messaging_secret: &str) -> String {
    format!(
        r#"{{"twilio/verify": {}, "twilio/messaging": {}}}"#,
        auth_token_doc(verify_token),
        api_key_doc(messaging_secret)
    )
}

fn token_of(c: &proto::Credential) -> &str {
    match &c.secret {
        Some(proto::credential::Secret::AuthToken(t)) => &t.token,
        Some(proto::credential::Secret::ApiKey(k)) => &k.secret,
        Some(proto::credential::Secret::Bearer(b)) => &b.access_token,
        None => panic!("no secret in {c:?}"),
    }
}

#[test]
fn cli_get_list_health_and_redaction() {
    let dir = world_dir();
    let (t1, k1) = (token(0x1001), key_secret(1001));
    fs::write(dir.path().join("secrets.json"), secrets_json(&t1, &k1)).unwrap();
    let daemon = Daemon::start(dir.path(), &config("")).secrets(&[&t1, &k1]);
    let sock = daemon.socket.display().to_string();

    let out = cli(&["get", "verify", "--socket", &sock], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(AC) && text.contains("<redacted>"), "{text}");
    assert!(
        !text.contains(&t1),
        "get without --reveal printed the secret"
    );

    let out = cli(
        &["get", "messaging", "--socket", &sock, "--reveal", "--json"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["api_key_secret"], k1.as_str());
    assert_eq!(json["api_key_sid"], SK);
    assert_eq!(json["kind"], "api_key");
    assert_eq!(json["stale"], false);

    // The socket can also come from the environment or the config.
    let out = std::process::Command::new(bin())
        .args(["get", "verify", "--json"])
        .env("CREDBROKER_SOCKET", &sock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(
        &["list", "--config", &daemon.config.display().to_string()],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "messaging\tapi_key\nverify\tauth_token\n");

    let out = cli(&["health", "--socket", &sock], None);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "SERVING");

    let out = cli(&["get", "nope", "--socket", &sock], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));

    // Nothing listening: a clear error naming the socket.
    let out = cli(&["health", "--socket", "/nonexistent/broker.sock"], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/broker.sock"),
        "{}",
        stderr(&out)
    );
    daemon.assert_log_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_get_and_watch_see_a_rewrite_within_a_second() {
    let dir = world_dir();
    let (t1, k1, t2) = (token(0x2001), key_secret(2001), token(0x2002));
    let secrets = dir.path().join("secrets.json");
    fs::write(&secrets, secrets_json(&t1, &k1)).unwrap();
    let daemon = Daemon::start(dir.path(), &config("")).secrets(&[&t1, &k1, &t2]);

    let client = Client::connect(&daemon.socket).await.unwrap();
    let got = client.get("verify").await.unwrap();
    assert_eq!(token_of(&got), t1);
    assert_eq!(got.account_sid, AC);
    let issued = std::time::SystemTime::try_from(got.issued_at.unwrap()).unwrap();
    let expires = std::time::SystemTime::try_from(got.expires_at.unwrap()).unwrap();
    assert_eq!(
        expires.duration_since(issued).unwrap(),
        Duration::from_secs(300)
    );
    let names: Vec<String> = client
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["messaging", "verify"]);

    let mut stream = client.watch("verify").await.unwrap();
    let first = next_message(&mut stream, "the first message").await;
    assert_eq!(token_of(&first), t1);

    // refresh_interval is an hour: only the file watch can deliver this in time.
    replace_file(&secrets, &secrets_json(&t2, &k1));
    let next = tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("the new version reached the watcher within 1 s")
        .unwrap()
        .unwrap();
    assert_eq!(token_of(&next), t2);
    assert_ne!(next.version, first.version);
    assert_eq!(token_of(&client.get("verify").await.unwrap()), t2);

    // In-place write (truncate + write), as `echo > file` does.
    fs::write(&secrets, secrets_json(&t1, &k1)).unwrap();
    let back = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let m = stream.message().await.unwrap().unwrap();
            if token_of(&m) == t1 {
                return m;
            }
        }
    })
    .await
    .expect("an in-place rewrite reached the watcher within 1 s");
    assert_eq!(back.version, first.version, "same content, same version");
    daemon.assert_log_clean();
}

#[test]
fn cli_watch_streams_changes() {
    use std::io::{BufRead, BufReader};
    let dir = world_dir();
    let (t1, k1, t2) = (token(0x3001), key_secret(3001), token(0x3002));
    let secrets = dir.path().join("secrets.json");
    fs::write(&secrets, secrets_json(&t1, &k1)).unwrap();
    let daemon = Daemon::start(dir.path(), &config("")).secrets(&[&t1, &k1, &t2]);
    let mut watch = std::process::Command::new(bin())
        .args(["watch", "verify", "--json", "--socket"])
        .arg(&daemon.socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["auth_token"], "<redacted>");
    replace_file(&secrets, &secrets_json(&t2, &k1));
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_ne!(first["version"], second["version"]);
    watch.kill().unwrap();
    watch.wait().unwrap();
    daemon.assert_log_clean();
}

#[test]
fn peers_are_checked_by_uid() {
    let dir = world_dir();
    let (t1, k1) = (token(0x4001), key_secret(4001));
    fs::write(dir.path().join("secrets.json"), secrets_json(&t1, &k1)).unwrap();
    let daemon = Daemon::start(dir.path(), &config("")).secrets(&[&t1, &k1]);
    let sock = daemon.socket.display().to_string();

    // uid 65534 is on messaging's allow list.
    let out = cli(
        &["get", "messaging", "--socket", &sock, "--reveal", "--json"],
        Some(NOBODY),
    );
    assert!(
        out.status.success(),
        "allowed uid refused: {}",
        stderr(&out)
    );
    assert!(stdout(&out).contains(&k1));
    // verify has no allow list: only the daemon's own uid (root here).
    let out = cli(&["get", "verify", "--socket", &sock], Some(NOBODY));
    assert!(
        stderr(&out).contains("PermissionDenied"),
        "{}",
        stderr(&out)
    );
    // A peer the config trusts with something learns that a name is unknown…
    let out = cli(&["get", "no-such", "--socket", &sock], Some(NOBODY));
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
    let out = cli(&["list", "--socket", &sock], Some(NOBODY));
    assert_eq!(stdout(&out), "messaging\tapi_key\n");

    // …a stranger gets the same answer whether or not the name exists.
    let denied_existing = cli(&["get", "messaging", "--socket", &sock], Some(STRANGER));
    let denied_missing = cli(&["get", "no-such", "--socket", &sock], Some(STRANGER));
    assert!(
        stderr(&denied_existing).contains("PermissionDenied"),
        "{}",
        stderr(&denied_existing)
    );
    assert!(
        stderr(&denied_missing).contains("PermissionDenied"),
        "{}",
        stderr(&denied_missing)
    );
    assert!(
        stderr(&denied_missing).contains("on no allow list"),
        "{}",
        stderr(&denied_missing)
    );
    let out = cli(&["watch", "messaging", "--socket", &sock], Some(STRANGER));
    assert!(
        stderr(&out).contains("PermissionDenied"),
        "{}",
        stderr(&out)
    );
    let out = cli(&["list", "--socket", &sock], Some(STRANGER));
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");

    // Every decision is audited with the peer's uid, and never a secret.
    // (The log is written by a background thread: give it a moment.)
    wait_until(Duration::from_secs(3), "the stranger's audit lines", || {
        daemon.log_text().contains("peer_uid=65533")
    });
    let log = daemon.log_text();
    let audits: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("credbroker::audit"))
        .collect();
    assert!(audits.iter().any(|l| l.contains("peer_uid=65534")
        && l.contains("\"allowed\"")
        && l.contains("\"messaging\"")));
    // A stranger is refused before its request is read: the line names the
    // method, never the name it asked for.
    let stranger: Vec<&&str> = audits
        .iter()
        .filter(|l| l.contains("peer_uid=65533"))
        .collect();
    assert!(
        stranger
            .iter()
            .any(|l| l.contains("\"denied\"") && l.contains("\"GetCredential\"")),
        "{stranger:?}"
    );
    assert!(
        stranger.iter().all(|l| !l.contains("no-such")),
        "{stranger:?}"
    );
    daemon.assert_log_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_document_later_is_served_stale_then_recovers() {
    let dir = world_dir();
    let (t1, k1, t2) = (token(0x5001), key_secret(5001), token(0x5002));
    let secrets = dir.path().join("secrets.json");
    fs::write(&secrets, secrets_json(&t1, &k1)).unwrap();
    let daemon = Daemon::start(dir.path(), &config("")).secrets(&[&t1, &k1, &t2]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut stream = client.watch("verify").await.unwrap();
    let first = next_message(&mut stream, "the first message").await;
    assert!(!first.stale);

    // A bad SID: the last good value stays, marked stale.
    replace_file(
        &secrets,
        &secrets_json(&t2, &k1).replace(AC, "AC-not-a-sid"),
    );
    let stale = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(stale.stale && stale.stale_since.is_some());
    assert_eq!(token_of(&stale), t1);
    let got = client.get("verify").await.unwrap();
    assert!(got.stale);
    // messaging's document is also bad now (same file), verify's error names it.
    // The log is written by a background thread: give it a moment.
    wait_until(
        Duration::from_secs(3),
        "an error naming the credential and field",
        || {
            daemon.log_text().lines().any(|l| {
                l.contains("ERROR")
                    && l.contains("credential `verify`")
                    && l.contains("account_sid")
            })
        },
    );

    // Fixed: served fresh again, without a restart.
    replace_file(&secrets, &secrets_json(&t2, &k1));
    let fixed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = stream.message().await.unwrap().unwrap();
            if !m.stale {
                return m;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(token_of(&fixed), t2);
    daemon.assert_log_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_and_directory_store_follows_kubernetes_symlink_swap() {
    let dir = world_dir();
    let (t1, t2, t3) = (token(0x6001), token(0x6002), token(0x6003));
    // The layout kubelet gives a secret volume: ..data -> ..<ts>, key -> ..data/key.
    let vol = dir.path().join("vol");
    fs::create_dir_all(vol.join("..2026_01")).unwrap();
    fs::write(vol.join("..2026_01/verify"), auth_token_doc(&t1)).unwrap();
    std::os::unix::fs::symlink("..2026_01", vol.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/verify", vol.join("verify")).unwrap();
    // Leases of 2 s: a watcher gets a renewal every second, which shows
    // what the daemon serves at that moment.
    let cfg = r#"
[server]
socket = "{socket}"
allow_root = true
[defaults]
refresh_interval = "1h"
lease_ttl = "2s"
[stores.vol]
type = "file"
path = "{dir}/vol"
[credentials.verify]
store = "vol"
path = "verify"
"#;
    let daemon = Daemon::start(dir.path(), cfg).secrets(&[&t1, &t2, &t3]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut stream = client.watch("verify").await.unwrap();
    let first = next_matching(
        &mut stream,
        Duration::from_secs(5),
        "the first value",
        |_| true,
    )
    .await;
    assert_eq!(token_of(&first), t1);

    // The kubelet's atomic update: new timestamped dir, swap ..data by rename.
    fs::create_dir_all(vol.join("..2026_02")).unwrap();
    fs::write(vol.join("..2026_02/verify"), auth_token_doc(&t2)).unwrap();
    std::os::unix::fs::symlink("..2026_02", vol.join("..data_tmp")).unwrap();
    fs::rename(vol.join("..data_tmp"), vol.join("..data")).unwrap();
    next_matching(
        &mut stream,
        Duration::from_secs(1),
        "the symlink swap within 1 s",
        |c| token_of(c) == t2,
    )
    .await;

    // A change inotify on the volume cannot see: the file inside the
    // timestamped directory rewritten in place (a subdirectory, watched
    // non-recursively), with refresh_interval an hour away. Two renewals
    // later (over a second, while the swap above arrived within one) the
    // daemon still serves the old value...
    fs::write(vol.join("..2026_02/verify"), auth_token_doc(&t3)).unwrap();
    for n in 0..2 {
        let renewal =
            next_matching(&mut stream, Duration::from_secs(3), "a renewal", |_| true).await;
        assert_eq!(
            token_of(&renewal),
            t2,
            "renewal {n} after the unseen change"
        );
    }
    // ...until SIGHUP re-reads every store.
    daemon.signal(rustix::process::Signal::HUP);
    let reread = next_matching(
        &mut stream,
        Duration::from_secs(2),
        "the value SIGHUP read",
        |c| token_of(c) == t3,
    )
    .await;
    assert_eq!(token_of(&reread), t3);
    // The log is written by a background thread: give it a moment.
    wait_until(Duration::from_secs(3), "the SIGHUP log line", || {
        daemon.log_text().contains("SIGHUP: re-reading every store")
    });
    assert_eq!(token_of(&client.get("verify").await.unwrap()), t3);
    daemon.assert_log_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_removes_socket_and_exits_zero() {
    let dir = world_dir();
    let (t1, k1) = (token(0x7001), key_secret(7001));
    fs::write(dir.path().join("secrets.json"), secrets_json(&t1, &k1)).unwrap();
    let mut daemon = Daemon::start(dir.path(), &config("")).secrets(&[&t1, &k1]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut stream = client.watch("verify").await.unwrap();
    next_message(&mut stream, "the first message").await;

    // Calls in flight from several tasks while SIGTERM arrives.
    let mut load = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        load.push(tokio::spawn(async move {
            let mut ok = 0u32;
            loop {
                match client.get("verify").await {
                    Ok(_) => ok += 1,
                    // After the drain starts: refused at connect (UNAVAILABLE), or
                    // CANCELLED by hyper for a request never written to the closed
                    // connection; never a call broken half-way (UNKNOWN/INTERNAL).
                    Err(e) => return (ok, e.code()),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    daemon.signal(rustix::process::Signal::TERM);

    // The watch stream ends with a clean UNAVAILABLE, not a transport error.
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the watch stream ended");
    let status = end.expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");

    let exit = tokio::task::spawn_blocking(move || {
        let status = daemon.wait_exit();
        (status, daemon)
    })
    .await
    .unwrap();
    let (status, daemon) = exit;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log_text());
    assert!(!daemon.socket.exists(), "the socket file is removed");
    // Every spawned task (refresh loops, watch streams, SIGHUP) was waited for.
    assert!(
        daemon.log_text().contains("every task stopped"),
        "shutdown did not wait for its tasks:\n{}",
        daemon.log_text()
    );
    for task in load {
        let (ok, code) = task.await.unwrap();
        assert!(ok > 0, "no call succeeded before the shutdown");
        assert!(
            matches!(code, Code::Unavailable | Code::Cancelled),
            "{code:?}"
        );
    }
    daemon.assert_log_clean();
}

#[test]
fn startup_errors_name_file_credential_and_field_and_exit_64() {
    let dir = world_dir();
    let (t1, k1) = (token(0x8001), key_secret(8001));
    let secrets = dir.path().join("secrets.json");

    // No config file.
    let out = cli(&["serve", "--config", "/nonexistent/credbroker.toml"], None);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("/nonexistent/credbroker.toml"),
        "{}",
        stderr(&out)
    );

    // An unknown key.
    let mut d = Daemon::spawn(dir.path(), &config("colour = \"blue\"\n"));
    assert_eq!(d.wait_exit().code(), Some(64));
    let log = d.log_text() + &fs::read_to_string(dir.path().join("daemon.out")).unwrap();
    assert!(
        log.contains("config.toml")
            && log.contains("credentials.messaging")
            && log.contains("colour"),
        "{log}"
    );

    // A bad SID in the document: names credential and field, never the value.
    fs::write(&secrets, secrets_json(&t1, &k1).replace(SK, "SKshort")).unwrap();
    let mut d = Daemon::spawn(dir.path(), &config("")).secrets(&[&t1, &k1]);
    assert_eq!(d.wait_exit().code(), Some(64));
    let log = d.log_text();
    assert!(
        log.contains("credential `messaging`") && log.contains("api_key_sid"),
        "{log}"
    );
    d.assert_no_secrets();

    // Malformed JSON.
    fs::write(
        &secrets,
        format!("{{\"twilio/verify\": {}", auth_token_doc(&t1)),
    )
    .unwrap();
    let mut d = Daemon::spawn(dir.path(), &config("")).secrets(&[&t1]);
    assert_eq!(d.wait_exit().code(), Some(64));
    assert!(d.log_text().contains("not valid JSON"), "{}", d.log_text());
    d.assert_no_secrets();

    // Unreadable secret file (missing).
    fs::remove_file(&secrets).unwrap();
    let mut d = Daemon::spawn(dir.path(), &config(""));
    assert_eq!(d.wait_exit().code(), Some(64));
    assert!(d.log_text().contains("secrets.json"), "{}", d.log_text());

    // Nothing started: no socket left behind.
    assert!(!dir.path().join("broker.sock").exists());
}

#[test]
fn check_config_reports_every_problem() {
    let dir = world_dir();
    let path = dir.path().join("c.toml");
    fs::write(
        &path,
        r#"
[server]
socket_mode = "0999"
[stores.s]
type = "file"
path = "x.json"
[credentials.a]
store = "missing"
path = "a"
[credentials.b]
store = "s"
path = "b"
lease_ttl = "10m"
[credentials.b.rotation]
schedule = "not cron"
grace = "5m"
"#,
    )
    .unwrap();
    let out = cli(
        &["check-config", "--config", &path.display().to_string()],
        None,
    );
    assert_eq!(out.status.code(), Some(64));
    let err = stderr(&out);
    for key in [
        "server.socket_mode",
        "credentials.a.store",
        "credentials.b.rotation.schedule",
        "credentials.b.rotation.grace",
    ] {
        assert!(
            err.contains(&format!("c.toml: `{key}`")),
            "{key} not reported:\n{err}"
        );
    }
    let out = cli(&["check-config", "--config", "examples/config.toml"], None);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn socket_path_held_by_a_regular_file_is_not_replaced() {
    let dir = world_dir();
    let (t1, k1) = (token(0x9001), key_secret(9001));
    fs::write(dir.path().join("secrets.json"), secrets_json(&t1, &k1)).unwrap();
    fs::write(dir.path().join("broker.sock"), "precious").unwrap();
    let mut d = Daemon::spawn(dir.path(), &config(""));
    assert_eq!(d.wait_exit().code(), Some(1));
    assert!(d.log_text().contains("not a socket"), "{}", d.log_text());
    assert_eq!(
        fs::read_to_string(dir.path().join("broker.sock")).unwrap(),
        "precious"
    );

    // A stale socket (nobody listening) is replaced.
    fs::remove_file(dir.path().join("broker.sock")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("broker.sock")).unwrap());
    let d = Daemon::start(dir.path(), &config(""));
    drop(d);
}

/// A live socket the daemon may not connect to (EACCES) is left alone:
/// only a socket that refuses connections (ECONNREFUSED) is stale.
#[test]
fn live_foreign_socket_is_not_replaced() {
    use std::os::unix::{fs::PermissionsExt, process::CommandExt};
    let dir = world_dir();
    let (t1, k1) = (token(0x9101), key_secret(9101));
    fs::write(dir.path().join("secrets.json"), secrets_json(&t1, &k1)).unwrap();
    fs::set_permissions(
        dir.path().join("secrets.json"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // A directory anyone may write (no sticky bit), and in it uid 65533's
    // live socket, mode 0600: uid 65532 cannot connect to it.
    let run = dir.path().join("run");
    fs::create_dir(&run).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o777)).unwrap();
    let sock = run.join("broker.sock");
    let mut foreign = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, socket, sys, time\n\
             s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o600)\n\
             s.listen(8); print('ready', flush=True); time.sleep(60)",
        ])
        .arg(&sock)
        .uid(65533)
        .gid(65533)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(foreign.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let cfg = config("")
        .replace("{socket}", &sock.display().to_string())
        .replace("{dir}", &dir.path().display().to_string())
        .replace("allow_root = true", "lock_memory = false");
    let cfg_path = dir.path().join("other-uid.toml");
    fs::write(&cfg_path, cfg).unwrap();
    fs::set_permissions(&cfg_path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut daemon = std::process::Command::new(shared_bin())
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .uid(65532)
        .gid(65532)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must stop at once; one still running after 10 s took the path.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while daemon.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = daemon.try_wait().unwrap().is_none();
    if started {
        daemon.kill().unwrap();
    }
    let out = daemon.wait_with_output().unwrap();
    let _ = foreign.kill();
    let _ = foreign.wait();
    assert!(
        !started,
        "the daemon replaced a live foreign socket and served"
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("may be in use; refusing to replace it"),
        "{}",
        stderr(&out)
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::symlink_metadata(&sock).unwrap().uid(),
        65533,
        "the foreign socket was replaced"
    );
}

#[test]
fn refuses_root_without_allow_root() {
    if !rustix::process::geteuid().is_root() {
        panic!("this suite runs as root (it spawns clients as other uids)");
    }
    let dir = world_dir();
    let (t1, k1) = (token(0xa001), key_secret(10001));
    fs::write(dir.path().join("secrets.json"), secrets_json(&t1, &k1)).unwrap();
    let mut d = Daemon::spawn(dir.path(), &config("").replace("allow_root = true", ""));
    assert_eq!(d.wait_exit().code(), Some(64));
    assert!(d.log_text().contains("allow_root"), "{}", d.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_services_and_rotation_admin_answers() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let dir = world_dir();
    let (t1, k1) = (token(0xb001), key_secret(11001));
    fs::write(dir.path().join("secrets.json"), secrets_json(&t1, &k1)).unwrap();
    let daemon = Daemon::start(dir.path(), &config("")).secrets(&[&t1, &k1]);
    let client = Client::connect(&daemon.socket).await.unwrap();

    let mut reflection = ServerReflectionClient::new(client.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        next_message(&mut responses, "the service list")
            .await
            .message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "credbroker.v1.CredentialBroker",
        "credbroker.v1.RotationAdmin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }

    // RotationAdmin (root is the daemon's uid, so on the default admin list)
    // refuses a credential that has no rotation table.
    let mut admin = proto::rotation_admin_client::RotationAdminClient::new(client.channel());
    let status = admin
        .rotate(proto::RotateRequest {
            name: "verify".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("not configured for rotation"),
        "{status:?}"
    );
    daemon.assert_log_clean();
}
