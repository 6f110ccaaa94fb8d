//! `/metrics`, `/healthz` and `/readyz` on the optional `[server]
//! metrics_addr` (plain HTTP: bind it to loopback or a pod IP). The
//! per-credential gauges are read off the broker at each scrape.
//!
//! Also `POST /twilio/usage-trigger`, where Twilio's Usage Triggers call
//! (`[usage.NAME] trigger_url`): a form post of at most
//! [`usage::MAX_CALLBACK_BYTES`], accepted only with a valid
//! X-Twilio-Signature (403 otherwise, and nothing changes).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::{
    broker::Broker,
    metrics::{CallbackLabels, CredentialGauge, metrics},
    usage::{self, Callback, Monitors},
};

/// Every credential's gauges, now.
fn gauges(broker: &Broker) -> Vec<CredentialGauge> {
    let now = broker.clock().now();
    broker
        .entries()
        .map(|entry| {
            let snapshot = entry.snapshot();
            CredentialGauge {
                name: entry.name().to_owned(),
                age: snapshot.loaded.as_ref().map(|loaded| {
                    now.duration_since(loaded.loaded_at)
                        .unwrap_or(Duration::ZERO)
                }),
                stale: snapshot.stale_since.is_some() || snapshot.unavailable.is_some(),
            }
        })
        .collect()
}

/// Whether every credential has been loaded at least once.
fn ready(broker: &Broker) -> bool {
    broker.entries().all(|e| e.snapshot().loaded.is_some())
}

/// Connections the listener holds at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open, requests and idle time together
/// (a scraper reconnects; a client that trickles bytes is cut off).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves `/metrics`, `/healthz`, `/readyz` on `addr` until `stop`: at most
/// [`MAX_CONNECTIONS`] at once, headers within [`HEADER_TIMEOUT`], each
/// connection closed after [`CONNECTION_LIFETIME`]; accept errors (EMFILE)
/// back off rather than spin.
pub async fn serve(
    addr: SocketAddr,
    broker: Arc<Broker>,
    usage: Arc<Monitors>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    let tasks = broker.tasks().clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tasks.clone().spawn(async move {
        let mut backoff = super::conn::AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match backoff.check(accepted, "metrics") {
                Ok((stream, _)) => stream,
                Err(wait) => {
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::debug!("metrics: {MAX_CONNECTIONS} connections open; closing a new one");
                continue;
            };
            tasks.spawn(serve_connection(
                stream,
                Arc::clone(&broker),
                Arc::clone(&usage),
                stop.clone(),
                slot,
            ));
        }
    });
    Ok(())
}

/// One HTTP/1 connection, until it ends, its lifetime is up, or `stop`.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    broker: Arc<Broker>,
    usage: Arc<Monitors>,
    stop: CancellationToken,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let (broker, usage) = (Arc::clone(&broker), Arc::clone(&usage));
        async move {
            Ok::<_, Infallible>(if req.uri().path() == usage::CALLBACK_PATH {
                usage_callback(req, &usage).await
            } else {
                answer(req.uri().path(), &broker)
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    // At shutdown an open connection is dropped, not waited for.
    tokio::select! {
        _ = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {}
        _ = stop.cancelled() => {}
    }
}

fn plain(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid response")
}

/// Unix second of the last refused-callback warning: one a minute at most,
/// whatever a flood of forged callbacks does (each is counted).
static LAST_REFUSAL_LOGGED: AtomicU64 = AtomicU64::new(0);

/// A Usage Trigger's callback.
async fn usage_callback(
    req: Request<hyper::body::Incoming>,
    usage: &Monitors,
) -> Response<Full<Bytes>> {
    if usage.is_empty() {
        return plain(404, "not found\n");
    }
    if req.method() != Method::POST {
        return plain(405, "POST only\n");
    }
    let signature = req
        .headers()
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(req.into_body(), usage::MAX_CALLBACK_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => return plain(413, "body too large or cut off\n"),
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(&body)
        .take(usage::MAX_CALLBACK_PARAMS + 1)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if params.len() > usage::MAX_CALLBACK_PARAMS {
        return plain(400, "too many parameters\n");
    }
    let outcome = usage.callback(&params, signature.as_deref());
    let result = match outcome {
        Callback::Accepted => "accepted",
        Callback::Ignored => "ignored",
        Callback::Refused => "refused",
    };
    metrics()
        .usage_callbacks
        .get_or_create(&CallbackLabels { result })
        .inc();
    if outcome == Callback::Refused {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = LAST_REFUSAL_LOGGED.load(Ordering::Relaxed);
        if now >= last + 60
            && LAST_REFUSAL_LOGGED
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                signed = signature.is_some(),
                "usage trigger callback refused: no valid X-Twilio-Signature for a watched account's trigger_url (counted in credbroker_usage_callbacks_total; logged once a minute)"
            );
        }
        return plain(403, "invalid X-Twilio-Signature\n");
    }
    plain(200, "ok\n")
}

/// The answer to a GET of `path`.
fn answer(path: &str, broker: &Broker) -> Response<Full<Bytes>> {
    let (status, body, kind) = match path {
        "/metrics" => (
            200,
            metrics().render(gauges(broker)),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/healthz" => (200, "ok\n".to_owned(), "text/plain"),
        "/readyz" if ready(broker) => (200, "ready\n".to_owned(), "text/plain"),
        "/readyz" => (
            503,
            "not every credential is loaded yet\n".to_owned(),
            "text/plain",
        ),
        _ => (404, "not found\n".to_owned(), "text/plain"),
    };
    Response::builder()
        .status(status)
        .header("content-type", kind)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
