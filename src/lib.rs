//! credbroker keeps Twilio credentials for the workloads beside it and
//! serves them as short leases over gRPC on a Unix socket.
//!
//! Data flows one way: stores feed the broker, the broker feeds the server.
//!
//! - [`config`]: raw TOML → validated [`config::Config`], with errors that
//!   name the file, the key and what was expected.
//! - [`secret`]: zeroizing secret types and the Twilio credential model;
//!   parses stored documents.
//! - [`store`]: the [`store::SecretStore`] trait and its backends.
//! - [`broker`]: the cache of current credentials, leases, refresh loop,
//!   staleness and watch fan-out.
//! - [`server`]: the gRPC services on the Unix socket, peer checks, audit.
//! - [`rotation`]: the rotation state machine and its schedule.
//! - [`twilio`]: the Twilio REST client rotation uses.
//! - [`hygiene`]: the zeroizing allocator, mlock, no core dumps.
//! - [`metrics`]: the Prometheus registry every layer counts into (a leaf);
//!   `server::metrics_http` serves it with /healthz and /readyz.
//! - [`retry`]: the one backoff with jitter every retry loop uses.
//! - [`clock`]: wall-clock time that follows tokio's clock (a leaf: the
//!   broker and rotation both read it, neither through the other).
//! - [`client`]: the Rust client the CLI uses and workloads can depend on.
//! - [`proto`]: the generated `credbroker.v1` types.

// `unsafe` is denied everywhere but `hygiene`, the allocator and process
// hardening, where every block says why it is sound.
#![deny(unsafe_code)]

pub mod broker;
pub mod client;
pub mod clock;
pub mod config;
#[allow(unsafe_code)]
pub mod hygiene;
pub mod metrics;
pub mod retry;
pub mod rotation;
pub mod secret;
pub mod server;
pub mod store;
pub mod twilio;

/// The generated `credbroker.v1` messages, clients and servers.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("credbroker.v1");

    /// Encoded descriptors of the proto, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/credbroker_descriptor.bin"));

    // The messages that carry secrets: Debug shows lengths only, so a
    // `{:?}` of a whole Credential cannot leak.
    impl std::fmt::Debug for AuthToken {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "AuthToken([redacted; {} bytes])", self.token.len())
        }
    }

    impl std::fmt::Debug for ApiKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ApiKey")
                .field("sid", &self.sid)
                .field(
                    "secret",
                    &format_args!("[redacted; {} bytes]", self.secret.len()),
                )
                .finish()
        }
    }

    impl std::fmt::Debug for MintAccessTokenResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MintAccessTokenResponse")
                .field(
                    "token",
                    &format_args!("[redacted; {} bytes]", self.token.len()),
                )
                .field("expires_at", &self.expires_at)
                .finish()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn debug_of_wire_credential_hides_secrets() {
            let token = "0123456789abcdef0123456789abcdef";
            let secret = "QuiteSecretValue0123456789abcdef";
            let c = Credential {
                secret: Some(credential::Secret::AuthToken(AuthToken {
                    token: token.into(),
                })),
                previous: Some(PreviousCredential {
                    secret: Some(previous_credential::Secret::ApiKey(ApiKey {
                        sid: "SK1".into(),
                        secret: secret.into(),
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let shown = format!("{c:?}");
            assert!(!shown.contains(token) && !shown.contains(secret), "{shown}");
            assert!(shown.contains("SK1"));
            let m = MintAccessTokenResponse {
                token: "eyJ.secret.jwt".into(),
                expires_at: None,
            };
            assert!(!format!("{m:?}").contains("eyJ"));
        }
    }
}

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Refusing to run as root without `allow_root`.
    #[error(
        "refusing to run as root: run credbroker as an unprivileged user, or set `allow_root = true` under [server] in {0}"
    )]
    Root(String),
    /// The broker could not start (a store, or a credential's first load).
    #[error("{0}")]
    Start(#[from] broker::StartError),
    /// The server failed.
    #[error(transparent)]
    Server(#[from] server::ServerError),
    /// The metrics listener could not be bound.
    #[error("metrics_addr {0}: {1}")]
    Metrics(std::net::SocketAddr, std::io::Error),
}

impl RunError {
    /// Configuration problems exit with 64 (EX_USAGE); anything else with 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Root(_) | RunError::Start(_) => 64,
            RunError::Server(_) | RunError::Metrics(..) => 1,
        }
    }
}

/// Runs the daemon on a validated config until `shutdown` resolves: loads
/// every credential, serves the socket, re-reads the stores on SIGHUP.
pub async fn run(
    config: config::Config,
    env: store::StoreEnv,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    if rustix::process::geteuid().is_root() && !config.server.allow_root {
        return Err(RunError::Root(config.source.display().to_string()));
    }
    let hardening = hygiene::harden(config.server.lock_memory);
    tracing::info!(
        memory_locked = hardening.locked,
        core_dumps = false,
        "process hardened"
    );
    let stopping = CancellationToken::new();
    let _stop_tasks = stopping.clone().drop_guard();
    let stores = store::build_all(&config, &env)
        .await
        .map_err(broker::StartError::from)?;
    let broker = broker::Broker::start_with(&config, &stores, stopping.clone()).await?;
    let refresh = std::sync::Arc::clone(&broker);
    let rotator = std::sync::Arc::new(rotation::Rotator::new(
        &config,
        stores,
        *broker.clock(),
        Box::new(move |name| refresh.refresh(name)),
    ));
    let tasks = broker.tasks().clone();
    rotation::spawn_schedules(&rotator, &stopping, &tasks);
    if let Some(addr) = config.server.metrics_addr {
        server::metrics_http::serve(addr, std::sync::Arc::clone(&broker), stopping.clone())
            .await
            .map_err(|e| RunError::Metrics(addr, e))?;
    }

    let hup_broker = std::sync::Arc::clone(&broker);
    let hup_stop = stopping.clone();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = hup_stop.cancelled() => return,
                        got = hup.recv() => {
                            if got.is_none() { return }
                            tracing::info!("SIGHUP: re-reading every store");
                            hup_broker.refresh_all();
                        }
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
    }

    let served = server::serve(&config, broker, rotator, stopping.clone(), shutdown).await;
    // Every task the daemon spawned stops with `stopping`; wait for them
    // (up to the drain deadline), so nothing is cut off mid-write.
    stopping.cancel();
    tasks.close();
    match tokio::time::timeout(server::DRAIN_DEADLINE, tasks.wait()).await {
        Ok(()) => tracing::info!("every task stopped"),
        Err(_) => tracing::warn!(
            running = tasks.len(),
            "tasks still running after the drain deadline; exiting anyway"
        ),
    }
    served?;
    Ok(())
}
