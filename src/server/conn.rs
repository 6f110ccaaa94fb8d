//! Connections on the socket, bounded before anything is read from them:
//! at most `max_connections` in all (and never more than the descriptors
//! allow) and `max_connections_per_uid` per peer uid (SO_PEERCRED, known
//! at accept); a connection that sends nothing within `preface_timeout` is
//! closed, and so is one with no call in flight for `idle_timeout` (the
//! calls are counted by `gate`). Accept errors (EMFILE) back off instead of
//! spinning.

use std::{
    collections::HashMap,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{UnixListener, UnixStream},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::server::Connected;

use super::gate::{Activity, ConnInfo};
use crate::config::Limits;

/// Descriptors kept back from connections, for stores, logs, the metrics
/// listener and the socket itself.
const RESERVED_FDS: u64 = 64;

/// A connection holding its slot; the slot is freed when it is dropped.
/// Reads end (EOF) once it has had no call in flight for the idle timeout.
pub struct Conn {
    stream: UnixStream,
    _slot: Slot,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    idle_check: Pin<Box<tokio::time::Sleep>>,
}

impl Conn {
    fn new(stream: UnixStream, slot: Slot, idle_timeout: Duration) -> Self {
        Self {
            stream,
            _slot: slot,
            activity: Arc::new(Activity::new()),
            idle_timeout,
            idle_check: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    /// Whether the connection has been idle for the timeout; otherwise the
    /// next check is armed (and wakes `cx`).
    fn idle(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle_check.as_mut().poll(cx).is_pending() {
                return false;
            }
            let (busy, last) = self.activity.state();
            let now = tokio::time::Instant::now();
            let due = last + self.idle_timeout;
            if !busy && due <= now {
                return true;
            }
            let next = if busy { now + self.idle_timeout } else { due };
            self.idle_check.as_mut().reset(next);
        }
    }
}

/// Open connections, in all and by uid.
#[derive(Default)]
struct Counts {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

struct Slot {
    counts: Arc<Mutex<Counts>>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                c.by_uid.remove(&self.uid);
            }
        }
    }
}

/// Why a connection was closed at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Total,
    PerUid,
}

/// The caps in force: the configured ones, the total also bounded by the
/// descriptors this process may open.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Connections in all.
    pub total: usize,
    /// Connections per uid.
    pub per_uid: usize,
    /// How long a connection may stay silent at first.
    pub preface: Duration,
    /// How long a connection may stay open with no call in flight.
    pub idle: Duration,
}

impl Caps {
    /// `limits`, with the total capped by `RLIMIT_NOFILE` less what the
    /// daemon keeps for itself.
    pub fn of(limits: &Limits) -> Self {
        let fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let by_fds = fds.saturating_sub(RESERVED_FDS).max(1);
        Self {
            total: (limits.max_connections as u64).min(by_fds) as usize,
            per_uid: limits.max_connections_per_uid as usize,
            preface: limits.preface_timeout,
            idle: limits.idle_timeout,
        }
    }
}

fn take_slot(counts: &Arc<Mutex<Counts>>, caps: &Caps, uid: u32) -> Result<Slot, Refusal> {
    let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
    if c.total >= caps.total {
        return Err(Refusal::Total);
    }
    let n = c.by_uid.entry(uid).or_default();
    if *n >= caps.per_uid {
        return Err(Refusal::PerUid);
    }
    *n += 1;
    c.total += 1;
    Ok(Slot {
        counts: Arc::clone(counts),
        uid,
    })
}

/// The connections of `listener` that got a slot and sent their first
/// bytes in time. The accept loop and the preface waits run on `tasks`
/// and stop with `stopping`.
pub fn incoming(
    listener: UnixListener,
    caps: Caps,
    stopping: CancellationToken,
    tasks: &TaskTracker,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let waits = tasks.clone();
    tasks.spawn(accept_loop(listener, caps, stopping, tx, waits));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: UnixListener,
    caps: Caps,
    stopping: CancellationToken,
    tx: mpsc::Sender<io::Result<Conn>>,
    waits: TaskTracker,
) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let mut refused = Refused::default();
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match backoff.check(accepted, "socket") {
            Ok((stream, _)) => stream,
            Err(wait) => {
                tokio::select! {
                    _ = stopping.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let Ok(cred) = stream.peer_cred() else {
            continue; // No peer credentials: nobody to count it against.
        };
        let slot = match take_slot(&counts, &caps, cred.uid()) {
            Ok(slot) => slot,
            Err(why) => {
                refused.note(why, cred.uid(), &caps);
                continue; // Dropped: closed at once.
            }
        };
        let (tx, preface, idle) = (tx.clone(), caps.preface, caps.idle);
        waits.spawn(async move {
            // The first bytes (the HTTP/2 preface) within the timeout, or
            // the connection is closed and its slot freed.
            match tokio::time::timeout(preface, first_bytes(&stream)).await {
                Ok(Ok(true)) => {
                    let _ = tx.send(Ok(Conn::new(stream, slot, idle))).await;
                }
                Ok(_) => {}
                Err(_) => tracing::debug!(
                    peer_uid = cred.uid(),
                    "closing a connection that sent nothing within preface_timeout"
                ),
            }
        });
    }
}

/// Waits until `stream` has bytes to read, without reading them: `true`
/// then, `false` when the peer closed first. (`readable()` alone may report
/// readiness with nothing to read.)
async fn first_bytes(stream: &UnixStream) -> io::Result<bool> {
    use std::os::fd::AsFd;
    loop {
        stream.readable().await?;
        let mut byte = [0u8; 1];
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            rustix::net::recv(stream.as_fd(), &mut byte, rustix::net::RecvFlags::PEEK)
                .map(|(n, _)| n)
                .map_err(io::Error::from)
        });
        match peeked {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Accept failures in a row (EMFILE and the like): the wait before the
/// next accept, so a listener out of descriptors waits for some to free up
/// rather than spin on an accept that fails at once.
#[derive(Default)]
pub(super) struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    /// What an accept on `listener` gave: the connection, or (logged) how
    /// long to wait before the next accept.
    pub(super) fn check<T>(
        &mut self,
        accepted: io::Result<T>,
        listener: &str,
    ) -> Result<T, Duration> {
        let e = match accepted {
            Ok(connection) => {
                self.failures = 0;
                return Ok(connection);
            }
            Err(e) => e,
        };
        self.failures = self.failures.saturating_add(1);
        let wait = crate::retry::backoff(
            self.failures,
            Duration::from_millis(10),
            Duration::from_secs(1),
        );
        tracing::warn!(error = %e, retry_in = ?wait, listener, "cannot accept a connection");
        Err(wait)
    }
}

/// Refused connections, logged at most once a second.
#[derive(Default)]
struct Refused {
    count: u64,
    last_log: Option<tokio::time::Instant>,
}

impl Refused {
    fn note(&mut self, why: Refusal, uid: u32, caps: &Caps) {
        self.count += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_log
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_log = Some(now);
        let (limit, key) = match why {
            Refusal::Total => (caps.total, "server.max_connections"),
            Refusal::PerUid => (caps.per_uid, "server.max_connections_per_uid"),
        };
        tracing::warn!(
            peer_uid = uid,
            limit,
            refused_so_far = self.count,
            "connection refused: {key} reached"
        );
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnInfo {
            uds: self.stream.connect_info(),
            activity: Arc::clone(&self.activity),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.idle(cx) {
            // EOF: the HTTP/2 connection ends, and with it the slot.
            tracing::debug!(idle_timeout = ?self.idle_timeout, "closing an idle connection");
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_in_all_and_per_uid_and_freed_on_drop() {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let caps = Caps {
            total: 3,
            per_uid: 2,
            preface: Duration::from_secs(5),
            idle: Duration::from_secs(300),
        };
        let a1 = take_slot(&counts, &caps, 1).unwrap();
        let _a2 = take_slot(&counts, &caps, 1).unwrap();
        assert_eq!(take_slot(&counts, &caps, 1).err(), Some(Refusal::PerUid));
        let _b1 = take_slot(&counts, &caps, 2).unwrap();
        assert_eq!(take_slot(&counts, &caps, 3).err(), Some(Refusal::Total));
        drop(a1);
        assert!(take_slot(&counts, &caps, 3).is_ok());
    }
}
