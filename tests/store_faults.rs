//! Store faults, per store, through a fault-injecting proxy
//! (tests/support/faults.rs) in front of the real server or fake: OpenBao
//! for Vault, moto for AWS, tests/support/gcp_fake.py for GCP.
//!
//! For each store, with the daemon running on it:
//! - a run of 5xx answers, throttling (each store's own shape of it) and a
//!   hung server (the store's 10 s request timeout must fire) each turn the
//!   credential stale (the last good value, `stale_since` set), and it is
//!   fresh again once the proxy heals, without a restart;
//! - 5xx that lasts past `max_stale`: UNAVAILABLE naming the store, then
//!   recovery;
//! - a refusal (403 / AccessDeniedException / PERMISSION_DENIED) may pass
//!   (an expired token, clock skew): stale like an outage, and fresh again
//!   once it ends;
//! - a document that is gone (404 / ResourceNotFoundException / NOT_FOUND)
//!   is final: UNAVAILABLE at once, saying why.
//!
//! Hostile answers (Vault): a login whose token claims to live u64::MAX
//! seconds, and a 64 MiB answer to a read. Neither panics nor is read
//! whole: the credential goes stale naming the cap, the other credential
//! serves on, the daemon's memory stays put.
//!
//! And the GCP store's own writes (library API): a write creates a version
//! a read returns, two writers on the same version (exactly one wins, the
//! other gets `StoreError::Conflict`), a 503 the SDK retries, and a 503 on
//! `addVersion` that fails the write as transient and leaves no claim.

mod support;

use std::time::{Duration, Instant};

use credbroker::client::Client;
use support::{faults::*, services::*, *};

const MAX_STALE_SECS: u64 = 20;

/// Each store's answers for an outage, throttling and a refusal.
struct Shapes {
    unavailable: Fault,
    throttled: Fault,
    denied: Fault,
    gone: Fault,
    /// What the UNAVAILABLE for a document that is gone says.
    gone_says: &'static str,
}

fn defaults() -> String {
    format!(
        r#"
[server]
socket = "{{socket}}"
allow_root = true

[defaults]
refresh_interval = "1s"
max_stale = "{MAX_STALE_SECS}s"
lease_ttl = "1m"
"#
    )
}

/// The credential `verify` holds `secret`; drives every fault through `proxy`.
async fn faults_then_recovery(
    daemon: &Daemon,
    proxy: &FaultProxy,
    shapes: Shapes,
    store: &str,
    secret: &str,
) {
    let client = Client::connect(&daemon.socket).await.unwrap();
    let fresh = client.get("verify").await.unwrap();
    assert_eq!((secret_of(&fresh), fresh.stale), (secret, false));

    for (what, fault, within) in [
        ("5xx", shapes.unavailable.clone(), 10),
        ("throttling", shapes.throttled, 10),
        // The store's request timeout (10 s) has to fire first.
        ("a hung server", Fault::Hang, 25),
        // A refusal may pass (an expired token, skew): not final.
        ("a refusal", shapes.denied, 10),
    ] {
        let before = proxy.faulted();
        proxy.fail(fault, None);
        let stale = get_stale(
            &client,
            "verify",
            Duration::from_secs(within),
            &format!("stale during {what}"),
        )
        .await;
        assert_eq!(secret_of(&stale), secret, "{what}: the last good value");
        assert!(stale.stale_since.is_some(), "{what}: stale_since");
        assert!(
            proxy.faulted() > before,
            "{what}: the proxy was not in the way"
        );
        proxy.heal();
        let back = get_fresh(
            &client,
            "verify",
            Duration::from_secs(10),
            &format!("fresh after {what}"),
        )
        .await;
        assert_eq!(secret_of(&back), secret);
    }

    // An outage longer than max_stale: stale, then UNAVAILABLE naming the
    // store, then served again once it ends.
    proxy.fail(shapes.unavailable, None);
    let started = Instant::now();
    let err = get_err(
        &client,
        "verify",
        Duration::from_secs(MAX_STALE_SECS + 15),
        "UNAVAILABLE past max_stale",
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(MAX_STALE_SECS - 3),
        "UNAVAILABLE after {:?}, before max_stale ran out: {err}",
        started.elapsed()
    );
    assert_unavailable_naming(&err, &["max_stale", "last error", store, "twilio"]);
    proxy.heal();
    let back = get_fresh(&client, "verify", Duration::from_secs(15), "recovery").await;
    assert_eq!(secret_of(&back), secret);

    // A document that is gone is final: UNAVAILABLE at once, saying why.
    proxy.fail(shapes.gone, None);
    let started = Instant::now();
    let err = get_err(&client, "verify", Duration::from_secs(15), "gone").await;
    assert!(
        started.elapsed() < Duration::from_secs(MAX_STALE_SECS / 2),
        "a document that is gone was served stale for {:?}",
        started.elapsed()
    );
    assert_unavailable_naming(&err, &[store, shapes.gone_says]);
    proxy.heal();
    let back = get_fresh(
        &client,
        "verify",
        Duration::from_secs(15),
        "served once the document is back",
    )
    .await;
    assert_eq!(secret_of(&back), secret);
    daemon.assert_log_clean();
}

/// The daemon's config: `verify` on OpenBao `bao` through `proxy`, and
/// `extra`.
fn vault_config(proxy: &FaultProxy, bao: &OpenBao, extra: &str) -> String {
    defaults()
        + &format!(
            r#"
[stores.vault]
type = "vault"
address = "{}"
mount = "secret"
kv_version = 2
auth = {{ method = "approle", role_id_file = "{d}/role_id", secret_id_file = "{d}/secret_id" }}

[credentials.verify]
store = "vault"
path = "twilio/verify"
{extra}"#,
            proxy.url(),
            d = bao.dir.display()
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_faults_stale_then_fresh() {
    let dir = world_dir();
    let bao = OpenBao::start(dir.path(), "1h", "24h");
    let t1 = token(0xfa01);
    bao.put_v2("twilio/verify", &auth_token_doc(&t1));
    let proxy = FaultProxy::start(&bao.url());
    let cfg = vault_config(&proxy, &bao, "");
    let daemon = Daemon::start(dir.path(), &cfg).secrets(&[&t1]);
    let shapes = Shapes {
        unavailable: Fault::answer(503, r#"{"errors":["Vault is sealed"]}"#),
        throttled: Fault::answer(
            429,
            r#"{"errors":["request path \"secret/data/twilio/verify\": rate limit quota exceeded"]}"#,
        ),
        denied: Fault::answer(403, r#"{"errors":["permission denied"]}"#),
        gone: Fault::answer(404, r#"{"errors":[]}"#),
        gone_says: "was not found",
    };
    faults_then_recovery(&daemon, &proxy, shapes, "store `vault`", &t1).await;
}

/// An AWS SDK client on moto, as the tests' admin.
fn aws_admin(moto: &Service) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
            .endpoint_url(moto.url())
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build(),
    )
}

/// The daemon's environment for moto: fake keys, no metadata, no profile.
const AWS_ENV: [(&str, &str); 5] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
];

/// moto holding `twilio/verify` with Auth Token `t1`, behind a fault proxy.
async fn moto_behind_faults(dir: &std::path::Path, t1: &str) -> (Service, FaultProxy) {
    let moto = Service::moto(dir);
    aws_admin(&moto)
        .create_secret()
        .name("twilio/verify")
        .secret_string(auth_token_doc(t1))
        .send()
        .await
        .unwrap();
    let proxy = FaultProxy::start(&moto.url());
    (moto, proxy)
}

/// The daemon's config: `verify` on moto through `proxy`.
fn aws_config(proxy: &FaultProxy) -> String {
    defaults()
        + &format!(
            r#"
[stores.aws]
type = "aws_secrets_manager"
region = "us-east-1"
endpoint_url = "{}"

[credentials.verify]
store = "aws"
path = "twilio/verify"
"#,
            proxy.url()
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_faults_stale_then_fresh() {
    let dir = world_dir();
    let t1 = token(0xfa11);
    let (_moto, proxy) = moto_behind_faults(dir.path(), &t1).await;
    let cfg = aws_config(&proxy);
    let env = AWS_ENV;
    let daemon = Daemon::start_env(dir.path(), &cfg, &env).secrets(&[&t1]);
    // AWS's JSON protocol: the error type in the body and in a header.
    let aws_error = |status, kind: &'static str, body: &'static str| Fault::Answer {
        status,
        headers: vec![("x-amzn-errortype", kind)],
        body,
    };
    let shapes = Shapes {
        unavailable: aws_error(
            503,
            "ServiceUnavailable",
            r#"{"__type":"ServiceUnavailable","message":"Service is unavailable"}"#,
        ),
        throttled: aws_error(
            400,
            "ThrottlingException",
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
        ),
        denied: aws_error(
            400,
            "AccessDeniedException",
            r#"{"__type":"AccessDeniedException","Message":"User is not authorized to perform: secretsmanager:GetSecretValue"}"#,
        ),
        gone: aws_error(
            400,
            "ResourceNotFoundException",
            r#"{"__type":"ResourceNotFoundException","Message":"Secrets Manager can't find the specified secret."}"#,
        ),
        gone_says: "was not found",
    };
    faults_then_recovery(&daemon, &proxy, shapes, "store `aws`", &t1).await;
}

/// A line of /proc/PID/status, in kB.
fn status_kb(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// VmHWM: the most the process has ever had resident. A body buffered
/// whole and freed at once leaves RSS where it was, but not this.
fn peak_rss_kb(pid: i32) -> u64 {
    status_kb(pid, "VmHWM:")
}

/// A file store `file` holding credential `local` (an Auth Token made of
/// `seed`), as config text; the token.
fn local_credential(dir: &std::path::Path, seed: u32) -> (String, String) {
    let t = token(seed);
    let local = dir.join("local.json");
    std::fs::write(&local, format!(r#"{{"local": {}}}"#, auth_token_doc(&t))).unwrap();
    let cfg = format!(
        "\n[stores.file]\ntype = \"file\"\npath = \"{}\"\n\
         [credentials.local]\nstore = \"file\"\npath = \"local\"\n",
        local.display()
    );
    (cfg, t)
}

/// A 64 MiB answer to every read of `verify` (requests whose path holds
/// `read_path`): refused unread, whatever the store's client, so the
/// daemon's peak RSS does not grow by the body; `verify` is served stale
/// and the log says why, naming it; `local` (`local_secret`) is served as
/// ever; healed, `verify` is fresh again.
async fn huge_answers_refused(
    daemon: &Daemon,
    proxy: &FaultProxy,
    read_path: &'static str,
    secret: &str,
    local_secret: &str,
) {
    const HUGE: usize = 64 << 20;
    let client = Client::connect(&daemon.socket).await.unwrap();
    assert_eq!(secret_of(&client.get("verify").await.unwrap()), secret);
    let peak_before = peak_rss_kb(daemon.pid());
    let faulted = proxy.faulted();
    proxy.fail_path(Fault::Huge(HUGE), None, read_path);
    let stale = get_stale(
        &client,
        "verify",
        Duration::from_secs(15),
        "stale during huge answers",
    )
    .await;
    assert_eq!(secret_of(&stale), secret);
    assert_eq!(secret_of(&client.get("local").await.unwrap()), local_secret);
    // Several refreshes (1 s apart) meet the huge answer.
    wait_until(Duration::from_secs(15), "three huge answers", || {
        proxy.faulted() >= faulted + 3
    });
    let peak_after = peak_rss_kb(daemon.pid());
    assert!(
        peak_after < peak_before + (HUGE as u64 / 1024) / 4,
        "peak RSS went from {peak_before} kB to {peak_after} kB on {} MiB answers",
        HUGE >> 20
    );
    let log = daemon.log_text();
    assert!(
        log.lines().any(|l| l.contains("credential=verify")
            && l.contains("larger than 1048576 bytes; not read")),
        "no clear error naming the credential:\n{}",
        log.lines()
            .rfind(|l| l.contains("cannot refresh"))
            .unwrap_or("(no refresh error logged)")
    );
    proxy.heal();
    let back = get_fresh(&client, "verify", Duration::from_secs(15), "fresh again").await;
    assert_eq!(secret_of(&back), secret);
    daemon.assert_log_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_hostile_answers_are_refused_and_others_serve() {
    let dir = world_dir();
    let bao = OpenBao::start(dir.path(), "1h", "24h");
    let t1 = token(0xfa31);
    bao.put_v2("twilio/verify", &auth_token_doc(&t1));
    let (local, t2) = local_credential(dir.path(), 0xfa32);
    let proxy = FaultProxy::start(&bao.url());
    // Every login answer claims a token that lives u64::MAX seconds: it
    // once overflowed the clock (a panic in the first load).
    proxy.fail_path(
        Fault::Patch {
            pointer: "/auth/lease_duration",
            value: "18446744073709551615",
        },
        None,
        "/login",
    );
    let cfg = vault_config(&proxy, &bao, &local);
    let daemon = Daemon::start(dir.path(), &cfg).secrets(&[&t1, &t2]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    assert_eq!(secret_of(&client.get("verify").await.unwrap()), t1);
    assert!(proxy.faulted() >= 1, "the login was not patched");
    huge_answers_refused(&daemon, &proxy, "/data/", &t1, &t2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_huge_answers_are_refused_and_others_serve() {
    let dir = world_dir();
    let t1 = token(0xfa41);
    let (_moto, proxy) = moto_behind_faults(dir.path(), &t1).await;
    let (local, t2) = local_credential(dir.path(), 0xfa42);
    let cfg = aws_config(&proxy) + &local;
    let daemon = Daemon::start_env(dir.path(), &cfg, &AWS_ENV).secrets(&[&t1, &t2]);
    // Every AWS call is a POST to `/`.
    huge_answers_refused(&daemon, &proxy, "/", &t1, &t2).await;
}

const PROJECT: &str = "credbroker-test";

fn gcp_secret(gcp: &Service, id: &str, doc: Option<&str>) {
    let url = format!("{}/v1/projects/{PROJECT}/secrets", gcp.url());
    let (status, body) = http(
        "POST",
        &format!("{url}?secretId={id}"),
        Some(r#"{"replication": {"automatic": {}}}"#),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    if let Some(doc) = doc {
        let (status, body) = http(
            "POST",
            &format!("{url}/{id}:addVersion"),
            Some(&format!(
                r#"{{"payload": {{"data": "{}"}}}}"#,
                base64_encode(doc.as_bytes())
            )),
            &[],
        );
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_faults_stale_then_fresh() {
    let dir = world_dir();
    let gcp = Service::python_fake("gcp_fake.py", dir.path(), &[]);
    let t1 = token(0xfa21);
    gcp_secret(&gcp, "twilio-verify", Some(&auth_token_doc(&t1)));
    let proxy = FaultProxy::start(&gcp.url());
    let cfg = gcp_config(&proxy, "");
    let daemon = Daemon::start(dir.path(), &cfg).secrets(&[&t1]);
    let shapes = Shapes {
        unavailable: Fault::answer(
            503,
            r#"{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}"#,
        ),
        throttled: Fault::answer(
            429,
            r#"{"error":{"code":429,"message":"Quota exceeded for quota metric 'Access requests'.","status":"RESOURCE_EXHAUSTED"}}"#,
        ),
        denied: Fault::answer(
            403,
            r#"{"error":{"code":403,"message":"Permission 'secretmanager.versions.access' denied for resource.","status":"PERMISSION_DENIED"}}"#,
        ),
        gone: Fault::answer(
            404,
            r#"{"error":{"code":404,"message":"Secret [projects/1/secrets/twilio-verify] not found or has no versions.","status":"NOT_FOUND"}}"#,
        ),
        gone_says: "was not found",
    };
    faults_then_recovery(&daemon, &proxy, shapes, "store `gcp`", &t1).await;
}

/// The daemon's config: `verify` (secret `twilio-verify`) on the GCP fake
/// through `proxy`, and `extra`.
fn gcp_config(proxy: &FaultProxy, extra: &str) -> String {
    defaults()
        + &format!(
            r#"
[stores.gcp]
type = "gcp_secret_manager"
project = "{PROJECT}"
endpoint = "{}"

[credentials.verify]
store = "gcp"
path = "twilio-verify"
{extra}"#,
            proxy.url()
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_huge_answers_are_refused_and_others_serve() {
    let dir = world_dir();
    let gcp = Service::python_fake("gcp_fake.py", dir.path(), &[]);
    let t1 = token(0xfa51);
    gcp_secret(&gcp, "twilio-verify", Some(&auth_token_doc(&t1)));
    let proxy = FaultProxy::start(&gcp.url());
    let (local, t2) = local_credential(dir.path(), 0xfa52);
    let daemon = Daemon::start(dir.path(), &gcp_config(&proxy, &local)).secrets(&[&t1, &t2]);
    huge_answers_refused(&daemon, &proxy, ":access", &t1, &t2).await;
}

/// A store that never answers: while its reads hang, the daemon answers
/// for its other credential at once, health stays SERVING, the hung one
/// turns stale when the store's timeout fires (saying so, naming it), and
/// SIGTERM still ends the daemon promptly, with a read held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_store_others_serve_health_holds_and_shutdown_completes() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let dir = world_dir();
    let gcp = Service::python_fake("gcp_fake.py", dir.path(), &[]);
    let t1 = token(0xfa61);
    gcp_secret(&gcp, "twilio-verify", Some(&auth_token_doc(&t1)));
    let proxy = FaultProxy::start(&gcp.url());
    let (local, t2) = local_credential(dir.path(), 0xfa62);
    let mut daemon = Daemon::start(dir.path(), &gcp_config(&proxy, &local)).secrets(&[&t1, &t2]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    assert_eq!(secret_of(&client.get("verify").await.unwrap()), t1);

    proxy.fail_path(Fault::Hang, None, ":access");
    let held = proxy.faulted();
    wait_until(Duration::from_secs(10), "a read held by the store", || {
        proxy.faulted() > held
    });
    for _ in 0..10 {
        let asked = Instant::now();
        assert_eq!(secret_of(&client.get("local").await.unwrap()), t2);
        assert_eq!(client.health().await.unwrap(), ServingStatus::Serving);
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "answered in {:?} while a store hangs",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stale = get_stale(&client, "verify", Duration::from_secs(25), "stale").await;
    assert_eq!(secret_of(&stale), t1);
    let log = daemon.log_text();
    assert!(
        log.lines().any(|l| l.contains("credential=verify")
            && l.contains("cannot refresh")
            && l.contains("no answer within 10s")),
        "no clear error naming the credential and the timeout:\n{}",
        log.lines()
            .rfind(|l| l.contains("cannot refresh"))
            .unwrap_or("(no refresh error logged)")
    );
    assert_eq!(client.health().await.unwrap(), ServingStatus::Serving);

    // SIGTERM with a read held (the next refresh is a second away at most).
    let held = proxy.faulted();
    let waited = Instant::now();
    while proxy.faulted() == held && waited.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        proxy.faulted() > held,
        "no read held since {held}:\n{}",
        daemon
            .log_text()
            .lines()
            .filter(|l| l.contains("verify") && !l.contains("TRACE"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let asked = Instant::now();
    daemon.signal(rustix::process::Signal::TERM);
    let status = daemon.wait_exit();
    assert!(status.success(), "{status}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "shutdown took {:?} with a store read held",
        asked.elapsed()
    );
    daemon.assert_log_clean();
}

/// The GCP store's writes, through the library API against the fake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_writes_check_and_set_and_a_503() {
    use credbroker::{
        secret::SecretBytes,
        store::{SecretStore, StoreError, gcp::GcpStore},
    };
    let dir = world_dir();
    let gcp = Service::python_fake("gcp_fake.py", dir.path(), &[]);
    let proxy = FaultProxy::start(&gcp.url());
    let store = GcpStore::new(
        "gcp",
        &credbroker::config::GcpConfig {
            project: PROJECT.into(),
            endpoint: Some(proxy.url()),
        },
    )
    .await
    .unwrap();
    let doc = |seed: u32| SecretBytes::new(auth_token_doc(&token(seed)).into_bytes());
    let held = |d: &credbroker::store::Document| {
        serde_json::from_slice::<serde_json::Value>(d.bytes.expose_secret()).unwrap()["auth_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // A write creates the secret and its first version; a read returns it.
    assert_eq!(store.write("cas", doc(0xfb01), None).await.unwrap(), "1");
    let read = store.read("cas").await.unwrap();
    assert_eq!((read.version.as_str(), held(&read)), ("1", token(0xfb01)));

    // Two writers from version 1, at once: exactly one wins.
    let (a, b) = tokio::join!(
        store.write("cas", doc(0xfb02), Some("1")),
        store.write("cas", doc(0xfb03), Some("1")),
    );
    let (won, lost, winner) = match (a, b) {
        (Ok(v), Err(e)) => (v, e, token(0xfb02)),
        (Err(e), Ok(v)) => (v, e, token(0xfb03)),
        (a, b) => panic!("exactly one writer must win: {a:?} / {b:?}"),
    };
    assert_eq!(won, "2");
    match lost {
        StoreError::Conflict {
            store, expected, ..
        } => assert_eq!((store.as_str(), expected.as_str()), ("gcp", "1")),
        other => panic!("the loser gets Conflict, not {other:?}"),
    }
    let read = store.read("cas").await.unwrap();
    assert_eq!((read.version.as_str(), held(&read)), ("2", winner));
    // A writer still on version 1 loses too.
    assert!(matches!(
        store.write("cas", doc(0xfb04), Some("1")).await,
        Err(StoreError::Conflict { .. })
    ));

    // One 503 on a read the SDK may repeat: retried, the write goes through.
    let before = proxy.faulted();
    proxy.fail(
        Fault::answer(
            503,
            r#"{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}"#,
        ),
        Some(1),
    );
    assert_eq!(
        store.write("cas", doc(0xfb05), Some("2")).await.unwrap(),
        "3"
    );
    assert_eq!(proxy.faulted(), before + 1, "the 503 was answered");

    // A 503 on addVersion (not repeated: it is not idempotent): the write
    // fails as transient, nothing is added, and its claim is released, so
    // the same write goes through once the service is back.
    proxy.fail_path(
        Fault::answer(
            503,
            r#"{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}"#,
        ),
        None,
        ":addVersion",
    );
    match store.write("cas", doc(0xfb06), Some("3")).await {
        Err(e @ StoreError::Unavailable { .. }) => assert!(e.is_transient(), "{e}"),
        other => panic!("a 503 on addVersion: {other:?}"),
    }
    proxy.heal();
    let read = store.read("cas").await.unwrap();
    assert_eq!((read.version.as_str(), held(&read)), ("3", token(0xfb05)));
    assert_eq!(
        store.write("cas", doc(0xfb06), Some("3")).await.unwrap(),
        "4"
    );
}
