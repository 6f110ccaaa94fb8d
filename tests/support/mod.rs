//! Shared helpers for the end-to-end tests: a real `credbroker serve`
//! process on a real socket, with its TRACE log captured for secret checks.

#![allow(dead_code)]

pub mod faults;
pub mod services;
pub mod twilio;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use credbroker::client::Client;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_credbroker")
}

pub const AC: &str = "AC0123456789abcdef0123456789abcdef";
pub const SK: &str = "SK0123456789abcdef0123456789abcdef";

/// An Auth Token made of `digit` (each test's secrets are distinct and greppable).
pub fn token(seed: u32) -> String {
    format!("{seed:08x}").repeat(4)
}

/// An API Key Secret.
pub fn key_secret(seed: u32) -> String {
    format!("Secret{seed:010}Zz{seed:014}")
}

pub fn auth_token_doc(token: &str) -> String {
    format!(r#"{{"account_sid":"{AC}","auth_token":"{token}"}}"#)
}

pub fn api_key_doc(secret: &str) -> String {
    format!(r#"{{"accountSid":"{AC}","apiKeySid":"{SK}","apiKeySecret":"{secret}"}}"#)
}

/// Writes `contents` to `path` atomically (write + rename), as editors and
/// config managers do.
pub fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp-write");
    fs::write(&tmp, contents).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// A scratch directory other uids can enter (tests run as root).
pub fn world_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A world-readable directory whose `secrets.json` holds one credential,
/// `verify` (an Auth Token made from `seed`), and a config serving it on a
/// socket every uid may connect to, as root: `server` is added under
/// `[server]`, `tables` after it. The token and the config text.
#[allow(dead_code)]
pub fn verify_world(seed: u32, server: &str, tables: &str) -> (tempfile::TempDir, String, String) {
    let dir = world_dir();
    let t1 = token(seed);
    fs::write(
        dir.path().join("secrets.json"),
        format!(r#"{{"verify": {}}}"#, auth_token_doc(&t1)),
    )
    .unwrap();
    let cfg = format!(
        r#"
[server]
socket = "{{socket}}"
socket_mode = "0666"
allow_root = true
{server}
{tables}
[stores.local]
type = "file"
path = "{{dir}}/secrets.json"
[credentials.verify]
store = "local"
path = "verify"
"#
    );
    (dir, t1, cfg)
}

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
    secrets: Vec<String>,
}

impl Daemon {
    /// Writes `config` (with `{socket}` and `{dir}` substituted) into `dir`,
    /// starts `credbroker serve` at TRACE level and waits until it answers
    /// health checks.
    pub fn start(dir: &Path, config: &str) -> Daemon {
        Daemon::start_env(dir, config, &[])
    }

    /// `start` with extra environment variables for the daemon.
    pub fn start_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        let daemon = Daemon::spawn_env(dir, config, env);
        daemon.wait_ready();
        daemon
    }

    /// Like `start`, without waiting.
    pub fn spawn(dir: &Path, config: &str) -> Daemon {
        Daemon::spawn_env(dir, config, &[])
    }

    /// Like `start_env`, without waiting.
    pub fn spawn_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn_bin(Path::new(bin()), dir, config, env)
    }

    /// As `spawn_env`, with another build of the daemon (a control build).
    pub fn spawn_bin(bin: &Path, dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        let socket = dir.join("broker.sock");
        let text = config
            .replace("{socket}", &socket.display().to_string())
            .replace("{dir}", &dir.display().to_string());
        let config = dir.join("config.toml");
        fs::write(&config, text).unwrap();
        let log = dir.join("daemon.log");
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config)
            .env("CREDBROKER_LOG", "trace")
            .env_remove("RUST_LOG")
            .env_remove("CREDBROKER_SOCKET")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("daemon.out")).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawning credbroker serve");
        Daemon {
            child,
            socket,
            log,
            config,
            secrets: Vec::new(),
        }
    }

    /// Registers values that must never appear in the daemon's log.
    pub fn secrets(mut self, secrets: &[&str]) -> Daemon {
        self.secrets.extend(secrets.iter().map(|s| s.to_string()));
        self
    }

    pub fn add_secret(&mut self, secret: &str) {
        self.secrets.push(secret.to_owned());
    }

    /// Polls until the daemon answers SERVING; panics with its log if it exits.
    pub fn wait_ready(&self) {
        // Its own thread and runtime, so async tests can call it too.
        std::thread::scope(|s| s.spawn(|| self.poll_ready()).join().unwrap());
    }

    fn poll_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        loop {
            // Ready means SERVING; an answer of NOT_SERVING is not enough.
            if let Ok(client) = rt.block_on(Client::connect(&self.socket))
                && let Ok(status) = rt.block_on(client.health())
                && status == tonic_health::pb::health_check_response::ServingStatus::Serving
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "credbroker did not become ready; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_raw(self.pid()).unwrap(), signal)
            .unwrap();
    }

    /// Waits for the daemon to exit (up to 30 s).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "credbroker did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts that no registered secret (see `secret_leak`) is in the log,
    /// and that the log is a real TRACE log (so the check means something).
    pub fn assert_log_clean(&self) {
        let log = self.log_text();
        assert!(
            log.contains("TRACE"),
            "the daemon did not log at TRACE:\n{log}"
        );
        self.assert_no_secrets();
    }

    /// Asserts that no registered secret, raw or inside any base64 text
    /// (an `Authorization: Basic` header among them), is in the log.
    pub fn assert_no_secrets(&self) {
        let log = self.log_text();
        for secret in &self.secrets {
            if let Some(how) = secret_leak(&log, secret) {
                panic!("a secret value appears in the daemon's log ({how})");
            }
        }
    }

    /// `assert_log_clean`, and the log holds TRACE lines of the HTTP layers
    /// (hyper, h2, reqwest), so the scan is proven to have covered them.
    pub fn assert_http_log_clean(&self) {
        let log = self.log_text();
        let missing = missing_trace_targets(&log, HTTP_TARGETS);
        assert!(
            missing.is_empty(),
            "the daemon's log has no TRACE lines from {missing:?}: the secret scan did not cover those layers"
        );
        self.assert_log_clean();
    }
}

/// The HTTP layers whose TRACE lines a scanned log must hold.
pub const HTTP_TARGETS: &[&str] = &["hyper", "h2", "reqwest"];

/// Which of `targets` (crate names) have no TRACE line in `log`.
pub fn missing_trace_targets<'a>(log: &str, targets: &[&'a str]) -> Vec<&'a str> {
    targets
        .iter()
        .copied()
        .filter(|t| {
            !log.lines().any(|l| {
                l.contains(" TRACE ")
                    && (l.contains(&format!(" {t}::")) || l.contains(&format!(" {t}_util::")))
            })
        })
        .collect()
}

/// How `secret` appears in `text`, if it does: raw, or base64-encoded at
/// any of the three byte alignments, so that it is found inside the base64
/// of a longer string such as `SID:secret` (an `Authorization: Basic`
/// header). Only the base64 characters that depend on the secret's bytes
/// alone are searched for.
pub fn secret_leak(text: &str, secret: &str) -> Option<String> {
    if text.contains(secret) {
        return Some("raw".into());
    }
    let n = secret.len();
    for k in 0..3 {
        let mut bytes = vec![b':'; k];
        bytes.extend_from_slice(secret.as_bytes());
        let encoded = base64_encode(&bytes);
        // Character i carries bits 6i..6i+6; keep those within the secret's
        // bits 8k..8(k+n).
        let (start, end) = ((8 * k).div_ceil(6), (8 * (k + n)) / 6);
        if end > start + 4 && text.contains(&encoded[start..end]) {
            return Some(format!("base64 at alignment {k}"));
        }
    }
    None
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A copy of the binary that any uid can execute, wherever the build lives
/// (a target dir under /root is not reachable by other users).
pub fn shared_bin() -> &'static Path {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let dir = std::env::temp_dir().join("credbroker-test-bin");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        // One file reused by every run, replaced atomically.
        let tmp = dir.join(format!("credbroker.{}.tmp", std::process::id()));
        fs::copy(bin(), &tmp).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("credbroker");
        fs::rename(&tmp, &copy).unwrap();
        copy
    })
}

/// Runs the CLI with `args`, optionally as another uid/gid.
pub fn cli(args: &[&str], as_user: Option<(u32, u32)>) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(if as_user.is_some() {
        shared_bin()
    } else {
        Path::new(bin())
    });
    cmd.args(args)
        .env_remove("CREDBROKER_SOCKET")
        .stdin(Stdio::null());
    if let Some((uid, gid)) = as_user {
        cmd.uid(uid).gid(gid);
    }
    cmd.output().expect("running the credbroker CLI")
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

/// Polls `check` until it returns true, or panics with `what` after `timeout`.
/// For conditions in other processes, where tokio's paused clock cannot reach.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The next message on `stream` that satisfies `pred`, within `timeout`.
pub async fn next_matching(
    stream: &mut tonic::Streaming<credbroker::proto::Credential>,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&credbroker::proto::Credential) -> bool,
) -> credbroker::proto::Credential {
    tokio::time::timeout(timeout, async {
        loop {
            let m = stream
                .message()
                .await
                .unwrap_or_else(|e| panic!("watch failed while waiting for {what}: {e}"))
                .unwrap_or_else(|| panic!("watch ended while waiting for {what}"));
            if pred(&m) {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The secret of a wire credential (Auth Token, API Key Secret or bearer token).
pub fn secret_of(c: &credbroker::proto::Credential) -> &str {
    use credbroker::proto::credential::Secret;
    match &c.secret {
        Some(Secret::AuthToken(t)) => &t.token,
        Some(Secret::ApiKey(k)) => &k.secret,
        Some(Secret::Bearer(b)) => &b.access_token,
        None => "",
    }
}

/// Waits until GetCredential for `name` satisfies `pred` (Ok or Err).
pub async fn get_until(
    client: &credbroker::client::Client,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Result<credbroker::proto::Credential, credbroker::client::ClientError>) -> bool,
) -> Result<credbroker::proto::Credential, credbroker::client::ClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let r = client.get(name).await;
        if pred(&r) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: last {:?}",
            r.as_ref()
                .map(|c| c.version.clone())
                .map_err(|e| e.to_string())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until GetCredential for `name` fails; the error.
pub async fn get_err(
    client: &credbroker::client::Client,
    name: &str,
    timeout: Duration,
    what: &str,
) -> credbroker::client::ClientError {
    get_until(client, name, timeout, what, |r| r.is_err())
        .await
        .unwrap_err()
}

/// Waits until GetCredential for `name` succeeds, stale or not.
pub async fn get_ok(
    client: &credbroker::client::Client,
    name: &str,
    timeout: Duration,
    what: &str,
) -> credbroker::proto::Credential {
    get_until(client, name, timeout, what, |r| r.is_ok())
        .await
        .unwrap()
}

/// Waits until GetCredential for `name` serves a value that is not stale.
pub async fn get_fresh(
    client: &credbroker::client::Client,
    name: &str,
    timeout: Duration,
    what: &str,
) -> credbroker::proto::Credential {
    get_until(client, name, timeout, what, |r| {
        r.as_ref().is_ok_and(|c| !c.stale)
    })
    .await
    .unwrap()
}

/// The first answer for `name` that is served stale, within `timeout`.
pub async fn get_stale(
    client: &credbroker::client::Client,
    name: &str,
    timeout: Duration,
    what: &str,
) -> credbroker::proto::Credential {
    get_until(client, name, timeout, what, |r| {
        r.as_ref().is_ok_and(|c| c.stale)
    })
    .await
    .unwrap()
}

/// `name` is served stale with `secret` within 5 s, then fails within 10 s
/// more, UNAVAILABLE, naming every one of `parts` (a store refusal that
/// lasts past `max_stale`).
pub async fn stale_then_unavailable(
    client: &credbroker::client::Client,
    name: &str,
    secret: &str,
    parts: &[&str],
) {
    let stale = get_stale(client, name, Duration::from_secs(5), "stale while refused").await;
    assert_eq!(secret_of(&stale), secret);
    let err = get_err(
        client,
        name,
        Duration::from_secs(10),
        "unavailable past max_stale",
    )
    .await;
    assert_unavailable_naming(&err, parts);
}

/// `err` is UNAVAILABLE and its message names every one of `parts`.
pub fn assert_unavailable_naming(err: &credbroker::client::ClientError, parts: &[&str]) {
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    let msg = err.to_string();
    assert!(
        parts.iter().all(|p| msg.contains(p)),
        "{msg}: should name {parts:?}"
    );
}

/// How long a test waits for the next message of a stream.
pub const STREAM_WAIT: Duration = Duration::from_secs(10);

/// The next message of `stream`, or a panic naming `what` when none comes
/// within `STREAM_WAIT`, the stream fails or it ends: a missing event fails
/// the test instead of hanging it.
pub async fn next_message<T>(stream: &mut tonic::Streaming<T>, what: &str) -> T {
    tokio::time::timeout(STREAM_WAIT, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no message within {STREAM_WAIT:?} while waiting for {what}"))
        .unwrap_or_else(|e| panic!("the stream failed while waiting for {what}: {e}"))
        .unwrap_or_else(|| panic!("the stream ended while waiting for {what}"))
}
