//! `/metrics`, `/healthz` and `/readyz` on the optional `[server]
//! metrics_addr` (plain HTTP: bind it to loopback or a pod IP). The
//! per-credential gauges are read off the broker at each scrape.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::{
    broker::Broker,
    metrics::{CredentialGauge, metrics},
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

/// Serves `/metrics`, `/healthz`, `/readyz` on `addr` until `stop`.
pub async fn serve(
    addr: SocketAddr,
    broker: Arc<Broker>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    let tasks = broker.tasks().clone();
    tasks.clone().spawn(async move {
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
            let stop = stop.clone();
            tasks.spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let broker = Arc::clone(&broker);
                    async move {
                        let (status, body, kind) = match req.uri().path() {
                            "/metrics" => (
                                200,
                                metrics().render(gauges(&broker)),
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
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                // At shutdown an open connection is dropped, not waited for.
                tokio::select! {
                    _ = connection => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    Ok(())
}
