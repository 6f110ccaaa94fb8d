//! Prometheus /metrics, /healthz and /readyz on `metrics_addr`.

mod support;

use credbroker::client::Client;
use support::{services::*, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_denials_and_store_reads() {
    let port = free_port();
    let (dir, t1, cfg) = verify_world(
        0x6a01,
        &format!("metrics_addr = \"127.0.0.1:{port}\""),
        "[defaults]\nrefresh_interval = \"1s\"",
    );
    let daemon = Daemon::start(dir.path(), &cfg).secrets(&[&t1]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    for _ in 0..3 {
        client.get("verify").await.unwrap();
    }
    let sock = daemon.socket.display().to_string();
    let denied = cli(&["get", "verify", "--socket", &sock], Some((65533, 65533)));
    assert!(!denied.status.success());

    let base = format!("http://127.0.0.1:{port}");
    let (status, _) = http("GET", &format!("{base}/healthz"), None, &[]);
    assert_eq!(status, 200);
    let (status, body) = http("GET", &format!("{base}/readyz"), None, &[]);
    assert_eq!((status, body.trim()), (200, "ready"));
    let (status, text) = http("GET", &format!("{base}/metrics"), None, &[]);
    assert_eq!(status, 200);
    let line = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        line(r#"credbroker_calls_total{credential="verify",method="GetCredential",code="OK"}"#),
        3.0
    );
    assert_eq!(
        line(r#"credbroker_denied_peers_total{method="GetCredential",uid="65533"}"#),
        1.0
    );
    assert!(line(r#"credbroker_store_read_seconds_count{store="local"}"#) >= 1.0);
    assert_eq!(
        line(r#"credbroker_credential_stale{credential="verify"}"#),
        0.0
    );
    assert!(line(r#"credbroker_cache_age_seconds{credential="verify"}"#) < 60.0);
    assert!(!text.contains(&t1));

    // A broken document: the stale flag goes up, store errors are counted.
    replace_file(&dir.path().join("secrets.json"), "{ broken");
    wait_until(
        std::time::Duration::from_secs(10),
        "stale in /metrics",
        || {
            let (_, text) = http("GET", &format!("{base}/metrics"), None, &[]);
            text.contains(r#"credbroker_credential_stale{credential="verify"} 1"#)
        },
    );
    daemon.assert_log_clean();
}

/// Series lines (not comments) in a /metrics text.
fn series(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

/// Names the config does not define are counted under one label, so a
/// caller asking for ever new names cannot grow the registry; over-long
/// names are refused at the boundary, and caller text is cut in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_do_not_grow_the_metrics() {
    let port = free_port();
    let (dir, t1, cfg) = verify_world(0x6b01, &format!("metrics_addr = \"127.0.0.1:{port}\""), "");
    let daemon = Daemon::start(dir.path(), &cfg).secrets(&[&t1]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    // One unknown name first: its shared series exists from here on.
    assert!(client.get("no-such-0").await.is_err());
    let sock = daemon.socket.display().to_string();
    assert!(
        !cli(
            &["get", "stranger-0", "--socket", &sock],
            Some((65533, 65533))
        )
        .status
        .success()
    );
    let (_, before) = http("GET", &metrics, None, &[]);
    let before = series(&before).len();

    let mut askers = tokio::task::JoinSet::new();
    for t in 0..8 {
        let client = client.clone();
        askers.spawn(async move {
            for i in (1 + t..=10_000).step_by(8) {
                let e = client.get(&format!("no-such-{i}")).await.unwrap_err();
                assert!(e.to_string().starts_with("NotFound"), "{e}");
            }
        });
    }
    while let Some(done) = askers.join_next().await {
        done.unwrap();
    }
    // A peer on no allow list asking for names of its own: denied, and
    // still no new series.
    for i in 1..=5 {
        let out = cli(
            &["get", &format!("stranger-{i}"), "--socket", &sock],
            Some((65533, 65533)),
        );
        assert!(!out.status.success());
    }
    // Longest name accepted: 256 bytes; the log shows it cut.
    let long = "n".repeat(256);
    assert!(client.get(&long).await.is_err());
    let e = client.get(&"n".repeat(257)).await.unwrap_err();
    assert!(
        e.to_string().starts_with("InvalidArgument") && e.to_string().contains("at most 256 bytes"),
        "{e}"
    );
    // A request larger than the decoder takes is refused before it is read whole.
    let e = client.get(&"n".repeat(1 << 20)).await.unwrap_err();
    assert!(
        e.to_string().starts_with("OutOfRange") || e.to_string().starts_with("ResourceExhausted"),
        "{e}"
    );

    let (_, after) = http("GET", &metrics, None, &[]);
    let new: Vec<&str> = series(&after)
        .into_iter()
        .filter(|l| l.contains("no-such") || l.contains("stranger") || l.contains("nnnn"))
        .collect();
    assert!(new.is_empty(), "caller-chosen names became labels: {new:?}");
    assert_eq!(
        series(&after).len(),
        before,
        "10,000 unknown names changed the number of series"
    );
    assert!(
        after.contains(r#"credbroker_calls_total{credential="(unknown)",method="GetCredential",code="NOT_FOUND"}"#),
        "{after}"
    );
    // The log is written by a background thread: give it a moment.
    wait_until(
        std::time::Duration::from_secs(3),
        "the cut name in the log",
        || daemon.log_text().contains("…(256 bytes)"),
    );
    let log = daemon.log_text();
    assert!(!log.contains(&long), "a 256-byte name is in the log whole");
    assert!(
        log.contains("…(256 bytes)"),
        "the cut name is not in the log"
    );
}
