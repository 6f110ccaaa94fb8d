//! The log writer: one thread writes every log line to stderr, in batches.
//!
//! Two kinds of lines reach it over one bounded queue:
//! - tracing's events, formatted by `tracing_subscriber` where they happen
//!   (start, refreshes, rotations, errors: a few per minute);
//! - the audit events, one per access decision (`server::peer::audit`),
//!   made on the request path of every call. The request hands over a small
//!   fixed [`AuditRecord`] (names and versions up to [`INLINE_BYTES`] are
//!   copied into it, so it allocates nothing) and this thread formats it,
//!   byte for byte as tracing's `fmt` layer formats the same event (text,
//!   or JSON with `CREDBROKER_LOG_FORMAT=json`; the tests compare them).
//!
//! Nothing is dropped: when [`QUEUE`] messages wait, the caller waits for
//! the writer, and [`audit`] says it did (counted in
//! `credbroker_audit_queue_waits_total`). Once woken, the writer lets a
//! batch gather for [`GATHER`] before it formats and writes, so a busy
//! daemon pays one wake-up and one `write(2)` per batch, not per call. An
//! idle one sleeps. [`Flush`] writes out what is queued at exit.
//!
//! A leaf: it imports nothing of ours.

use std::{
    io::Write,
    sync::{
        OnceLock,
        mpsc::{Receiver, SyncSender, TrySendError},
    },
    time::{Duration, SystemTime},
};

/// Messages the queue holds before a caller waits.
pub const QUEUE: usize = 1024;
/// How long the writer lets a batch gather once a message has woken it.
pub const GATHER: Duration = Duration::from_millis(2);
/// The longest text an [`AuditRecord`] holds without allocating.
pub const INLINE_BYTES: usize = 46;
/// The writer's buffer is written once it holds this much.
const WRITE_AT: usize = 64 * 1024;

/// Text held by value: inline up to [`INLINE_BYTES`], else on the heap.
#[derive(Clone)]
pub enum Text {
    /// Short text, copied in.
    Inline {
        /// Bytes used.
        len: u8,
        /// UTF-8, `len` of them.
        bytes: [u8; INLINE_BYTES],
    },
    /// Longer text.
    Heap(Box<str>),
}

impl Text {
    /// `text`, copied.
    pub fn new(text: &str) -> Self {
        if text.len() <= INLINE_BYTES {
            let mut bytes = [0; INLINE_BYTES];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            Text::Inline {
                len: text.len() as u8,
                bytes,
            }
        } else {
            Text::Heap(text.into())
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match self {
            // Copied whole from a `str`, so always UTF-8.
            Text::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Text::Heap(s) => s,
        }
    }
}

/// One access decision: who, what, which version, the decision. Never a
/// secret.
pub struct AuditRecord {
    /// When it was decided (the line's timestamp).
    pub at: SystemTime,
    /// The peer's uid.
    pub peer_uid: u32,
    /// The peer's gid.
    pub peer_gid: u32,
    /// The peer's pid, 0 when the kernel gave none.
    pub peer_pid: i32,
    /// The gRPC method.
    pub method: &'static str,
    /// The credential name as the line shows it (cut by the caller).
    pub credential: Text,
    /// The version served, empty when none was.
    pub version: Text,
    /// `allowed`, `denied`, `not_found` or `failed`.
    pub decision: &'static str,
}

enum Msg {
    Audit(AuditRecord),
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

struct Writer {
    queue: SyncSender<Msg>,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

/// Starts the writer thread (once per process); `json` formats audit
/// events as `CREDBROKER_LOG_FORMAT=json` does. Hand [`LogWriter`] to
/// `tracing_subscriber` and keep the returned [`Flush`] until exit.
pub fn start(json: bool) -> std::io::Result<Flush> {
    let (queue, rx) = std::sync::mpsc::sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("credbroker-log".into())
        .spawn(move || write_loop(&rx, json, &mut std::io::stderr()))?;
    // A second start (tests) keeps the first writer; its thread ends when
    // this queue's sender is dropped.
    let _ = WRITER.set(Writer { queue });
    Ok(Flush)
}

/// Whether audit events are written at all (the log filter may drop
/// `credbroker::audit`): when not, a caller need not build its record.
pub fn audit_enabled() -> bool {
    tracing::enabled!(target: "credbroker::audit", tracing::Level::INFO)
}

/// Writes `record`'s audit event; returns whether the queue was full and
/// the caller had to wait. Without a writer thread (a library user, a unit
/// test) the event goes through tracing on the calling thread.
pub fn audit(record: AuditRecord) -> bool {
    let Some(writer) = WRITER.get() else {
        tracing::info!(
            target: "credbroker::audit",
            peer_uid = record.peer_uid,
            peer_gid = record.peer_gid,
            peer_pid = record.peer_pid,
            method = record.method,
            credential = record.credential.as_str(),
            version = record.version.as_str(),
            decision = record.decision,
            "access decision"
        );
        return false;
    };
    match writer.queue.try_send(Msg::Audit(record)) {
        Ok(()) => false,
        Err(TrySendError::Full(msg)) => {
            let _ = writer.queue.send(msg);
            true
        }
        // The writer thread is gone (it only ends with the process).
        Err(TrySendError::Disconnected(_)) => false,
    }
}

/// The `MakeWriter` for `tracing_subscriber`: each formatted event is
/// queued whole to the writer thread (written to stderr directly when
/// there is none).
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

/// One event's bytes on their way to the queue.
pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match WRITER.get() {
            Some(w) if w.queue.send(Msg::Line(buf.to_vec())).is_ok() => Ok(buf.len()),
            _ => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter
    }
}

/// Writes out everything queued when dropped (at exit).
#[must_use = "dropping it at once flushes at once; keep it until exit"]
pub struct Flush;

impl Drop for Flush {
    fn drop(&mut self) {
        if let Some(w) = WRITER.get() {
            let (ack, done) = std::sync::mpsc::sync_channel(1);
            if w.queue.send(Msg::Flush(ack)).is_ok() {
                let _ = done.recv_timeout(Duration::from_secs(5));
            }
        }
    }
}

/// The writer thread: wait for a message, let a batch gather, format and
/// write it; until every sender is gone.
fn write_loop(rx: &Receiver<Msg>, json: bool, out: &mut dyn Write) {
    let mut buf = Vec::with_capacity(WRITE_AT);
    let mut clock = Stamp::default();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut gathered = false;
        loop {
            let msg = match next.take() {
                Some(m) => m,
                None => match rx.try_recv() {
                    Ok(m) => m,
                    Err(_) if !gathered => {
                        gathered = true;
                        std::thread::sleep(GATHER);
                        continue;
                    }
                    Err(_) => break,
                },
            };
            match msg {
                Msg::Audit(r) => format_audit(&mut buf, &r, json, &mut clock),
                Msg::Line(line) => buf.extend_from_slice(&line),
                Msg::Flush(ack) => {
                    let _ = out.write_all(&buf);
                    buf.clear();
                    let _ = out.flush();
                    let _ = ack.send(());
                }
            }
            if buf.len() >= WRITE_AT {
                let _ = out.write_all(&buf);
                buf.clear();
            }
        }
        let _ = out.write_all(&buf);
        buf.clear();
        let _ = out.flush();
    }
}

/// The RFC 3339 timestamp tracing's `fmt` layer writes
/// (`2026-11-27T06:00:00.123456Z`), with the date and time of day cached
/// per second.
#[derive(Default)]
struct Stamp {
    second: Option<u64>,
    prefix: String,
}

impl Stamp {
    fn write(&mut self, buf: &mut Vec<u8>, at: SystemTime) {
        let since = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since.as_secs();
        if self.second != Some(secs) {
            self.second = Some(secs);
            self.prefix = date_time(secs);
        }
        buf.extend_from_slice(self.prefix.as_bytes());
        let _ = write!(buf, ".{:06}Z", since.subsec_micros());
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of `secs` since the epoch.
fn date_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), after H. Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One audit line, as tracing's `fmt` layer (`Full`, no ANSI) or its JSON
/// layer writes the event `peer::audit` used to emit.
fn format_audit(buf: &mut Vec<u8>, r: &AuditRecord, json: bool, clock: &mut Stamp) {
    let fields = [
        ("method", r.method),
        ("credential", r.credential.as_str()),
        ("version", r.version.as_str()),
        ("decision", r.decision),
    ];
    if json {
        buf.extend_from_slice(b"{\"timestamp\":\"");
        clock.write(buf, r.at);
        let _ = write!(
            buf,
            "\",\"level\":\"INFO\",\"fields\":{{\"message\":\"access decision\",\
             \"peer_uid\":{},\"peer_gid\":{},\"peer_pid\":{}",
            r.peer_uid, r.peer_gid, r.peer_pid
        );
        for (key, value) in fields {
            let _ = write!(buf, ",\"{key}\":");
            // serde_json escapes as tracing's JSON layer (which uses it) does.
            let _ = serde_json::to_writer(&mut *buf, value);
        }
        buf.extend_from_slice(b"},\"target\":\"credbroker::audit\"}\n");
    } else {
        clock.write(buf, r.at);
        let _ = write!(
            buf,
            "  INFO credbroker::audit: access decision peer_uid={} peer_gid={} peer_pid={}",
            r.peer_uid, r.peer_gid, r.peer_pid
        );
        for (key, value) in fields {
            let _ = write!(buf, " {key}=");
            debug_str(buf, value);
        }
        buf.push(b'\n');
    }
}

/// `s` as `{:?}` writes it (quoted, escaped), with a fast path for the
/// usual names and versions, which need no escape.
fn debug_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\' && b != b'\'')
    {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        let _ = write!(buf, "{s:?}");
    }
}

#[cfg(test)]
mod tests;
