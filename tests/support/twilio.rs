//! The Twilio side of the tests: the stateful fake (tests/support/
//! twilio_fake.py) behind Prism proxies that check every request and
//! response against Twilio's own OpenAPI documents.

use std::{fs, path::Path, process::Command};

use super::{services::*, *};

pub const ADMIN_TOKEN: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";

/// `prism proxy --errors` for one spec, stopped on drop.
pub struct Prism {
    pid: String,
    port: u16,
}

impl Prism {
    pub fn start(spec: &str, upstream: &str, log: &Path) -> Prism {
        let port = free_port();
        let out = Command::new("bash")
            .arg(repo().join("tests/support/prism.sh"))
            .args(["start", spec, upstream, &port.to_string()])
            .arg(log)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "Prism for {spec} did not start (run scripts/test-all to install it):\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        let pid = stdout(&out)
            .lines()
            .find_map(|l| l.strip_prefix("PID=").map(str::to_owned))
            .expect("prism.sh prints PID=");
        Prism { pid, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("tests/support/prism.sh"))
            .args(["stop", &self.pid])
            .output();
    }
}

pub struct Twilio {
    pub fake: Service,
    pub api: Prism,
    pub iam: Prism,
    pub accounts: Prism,
    pub verify: Prism,
}

impl Twilio {
    pub fn start(dir: &Path) -> Twilio {
        let fake = Service::python_fake("twilio_fake.py", dir, &[]);
        let upstream = fake.url();
        let (api, iam, accounts, verify) = std::thread::scope(|s| {
            let api = s.spawn(|| Prism::start("api_v2010", &upstream, &dir.join("prism-api.log")));
            let iam = s.spawn(|| Prism::start("iam_v1", &upstream, &dir.join("prism-iam.log")));
            let acc =
                s.spawn(|| Prism::start("accounts_v1", &upstream, &dir.join("prism-accounts.log")));
            let ver =
                s.spawn(|| Prism::start("verify_v2", &upstream, &dir.join("prism-verify.log")));
            (
                api.join().unwrap(),
                iam.join().unwrap(),
                acc.join().unwrap(),
                ver.join().unwrap(),
            )
        });
        let t = Twilio {
            fake,
            api,
            iam,
            accounts,
            verify,
        };
        t.post(
            "accounts",
            &format!(r#"{{"sid": "{AC}", "auth_token": "{ADMIN_TOKEN}"}}"#),
        );
        t
    }

    pub fn post(&self, what: &str, body: &str) -> serde_json::Value {
        fake_post(&self.fake, what, body)
    }

    /// Seeds a standard API key; returns (sid, secret).
    pub fn seed_key(&self, name: &str) -> (String, String) {
        let v = self.post(
            "keys",
            &format!(r#"{{"account_sid": "{AC}", "friendly_name": "{name}", "type": "standard"}}"#),
        );
        (
            v["sid"].as_str().unwrap().to_owned(),
            v["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Seeds a key of `key_type` ("main", "standard", "restricted" with
    /// `policy`); returns (sid, secret).
    pub fn seed_typed_key(&self, key_type: &str, policy: Option<&str>) -> (String, String) {
        let mut body = serde_json::json!({"account_sid": AC, "type": key_type});
        if let Some(p) = policy {
            body["policy"] = serde_json::Value::String(p.to_owned());
        }
        let v = self.post("keys", &body.to_string());
        (
            v["sid"].as_str().unwrap().to_owned(),
            v["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Keys and secondary tokens created from now on start working
    /// `seconds` after their creation (-1: never).
    pub fn set_propagation(&self, seconds: f64) {
        self.post(
            "propagation",
            &serde_json::json!({ "seconds": seconds }).to_string(),
        );
    }

    /// Every key and secondary token still waiting to work works now.
    pub fn release_propagation(&self) {
        self.post("propagation", r#"{"seconds": 0, "release": true}"#);
    }

    /// The fake's log of API requests (method, path, status, username, time).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        let (_, body) = http(
            "GET",
            &format!("{}/__fake/requests", self.fake.url()),
            None,
            &[],
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["requests"].as_array().unwrap().clone()
    }

    /// `GET base + path` with Basic `user:password`, through a Prism proxy:
    /// (status, body).
    pub fn get_as(&self, base: &str, path: &str, user: &str, password: &str) -> (u16, String) {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        http(
            "GET",
            &format!("{base}{path}"),
            None,
            &[("Authorization", &format!("Basic {basic}"))],
        )
    }

    pub fn valid(&self, user: &str, password: &str) -> bool {
        self.post(
            "check",
            &serde_json::json!({"username": user, "password": password}).to_string(),
        )["valid"]
            .as_bool()
            .unwrap()
    }

    /// The fake's state, without secrets (accounts, keys with their type
    /// and policy, services).
    pub fn state(&self) -> serde_json::Value {
        let (_, body) = http(
            "GET",
            &format!("{}/__fake/state", self.fake.url()),
            None,
            &[],
        );
        serde_json::from_str(&body).unwrap()
    }

    /// Friendly names and SIDs of the account's keys.
    pub fn keys(&self) -> Vec<(String, String)> {
        let state = self.state();
        state["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["sid"].as_str().unwrap().to_owned(),
                    k["friendly_name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// Sets today's cumulative count (and usage) of `category` for `AC`
    /// (price 0); the fake fires the triggers this crosses.
    pub fn set_usage(&self, category: &str, count: u64) {
        self.post(
            "usage",
            &serde_json::json!({"account_sid": AC, "category": category, "count": count})
                .to_string(),
        );
    }

    /// Adds `n` to today's count and usage of `category` for `AC`.
    pub fn add_usage(&self, category: &str, n: u64) {
        self.post(
            "usage",
            &serde_json::json!({"account_sid": AC, "category": category, "add": n}).to_string(),
        );
    }

    /// Moves the fake's usage day (YYYY-MM-DD, forward only): every Today
    /// starts again at 0.
    pub fn set_usage_day(&self, date: &str) {
        self.post("usage", &serde_json::json!({ "date": date }).to_string());
    }

    /// Every Usage Trigger at the fake, as the API answers it (plus
    /// `fired_period`).
    pub fn usage_triggers(&self) -> Vec<serde_json::Value> {
        self.state()["usage_triggers"].as_array().unwrap().clone()
    }

    /// The trigger callbacks the fake has made (trigger_sid, url, method,
    /// status or error), once none is still in flight.
    pub fn trigger_callbacks(&self) -> Vec<serde_json::Value> {
        let mut callbacks = Vec::new();
        wait_until(
            std::time::Duration::from_secs(20),
            "the fake's trigger callbacks to finish",
            || {
                callbacks = self.state()["trigger_callbacks"]
                    .as_array()
                    .unwrap()
                    .clone();
                callbacks.iter().all(|c| c["pending"] == false)
            },
        );
        callbacks
    }

    pub fn config_head(&self, extra_defaults: &str) -> String {
        format!(
            r#"
[server]
socket = "{{socket}}"
allow_root = true

[defaults]
{extra_defaults}

[twilio]
api_base = "{}"
iam_base = "{}"
accounts_base = "{}"

[stores.local]
type = "file"
path = "{{dir}}/secrets.json"

[credentials.twilio-admin]
store = "local"
path = "admin"
"#,
            self.api.url(),
            self.iam.url(),
            self.accounts.url()
        )
    }

    /// No Prism proxy saw a request or response that breaks Twilio's spec:
    /// every exchange Prism refused is a failure, requests included.
    pub fn assert_no_violations(&self, dir: &Path) {
        for log in [
            "prism-api.log",
            "prism-iam.log",
            "prism-accounts.log",
            "prism-verify.log",
        ] {
            let text = fs::read_to_string(dir.join(log))
                .unwrap_or_else(|e| panic!("{log} cannot be read: {e}"));
            let found = prism_violations(&text);
            assert!(
                found.is_empty(),
                "{log}: Prism refused exchanges that break Twilio's spec:\n{}",
                found.join("\n")
            );
        }
    }
}

/// `POST /__fake/{what}` with JSON `body` to the Twilio fake; its answer.
pub fn fake_post(fake: &Service, what: &str, body: &str) -> serde_json::Value {
    let (status, body) = http(
        "POST",
        &format!("{}/__fake/{what}", fake.url()),
        Some(body),
        &[],
    );
    assert_eq!(status, 200, "{what}: {body}");
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

/// The Twilio fake behind Prism for its OAuth token endpoints only:
/// `oauth_v2_derived` (what `twilio.oauth_base` points at: POST /v2/token,
/// checked against the `oauth.v1.token` schema) and `oauth_v1` (POST
/// /v1/token, Twilio's own document unchanged). REST calls with a bearer
/// token go to the fake itself: the 2010 document declares Basic auth only.
pub struct OAuth {
    pub fake: Service,
    pub v2: Prism,
    pub v1: Prism,
}

impl OAuth {
    pub fn start(dir: &Path) -> OAuth {
        let fake = Service::python_fake("twilio_fake.py", dir, &[]);
        let upstream = fake.url();
        let (v2, v1) = std::thread::scope(|s| {
            let v2 = s.spawn(|| {
                Prism::start(
                    "oauth_v2_derived",
                    &upstream,
                    &dir.join("prism-oauth-v2.log"),
                )
            });
            let v1 =
                s.spawn(|| Prism::start("oauth_v1", &upstream, &dir.join("prism-oauth-v1.log")));
            (v2.join().unwrap(), v1.join().unwrap())
        });
        let o = OAuth { fake, v2, v1 };
        o.post(
            "accounts",
            &format!(r#"{{"sid": "{AC}", "auth_token": "{ADMIN_TOKEN}"}}"#),
        );
        o
    }

    pub fn post(&self, what: &str, body: &str) -> serde_json::Value {
        fake_post(&self.fake, what, body)
    }

    /// Seeds (or gives a new secret to) OAuth app `client_id`.
    pub fn app(&self, client_id: &str, client_secret: &str) {
        self.post(
            "oauth_apps",
            &serde_json::json!({"account_sid": AC, "client_id": client_id, "client_secret": client_secret})
                .to_string(),
        );
    }

    /// Bearer tokens issued from now on live `seconds`.
    pub fn token_ttl(&self, seconds: u64) {
        self.post("oauth", &serde_json::json!({ "ttl": seconds }).to_string());
    }

    /// Tokens the fake has issued so far.
    pub fn tokens_issued(&self) -> u64 {
        let (_, body) = http(
            "GET",
            &format!("{}/__fake/state", self.fake.url()),
            None,
            &[],
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["tokens_issued"].as_u64().unwrap()
    }

    /// `GET path` on the fake with `Authorization: Bearer token`: the status.
    pub fn rest_with(&self, token: &str, path: &str) -> u16 {
        http(
            "GET",
            &format!("{}{path}", self.fake.url()),
            None,
            &[("Authorization", &format!("Bearer {token}"))],
        )
        .0
    }

    /// No Prism proxy saw an exchange that breaks the OAuth documents.
    pub fn assert_no_violations(&self, dir: &Path) {
        for log in ["prism-oauth-v2.log", "prism-oauth-v1.log"] {
            let text = fs::read_to_string(dir.join(log))
                .unwrap_or_else(|e| panic!("{log} cannot be read: {e}"));
            let found = prism_violations(&text);
            assert!(
                found.is_empty(),
                "{log}: Prism refused exchanges that break Twilio's spec:\n{}",
                found.join("\n")
            );
        }
    }
}

/// The lines of a Prism proxy log that report a refused exchange: a
/// response that breaks the spec (`#VIOLATIONS`), a request that does
/// (`#UNPROCESSABLE_ENTITY`, `#UNAUTHORIZED`), a path or method the spec
/// does not have, or any other `Request terminated with error`. The one
/// `#NO_PATH_MATCHED_ERROR` of `prism.sh start`'s readiness probe (`GET /`)
/// is allowed; a log that never says "Prism is listening" is one entry too,
/// since a proxy that did not run checked nothing.
pub fn prism_violations(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    if !text.contains("Prism is listening") {
        found.push("the proxy never logged \"Prism is listening\"".to_owned());
    }
    let mut probe_allowed = true;
    for line in text.lines() {
        let refused = line.contains("Request terminated with error")
            || line.contains("stoplight.io/prism/errors#");
        if !refused {
            continue;
        }
        if probe_allowed && line.contains("errors#NO_PATH_MATCHED_ERROR") {
            probe_allowed = false;
            continue;
        }
        found.push(line.to_owned());
    }
    found
}
