//! The refresh side of the broker: the first load (retried while the
//! store's failure may pass) and the broker's one refresher task, which
//! keeps every credential fresh from a timer wheel.
//!
//! The refresher holds a small schedule slot per credential (its next
//! read, its failures in a row), not a task: at 10,000 credentials a task
//! each, with its timer and receivers, was the largest cost per credential.
//! Reads run as short-lived tasks, at most [`MAX_READS`] at once.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Notify, watch},
    task::{Id, JoinError, JoinSet},
    time::Instant,
};
use tokio_stream::{StreamExt as _, StreamMap, wrappers::WatchStream};
use tokio_util::sync::CancellationToken;

use super::{
    BrokerError,
    entry::{Entry, Loaded, Refreshed},
};
use crate::{clock::Clock, retry};

/// How long a burst of file events is given to settle before the re-read.
/// A rename over the file, or Kubernetes swapping a secret volume's
/// `..data` link, makes its events within a millisecond or two; 10 ms
/// folds them into one re-read and keeps a change's way to 10,000
/// watchers short.
const SETTLE: Duration = Duration::from_millis(10);

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

/// How many reads the refresher runs at once: enough to hide a network
/// store's latency, few enough that 10,000 credentials due together (a
/// SIGHUP, a file store's change) do not make 10,000 tasks and reads at once.
const MAX_READS: usize = 64;

/// Requests to re-read single credentials now (after a rotation wrote
/// one), from the broker to its refresher, by index in the broker's
/// entries.
///
/// Bounded: a credential is queued at most once however often it is asked
/// for (a flag each), so the queue never holds more than one index per
/// credential.
pub(super) struct Requests {
    /// Set while the credential's index is in `queue`.
    queued: Box<[AtomicBool]>,
    /// The indices asked for since the refresher last looked.
    queue: Mutex<Vec<usize>>,
    /// Wakes the refresher.
    wake: Notify,
}

impl Requests {
    /// No requests yet, for `entries` credentials.
    pub(super) fn new(entries: usize) -> Self {
        Self {
            queued: (0..entries).map(|_| AtomicBool::new(false)).collect(),
            queue: Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
    }

    /// Asks for a re-read of the credential at `index` now; nothing more
    /// if one is already asked for.
    pub(super) fn request(&self, index: usize) {
        if !self.queued[index].swap(true, Ordering::AcqRel) {
            self.lock().push(index);
            self.wake.notify_one();
        }
    }

    /// The indices asked for, emptying the queue.
    fn take(&self) -> Vec<usize> {
        let mut queue = self.lock();
        for &index in queue.iter() {
            self.queued[index].store(false, Ordering::Release);
        }
        std::mem::take(&mut *queue)
    }

    /// How many requests wait (tests: the queue stays bounded).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The queue; a panic while it was held left it whole (a push or a take).
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<usize>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a credential's schedule stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for its next read, at `Slot::next` (in the wheel).
    Waiting,
    /// Being read (not in the wheel).
    Reading,
    /// Its last read panicked: waiting out the backoff until `Slot::next`
    /// (in the wheel); asking for a re-read does not shorten it.
    Held,
}

/// One credential's schedule in the wheel.
struct Slot {
    /// When it is read next (its key in `Refresher::due` while not
    /// `Reading`).
    next: Instant,
    /// Failed reads in a row since the last good one.
    failures: u32,
    /// Reads of it that panicked, ever (they back off the next).
    panics: u32,
    /// Where it stands.
    state: State,
    /// A re-read was asked for while it was being read: read it again at
    /// once when that read ends.
    again: bool,
}

/// The credentials of one store that reports its changes.
pub(super) struct ChangingStore {
    /// The store's change counter.
    pub(super) changes: watch::Receiver<u64>,
    /// The indices of its credentials.
    pub(super) members: Vec<usize>,
}

/// The broker's refresher: a timer wheel over every credential. It
/// re-reads each document every `refresh_interval` (jittered, so that
/// credentials do not read in step), with backoff after a failure (never
/// past the moment a stale value must stop being served), every
/// credential of a store shortly after that store reports a change, all
/// of them on a reload (SIGHUP), and one on request ([`Requests`]).
///
/// A read that panics (a bug in a store client or a parser) is caught (it
/// is a task of its own): the credential is UNAVAILABLE rather than served
/// as fresh with nobody refreshing it, and after a backoff it is read again.
pub(super) struct Refresher {
    /// The broker's credentials, in the order of its entries.
    entries: Vec<Arc<Entry>>,
    /// Each one's schedule, by the same index.
    slots: Vec<Slot>,
    /// The credentials waiting (or held) by the time of their next read.
    due: BTreeSet<(Instant, usize)>,
    /// Per changing store, its credentials and when its burst of changes
    /// has settled (`None`: no change pending).
    stores: Vec<(Vec<usize>, Option<Instant>)>,
    /// The reads under way.
    reads: JoinSet<u32>,
    /// Which credential each read under way is of.
    reading: Vec<(Id, usize)>,
    /// The broker's clock (for the snapshots' times).
    clock: Clock,
}

impl Refresher {
    /// The refresher of `entries`, each read first after its jittered
    /// interval (they were all just loaded).
    pub(super) fn new(entries: Vec<Arc<Entry>>, clock: Clock) -> Self {
        let now = Instant::now();
        let slots: Vec<Slot> = entries
            .iter()
            .map(|entry| Slot {
                next: now + next_wait(entry, &clock, 0),
                failures: 0,
                panics: 0,
                state: State::Waiting,
                again: false,
            })
            .collect();
        let due = slots.iter().enumerate().map(|(i, s)| (s.next, i)).collect();
        Self {
            entries,
            slots,
            due,
            stores: Vec::new(),
            reads: JoinSet::new(),
            reading: Vec::new(),
            clock,
        }
    }

    /// Runs until `stopping` is cancelled; then returns at once, aborting
    /// the reads under way (a read held by a hung store does not hold up
    /// shutdown).
    pub(super) async fn run(
        mut self,
        stores: Vec<ChangingStore>,
        reload: watch::Receiver<u64>,
        requests: Arc<Requests>,
        stopping: CancellationToken,
    ) {
        let mut changes = StreamMap::with_capacity(stores.len());
        for (i, store) in stores.into_iter().enumerate() {
            // Changes since the subscription (made before the first load)
            // count: they were not seen yet.
            changes.insert(i, WatchStream::from_changes(store.changes));
            self.stores.push((store.members, None));
        }
        let mut reload = Some(reload);
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        loop {
            self.start_due();
            let deadline = self.deadline();
            if let Some(at) = deadline {
                sleep.as_mut().reset(at);
            }
            // Stopping first; reads last, as the one branch that can be
            // ready again and again (10,000 credentials due at once).
            tokio::select! {
                biased;
                _ = stopping.cancelled() => return,
                _ = requests.wake.notified() => {
                    for index in requests.take() {
                        self.reread(index);
                    }
                }
                _ = next_change(&mut reload) => {
                    for index in 0..self.slots.len() {
                        self.reread(index);
                    }
                }
                Some((store, _)) = changes.next() => {
                    // Later changes of the burst are folded into this one.
                    self.stores[store].1.get_or_insert_with(|| Instant::now() + SETTLE);
                }
                _ = sleep.as_mut(), if deadline.is_some() => self.settled(),
                Some(joined) = self.reads.join_next_with_id(), if !self.reads.is_empty() => {
                    self.finished(joined);
                }
            }
        }
    }

    /// Starts the reads that are due, as many as [`MAX_READS`] allows.
    fn start_due(&mut self) {
        let now = Instant::now();
        while self.reads.len() < MAX_READS {
            let Some(&(at, index)) = self.due.first() else {
                return;
            };
            if at > now {
                return;
            }
            self.due.pop_first();
            let slot = &mut self.slots[index];
            slot.state = State::Reading;
            let (entry, clock, failures) =
                (Arc::clone(&self.entries[index]), self.clock, slot.failures);
            let read = self
                .reads
                .spawn(async move { refresh_once(&entry, &clock, failures).await });
            self.reading.push((read.id(), index));
        }
    }

    /// When the refresher must wake next without being woken: the next
    /// read due (unless the reads are at their bound: one ending wakes it),
    /// or the end of a store's settling.
    fn deadline(&self) -> Option<Instant> {
        let read = if self.reads.len() < MAX_READS {
            self.due.first().map(|&(at, _)| at)
        } else {
            None
        };
        let settle = self.stores.iter().filter_map(|(_, at)| *at).min();
        read.into_iter().chain(settle).min()
    }

    /// Re-reads every credential of each store whose burst of changes has
    /// settled.
    fn settled(&mut self) {
        let now = Instant::now();
        for store in 0..self.stores.len() {
            if self.stores[store].1.is_some_and(|at| at <= now) {
                self.stores[store].1 = None;
                for i in 0..self.stores[store].0.len() {
                    let index = self.stores[store].0[i];
                    self.reread(index);
                }
            }
        }
    }

    /// Reads the credential at `index` now: at once if it waits, once its
    /// read ends if it is being read, after its backoff if it is held.
    fn reread(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        match slot.state {
            State::Reading => slot.again = true,
            State::Held => {}
            State::Waiting => {
                let now = Instant::now();
                if slot.next > now {
                    self.due.remove(&(slot.next, index));
                    slot.next = now;
                    self.due.insert((now, index));
                }
            }
        }
    }

    /// Records how a read ended and schedules the credential's next.
    fn finished(&mut self, joined: Result<(Id, u32), JoinError>) {
        let (id, outcome) = match joined {
            Ok((id, failures)) => (id, Ok(failures)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some(at) = self.reading.iter().position(|&(read, _)| read == id) else {
            return;
        };
        let (_, index) = self.reading.swap_remove(at);
        let entry = &self.entries[index];
        let slot = &mut self.slots[index];
        let now = Instant::now();
        let wait = match outcome {
            Ok(failures) => {
                slot.failures = failures;
                slot.state = State::Waiting;
                next_wait(entry, &self.clock, failures)
            }
            Err(e) if e.is_panic() => {
                slot.panics = slot.panics.saturating_add(1);
                slot.state = State::Held;
                // The read after the backoff covers any asked for meanwhile.
                slot.again = false;
                read_panicked(entry, &self.clock, slot.panics)
            }
            // Aborted: only when the runtime shuts down.
            Err(_) => {
                slot.state = State::Waiting;
                next_wait(entry, &self.clock, slot.failures)
            }
        };
        slot.next = if std::mem::take(&mut slot.again) {
            now
        } else {
            now + wait
        };
        self.due.insert((slot.next, index));
    }
}

/// Handles a read of `entry` that panicked (its `panics`-th): the
/// credential is unavailable until a read succeeds; returns the backoff
/// before the next.
fn read_panicked(entry: &Entry, clock: &Clock, panics: u32) -> Duration {
    let wait = retry::backoff(panics, Duration::from_secs(1), entry.refresh_interval());
    // The panic's message is not repeated here: it is not ours to vet.
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
    wait
}

/// Waits for the next reload; forever once its sender is gone.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The refresher's own cost per credential stays small: its slot, its
    /// key in the wheel, an `Arc` and a request flag (the wheel's B-tree
    /// nodes add about a third again to the key).
    #[test]
    fn a_credential_costs_the_refresher_little() {
        assert!(size_of::<Slot>() <= 32, "{}", size_of::<Slot>());
        assert!(size_of::<(Instant, usize)>() <= 24);
    }
}
