//! The broker: a cache of the current credentials, kept fresh from the
//! stores, leased to callers and pushed to watchers.
//!
//! One refresher task per broker (`refresh.rs`, a timer wheel over every
//! credential) re-reads each credential's document every
//! `refresh_interval` (with jitter, so many credentials do not read in
//! step), at once when its store reports a change, on `refresh_all`
//! (SIGHUP) or on `refresh`, and with jittered exponential backoff after a
//! failure. A failure keeps the last good value, marked stale, until
//! `max_stale` has passed; then the credential is unavailable until a read
//! succeeds again.

mod entry;
mod refresh;

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use tokio::{sync::watch, task::JoinSet};
use tokio_stream::Stream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use entry::{Entry, Lease, Loaded, Snapshot, Subscription};

/// Credentials loaded at once at start.
const FIRST_LOADS: usize = 64;

/// When a watch stream sends a lease although nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renew {
    /// At half of each lease, so a watcher always holds a live one (stored
    /// credentials: a lease is shorter than the value's life).
    AtHalfLease,
    /// Never: the state's owner publishes every change, expiry included
    /// (bearer tokens: a lease ends with the token).
    OnChangeOnly,
}
use refresh::{ChangingStore, Refresher, Requests, load_retrying};

use crate::{
    clock::Clock,
    config::{Config, Source},
    credential::DocumentError,
    store::{self, StoreError},
};

/// Why the broker cannot answer for a credential.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No credential has that name.
    #[error("no credential named `{0}`")]
    NotFound(String),
    /// Never loaded, gone from its store, or stale past `max_stale`.
    #[error("credential `{name}` is unavailable: {why}")]
    Unavailable {
        /// Credential name.
        name: String,
        /// Why.
        why: Unavailability,
    },
    /// The store failed.
    #[error("credential `{name}`: {source}")]
    Store {
        /// Credential name.
        name: String,
        /// The store's error.
        source: StoreError,
    },
    /// The stored document is bad.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// The broker is stopping.
    #[error("credbroker is shutting down")]
    ShuttingDown,
    /// Twilio would not issue a bearer token to an `oauth_client`.
    /// (Its issuer lives above the broker, with the Twilio client: the
    /// error arrives as text, which names Twilio's status and code.)
    #[error("credential `{name}`: cannot get a bearer token: {detail}")]
    Token {
        /// Credential name.
        name: String,
        /// Twilio's answer, or why there was none.
        detail: String,
    },
    /// A read of the credential panicked (a bug); it is read again after
    /// a backoff. (The text, kept for those who match on it, still speaks
    /// of a restarted refresh task.)
    #[error(
        "credential `{0}`: its refresh task stopped unexpectedly (it panicked); \
         it has been restarted and the credential is unavailable until it reads the store again"
    )]
    RefreshPanicked(String),
}

/// Why nothing of a credential may be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailability {
    /// The first load has not finished.
    #[error("not loaded yet")]
    NotLoaded,
    /// A read failed for good (the document is gone, access was revoked),
    /// or before anything was ever loaded.
    #[error("{0}")]
    Failed(Arc<BrokerError>),
    /// An `oauth_client`'s bearer token expired and no new one could be
    /// fetched.
    #[error(
        "its bearer token expired at {} and no new one could be fetched{}",
        humantime::format_rfc3339_seconds(*.at),
        .last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    TokenExpired {
        /// When it expired.
        at: SystemTime,
        /// Why the last fetch failed.
        last_error: Option<Arc<BrokerError>>,
    },
    /// The store has failed for longer than `max_stale` (or, for a
    /// rotating credential, `rotation.grace` when that is shorter).
    #[error(
        "its store has failed for longer than {} ({}){}{}",
        .key,
        humantime::format_duration(*.max_stale),
        if *.key == "max_stale" { "" } else { ", after which a rotation elsewhere may have retired the value" },
        .last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    PastMaxStale {
        /// The limit.
        max_stale: Duration,
        /// Its config key: `max_stale` or `rotation.grace`.
        key: &'static str,
        /// The store's last error (which names the store, the path and
        /// what went wrong).
        last_error: Option<Arc<BrokerError>>,
    },
}

impl BrokerError {
    /// Store answers that end the serving of a credential at once, when a
    /// refresh gets them: the document is gone. Everything else — outages,
    /// a document that went bad, and refusals (401/403, an expired token or
    /// a signature refused for clock skew, a failed login), which may pass
    /// too — keeps the last good value served stale until `max_stale`.
    /// (At start, only transient errors are retried: a refusal then stops
    /// the start with exit 64.)
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            BrokerError::Store {
                source: StoreError::NotFound { .. } | StoreError::Unsupported { .. },
                ..
            }
        )
    }

    /// Failures that may pass on their own (network, timeouts, 5xx, throttling).
    pub fn is_transient(&self) -> bool {
        matches!(self, BrokerError::Store { source, .. } if source.is_transient())
    }
}

/// Why the broker could not start: every credential that failed, each named.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A store could not be built.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Credentials whose first load failed.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Load(Vec<BrokerError>),
}

/// The credential cache, shared by the server and the refresher.
pub struct Broker {
    entries: BTreeMap<String, Arc<Entry>>,
    clock: Clock,
    reload: watch::Sender<u64>,
    /// Re-reads of single credentials asked of the refresher, by index in
    /// `entries`.
    requests: Arc<Requests>,
    stopping: CancellationToken,
    /// Every task the daemon spawns (the refresher, and the
    /// app's: dynamic keys' expiry, schedules, SIGHUP, metrics), so that
    /// shutdown can wait for them.
    tasks: TaskTracker,
}

impl Broker {
    /// Builds the stores, loads every credential once (all must load: the
    /// daemon never starts half-configured), then starts the refresher, which
    /// stops when `stopping` is cancelled.
    pub async fn start(
        config: &Config,
        env: &store::StoreEnv,
        stopping: CancellationToken,
    ) -> Result<Arc<Broker>, StartError> {
        let stores = store::build_all(config, env).await?;
        Self::start_with(config, &stores, stopping).await
    }

    /// `start` on stores already built (shared with the rotator).
    pub async fn start_with(
        config: &Config,
        stores: &BTreeMap<String, Arc<dyn store::SecretStore>>,
        stopping: CancellationToken,
    ) -> Result<Arc<Broker>, StartError> {
        let entries: BTreeMap<String, Arc<Entry>> = config
            .credentials
            .iter()
            .filter_map(|(name, cfg)| match &cfg.source {
                Source::Store { store, kind, .. } => Some((
                    name.clone(),
                    Arc::new(Entry::new(
                        Arc::clone(cfg),
                        Arc::clone(&stores[store]),
                        *kind,
                    )),
                )),
                Source::Dynamic(_) => None,
            })
            .collect();
        let requests = Arc::new(Requests::new(entries.len()));
        let broker = Arc::new(Broker {
            entries,
            clock: Clock::new(),
            reload: watch::Sender::new(0),
            requests,
            stopping,
            tasks: TaskTracker::new(),
        });
        // Subscribe to store changes before the first load, so a change made
        // while it runs is not missed.
        let changes = broker.subscribe_changes();
        broker.first_load().await?;
        // Every credential has its value: what a store kept for the burst
        // of first reads (a whole file's documents) can go.
        for store in stores.values() {
            store.forget_cached_reads();
        }
        let refresher = Refresher::new(broker.entries.values().cloned().collect(), broker.clock);
        broker.tasks.spawn(refresher.run(
            changes,
            broker.reload.subscribe(),
            Arc::clone(&broker.requests),
            broker.stopping.clone(),
        ));
        Ok(broker)
    }

    /// One change receiver per store that reports its changes, with the
    /// indices (in `entries`) of that store's credentials.
    fn subscribe_changes(&self) -> Vec<ChangingStore> {
        let mut by_store: BTreeMap<&str, Option<ChangingStore>> = BTreeMap::new();
        for (index, entry) in self.entries.values().enumerate() {
            let store = by_store.entry(entry.store.name()).or_insert_with(|| {
                entry.store.changes().map(|changes| ChangingStore {
                    changes,
                    members: Vec::new(),
                })
            });
            if let Some(store) = store {
                store.members.push(index);
            }
        }
        by_store.into_values().flatten().collect()
    }

    /// The first load of every entry: a passing store failure is retried
    /// (the socket is not created until every credential is in); anything
    /// else stops the start, naming every credential that failed.
    async fn first_load(&self) -> Result<(), StartError> {
        let mut loads = JoinSet::new();
        let mut pending = self.entries.values();
        let mut failures = Vec::new();
        loop {
            // At most FIRST_LOADS at once: enough to hide a network store's
            // latency, few enough that 10,000 credentials do not make
            // 10,000 tasks and reads at once.
            while loads.len() < FIRST_LOADS
                && let Some(entry) = pending.next()
            {
                let (entry, clock, stopping) =
                    (Arc::clone(entry), self.clock, self.stopping.clone());
                loads.spawn(async move {
                    let result = load_retrying(&entry, clock, &stopping).await;
                    (result, entry)
                });
            }
            let Some(joined) = loads.join_next().await else {
                break;
            };
            let (result, entry) = joined.expect("a credential load does not panic");
            match result {
                Ok(loaded) => {
                    tracing::info!(
                        credential = %entry.name(),
                        version = %loaded.version,
                        kind = %loaded.document.kind(),
                        "credential loaded"
                    );
                    entry.publish(loaded);
                }
                Err(e) => failures.push(e),
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        failures.sort_by_key(|e| e.to_string());
        Err(StartError::Load(failures))
    }

    /// The credential `name`.
    pub fn entry(&self, name: &str) -> Option<&Arc<Entry>> {
        self.entries.get(name)
    }

    /// Every credential, by name.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.entries.values()
    }

    /// The broker's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A lease on credential `name`.
    pub fn lease(&self, name: &str) -> Result<Lease, BrokerError> {
        self.entry(name)
            .ok_or_else(|| BrokerError::NotFound(name.to_owned()))?
            .lease(&self.clock)
    }

    /// The tracker of every task the daemon spawns; the app spawns its own
    /// there too, and waits for it at shutdown.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Re-reads every store now (SIGHUP).
    pub fn refresh_all(&self) {
        self.reload.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Reads credential `name` now and serves what it read, before
    /// returning (the refresher's own read may come later): after a
    /// write, a GetCredential sees the new value at once. A failed read
    /// changes nothing here; the refresher handles failures.
    pub async fn reload(&self, name: &str) {
        let Some(entry) = self.entries.get(name) else {
            return;
        };
        if let Ok(loaded) = entry.load(&self.clock).await {
            entry.publish(loaded);
        }
    }

    /// Re-reads now the document of credential `name` (after a rotation
    /// wrote it): every entry on the same store and path, and no other.
    pub fn refresh(&self, name: &str) {
        let Some(rotated) = self.entries.get(name) else {
            return;
        };
        for (index, entry) in self.entries.values().enumerate() {
            if Arc::ptr_eq(&entry.store, &rotated.store) && entry.path() == rotated.path() {
                self.requests.request(index);
            }
        }
    }

    /// Leases on `entry`: one at once, then one on every change, and a
    /// renewal halfway through each lease so a watcher never holds an
    /// expired one. Ends with an error when the credential becomes
    /// unavailable or the broker stops.
    pub fn watch(&self, entry: Arc<Entry>) -> LeaseStream {
        let changes = entry.subscribe();
        self.watch_with(changes, Renew::AtHalfLease, move |s, now| {
            entry.lease_from(s, now)
        })
    }

    /// A watch stream over any state that `changes` publishes: a lease
    /// (`lease` of the state at the time) at once and on every change, and
    /// as `renew` says; it ends after the first error.
    ///
    /// No task and no channel: the stream polls the watch receiver itself,
    /// so an open stream costs its receiver, its renewal timer and the last
    /// state, and changes that come faster than the client reads are
    /// folded into the newest one.
    pub fn watch_with<S, C, F>(&self, changes: C, renew: Renew, lease: F) -> LeaseStream
    where
        S: Send + Sync + Unpin + 'static,
        C: Stream<Item = S> + Send + Unpin + 'static,
        F: Fn(&S, SystemTime) -> Result<Lease, BrokerError> + Send + Unpin + 'static,
    {
        LeaseStream(Box::pin(Leases {
            changes,
            lease,
            clock: self.clock,
            renew,
            renewal: None,
            state: None,
            stopping: Box::pin(self.stopping.clone().cancelled_owned()),
            done: false,
        }))
    }
}

/// The leases of a watch stream (see [`Broker::watch_with`]); ends after
/// the first error.
pub struct LeaseStream(Pin<Box<dyn Stream<Item = Result<Lease, BrokerError>> + Send>>);

impl LeaseStream {
    /// The next lease, or `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<Result<Lease, BrokerError>> {
        std::future::poll_fn(|cx| self.0.as_mut().poll_next(cx)).await
    }
}

impl Stream for LeaseStream {
    type Item = Result<Lease, BrokerError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

struct Leases<S, C, F> {
    /// Yields the state at once, then on every change (the newest only).
    changes: C,
    lease: F,
    clock: Clock,
    renew: Renew,
    /// Halfway through the last lease (`Renew::AtHalfLease`).
    renewal: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The state the last lease was made of, to renew it.
    state: Option<S>,
    stopping: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    done: bool,
}

impl<S, C, F> Leases<S, C, F>
where
    F: Fn(&S, SystemTime) -> Result<Lease, BrokerError>,
{
    /// A lease of `state`, with the renewal it calls for.
    fn lease_of(&mut self, state: &S) -> Result<Lease, BrokerError> {
        let leased = (self.lease)(state, self.clock.now());
        match (&leased, self.renew) {
            (Ok(l), Renew::AtHalfLease) => {
                let half = l
                    .expires_at
                    .duration_since(l.issued_at)
                    .unwrap_or(Duration::ZERO)
                    / 2;
                let at = self.clock.instant_at(l.issued_at + half);
                match self.renewal.as_mut() {
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => self.renewal = Some(Box::pin(tokio::time::sleep_until(at))),
                }
            }
            (Ok(_), Renew::OnChangeOnly) => {}
            (Err(_), _) => self.done = true,
        }
        leased
    }
}

impl<S, C, F> Stream for Leases<S, C, F>
where
    S: Send + Sync + Unpin + 'static,
    C: Stream<Item = S> + Unpin,
    F: Fn(&S, SystemTime) -> Result<Lease, BrokerError> + Unpin,
{
    type Item = Result<Lease, BrokerError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.stopping.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(Some(Err(BrokerError::ShuttingDown)));
        }
        match Pin::new(&mut this.changes).poll_next(cx) {
            Poll::Ready(Some(state)) => {
                let leased = this.lease_of(&state);
                this.state = Some(state);
                return Poll::Ready(Some(leased));
            }
            // The state's owner is gone (the daemon is stopping).
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if let Some(sleep) = this.renewal.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
            && let Some(state) = this.state.take()
        {
            let leased = this.lease_of(&state);
            this.state = Some(state);
            return Poll::Ready(Some(leased));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";

    fn doc(token_digit: char) -> String {
        format!(
            r#"{{"account_sid":"{AC}","auth_token":"{}"}}"#,
            std::iter::repeat_n(token_digit, 32).collect::<String>()
        )
    }

    fn setup(dir: &Path, extra: &str) -> Config {
        let file = dir.join("secrets.json");
        std::fs::write(&file, format!(r#"{{"a": {}}}"#, doc('1'))).unwrap();
        config::parse(
            Path::new("t.toml"),
            &format!(
                "[stores.f]\ntype = \"file\"\npath = \"{}\"\n[credentials.a]\nstore = \"f\"\npath = \"a\"\n{extra}",
                file.display()
            ),
        )
        .unwrap()
    }

    /// A store in memory that counts the reads of each path.
    #[derive(Default)]
    struct CountingStore {
        docs: std::sync::Mutex<BTreeMap<String, String>>,
        reads: std::sync::Mutex<BTreeMap<String, u32>>,
        /// Reads panic while set (a bug in a store client).
        panics: std::sync::atomic::AtomicBool,
        /// Reads (counted first) wait while a test holds this for writing.
        gate: tokio::sync::RwLock<()>,
        /// The store's change counter.
        changes: watch::Sender<u64>,
    }

    impl CountingStore {
        fn reads(&self, path: &str) -> u32 {
            self.reads.lock().unwrap().get(path).copied().unwrap_or(0)
        }
    }

    #[async_trait::async_trait]
    impl store::SecretStore for CountingStore {
        fn name(&self) -> &str {
            "f"
        }

        fn changes(&self) -> Option<watch::Receiver<u64>> {
            Some(self.changes.subscribe())
        }

        async fn read(&self, path: &str) -> Result<store::Document, store::StoreError> {
            *self.reads.lock().unwrap().entry(path.into()).or_default() += 1;
            let _open = self.gate.read().await;
            if self.panics.load(std::sync::atomic::Ordering::SeqCst) {
                panic!("a bug in the store client");
            }
            let doc = self.docs.lock().unwrap()[path].clone();
            Ok(store::Document {
                version: store::digest_version(doc.as_bytes()),
                bytes: crate::secret::SecretBytes::new(doc.into_bytes()),
            })
        }

        async fn write(
            &self,
            path: &str,
            _: crate::secret::SecretBytes,
            _: Option<&str>,
        ) -> Result<String, store::StoreError> {
            Err(store::StoreError::Rejected {
                store: "f".into(),
                path: path.into(),
                detail: "read-only".into(),
            })
        }
    }

    /// After a rotation writes credential `a`, only `a`'s document is read
    /// again; `b`, on the same store, waits for its own refresh.
    #[tokio::test(start_paused = true)]
    async fn refresh_rereads_only_that_credential() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(
            dir.path(),
            "refresh_interval = \"1h\"\n[credentials.b]\nstore = \"f\"\npath = \"b\"\nrefresh_interval = \"1h\"\n",
        );
        let counting = Arc::new(CountingStore::default());
        for path in ["a", "b"] {
            counting.docs.lock().unwrap().insert(path.into(), doc('1'));
        }
        let stores: BTreeMap<String, Arc<dyn store::SecretStore>> =
            BTreeMap::from([("f".to_owned(), Arc::clone(&counting) as _)]);
        let broker = Broker::start_with(&cfg, &stores, CancellationToken::new())
            .await
            .unwrap();
        let b_reads = counting.reads("b");
        for path in ["a", "b"] {
            counting.docs.lock().unwrap().insert(path.into(), doc('2'));
        }
        let mut a = broker.entry("a").unwrap().subscribe();
        drop(a.borrow_and_update());
        broker.refresh("a");
        a.changed().await.unwrap();
        // Every task that was woken has run by now (one thread, paused clock).
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(counting.reads("b"), b_reads, "b was read again");
        assert_eq!(
            broker.lease("b").unwrap().loaded.version,
            store::digest_version(doc('1').as_bytes())
        );
        broker.refresh_all();
        let mut b = broker.entry("b").unwrap().subscribe();
        drop(b.borrow_and_update());
        b.changed().await.unwrap();
        assert_eq!(counting.reads("b"), b_reads + 1);
    }

    /// A broker on a `CountingStore` holding credential `a` and `c0` …
    /// `c{n-1}`, each refreshed every `interval`.
    async fn counting_broker(
        dir: &Path,
        n: usize,
        interval: &str,
        stopping: CancellationToken,
    ) -> (Arc<Broker>, Arc<CountingStore>, Vec<String>) {
        let mut extra = format!("refresh_interval = \"{interval}\"\n");
        let mut paths = vec!["a".to_owned()];
        for i in 0..n {
            extra += &format!(
                "[credentials.c{i}]\nstore = \"f\"\npath = \"c{i}\"\nrefresh_interval = \"{interval}\"\n"
            );
            paths.push(format!("c{i}"));
        }
        let cfg = setup(dir, &extra);
        let counting = Arc::new(CountingStore::default());
        for path in &paths {
            counting.docs.lock().unwrap().insert(path.clone(), doc('1'));
        }
        let stores: BTreeMap<String, Arc<dyn store::SecretStore>> =
            BTreeMap::from([("f".to_owned(), Arc::clone(&counting) as _)]);
        let broker = Broker::start_with(&cfg, &stores, stopping).await.unwrap();
        (broker, counting, paths)
    }

    /// The one refresher reads every credential again within its
    /// `refresh_interval`, once each; a change the store reports has every
    /// credential of it read once more, after the burst settles.
    #[tokio::test(start_paused = true)]
    async fn the_refresher_rereads_every_credential_on_time_and_on_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let (_broker, counting, paths) =
            counting_broker(dir.path(), 200, "1m", CancellationToken::new()).await;
        let reads = || paths.iter().map(|p| counting.reads(p)).collect::<Vec<_>>();
        assert_eq!(reads(), vec![1; paths.len()], "first load");
        // The paused clock runs every task that can run before it moves.
        tokio::time::sleep(Duration::from_secs(53)).await;
        assert_eq!(
            reads(),
            vec![1; paths.len()],
            "read before 0.9 × the interval"
        );
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(
            reads(),
            vec![2; paths.len()],
            "not each read once per interval"
        );
        // A burst of changes: one re-read of each credential.
        for _ in 0..3 {
            counting.changes.send_modify(|n| *n += 1);
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            reads(),
            vec![3; paths.len()],
            "not each read once on a change"
        );
    }

    /// However often a re-read is asked for while the credential is being
    /// read, it is read once more after that read, and the requests do not
    /// pile up.
    #[tokio::test(start_paused = true)]
    async fn rereads_asked_for_during_a_read_fold_into_one() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, counting, _) =
            counting_broker(dir.path(), 1, "1h", CancellationToken::new()).await;
        let gate = counting.gate.write().await;
        broker.refresh("a");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(counting.reads("a"), 2, "the read did not start");
        for _ in 0..1000 {
            broker.refresh("a");
            assert!(broker.requests.len() <= 1, "requests pile up");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(counting.reads("a"), 2, "a second read while the first runs");
        drop(gate);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(counting.reads("a"), 3, "not read once more after the read");
        assert_eq!(counting.reads("c0"), 1, "another credential was read");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(counting.reads("a"), 3);
    }

    /// The refresher stops when the broker stops, even while a store holds
    /// a read of it forever.
    #[tokio::test(start_paused = true)]
    async fn the_refresher_stops_though_a_read_hangs() {
        let dir = tempfile::tempdir().unwrap();
        let stopping = CancellationToken::new();
        let (broker, counting, _) = counting_broker(dir.path(), 0, "1h", stopping.clone()).await;
        let _gate = counting.gate.write().await;
        broker.refresh("a");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(counting.reads("a"), 2, "the read did not start");
        stopping.cancel();
        broker.tasks().close();
        tokio::time::timeout(Duration::from_secs(1), broker.tasks().wait())
            .await
            .expect("the refresher waited for a hung read");
    }

    /// A credential keeps the kind of its first document (no `kind` in the
    /// config): a document of another kind is refused, and the last good
    /// value served stale, saying why.
    #[tokio::test(start_paused = true)]
    async fn a_document_of_another_kind_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path(), "refresh_interval = \"1h\"\n");
        let broker = Broker::start(&cfg, &Default::default(), CancellationToken::new())
            .await
            .unwrap();
        let entry = broker.entry("a").unwrap();
        assert_eq!(entry.kind(), crate::credential::Kind::AuthToken);
        let mut a = entry.subscribe();
        drop(a.borrow_and_update());
        let key = format!(
            r#"{{"a": {{"account_sid":"{AC}","api_key_sid":"SK{}","api_key_secret":"{}"}}}}"#,
            "0".repeat(32),
            "k".repeat(32)
        );
        std::fs::write(dir.path().join("secrets.json"), key).unwrap();
        broker.refresh("a");
        a.changed().await.unwrap();
        let lease = broker.lease("a").unwrap();
        assert!(lease.stale_since.is_some());
        let error = a
            .borrow_and_update()
            .last_error
            .as_ref()
            .unwrap()
            .to_string();
        assert!(
            error.contains("credential `a`")
                && error.contains(
                    "an api_key document, where this credential's first was an auth_token one"
                ),
            "{error}"
        );
        assert_eq!(entry.kind(), crate::credential::Kind::AuthToken);
    }

    /// A refresh task that panics is restarted, and its credential is
    /// UNAVAILABLE (not served as fresh) until the new task reads it.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_refresh_is_restarted_and_unavailable_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path(), "refresh_interval = \"1h\"\n");
        let counting = Arc::new(CountingStore::default());
        counting.docs.lock().unwrap().insert("a".into(), doc('1'));
        let stores: BTreeMap<String, Arc<dyn store::SecretStore>> =
            BTreeMap::from([("f".to_owned(), Arc::clone(&counting) as _)]);
        let broker = Broker::start_with(&cfg, &stores, CancellationToken::new())
            .await
            .unwrap();
        let mut a = broker.entry("a").unwrap().subscribe();
        drop(a.borrow_and_update());
        counting
            .panics
            .store(true, std::sync::atomic::Ordering::SeqCst);
        broker.refresh("a");
        tokio::time::timeout(Duration::from_secs(60), a.changed())
            .await
            .expect("the credential's state did not change after its refresh task panicked")
            .unwrap();
        let Err(e) = broker.lease("a") else {
            panic!("served after its refresh task panicked");
        };
        assert!(
            e.to_string().contains("refresh task stopped unexpectedly"),
            "{e}"
        );

        // The restarted task reads again (after a backoff) and serves.
        counting
            .panics
            .store(false, std::sync::atomic::Ordering::SeqCst);
        counting.docs.lock().unwrap().insert("a".into(), doc('2'));
        let lease = tokio::time::timeout(Duration::from_secs(3600), async {
            loop {
                a.changed().await.unwrap();
                if let Ok(lease) = broker.lease("a") {
                    break lease;
                }
            }
        })
        .await
        .expect("not served again within the hour: the refresh task was not restarted");
        assert_eq!(
            lease.loaded.version,
            store::digest_version(doc('2').as_bytes())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lease_runs_for_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path(), "lease_ttl = \"2m\"\n");
        let broker = Broker::start(&cfg, &Default::default(), CancellationToken::new())
            .await
            .unwrap();
        let lease = broker.lease("a").unwrap();
        assert_eq!(
            lease.expires_at.duration_since(lease.issued_at).unwrap(),
            Duration::from_secs(120)
        );
        assert!(matches!(broker.lease("b"), Err(BrokerError::NotFound(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn outage_goes_stale_then_unavailable_then_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(
            dir.path(),
            "refresh_interval = \"10s\"\nmax_stale = \"1m\"\nlease_ttl = \"5m\"\n",
        );
        let broker = Broker::start(&cfg, &Default::default(), CancellationToken::new())
            .await
            .unwrap();
        let file = dir.path().join("secrets.json");
        let good = std::fs::read(&file).unwrap();
        std::fs::write(&file, b"{ broken").unwrap();
        broker.refresh_all();
        let entry = Arc::clone(broker.entry("a").unwrap());
        let mut rx = entry.subscribe();
        rx.changed().await.unwrap();
        let stale = broker.lease("a").unwrap();
        let since = stale.stale_since.expect("stale after a failed read");
        // A stale lease never runs past max_stale after the store last
        // confirmed the value (which is no later than the first failure).
        let confirmed = entry.snapshot().confirmed_at.expect("confirmed at load");
        assert!(confirmed <= since);
        assert_eq!(stale.expires_at, confirmed + Duration::from_secs(60));

        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(matches!(
            broker.lease("a"),
            Err(BrokerError::Unavailable { .. })
        ));
        // The refresher marks it unavailable, which wakes watchers.
        while rx.borrow_and_update().unavailable.is_none() {
            rx.changed().await.unwrap();
        }

        std::fs::write(&file, good).unwrap();
        broker.refresh_all();
        rx.changed().await.unwrap();
        let lease = broker.lease("a").unwrap();
        assert!(lease.stale_since.is_none());
    }

    /// A rotating credential whose store fails is served stale only until
    /// rotation.grace after the store last confirmed it (when that is
    /// shorter than max_stale): a rotation elsewhere could retire the value
    /// then. Every lease, fresh or stale, ends by that moment too.
    #[tokio::test(start_paused = true)]
    async fn a_rotating_credential_is_never_served_past_its_earliest_retirement() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(
            dir.path(),
            "refresh_interval = \"10s\"\nmax_stale = \"1h\"\nlease_ttl = \"30s\"\n\
             [credentials.a.rotation]\nschedule = \"0 0 3 * * *\"\ngrace = \"2m\"\n",
        );
        let broker = Broker::start(&cfg, &Default::default(), CancellationToken::new())
            .await
            .unwrap();
        let entry = Arc::clone(broker.entry("a").unwrap());
        let confirmed = entry.snapshot().confirmed_at.unwrap();
        let fresh = broker.lease("a").unwrap();
        assert_eq!(
            fresh.retire_bound,
            Some(confirmed + Duration::from_secs(120))
        );

        std::fs::write(dir.path().join("secrets.json"), b"{ broken").unwrap();
        broker.refresh_all();
        let mut rx = entry.subscribe();
        rx.changed().await.unwrap();
        let confirmed = entry.snapshot().confirmed_at.unwrap();
        tokio::time::advance(Duration::from_secs(100)).await;
        let stale = broker.lease("a").unwrap();
        assert!(stale.stale_since.is_some());
        assert_eq!(
            stale.expires_at,
            confirmed + Duration::from_secs(120),
            "a stale lease outlives the earliest retirement"
        );
        tokio::time::advance(Duration::from_secs(21)).await;
        let Err(e) = broker.lease("a") else {
            panic!("served past rotation.grace after the last confirmed read, with max_stale 1h");
        };
        assert!(
            e.to_string().contains("longer than rotation.grace (2m)")
                && e.to_string().contains("may have retired the value"),
            "{e}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscription_yields_now_then_only_the_newest_change() {
        use tokio_stream::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path(), "refresh_interval = \"1h\"\n");
        let broker = Broker::start(&cfg, &Default::default(), CancellationToken::new())
            .await
            .unwrap();
        let entry = Arc::clone(broker.entry("a").unwrap());
        let quiet = Duration::from_millis(10);
        let mut sub = entry.subscribe();
        let first = sub.next().await.unwrap();
        assert!(first.loaded.is_some() && first.stale_since.is_none());
        assert!(
            tokio::time::timeout(quiet, sub.next()).await.is_err(),
            "nothing new"
        );

        // Two changes before the next read: one item, the newer.
        let now = broker.clock().now();
        entry.fail(now, BrokerError::RefreshPanicked("x".into()), false);
        entry.fail(now, BrokerError::RefreshPanicked("y".into()), true);
        let got = sub.next().await.unwrap();
        assert!(got.unavailable.is_some() && got.stale_since.is_some());
        assert!(tokio::time::timeout(quiet, sub.next()).await.is_err());

        // `changed` waits for a change made after subscribing.
        let mut rx = entry.subscribe();
        let waiter = tokio::spawn(async move { rx.changed().await.unwrap() });
        tokio::time::sleep(quiet).await;
        assert!(!waiter.is_finished(), "no change yet");
        entry.fail(now, BrokerError::RefreshPanicked("z".into()), true);
        tokio::time::timeout(quiet, waiter).await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn watch_pushes_changes_and_renews_leases() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(
            dir.path(),
            "lease_ttl = \"1m\"\nrefresh_interval = \"1h\"\n",
        );
        let broker = Broker::start(&cfg, &Default::default(), CancellationToken::new())
            .await
            .unwrap();
        let mut rx = broker.watch(Arc::clone(broker.entry("a").unwrap()));
        let first = rx.recv().await.unwrap().unwrap();
        // Nothing changes: a renewal arrives halfway through the lease.
        let renewed = rx.recv().await.unwrap().unwrap();
        assert_eq!(renewed.loaded.version, first.loaded.version);
        assert_eq!(
            renewed.issued_at.duration_since(first.issued_at).unwrap(),
            Duration::from_secs(30)
        );
        let file = dir.path().join("secrets.json");
        std::fs::write(&file, format!(r#"{{"a": {}}}"#, doc('2'))).unwrap();
        broker.refresh_all();
        let changed = rx.recv().await.unwrap().unwrap();
        assert_ne!(changed.loaded.version, first.loaded.version);
    }

    #[tokio::test(start_paused = true)]
    async fn start_fails_naming_every_bad_credential() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = setup(dir.path(), "");
        let mut b = (*cfg.credentials["a"]).clone();
        b.name = "b".into();
        b.source = Source::Store {
            store: "f".into(),
            path: "missing".into(),
            kind: None,
        };
        cfg.credentials.insert("b".into(), Arc::new(b));
        let err = Broker::start(&cfg, &Default::default(), CancellationToken::new())
            .await
            .err()
            .expect("a missing document stops the start");
        let msg = err.to_string();
        assert!(
            msg.contains("credential `b`") && msg.contains("missing"),
            "{msg}"
        );
    }
}
