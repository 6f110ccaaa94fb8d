//! Prometheus metrics, `/healthz` and `/readyz` on the optional
//! `[server] metrics_addr` (plain HTTP: bind it to loopback or a pod IP).
//!
//! Counters are process-wide (one registry); the per-credential gauges
//! (cache age, stale flag) are read off the broker at scrape time. No label
//! ever carries a secret: credential names, methods, codes, store names,
//! peer uids.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// `credential`, `method`, `code` of one call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Credential name (`*` for ListCredentials).
    pub credential: String,
    /// gRPC method.
    pub method: String,
    /// gRPC status code name.
    pub code: String,
}

/// A refused peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    /// gRPC method.
    pub method: String,
    /// The peer's uid.
    pub uid: String,
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

/// Every metric credbroker exports.
pub struct Metrics {
    registry: Registry,
    /// Calls by credential, method and code.
    pub calls: Family<CallLabels, Counter>,
    /// Refused peers by method and uid.
    pub denied: Family<DeniedLabels, Counter>,
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
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("credbroker");
        let m = Metrics {
            calls: Family::default(),
            denied: Family::default(),
            store_latency: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
            }),
            store_errors: Family::default(),
            cache_age: Family::default(),
            stale: Family::default(),
            rotations: Family::default(),
            rotation_last_success: Family::default(),
            dynamic_keys: Family::default(),
            registry: Registry::default(),
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
        Metrics { registry, ..m }
    })
}

impl Metrics {
    /// The text exposition, with per-credential gauges refreshed from `broker`.
    pub fn render(&self, broker: &Broker) -> String {
        let now = broker.clock().now();
        for entry in broker.entries() {
            let labels = CredentialLabels {
                credential: entry.name().to_owned(),
            };
            let snapshot = entry.snapshot();
            if let Some(loaded) = &snapshot.loaded {
                let age = now
                    .duration_since(loaded.loaded_at)
                    .unwrap_or(Duration::ZERO);
                self.cache_age.get_or_create(&labels).set(age.as_secs_f64());
            }
            let stale = snapshot.stale_since.is_some() || snapshot.unavailable.is_some();
            self.stale.get_or_create(&labels).set(i64::from(stale));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// Whether every credential has been loaded at least once.
fn ready(broker: &Broker) -> bool {
    broker.entries().all(|e| e.snapshot().loaded.is_some())
}

/// Serves `/metrics`, `/healthz`, `/readyz` on `addr` until `stop`.
pub async fn serve(
    addr: SocketAddr,
    broker: Arc<Broker>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics: accept failed");
                        continue;
                    }
                },
            };
            let broker = Arc::clone(&broker);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let broker = Arc::clone(&broker);
                    async move {
                        let (status, body, kind) = match req.uri().path() {
                            "/metrics" => (
                                200,
                                metrics().render(&broker),
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                            "/healthz" => (200, "ok\n".to_owned(), "text/plain"),
                            "/readyz" if ready(&broker) => {
                                (200, "ready\n".to_owned(), "text/plain")
                            }
                            "/readyz" => (
                                503,
                                "not every credential is loaded yet\n".to_owned(),
                                "text/plain",
                            ),
                            _ => (404, "not found\n".to_owned(), "text/plain"),
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", kind)
                                .body(Full::new(Bytes::from(body)))
                                .expect("a valid response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}
