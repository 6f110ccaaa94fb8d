use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::*;

fn record(credential: &str, version: &str, at: SystemTime) -> AuditRecord {
    AuditRecord {
        at,
        peer_uid: 1000,
        peer_gid: 1001,
        peer_pid: 4242,
        method: "GetCredential",
        credential: Text::new(credential),
        version: Text::new(version),
        decision: "allowed",
    }
}

/// A writer into a shared buffer, for tracing_subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// tracing's own timestamp is taken at the event; this one writes `at`
/// with our formatter, so the lines compare whole.
struct Fixed(SystemTime);

impl tracing_subscriber::fmt::time::FormatTime for Fixed {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let mut b = Vec::new();
        Stamp::default().write(&mut b, self.0);
        w.write_str(std::str::from_utf8(&b).unwrap())
    }
}

/// The line tracing's fmt layer writes for the event `audit` emits when no
/// writer thread runs (the event `peer::audit` always emitted before).
fn tracing_line(json: bool, r: AuditRecord) -> String {
    let out = Captured::default();
    let sink = out.clone();
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_timer(Fixed(r.at))
        .with_writer(move || sink.clone());
    let dispatch: tracing::Dispatch = if json {
        builder.json().finish().into()
    } else {
        builder.finish().into()
    };
    tracing::dispatcher::with_default(&dispatch, || {
        assert!(audit_enabled());
        assert!(!audit(r), "no writer thread: nothing to wait for");
    });
    String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
}

fn our_line(json: bool, r: &AuditRecord) -> String {
    let mut buf = Vec::new();
    format_audit(&mut buf, r, json, &mut Stamp::default());
    String::from_utf8(buf).unwrap()
}

#[test]
fn audit_lines_are_byte_for_byte_what_tracing_writes() {
    let at = UNIX_EPOCH + Duration::new(1_796_000_000, 123_456_789);
    let long = "n".repeat(200);
    let cases = [
        ("twilio-verify", "7"),
        ("we\"ird é\\n\u{1}\t", ""),
        ("", "SK0123456789abcdef0123456789abcdef"),
        (long.as_str(), "aws-7f9c0a1e-2c44-4c1b-9a55-0c3d2e1f4b6a+12"),
        ("ünïcødé ✓", "v\"1\""),
        ("it's a name", "v 1"),
    ];
    for json in [false, true] {
        for (name, version) in cases {
            let ours = our_line(json, &record(name, version, at));
            let theirs = tracing_line(json, record(name, version, at));
            assert_eq!(ours, theirs, "json={json} name={name:?}");
            assert!(ours.ends_with('\n') && ours.matches('\n').count() == 1);
        }
    }
}

#[test]
fn timestamps_match_chrono_across_days_leap_years_and_centuries() {
    let mut secs = 0u64;
    while secs < 5_000_000_000 {
        let ours = date_time(secs);
        let chrono = chrono::DateTime::from_timestamp(secs as i64, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        assert_eq!(ours, chrono, "{secs}");
        // A stride that is not a multiple of a day or an hour.
        secs += 86_400 * 37 + 3_601 * 5 + 7;
    }
    assert_eq!(date_time(951_782_400), "2000-02-29T00:00:00");
    let mut b = Vec::new();
    Stamp::default().write(&mut b, UNIX_EPOCH + Duration::new(1_796_000_000, 5_000));
    assert_eq!(String::from_utf8(b).unwrap(), "2026-11-30T00:53:20.000005Z");
}

#[test]
fn text_is_inline_up_to_its_bound_and_whole_beyond() {
    let short = "x".repeat(INLINE_BYTES);
    assert!(matches!(Text::new(&short), Text::Inline { .. }));
    assert_eq!(Text::new(&short).as_str(), short);
    let long = "é".repeat(INLINE_BYTES);
    assert!(matches!(Text::new(&long), Text::Heap(_)));
    assert_eq!(Text::new(&long).as_str(), long);
    assert_eq!(Text::new("").as_str(), "");
    // A record stays small enough to queue by value.
    assert!(std::mem::size_of::<AuditRecord>() <= 192);
}

#[test]
fn the_writer_keeps_order_batches_and_flushes_on_request() {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let out = Captured::default();
    let mut sink = out.clone();
    let writer = std::thread::spawn(move || write_loop(&rx, false, &mut sink));
    let at = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
    tx.send(Msg::Line(b"first line\n".to_vec())).unwrap();
    for i in 0..3000 {
        tx.send(Msg::Audit(record(&format!("c{i}"), "1", at)))
            .unwrap();
    }
    tx.send(Msg::Line(b"last line\n".to_vec())).unwrap();
    let (ack, done) = std::sync::mpsc::sync_channel(1);
    tx.send(Msg::Flush(ack)).unwrap();
    done.recv_timeout(Duration::from_secs(10))
        .expect("the flush is answered");
    // Everything before the flush is written by the time it is answered.
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3002);
    assert_eq!(lines[0], "first line");
    assert_eq!(lines[3001], "last line");
    for (i, l) in lines[1..3001].iter().enumerate() {
        assert!(l.contains(&format!("credential=\"c{i}\"")), "{l}");
    }
    drop(tx);
    writer.join().unwrap();
}
