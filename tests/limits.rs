//! What a hostile local caller can make the daemon hold, bounded: floods
//! of connections (silent, or idle after the HTTP/2 preface) from a uid on
//! no allow list, with a low descriptor limit, leave an allowed caller
//! served within a second; watch streams are capped per uid.

mod support;

use std::{
    fs,
    io::{BufRead, BufReader},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use credbroker::client::Client;
use support::{services::*, *};

/// Descriptors the daemon may open: fewer than a flood's connections.
const NOFILE: u32 = 256;
/// Connections one uid may hold.
const PER_UID: usize = 16;

fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn rss_kb(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `count` connections from uid 65533 (on no allow list) in `mode` (see
/// tests/support/flood.py), held `hold` seconds: the child, once it has
/// opened them.
fn flood(dir: &Path, socket: &Path, count: usize, mode: &str, hold: u32) -> std::process::Child {
    flood_as(65533, dir, socket, count, mode, hold)
}

/// `flood` from `uid`.
fn flood_as(
    uid: u32,
    dir: &Path,
    socket: &Path,
    count: usize,
    mode: &str,
    hold: u32,
) -> std::process::Child {
    let script = dir.join("flood.py");
    fs::copy(repo().join("tests/support/flood.py"), &script).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(socket)
        .args([count.to_string(), mode.to_owned(), hold.to_string()])
        .uid(uid)
        .gid(uid)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 for the flood");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("opened "), "flood.py said {line:?}");
    child
}

/// The flood's summary once it has held its connections.
fn finish(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("flood.py printed {text:?}: {e}"))
}

/// An allowed GetCredential on a fresh connection, within a second.
async fn served_within_a_second(socket: &Path, token: &str) {
    let started = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(1), async {
        Client::connect(socket).await.unwrap().get("verify").await
    })
    .await
    .unwrap_or_else(|_| panic!("no answer within 1 s during the flood"))
    .unwrap();
    assert_eq!(secret_of(&got), token);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_leave_room_for_allowed_callers() {
    let port = free_port();
    let (dir, t1, cfg) = verify_world(
        0x7101,
        &format!(
            "metrics_addr = \"127.0.0.1:{port}\"\nmax_connections_per_uid = {PER_UID}\n\
             max_watches_per_uid = 8\npreface_timeout = \"1s\"\nidle_timeout = \"2s\""
        ),
        // uid 65532 may read `other`: an allowed caller, for the stream flood.
        "[credentials.other]\nstore = \"local\"\npath = \"verify\"\nallow = { uids = [65532] }\n",
    );
    // The daemon under a low descriptor limit, soft and hard.
    let low = dir.path().join("credbroker-lowfd");
    fs::write(
        &low,
        format!(
            "#!/bin/sh\nexec prlimit --nofile={NOFILE}:{NOFILE} {} \"$@\"\n",
            bin()
        ),
    )
    .unwrap();
    fs::set_permissions(&low, fs::Permissions::from_mode(0o755)).unwrap();
    let daemon =
        Daemon::spawn_bin(&low, dir.path(), &cfg, &[("CREDBROKER_LOG", "info")]).secrets(&[&t1]);
    daemon.wait_ready();
    let pid = daemon.pid();
    let fds_before = fd_count(pid);

    // Silent connections, more than the daemon has descriptors: all but
    // PER_UID are closed at once, those after preface_timeout.
    let silent = flood(dir.path(), &daemon.socket, 400, "silent", 3);
    served_within_a_second(&daemon.socket, &t1).await;
    let during = fd_count(pid);
    assert!(
        during <= fds_before + PER_UID + 4,
        "{during} descriptors open during the flood, {fds_before} before"
    );
    let summary = finish(silent);
    assert_eq!(
        summary["closed"], summary["opened"],
        "silent connections left open: {summary}"
    );

    // Connections that send the preface and then nothing: PER_UID are kept
    // (they are live HTTP/2 connections) until idle_timeout, every other
    // one is closed at once.
    let idle = flood(dir.path(), &daemon.socket, 400, "preface", 4);
    served_within_a_second(&daemon.socket, &t1).await;
    assert!(
        fd_count(pid) <= fds_before + PER_UID + 4,
        "{} descriptors open during the preface flood",
        fd_count(pid)
    );
    let summary = finish(idle);
    assert_eq!(
        summary["closed"], summary["opened"],
        "idle connections left open after idle_timeout: {summary}"
    );

    // Calls from a uid on no allow list are refused before their message
    // is read: the 60,000 bytes announced never come, yet each call is
    // answered at once.
    let unread = flood(dir.path(), &daemon.socket, 10, "unread", 1);
    served_within_a_second(&daemon.socket, &t1).await;
    let summary = finish(unread);
    assert_eq!(summary["opened"], 10, "{summary}");
    assert_eq!(
        summary["answered"], summary["opened"],
        "calls from a uid on no allow list waited for their message: {summary}"
    );
    let rss = rss_kb(pid);
    assert!(rss < 96 * 1024, "RSS {rss} kB after the floods");
    wait_until(Duration::from_secs(5), "descriptors back to normal", || {
        fd_count(pid) <= fds_before + 2
    });

    // Streams: an allowed uid opens 150 unfinished calls on each of four
    // connections. 100 per connection are held (max_streams_per_connection),
    // HTTP/2 refuses the rest, and the daemon still answers at once.
    let streams = flood_as(65532, dir.path(), &daemon.socket, 4, "streams", 2);
    served_within_a_second(&daemon.socket, &t1).await;
    let rss = rss_kb(pid);
    assert!(rss < 96 * 1024, "RSS {rss} kB during the stream flood");
    let summary = finish(streams);
    assert_eq!(
        summary["refused_streams"], 200,
        "streams past 100 per connection: {summary}"
    );

    // The metrics port: 300 requests that never finish their headers. The
    // listener holds 64 at a time and closes each after 5 s without
    // headers; the socket is not touched.
    let mut half_sent = Vec::new();
    for _ in 0..300 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Write;
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
            half_sent.push(s);
        }
    }
    served_within_a_second(&daemon.socket, &t1).await;
    assert!(
        fd_count(pid) <= fds_before + 64 + 4,
        "{} descriptors open during the metrics flood",
        fd_count(pid)
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let still_open = half_sent
        .iter()
        .filter(|s| {
            let mut s: &std::net::TcpStream = s;
            use std::io::Read;
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
        })
        .count();
    assert_eq!(
        still_open, 0,
        "half-sent metrics requests still open after 6 s"
    );
    drop(half_sent);
    let (status, _) = http(
        "GET",
        &format!("http://127.0.0.1:{port}/healthz"),
        None,
        &[],
    );
    assert_eq!(status, 200);

    // Watch streams per uid: the ninth is refused until one ends.
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut watches = Vec::new();
    for _ in 0..8 {
        watches.push(client.watch("verify").await.unwrap());
    }
    let Err(e) = client.watch("verify").await else {
        panic!("a ninth watch stream was accepted");
    };
    assert!(
        e.to_string().contains("ResourceExhausted")
            && e.to_string().contains("server.max_watches_per_uid"),
        "{e}"
    );
    drop(watches.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.watch("verify").await.is_err() {
        assert!(Instant::now() < deadline, "no watch slot freed up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let log = daemon.log_text();
    assert!(
        log.contains("connection refused: server.max_connections_per_uid reached"),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("credbroker::audit")
            && l.contains("peer_uid=65533")
            && l.contains("\"ValidateWebhook\"")
            && l.contains("\"denied\"")),
        "no audit line for the refused calls"
    );
}
