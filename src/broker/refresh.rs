//! The refresh side of the broker: the first load (retried while the
//! store's failure may pass) and each credential's refresh task.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    BrokerError,
    entry::{Entry, Loaded, Refreshed},
};
use crate::{clock::Clock, retry};

async fn next_change(rx: &mut Option<watch::Receiver<u64>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                *rx = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// How long a burst of file events is given to settle before the re-read.
const SETTLE: Duration = Duration::from_millis(50);

/// Loads `entry`, retrying a passing failure with backoff until it loads,
/// fails for good, or the daemon stops.
pub(super) async fn load_retrying(
    entry: &Entry,
    clock: Clock,
    stopping: &CancellationToken,
) -> Result<Loaded, BrokerError> {
    let mut attempts = 0u32;
    loop {
        match entry.load(&clock).await {
            Err(e) if e.is_transient() && !stopping.is_cancelled() => {
                attempts += 1;
                let wait = retry::backoff(
                    attempts,
                    Duration::from_secs(1),
                    entry.refresh_interval().max(Duration::from_secs(1)),
                );
                tracing::warn!(
                    credential = %entry.name(),
                    error = %e,
                    attempts,
                    retry_in = ?wait,
                    "cannot load credential yet; retrying"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopping.cancelled() => {}
                }
            }
            result => return result,
        }
    }
}

/// The refresh task of `entry`: re-reads its document every
/// `refresh_interval` (jittered), at once on a store change, a reload
/// (SIGHUP) or a re-read request, and with backoff after failures.
///
/// A read that panics (a bug in a store client or a parser) does not end
/// the task: the panic is caught around that read ([`CatchUnwind`]), the
/// credential is UNAVAILABLE (rather than served as fresh with nobody
/// refreshing it), and after a backoff the task reads again. Catching it
/// here rather than in a supervisor task keeps a credential at one task.
pub(super) async fn refresh_loop(
    entry: Arc<Entry>,
    clock: Clock,
    mut store_changes: Option<watch::Receiver<u64>>,
    mut reload: watch::Receiver<u64>,
    stopping: CancellationToken,
) {
    let mut failures = 0u32;
    let mut panics = 0u32;
    loop {
        let wait = next_wait(&entry, &clock, failures);
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = next_change(&mut store_changes) => {
                tokio::time::sleep(SETTLE).await;
                if let Some(r) = store_changes.as_mut() {
                    r.borrow_and_update();
                }
            }
            _ = reload.changed() => {}
            _ = entry.reread.notified() => {}
        }
        // Boxed: the read's state lives only while it runs, not in the
        // task for the credential's whole life.
        let once = CatchUnwind(Box::pin(refresh_once(&entry, &clock, failures)));
        // A read held by a hung store must not hold up shutdown.
        let outcome = tokio::select! {
            _ = stopping.cancelled() => return,
            outcome = once => outcome,
        };
        match outcome {
            Ok(f) => failures = f,
            Err(()) => {
                panics = panics.saturating_add(1);
                // The panic's message is not repeated here: it is not ours to vet.
                let wait = retry::backoff(panics, Duration::from_secs(1), entry.refresh_interval());
                tracing::error!(
                    credential = %entry.name(),
                    panics,
                    restart_in = ?wait,
                    "the credential's refresh task panicked (a bug, please report it); \
                     unavailable until the restarted task reads its store"
                );
                entry.fail(
                    clock.now(),
                    BrokerError::RefreshPanicked(entry.name().to_owned()),
                    true,
                );
                tokio::select! {
                    _ = stopping.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                // Read again at once.
                entry.reread.notify_one();
            }
        }
    }
}

/// A future whose panic becomes `Err(())`, as a spawned task's would,
/// without a task of its own. The future is dropped after a panic, never
/// polled again.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// How long to wait before the next read: the jittered interval, or a
/// backoff after `failures`; never past the moment a stale value must no
/// longer be served, so watchers learn at once that it is gone.
fn next_wait(entry: &Entry, clock: &Clock, failures: u32) -> Duration {
    let wait = if failures == 0 {
        retry::jitter(entry.refresh_interval())
    } else {
        retry::backoff(failures, Duration::from_secs(1), entry.refresh_interval())
    };
    let snapshot = entry.snapshot();
    match entry.stale_deadline(&snapshot) {
        Some(deadline) if snapshot.unavailable.is_none() => wait.min(
            deadline
                .duration_since(clock.now())
                .unwrap_or(Duration::ZERO),
        ),
        _ => wait,
    }
}

/// One read of `entry`'s document, published or recorded as a failure;
/// returns the failures in a row since the last good read.
async fn refresh_once(entry: &Entry, clock: &Clock, failures: u32) -> u32 {
    let e = match entry.load(clock).await {
        Ok(loaded) => {
            let version = loaded.version.clone();
            let was_stale = entry.snapshot().stale_since.is_some();
            if let Refreshed::Changed = entry.publish(loaded) {
                if was_stale || failures > 0 {
                    tracing::info!(credential = %entry.name(), %version, "credential recovered");
                } else {
                    tracing::info!(credential = %entry.name(), %version, "credential changed");
                }
            } else {
                tracing::trace!(credential = %entry.name(), %version, "credential re-read, unchanged");
            }
            return 0;
        }
        Err(e) => e,
    };
    let failures = failures.saturating_add(1);
    let permanent = e.is_permanent();
    if permanent {
        tracing::error!(
            credential = %entry.name(),
            error = %e,
            failures,
            "cannot refresh credential; unavailable until its store serves it again"
        );
    } else {
        tracing::error!(
            credential = %entry.name(),
            error = %e,
            transient = e.is_transient(),
            failures,
            "cannot refresh credential; serving the last good value as stale until max_stale"
        );
    }
    entry.fail(clock.now(), e, permanent);
    failures
}
