//! One credential's cache entry: its last good document, its staleness,
//! and the lease arithmetic that decides what may be handed out.
//!
//! The state lives in a `tokio::sync::watch` channel: readers take a cheap
//! snapshot, and watchers are woken by the same write that changes it.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use tokio_stream::Stream;
use tokio_util::sync::ReusableBoxFuture;

use super::{BrokerError, Unavailability};
use crate::clock::Clock;
use crate::{
    config::CredentialConfig,
    credential::{CredentialDocument, Kind, parse_document},
    store::SecretStore,
};

/// A document that parsed and validated.
///
/// `Debug` on this, `Snapshot` and `Lease` is written by hand, as on the
/// secret types they hold (see `credential::Secret`).
pub struct Loaded {
    /// The parsed document.
    pub document: CredentialDocument,
    /// The store's version id.
    pub version: String,
    /// When it was read.
    pub loaded_at: SystemTime,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("document", &self.document)
            .field("version", &self.version)
            .field("loaded_at", &self.loaded_at)
            .finish_non_exhaustive()
    }
}

/// What the broker knows of a credential right now.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// The last good value, if there ever was one.
    pub loaded: Option<Arc<Loaded>>,
    /// Set from the first failed refresh after a good one until the next good one.
    pub stale_since: Option<SystemTime>,
    /// When the store last confirmed the value (a successful read, changed
    /// or not): `max_stale` counts from here, so no value older than
    /// `max_stale` is ever served.
    pub confirmed_at: Option<SystemTime>,
    /// Why nothing may be served (never loaded, or stale past `max_stale`).
    pub unavailable: Option<Unavailability>,
    /// Why the last refresh failed, while stale: named in the UNAVAILABLE
    /// once `max_stale` has passed.
    pub last_error: Option<Arc<BrokerError>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("loaded", &self.loaded)
            .field("stale_since", &self.stale_since)
            .field("confirmed_at", &self.confirmed_at)
            .field("unavailable", &self.unavailable)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

/// A credential handed out: valid until `expires_at`.
#[derive(Clone)]
pub struct Lease {
    /// Credential name.
    pub name: String,
    /// The value served.
    pub loaded: Arc<Loaded>,
    /// When this lease was issued.
    pub issued_at: SystemTime,
    /// When it ends.
    pub expires_at: SystemTime,
    /// Set when the store could not be read at the last refresh.
    pub stale_since: Option<SystemTime>,
    /// For a rotating credential, the earliest moment its value could be
    /// retired (see [`Entry::retire_bound`]).
    pub retire_bound: Option<SystemTime>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("loaded", &self.loaded)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("stale_since", &self.stale_since)
            .finish_non_exhaustive()
    }
}

/// A configured credential and its state.
pub struct Entry {
    /// Its config.
    pub config: Arc<CredentialConfig>,
    pub(super) store: Arc<dyn SecretStore>,
    /// Its configured kind (`None`: read off the document).
    kind: Option<Kind>,
    /// The kind of the first document loaded, when none is configured:
    /// later documents must be of it (an `oauth_client`'s issuer, or a
    /// stored one, was chosen by it).
    loaded_kind: std::sync::OnceLock<Kind>,
    /// The current snapshot, and a count of its changes.
    state: Published,
}

/// An entry's snapshot and its changes: what `tokio::sync::watch` does for
/// the entry, in a third of the memory (watch keeps eight wait lists per
/// channel; 10,000 entries need one each). The count moves under the
/// write lock, so a reader holding the read lock sees both together.
struct Published {
    value: std::sync::RwLock<Snapshot>,
    version: AtomicU64,
    changed: tokio::sync::Notify,
}

impl Published {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.value.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f`; when it says it changed something, waiters are woken.
    fn send_if_modified(&self, f: impl FnOnce(&mut Snapshot) -> bool) -> bool {
        let mut value = self.value.write().unwrap_or_else(|e| e.into_inner());
        let changed = f(&mut value);
        if changed {
            self.version.fetch_add(1, Ordering::Release);
        }
        drop(value);
        if changed {
            self.changed.notify_waiters();
        }
        changed
    }
}

/// Follows an entry's snapshot, like a `tokio::sync::watch::Receiver`: as a
/// [`Stream`] it yields the snapshot at once and then on every change (the
/// newest only).
pub struct Subscription {
    entry: Arc<Entry>,
    /// The version last seen (at first, the one current when subscribed).
    seen: u64,
    /// Whether the stream has yielded its first snapshot.
    started: bool,
    /// The stream's wait for the next change, boxed once and reused.
    wait: Option<ReusableBoxFuture<'static, ()>>,
}

impl Subscription {
    /// The current snapshot, marked seen.
    pub fn borrow_and_update(&mut self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        let value = self.entry.state.read();
        self.seen = self.entry.state.version.load(Ordering::Acquire);
        value
    }

    /// Waits for a snapshot newer than the last one seen, and marks it
    /// seen. Never fails (the subscription keeps the entry alive); the
    /// `Result` is `watch::Receiver::changed`'s shape.
    pub async fn changed(&mut self) -> Result<(), std::convert::Infallible> {
        wait_for_change(Arc::clone(&self.entry), self.seen).await;
        self.seen = self.entry.state.version.load(Ordering::Acquire);
        Ok(())
    }
}

/// Returns once `entry`'s version is not `seen`.
async fn wait_for_change(entry: Arc<Entry>, seen: u64) {
    loop {
        let notified = entry.state.changed.notified();
        tokio::pin!(notified);
        // Registered before the check, so a change between the check and
        // the wait still wakes it.
        notified.as_mut().enable();
        if entry.state.version.load(Ordering::Acquire) != seen {
            return;
        }
        notified.await;
    }
}

impl Stream for Subscription {
    type Item = Snapshot;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Snapshot>> {
        let this = self.get_mut();
        loop {
            let (snapshot, version) = {
                let value = this.entry.state.read();
                let version = this.entry.state.version.load(Ordering::Acquire);
                (
                    (version != this.seen || !this.started).then(|| value.clone()),
                    version,
                )
            };
            if let Some(snapshot) = snapshot {
                this.seen = version;
                this.started = true;
                // The wait was for an older version: made anew next time.
                this.wait = this.wait.take().map(|mut w| {
                    w.set(wait_for_change(Arc::clone(&this.entry), version));
                    w
                });
                return Poll::Ready(Some(snapshot));
            }
            let (entry, seen) = (&this.entry, this.seen);
            let wait = this.wait.get_or_insert_with(|| {
                ReusableBoxFuture::new(wait_for_change(Arc::clone(entry), seen))
            });
            match wait.poll(cx) {
                Poll::Ready(()) => wait.set(wait_for_change(Arc::clone(&this.entry), this.seen)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and versions only: the snapshot holds secrets.
        let snapshot = self.state.read();
        f.debug_struct("Entry")
            .field("name", &self.config.name)
            .field(
                "version",
                &snapshot.loaded.as_ref().map(|l| l.version.as_str()),
            )
            .field("stale_since", &snapshot.stale_since)
            .finish_non_exhaustive()
    }
}

/// What one refresh found.
pub(super) enum Refreshed {
    /// The value changed (or recovered): watchers were pushed.
    Changed,
    /// Same version as before.
    Unchanged,
}

impl Entry {
    /// The stored credential `config`, in `store` (at the path its config
    /// gives).
    pub(super) fn new(
        config: Arc<CredentialConfig>,
        store: Arc<dyn SecretStore>,
        kind: Option<Kind>,
    ) -> Self {
        Self {
            config,
            store,
            kind,
            loaded_kind: std::sync::OnceLock::new(),
            state: Published {
                value: std::sync::RwLock::new(Snapshot {
                    unavailable: Some(Unavailability::NotLoaded),
                    ..Snapshot::default()
                }),
                version: AtomicU64::new(0),
                changed: tokio::sync::Notify::new(),
            },
        }
    }

    /// Where in its store the document is (read from the config, which
    /// holds it once for the broker, the rotator and the issuers).
    pub(super) fn path(&self) -> &str {
        match &self.config.source {
            crate::config::Source::Store { path, .. } => path,
            // Entries are made for stored credentials only.
            crate::config::Source::Dynamic(_) => "",
        }
    }

    /// The credential's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The kind to report in ListCredentials: the configured one, else the
    /// first document's.
    pub fn kind(&self) -> Kind {
        self.kind
            .or_else(|| self.loaded_kind.get().copied())
            .unwrap_or(Kind::AuthToken)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.state.read().clone()
    }

    /// Follows every change of the snapshot (see [`Subscription`]).
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        Subscription {
            entry: Arc::clone(self),
            seen: self.state.version.load(Ordering::Acquire),
            started: false,
            wait: None,
        }
    }

    /// The instant past which a stale value may no longer be served.
    pub fn stale_deadline(&self, snapshot: &Snapshot) -> Option<SystemTime> {
        stale_deadline(snapshot, self.stale_limit().0)
    }

    /// How long a value may be served stale, and the key that says so:
    /// `max_stale`, or for a rotating credential `rotation.grace` when that
    /// is shorter. A rotation elsewhere may start right after the store
    /// last confirmed the value, and retires it `grace` later: a broker
    /// that cannot read the store never serves it past then.
    fn stale_limit(&self) -> (Duration, &'static str) {
        match &self.config.rotation {
            Some(r) if r.grace < self.config.max_stale => (r.grace, "rotation.grace"),
            _ => (self.config.max_stale, "max_stale"),
        }
    }

    /// The UNAVAILABLE reason once a stale value may no longer be served:
    /// the limit, and the store's last error (which names the store, the
    /// path and what went wrong).
    fn past_max_stale(&self, last_error: Option<Arc<BrokerError>>) -> Unavailability {
        let (max_stale, key) = self.stale_limit();
        Unavailability::PastMaxStale {
            max_stale,
            key,
            last_error,
        }
    }

    /// The earliest moment `snapshot`'s value could be retired by a
    /// rotation elsewhere: `rotation.grace` after the store last confirmed
    /// it. Nothing handed out on it (a lease, an Access Token signed with
    /// it) should outlive that.
    pub fn retire_bound(&self, snapshot: &Snapshot) -> Option<SystemTime> {
        let grace = self.config.rotation.as_ref()?.grace;
        snapshot.confirmed_at?.checked_add(grace)
    }

    /// A lease on `snapshot` at `now`, or why there is none.
    pub fn lease_from(&self, snapshot: &Snapshot, now: SystemTime) -> Result<Lease, BrokerError> {
        let unavailable = |why: Unavailability| BrokerError::Unavailable {
            name: self.name().to_owned(),
            why,
        };
        if let Some(why) = &snapshot.unavailable {
            return Err(unavailable(why.clone()));
        }
        let Some(loaded) = &snapshot.loaded else {
            return Err(unavailable(Unavailability::NotLoaded));
        };
        let mut expires_at = now + self.config.lease_ttl;
        if let Some(deadline) = self.stale_deadline(snapshot) {
            if now >= deadline {
                return Err(unavailable(
                    self.past_max_stale(snapshot.last_error.clone()),
                ));
            }
            expires_at = expires_at.min(deadline);
        }
        let retire_bound = self.retire_bound(snapshot);
        if let Some(bound) = retire_bound {
            expires_at = expires_at.min(bound);
        }
        Ok(Lease {
            name: self.name().to_owned(),
            loaded: Arc::clone(loaded),
            issued_at: now,
            expires_at,
            stale_since: snapshot.stale_since,
            retire_bound,
        })
    }

    /// A lease on the current value.
    pub fn lease(&self, clock: &Clock) -> Result<Lease, BrokerError> {
        self.lease_from(&self.state.read(), clock.now())
    }

    /// Reads and parses the document, without touching the state.
    pub(super) async fn load(&self, clock: &Clock) -> Result<Loaded, BrokerError> {
        let started = tokio::time::Instant::now();
        let read = self.store.read(self.path()).await;
        let m = crate::metrics::metrics();
        let store = crate::metrics::StoreLabels {
            store: self.store.name().to_owned(),
        };
        m.store_latency
            .get_or_create(&store)
            .observe(started.elapsed().as_secs_f64());
        let doc = read.map_err(|e| {
            m.store_errors
                .get_or_create(&crate::metrics::StoreErrorLabels {
                    store: store.store.clone(),
                    kind: if e.is_transient() {
                        "transient"
                    } else {
                        "permanent"
                    }
                    .to_owned(),
                })
                .inc();
            BrokerError::Store {
                name: self.name().to_owned(),
                source: e,
            }
        })?;
        let document = parse_document(self.name(), doc.bytes.expose_secret(), self.kind)?;
        // A credential keeps the kind of its first document: its issuer
        // (stored, or an OAuth app's bearer tokens) was chosen by it.
        let first = *self.loaded_kind.get_or_init(|| document.kind());
        if document.kind() != first {
            return Err(crate::credential::DocumentError {
                credential: self.name().to_owned(),
                field: "document".into(),
                problem: format!(
                    "an {} document, where this credential's first was an {} one: a credential keeps its kind (restart the daemon to change it)",
                    document.kind(),
                    first
                ),
            }
            .into());
        }
        Ok(Loaded {
            document,
            version: doc.version,
            loaded_at: clock.now(),
        })
    }

    /// Publishes a freshly loaded value; pushes watchers only if it differs.
    pub(super) fn publish(&self, loaded: Loaded) -> Refreshed {
        let changed = self.state.send_if_modified(|s| {
            let same = s
                .loaded
                .as_ref()
                .is_some_and(|l| l.version == loaded.version)
                && s.stale_since.is_none()
                && s.unavailable.is_none();
            if same {
                // Confirmed, unchanged: no news for watchers.
                s.confirmed_at = Some(loaded.loaded_at);
                return false;
            }
            *s = Snapshot {
                confirmed_at: Some(loaded.loaded_at),
                loaded: Some(Arc::new(loaded)),
                stale_since: None,
                unavailable: None,
                last_error: None,
            };
            true
        });
        if changed {
            Refreshed::Changed
        } else {
            Refreshed::Unchanged
        }
    }

    /// Records a failed refresh at `now`. A passing failure (or a document
    /// that went bad) turns the value stale, and unavailable once
    /// `max_stale` has passed; a permanent store error (the secret is gone,
    /// access was revoked) makes it unavailable at once.
    pub(super) fn fail(&self, now: SystemTime, error: BrokerError, permanent: bool) {
        let text = error.to_string();
        let error = Arc::new(error);
        self.state.send_if_modified(|s| {
            if s.loaded.is_none() || permanent {
                let changed = s.unavailable.as_ref().map(ToString::to_string) != Some(text);
                s.unavailable = Some(Unavailability::Failed(error));
                if s.stale_since.is_none() && s.loaded.is_some() {
                    s.stale_since = Some(now);
                }
                return changed;
            }
            if s.last_error.as_ref().map(ToString::to_string) != Some(text) {
                s.last_error = Some(error);
            }
            match s.stale_since {
                None => {
                    s.stale_since = Some(now);
                    true
                }
                Some(_)
                    if stale_deadline(s, self.stale_limit().0).is_some_and(|d| now >= d)
                        && s.unavailable.is_none() =>
                {
                    s.unavailable = Some(self.past_max_stale(s.last_error.clone()));
                    true
                }
                Some(_) => false,
            }
        });
    }

    /// How long until the current value should be re-read at the latest.
    pub(super) fn refresh_interval(&self) -> Duration {
        self.config.refresh_interval
    }
}

/// The instant past which `snapshot`'s stale value may no longer be served:
/// `max_stale` after the store last confirmed it (no later than the first
/// failure).
fn stale_deadline(snapshot: &Snapshot, max_stale: Duration) -> Option<SystemTime> {
    snapshot
        .stale_since
        .map(|since| snapshot.confirmed_at.unwrap_or(since).min(since) + max_stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    const OLD: &str = "fedcba9876543210fedcba9876543210";
    const PENDING: &str = "0badc0de0badc0de0badc0de0badc0de";

    /// Every broker type that holds a secret shows none in `Debug`.
    #[test]
    fn debug_of_loaded_snapshot_and_lease_hides_secrets() {
        let doc = format!(
            r#"{{"account_sid":"{AC}","auth_token":"{TOKEN}",
                "pending":{{"auth_token":"{PENDING}"}},
                "previous":{{"auth_token":"{OLD}","retire_at":"2026-01-01T00:00:00Z"}}}}"#
        );
        let document = parse_document("verify", doc.as_bytes(), None).unwrap();
        let loaded = Arc::new(Loaded {
            document,
            version: "7".into(),
            loaded_at: SystemTime::UNIX_EPOCH,
        });
        let snapshot = Snapshot {
            loaded: Some(Arc::clone(&loaded)),
            ..Snapshot::default()
        };
        let lease = Lease {
            name: "verify".into(),
            loaded,
            issued_at: SystemTime::UNIX_EPOCH,
            expires_at: SystemTime::UNIX_EPOCH,
            stale_since: None,
            retire_bound: None,
        };
        for shown in [
            format!("{:?}", lease.loaded),
            format!("{snapshot:?}"),
            format!("{lease:?}"),
        ] {
            for secret in [TOKEN, OLD, PENDING] {
                assert!(!shown.contains(secret), "{shown}");
            }
            assert!(shown.contains(AC), "SIDs are not secret: {shown}");
        }
    }
}
