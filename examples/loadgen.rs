//! Load generator: credbroker against a floor measured in the same run.
//!
//! Starts the real daemon (`--bin`, default: the `credbroker` next to this
//! example's target directory) on a file store with `--credentials` entries,
//! and a bare tonic server on another Unix socket answering the same
//! `Credential` from a `HashMap` (the floor: what gRPC over a Unix socket
//! costs with no broker at all). Both are driven by the same client: `--in-flight`
//! calls in flight over `--channels` connections for `--seconds`. Prints
//! JSON: calls/s, p50/p99/p999 latency, the daemon's RSS and CPU time per
//! call, and each daemon figure as a ratio to the floor, which holds on a
//! noisy shared machine.
//!
//! ```sh
//! cargo build --release --bin credbroker --example loadgen
//! target/release/examples/loadgen --credentials 100 --in-flight 64 --channels 8 --seconds 10
//! ```

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use credbroker::{
    client::Client,
    proto::{
        self,
        credential_broker_client::CredentialBrokerClient,
        credential_broker_server::{CredentialBroker, CredentialBrokerServer},
    },
};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status, transport::Channel};

struct Args {
    credentials: usize,
    in_flight: usize,
    channels: usize,
    seconds: u64,
    bin: PathBuf,
}

fn parse_args() -> Args {
    let exe = std::env::current_exe().expect("current exe");
    let mut args = Args {
        credentials: 100,
        in_flight: 1,
        channels: 1,
        seconds: 5,
        bin: exe
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("credbroker"))
            .unwrap_or_default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--credentials" => args.credentials = v.parse().expect("a number"),
            "--in-flight" => args.in_flight = v.parse().expect("a number"),
            "--channels" => args.channels = v.parse().expect("a number"),
            "--seconds" => args.seconds = v.parse().expect("a number"),
            "--bin" => args.bin = v.into(),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

const AC: &str = "AC0123456789abcdef0123456789abcdef";

fn token(i: usize) -> String {
    format!("{:032x}", 0xabc0_0000_u64 + i as u64)
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

struct Figures {
    calls: u64,
    seconds: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

/// Drives GetCredential on `socket`: `in_flight` loops over `channels` connections.
async fn drive(socket: &Path, args: &Args) -> Figures {
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..args.channels {
        channels.push(Client::connect(socket).await.expect("connect").channel());
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.in_flight {
        let mut client = CredentialBrokerClient::new(channels[i % channels.len()].clone());
        let n = args.credentials;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut k = i;
            while Instant::now() < deadline {
                k = (k * 7 + 13) % n;
                let t = Instant::now();
                client
                    .get_credential(proto::GetCredentialRequest { name: name(k) })
                    .await
                    .expect("GetCredential");
                latencies.push(t.elapsed().as_nanos() as u64);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let q = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1e3;
    Figures {
        calls: all.len() as u64,
        seconds,
        p50: q(0.50),
        p99: q(0.99),
        p999: q(0.999),
    }
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

#[tokio::main]
async fn main() {
    let args = parse_args();
    let dir = std::env::temp_dir().join(format!("credbroker-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut docs = serde_json::Map::new();
    let mut config = format!(
        "[server]\nsocket = \"{}\"\nallow_root = true\nlock_memory = false\n[stores.f]\ntype = \"file\"\npath = \"{}\"\n",
        dir.join("broker.sock").display(),
        dir.join("secrets.json").display()
    );
    let mut floor = HashMap::new();
    for i in 0..args.credentials {
        docs.insert(
            name(i),
            serde_json::json!({"account_sid": AC, "auth_token": token(i)}),
        );
        config.push_str(&format!(
            "[credentials.{}]\nstore = \"f\"\npath = \"{}\"\n",
            name(i),
            name(i)
        ));
        floor.insert(
            name(i),
            proto::Credential {
                name: name(i),
                account_sid: AC.into(),
                secret: Some(proto::credential::Secret::AuthToken(proto::AuthToken {
                    token: token(i),
                })),
                version: "0123456789abcdef".into(),
                issued_at: Some(std::time::SystemTime::now().into()),
                expires_at: Some(std::time::SystemTime::now().into()),
                ..Default::default()
            },
        );
    }
    std::fs::write(
        dir.join("secrets.json"),
        serde_json::Value::Object(docs).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("config.toml"), config).unwrap();

    // The floor, in this process.
    let floor_socket = dir.join("floor.sock");
    let listener = tokio::net::UnixListener::bind(&floor_socket).unwrap();
    let floor_service = CredentialBrokerServer::new(Floor(floor));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(floor_service)
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    let floor = drive(&floor_socket, &args).await;

    // The daemon.
    let started = Instant::now();
    let mut child = std::process::Command::new(&args.bin)
        .args(["serve", "--config"])
        .arg(dir.join("config.toml"))
        .env("CREDBROKER_LOG", "warn")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.bin.display()));
    let socket = dir.join("broker.sock");
    loop {
        if let Ok(c) = Client::connect(&socket).await
            && c.health().await.is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let to_serving = started.elapsed().as_secs_f64();
    let pid = child.id();
    let ticks_before = cpu_ticks(pid);
    let daemon = drive(&socket, &args).await;
    let ticks = cpu_ticks(pid) - ticks_before;
    let rss_kb = proc_field(pid, "status", "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let per_s = |f: &Figures| f.calls as f64 / f.seconds;
    let hz = 100.0; // USER_HZ on Linux
    let report = serde_json::json!({
        "credentials": args.credentials,
        "in_flight": args.in_flight,
        "channels": args.channels,
        "seconds": args.seconds,
        "daemon": {
            "calls_per_s": per_s(&daemon), "p50_us": daemon.p50, "p99_us": daemon.p99, "p999_us": daemon.p999,
            "rss_kb": rss_kb, "cpu_us_per_call": ticks as f64 / hz * 1e6 / daemon.calls.max(1) as f64,
            "start_to_serving_s": to_serving,
        },
        "floor": { "calls_per_s": per_s(&floor), "p50_us": floor.p50, "p99_us": floor.p99, "p999_us": floor.p999 },
        "ratio": {
            "throughput": per_s(&daemon) / per_s(&floor),
            "p50": daemon.p50 / floor.p50,
            "p99": daemon.p99 / floor.p99,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
