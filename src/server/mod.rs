//! The gRPC server on a Unix socket: CredentialBroker, RotationAdmin,
//! `grpc.health.v1.Health` and server reflection.
//!
//! Shutdown: when the shutdown future resolves the server stops accepting,
//! health turns NOT_SERVING, watch streams end with UNAVAILABLE, in-flight
//! calls finish within [`DRAIN_DEADLINE`], and the socket file is removed.

mod conn;
mod gate;
pub mod metrics_http;
mod peer;
mod service;
mod socket;
mod status;

use std::{future::Future, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

pub use peer::{Decision, Peer};
pub use socket::SocketError;

use crate::{
    broker::Broker,
    config::Config,
    issuer::Issuers,
    proto::{
        self, credential_broker_server::CredentialBrokerServer,
        rotation_admin_server::RotationAdminServer,
    },
    rotation::Rotator,
    usage::Monitors,
};

/// Largest CredentialBroker request decoded: a ValidateWebhook with its
/// form parameters or JSON body (Twilio's are a few KiB). Larger requests
/// are refused (RESOURCE_EXHAUSTED) before they are buffered whole.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest RotationAdmin request decoded (a credential name).
pub const MAX_ADMIN_REQUEST_BYTES: usize = 4 * 1024;

/// How often an idle connection is pinged (HTTP/2 keepalive), and how long
/// the peer has to answer before the connection is closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight calls get to finish after shutdown starts.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket could not be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The reflection service could not be built.
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `issuers` (and watches on `broker`) on the configured socket until `shutdown` resolves, then
/// drains. `stopping` is cancelled when the drain starts, which ends watch
/// streams and the broker's refresher.
pub async fn serve(
    config: &Config,
    issuers: Arc<Issuers>,
    broker: Arc<Broker>,
    rotator: Arc<Rotator>,
    usage: Arc<Monitors>,
    stopping: CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let (listener, socket_guard) = socket::bind(&config.server.socket, config.server.socket_mode)?;
    let broker_tasks = broker.tasks().clone();
    let (router, health) = router(config, Arc::clone(&issuers), broker, rotator, usage)?;
    set_health(&health, true).await;
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let caps = conn::Caps::of(&config.server.limits);
    let incoming = conn::incoming(listener, caps, stopping.clone(), &broker_tasks);
    let server = router.serve_with_incoming_shutdown(incoming, async {
        let _ = drain_rx.await;
    });
    tokio::pin!(server);
    tracing::info!(
        socket = %config.server.socket.display(),
        mode = format!("{:04o}", config.server.socket_mode),
        credentials = issuers.len(),
        max_connections = caps.total,
        max_connections_per_uid = caps.per_uid,
        "serving"
    );
    // Start-up is over: what it freed goes back to the kernel, and the
    // code only start-up ran stops counting as resident.
    crate::hygiene::release_free_memory();
    let dropped = crate::hygiene::drop_start_up_pages();
    tracing::info!(
        heap_in_use_bytes = crate::hygiene::heap_in_use().unwrap_or(0),
        start_up_pages_dropped_bytes = dropped,
        "memory after start-up"
    );

    tokio::select! {
        result = &mut server => return result.map_err(Into::into),
        _ = shutdown => {}
    }
    tracing::info!(deadline = ?DRAIN_DEADLINE, "shutting down: no new connections, draining calls in flight");
    set_health(&health, false).await;
    stopping.cancel();
    let _ = drain_tx.send(());
    match tokio::time::timeout(DRAIN_DEADLINE, &mut server).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!("drain deadline passed; closing the remaining connections"),
    }
    drop(socket_guard);
    tracing::info!(socket = %config.server.socket.display(), "stopped; socket removed");
    Ok(())
}

/// Every gRPC service on the socket behind one tonic server with the
/// HTTP/2 limits, and the health reporter that turns them NOT_SERVING at
/// shutdown.
fn router(
    config: &Config,
    issuers: Arc<Issuers>,
    broker: Arc<Broker>,
    rotator: Arc<Rotator>,
    usage: Arc<Monitors>,
) -> Result<
    (
        tonic::transport::server::Router<
            tower::layer::util::Stack<gate::Gate, tower::layer::util::Identity>,
        >,
        tonic_health::server::HealthReporter,
    ),
    ServerError,
> {
    let own_uid = rustix::process::geteuid().as_raw();
    let limits = &config.server.limits;
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let gate = gate::Gate::new(&issuers, &config.server.admin, own_uid);
    let admin_service = service::AdminService::new(
        config.server.admin.clone(),
        own_uid,
        rotator,
        Arc::clone(&broker),
        usage,
    );
    let broker_service =
        service::BrokerService::new(issuers, broker, own_uid, limits.max_watches_per_uid);
    let router = Server::builder()
        .layer(gate)
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(health_service.max_decoding_message_size(MAX_ADMIN_REQUEST_BYTES))
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            CredentialBrokerServer::new(broker_service)
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            RotationAdminServer::new(admin_service)
                .max_decoding_message_size(MAX_ADMIN_REQUEST_BYTES),
        );
    Ok((router, health))
}

/// Health of both services, and of the server as a whole (""), as
/// `grpc.health.v1` reports it.
async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic_health::ServingStatus::{NotServing, Serving};
    let status = if serving { Serving } else { NotServing };
    health
        .set_service_status(
            <CredentialBrokerServer<service::BrokerService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <RotationAdminServer<service::AdminService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    if !serving {
        health.set_service_status("", status).await;
    }
}
