//! The benchmark's load generator (examples/loadgen.rs), run small: its
//! three modes work and what they must show holds — every call answered and
//! audited, a change reaching every watcher, and a full rotation under
//! concurrent load with zero failed calls and no lease outliving its key.
//! No timing is asserted here; speed is the benchmark's business
//! (scripts/bench, docs/benchmarks.md).

use std::path::PathBuf;

fn loadgen() -> PathBuf {
    // target/debug/deps/loadgen-HASH -> target/debug/examples/loadgen
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples/loadgen"))
        .unwrap();
    assert!(
        path.exists(),
        "{} is missing: scripts/test-all builds it (`cargo build --examples`); cargo test alone builds examples only as test harnesses",
        path.display()
    );
    path
}

fn run(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(loadgen())
        .args(["--bin", env!("CARGO_BIN_EXE_credbroker")])
        .args(args)
        .output()
        .expect("run loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen {args:?} failed:\n{stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "loadgen {args:?} printed no JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn get_load_is_answered_and_audited_call_for_call() {
    let r = run(&[
        "--credentials",
        "50",
        "--in-flight",
        "8",
        "--channels",
        "2",
        "--seconds",
        "1",
    ]);
    let d = &r["daemon"];
    let calls = d["calls"].as_u64().unwrap();
    assert!(calls > 100, "too few calls to mean anything: {r}");
    assert_eq!(d["errors"], 0, "{r}");
    assert_eq!(
        d["audit_lines"].as_u64(),
        Some(calls),
        "one audit event per call: {r}"
    );
    assert!(r["floor"]["calls"].as_u64().unwrap() > 100, "{r}");
    assert!(d["rss_kb"].as_u64().unwrap() > 0 && r["ratio"]["throughput"].as_f64().unwrap() > 0.0);
    // The figures scripts/bench tabulates are there.
    assert!(r["ratio"]["cpu_per_call"].as_f64().unwrap() > 0.0, "{r}");
    assert!(d["rss_anon_kb_idle"].as_u64().unwrap() > 0, "{r}");
    assert!(
        d["heap_in_use_bytes_after_start"].as_u64().unwrap() > 0,
        "the daemon logs its heap once serving: {r}"
    );
    assert!(
        r["floor"]["server_cores_busy"].as_f64().unwrap() > 0.0,
        "{r}"
    );
}

#[test]
fn a_change_reaches_every_watcher() {
    let r = run(&["--credentials", "20", "--watchers", "300", "--changes", "2"]);
    assert_eq!(r["reached_all"], true, "{r}");
    assert!(r["heap_bytes_per_stream"].as_f64().is_some(), "{r}");
    for round in r["rounds"].as_array().unwrap() {
        assert_eq!(round["reached"], 300, "{r}");
    }
}

#[test]
fn rotation_under_concurrent_load_fails_no_call() {
    let r = run(&[
        "--credentials",
        "10",
        "--in-flight",
        "16",
        "--channels",
        "4",
        "--rotate",
    ]);
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["new_keys"], 1, "exactly one rotation: {r}");
    assert!(r["calls_with_old_key"].as_u64().unwrap() > 0, "{r}");
    assert!(r["calls_with_new_key"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["old_key_leases_outlived_it"], false, "{r}");
    assert_eq!(r["keys_at_twilio_after"], 1, "{r}");
    assert_eq!(r["ok"], true, "{r}");
}
