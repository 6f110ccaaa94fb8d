//! Usage monitoring: one [`Monitor`] per `[usage.NAME]` watches a Twilio
//! account's usage for spikes (what a leaked key usually shows first: SMS
//! pumping, Verify attempts to premium numbers) and acts on one.
//!
//! - **Polling**: every `poll_interval`, Usage Records Today of each
//!   category, read with the admin credential. The spike rule
//!   ([`rule`]) runs on the differences between polls. A failed poll is
//!   counted (`credbroker_usage_poll_errors_total`) and retried with the
//!   shared backoff, up to `poll_interval`; it never touches serving.
//! - **Usage Triggers** (`trigger_url`): recurring daily triggers at Twilio,
//!   one per category, named `credbroker-usage:<NAME>:<category>`, kept in
//!   line with the config at start (missing ones created, changed or
//!   dropped ones deleted). Twilio's callbacks reach the metrics listener
//!   (`POST /twilio/usage-trigger`, [`Monitors::callback`]); one whose
//!   X-Twilio-Signature checks out against the account's Auth Token
//!   (current or previous) raises the alert at once.
//! - **The alert** is latched: raised by the first spike (poll or trigger),
//!   it stays until RotationAdmin.ClearAlert, and its action runs once:
//!   `alert` only logs and sets `credbroker_usage_spike`;
//!   `freeze_dynamic_keys` refuses new dynamic keys on the account
//!   ([`crate::issuer::Freezes`]); `rotate` starts one rotation of each
//!   credential in `rotate`. Every action is logged with the numbers that
//!   raised it. Clearing also acknowledges the counts so far: the next
//!   windows count only what comes after.
//!
//! Metric labels come from the config only (the table name, the
//! categories), never from Twilio's answers or a callback.

pub mod rule;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    broker::{Broker, Entry},
    clock::Clock,
    config::{Config, OnSpike, UsageConfig},
    credential::{Secret, TwilioCredential},
    issuer::{Freeze, Freezes},
    rotation::Rotator,
    twilio::{
        TwilioClient, TwilioError,
        usage::{NewTrigger, UsageToday},
        webhook,
    },
};

pub use rule::{Evaluation, History, Rule};

/// The friendly-name tag of the Usage Triggers credbroker keeps.
pub const TRIGGER_TAG: &str = "credbroker-usage";
/// Where Twilio's trigger callbacks arrive on the metrics listener.
pub const CALLBACK_PATH: &str = "/twilio/usage-trigger";
/// The longest callback body read; Twilio's is a few hundred bytes.
pub const MAX_CALLBACK_BYTES: usize = 16 * 1024;
/// Most form parameters a callback may carry (Twilio sends ten).
pub const MAX_CALLBACK_PARAMS: usize = 64;
/// A signed callback fired longer ago than this is taken for a replay and
/// ignored (Twilio calls within seconds; its retries within minutes).
pub const MAX_CALLBACK_AGE: Duration = Duration::from_secs(3600);
/// How far ahead of our clock a callback's `DateFired` may be.
pub const MAX_CALLBACK_SKEW: Duration = Duration::from_secs(300);
/// Idempotency tokens of accepted callbacks remembered, so that a replay of
/// one (or Twilio's retry) acts once.
pub const REMEMBERED_CALLBACKS: usize = 256;

/// Why a usage call failed.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// No such `[usage.NAME]`.
    #[error("no [usage.{0}] table in the config")]
    NotFound(String),
}

/// A raised alert: what raised it, when, and with which numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// When the first spike was seen.
    pub raised_at: SystemTime,
    /// The numbers that raised it.
    pub reason: String,
    /// The categories that spiked since (config spellings).
    pub categories: Vec<String>,
    /// `poll` or `trigger`.
    pub source: &'static str,
}

/// One category's latest figures, for GetUsage.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryStatus {
    /// The category (config spelling).
    pub category: String,
    /// Today's figures at the last successful poll.
    pub today: Option<UsageToday>,
    /// The spike rule at that poll.
    pub evaluation: Option<Evaluation>,
    /// Whether the raised alert covers it.
    pub spike: bool,
}

/// What GetUsage answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// `[usage.NAME]`.
    pub name: String,
    /// `on_spike`.
    pub on_spike: OnSpike,
    /// Per category, in config order.
    pub categories: Vec<CategoryStatus>,
    /// The alert, while raised.
    pub alert: Option<Alert>,
    /// The last poll that read every category.
    pub last_poll: Option<SystemTime>,
    /// Why the last poll failed, until one succeeds.
    pub last_error: Option<String>,
}

struct Category {
    today: Option<UsageToday>,
    history: History,
    evaluation: Option<Evaluation>,
}

struct State {
    categories: Vec<Category>,
    alert: Option<Alert>,
    last_poll: Option<SystemTime>,
    last_error: Option<String>,
}

/// One `[usage.NAME]`.
pub struct Monitor {
    config: UsageConfig,
    rule: Rule,
    admin: Arc<Entry>,
    twilio: TwilioClient,
    rotator: Arc<Rotator>,
    freezes: Arc<Freezes>,
    clock: Clock,
    tasks: TaskTracker,
    state: Mutex<State>,
    /// `IdempotencyToken`s of the callbacks taken, newest last.
    callbacks_seen: Mutex<std::collections::VecDeque<String>>,
}

/// Every `[usage.NAME]`, by name.
pub struct Monitors {
    by_name: BTreeMap<String, Arc<Monitor>>,
}

/// What became of a trigger callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// Signed by Twilio for a watched account and category: the alert is raised.
    Accepted,
    /// Signed, but for a category not watched: nothing changes.
    Ignored,
    /// No valid signature for any watched account: 403, nothing changes.
    Refused,
}

impl Monitors {
    /// A monitor per `[usage.NAME]` of `config`; none runs until [`Monitors::spawn`].
    pub fn new(
        config: &Config,
        broker: &Arc<Broker>,
        twilio: &TwilioClient,
        rotator: &Arc<Rotator>,
        freezes: &Arc<Freezes>,
    ) -> Arc<Self> {
        let by_name = config
            .usage
            .iter()
            .map(|(name, u)| {
                let admin = Arc::clone(
                    broker
                        .entry(&u.admin_credential)
                        .expect("the config checks that admin_credential is a stored credential"),
                );
                let rule = Rule {
                    window: u.window,
                    factor: u.factor,
                    baseline: u.baseline,
                    max_per_window: u.max_per_window,
                    max_samples: crate::config::MAX_SAMPLES as usize + 2,
                };
                let state = State {
                    categories: u
                        .categories
                        .iter()
                        .map(|_| Category {
                            today: None,
                            history: History::default(),
                            evaluation: None,
                        })
                        .collect(),
                    alert: None,
                    last_poll: None,
                    last_error: None,
                };
                let monitor = Monitor {
                    config: u.clone(),
                    rule,
                    admin,
                    twilio: twilio.clone(),
                    rotator: Arc::clone(rotator),
                    freezes: Arc::clone(freezes),
                    clock: *broker.clock(),
                    tasks: broker.tasks().clone(),
                    state: Mutex::new(state),
                    callbacks_seen: Mutex::default(),
                };
                (name.clone(), Arc::new(monitor))
            })
            .collect();
        Arc::new(Self { by_name })
    }

    /// Starts every monitor's poll loop on the broker's task tracker, until
    /// `stopping`.
    pub fn spawn(&self, stopping: &CancellationToken) {
        // The config check compares admin credential names; two of them on
        // the same account are only seen now, from their documents.
        let mut accounts: BTreeMap<String, &str> = BTreeMap::new();
        for (name, monitor) in &self.by_name {
            let Some(loaded) = monitor.admin.snapshot().loaded else {
                continue;
            };
            let sid = loaded.document.current.account_sid.as_str().to_owned();
            if let Some(first) = accounts.insert(sid.clone(), name) {
                tracing::error!(
                    usage = %name,
                    other = %first,
                    account_sid = %sid,
                    "two [usage] tables watch the same account: each polls it and keeps its own Usage Triggers there; keep one"
                );
            }
        }
        for monitor in self.by_name.values() {
            let m = &monitor.config;
            tracing::info!(
                usage = %m.name,
                categories = %m.categories.join(","),
                poll_interval = %humantime::format_duration(m.poll_interval),
                on_spike = m.on_spike.as_str(),
                "watching Twilio usage"
            );
            monitor.set_spike_gauges(&[]);
            monitor
                .tasks
                .spawn(Arc::clone(monitor).run(stopping.clone()));
        }
    }

    /// `[usage.name]`.
    pub fn get(&self, name: &str) -> Result<&Arc<Monitor>, UsageError> {
        self.by_name
            .get(name)
            .ok_or_else(|| UsageError::NotFound(name.to_owned()))
    }

    /// Whether no usage is watched.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// A Usage Trigger's callback: its form `params` and `X-Twilio-Signature`.
    /// Accepted when the signature is the one Twilio makes for a watched
    /// account's `trigger_url` with that account's Auth Token.
    pub fn callback(&self, params: &[(String, String)], signature: Option<&str>) -> Callback {
        let Some(signature) = signature.filter(|s| !s.is_empty()) else {
            return Callback::Refused;
        };
        let account = param(params, "AccountSid").unwrap_or_default();
        for monitor in self.by_name.values() {
            if monitor.signed(account, params, signature) {
                return monitor.triggered(params);
            }
        }
        Callback::Refused
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `YYYY-MM-DD` of `t` in UTC.
fn utc_day(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()[..10].to_owned()
}

/// The friendly name of `usage`'s trigger on `category`: at most 64
/// characters, as Twilio allows (a long name or category is replaced by a
/// digest).
pub fn trigger_name(usage: &str, category: &str) -> String {
    use sha2::Digest;
    let prefix = crate::twilio::key_prefix(TRIGGER_TAG, usage, 16);
    if prefix.len() + category.len() <= 64 {
        format!("{prefix}{category}")
    } else {
        let digest = hex::encode(sha2::Sha256::digest(category.as_bytes()));
        format!("{prefix}{}", &digest[..16])
    }
}

impl Monitor {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admin_credential(&self) -> Result<TwilioCredential, String> {
        self.admin
            .lease(&self.clock)
            .map(|l| l.loaded.document.current.clone())
            .map_err(|e| format!("admin credential `{}`: {e}", self.config.admin_credential))
    }

    async fn run(self: Arc<Self>, stopping: CancellationToken) {
        let interval = self.config.poll_interval;
        let mut failures = 0u32;
        let mut triggers_kept = false;
        loop {
            // Both wait on Twilio (retries included): a shutdown does not.
            if !triggers_kept {
                triggers_kept = tokio::select! {
                    () = stopping.cancelled() => return,
                    kept = self.keep_triggers() => kept,
                };
            }
            let polled = tokio::select! {
                () = stopping.cancelled() => return,
                polled = self.poll() => polled,
            };
            failures = if polled {
                0
            } else {
                failures.saturating_add(1)
            };
            let wait = if polled {
                interval
            } else {
                crate::retry::backoff(failures, Duration::from_secs(1).min(interval), interval)
            };
            tokio::select! {
                () = stopping.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Reads today's figures of every category and runs the spike rule;
    /// whether every category was read.
    async fn poll(&self) -> bool {
        let name = &self.config.name;
        let admin = match self.admin_credential() {
            Ok(admin) => admin,
            Err(why) => {
                self.failed(why);
                return false;
            }
        };
        let mut spikes = Vec::new();
        let mut all = true;
        for (i, category) in self.config.categories.iter().enumerate() {
            let read = self.twilio.usage_today(&admin, category).await;
            let today = match read {
                Ok(today) => today,
                Err(e) => {
                    all = false;
                    self.failed(format!("category `{category}`: {e}"));
                    continue;
                }
            };
            let now = self.clock.now();
            let day = today.day.clone().unwrap_or_else(|| utc_day(now));
            let metrics = crate::metrics::metrics();
            for (measure, value) in [
                ("count", today.count),
                ("usage", today.usage),
                ("price", today.price),
            ] {
                metrics
                    .twilio_usage
                    .get_or_create(&crate::metrics::UsageLabels {
                        account: name.clone(),
                        category: category.clone(),
                        measure,
                    })
                    .set(value);
            }
            let mut state = self.lock();
            let c = &mut state.categories[i];
            c.history.record(now, &day, today.count, &self.rule);
            let evaluation = c.history.evaluate(&self.rule);
            if let Some(why) = &evaluation.spike {
                spikes.push((category.clone(), format!("{category}: {why}")));
            }
            tracing::debug!(
                usage = %name,
                category = %category,
                count_today = today.count,
                window_count = evaluation.window_count,
                median = evaluation.median.unwrap_or(-1.0),
                "usage polled"
            );
            c.today = Some(today);
            c.evaluation = Some(evaluation);
        }
        {
            let mut state = self.lock();
            if all {
                state.last_poll = Some(self.clock.now());
                state.last_error = None;
            }
        }
        if !spikes.is_empty() {
            self.raise(spikes, "poll");
        }
        all
    }

    fn failed(&self, why: String) {
        let metrics = crate::metrics::metrics();
        metrics
            .usage_poll_errors
            .get_or_create(&crate::metrics::AccountLabels {
                account: self.config.name.clone(),
            })
            .inc();
        tracing::warn!(usage = %self.config.name, error = %why, "usage poll failed; serving is not affected");
        self.lock().last_error = Some(why);
    }

    /// Raises the alert for `spikes` (category, the numbers): the first
    /// raise runs the `on_spike` action; later ones only add categories.
    fn raise(&self, spikes: Vec<(String, String)>, source: &'static str) {
        let name = &self.config.name;
        let reason = spikes
            .iter()
            .map(|(_, why)| why.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let (first, alerted) = {
            let mut state = self.lock();
            let first = state.alert.is_none();
            let alert = state.alert.get_or_insert_with(|| Alert {
                raised_at: self.clock.now(),
                reason: reason.clone(),
                categories: Vec::new(),
                source,
            });
            for (category, _) in &spikes {
                if !alert.categories.contains(category) {
                    alert.categories.push(category.clone());
                    if !first {
                        tracing::warn!(usage = %name, source, reason = %reason, "usage spike in one more category; the alert stands, its action has run");
                    }
                }
            }
            (first, alert.categories.clone())
        };
        self.set_spike_gauges(&alerted);
        if !first {
            return;
        }
        let action = self.config.on_spike.as_str();
        tracing::warn!(usage = %name, source, on_spike = action, reason = %reason, "usage spike: alert raised");
        match self.config.on_spike {
            OnSpike::Alert => {}
            OnSpike::FreezeDynamicKeys => {
                let Some(loaded) = self.admin.snapshot().loaded else {
                    tracing::error!(usage = %name, "usage spike: cannot freeze dynamic keys: the admin credential was never loaded");
                    return;
                };
                let account = loaded.document.current.account_sid.as_str().to_owned();
                self.freezes.freeze(
                    &account,
                    Freeze {
                        usage: name.clone(),
                        reason: reason.clone(),
                    },
                );
                tracing::warn!(usage = %name, account_sid = %account, reason = %reason, "usage spike: new dynamic keys on the account are refused until RotationAdmin.ClearAlert");
            }
            OnSpike::Rotate => {
                for credential in &self.config.rotate {
                    let (rotator, credential, usage, reason) = (
                        Arc::clone(&self.rotator),
                        credential.clone(),
                        name.clone(),
                        reason.clone(),
                    );
                    tracing::warn!(usage = %usage, credential = %credential, reason = %reason, "usage spike: rotating the credential as containment");
                    self.tasks.spawn(async move {
                        match rotator.rotate(&credential, true).await {
                            Ok(outcome @ crate::rotation::Outcome::Promoted { .. }) => tracing::warn!(usage = %usage, credential = %credential, outcome = %outcome, "usage spike: containment rotation done"),
                            Ok(outcome) => tracing::error!(usage = %usage, credential = %credential, outcome = %outcome, "usage spike: containment rotation did not promote a new value now (a rotation's grace window may be running); rotate by hand once it ends"),
                            Err(e) => tracing::error!(usage = %usage, credential = %credential, error = %e, "usage spike: containment rotation failed; it resumes at the next scheduled run or Rotate"),
                        }
                    });
                }
            }
        }
    }

    fn set_spike_gauges(&self, alerted: &[String]) {
        let metrics = crate::metrics::metrics();
        for category in &self.config.categories {
            metrics
                .usage_spike
                .get_or_create(&crate::metrics::UsageSpikeLabels {
                    account: self.config.name.clone(),
                    category: category.clone(),
                })
                .set(i64::from(alerted.contains(category)));
        }
    }

    /// GetUsage: the latest figures and the alert.
    pub fn status(&self) -> Status {
        let state = self.lock();
        let alerted = state.alert.as_ref().map(|a| a.categories.as_slice());
        Status {
            name: self.config.name.clone(),
            on_spike: self.config.on_spike,
            categories: self
                .config
                .categories
                .iter()
                .zip(&state.categories)
                .map(|(category, c)| CategoryStatus {
                    category: category.clone(),
                    today: c.today.clone(),
                    evaluation: c.evaluation.clone(),
                    spike: alerted.is_some_and(|a| a.contains(category)),
                })
                .collect(),
            alert: state.alert.clone(),
            last_poll: state.last_poll,
            last_error: state.last_error.clone(),
        }
    }

    /// ClearAlert: lowers the alert, lifts a freeze, and acknowledges the
    /// counts so far. The alert that was raised, if any.
    pub fn clear(&self) -> Option<Alert> {
        let cleared = {
            let mut state = self.lock();
            for c in &mut state.categories {
                c.history.acknowledge();
            }
            state.alert.take()
        };
        self.freezes.thaw(&self.config.name);
        self.set_spike_gauges(&[]);
        if let Some(alert) = &cleared {
            tracing::warn!(usage = %self.config.name, reason = %alert.reason, "usage alert cleared; dynamic keys (if frozen) are minted again");
        }
        cleared
    }

    /// Whether `signature` is Twilio's for this account's `trigger_url`
    /// and `params`, made with the account's current Auth Token or a
    /// previous one still in its grace window.
    fn signed(&self, account: &str, params: &[(String, String)], signature: &str) -> bool {
        let Some(url) = &self.config.trigger_url else {
            return false;
        };
        let Some(loaded) = self.admin.snapshot().loaded else {
            return false;
        };
        let doc = &loaded.document;
        if doc.current.account_sid.as_str() != account {
            return false;
        }
        let now = self.clock.now();
        let previous = doc.previous.as_ref().filter(|p| p.retire_at > now);
        let tokens = [Some(&doc.current), previous.map(|p| &p.credential)]
            .into_iter()
            .flatten()
            .filter_map(|c| match &c.secret {
                Secret::AuthToken(t) => Some(t),
                _ => None,
            });
        let request = webhook::WebhookRequest {
            url,
            params,
            body: &[],
            signature,
        };
        // Every token is tried: the time taken does not say which matched.
        tokens.fold(false, |ok, token| webhook::validate(token, &request) | ok)
    }

    /// A signed callback: raises the alert for its category, unless it is
    /// old (`DateFired` more than [`MAX_CALLBACK_AGE`] ago, or missing) or
    /// one already taken (its `IdempotencyToken`): a replay changes nothing.
    fn triggered(&self, params: &[(String, String)]) -> Callback {
        let said = |name: &str| crate::text::said(param(params, name).unwrap_or("?"));
        let now = self.clock.now();
        let fired = param(params, "DateFired")
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
            .map(SystemTime::from);
        let fresh =
            fired.is_some_and(|f| f + MAX_CALLBACK_AGE >= now && f <= now + MAX_CALLBACK_SKEW);
        if !fresh {
            tracing::warn!(usage = %self.config.name, date_fired = %said("DateFired"), "usage trigger callback ignored: signed, but fired too long ago (or undated): a replay?");
            return Callback::Ignored;
        }
        if let Some(token) = param(params, "IdempotencyToken") {
            let mut seen = self
                .callbacks_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if seen.iter().any(|t| t == token) {
                tracing::info!(usage = %self.config.name, "usage trigger callback ignored: already taken (same IdempotencyToken)");
                return Callback::Ignored;
            }
            if seen.len() >= REMEMBERED_CALLBACKS {
                seen.pop_front();
            }
            seen.push_back(crate::text::cut(token, 128).into_owned());
        }
        let category = param(params, "UsageCategory").unwrap_or_default();
        let Some(category) = self.config.categories.iter().find(|c| *c == category) else {
            tracing::info!(usage = %self.config.name, category = %said("UsageCategory"), "usage trigger callback for a category not watched; ignored");
            return Callback::Ignored;
        };
        let why = format!(
            "{category}: Twilio Usage Trigger {}: {} today {} ≥ trigger value {}",
            said("UsageTriggerSid"),
            said("TriggerBy"),
            said("CurrentValue"),
            said("TriggerValue"),
        );
        self.raise(vec![(category.clone(), why)], "trigger");
        Callback::Accepted
    }

    /// The triggers this table wants at Twilio.
    fn wanted_triggers(&self) -> Vec<NewTrigger> {
        let (Some(url), Some(value)) = (&self.config.trigger_url, self.config.trigger_value) else {
            return Vec::new();
        };
        self.config
            .categories
            .iter()
            .map(|category| NewTrigger {
                friendly_name: trigger_name(&self.config.name, category),
                usage_category: category.clone(),
                trigger_value: value,
                callback_url: url.clone(),
            })
            .collect()
    }

    /// Brings this table's Usage Triggers at Twilio in line with the
    /// config; whether that is done (false: try again at the next poll).
    async fn keep_triggers(&self) -> bool {
        let name = &self.config.name;
        let admin = match self.admin_credential() {
            Ok(admin) => admin,
            Err(why) => {
                tracing::warn!(usage = %name, error = %why, "usage triggers not checked");
                return false;
            }
        };
        let want = self.wanted_triggers();
        if !want.is_empty() && !matches!(admin.secret, Secret::AuthToken(_)) {
            tracing::error!(
                usage = %name,
                admin_credential = %self.config.admin_credential,
                "usage triggers not created: Twilio signs their callbacks with the account's Auth Token, and admin_credential holds an API key; make admin_credential the account's Auth Token"
            );
            // Triggers already there are left alone.
            return true;
        }
        match self.reconcile(&admin, &want).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(usage = %name, error = %e, "usage triggers not reconciled; retried at the next poll");
                false
            }
        }
    }

    async fn reconcile(
        &self,
        admin: &TwilioCredential,
        want: &[NewTrigger],
    ) -> Result<(), TwilioError> {
        let name = &self.config.name;
        let prefix = crate::twilio::key_prefix(TRIGGER_TAG, name, 16);
        let have = self.twilio.list_usage_triggers(admin).await?;
        let mut kept = vec![false; want.len()];
        for t in have.iter().filter(|t| t.friendly_name.starts_with(&prefix)) {
            if let Some(i) = want.iter().position(|w| t.is(w))
                && !kept[i]
            {
                kept[i] = true;
                continue;
            }
            self.twilio.delete_usage_trigger(admin, &t.sid).await?;
            tracing::info!(usage = %name, trigger = %t.sid, category = %crate::text::said(&t.usage_category), "usage trigger deleted: the config no longer asks for it");
        }
        for (w, kept) in want.iter().zip(kept) {
            if kept {
                continue;
            }
            let sid = self.twilio.create_usage_trigger(admin, w).await?;
            tracing::info!(usage = %name, trigger = %sid, category = %w.usage_category, trigger_value = w.trigger_value, "usage trigger created");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_names_fit_twilio_and_keep_the_prefix() {
        assert_eq!(trigger_name("main", "sms"), "credbroker-usage:main:sms");
        let long = trigger_name(&"n".repeat(64), &"c".repeat(64));
        assert!(long.len() <= 64, "{long}");
        assert!(long.starts_with("credbroker-usage:"));
        assert_ne!(
            trigger_name("main", &"c".repeat(60)),
            trigger_name("main", &"d".repeat(60))
        );
    }

    #[test]
    fn utc_days() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_428_799);
        assert_eq!(utc_day(t), "2026-12-04");
        assert_eq!(utc_day(t + Duration::from_secs(1)), "2026-12-05");
    }
}
