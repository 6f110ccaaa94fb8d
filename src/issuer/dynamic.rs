//! Short-lived restricted API keys, one per calling process
//! (`kind = "dynamic_api_key"`).
//!
//! GetCredential creates a restricted key at Twilio (IAM v1, KeyType
//! restricted, the configured Policy) with the admin credential, and serves
//! it with `expires_at` at the key's end. A caller — a process, by uid and
//! pid — gets its live key again until half its TTL has passed, then a new
//! one; at most `max_live_keys` are alive at once. A reaper deletes every
//! key at Twilio when its TTL ends. Keys are named
//! `credbroker-dyn:<name>:<expiry, Unix seconds>`, so after a restart the
//! keys of the previous process are found and deleted at their expiry (at
//! once when it has passed). A create that failed after it may have reached
//! Twilio (a 5xx or a lost answer, an answer too long to read) may have made
//! a key all the same: the keys are listed again, so such a key is found by
//! its name and deleted at its expiry too, rather than left for ever.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::{Caller, Freezes, IssueError, Issuer};
use crate::{
    broker::{Broker, Entry, Lease, LeaseStream, Loaded},
    clock::Clock,
    config::{AllowList, CredentialConfig, DynamicKeyConfig},
    credential::{CredentialDocument, Secret, TwilioCredential},
    twilio::TwilioClient,
};

/// A live key, served as a document of its own (the key is its version).
/// Holds its secret: no Debug.
struct LiveKey {
    /// The key's SID.
    sid: String,
    /// The key as a stored credential would be: its SID and secret, and
    /// the admin credential's account.
    loaded: Arc<Loaded>,
    /// When it was created.
    created_at: SystemTime,
    /// When it is deleted at Twilio.
    expires_at: SystemTime,
    /// The peer uid it was made for.
    uid: u32,
}

#[derive(Default)]
struct Live {
    /// Every key alive, ours or left by another process (no secret then).
    keys: Vec<(String, SystemTime, Option<Arc<LiveKey>>)>,
    by_caller: HashMap<Caller, Arc<LiveKey>>,
    /// Keys being created at Twilio right now, by uid: they hold their
    /// slots while the lock is released for the call.
    minting: HashMap<u32, u32>,
}

impl Live {
    /// This daemon's keys alive at `now` (keys another process left are
    /// deleted at their expiry but take no slot), and those being created;
    /// in all, and for `uid`.
    fn in_use(&self, now: SystemTime, uid: u32) -> (usize, usize) {
        let ours = self
            .keys
            .iter()
            .filter_map(|(_, expires, key)| key.as_ref().filter(|_| *expires > now));
        let total = ours.clone().count() + self.minting.values().sum::<u32>() as usize;
        let for_uid = ours.filter(|k| k.uid == uid).count()
            + self.minting.get(&uid).copied().unwrap_or(0) as usize;
        (total, for_uid)
    }

    fn release(&mut self, uid: u32) {
        if let Some(n) = self.minting.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                self.minting.remove(&uid);
            }
        }
    }
}

/// One dynamic credential.
pub struct DynamicKeys {
    /// Its config (name, allow list).
    config: CredentialConfig,
    dynamic: DynamicKeyConfig,
    admin: Arc<Entry>,
    twilio: TwilioClient,
    /// Usage alerts that hold new keys on the admin's account.
    freezes: Arc<Freezes>,
    clock: Clock,
    live: Mutex<Live>,
    wake: Notify,
    /// A create failed in a way that may have left a key at Twilio: the
    /// reaper lists the keys again.
    resweep: AtomicBool,
}

/// `credbroker-dyn:<name>:`, the friendly-name prefix of `name`'s keys
/// (room is left for the expiry in Unix seconds).
pub fn key_prefix(name: &str) -> String {
    crate::twilio::key_prefix("credbroker-dyn", name, 36)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl DynamicKeys {
    /// The credential `config` (its `dynamic` settings), minting with
    /// `admin`'s credential; starts the reaper (which first sweeps what a
    /// previous process left).
    pub fn start(
        (config, dynamic): (CredentialConfig, DynamicKeyConfig),
        admin: Arc<Entry>,
        twilio: TwilioClient,
        freezes: Arc<Freezes>,
        clock: Clock,
        stopping: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Arc<Self> {
        let keys = Arc::new(Self {
            config,
            dynamic,
            admin,
            twilio,
            freezes,
            clock,
            live: Mutex::new(Live::default()),
            wake: Notify::new(),
            resweep: AtomicBool::new(false),
        });
        tasks.spawn(Arc::clone(&keys).reap(stopping));
        keys
    }

    fn admin_credential(&self) -> Result<TwilioCredential, IssueError> {
        Ok(self
            .admin
            .lease(&self.clock)?
            .loaded
            .document
            .current
            .clone())
    }

    /// A lease on `key`, issued now and ending with the key.
    fn lease_on(&self, key: &LiveKey, now: SystemTime) -> Lease {
        Lease {
            name: self.name().to_owned(),
            loaded: Arc::clone(&key.loaded),
            issued_at: now,
            expires_at: key.expires_at,
            stale_since: None,
            // The key is deleted when it expires.
            retire_bound: Some(key.expires_at),
        }
    }

    /// A key for `caller`: its live one until half the TTL has passed, else
    /// a new one (refused past `max_live_keys`, or `max_live_keys_per_uid`
    /// for the caller's uid). The slot is reserved before Twilio is called
    /// and the lock released meanwhile, so other callers are not held up.
    async fn lease(&self, caller: Caller) -> Result<Lease, IssueError> {
        let now = self.clock.now();
        let uid = caller.0;
        {
            let mut live = self.live.lock().await;
            if let Some(key) = live.by_caller.get(&caller)
                && now < key.created_at + self.dynamic.ttl / 2
            {
                return Ok(self.lease_on(key, now));
            }
            self.check_frozen()?;
            self.reserve(&mut live, uid, now)?;
        }
        let minted = self.mint(caller, now).await;
        let mut live = self.live.lock().await;
        live.release(uid);
        if let Err(IssueError::Twilio { .. }) = &minted {
            self.resweep.store(true, Ordering::SeqCst);
            self.wake.notify_one();
        }
        let key = minted?;
        live.keys
            .push((key.sid.clone(), key.expires_at, Some(Arc::clone(&key))));
        live.by_caller.insert(caller, Arc::clone(&key));
        self.count_live(&live);
        drop(live);
        self.wake.notify_one();
        Ok(self.lease_on(&key, now))
    }

    /// Refuses a new key while a usage alert freezes the admin's account.
    fn check_frozen(&self) -> Result<(), IssueError> {
        let Some(loaded) = self.admin.snapshot().loaded else {
            return Ok(());
        };
        match self
            .freezes
            .get(loaded.document.current.account_sid.as_str())
        {
            None => Ok(()),
            Some(f) => Err(IssueError::Frozen {
                name: self.name().to_owned(),
                usage: f.usage,
                reason: f.reason,
            }),
        }
    }

    /// Takes a slot for a new key of `uid`, or says which cap is reached.
    fn reserve(&self, live: &mut Live, uid: u32, now: SystemTime) -> Result<(), IssueError> {
        let (total, for_uid) = live.in_use(now, uid);
        if total >= self.dynamic.max_live_keys as usize {
            return Err(IssueError::Exhausted {
                name: self.name().to_owned(),
                max: self.dynamic.max_live_keys,
            });
        }
        if for_uid >= self.dynamic.max_live_keys_per_uid as usize {
            return Err(IssueError::ExhaustedForUid {
                name: self.name().to_owned(),
                uid,
                max: self.dynamic.max_live_keys_per_uid,
            });
        }
        *live.minting.entry(uid).or_default() += 1;
        Ok(())
    }

    /// Creates a restricted key for `caller` at Twilio, named with its
    /// expiry so a later process can sweep it.
    async fn mint(&self, caller: Caller, now: SystemTime) -> Result<Arc<LiveKey>, IssueError> {
        let admin = self.admin_credential()?;
        let expires_at = now + self.dynamic.ttl;
        let friendly = format!("{}{}", key_prefix(self.name()), unix(expires_at));
        let created = self
            .twilio
            .create_key(&admin, &friendly, Some(&self.dynamic.policy))
            .await
            .map_err(|source| self.twilio_error(source))?;
        let sid = created.sid.as_str().to_owned();
        let document = CredentialDocument {
            current: TwilioCredential {
                account_sid: admin.account_sid.clone(),
                secret: Secret::ApiKey {
                    sid: created.sid,
                    secret: created.secret,
                },
            },
            pending: None,
            previous: None,
        };
        tracing::info!(
            credential = %self.name(),
            key = %sid,
            peer_uid = caller.0,
            peer_pid = caller.1,
            expires_at = %humantime::format_rfc3339_seconds(expires_at),
            "restricted key created"
        );
        Ok(Arc::new(LiveKey {
            loaded: Arc::new(Loaded {
                document,
                version: sid.clone(),
                loaded_at: now,
            }),
            sid,
            created_at: now,
            expires_at,
            uid: caller.0,
        }))
    }

    fn twilio_error(&self, source: crate::twilio::TwilioError) -> IssueError {
        IssueError::Twilio {
            name: self.name().to_owned(),
            source,
        }
    }

    fn count_live(&self, live: &Live) {
        crate::metrics::metrics()
            .dynamic_keys
            .get_or_create(&crate::metrics::CredentialLabels {
                credential: self.name().to_owned(),
            })
            .set(live.keys.len() as i64);
    }

    /// Finds the keys a previous process left (by name prefix).
    async fn sweep(&self) -> Result<(), IssueError> {
        let admin = self.admin_credential()?;
        let keys = self
            .twilio
            .list_keys(&admin)
            .await
            .map_err(|source| self.twilio_error(source))?;
        let prefix = key_prefix(self.name());
        let now = self.clock.now();
        let mut live = self.live.lock().await;
        for key in keys {
            let Some(expiry) = key.friendly_name.strip_prefix(&prefix) else {
                continue;
            };
            if live.keys.iter().any(|(sid, _, _)| *sid == key.sid) {
                continue;
            }
            let expires = expiry_in_name(expiry, now);
            live.keys.push((key.sid, expires, None));
        }
        Ok(())
    }

    /// Deletes at Twilio every key whose TTL has ended; whether a delete
    /// failed (it is retried).
    async fn delete_due(&self) -> bool {
        let now = self.clock.now();
        let due: Vec<String> = {
            let live = self.live.lock().await;
            live.keys
                .iter()
                .filter(|(_, expires, _)| *expires <= now)
                .map(|(sid, _, _)| sid.clone())
                .collect()
        };
        let mut failed = false;
        for sid in due {
            let deleted = match self.admin_credential() {
                Ok(admin) => self
                    .twilio
                    .delete_key(&admin, &sid)
                    .await
                    .map_err(|source| self.twilio_error(source)),
                Err(e) => Err(e),
            };
            if let Err(e) = deleted {
                failed = true;
                tracing::warn!(credential = %self.name(), key = %sid, error = %e, "cannot delete an expired key; retrying");
                continue;
            }
            tracing::info!(credential = %self.name(), key = %sid, "expired restricted key deleted");
            let mut live = self.live.lock().await;
            live.keys.retain(|(s, _, _)| *s != sid);
            live.by_caller.retain(|_, k| k.sid != sid);
            self.count_live(&live);
        }
        failed
    }

    /// Deletes each key at Twilio when it expires.
    async fn reap(self: Arc<Self>, stopping: CancellationToken) {
        // The sweep needs the admin credential: wait for its first load.
        let mut admin = self.admin.subscribe();
        while admin.borrow_and_update().loaded.is_none() {
            tokio::select! {
                _ = stopping.cancelled() => return,
                changed = admin.changed() => if changed.is_err() { return },
            }
        }
        let mut swept = false;
        loop {
            if !swept || self.resweep.swap(false, Ordering::SeqCst) {
                swept = match self.sweep().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(credential = %self.name(), error = %e, "cannot list keys to sweep; retrying");
                        false
                    }
                };
            }
            let failed = self.delete_due().await;
            let next = {
                let live = self.live.lock().await;
                live.keys.iter().map(|(_, e, _)| *e).min()
            };
            let now = self.clock.now();
            let retry = now + Duration::from_secs(if swept { 3600 } else { 30 });
            let mut wake = next.map(|n| n.min(retry)).unwrap_or(retry);
            if failed {
                wake = wake.max(now + Duration::from_secs(5));
            }
            tokio::select! {
                _ = stopping.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(self.clock.instant_at(wake)) => {}
            }
        }
    }
}

#[async_trait::async_trait]
impl Issuer for DynamicKeys {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn kind(&self) -> &'static str {
        crate::config::DYNAMIC_API_KEY
    }

    fn allow(&self) -> &AllowList {
        &self.config.allow
    }

    async fn issue(&self, caller: Caller) -> Result<Lease, IssueError> {
        self.lease(caller).await
    }

    fn stored(&self) -> Result<&Arc<Entry>, IssueError> {
        Err(IssueError::WrongKind {
            name: self.name().to_owned(),
            what: "a dynamic_api_key is leased per call: use GetCredential",
        })
    }

    fn watch(self: Arc<Self>, _broker: &Broker) -> Result<LeaseStream, IssueError> {
        Err(IssueError::WrongKind {
            name: self.name().to_owned(),
            what: "a dynamic_api_key is leased per call: use GetCredential",
        })
    }
}

/// The expiry a key's friendly name carries (Unix seconds after our
/// prefix). Twilio's answer is not trusted: a name that is not a time, one
/// beyond what the clock can hold, or one further from `now` than any
/// configured `ttl` may be ([`crate::config::MAX_DURATION`]) counts as
/// expired (the key is ours, by its prefix, and deleted), so no name can
/// keep a key for ever.
fn expiry_in_name(text: &str, now: SystemTime) -> SystemTime {
    text.parse::<u64>()
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        .filter(|at| {
            now.checked_add(crate::config::MAX_DURATION)
                .is_some_and(|bound| *at <= bound)
        })
        .unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_beyond_the_clock_is_taken_for_expired_not_a_panic() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            expiry_in_name("1700000900", now),
            UNIX_EPOCH + Duration::from_secs(1_700_000_900)
        );
        assert_eq!(expiry_in_name("18446744073709551615", now), UNIX_EPOCH);
        assert_eq!(expiry_in_name("soon", now), UNIX_EPOCH);
        // Further ahead than any ttl may be: no key of ours, kept for ever.
        assert_eq!(expiry_in_name("253402300799", now), UNIX_EPOCH);
    }
}
