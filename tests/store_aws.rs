//! The `aws_secrets_manager` store against moto_server (a real AWS API
//! emulator), end to end through the daemon and the store's own
//! compare-and-set writes with staging labels.

mod support;

use std::{fs, time::Duration};

use aws_sdk_secretsmanager::{
    Client as Aws,
    config::{Credentials, Region},
};
use credbroker::{
    client::Client,
    secret::SecretBytes,
    store::{SecretStore, StoreError, aws::AwsStore},
};
use support::{services::*, *};

const REGION: &str = "us-east-1";
const ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
];

fn aws(moto: &Service) -> Aws {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version_latest()
        .region(Region::new(REGION))
        .endpoint_url(moto.url())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .build();
    Aws::from_conf(config)
}

fn config(moto: &Service) -> String {
    format!(
        r#"
[server]
socket = "{{socket}}"
allow_root = true

[defaults]
refresh_interval = "1s"
max_stale = "4s"
lease_ttl = "1m"

[stores.aws]
type = "aws_secrets_manager"
region = "{REGION}"
endpoint_url = "{}"

[credentials.verify]
store = "aws"
path = "twilio/verify"

[credentials.managed]
store = "aws"
path = "twilio/managed"
"#,
        moto.url()
    )
}

async fn create(aws: &Aws, name: &str, doc: &str) -> String {
    aws.create_secret()
        .name(name)
        .secret_string(doc)
        .send()
        .await
        .unwrap()
        .version_id
        .unwrap()
}

/// Makes `doc` the AWSCURRENT version the way a rotator does (put it
/// AWSPENDING, move AWSCURRENT onto it). A plain PutSecretValue would do on
/// AWS, but moto 5.2.5 then leaves two versions labelled AWSCURRENT once
/// UpdateSecretVersionStage has been used on the secret.
async fn promote(aws: &Aws, name: &str, doc: &str) -> String {
    let current = stages(aws, name)
        .await
        .into_iter()
        .find(|(_, s)| s.iter().any(|s| s == "AWSCURRENT"))
        .map(|(v, _)| v)
        .unwrap();
    let new = aws
        .put_secret_value()
        .secret_id(name)
        .secret_string(doc)
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap()
        .version_id
        .unwrap();
    aws.update_secret_version_stage()
        .secret_id(name)
        .version_stage("AWSCURRENT")
        .move_to_version_id(&new)
        .remove_from_version_id(current)
        .send()
        .await
        .unwrap();
    aws.update_secret_version_stage()
        .secret_id(name)
        .version_stage("AWSPENDING")
        .remove_from_version_id(&new)
        .send()
        .await
        .unwrap();
    new
}

async fn stages(aws: &Aws, name: &str) -> std::collections::HashMap<String, Vec<String>> {
    aws.describe_secret()
        .secret_id(name)
        .send()
        .await
        .unwrap()
        .version_ids_to_stages
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_moto_follows_staging_labels_and_survives_an_outage() {
    let dir = world_dir();
    let mut moto = Service::moto(dir.path());
    let sm = aws(&moto);
    let (t1, t2, t3, k1) = (
        token(0xf001),
        token(0xf002),
        token(0xf003),
        key_secret(15001),
    );
    let v1 = create(&sm, "twilio/verify", &auth_token_doc(&t1)).await;
    // AWS's managed Twilio secret format (camelCase) is served as it is.
    create(&sm, "twilio/managed", &api_key_doc(&k1)).await;
    let daemon = Daemon::start_env(dir.path(), &config(&moto), ENV).secrets(&[&t1, &t2, &t3, &k1]);
    let client = Client::connect(&daemon.socket).await.unwrap();

    let got = client.get("verify").await.unwrap();
    assert_eq!(
        (secret_of(&got), got.version.as_str()),
        (t1.as_str(), v1.as_str())
    );
    let managed = client.get("managed").await.unwrap();
    assert_eq!(secret_of(&managed), k1);
    assert_eq!(managed.account_sid, AC);

    // A version staged AWSPENDING is not served…
    let mut watch = client.watch("verify").await.unwrap();
    next_message(&mut watch, "the first message").await;
    let v2 = sm
        .put_secret_value()
        .secret_id("twilio/verify")
        .secret_string(auth_token_doc(&t2))
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap()
        .version_id
        .unwrap();
    // Two re-reads of `verify` after that write (the daemon logs each at
    // TRACE), then the check that it served nothing new.
    let rereads = || {
        daemon
            .log_text()
            .matches("credential=verify version=")
            .count()
    };
    let before = rereads();
    tokio::task::spawn_blocking({
        let log = daemon.log.clone();
        move || {
            wait_until(
                Duration::from_secs(10),
                "two re-reads after the write",
                || {
                    fs::read_to_string(&log)
                        .unwrap_or_default()
                        .matches("credential=verify version=")
                        .count()
                        >= before + 2
                },
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(
        client.get("verify").await.unwrap().version,
        v1,
        "AWSPENDING must not be served"
    );
    // …until AWSCURRENT moves onto it; then it reaches the watcher.
    sm.update_secret_version_stage()
        .secret_id("twilio/verify")
        .version_stage("AWSCURRENT")
        .move_to_version_id(&v2)
        .remove_from_version_id(&v1)
        .send()
        .await
        .unwrap();
    // …and the rotator finishes by taking AWSPENDING off it.
    sm.update_secret_version_stage()
        .secret_id("twilio/verify")
        .version_stage("AWSPENDING")
        .remove_from_version_id(&v2)
        .send()
        .await
        .unwrap();
    let next = next_matching(
        &mut watch,
        Duration::from_secs(3),
        "AWSCURRENT moved",
        |c| c.version == v2,
    )
    .await;
    assert_eq!(secret_of(&next), t2);

    // A document that goes bad is served stale, the log names the field.
    promote(&sm, "twilio/verify", &auth_token_doc("0123")).await;
    let stale = next_matching(&mut watch, Duration::from_secs(3), "stale", |c| c.stale).await;
    assert_eq!(secret_of(&stale), t2);
    // The log is written by a background thread: give it a moment.
    wait_until(
        Duration::from_secs(3),
        "a log line naming the credential and the field",
        || {
            daemon.log_text().lines().any(|l| {
                l.contains("credential `verify`")
                    && l.contains("auth_token")
                    && l.contains("32 hexadecimal")
            })
        },
    );

    // The secret is deleted: that credential fails at once, the other serves.
    sm.delete_secret()
        .secret_id("twilio/managed")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let gone = get_err(&client, "managed", Duration::from_secs(5), "managed gone").await;
    assert_unavailable_naming(&gone, &["store `aws`", "twilio/managed"]);
    // (Still its last good value, stale since its document went bad.)
    let other = client.get("verify").await.unwrap();
    assert_eq!((secret_of(&other), other.stale), (t2.as_str(), true));

    // moto goes down: stale, then UNAVAILABLE after max_stale.
    moto.kill();
    let down = get_err(&client, "verify", Duration::from_secs(10), "unavailable").await;
    assert_unavailable_naming(&down, &["max_stale"]);
    // It comes back (moto keeps no state: seed it again): recovered, no restart.
    moto.restart();
    let sm = aws(&moto);
    let v3 = create(&sm, "twilio/verify", &auth_token_doc(&t3)).await;
    let back = get_ok(&client, "verify", Duration::from_secs(10), "recovery").await;
    assert_eq!(
        (secret_of(&back), back.version.as_str(), back.stale),
        (t3.as_str(), v3.as_str(), false)
    );
    daemon.assert_log_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_writes_move_the_staging_labels() {
    let dir = world_dir();
    let moto = Service::moto(dir.path());
    let sm = aws(&moto);
    let store = std::sync::Arc::new(AwsStore::with_client("aws", sm.clone()));
    let doc = |t: &str| SecretBytes::new(auth_token_doc(t).into_bytes());

    // Creating needs nothing there.
    let v1 = store.write("cas", doc(&token(1)), None).await.unwrap();
    assert!(matches!(
        store.write("cas", doc(&token(1)), None).await,
        Err(StoreError::Conflict { .. })
    ));
    let read = store.read("cas").await.unwrap();
    assert_eq!(read.version, v1);

    // A write from the version read: AWSCURRENT moves, AWSPREVIOUS follows.
    let v2 = store.write("cas", doc(&token(2)), Some(&v1)).await.unwrap();
    let labels = stages(&sm, "cas").await;
    assert_eq!(labels[&v2], ["AWSCURRENT"]);
    assert_eq!(labels[&v1], ["AWSPREVIOUS"]);
    assert_eq!(store.read("cas").await.unwrap().version, v2);

    // A writer holding an old version loses.
    assert!(matches!(
        store.write("cas", doc(&token(3)), Some(&v1)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.read("cas").await.unwrap().version, v2);

    // Two writers from the same version, at once: exactly one wins.
    let (a, b) = tokio::join!(
        store.write("cas", doc(&token(4)), Some(&v2)),
        store.write("cas", doc(&token(5)), Some(&v2)),
    );
    let (won, lost) = match (a, b) {
        (Ok(v), Err(e)) | (Err(e), Ok(v)) => (v, e),
        (a, b) => panic!("exactly one concurrent writer wins: {a:?} / {b:?}"),
    };
    match lost {
        StoreError::Conflict { path, expected, .. } => {
            assert_eq!((path.as_str(), expected.as_str()), ("cas", v2.as_str()))
        }
        other => panic!("the loser gets Conflict, not {other:?}"),
    }
    assert_eq!(store.read("cas").await.unwrap().version, won);

    // Errors name the store and the path.
    let e = store.read("missing").await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }));
    assert!(e.to_string().contains("store `aws`") && e.to_string().contains("missing"));
    assert!(!e.is_transient());
}

#[test]
fn startup_with_a_wrong_path_exits_64_naming_store_and_path() {
    let dir = world_dir();
    let moto = Service::moto(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(create(
        &aws(&moto),
        "twilio/verify",
        &auth_token_doc(&token(0xf101)),
    ));
    let mut d = Daemon::spawn_env(dir.path(), &config(&moto), ENV);
    assert_eq!(d.wait_exit().code(), Some(64));
    let log = d.log_text();
    assert!(
        log.contains("store `aws`") && log.contains("`twilio/managed` was not found"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_fails_that_credential_while_others_keep_serving() {
    let dir = world_dir();
    let moto = Service::moto_env(dir.path(), &[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let iam = |args: &[&str]| {
        let out = std::process::Command::new(Service::venv_python())
            .arg(repo().join("tests/support/moto_iam.py"))
            .arg(moto.url())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let keys: serde_json::Value = serde_json::from_str(&iam(&["setup"])).unwrap();
    let key = |who: &str, i: usize| keys[who][i].as_str().unwrap().to_owned();
    let admin = Aws::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version_latest()
            .region(Region::new(REGION))
            .endpoint_url(moto.url())
            .credentials_provider(Credentials::new(
                key("admin", 0),
                key("admin", 1),
                None,
                None,
                "tests",
            ))
            .build(),
    );
    let (t1, t2) = (token(0xf201), token(0xf202));
    create(&admin, "twilio/verify", &auth_token_doc(&t1)).await;
    std::fs::write(
        dir.path().join("local.json"),
        format!(r#"{{"local": {}}}"#, auth_token_doc(&t2)),
    )
    .unwrap();
    let cfg = config(&moto).replace(
        "[credentials.managed]\nstore = \"aws\"\npath = \"twilio/managed\"",
        "",
    ) + "[stores.file]\ntype = \"file\"\npath = \"{dir}/local.json\"\n[credentials.local]\nstore = \"file\"\npath = \"local\"\n";
    let (id, secret) = (key("credbroker", 0), key("credbroker", 1));
    let env = [
        ("AWS_ACCESS_KEY_ID", id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
    ];
    let daemon = Daemon::start_env(dir.path(), &cfg, &env).secrets(&[&t1, &t2, &secret]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    assert_eq!(secret_of(&client.get("verify").await.unwrap()), t1);

    // The IAM policy now denies the broker's user: `verify` is served stale
    // (a refusal may pass), then fails once max_stale has passed, with a
    // message naming the store, the path and why; `local` serves on.
    iam(&["deny", &key("admin", 0), &key("admin", 1)]);
    stale_then_unavailable(
        &client,
        "verify",
        &t1,
        &[
            "max_stale",
            "permission denied",
            "store `aws`",
            "twilio/verify",
        ],
    )
    .await;
    assert_eq!(secret_of(&client.get("local").await.unwrap()), t2);
    daemon.assert_log_clean();
}
