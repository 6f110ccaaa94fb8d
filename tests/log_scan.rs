//! Controls for the log scan of tests/support (`secret_leak`,
//! `missing_trace_targets`): each proves the check can fail, on text built
//! the way a leak would look.

mod support;

use support::*;

#[test]
fn a_basic_header_is_caught_at_every_alignment() {
    let secret = token(0x5ca1);
    // Usernames of every length mod 3 shift the secret to each alignment.
    for user in [AC, &format!("{AC}x"), &format!("{AC}xy")] {
        let header = base64_encode(format!("{user}:{secret}").as_bytes());
        let log = format!("TRACE reqwest::connect: authorization: Basic {header}\n");
        assert!(
            secret_leak(&log, &secret).is_some(),
            "the Basic header of a {}-byte user was not caught",
            user.len()
        );
    }
    assert_eq!(
        secret_leak(&format!("x {secret} y"), &secret).as_deref(),
        Some("raw")
    );
    let other = base64_encode(format!("{AC}:{}", token(0x5ca2)).as_bytes());
    assert_eq!(secret_leak(&format!("Basic {other}"), &secret), None);
}

#[test]
fn a_log_without_http_trace_lines_is_refused() {
    let log = "2026-01-01T00:00:00Z TRACE h2::codec::framed_read: received\n\
               2026-01-01T00:00:00Z TRACE hyper_util::client::legacy::pool: idle\n\
               2026-01-01T00:00:00Z DEBUG reqwest::connect: starting new connection\n";
    assert_eq!(missing_trace_targets(log, HTTP_TARGETS), vec!["reqwest"]);
    let log = format!("{log}2026-01-01T00:00:00Z TRACE reqwest::async_impl: x\n");
    assert!(missing_trace_targets(&log, HTTP_TARGETS).is_empty());
}
