//! Wiring: builds the stores, the broker, the issuers and the rotator from
//! a validated config, serves them, and owns every task the daemon spawns
//! (on the broker's `TaskTracker`): refresh loops, watch streams, dynamic
//! keys' reapers, rotation schedules, usage monitors, the SIGHUP listener
//! and the metrics listener. Shutdown cancels them all and waits for them, up to the drain
//! deadline.

use std::{future::Future, sync::Arc};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    broker,
    config::TwilioConfig,
    hygiene, issuer, rotation, server, store,
    twilio::{Endpoints, TwilioClient},
    usage,
};

/// The `[twilio]` table is where the Twilio client's endpoints come from
/// (here, in the wiring: `twilio` does not depend on `config`).
impl From<&TwilioConfig> for Endpoints {
    fn from(t: &TwilioConfig) -> Self {
        Endpoints {
            api_base: t.api_base.clone(),
            iam_base: t.iam_base.clone(),
            accounts_base: t.accounts_base.clone(),
            oauth_base: t.oauth_base.clone(),
        }
    }
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Refusing to run as root without `allow_root`.
    #[error(
        "refusing to run as root: run credbroker as an unprivileged user, or set `allow_root = true` under [server] in {0}"
    )]
    Root(String),
    /// Refusing to run as the overflow uid without `allow_overflow_uid`.
    #[error(
        "refusing to run as uid {uid}, the kernel's overflow uid: every peer whose uid is not mapped into this user namespace shows as {uid} too, and would be taken for the daemon itself (an empty allow list admits the daemon's uid); run credbroker as a uid of its own, or set `allow_overflow_uid = true` under [server] in {file}"
    )]
    OverflowUid {
        /// The overflow uid.
        uid: u32,
        /// The config file.
        file: String,
    },
    /// The broker could not start (a store, or a credential's first load).
    #[error("{0}")]
    Start(#[from] broker::StartError),
    /// An issuer could not get its first value (Twilio refused an OAuth
    /// app's secret).
    #[error("{0}")]
    FirstValue(#[from] issuer::IssueError),
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
            RunError::Root(_)
            | RunError::OverflowUid { .. }
            | RunError::Start(_)
            | RunError::FirstValue(_) => 64,
            RunError::Server(_) | RunError::Metrics(..) => 1,
        }
    }
}

/// Runs the daemon on a validated config until `shutdown` resolves: loads
/// every credential, serves the socket, re-reads the stores on SIGHUP.
pub async fn run(
    config: crate::config::Config,
    env: store::StoreEnv,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    check_identity(&config)?;
    let hardening = hygiene::harden(config.server.lock_memory);
    tracing::info!(
        memory_locked = hardening.locked,
        max_fds = hardening.max_fds.unwrap_or(u64::MAX),
        core_dumps = false,
        "process hardened"
    );
    let stopping = CancellationToken::new();
    let _stop_tasks = stopping.clone().drop_guard();
    let stores = store::build_all(&config, &env)
        .await
        .map_err(broker::StartError::from)?;
    // The stores hold what they need of it (a Vault token); the rest goes.
    drop(env);
    let broker = broker::Broker::start_with(&config, &stores, stopping.clone()).await?;
    let twilio = TwilioClient::new(Endpoints::from(&config.twilio));
    let refresh = Arc::clone(&broker);
    let rotator = Arc::new(rotation::Rotator::new(
        &config,
        stores,
        twilio.clone(),
        *broker.clock(),
        Box::new(move |name| refresh.refresh(name)),
    ));
    let tasks = broker.tasks().clone();
    rotation::spawn_schedules(&rotator, &stopping, &tasks);
    spawn_rotation_watch(&broker, &rotator, &stopping);
    // Usage alerts freeze the dynamic keys of their account through this.
    let freezes = Arc::new(issuer::Freezes::default());
    let usage = usage::Monitors::new(&config, &broker, &twilio, &rotator, &freezes);
    if let Some(addr) = config.server.metrics_addr {
        server::metrics_http::serve(
            addr,
            Arc::clone(&broker),
            Arc::clone(&usage),
            stopping.clone(),
        )
        .await
        .map_err(|e| RunError::Metrics(addr, e))?;
    }

    spawn_sighup(&broker, &stopping);

    let issuers = Arc::new(issuer::Issuers::start(
        &config, &broker, &twilio, &freezes, &stopping,
    ));
    // Serve only once every credential has a value, as for stored ones.
    tokio::select! {
        ready = issuers.ready() => ready?,
        () = stopping.cancelled() => {}
    }
    // Only these names become `credential` labels; any other is "(unknown)".
    crate::metrics::metrics().set_credentials(issuers.iter().map(|i| i.name().to_owned()));
    usage.spawn(&stopping);
    let served = server::serve(
        &config,
        issuers,
        broker,
        rotator,
        usage,
        stopping.clone(),
        shutdown,
    )
    .await;
    drain(&stopping, &tasks).await;
    served?;
    Ok(())
}

/// Tells the rotator when a rotating credential's document changes in its
/// store (the broker sees it at its next read), so that a rotation another
/// process made is retired by this daemon's schedule on time.
fn spawn_rotation_watch(
    broker: &Arc<broker::Broker>,
    rotator: &Arc<rotation::Rotator>,
    stopping: &CancellationToken,
) {
    for (name, _) in rotator.scheduled() {
        let Some(entry) = broker.entry(name) else {
            continue;
        };
        let mut changes = entry.subscribe();
        let (rotator, stopping) = (Arc::clone(rotator), stopping.clone());
        broker.tasks().spawn(async move {
            let version = |s: &broker::Snapshot| s.loaded.as_ref().map(|l| l.version.clone());
            let mut seen = version(&changes.borrow_and_update());
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
                let now = version(&changes.borrow_and_update());
                if now != seen {
                    seen = now;
                    rotator.document_changed();
                }
            }
        });
    }
}

/// Refuses root without `allow_root`, and the overflow uid without
/// `allow_overflow_uid`.
fn check_identity(config: &crate::config::Config) -> Result<(), RunError> {
    let euid = rustix::process::geteuid();
    if euid.is_root() && !config.server.allow_root {
        return Err(RunError::Root(config.source.display().to_string()));
    }
    let overflow = overflow_uid();
    if euid.as_raw() == overflow && !config.server.allow_overflow_uid {
        return Err(RunError::OverflowUid {
            uid: overflow,
            file: config.source.display().to_string(),
        });
    }
    Ok(())
}

/// Re-reads every store on SIGHUP, until `stopping`.
fn spawn_sighup(broker: &Arc<broker::Broker>, stopping: &CancellationToken) {
    let (broker, stopping) = (Arc::clone(broker), stopping.clone());
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            broker.tasks().clone().spawn(async move {
                loop {
                    tokio::select! {
                        _ = stopping.cancelled() => return,
                        got = hup.recv() => {
                            if got.is_none() { return }
                            tracing::info!("SIGHUP: re-reading every store");
                            broker.refresh_all();
                        }
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
    }
}

/// Stops every task the daemon spawned (they stop with `stopping`) and
/// waits for them, up to the drain deadline, so nothing is cut off
/// mid-write.
async fn drain(stopping: &CancellationToken, tasks: &TaskTracker) {
    stopping.cancel();
    tasks.close();
    match tokio::time::timeout(server::DRAIN_DEADLINE, tasks.wait()).await {
        Ok(()) => tracing::info!("every task stopped"),
        Err(_) => tracing::warn!(
            running = tasks.len(),
            "tasks still running after the drain deadline; exiting anyway"
        ),
    }
}

/// The uid the kernel shows for uids not mapped into this user namespace
/// (`/proc/sys/kernel/overflowuid`, 65534 when it cannot be read).
fn overflow_uid() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/overflowuid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65534)
}
