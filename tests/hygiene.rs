//! Secret hygiene you can verify: after a credential is replaced and the
//! old value's leases have ended, its bytes (raw and base64) are nowhere in
//! the daemon's memory, read through /proc/PID/maps and /proc/PID/mem — while
//! the new value is (so the scan demonstrably works). Also: running as root
//! needs `allow_root`, and a refused mlock is a warning, not a failure.

mod support;

use std::{
    fs,
    io::{BufRead, BufReader},
    os::unix::fs::{FileExt, PermissionsExt},
    time::Duration,
};

use std::os::unix::process::CommandExt;

use credbroker::client::Client;
use support::{services::*, *};

/// Occurrences of `needle` in every readable mapping of process `pid`.
fn count_in_memory(pid: i32, needle: &[u8]) -> usize {
    let maps = fs::File::open(format!("/proc/{pid}/maps")).unwrap();
    let mem = fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut found = 0;
    for line in BufReader::new(maps).lines() {
        let line = line.unwrap();
        let mut parts = line.split_whitespace();
        let (range, perms) = (parts.next().unwrap(), parts.next().unwrap());
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        let mut buf = vec![0u8; (end - start) as usize];
        // Some mappings (guard pages, device memory) cannot be read: skip them.
        let Ok(n) = mem.read_at(&mut buf, start) else {
            continue;
        };
        found += buf[..n]
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count();
    }
    found
}

/// S1 is gone from the daemon's memory, S2 is there.
fn assert_only_new_in_memory(daemon: &Daemon, old: &str, new: &str) {
    let pid = daemon.pid();
    assert!(
        count_in_memory(pid, new.as_bytes()) > 0,
        "the scan does not find the live secret: it proves nothing"
    );
    assert_eq!(
        count_in_memory(pid, old.as_bytes()),
        0,
        "the replaced secret is still in the daemon's memory"
    );
    let b64 = base64_encode(old.as_bytes());
    assert_eq!(
        count_in_memory(pid, b64.trim_end_matches('=').as_bytes()),
        0,
        "the replaced secret is in memory as base64"
    );
}

fn config(store: &str, extra: &str) -> String {
    format!(
        r#"
[server]
socket = "{{socket}}"
allow_root = true

[defaults]
lease_ttl = "2s"
refresh_interval = "1s"
max_stale = "1m"

{store}

[credentials.verify]
store = "s"
path = "twilio/verify"
{extra}"#
    )
}

/// Many fetches of S1 on one connection, and a watch; then the connection
/// closes, S2 replaces S1 (by `replace`), S1's last lease ends.
async fn churn(daemon: &Daemon, old: &str, new: &str, replace: impl FnOnce()) {
    {
        let client = Client::connect(&daemon.socket).await.unwrap();
        let mut watch = client.watch("verify").await.unwrap();
        for _ in 0..200 {
            assert_eq!(secret_of(&client.get("verify").await.unwrap()), old);
        }
        replace();
        next_matching(&mut watch, Duration::from_secs(10), "the new value", |c| {
            secret_of(c) == new
        })
        .await;
    }
    // S1's last lease (2 s) runs out; then one fresh fetch of S2.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let client = Client::connect(&daemon.socket).await.unwrap();
    assert_eq!(secret_of(&client.get("verify").await.unwrap()), new);
}

/// The file-store churn, on daemon build `bin`: the daemon, still running.
async fn file_store_churn(
    dir: &std::path::Path,
    bin: &std::path::Path,
    s1: &str,
    s2: &str,
) -> Daemon {
    let file = dir.join("secrets.json");
    fs::write(
        &file,
        format!(r#"{{"twilio/verify": {}}}"#, auth_token_doc(s1)),
    )
    .unwrap();
    let store = "[stores.s]\ntype = \"file\"\npath = \"{dir}/secrets.json\"";
    let daemon = Daemon::spawn_bin(bin, dir, &config(store, ""), &[]).secrets(&[s1, s2]);
    daemon.wait_ready();
    churn(&daemon, s1, s2, || {
        replace_file(
            &file,
            &format!(r#"{{"twilio/verify": {}}}"#, auth_token_doc(s2)),
        )
    })
    .await;
    daemon
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_secret_leaves_no_trace_in_memory_file_store() {
    let dir = world_dir();
    let (s1, s2) = (token(0x5e01), token(0x5e02));
    let daemon = file_store_churn(dir.path(), std::path::Path::new(bin()), &s1, &s2).await;
    assert_only_new_in_memory(&daemon, &s1, &s2);
    let log = daemon.log_text();
    assert!(log.contains("memory_locked=true"), "root may mlock: {log}");
    assert!(
        !log.contains("built without the zeroizing allocator"),
        "the suite's daemon must be the shipped build: {log}"
    );
}

/// The control of the memory scan: the same churn on a build without the
/// zeroizing allocator (`--no-default-features --features vault`, which
/// scripts/test-all builds as `credbroker-noalloc` next to the test build)
/// leaves the old secret in freed heap memory, and the scan must find it.
/// Without that build the test fails: it never skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_zeroizing_allocator_the_scan_finds_the_old_secret() {
    let control = std::env::var_os("CREDBROKER_NOALLOC_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(bin()).with_file_name("credbroker-noalloc"));
    assert!(
        control.exists(),
        "{} is missing: scripts/test-all builds it (cargo build --bin credbroker \
         --no-default-features --features vault, copied to credbroker-noalloc); \
         or set CREDBROKER_NOALLOC_BIN",
        control.display()
    );
    let dir = world_dir();
    let (s1, s2) = (token(0x5e11), token(0x5e12));
    let daemon = file_store_churn(dir.path(), &control, &s1, &s2).await;
    assert!(
        daemon
            .log_text()
            .contains("built without the zeroizing allocator"),
        "{} is not a build without the allocator",
        control.display()
    );
    // Freed memory is reused at random: one replaced value may be
    // overwritten by luck (it was once, under a loaded cold run). Three
    // replaced values, of which at least one must linger, make that luck
    // rare enough not to matter.
    let file = dir.path().join("secrets.json");
    let (s3, s4) = (token(0x5e13), token(0x5e14));
    for (old, new) in [(&s2, &s3), (&s3, &s4)] {
        churn(&daemon, old, new, || {
            replace_file(
                &file,
                &format!(r#"{{"twilio/verify": {}}}"#, auth_token_doc(new)),
            )
        })
        .await;
    }
    let pid = daemon.pid();
    assert!(count_in_memory(pid, s4.as_bytes()) > 0);
    let lingering: Vec<usize> = [&s1, &s2, &s3]
        .iter()
        .map(|old| count_in_memory(pid, old.as_bytes()))
        .collect();
    assert!(
        lingering.iter().any(|n| *n > 0),
        "without the zeroizing allocator a replaced secret should linger in freed memory; \
         the scan found no copy of any of three ({lingering:?}), so it could not tell the \
         allocator's work from luck"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_secret_leaves_no_trace_in_memory_aws() {
    use aws_sdk_secretsmanager::config::{Credentials, Region};
    let dir = world_dir();
    let moto = Service::moto(dir.path());
    let sm = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .endpoint_url(moto.url())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .build(),
    );
    let (s1, s2) = (token(0x5f01), token(0x5f02));
    sm.create_secret()
        .name("twilio/verify")
        .secret_string(auth_token_doc(&s1))
        .send()
        .await
        .unwrap();
    let store = format!(
        "[stores.s]\ntype = \"aws_secrets_manager\"\nregion = \"us-east-1\"\nendpoint_url = \"{}\"",
        moto.url()
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let daemon = Daemon::start_env(dir.path(), &config(&store, ""), &env).secrets(&[&s1, &s2]);
    let rt = tokio::runtime::Handle::current();
    churn(&daemon, &s1, &s2, || {
        let sm = sm.clone();
        let s2 = s2.clone();
        tokio::task::block_in_place(|| {
            rt.block_on(async move {
                // A fresh secret version via the AWS way of staging.
                let current = sm
                    .describe_secret()
                    .secret_id("twilio/verify")
                    .send()
                    .await
                    .unwrap();
                let old = current
                    .version_ids_to_stages
                    .unwrap()
                    .into_iter()
                    .find(|(_, s)| s.iter().any(|s| s == "AWSCURRENT"))
                    .unwrap()
                    .0;
                let new = sm
                    .put_secret_value()
                    .secret_id("twilio/verify")
                    .secret_string(auth_token_doc(&s2))
                    .version_stages("AWSPENDING")
                    .send()
                    .await
                    .unwrap()
                    .version_id
                    .unwrap();
                sm.update_secret_version_stage()
                    .secret_id("twilio/verify")
                    .version_stage("AWSCURRENT")
                    .move_to_version_id(new)
                    .remove_from_version_id(old)
                    .send()
                    .await
                    .unwrap();
            })
        })
    })
    .await;
    assert_only_new_in_memory(&daemon, &s1, &s2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_secret_leaves_no_trace_in_memory_openbao_kv2() {
    let dir = world_dir();
    let bao = OpenBao::start(dir.path(), "1h", "24h");
    let (s1, s2) = (token(0x5d01), token(0x5d02));
    bao.put_v2("twilio/verify", &auth_token_doc(&s1));
    let store = format!(
        "[stores.s]\ntype = \"vault\"\naddress = \"{}\"\nmount = \"secret\"\nkv_version = 2\nauth = {{ method = \"approle\", role_id_file = \"{d}/role_id\", secret_id_file = \"{d}/secret_id\" }}",
        bao.url(),
        d = bao.dir.display()
    );
    let daemon = Daemon::start(dir.path(), &config(&store, "")).secrets(&[&s1, &s2]);
    churn(&daemon, &s1, &s2, || {
        bao.put_v2("twilio/verify", &auth_token_doc(&s2))
    })
    .await;
    assert_only_new_in_memory(&daemon, &s1, &s2);
}

/// An `oauth_client`'s bearer token, once replaced by the next one and no
/// longer leased, is gone from memory too (the fake's tokens live 6 s: the
/// daemon fetches the next at 4 s). The client secret stays: it is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_bearer_token_leaves_no_trace_in_memory() {
    let dir = world_dir();
    let fake = Service::python_fake("twilio_fake.py", dir.path(), &[]);
    let post = |what: &str, body: serde_json::Value| {
        support::twilio::fake_post(&fake, what, &body.to_string())
    };
    let ac = "AC0123456789abcdef0123456789abcdef";
    let (client_id, client_secret) = (
        "OQ0123456789abcdef0123456789abcdef",
        "Hygienic-Client-Secret-42",
    );
    post("accounts", serde_json::json!({"sid": ac}));
    post(
        "oauth_apps",
        serde_json::json!({"account_sid": ac, "client_id": client_id, "client_secret": client_secret}),
    );
    post("oauth", serde_json::json!({"ttl": 6}));
    fs::write(
        dir.path().join("secrets.json"),
        serde_json::json!({"twilio/verify": {"account_sid": ac, "client_id": client_id, "client_secret": client_secret}})
            .to_string(),
    )
    .unwrap();
    let store = "[stores.s]\ntype = \"file\"\npath = \"{dir}/secrets.json\"";
    let cfg = config(store, "").replace(
        "[defaults]",
        &format!("[twilio]\noauth_base = \"{}\"\n\n[defaults]", fake.url()),
    );
    let mut daemon = Daemon::start(dir.path(), &cfg).secrets(&[client_secret]);
    let old = {
        let client = Client::connect(&daemon.socket).await.unwrap();
        let mut watch = client.watch("verify").await.unwrap();
        let old = secret_of(&next_message(&mut watch, "the first token").await).to_owned();
        for _ in 0..200 {
            assert_eq!(secret_of(&client.get("verify").await.unwrap()), old);
        }
        next_matching(&mut watch, Duration::from_secs(10), "the next token", |c| {
            secret_of(c) != old
        })
        .await;
        old
    };
    daemon.add_secret(&old);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let new = secret_of(&client.get("verify").await.unwrap()).to_owned();
    daemon.add_secret(&new);
    assert_only_new_in_memory(&daemon, &old, &new);
    assert!(
        count_in_memory(daemon.pid(), client_secret.as_bytes()) > 0,
        "the scan does not find the live client secret"
    );
    daemon.assert_no_secrets();
}

#[test]
fn root_needs_allow_root_and_a_refused_mlock_only_warns() {
    let dir = world_dir();
    let s1 = token(0x5c01);
    fs::write(
        dir.path().join("secrets.json"),
        format!(r#"{{"twilio/verify": {}}}"#, auth_token_doc(&s1)),
    )
    .unwrap();
    let store = "[stores.s]\ntype = \"file\"\npath = \"{dir}/secrets.json\"";
    let mut d = Daemon::spawn(
        dir.path(),
        &config(store, "").replace("allow_root = true", ""),
    );
    assert_eq!(d.wait_exit().code(), Some(64));
    assert!(
        d.log_text().contains("refusing to run as root") && d.log_text().contains("allow_root"),
        "{}",
        d.log_text()
    );

    // As uid 65534 (allowed explicitly) with RLIMIT_MEMLOCK 0: mlockall is
    // refused; it warns and serves.
    let run = dir.path().join("run");
    fs::create_dir_all(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(
        dir.path().join("secrets.json"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let cfg = config(store, "allow = { uids = [65534, 0] }")
        .replace("{socket}", &run.join("broker.sock").display().to_string())
        .replace("{dir}", &dir.path().display().to_string());
    let cfg_path = dir.path().join("nobody.toml");
    let as_nobody = |cfg: &str| {
        fs::write(&cfg_path, cfg).unwrap();
        fs::set_permissions(&cfg_path, fs::Permissions::from_mode(0o644)).unwrap();
        std::process::Command::new(shared_bin())
            .args(["serve", "--config"])
            .arg(&cfg_path)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    // 65534 is the kernel's overflow uid: every unmapped peer shows as it,
    // so the daemon refuses it unless the config says so.
    let refused = as_nobody(&cfg);
    assert_eq!(refused.status.code(), Some(64), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("the kernel's overflow uid")
            && stderr(&refused).contains("allow_overflow_uid = true"),
        "{}",
        stderr(&refused)
    );
    let cfg = cfg.replace(
        "allow_root = true",
        "allow_root = true\nallow_overflow_uid = true",
    );
    fs::write(&cfg_path, cfg).unwrap();
    let log = dir.path().join("nobody.log");
    let mut child = std::process::Command::new("prlimit")
        .arg("--memlock=0:0")
        .arg(shared_bin())
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .env("CREDBROKER_LOG", "info")
        .stderr(fs::File::create(&log).unwrap())
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    let sock = run.join("broker.sock");
    wait_until(
        Duration::from_secs(20),
        "the unprivileged daemon to serve",
        || {
            cli(&["health", "--socket", &sock.display().to_string()], None)
                .status
                .success()
        },
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cannot lock memory") && text.contains("lock_memory = false"),
        "{text}"
    );
    let out = cli(
        &["get", "verify", "--socket", &sock.display().to_string()],
        Some((65534, 65534)),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `VAULT_TOKEN` is taken out of the environment at start: not in
/// /proc/PID/environ, and (with a store that does not use it) nowhere in the
/// daemon's memory, while the served credential is (so the scan works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_token_leaves_the_environment_and_memory() {
    let dir = world_dir();
    let s1 = token(0x5d01);
    let vault_token = format!("hvs.{}", token(0x5d02));
    fs::write(
        dir.path().join("secrets.json"),
        format!(r#"{{"twilio/verify": {}}}"#, auth_token_doc(&s1)),
    )
    .unwrap();
    let store = "[stores.s]\ntype = \"file\"\npath = \"{dir}/secrets.json\"";
    let daemon = Daemon::spawn_env(
        dir.path(),
        &config(store, ""),
        &[("VAULT_TOKEN", &vault_token)],
    )
    .secrets(&[&s1, &vault_token]);
    daemon.wait_ready();
    let client = Client::connect(&daemon.socket).await.unwrap();
    assert_eq!(secret_of(&client.get("verify").await.unwrap()), s1);
    let pid = daemon.pid();
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !environ
            .windows(vault_token.len())
            .any(|w| w == vault_token.as_bytes()),
        "VAULT_TOKEN is still in /proc/{pid}/environ"
    );
    assert!(
        count_in_memory(pid, s1.as_bytes()) > 0,
        "the scan does not find the live secret: it proves nothing"
    );
    assert_eq!(
        count_in_memory(pid, vault_token.as_bytes()),
        0,
        "VAULT_TOKEN is still in the daemon's memory"
    );
}
