//! Twilio usage monitoring (`[usage.NAME]`) end to end: the daemon polls
//! the Twilio fake's Usage Records Today through Prism (twilio_api_v2010),
//! keeps its Usage Triggers there, and takes Twilio's signed callbacks on
//! the metrics listener. One harness (fake + Prism proxies) serves every
//! scenario, run in sequence.

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use credbroker::{client::Client, proto, secret::SecretString, twilio::webhook};
use proto::rotation_admin_client::RotationAdminClient;
use support::{services::*, twilio::*, *};
use tonic::{Code, transport::Channel};

#[test]
fn usage_suite() {
    let dir = world_dir();
    let twilio = Twilio::start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        steady_usage_and_the_day_rolling_over_do_not_alert_a_spike_does(dir.path(), &twilio).await;
        freeze_refuses_new_dynamic_keys_until_cleared(dir.path(), &twilio).await;
        rotate_starts_exactly_one_rotation(dir.path(), &twilio).await;
        triggers_are_reconciled_and_signed_callbacks_alert_at_once(dir.path(), &twilio).await;
        a_usage_outage_leaves_every_credential_served(dir.path(), &twilio).await;
    });
    twilio.assert_no_violations(dir.path());
}

const DAY_1: &str = "2030-06-01";
const DAY_2: &str = "2030-06-02";

/// A scenario's directory, with the admin Auth Token (and `docs`) in its store.
fn scenario(root: &Path, name: &str, docs: &[(&str, String)]) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    let mut all = serde_json::Map::new();
    all.insert(
        "admin".into(),
        serde_json::json!({"account_sid": AC, "auth_token": ADMIN_TOKEN}),
    );
    for (path, doc) in docs {
        all.insert((*path).into(), serde_json::from_str(doc).unwrap());
    }
    fs::write(
        dir.join("secrets.json"),
        serde_json::Value::Object(all).to_string(),
    )
    .unwrap();
    dir
}

/// The harness's config head with a metrics listener on `port`, and `tables`.
fn config(t: &Twilio, port: u16, tables: &str) -> String {
    t.config_head("lease_ttl = \"1m\"\nrefresh_interval = \"1s\"")
        .replace(
            "allow_root = true",
            &format!("allow_root = true\nmetrics_addr = \"127.0.0.1:{port}\""),
        )
        + tables
}

async fn admin(daemon: &Daemon) -> RotationAdminClient<Channel> {
    RotationAdminClient::new(Client::connect(&daemon.socket).await.unwrap().channel())
}

async fn usage(admin: &mut RotationAdminClient<Channel>) -> proto::UsageStatus {
    admin
        .get_usage(proto::GetUsageRequest {
            name: "main".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn category<'a>(s: &'a proto::UsageStatus, name: &str) -> &'a proto::CategoryUsage {
    s.categories
        .iter()
        .find(|c| c.category == name)
        .unwrap_or_else(|| panic!("no category {name} in {s:?}"))
}

/// Waits for the next poll that read every category after `seen` (the
/// `last_poll` seen before); the new `last_poll`.
async fn next_poll(
    admin: &mut RotationAdminClient<Channel>,
    seen: Option<prost_types::Timestamp>,
) -> Option<prost_types::Timestamp> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = usage(admin).await;
        if s.last_poll.is_some() && s.last_poll != seen {
            return s.last_poll;
        }
        assert!(
            Instant::now() < deadline,
            "no usage poll within 20 s; last status {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits (up to 20 s) until GetUsage says `check`.
async fn wait_usage(
    admin: &mut RotationAdminClient<Channel>,
    what: &str,
    check: impl Fn(&proto::UsageStatus) -> bool,
) -> proto::UsageStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = usage(admin).await;
        if check(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The value of the metrics line that starts with `series` (name and labels).
fn metric(port: u16, series: &str) -> Option<f64> {
    let (status, body) = http(
        "GET",
        &format!("http://127.0.0.1:{port}/metrics"),
        None,
        &[],
    );
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

async fn clear(admin: &mut RotationAdminClient<Channel>) -> proto::UsageStatus {
    admin
        .clear_alert(proto::ClearAlertRequest {
            name: "main".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn steady_usage_and_the_day_rolling_over_do_not_alert_a_spike_does(root: &Path, t: &Twilio) {
    let dir = scenario(root, "spike", &[]);
    t.set_usage_day(DAY_1);
    // The day so far, before the daemon starts: not a window.
    t.set_usage("sms", 4000);
    t.set_usage("calls", 0);
    let port = free_port();
    let cfg = config(
        t,
        port,
        "[usage.main]\nadmin_credential = \"twilio-admin\"\ncategories = [\"sms\", \"calls\"]\npoll_interval = \"1s\"\nwindow = \"2s\"\nbaseline = 3\nfactor = 5\nmax_per_window = 1000\n",
    );
    let daemon = Daemon::start(&dir, &cfg).secrets(&[ADMIN_TOKEN]);
    let mut admin = admin(&daemon).await;
    let unknown = admin
        .get_usage(proto::GetUsageRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    // Steady: 10 more at every poll, for eight polls, across the day
    // rolling over (Today starts again from 0).
    let mut seen = next_poll(&mut admin, None).await;
    for i in 0..8 {
        if i == 4 {
            t.set_usage_day(DAY_2);
        }
        t.add_usage("sms", 10);
        seen = next_poll(&mut admin, seen).await;
        let s = usage(&mut admin).await;
        assert!(
            s.alert.is_none(),
            "poll {i}: an alert under steady usage: {s:?}"
        );
        let sms = category(&s, "sms");
        assert!(sms.polled && sms.window_count <= 20.0, "poll {i}: {sms:?}");
        assert!(s.last_error.is_empty(), "{s:?}");
    }
    let s = usage(&mut admin).await;
    let sms = category(&s, "sms");
    assert!(sms.baseline_median.is_some(), "{sms:?}");
    assert!(sms.count < 100.0, "the new day's count: {sms:?}");
    assert_eq!(
        metric(
            port,
            "credbroker_usage_spike{account=\"main\",category=\"sms\"}"
        ),
        Some(0.0)
    );

    // A spike is seen by the first poll that starts after it.
    t.add_usage("sms", 5000);
    let after = next_poll(&mut admin, seen).await;
    let s = usage(&mut admin).await;
    let s = if s.alert.is_some() {
        s
    } else {
        // That poll may have begun before the spike: the next one sees it.
        next_poll(&mut admin, after).await;
        usage(&mut admin).await
    };
    let alert = s.alert.clone().expect("an alert after the spike");
    assert_eq!(alert.source, "poll");
    assert_eq!(alert.categories, ["sms"]);
    assert!(
        alert.reason.contains("sms:") && alert.reason.contains("> max_per_window 1000"),
        "{alert:?}"
    );
    assert!(category(&s, "sms").spike && !category(&s, "calls").spike);
    assert!(category(&s, "sms").window_count >= 5000.0);
    assert_eq!(
        metric(
            port,
            "credbroker_usage_spike{account=\"main\",category=\"sms\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            port,
            "credbroker_usage_spike{account=\"main\",category=\"calls\"}"
        ),
        Some(0.0)
    );
    let count = metric(
        port,
        "credbroker_twilio_usage{account=\"main\",category=\"sms\",measure=\"count\"}",
    )
    .expect("the usage count series");
    assert!(count >= 5000.0, "{count}");
    // The spike goes on: the alert stands, raised once.
    t.add_usage("sms", 5000);
    let next = next_poll(&mut admin, after).await;
    next_poll(&mut admin, next).await;
    let log = daemon.log_text();
    assert_eq!(
        log.matches("usage spike: alert raised").count(),
        1,
        "one alert, one action"
    );
    assert!(
        log.contains("max_per_window 1000"),
        "the numbers are logged"
    );

    // The CLI shows it (exit 3 while raised)...
    let socket = daemon.socket.display().to_string();
    let shown = cli(&["usage", "main", "--socket", &socket], None);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert_eq!(shown.status.code(), Some(3), "{text}");
    assert!(
        text.contains("ALERT raised") && text.contains("by poll") && text.contains("sms\t"),
        "{text}"
    );
    // ...and ClearAlert lowers it; what came before is not counted again.
    let cleared = cli(
        &["usage", "main", "--clear", "--json", "--socket", &socket],
        None,
    );
    assert_eq!(cleared.status.code(), Some(0));
    let cleared: serde_json::Value = serde_json::from_slice(&cleared.stdout).unwrap();
    assert!(cleared["alert"].is_null(), "{cleared}");
    assert!(
        cleared["categories"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["spike"] == false),
        "{cleared}"
    );
    assert!(usage(&mut admin).await.alert.is_none());
    assert_eq!(
        metric(
            port,
            "credbroker_usage_spike{account=\"main\",category=\"sms\"}"
        ),
        Some(0.0)
    );
    let mut seen = next_poll(&mut admin, None).await;
    for _ in 0..3 {
        t.add_usage("sms", 10);
        seen = next_poll(&mut admin, seen).await;
        assert!(usage(&mut admin).await.alert.is_none());
    }
    daemon.assert_log_clean();
}

const POLICY: &str = r#"{"allow": ["/twilio/verify/services/verifications/create"]}"#;

async fn freeze_refuses_new_dynamic_keys_until_cleared(root: &Path, t: &Twilio) {
    let dir = scenario(root, "freeze", &[]);
    t.set_usage("sms", 0);
    let port = free_port();
    let cfg = config(
        t,
        port,
        &format!(
            "[credentials.per-workload]\nkind = \"dynamic_api_key\"\nadmin_credential = \"twilio-admin\"\nttl = \"10m\"\nmax_live_keys = 10\npolicy = '{POLICY}'\n\
             [usage.main]\nadmin_credential = \"twilio-admin\"\ncategories = [\"sms\"]\npoll_interval = \"1s\"\nwindow = \"2s\"\nbaseline = 3\nmax_per_window = 100\non_spike = \"freeze_dynamic_keys\"\n"
        ),
    );
    let mut daemon = Daemon::start(&dir, &cfg).secrets(&[ADMIN_TOKEN]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut admin = admin(&daemon).await;
    let first = client.get("per-workload").await.unwrap();
    let Some(proto::credential::Secret::ApiKey(key)) = &first.secret else {
        panic!("not an API key");
    };
    daemon.add_secret(&key.secret);
    let socket = daemon.socket.display().to_string();
    let get_in_new_process = || cli(&["get", "per-workload", "--socket", &socket], None);
    assert!(get_in_new_process().status.success());

    next_poll(&mut admin, None).await;
    t.add_usage("sms", 500);
    wait_usage(&mut admin, "the alert", |s| s.alert.is_some()).await;
    // A caller with a live key keeps it; a new caller gets no new key.
    let again = client.get("per-workload").await.unwrap();
    assert_eq!(again.version, first.version);
    let refused = get_in_new_process();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("ResourceExhausted")
            && stderr.contains("frozen by usage alert `main`")
            && stderr.contains("max_per_window 100")
            && stderr.contains("ClearAlert"),
        "{stderr}"
    );
    assert!(
        daemon
            .log_text()
            .contains("new dynamic keys on the account are refused")
    );

    clear(&mut admin).await;
    let out = get_in_new_process();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.assert_log_clean();
}

fn key_doc(sid: &str, secret: &str) -> String {
    format!(r#"{{"account_sid": "{AC}", "api_key_sid": "{sid}", "api_key_secret": "{secret}"}}"#)
}

async fn rotate_starts_exactly_one_rotation(root: &Path, t: &Twilio) {
    let (sid, secret) = t.seed_key("usage containment key");
    let dir = scenario(root, "rotate", &[("verify", key_doc(&sid, &secret))]);
    t.set_usage("sms", 0);
    let port = free_port();
    let cfg = config(
        t,
        port,
        "[credentials.verify]\nstore = \"local\"\npath = \"verify\"\n[credentials.verify.rotation]\nschedule = \"0 0 0 1 1 * 2099\"\ngrace = \"1h\"\nadmin_credential = \"twilio-admin\"\n\
         [usage.main]\nadmin_credential = \"twilio-admin\"\ncategories = [\"sms\"]\npoll_interval = \"1s\"\nwindow = \"2s\"\nbaseline = 3\nmax_per_window = 100\non_spike = \"rotate\"\nrotate = [\"verify\"]\n",
    );
    let mut daemon = Daemon::start(&dir, &cfg).secrets(&[ADMIN_TOKEN, &secret]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut admin = admin(&daemon).await;
    let ours = || {
        t.keys()
            .into_iter()
            .filter(|(_, name)| name.starts_with("credbroker:verify:"))
            .count()
    };
    assert_eq!(ours(), 0);

    let mut seen = next_poll(&mut admin, None).await;
    t.add_usage("sms", 500);
    wait_usage(&mut admin, "the alert", |s| s.alert.is_some()).await;
    // The rotation runs: a new key, served once promoted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let c = client.get("verify").await.unwrap();
        if let Some(proto::credential::Secret::ApiKey(k)) = &c.secret
            && k.sid != sid
        {
            daemon.add_secret(&k.secret);
            break k.sid.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no rotation after the spike; log:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The spike goes on for three more polls: no second rotation.
    for _ in 0..3 {
        t.add_usage("sms", 500);
        seen = next_poll(&mut admin, seen).await;
    }
    assert_eq!(ours(), 1, "exactly one key made by a rotation");
    assert!(t.keys().iter().any(|(s, _)| *s == new));
    assert_eq!(
        metric(
            port,
            "credbroker_rotations_total{credential=\"verify\",result=\"ok\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            port,
            "credbroker_rotations_total{credential=\"verify\",result=\"error\"}"
        ),
        None
    );
    let log = daemon.log_text();
    assert_eq!(
        log.matches("usage spike: rotating the credential as containment")
            .count(),
        1
    );
    daemon.assert_log_clean();
}

/// POSTs a form to the daemon's callback path: the status.
async fn callback(port: u16, params: &[(&str, &str)], signature: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/twilio/usage-trigger"))
        .form(params);
    if let Some(s) = signature {
        request = request.header("X-Twilio-Signature", s);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Creates a Usage Trigger through Prism with the admin Auth Token.
async fn create_trigger(t: &Twilio, name: &str, category: &str, value: &str) -> String {
    let answer = reqwest::Client::new()
        .post(format!(
            "{}/2010-04-01/Accounts/{AC}/Usage/Triggers.json",
            t.api.url()
        ))
        .basic_auth(AC, Some(ADMIN_TOKEN))
        .form(&[
            ("FriendlyName", name),
            ("UsageCategory", category),
            ("TriggerValue", value),
            ("Recurring", "daily"),
            ("CallbackUrl", "https://elsewhere.example/usage"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 201);
    let body: serde_json::Value = answer.json().await.unwrap();
    body["sid"].as_str().unwrap().to_owned()
}

/// The account's triggers at the fake: (sid, friendly name, category,
/// value, callback URL).
fn triggers(t: &Twilio) -> Vec<(String, String, String, String, String)> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    t.usage_triggers()
        .iter()
        .map(|tr| {
            (
                s(&tr["sid"]),
                s(&tr["friendly_name"]),
                s(&tr["usage_category"]),
                s(&tr["trigger_value"]),
                s(&tr["callback_url"]),
            )
        })
        .collect()
}

async fn triggers_are_reconciled_and_signed_callbacks_alert_at_once(root: &Path, t: &Twilio) {
    let dir = scenario(root, "triggers", &[]);
    t.set_usage("sms", 0);
    t.set_usage("calls", 0);
    // At Twilio before the start: a trigger of ours the config no longer
    // has, one of ours with another value, and someone else's.
    let dropped = create_trigger(t, "credbroker-usage:main:mms", "mms", "10").await;
    let changed = create_trigger(t, "credbroker-usage:main:sms", "sms", "999").await;
    let foreign = create_trigger(t, "billing-team", "sms", "10").await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/twilio/usage-trigger");
    let cfg = config(
        t,
        port,
        &format!(
            "[usage.main]\nadmin_credential = \"twilio-admin\"\ncategories = [\"sms\", \"calls\"]\npoll_interval = \"1h\"\nmax_per_window = 100000\ntrigger_value = 50\ntrigger_url = \"{url}\"\n"
        ),
    );
    let mut daemon = Daemon::start(&dir, &cfg).secrets(&[ADMIN_TOKEN]);
    let mut admin = admin(&daemon).await;
    let ours = || {
        let mut v: Vec<_> = triggers(t)
            .into_iter()
            .filter(|tr| tr.1.starts_with("credbroker-usage:"))
            .collect();
        v.sort_by(|a, b| a.2.cmp(&b.2));
        v
    };
    wait_until(Duration::from_secs(20), "the triggers reconciled", || {
        let o = ours();
        o.len() == 2 && o.iter().all(|tr| tr.3 == "50")
    });
    let kept = ours();
    assert_eq!(
        kept.iter()
            .map(|tr| (tr.1.as_str(), tr.2.as_str(), tr.4.as_str()))
            .collect::<Vec<_>>(),
        [
            ("credbroker-usage:main:calls", "calls", url.as_str()),
            ("credbroker-usage:main:sms", "sms", url.as_str())
        ]
    );
    let sids: Vec<String> = triggers(t).into_iter().map(|tr| tr.0).collect();
    assert!(sids.contains(&foreign), "someone else's trigger is kept");
    assert!(!sids.contains(&dropped) && !sids.contains(&changed));
    let first_poll = next_poll(&mut admin, None).await;

    // Forged callbacks change nothing.
    let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).to_rfc2822();
    let params = [
        ("AccountSid", AC),
        ("UsageTriggerSid", "UT0123456789abcdef0123456789abcdef"),
        ("UsageCategory", "calls"),
        ("TriggerBy", "count"),
        ("TriggerValue", "50"),
        ("CurrentValue", "51"),
        ("Recurring", "daily"),
        ("DateFired", now.as_str()),
        ("IdempotencyToken", "test-callback-1"),
    ];
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let wrong = webhook::signature(&SecretString::new("f".repeat(32)), &url, &owned);
    assert_eq!(callback(port, &params, None).await, 403);
    assert_eq!(callback(port, &params, Some("bm9wZQ==")).await, 403);
    assert_eq!(callback(port, &params, Some(&wrong)).await, 403);
    let signed = webhook::signature(&SecretString::new(ADMIN_TOKEN.to_owned()), &url, &owned);
    let mut tampered = params;
    tampered[5] = ("CurrentValue", "5100");
    assert_eq!(callback(port, &tampered, Some(&signed)).await, 403);
    let (status, _) = http("GET", &url, None, &[]);
    assert_eq!(status, 405);
    assert!(usage(&mut admin).await.alert.is_none());
    assert_eq!(
        metric(port, "credbroker_usage_callbacks_total{result=\"refused\"}"),
        Some(4.0)
    );

    // Twilio's own callback, when calls pass 50 today, alerts at once
    // (the next poll is an hour away).
    t.set_usage("calls", 60);
    let s = wait_usage(&mut admin, "the trigger's alert", |s| s.alert.is_some()).await;
    let alert = s.alert.unwrap();
    assert_eq!(alert.source, "trigger");
    assert_eq!(alert.categories, ["calls"]);
    assert!(alert.reason.contains("Twilio Usage Trigger"), "{alert:?}");
    assert_eq!(
        s.last_poll, first_poll,
        "raised by the callback, not a poll"
    );
    let fired = t.trigger_callbacks();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["status"], 200, "{fired:?}");

    // A callback signed as Twilio signs it (computed here, not by the
    // fake) for a watched category alerts; for another category it is
    // taken and ignored.
    clear(&mut admin).await;
    let mut other = owned.clone();
    other[2].1 = "mms".into();
    other[8].1 = "test-callback-mms".into();
    let signed_other = webhook::signature(&SecretString::new(ADMIN_TOKEN.to_owned()), &url, &other);
    let other: Vec<(&str, &str)> = other
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(callback(port, &other, Some(&signed_other)).await, 200);
    assert!(usage(&mut admin).await.alert.is_none());
    assert_eq!(callback(port, &params, Some(&signed)).await, 200);
    assert!(usage(&mut admin).await.alert.is_some());
    // A replay of a callback already taken, or of an old one, changes nothing.
    clear(&mut admin).await;
    assert_eq!(callback(port, &params, Some(&signed)).await, 200);
    let mut old = owned.clone();
    old[7].1 = chrono::DateTime::<chrono::Utc>::from(
        std::time::SystemTime::now() - Duration::from_secs(2 * 86_400),
    )
    .to_rfc2822();
    old[8].1 = "test-callback-2".into();
    let signed_old = webhook::signature(&SecretString::new(ADMIN_TOKEN.to_owned()), &url, &old);
    let old: Vec<(&str, &str)> = old.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(callback(port, &old, Some(&signed_old)).await, 200);
    assert!(
        usage(&mut admin).await.alert.is_none(),
        "a replay raised the alert"
    );
    assert!(daemon.log_text().contains("fired too long ago"));

    // A restart finds its triggers in place: none deleted, none made.
    daemon.signal(rustix::process::Signal::TERM);
    daemon.wait_exit();
    let daemon = Daemon::start(&dir, &cfg).secrets(&[ADMIN_TOKEN]);
    let mut admin2 = self::admin(&daemon).await;
    next_poll(&mut admin2, None).await;
    assert_eq!(ours(), kept);
    assert!(daemon.log_text().contains("watching Twilio usage"));
    assert!(!daemon.log_text().contains("usage trigger created"));
    daemon.assert_log_clean();
}

async fn a_usage_outage_leaves_every_credential_served(root: &Path, t: &Twilio) {
    let dir = scenario(root, "outage", &[("app", auth_token_doc(&token(7)))]);
    t.post(
        "fail",
        &serde_json::json!({"path_prefix": format!("/2010-04-01/Accounts/{AC}/Usage"), "status": 503, "count": 100_000})
            .to_string(),
    );
    let port = free_port();
    let cfg = config(
        t,
        port,
        "[credentials.app]\nstore = \"local\"\npath = \"app\"\n\
         [usage.main]\nadmin_credential = \"twilio-admin\"\ncategories = [\"sms\"]\npoll_interval = \"1s\"\nwindow = \"2s\"\nbaseline = 3\nmax_per_window = 100\n",
    );
    // It starts and serves while the usage API fails.
    let daemon = Daemon::start(&dir, &cfg).secrets(&[ADMIN_TOKEN, &token(7)]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let mut admin = admin(&daemon).await;
    let s = wait_usage(&mut admin, "a failed poll", |s| !s.last_error.is_empty()).await;
    assert!(s.last_error.contains("usage read"), "{s:?}");
    assert!(s.last_poll.is_none() && s.alert.is_none());
    wait_until(Duration::from_secs(30), "two counted poll errors", || {
        metric(port, "credbroker_usage_poll_errors_total{account=\"main\"}").unwrap_or(0.0) >= 2.0
    });
    for name in ["app", "twilio-admin"] {
        client.get(name).await.unwrap();
    }
    // Twilio is back: the next poll works.
    t.post(
        "fail",
        &serde_json::json!({"path_prefix": format!("/2010-04-01/Accounts/{AC}/Usage"), "count": 0, "status": 503})
            .to_string(),
    );
    wait_usage(&mut admin, "a good poll", |s| {
        s.last_error.is_empty() && s.last_poll.is_some()
    })
    .await;
    assert!(
        daemon
            .log_text()
            .contains("usage poll failed; serving is not affected")
    );
    // A usage API that never answers does not hold up a shutdown: the poll
    // in flight is dropped, and every task stops within the drain deadline.
    t.post(
        "delay",
        &serde_json::json!({"path_prefix": format!("/2010-04-01/Accounts/{AC}/Usage"), "seconds": 600, "count": 100})
            .to_string(),
    );
    wait_until(Duration::from_secs(10), "a poll held by Twilio", || {
        t.state()["requests_held"].as_u64().unwrap_or(0) >= 1
    });
    let mut daemon = daemon;
    daemon.signal(rustix::process::Signal::TERM);
    assert!(daemon.wait_exit().success());
    let log = daemon.log_text();
    assert!(
        log.contains("every task stopped") && !log.contains("tasks still running"),
        "{log}"
    );
    t.post(
        "delay",
        &serde_json::json!({"path_prefix": format!("/2010-04-01/Accounts/{AC}/Usage"), "seconds": 0, "count": 0})
            .to_string(),
    );
    daemon.assert_log_clean();
}
