//! Load generator: credbroker against a floor measured in the same run.
//!
//! Starts the real daemon (`--bin`, default: the `credbroker` next to this
//! example's target directory) on a file store with `--credentials` entries,
//! and the floor: this same program re-run as a bare tonic server on another
//! Unix socket, answering the same `Credential` from a `HashMap` (what gRPC
//! over a Unix socket costs with no broker at all). Both are driven by the
//! same client in this process: `--in-flight` calls in flight over
//! `--channels` connections for `--seconds`. Prints JSON: calls/s,
//! p50/p99/p999 latency, RSS and CPU time per call of both servers, and each
//! daemon figure as a ratio to the floor, which holds on a noisy shared
//! machine. See docs/benchmarks.md.
//!
//! Modes (one per run):
//! - default: GetCredential throughput and latency. `--compare-bin PATH`
//!   runs a second daemon build the same way (the benchmark passes one built
//!   without the zeroizing allocator) and reports bin/compare ratios.
//! - `--watchers W [--changes R]`: W WatchCredential streams on one
//!   credential; R times, the store file is replaced and the time until the
//!   change has reached every stream is measured.
//! - `--rotate`: GetCredential load on an API-key credential across one full
//!   rotation (create, promote, grace, retire) against the fake Twilio
//!   (`tests/support/twilio_fake.py`, `--twilio-fake`); counts failed calls
//!   and leases that outlived their key.
//!
//! `--log LEVEL` is the daemon's `CREDBROKER_LOG` (default `info`, so the
//! audit event of every call is written, as in production; the daemon's
//! stderr goes to a file whose audit lines are counted).
//!
//! ```sh
//! cargo build --release --bin credbroker --example loadgen
//! target/release/examples/loadgen --credentials 100 --in-flight 64 --channels 8 --seconds 10
//! ```

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use credbroker::{
    client::Client,
    proto::{
        self,
        credential_broker_client::CredentialBrokerClient,
        credential_broker_server::{CredentialBroker, CredentialBrokerServer},
        rotation_admin_client::RotationAdminClient,
    },
};
use serde_json::json;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status, transport::Channel};

struct Args {
    credentials: usize,
    in_flight: usize,
    channels: usize,
    seconds: u64,
    rounds: usize,
    bin: PathBuf,
    compare_bin: Option<PathBuf>,
    log: String,
    watchers: usize,
    changes: usize,
    rotate: bool,
    twilio_fake: PathBuf,
    serve_floor: Option<PathBuf>,
}

fn parse_args() -> Args {
    let exe = std::env::current_exe().expect("current exe");
    let mut args = Args {
        credentials: 100,
        in_flight: 1,
        channels: 1,
        seconds: 5,
        rounds: 3,
        bin: exe
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("credbroker"))
            .unwrap_or_default(),
        compare_bin: None,
        log: "info".into(),
        watchers: 0,
        changes: 5,
        rotate: false,
        // At run time first: a shared target dir may hold a binary built in another clone.
        twilio_fake: std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
            .join("tests/support/twilio_fake.py"),
        serve_floor: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--rotate" {
            args.rotate = true;
            continue;
        }
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = |v: &str| -> usize {
            v.parse()
                .unwrap_or_else(|_| panic!("{flag} takes a number, not {v:?}"))
        };
        match flag.as_str() {
            "--credentials" => args.credentials = number(&v),
            "--in-flight" => args.in_flight = number(&v),
            "--channels" => args.channels = number(&v),
            "--seconds" => args.seconds = number(&v) as u64,
            "--rounds" => args.rounds = number(&v).max(1),
            "--bin" => args.bin = v.into(),
            "--compare-bin" => args.compare_bin = Some(v.into()),
            "--log" => args.log = v,
            "--watchers" => args.watchers = number(&v),
            "--changes" => args.changes = number(&v),
            "--twilio-fake" => args.twilio_fake = v.into(),
            "--serve-floor" => args.serve_floor = Some(v.into()),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(args.credentials > 0 && args.in_flight > 0 && args.channels > 0);
    args
}

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const ADMIN_TOKEN: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
const OLD_KEY: &str = "SK0000000000000000000000000000beef";
const OLD_SECRET: &str = "loadgenOldSecret0000000000000000";

fn token(i: usize) -> String {
    format!("{:032x}", 0xabc0_0000_u64 + i as u64)
}

/// The token of credential 0 after change `round` (watchers mode).
fn round_token(round: usize) -> String {
    format!("{:032x}", 0xfeed_0000_u64 + round as u64)
}

fn name(i: usize) -> String {
    format!("cred-{i}")
}

/// The floor: the same answer from a HashMap.
struct Floor(HashMap<String, proto::Credential>);

#[tonic::async_trait]
impl CredentialBroker for Floor {
    async fn get_credential(
        &self,
        request: Request<proto::GetCredentialRequest>,
    ) -> Result<Response<proto::Credential>, Status> {
        self.0
            .get(&request.get_ref().name)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such credential"))
    }
    type WatchCredentialStream = tokio_stream::Empty<Result<proto::Credential, Status>>;
    async fn watch_credential(
        &self,
        _: Request<proto::WatchCredentialRequest>,
    ) -> Result<Response<Self::WatchCredentialStream>, Status> {
        Err(Status::unimplemented("floor"))
    }
    async fn list_credentials(
        &self,
        _: Request<proto::ListCredentialsRequest>,
    ) -> Result<Response<proto::ListCredentialsResponse>, Status> {
        Err(Status::unimplemented("floor"))
    }
    async fn validate_webhook(
        &self,
        _: Request<proto::ValidateWebhookRequest>,
    ) -> Result<Response<proto::ValidateWebhookResponse>, Status> {
        Err(Status::unimplemented("floor"))
    }
    async fn mint_access_token(
        &self,
        _: Request<proto::MintAccessTokenRequest>,
    ) -> Result<Response<proto::MintAccessTokenResponse>, Status> {
        Err(Status::unimplemented("floor"))
    }
}

/// `--serve-floor SOCKET`: the floor server, in a process of its own like
/// the daemon, so both are measured the same way.
async fn serve_floor(socket: &Path, credentials: usize) {
    let mut floor = HashMap::new();
    for i in 0..credentials {
        floor.insert(
            name(i),
            proto::Credential {
                name: name(i),
                account_sid: AC.into(),
                secret: Some(proto::credential::Secret::AuthToken(proto::AuthToken {
                    token: token(i),
                })),
                version: "0123456789abcdef".into(),
                issued_at: Some(SystemTime::now().into()),
                expires_at: Some(SystemTime::now().into()),
                ..Default::default()
            },
        );
    }
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket).expect("bind the floor socket");
    tonic::transport::Server::builder()
        .add_service(CredentialBrokerServer::new(Floor(floor)))
        .serve_with_incoming(UnixListenerStream::new(listener))
        .await
        .expect("floor server");
}

/// A server process (the daemon or the floor), killed on drop.
struct Server {
    child: std::process::Child,
    socket: PathBuf,
    to_serving: f64,
}

impl Server {
    /// Starts `command` and waits until `socket` answers (and, with
    /// `health`, until the gRPC health check passes).
    async fn start(
        mut command: std::process::Command,
        socket: PathBuf,
        what: &str,
        health: bool,
    ) -> Server {
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        loop {
            if let Ok(c) = Client::connect(&socket).await
                && (!health || c.health().await.is_ok())
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{what} exited before serving: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "{what} not serving after 600 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Server {
            child,
            socket,
            to_serving: started.elapsed().as_secs_f64(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_kb(&self) -> u64 {
        proc_field(self.pid(), "status", "VmRSS:")
    }

    fn rss_anon_kb(&self) -> u64 {
        proc_field(self.pid(), "status", "RssAnon:")
    }
}

impl Drop for Server {
    /// SIGTERM, so the daemon drains and flushes its log (the audit lines
    /// are counted after this; a SIGKILL lost the last few), then SIGKILL
    /// if it has not exited within 15 s.
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon `bin` on `config` in `dir`, its stderr in `dir/<label>.log`.
/// Where a daemon's stderr goes: beside the store but not in its directory.
/// The file store watches the directory of its file, and a log written
/// there would wake its watcher on every batch (in production the log is a
/// pipe, not a file beside the secrets).
fn log_path(dir: &Path, label: &str) -> PathBuf {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).expect("log directory");
    logs.join(format!("{label}.log"))
}

async fn start_daemon(bin: &Path, dir: &Path, label: &str, log: &str) -> Server {
    let socket = dir.join("broker.sock");
    let mut command = std::process::Command::new(bin);
    command
        .args(["serve", "--config"])
        .arg(dir.join("config.toml"))
        .env("CREDBROKER_LOG", log)
        .stderr(std::fs::File::create(log_path(dir, label)).expect("daemon log"));
    Server::start(
        command,
        socket,
        &format!("the daemon {}", bin.display()),
        true,
    )
    .await
}

async fn start_floor(dir: &Path, credentials: usize) -> Server {
    let socket = dir.join("floor.sock");
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["--credentials", &credentials.to_string(), "--serve-floor"])
        .arg(&socket);
    Server::start(command, socket, "the floor", false).await
}

struct Figures {
    calls: u64,
    errors: u64,
    seconds: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Figures {
    fn per_s(&self) -> f64 {
        self.calls as f64 / self.seconds
    }
}

/// Percentiles of latencies in nanoseconds, as microseconds.
fn quantiles(mut all: Vec<u64>) -> (f64, f64, f64, f64) {
    if all.is_empty() {
        return (0.0, 0.0, 0.0, 0.0);
    }
    all.sort_unstable();
    let q = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1e3;
    (q(0.50), q(0.99), q(0.999), q(1.0))
}

async fn connect_channels(socket: &Path, n: usize) -> Vec<Channel> {
    let mut channels = Vec::new();
    for _ in 0..n {
        channels.push(Client::connect(socket).await.expect("connect").channel());
    }
    channels
}

/// What one GetCredential answered, for the rotation checks.
struct Seen {
    key_sid: String,
    expires_at: SystemTime,
}

/// Drives GetCredential on `socket`: `in_flight` loops over `channels`
/// connections until `stop` is set, on the names `pick(loop, call)` gives.
/// `on_answer` sees every answer.
async fn drive(
    socket: &Path,
    in_flight: usize,
    channels: usize,
    stop: Arc<AtomicBool>,
    pick: Arc<dyn Fn(usize, usize) -> String + Send + Sync>,
    on_answer: Option<Arc<dyn Fn(Seen) + Send + Sync>>,
) -> Figures {
    let channels = connect_channels(socket, channels).await;
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..in_flight {
        let mut client = CredentialBrokerClient::new(channels[i % channels.len()].clone());
        let (stop, pick, on_answer, errors) = (
            Arc::clone(&stop),
            Arc::clone(&pick),
            on_answer.clone(),
            Arc::clone(&errors),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut call = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = pick(i, call);
                call += 1;
                let t = Instant::now();
                match client
                    .get_credential(proto::GetCredentialRequest { name })
                    .await
                {
                    Ok(answer) => {
                        latencies.push(t.elapsed().as_nanos() as u64);
                        if let Some(f) = &on_answer {
                            let c = answer.into_inner();
                            let key_sid = match c.secret {
                                Some(proto::credential::Secret::ApiKey(k)) => k.sid,
                                _ => String::new(),
                            };
                            let expires_at = c
                                .expires_at
                                .and_then(|t| SystemTime::try_from(t).ok())
                                .unwrap_or(SystemTime::UNIX_EPOCH);
                            f(Seen {
                                key_sid,
                                expires_at,
                            });
                        }
                    }
                    Err(status) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("loadgen: GetCredential failed: {status}");
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    let seconds = started.elapsed().as_secs_f64();
    let calls = all.len() as u64;
    let (p50, p99, p999, max) = quantiles(all);
    Figures {
        calls,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        p50,
        p99,
        p999,
        max,
    }
}

/// `drive` for `seconds` over every credential in turn.
async fn drive_for(socket: &Path, args: &Args) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = Arc::clone(&stop);
        let seconds = args.seconds;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let n = args.credentials;
    let pick: Arc<dyn Fn(usize, usize) -> String + Send + Sync> =
        Arc::new(move |i, call| name((i * 7919 + call * 13) % n));
    let figures = drive(socket, args.in_flight, args.channels, stop, pick, None).await;
    timer.await.unwrap();
    figures
}

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// USER_HZ on Linux.
const HZ: f64 = 100.0;

fn figures_json(f: &Figures) -> serde_json::Value {
    json!({
        "calls": f.calls, "errors": f.errors, "calls_per_s": f.per_s(),
        "p50_us": f.p50, "p99_us": f.p99, "p999_us": f.p999, "max_us": f.max,
    })
}

/// The store file and config for `n` credentials; `extra` is appended to
/// the config, `docs` replace or add documents.
fn write_setup(dir: &Path, n: usize, head: &str, extra: &str, docs: &[(&str, serde_json::Value)]) {
    let mut all = serde_json::Map::new();
    let mut config = format!(
        // One uid stands for every workload here: its caps are not what is measured.
        "[server]\nsocket = \"{}\"\nallow_root = true\nlock_memory = false\n\
         max_connections_per_uid = 1000000\nmax_watches_per_uid = 1000000\n\
         max_streams_per_connection = 1000000\n{head}\n\
         [stores.f]\ntype = \"file\"\npath = \"{}\"\n",
        dir.join("broker.sock").display(),
        dir.join("secrets.json").display()
    );
    for i in 0..n {
        all.insert(name(i), json!({"account_sid": AC, "auth_token": token(i)}));
        config.push_str(&format!(
            "[credentials.{}]\nstore = \"f\"\npath = \"{}\"\n",
            name(i),
            name(i)
        ));
    }
    for (path, doc) in docs {
        all.insert((*path).to_owned(), doc.clone());
    }
    config.push_str(extra);
    replace_file(
        &dir.join("secrets.json"),
        &serde_json::Value::Object(all).to_string(),
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
}

/// Replaces `path` the way editors and Kubernetes do: write aside, rename.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn audit_lines(dir: &Path, label: &str) -> usize {
    std::fs::read_to_string(log_path(dir, label))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("access decision"))
        .count()
}

/// The heap the daemon said it used once start-up was over (its "memory
/// after start-up" log line), waiting a little for the line to be written.
fn heap_after_start(dir: &Path, label: &str) -> Option<u64> {
    for _ in 0..100 {
        let log = std::fs::read_to_string(log_path(dir, label)).unwrap_or_default();
        let found = log
            .lines()
            .filter(|l| l.contains("memory after start-up"))
            .find_map(|l| {
                let (_, rest) = l.split_once("heap_in_use_bytes=")?;
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            });
        if found.is_some() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A server under measurement in get mode, with its figures per round.
struct Measured {
    server: Server,
    rounds: Vec<Figures>,
    /// The server's CPU ticks during its rounds.
    ticks: u64,
    /// This process's (the client's) CPU ticks during the server's rounds.
    client_ticks: u64,
}

impl Measured {
    fn new(server: Server) -> Self {
        Self {
            server,
            rounds: Vec::new(),
            ticks: 0,
            client_ticks: 0,
        }
    }

    async fn round(&mut self, args: &Args) {
        let before = cpu_ticks(self.server.pid());
        let client_before = cpu_ticks(std::process::id());
        self.rounds.push(drive_for(&self.server.socket, args).await);
        self.ticks += cpu_ticks(self.server.pid()) - before;
        self.client_ticks += cpu_ticks(std::process::id()) - client_before;
    }

    /// The server's own CPU per call: utime+stime of its process over the
    /// calls it answered. Unlike the throughput ratio, it does not depend
    /// on what the client costs.
    fn cpu_us_per_call(&self) -> f64 {
        let calls: u64 = self.rounds.iter().map(|f| f.calls).sum();
        self.ticks as f64 / HZ * 1e6 / calls.max(1) as f64
    }

    /// The median round's figures, RSS after the load and CPU per call.
    fn report(&self) -> serde_json::Value {
        let median = |f: &dyn Fn(&Figures) -> f64| median(self.rounds.iter().map(f).collect());
        let calls: u64 = self.rounds.iter().map(|f| f.calls).sum();
        let seconds: f64 = self.rounds.iter().map(|f| f.seconds).sum::<f64>().max(1e-9);
        json!({
            "calls": calls,
            "errors": self.rounds.iter().map(|f| f.errors).sum::<u64>(),
            "calls_per_s": median(&|f| f.per_s()),
            "p50_us": median(&|f| f.p50),
            "p99_us": median(&|f| f.p99),
            "p999_us": median(&|f| f.p999),
            "max_us": self.rounds.iter().map(|f| f.max).fold(0.0, f64::max),
            "calls_per_s_by_round": self.rounds.iter().map(Figures::per_s).collect::<Vec<_>>(),
            "start_to_serving_s": self.server.to_serving,
            "rss_kb": self.server.rss_kb(),
            "rss_anon_kb": self.server.rss_anon_kb(),
            "cpu_us_per_call": self.cpu_us_per_call(),
            // Cores busy while it was driven: the server's, and the
            // client's. Together near the machine's cores, the machine (not
            // the server) is the limit, and the throughput ratio mostly
            // says how the client's and the server's costs compare.
            "server_cores_busy": self.ticks as f64 / HZ / seconds,
            "client_cores_busy": self.client_ticks as f64 / HZ / seconds,
            "machine_cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    /// Median over rounds of this server's figure divided by `other`'s in
    /// the same round (adjacent in time, so both saw the same machine).
    fn ratio(&self, other: &Measured, f: fn(&Figures) -> f64) -> f64 {
        median(
            self.rounds
                .iter()
                .zip(&other.rounds)
                .map(|(a, b)| f(a) / f(b))
                .collect(),
        )
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn get_mode(args: &Args, dir: &Path) -> serde_json::Value {
    write_setup(dir, args.credentials, "", "", &[]);
    let mut floor = Measured::new(start_floor(dir, args.credentials).await);
    let mut daemon = Measured::new(start_daemon(&args.bin, dir, "daemon", &args.log).await);
    let rss_idle = daemon.server.rss_kb();
    let rss_anon_idle = daemon.server.rss_anon_kb();
    let mut compare = match &args.compare_bin {
        Some(other) => {
            // Its own socket and store, beside the first daemon's.
            let cdir = dir.join("compare");
            std::fs::create_dir_all(&cdir).unwrap();
            write_setup(&cdir, args.credentials, "", "", &[]);
            Some(Measured::new(
                start_daemon(other, &cdir, "compare", &args.log).await,
            ))
        }
        None => None,
    };
    // Rounds alternate between the servers, so a slow spell of a shared
    // machine hits all of them rather than one.
    for _ in 0..args.rounds {
        floor.round(args).await;
        daemon.round(args).await;
        if let Some(c) = compare.as_mut() {
            c.round(args).await;
        }
    }
    let throughput = |f: &Figures| f.per_s();
    let p50 = |f: &Figures| f.p50;
    let p99 = |f: &Figures| f.p99;
    let mut report = json!({
        "mode": "get",
        "credentials": args.credentials, "in_flight": args.in_flight,
        "channels": args.channels, "seconds": args.seconds, "rounds": args.rounds,
        "log": args.log,
        "ratio": {
            // The server's own CPU per call: the figure to compare.
            "cpu_per_call": daemon.cpu_us_per_call() / floor.cpu_us_per_call(),
            // Client-dependent: client and servers share the cores, so this
            // is (client + floor cost) / (client + daemon cost) per call.
            "throughput": daemon.ratio(&floor, throughput),
            "p50": daemon.ratio(&floor, p50),
            "p99": daemon.ratio(&floor, p99),
            "rss": daemon.server.rss_kb() as f64 / floor.server.rss_kb() as f64,
        },
        "throughput_ratio_is_client_dependent": true,
    });
    if let Some(c) = &compare {
        report["compare_bin"] = json!(args.compare_bin.as_ref().unwrap().display().to_string());
        report["compare_ratio"] = json!({
            "throughput": daemon.ratio(c, throughput),
            "p50": daemon.ratio(c, p50),
            "p99": daemon.ratio(c, p99),
        });
        report["compare_vs_floor"] = json!({
            "throughput": c.ratio(&floor, throughput),
            "p50": c.ratio(&floor, p50),
        });
    }
    report["floor"] = floor.report();
    report["daemon"] = daemon.report();
    report["daemon"]["rss_kb_idle"] = json!(rss_idle);
    report["daemon"]["rss_anon_kb_idle"] = json!(rss_anon_idle);
    report["daemon"]["heap_in_use_bytes_after_start"] = json!(heap_after_start(dir, "daemon"));
    if let Some(c) = &compare {
        report["compare"] = c.report();
    }
    // Stopped, so their logs are complete before the audit lines are counted.
    drop(floor);
    drop(daemon);
    drop(compare);
    report["daemon"]["audit_lines"] = json!(audit_lines(dir, "daemon"));
    if report.get("compare").is_some() {
        report["compare"]["audit_lines"] = json!(audit_lines(&dir.join("compare"), "compare"));
    }
    report
}

async fn watchers_mode(args: &Args, dir: &Path) -> serde_json::Value {
    let write = |round: Option<usize>| {
        let docs = round
            .map(|r| {
                vec![(
                    "cred-0",
                    json!({"account_sid": AC, "auth_token": round_token(r)}),
                )]
            })
            .unwrap_or_default();
        write_setup(dir, args.credentials, "", "", &docs);
    };
    write(None);
    let daemon = start_daemon(&args.bin, dir, "daemon", &args.log).await;
    // The server allows 200 streams per connection by default (hyper's
    // limit); keep well under it.
    let channels = connect_channels(
        &daemon.socket,
        args.channels.max(args.watchers.div_ceil(100)),
    )
    .await;
    // Connected, no stream yet: what the streams add is measured from here.
    let rss_before = daemon.rss_kb();
    let anon_before = daemon.rss_anon_kb();
    let base = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.changes).map(|_| AtomicU64::new(0)).collect());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64)>();
    let ready = Arc::new(AtomicUsize::new(0));
    let opened = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.watchers {
        let mut client = CredentialBrokerClient::new(channels[i % channels.len()].clone());
        let (tx, ready, sent_at) = (tx.clone(), Arc::clone(&ready), Arc::clone(&sent_at));
        let rounds = args.changes;
        tasks.push(tokio::spawn(async move {
            let mut stream = client
                .watch_credential(proto::WatchCredentialRequest {
                    name: "cred-0".into(),
                })
                .await
                .expect("WatchCredential")
                .into_inner();
            stream
                .message()
                .await
                .expect("first message")
                .expect("first message");
            ready.fetch_add(1, Ordering::Relaxed);
            let mut seen = vec![false; rounds];
            while let Ok(Some(c)) = stream.message().await {
                let now = base.elapsed().as_nanos() as u64;
                let Some(proto::credential::Secret::AuthToken(t)) = c.secret else {
                    continue;
                };
                if let Some(r) = (0..rounds).find(|&r| t.token == round_token(r))
                    && !seen[r]
                {
                    seen[r] = true;
                    let _ = tx.send((r, now.saturating_sub(sent_at[r].load(Ordering::Acquire))));
                }
            }
        }));
    }
    drop(tx);
    while ready.load(Ordering::Relaxed) < args.watchers {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            opened.elapsed() < Duration::from_secs(300),
            "streams not open after 300 s"
        );
    }
    let open_all_s = opened.elapsed().as_secs_f64();
    let rss_watching = daemon.rss_kb();
    let anon_watching = proc_field(daemon.pid(), "status", "RssAnon:");
    let mut rounds = Vec::new();
    let mut all = Vec::new();
    for r in 0..args.changes {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sent_at[r].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        write(Some(r));
        let mut latencies = Vec::with_capacity(args.watchers);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while latencies.len() < args.watchers {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((round, ns))) if round == r => latencies.push(ns),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let reached = latencies.len();
        all.extend(latencies.iter().copied());
        let (p50, p99, _, max) = quantiles(latencies);
        rounds.push(json!({"reached": reached, "p50_ms": p50 / 1e3, "p99_ms": p99 / 1e3, "max_ms": max / 1e3}));
    }
    let reached_all = rounds
        .iter()
        .all(|r| r["reached"].as_u64() == Some(args.watchers as u64));
    let (p50, p99, _, max) = quantiles(all);
    let rss_after = daemon.rss_kb();
    drop(daemon);
    for t in tasks {
        t.abort();
    }
    json!({
        "mode": "watchers",
        "credentials": args.credentials, "watchers": args.watchers, "changes": args.changes,
        "channels": channels.len(), "log": args.log,
        "open_all_s": open_all_s,
        "reached_all": reached_all,
        "reach_ms": {"p50": p50 / 1e3, "p99": p99 / 1e3, "max": max / 1e3},
        "rounds": rounds,
        "rss_kb_before_streams": rss_before,
        "rss_kb_watching": rss_watching,
        "rss_kb_after": rss_after,
        // Anonymous memory the open streams added, per stream.
        "heap_bytes_per_stream":
            (anon_watching.saturating_sub(anon_before) * 1024) as f64 / args.watchers.max(1) as f64,
    })
}

/// The fake Twilio, killed on drop.
struct FakeTwilio {
    child: std::process::Child,
    url: String,
}

impl FakeTwilio {
    fn start(script: &Path, dir: &Path) -> FakeTwilio {
        use std::io::BufRead;
        let seed = dir.join("twilio-seed.json");
        std::fs::write(
            &seed,
            json!({
                "accounts": [{"sid": AC, "auth_token": ADMIN_TOKEN}],
                "keys": [{"account_sid": AC, "sid": OLD_KEY, "secret": OLD_SECRET,
                          "friendly_name": "loadgen initial key", "type": "standard"}],
            })
            .to_string(),
        )
        .unwrap();
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .args(["--port", "0", "--seed"])
            .arg(&seed)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.join("twilio-fake.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the fake's first line");
        let port = line
            .trim()
            .strip_prefix("PORT=")
            .unwrap_or_else(|| panic!("the fake Twilio did not start: {line:?}"));
        FakeTwilio {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn key_sids(&self, http: &reqwest::Client) -> Vec<String> {
        let state: serde_json::Value = http
            .get(format!("{}/__fake/state", self.url))
            .send()
            .await
            .expect("fake state")
            .json()
            .await
            .expect("fake state JSON");
        state["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["sid"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn rotate_mode(args: &Args, dir: &Path) -> serde_json::Value {
    let fake = FakeTwilio::start(&args.twilio_fake, dir);
    let (lease_ttl, refresh, grace) = (2, 1, 4);
    let head = format!(
        "[defaults]\nlease_ttl = \"{lease_ttl}s\"\nrefresh_interval = \"{refresh}s\"\n[twilio]\napi_base = \"{0}\"\niam_base = \"{0}\"\naccounts_base = \"{0}\"\n",
        fake.url
    );
    let extra = format!(
        "[credentials.twilio-admin]\nstore = \"f\"\npath = \"admin\"\n[credentials.rotating]\nstore = \"f\"\npath = \"rotating\"\n[credentials.rotating.rotation]\nschedule = \"0 0 0 1 1 * 2099\"\ngrace = \"{grace}s\"\nadmin_credential = \"twilio-admin\"\n"
    );
    write_setup(
        dir,
        args.credentials,
        &head,
        &extra,
        &[
            (
                "admin",
                json!({"account_sid": AC, "auth_token": ADMIN_TOKEN}),
            ),
            (
                "rotating",
                json!({"account_sid": AC, "api_key_sid": OLD_KEY, "api_key_secret": OLD_SECRET}),
            ),
        ],
    );
    let daemon = start_daemon(&args.bin, dir, "daemon", &args.log).await;
    let http = reqwest::Client::new();

    // Every answer's key and lease end, for the checks after.
    let seen: Arc<std::sync::Mutex<HashMap<String, (u64, SystemTime)>>> = Arc::default();
    let on_answer: Arc<dyn Fn(Seen) + Send + Sync> = {
        let seen = Arc::clone(&seen);
        Arc::new(move |s: Seen| {
            let mut seen = seen.lock().unwrap();
            let e = seen.entry(s.key_sid).or_insert((0, SystemTime::UNIX_EPOCH));
            e.0 += 1;
            e.1 = e.1.max(s.expires_at);
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (socket, stop) = (daemon.socket.clone(), Arc::clone(&stop));
        let (in_flight, channels) = (args.in_flight, args.channels);
        tokio::spawn(async move {
            let pick: Arc<dyn Fn(usize, usize) -> String + Send + Sync> =
                Arc::new(|_, _| "rotating".to_owned());
            drive(&socket, in_flight, channels, stop, pick, Some(on_answer)).await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let client = Client::connect(&daemon.socket).await.expect("connect");
    let mut admin = RotationAdminClient::new(client.channel());
    let rotation_started = Instant::now();
    let status = admin
        .rotate(proto::RotateRequest {
            name: "rotating".into(),
        })
        .await
        .expect("Rotate")
        .into_inner();
    assert_eq!(
        status.step, "promoted",
        "the rotation did not promote: {status:?}"
    );
    let promoted_s = rotation_started.elapsed().as_secs_f64();

    // Until the old key is gone at Twilio: the last time it was seen there
    // bounds its deletion from below, the first time it was not from above.
    let mut first_absent = None;
    while first_absent.is_none() {
        assert!(
            rotation_started.elapsed() < Duration::from_secs(60),
            "the old key was not deleted within 60 s"
        );
        if !fake.key_sids(&http).await.iter().any(|s| s == OLD_KEY) {
            first_absent = Some(SystemTime::now());
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let first_absent = first_absent.unwrap();
    let retired_s = rotation_started.elapsed().as_secs_f64();
    // Rotation status settles to idle once the document is clean.
    loop {
        let s = admin
            .get_rotation_status(proto::GetRotationStatusRequest {
                name: "rotating".into(),
            })
            .await
            .expect("GetRotationStatus")
            .into_inner();
        if s.step == "idle" {
            break;
        }
        assert!(
            rotation_started.elapsed() < Duration::from_secs(60),
            "rotation did not settle: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let f = load.await.expect("load");
    let keys_at_twilio = fake.key_sids(&http).await;
    drop(daemon);

    let seen = seen.lock().unwrap();
    let old = seen.get(OLD_KEY).copied();
    let new_keys: Vec<&String> = seen.keys().filter(|k| *k != OLD_KEY).collect();
    let outlived = old.is_some_and(|(_, until)| until > first_absent);
    let mut report = figures_json(&f);
    report["mode"] = json!("rotate");
    report["credentials"] = json!(args.credentials);
    report["in_flight"] = json!(args.in_flight);
    report["channels"] = json!(args.channels);
    report["log"] = json!(args.log);
    report["seconds"] = json!(f.seconds);
    report["promoted_after_s"] = json!(promoted_s);
    report["old_key_deleted_after_s"] = json!(retired_s);
    report["calls_with_old_key"] = json!(old.map(|o| o.0).unwrap_or(0));
    report["calls_with_new_key"] = json!(new_keys.iter().map(|k| seen[*k].0).sum::<u64>());
    report["new_keys"] = json!(new_keys.len());
    report["old_key_leases_outlived_it"] = json!(outlived);
    report["keys_at_twilio_after"] = json!(keys_at_twilio.len());
    report["ok"] = json!(
        f.errors == 0
            && new_keys.len() == 1
            && !outlived
            && keys_at_twilio.len() == 1
            && keys_at_twilio[0] == *new_keys[0]
    );
    report
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    if let Some(socket) = &args.serve_floor {
        serve_floor(socket, args.credentials).await;
        return;
    }
    let dir = std::env::temp_dir().join(format!("credbroker-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = if args.watchers > 0 {
        watchers_mode(&args, &dir).await
    } else if args.rotate {
        rotate_mode(&args, &dir).await
    } else {
        get_mode(&args, &dir).await
    };
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
