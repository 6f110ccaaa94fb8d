//! Prometheus metrics: the process-wide registry every layer counts into.
//!
//! A leaf: it imports nothing of ours, so the broker, the server and
//! rotation can all count without an import cycle. The per-credential
//! gauges (cache age, stale flag) are handed to [`Metrics::render`] at
//! scrape time by the listener, `server::metrics_http`. No label ever
//! carries a secret: credential names, methods, codes, store names, peer
//! uids.
//!
//! No label is chosen by a caller: a credential name the config does not
//! define is counted under [`UNKNOWN_CREDENTIAL`], so a caller asking for
//! ever new names cannot grow the registry (or `/metrics`, or memory).

use std::{
    collections::HashSet,
    sync::{OnceLock, RwLock},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// `credential`, `method`, `code` of one call. Counted on every call, so
/// built without allocating: the name is the one
/// [`Metrics::credential_label`] keeps, method and code are constants.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Credential name (`*` for ListCredentials).
    pub credential: &'static str,
    /// gRPC method.
    pub method: &'static str,
    /// gRPC status code name.
    pub code: &'static str,
}

/// A refused peer.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    /// gRPC method.
    pub method: &'static str,
    /// The peer's uid.
    pub uid: u32,
}

/// A store.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `[stores.NAME]`.
    pub store: String,
}

/// A store error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreErrorLabels {
    /// `[stores.NAME]`.
    pub store: String,
    /// `transient` or `permanent`.
    pub kind: String,
}

/// A credential.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    /// Credential name.
    pub credential: String,
}

/// A rotation attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    /// Credential name.
    pub credential: String,
    /// `ok` or `error`.
    pub result: String,
}

/// One figure of one usage category (`[usage.NAME]`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UsageLabels {
    /// The `[usage.NAME]` table.
    pub account: String,
    /// The category, as the config spells it.
    pub category: String,
    /// `count`, `usage` or `price`.
    pub measure: &'static str,
}

/// One usage category's alert state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UsageSpikeLabels {
    /// The `[usage.NAME]` table.
    pub account: String,
    /// The category, as the config spells it.
    pub category: String,
}

/// A `[usage.NAME]` table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    /// The `[usage.NAME]` table.
    pub account: String,
}

/// A Usage Trigger callback's fate.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallbackLabels {
    /// `accepted`, `ignored` or `refused`.
    pub result: &'static str,
}

/// The `credential` label of every name the config does not define.
pub const UNKNOWN_CREDENTIAL: &str = "(unknown)";

/// Every metric credbroker exports.
pub struct Metrics {
    registry: Registry,
    /// The credential names the config defines: the only `credential`
    /// labels a call can create. Each is kept for the life of the process
    /// (leaked once per name set), so a call's label borrows it.
    known: RwLock<HashSet<&'static str>>,
    /// Calls by credential, method and code.
    pub calls: Family<CallLabels, Counter>,
    /// Refused peers by method and uid.
    pub denied: Family<DeniedLabels, Counter>,
    /// Audit events that found the log queue full and waited for the
    /// writer thread (none is ever dropped).
    pub audit_queue_waits: Counter,
    /// Store read latency.
    pub store_latency: Family<StoreLabels, Histogram>,
    /// Store read errors.
    pub store_errors: Family<StoreErrorLabels, Counter>,
    /// Seconds since each credential was last read successfully.
    pub cache_age: Family<CredentialLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 while a credential is served stale (or unavailable).
    pub stale: Family<CredentialLabels, Gauge>,
    /// Rotation attempts by result.
    pub rotations: Family<RotationLabels, Counter>,
    /// Unix time of the last successful rotation step that promoted a value.
    pub rotation_last_success: Family<CredentialLabels, Gauge>,
    /// Live dynamic keys per credential.
    pub dynamic_keys: Family<CredentialLabels, Gauge>,
    /// Today's usage per account, category and measure, at the last poll.
    pub twilio_usage: Family<UsageLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 while a usage alert covers the category.
    pub usage_spike: Family<UsageSpikeLabels, Gauge>,
    /// Failed reads of Twilio's usage records.
    pub usage_poll_errors: Family<AccountLabels, Counter>,
    /// Usage Trigger callbacks by result.
    pub usage_callbacks: Family<CallbackLabels, Counter>,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("credbroker");
        let m = Metrics {
            calls: Family::default(),
            denied: Family::default(),
            audit_queue_waits: Counter::default(),
            store_latency: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
            }),
            store_errors: Family::default(),
            cache_age: Family::default(),
            stale: Family::default(),
            rotations: Family::default(),
            rotation_last_success: Family::default(),
            dynamic_keys: Family::default(),
            twilio_usage: Family::default(),
            usage_spike: Family::default(),
            usage_poll_errors: Family::default(),
            usage_callbacks: Family::default(),
            registry: Registry::default(),
            known: RwLock::default(),
        };
        registry.register(
            "calls",
            "gRPC calls by credential, method and code",
            m.calls.clone(),
        );
        registry.register(
            "denied_peers",
            "Calls refused by the peer check, by method and uid",
            m.denied.clone(),
        );
        registry.register(
            "audit_queue_waits",
            "Audit events that waited for the log writer because its queue was full (none is dropped)",
            m.audit_queue_waits.clone(),
        );
        registry.register(
            "store_read_seconds",
            "Store read latency",
            m.store_latency.clone(),
        );
        registry.register("store_errors", "Store read errors", m.store_errors.clone());
        registry.register(
            "cache_age_seconds",
            "Seconds since the credential was last read from its store",
            m.cache_age.clone(),
        );
        registry.register(
            "credential_stale",
            "1 while the credential is served stale or is unavailable",
            m.stale.clone(),
        );
        registry.register(
            "rotations",
            "Rotation attempts by result",
            m.rotations.clone(),
        );
        registry.register(
            "rotation_last_success_timestamp_seconds",
            "Unix time of the last promoted rotation",
            m.rotation_last_success.clone(),
        );
        registry.register(
            "dynamic_keys_live",
            "Live dynamic API keys",
            m.dynamic_keys.clone(),
        );
        registry.register(
            "twilio_usage",
            "Today's Twilio usage at the last poll, by [usage] table, category and measure (count, usage, price)",
            m.twilio_usage.clone(),
        );
        registry.register(
            "usage_spike",
            "1 while a usage alert covers the category (until RotationAdmin.ClearAlert)",
            m.usage_spike.clone(),
        );
        registry.register(
            "usage_poll_errors",
            "Failed reads of Twilio's usage records",
            m.usage_poll_errors.clone(),
        );
        registry.register(
            "usage_callbacks",
            "Usage Trigger callbacks on the metrics listener, by result",
            m.usage_callbacks.clone(),
        );
        Metrics { registry, ..m }
    })
}

/// One credential's state at scrape time, for its gauges.
pub struct CredentialGauge {
    /// Credential name (from the config).
    pub name: String,
    /// How old the value served is; `None` before the first load.
    pub age: Option<Duration>,
    /// Stale or unavailable.
    pub stale: bool,
}

impl Metrics {
    /// The credential names the config defines (set once the daemon has
    /// built its issuers).
    pub fn set_credentials(&self, names: impl IntoIterator<Item = String>) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        for name in names {
            if !known.contains(name.as_str()) {
                // Once per distinct name: the config's names, set at start.
                known.insert(Box::leak(name.into_boxed_str()));
            }
        }
    }

    /// `name` as a `credential` label: itself when the config defines it,
    /// else [`UNKNOWN_CREDENTIAL`]. (`*`, ListCredentials' name, is kept.)
    pub fn credential_label(&self, name: &str) -> &'static str {
        if name == "*" {
            return "*";
        }
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        known.get(name).copied().unwrap_or(UNKNOWN_CREDENTIAL)
    }

    /// The text exposition, with the per-credential gauges set from
    /// `credentials` first.
    pub fn render(&self, credentials: impl IntoIterator<Item = CredentialGauge>) -> String {
        for c in credentials {
            let labels = CredentialLabels { credential: c.name };
            if let Some(age) = c.age {
                self.cache_age.get_or_create(&labels).set(age.as_secs_f64());
            }
            self.stale.get_or_create(&labels).set(i64::from(c.stale));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}
