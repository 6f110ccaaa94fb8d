//! The `credbroker` command: parse the CLI, load the config, run.

use std::{path::PathBuf, process::ExitCode, time::SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand};
use credbroker::{
    client::Client,
    config::{self, DEFAULT_SOCKET},
    proto,
};

/// Every freed block is wiped: copies of secrets made by libraries do not
/// outlive their use (see `credbroker::hygiene`). The `zeroize-alloc`
/// feature (on by default) exists only so the benchmark can measure what
/// the wipes cost; never ship a build without it.
#[cfg(feature = "zeroize-alloc")]
#[global_allocator]
static ALLOCATOR: credbroker::hygiene::ZeroizingAllocator = credbroker::hygiene::ZeroizingAllocator;

/// Exit code for configuration errors (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "credbroker",
    version,
    about = "Keeps Twilio credentials and serves them as short leases on a Unix socket"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct SocketArgs {
    /// The broker's socket [default: $CREDBROKER_SOCKET, else the config's, else /run/credbroker/broker.sock]
    #[arg(long, short = 's', env = "CREDBROKER_SOCKET")]
    socket: Option<PathBuf>,
    /// Read the socket path from this config file.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl SocketArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        if let Some(c) = &self.config {
            return Ok(config::load(c)?.server.socket);
        }
        Ok(PathBuf::from(DEFAULT_SOCKET))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        /// The config file.
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
    /// Print a credential (secret redacted unless --reveal).
    Get {
        /// The credential name.
        name: String,
        #[command(flatten)]
        socket: SocketArgs,
        /// Print the secret itself.
        #[arg(long)]
        reveal: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a credential now and on every change, until interrupted.
    Watch {
        /// The credential name.
        name: String,
        #[command(flatten)]
        socket: SocketArgs,
        /// Print the secret itself.
        #[arg(long)]
        reveal: bool,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List the credentials this user may read.
    List {
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Print a `[usage.NAME]` table's latest Twilio usage and its alert
    /// (RotationAdmin: the `[server] admin` list); exit 3 while an alert is
    /// raised.
    Usage {
        /// The `[usage.NAME]` table.
        name: String,
        #[command(flatten)]
        socket: SocketArgs,
        /// Lower the alert first (ClearAlert): lifts a freeze of dynamic keys.
        #[arg(long)]
        clear: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when the broker is SERVING (for exec probes).
    Health {
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Rotate now, once (for CronJobs): retire what is due, resume a rotation
    /// under way, start a new one; exit 0 when done.
    Rotate {
        /// The credential to rotate.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        credential: Option<String>,
        /// Every credential with a `rotation` table.
        #[arg(long)]
        all: bool,
        /// Only retire what is due and finish a rotation under way; start none.
        #[arg(long)]
        no_start: bool,
        /// The config file.
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
    /// Validate a config file; report every problem.
    CheckConfig {
        /// The config file.
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
}

/// Logs go to stderr through a writer thread (`credbroker::log`): a request
/// never waits on the write, its audit event is formatted on that thread,
/// and a burst of lines is written in a few large writes rather than one
/// system call per line. Nothing is dropped (the queue applies
/// backpressure when full); the returned guard flushes at exit.
fn init_logging() -> Option<credbroker::log::Flush> {
    use tracing_subscriber::EnvFilter;
    let json = std::env::var("CREDBROKER_LOG_FORMAT").as_deref() == Ok("json");
    let flush = match credbroker::log::start(json) {
        Ok(flush) => Some(flush),
        Err(e) => {
            // Without the thread, lines are written where they happen.
            eprintln!("credbroker: cannot start the log writer thread: {e}");
            None
        }
    };
    let filter = EnvFilter::try_from_env("CREDBROKER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(credbroker::log::LogWriter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    flush
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutdown requested");
}

fn main() -> ExitCode {
    credbroker::hygiene::few_malloc_arenas();
    let cli = Cli::parse();
    // Before any thread starts: VAULT_TOKEN leaves the environment (and
    // /proc/PID/environ), and lives on only in a SecretString.
    let env = credbroker::store::StoreEnv::new(credbroker::hygiene::take_env("VAULT_TOKEN"));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime")
        .block_on(run_command(cli, env))
}

async fn run_command(cli: Cli, env: credbroker::store::StoreEnv) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(&config, env).await,
        Command::Rotate {
            credential,
            all,
            no_start,
            config,
        } => {
            let _log = init_logging();
            rotate(credential, all, !no_start, &config, env).await
        }
        Command::CheckConfig { config } => check_config(&config),
        command => match client_command(command).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("credbroker: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `credbroker serve`: the daemon, until SIGTERM or SIGINT.
async fn serve(path: &std::path::Path, env: credbroker::store::StoreEnv) -> ExitCode {
    let _log = init_logging();
    #[cfg(not(feature = "zeroize-alloc"))]
    tracing::warn!(
        "built without the zeroizing allocator (feature `zeroize-alloc`): freed memory is not wiped; for benchmarks only"
    );
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("credbroker: invalid configuration:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match credbroker::run(config, env, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "credbroker stopped");
            eprintln!("credbroker: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// `credbroker check-config`: validates, and says what each rotation does.
fn check_config(path: &std::path::Path) -> ExitCode {
    let c = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    println!(
        "{}: OK ({} stores, {} credentials)",
        path.display(),
        c.stores.len(),
        c.credentials.len()
    );
    for (name, r) in c
        .credentials
        .iter()
        .filter_map(|(n, c)| Some((n, c.rotation.as_ref()?)))
    {
        println!(
            "  {name}: rotates on \"{}\", grace {}; tests a new value with GET {} (retried while refused for up to {})",
            r.schedule,
            humantime::format_duration(r.grace),
            r.validation_url,
            humantime::format_duration(r.propagation),
        );
    }
    ExitCode::SUCCESS
}

async fn client_command(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Get {
            name,
            socket,
            reveal,
            json,
        } => {
            let client = Client::connect(socket.path()?).await?;
            let credential = client.get(&name).await?;
            print_credential(&credential, reveal, json);
        }
        Command::Watch {
            name,
            socket,
            reveal,
            json,
        } => {
            let client = Client::connect(socket.path()?).await?;
            let mut stream = client.watch(&name).await?;
            while let Some(credential) = stream.message().await.context("watch ended")? {
                print_credential(&credential, reveal, json);
            }
        }
        Command::List { socket } => {
            let client = Client::connect(socket.path()?).await?;
            for info in client.list().await? {
                println!("{}\t{}", info.name, info.kind);
            }
        }
        Command::Usage {
            name,
            socket,
            clear,
            json,
        } => {
            let client = Client::connect(socket.path()?).await?;
            let status = if clear {
                client.clear_alert(&name).await?
            } else {
                client.usage(&name).await?
            };
            print_usage(&status, json);
            if status.alert.is_some() {
                return Ok(ExitCode::from(3));
            }
        }
        Command::Health { socket } => {
            let client = Client::connect(socket.path()?).await?;
            let status = client.health().await?;
            println!("{}", status.as_str_name());
            if status != tonic_health::pb::health_check_response::ServingStatus::Serving {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Serve { .. } | Command::CheckConfig { .. } | Command::Rotate { .. } => {
            unreachable!("handled in main")
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn rotate(
    credential: Option<String>,
    all: bool,
    start: bool,
    path: &std::path::Path,
    env: credbroker::store::StoreEnv,
) -> ExitCode {
    use credbroker::rotation::Rotator;
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("credbroker: invalid configuration:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The rotator holds the admin credential and new secrets: same hardening
    // as the daemon (no core dumps, not dumpable, memory locked if asked).
    credbroker::hygiene::harden(config.server.lock_memory);
    let names: Vec<String> = if all {
        config
            .credentials
            .iter()
            .filter(|(_, c)| c.rotation.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    } else {
        credential.into_iter().collect()
    };
    if names.is_empty() {
        eprintln!(
            "credbroker: no credential in {} has a rotation table",
            path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let stores = match credbroker::store::build_all(&config, &env).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("credbroker: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rotator = Rotator::new(
        &config,
        stores,
        credbroker::twilio::TwilioClient::new((&config.twilio).into()),
        credbroker::clock::Clock::new(),
        Box::new(|_| {}),
    );
    let mut code = ExitCode::SUCCESS;
    for name in names {
        let result = rotator.rotate(&name, start).await;
        if let Some(failed) = report_rotation(&name, result) {
            code = failed;
        }
    }
    code
}

/// Prints what one rotation did; the exit code when it failed (64 for a
/// credential the config does not name or rotate, 1 otherwise).
fn report_rotation(
    name: &str,
    result: Result<credbroker::rotation::Outcome, credbroker::rotation::RotationError>,
) -> Option<ExitCode> {
    use credbroker::rotation::{Outcome, RotationError};
    let when = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    match result {
        Ok(Outcome::Promoted { retire_at }) => println!(
            "{name}: rotated; the previous value retires at {}",
            when(retire_at)
        ),
        Ok(Outcome::Waiting { retire_at }) => println!(
            "{name}: the previous rotation's grace window runs until {}; rotate again after it",
            when(retire_at)
        ),
        Ok(Outcome::InProgress { owner }) => {
            println!("{name}: being rotated by {owner}; nothing done")
        }
        Ok(Outcome::Retired) => println!("{name}: previous value retired"),
        Ok(Outcome::Idle) => println!("{name}: nothing to do"),
        Err(e @ (RotationError::NotFound(_) | RotationError::NotConfigured(_))) => {
            eprintln!("credbroker: {e}");
            return Some(ExitCode::from(EXIT_CONFIG));
        }
        Err(e) => {
            eprintln!("credbroker: {e}");
            return Some(ExitCode::FAILURE);
        }
    }
    None
}

fn rfc3339(t: &Option<prost_types::Timestamp>) -> Option<String> {
    let t = t.as_ref()?;
    let t = SystemTime::try_from(*t).ok()?;
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

fn print_usage(s: &proto::UsageStatus, json: bool) {
    if json {
        let categories: Vec<serde_json::Value> = s
            .categories
            .iter()
            .map(|c| {
                serde_json::json!({
                    "category": c.category,
                    "polled": c.polled,
                    "count": c.count,
                    "usage": c.usage,
                    "price": c.price,
                    "price_unit": c.price_unit,
                    "window_count": c.window_count,
                    "baseline_median": c.baseline_median,
                    "spike": c.spike,
                })
            })
            .collect();
        let alert = s.alert.as_ref().map(|a| {
            serde_json::json!({
                "raised_at": rfc3339(&a.raised_at),
                "reason": a.reason,
                "categories": a.categories,
                "source": a.source,
            })
        });
        let out = serde_json::json!({
            "name": s.name,
            "on_spike": s.on_spike,
            "last_poll": rfc3339(&s.last_poll),
            "last_error": s.last_error,
            "categories": categories,
            "alert": alert,
        });
        println!("{out}");
        return;
    }
    println!("usage {} (on_spike = {})", s.name, s.on_spike);
    println!(
        "last poll: {}",
        rfc3339(&s.last_poll).unwrap_or_else(|| "none yet".into())
    );
    if !s.last_error.is_empty() {
        println!("last error: {}", s.last_error);
    }
    match &s.alert {
        Some(a) => println!(
            "ALERT raised {} by {}: {}",
            rfc3339(&a.raised_at).unwrap_or_default(),
            a.source,
            a.reason
        ),
        None => println!("no alert"),
    }
    println!("category\ttoday\twindow\tmedian\tspike");
    for c in &s.categories {
        let median = c
            .baseline_median
            .map(|m| m.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{}\t{}\t{}\t{median}\t{}",
            c.category,
            if c.polled {
                c.count.to_string()
            } else {
                "-".into()
            },
            c.window_count,
            if c.spike { "yes" } else { "no" }
        );
    }
}

const REDACTED: &str = "<redacted>";

fn print_credential(c: &proto::Credential, reveal: bool, json: bool) {
    let show = |s: &str| {
        if reveal {
            s.to_owned()
        } else {
            REDACTED.to_owned()
        }
    };
    let mut fields = serde_json::Map::new();
    fields.insert("name".into(), c.name.clone().into());
    fields.insert("account_sid".into(), c.account_sid.clone().into());
    match &c.secret {
        Some(proto::credential::Secret::AuthToken(t)) => {
            fields.insert("kind".into(), "auth_token".into());
            fields.insert("auth_token".into(), show(&t.token).into());
        }
        Some(proto::credential::Secret::ApiKey(k)) => {
            fields.insert("kind".into(), "api_key".into());
            fields.insert("api_key_sid".into(), k.sid.clone().into());
            fields.insert("api_key_secret".into(), show(&k.secret).into());
        }
        Some(proto::credential::Secret::Bearer(b)) => {
            fields.insert("kind".into(), "oauth_client".into());
            fields.insert("access_token".into(), show(&b.access_token).into());
            fields.insert("token_expires_at".into(), rfc3339(&b.expires_at).into());
        }
        None => {}
    }
    fields.insert("version".into(), c.version.clone().into());
    fields.insert("issued_at".into(), rfc3339(&c.issued_at).into());
    fields.insert("expires_at".into(), rfc3339(&c.expires_at).into());
    fields.insert("stale".into(), c.stale.into());
    if c.stale {
        fields.insert("stale_since".into(), rfc3339(&c.stale_since).into());
    }
    if let Some(p) = &c.previous {
        let mut prev = serde_json::Map::new();
        match &p.secret {
            Some(proto::previous_credential::Secret::AuthToken(t)) => {
                prev.insert("auth_token".into(), show(&t.token).into());
            }
            Some(proto::previous_credential::Secret::ApiKey(k)) => {
                prev.insert("api_key_sid".into(), k.sid.clone().into());
                prev.insert("api_key_secret".into(), show(&k.secret).into());
            }
            None => {}
        }
        prev.insert("version".into(), p.version.clone().into());
        prev.insert("retire_at".into(), rfc3339(&p.retire_at).into());
        fields.insert("previous".into(), prev.into());
    }
    if json {
        println!("{}", serde_json::Value::Object(fields));
    } else {
        print_fields(&fields);
    }
}

/// `fields` as `key: value` lines (`previous.key: value` for the previous
/// value's), then a blank line.
fn print_fields(fields: &serde_json::Map<String, serde_json::Value>) {
    for (k, v) in fields {
        match v {
            serde_json::Value::String(s) => println!("{k}: {s}"),
            serde_json::Value::Object(o) => {
                for (pk, pv) in o {
                    println!(
                        "{k}.{pk}: {}",
                        pv.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| pv.to_string())
                    );
                }
            }
            other => println!("{k}: {other}"),
        }
    }
    println!();
}
