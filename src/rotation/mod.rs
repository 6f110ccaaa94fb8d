//! Rotation: a small state machine whose state lives in the stored
//! document, so any process can resume it after a crash, and whose every
//! step is a compare-and-set write, so two rotators cannot both win.
//!
//! API key (`api_key`), with the admin credential:
//! 1. claim: write `pending = {rotation_id, owner, claimed_at}`;
//! 2. create a key named `credbroker:<name>:<rotation id>` (first deleting
//!    keys with that prefix no document references: orphans of a crash
//!    between create and write), write it into `pending`;
//! 3. test it: the `rotation.validation_url` read with the new key (by
//!    default `GET /2010-04-01/Accounts/{sid}/Messages.json?PageSize=1`,
//!    which a Standard key may make), retried while Twilio answers 20003
//!    for up to `rotation.propagation`;
//! 4. promote: current ← pending, previous ← old current with
//!    `retire_at = now + grace`;
//! 5. after `retire_at`: delete the old key, drop `previous`.
//!
//! Auth Token (`auth_token`), with the current token:
//! 1. claim; 2. create the secondary token, write it into `pending`;
//! 3. test it; 4. switch: current ← secondary, previous ← old primary (both
//!    valid at Twilio); 5. after the grace window: promote the secondary at
//!    Twilio (the old primary stops working), drop `previous`.
//!
//! A claim belongs to `hostname:pid`. Another process takes it over when
//! that process is gone (same host) or the claim is older than
//! [`CLAIM_TTL`]; otherwise it reports the rotation as in progress.

mod document;
pub mod scheduler;
mod steps;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

pub use document::{Claim, RawDocument};

use crate::{
    clock::Clock,
    config::{Config, CredentialConfig, RotationConfig, Source},
    credential::{
        CredentialDocument, DocumentError, Kind, Secret, TwilioCredential, parse_document,
    },
    store::{SecretStore, StoreError},
    twilio::{TwilioClient, TwilioError},
};

/// A claim not refreshed for this long may be taken over from another host.
pub const CLAIM_TTL: Duration = Duration::from_secs(10 * 60);
/// Most steps one `rotate` call takes (a full rotation takes five).
const MAX_STEPS: usize = 16;
/// First wait before testing a new value again that Twilio refused.
const PROPAGATION_FIRST_WAIT: Duration = Duration::from_secs(1);
/// Longest wait between two tests of a new value.
const PROPAGATION_MAX_WAIT: Duration = Duration::from_secs(15);
/// Attempts that may find a new value still refused (20003) once
/// `propagation` has run out before it is taken for one that will never
/// work: dropped, and deleted at Twilio.
pub const MAX_REFUSED_TESTS: u32 = 3;

/// Why a rotation step failed. The document is left where it was: the next
/// attempt resumes from there.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The credential has no `[credentials.NAME.rotation]` (or is dynamic).
    #[error("credential `{0}` is not configured for rotation")]
    NotConfigured(String),
    /// No such credential.
    #[error("no credential named `{0}`")]
    NotFound(String),
    /// An `oauth_client`: the broker does not rotate an OAuth app's secret.
    #[error(
        "credential `{0}` is an oauth_client: rotation does not apply (replace the OAuth app's client secret in Twilio's Console, then in the store: the broker fetches tokens with the new one at once)"
    )]
    NotRotatable(String),
    /// The store failed.
    #[error("credential `{name}`: {source}")]
    Store {
        /// Credential name.
        name: String,
        /// The store's error.
        source: StoreError,
    },
    /// A stored document is bad.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// API key rotation without `rotation.admin_credential` (the config
    /// check refuses that; a hand-built config may not).
    #[error(
        "credential `{name}`: admin credential `(none)`: API key rotation needs `rotation.admin_credential`"
    )]
    NoAdmin {
        /// Credential being rotated.
        name: String,
    },
    /// The admin credential could not be read.
    #[error("credential `{name}`: admin credential `{admin}`: {source}")]
    Admin {
        /// Credential being rotated.
        name: String,
        /// The admin credential.
        admin: String,
        /// Why it could not be read.
        source: Box<RotationError>,
    },
    /// Twilio refused or failed a call.
    #[error("credential `{name}`: step `{step}`: {source}")]
    Twilio {
        /// Credential name.
        name: String,
        /// The step.
        step: &'static str,
        /// Twilio's error.
        source: TwilioError,
    },
    /// The new value was refused by Twilio in every one of
    /// [`MAX_REFUSED_TESTS`] attempts: it was dropped and deleted at Twilio.
    #[error(
        "credential `{name}`: the new value was still refused after rotation.propagation in {attempts} attempts, \
         so it will not work: it was dropped from the document and deleted at Twilio; \
         the next rotation starts afresh (last refusal: {last})"
    )]
    Abandoned {
        /// Credential name.
        name: String,
        /// Attempts that found it refused.
        attempts: u32,
        /// The last refusal.
        last: Box<RotationError>,
    },
    /// The document kept changing under us.
    #[error("credential `{0}`: the document kept changing during the rotation; try again")]
    Unsettled(String),
}

/// What a `rotate` call achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do (no rotation asked, none under way).
    Idle,
    /// A new value was promoted; the old one retires at `retire_at`.
    Promoted {
        /// When the previous value is retired.
        retire_at: SystemTime,
    },
    /// A previous value was retired and nothing else was asked.
    Retired,
    /// A previous value is still in its grace window; a new rotation waits.
    Waiting {
        /// When it retires.
        retire_at: SystemTime,
    },
    /// Another live process holds the claim.
    InProgress {
        /// `hostname:pid` of that process.
        owner: String,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |t: &SystemTime| humantime::format_rfc3339_seconds(*t).to_string();
        match self {
            Outcome::Idle => f.write_str("nothing to do"),
            Outcome::Promoted { retire_at } => write!(
                f,
                "promoted; the previous value retires at {}",
                at(retire_at)
            ),
            Outcome::Retired => f.write_str("previous value retired"),
            Outcome::Waiting { retire_at } => write!(
                f,
                "grace window of the last rotation runs until {}",
                at(retire_at)
            ),
            Outcome::InProgress { owner } => write!(f, "being rotated by {owner}"),
        }
    }
}

/// What `GetRotationStatus` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// idle | pending | testing | promoted | retiring | failed
    pub step: String,
    /// When the last rotation was promoted.
    pub last_success: Option<SystemTime>,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// When the scheduler runs next.
    pub next_run: Option<SystemTime>,
}

#[derive(Default)]
struct Memory {
    last_error: Option<String>,
    next_run: Option<SystemTime>,
}

/// Drives rotations for the credentials of one config.
pub struct Rotator {
    credentials: BTreeMap<String, Arc<CredentialConfig>>,
    stores: BTreeMap<String, Arc<dyn SecretStore>>,
    twilio: TwilioClient,
    clock: Clock,
    owner: String,
    memory: Mutex<HashMap<String, Memory>>,
    on_change: Box<dyn Fn(&str) + Send + Sync>,
    /// Moves on every write a rotation makes, so a schedule waiting for a
    /// slot re-reads the document (a `Rotate` call may have set a retire_at).
    changed: tokio::sync::watch::Sender<u64>,
    /// One lock per configured credential: its rotations in this process
    /// take turns. Fixed at start, so names a caller makes up add nothing.
    turns: BTreeMap<String, tokio::sync::Mutex<()>>,
}

/// A document read for a step.
struct Read {
    raw: RawDocument,
    parsed: CredentialDocument,
    version: String,
}

/// The process identity written into claims.
pub fn owner_id() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    format!("{host}:{}", std::process::id())
}

/// Whether `claim` still protects a rotation in another process.
fn claim_alive(claim: &Claim, now: SystemTime) -> bool {
    // A claim from the future (clock skew) counts as made now, and one
    // further ahead than CLAIM_TTL as abandoned: no date blocks for ever.
    let fresh = match now.duration_since(claim.claimed_at) {
        Ok(age) => age < CLAIM_TTL,
        Err(ahead) => ahead.duration() < CLAIM_TTL,
    };
    let mine = owner_id();
    let my_host = mine.rsplit_once(':').map(|(h, _)| h);
    match claim.owner.rsplit_once(':') {
        // Same host: the claim lives exactly as long as its process.
        Some((host, pid)) if Some(host) == my_host => {
            fresh && std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => fresh,
    }
}

/// Test hook at step `name`, from `CREDBROKER_FAILPOINT`:
/// - `NAME`: abort the process there, as `kill -9` would (a crash at every
///   step, then a resume);
/// - `pause:NAME`: create `$CREDBROKER_FAILPOINT_FILE.reached` and wait there
///   until `$CREDBROKER_FAILPOINT_FILE` is removed (two rotators made to
///   overlap at a known point).
///
/// Unset, it costs one cached environment lookup.
async fn failpoint(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("CREDBROKER_FAILPOINT").ok());
    match point.as_deref() {
        Some(p) if p == name => {
            eprintln!("credbroker: failpoint {name}: aborting");
            std::process::abort();
        }
        Some(p) if p.strip_prefix("pause:") == Some(name) => {
            let Some(hold) = std::env::var_os("CREDBROKER_FAILPOINT_FILE") else {
                return;
            };
            let hold = std::path::PathBuf::from(hold);
            let mut reached = hold.clone().into_os_string();
            reached.push(".reached");
            let _ = std::fs::write(&reached, std::process::id().to_string());
            eprintln!("credbroker: failpoint {name}: paused");
            while hold.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        _ => {}
    }
}

/// `credbroker:<name>:`, the friendly-name prefix of the keys a rotation of
/// `name` creates (room is left for a 12-character rotation id).
pub fn key_prefix(name: &str) -> String {
    crate::twilio::key_prefix("credbroker", name, 40)
}

fn new_rotation_id(now: SystemTime) -> String {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs:x}{:04x}", rand::random::<u16>())
}

/// A stored credential's config and where its document is.
struct Location<'a> {
    cfg: &'a CredentialConfig,
    store: Arc<dyn SecretStore>,
    path: &'a str,
    kind: Option<crate::credential::Kind>,
}

impl Rotator {
    /// A rotator over `config`'s stores, calling Twilio with `twilio`.
    /// `on_change(name)` is called after every write (the daemon re-reads
    /// the credential so watchers see it).
    pub fn new(
        config: &Config,
        stores: BTreeMap<String, Arc<dyn SecretStore>>,
        twilio: TwilioClient,
        clock: Clock,
        on_change: Box<dyn Fn(&str) + Send + Sync>,
    ) -> Self {
        Self {
            credentials: config.credentials.clone(),
            stores,
            twilio,
            clock,
            owner: owner_id(),
            memory: Mutex::new(HashMap::new()),
            on_change,
            changed: tokio::sync::watch::Sender::new(0),
            // Only credentials that rotate take turns: a node-level daemon
            // holds thousands of credentials, few of them rotating.
            turns: config
                .credentials
                .iter()
                .filter(|(_, c)| c.rotation.is_some())
                .map(|(name, _)| (name.clone(), tokio::sync::Mutex::new(())))
                .collect(),
        }
    }

    /// The credentials that have a rotation schedule.
    pub fn scheduled(&self) -> impl Iterator<Item = (&str, &RotationConfig)> {
        self.credentials
            .iter()
            .filter_map(|(n, c)| c.rotation.as_deref().map(|r| (n.as_str(), r)))
    }

    /// Where credential `name`'s document is. Only stored credentials
    /// rotate: a dynamic one has no rotation (`NotConfigured`).
    fn location(&self, name: &str) -> Result<Location<'_>, RotationError> {
        let cfg = self
            .credentials
            .get(name)
            .ok_or_else(|| RotationError::NotFound(name.to_owned()))?;
        match &cfg.source {
            Source::Store { store, path, kind } => Ok(Location {
                cfg,
                store: Arc::clone(&self.stores[store]),
                path,
                kind: *kind,
            }),
            Source::Dynamic(_) => Err(RotationError::NotConfigured(name.to_owned())),
        }
    }

    async fn read(&self, name: &str) -> Result<Read, RotationError> {
        let Location {
            store, path, kind, ..
        } = self.location(name)?;
        let doc = store
            .read(path)
            .await
            .map_err(|source| RotationError::Store {
                name: name.to_owned(),
                source,
            })?;
        let parsed = parse_document(name, doc.bytes.expose_secret(), kind)?;
        let raw = RawDocument::parse(&doc.bytes).ok_or_else(|| DocumentError {
            credential: name.to_owned(),
            field: "document".into(),
            problem: "expected a JSON object".into(),
        })?;
        Ok(Read {
            raw,
            parsed,
            version: doc.version,
        })
    }

    /// Writes `raw` over `version`; `Ok(false)` when another writer won.
    async fn write(
        &self,
        name: &str,
        raw: &RawDocument,
        version: &str,
    ) -> Result<bool, RotationError> {
        let Location { store, path, .. } = self.location(name)?;
        match store.write(path, raw.to_bytes(), Some(version)).await {
            Ok(_) => {
                (self.on_change)(name);
                self.changed.send_modify(|n| *n = n.wrapping_add(1));
                Ok(true)
            }
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(source) => Err(RotationError::Store {
                name: name.to_owned(),
                source,
            }),
        }
    }

    async fn admin(
        &self,
        name: &str,
        cfg: &RotationConfig,
    ) -> Result<TwilioCredential, RotationError> {
        let admin = cfg
            .admin_credential
            .as_deref()
            .ok_or_else(|| RotationError::NoAdmin {
                name: name.to_owned(),
            })?;
        let read = self.read(admin).await.map_err(|e| RotationError::Admin {
            name: name.to_owned(),
            admin: admin.to_owned(),
            source: Box::new(e),
        })?;
        Ok(read.parsed.current)
    }

    /// Advances `name`'s rotation as far as it can go now: retires a
    /// previous value that is due, resumes a rotation under way, and, when
    /// `start`, begins a new one if none is.
    ///
    /// Rotations of one credential in this process take turns (the
    /// schedule and the Rotate RPC share an owner id, so the claim alone
    /// cannot keep them apart).
    pub async fn rotate(&self, name: &str, start: bool) -> Result<Outcome, RotationError> {
        // A name the config does not define is refused here, before it
        // could become a metrics label or a status entry.
        let Some(turn) = self.turns.get(name) else {
            return Err(if self.credentials.contains_key(name) {
                RotationError::NotConfigured(name.to_owned())
            } else {
                RotationError::NotFound(name.to_owned())
            });
        };
        let _turn = turn.lock().await;
        let result = self.advance(name, start).await;
        let metrics = crate::metrics::metrics();
        metrics
            .rotations
            .get_or_create(&crate::metrics::RotationLabels {
                credential: name.to_owned(),
                result: if result.is_ok() { "ok" } else { "error" }.to_owned(),
            })
            .inc();
        if let Ok(Outcome::Promoted { .. }) = &result {
            let now = self
                .clock
                .now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            metrics
                .rotation_last_success
                .get_or_create(&crate::metrics::CredentialLabels {
                    credential: name.to_owned(),
                })
                .set(now as i64);
        }
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let m = memory.entry(name.to_owned()).or_default();
        match &result {
            Ok(outcome) => {
                m.last_error = None;
                tracing::info!(credential = %name, %outcome, "rotation step done");
            }
            Err(e) => {
                m.last_error = Some(e.to_string());
                tracing::error!(credential = %name, error = %e, "rotation failed; the next attempt resumes where it stopped");
            }
        }
        result
    }

    /// The state machine: reads the document and takes the one step its
    /// state calls for, until there is nothing left to do. Longer than the
    /// usual limit on purpose: the whole protocol (DESIGN.md, Rotation) reads
    /// top to bottom here, one arm per state, each step a method of its own.
    async fn advance(&self, name: &str, start: bool) -> Result<Outcome, RotationError> {
        let cfg = self.location(name)?.cfg;
        let rotation = cfg
            .rotation
            .clone()
            .ok_or_else(|| RotationError::NotConfigured(name.to_owned()))?;
        let mut start = start;
        let mut promoted = None;
        let mut retired = false;
        for _ in 0..MAX_STEPS {
            let Read {
                mut raw,
                parsed,
                version,
            } = self.read(name).await?;
            let now = self.clock.now();
            let kind = parsed.kind();
            if kind == Kind::OAuthClient {
                return Err(RotationError::NotRotatable(name.to_owned()));
            }

            if let Some(retire_at) = raw.retire_at() {
                if retire_at <= now {
                    self.retire(name, &rotation, kind, &raw, &parsed).await?;
                    failpoint("after-retire-at-twilio").await;
                    raw.drop_previous();
                    if self.write(name, &raw, &version).await? {
                        tracing::info!(credential = %name, "previous value retired");
                        retired = true;
                    }
                    continue;
                }
                if raw.claim().is_none() {
                    return Ok(match promoted {
                        Some(retire_at) => Outcome::Promoted { retire_at },
                        None => Outcome::Waiting { retire_at },
                    });
                }
            }

            match raw.claim() {
                None => {
                    if !start {
                        return Ok(if retired {
                            Outcome::Retired
                        } else {
                            Outcome::Idle
                        });
                    }
                    raw.set_claim(&new_rotation_id(now), &self.owner, now);
                    failpoint("before-claim").await;
                    if self.write(name, &raw, &version).await? {
                        tracing::info!(credential = %name, "rotation started");
                        failpoint("after-claim").await;
                        start = false;
                    }
                }
                Some(claim) if claim.owner != self.owner && claim_alive(&claim, now) => {
                    return Ok(Outcome::InProgress { owner: claim.owner });
                }
                Some(claim) if claim.owner != self.owner => {
                    tracing::warn!(credential = %name, previous_owner = %claim.owner, "taking over an abandoned rotation");
                    raw.set_claim(&claim.rotation_id, &self.owner, now);
                    self.write(name, &raw, &version).await?;
                }
                Some(claim) if !raw.has_pending_value() => {
                    self.create(name, &rotation, &claim, &mut raw, &parsed, now)
                        .await?;
                    failpoint("after-create").await;
                    if !self.write(name, &raw, &version).await? {
                        // Someone else moved the document: undo our side effect.
                        if let Some(sid) = raw.pending_key_sid() {
                            let admin = self.admin(name, &rotation).await?;
                            let _ = self.twilio.delete_key(&admin, &sid).await;
                        }
                    } else {
                        failpoint("after-write-pending").await;
                    }
                }
                Some(_) => {
                    let pending = parsed.pending.as_ref().expect("pending value parsed");
                    if let Err(e) = self.test(name, &rotation, pending).await {
                        return Err(self
                            .refused_test(name, &rotation, &mut raw, &parsed, &version, e)
                            .await);
                    }
                    failpoint("after-test").await;
                    let retire_at = now + rotation.grace;
                    raw.promote(retire_at, &version, now);
                    if self.write(name, &raw, &version).await? {
                        tracing::info!(credential = %name, retire_at = %humantime::format_rfc3339_seconds(retire_at), "new value promoted");
                        failpoint("after-promote").await;
                        promoted = Some(retire_at);
                    }
                }
            }
        }
        Err(RotationError::Unsettled(name.to_owned()))
    }

    /// The status of `name`'s rotation, read from its document.
    pub async fn status(&self, name: &str) -> Result<Status, RotationError> {
        let read = self.read(name).await;
        let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let m = memory.get(name);
        let last_error = m.and_then(|m| m.last_error.clone());
        let next_run = m.and_then(|m| m.next_run);
        let read = read?;
        let now = self.clock.now();
        let step = if last_error.is_some() {
            "failed"
        } else if read.raw.claim().is_some() {
            if read.raw.has_pending_value() {
                "testing"
            } else {
                "pending"
            }
        } else if let Some(at) = read.raw.retire_at() {
            if at > now { "promoted" } else { "retiring" }
        } else {
            "idle"
        };
        Ok(Status {
            step: step.to_owned(),
            last_success: read.raw.rotated_at(),
            last_error,
            next_run,
        })
    }

    /// When the last rotation was promoted and when the previous value
    /// retires, for the scheduler.
    pub async fn timeline(
        &self,
        name: &str,
    ) -> Result<(Option<SystemTime>, Option<SystemTime>), RotationError> {
        let read = self.read(name).await?;
        Ok((read.raw.rotated_at(), read.raw.retire_at()))
    }

    /// Records when the scheduler runs `name` next.
    pub fn set_next_run(&self, name: &str, at: SystemTime) {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.entry(name.to_owned()).or_default().next_run = Some(at);
    }

    /// The clock rotations use.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A receiver woken whenever a rotation writes a document, here or
    /// (through [`Rotator::document_changed`]) in another process.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A rotating credential's document changed in its store, written by
    /// someone else (`credbroker rotate` from a CronJob, another replica):
    /// every schedule works its timeline out again, so a previous value
    /// that process left is retired at its `retire_at`, not at the next
    /// cron slot.
    pub fn document_changed(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// One credential's rotation, as the scheduler drives it.
struct Scheduled {
    rotator: Arc<Rotator>,
    name: String,
    changes: tokio::sync::Mutex<tokio::sync::watch::Receiver<u64>>,
}

#[async_trait::async_trait]
impl scheduler::Rotation for Scheduled {
    async fn timeline(&self) -> Result<(Option<SystemTime>, Option<SystemTime>), RotationError> {
        self.rotator.timeline(&self.name).await
    }

    async fn run(&self, start: bool) -> Result<(), RotationError> {
        self.rotator.rotate(&self.name, start).await.map(drop)
    }

    fn next_run(&self, at: SystemTime) {
        self.rotator.set_next_run(&self.name, at);
    }

    async fn changed(&self) {
        let mut changes = self.changes.lock().await;
        if changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Starts the schedule of every credential that has one; they stop with `stop`.
pub fn spawn_schedules(
    rotator: &Arc<Rotator>,
    stop: &tokio_util::sync::CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    for (name, rotation) in rotator.scheduled() {
        tracing::info!(credential = %name, schedule = %rotation.schedule, "rotation scheduled");
        let task = scheduler::run(
            Scheduled {
                rotator: Arc::clone(rotator),
                name: name.to_owned(),
                changes: tokio::sync::Mutex::new(rotator.changes()),
            },
            rotation.schedule.clone(),
            *rotator.clock(),
            scheduler::MAX_JITTER,
            stop.clone(),
        );
        let span = tracing::info_span!("rotation schedule", credential = %name);
        tasks.spawn(tracing::Instrument::instrument(task, span));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim dated in the future holds for a clock skew, not for ever
    /// (year 9999 once blocked rotation until then).
    #[test]
    fn a_claim_from_the_future_does_not_hold_for_ever() {
        let now = SystemTime::now();
        let claim = |at: SystemTime| Claim {
            rotation_id: "r".into(),
            owner: "another-host:1".into(),
            claimed_at: at,
        };
        assert!(claim_alive(&claim(now), now));
        assert!(claim_alive(&claim(now + Duration::from_secs(60)), now));
        assert!(!claim_alive(&claim(now + 100 * CLAIM_TTL), now));
        assert!(!claim_alive(
            &claim(now - CLAIM_TTL - Duration::from_secs(1)),
            now
        ));
    }
}
