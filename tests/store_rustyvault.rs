//! The `vault` store against RustyVault, a real Vault-API server: init,
//! unseal, a KV v1 mount, AppRole login — through the daemon's own Vault
//! client. RustyVault has no renew-self endpoint, so its short-lived tokens
//! also exercise "renewal fails → log in again" against a real server.
//! (RustyVault enforces no ACL policies; the permission-denied cases run
//! against the Vault fake in store_vault.rs.)

mod support;

use std::{path::PathBuf, process::Command, time::Duration};

use credbroker::client::Client;
use support::{services::*, *};

struct RustyVault {
    dir: PathBuf,
    port: u16,
}

impl RustyVault {
    fn script(args: &[&str], env: &[(&str, &str)]) {
        let bin = cache_dir().join("rustyvault/bin/rvault");
        assert!(
            bin.exists(),
            "{} not found: run scripts/test-all, which builds RustyVault into {}",
            bin.display(),
            cache_dir().join("rustyvault").display()
        );
        let out = Command::new("bash")
            .arg(repo().join("tests/support/rustyvault.sh"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rustyvault.sh {args:?} failed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    /// Started, initialised, unsealed, with KV v1 at `kv` and AppRole role
    /// `credbroker` whose tokens live `token_ttl`.
    fn start(dir: &std::path::Path, token_ttl: &str) -> RustyVault {
        let rv = RustyVault {
            dir: dir.join("rustyvault"),
            port: free_port(),
        };
        std::fs::create_dir_all(&rv.dir).unwrap();
        let (d, p) = (rv.dir.display().to_string(), rv.port.to_string());
        Self::script(&["start", &d, &p], &[]);
        Self::script(&["setup", &d, &p], &[("RV_TOKEN_TTL", token_ttl)]);
        rv
    }

    fn stop(&self) {
        Self::script(&["stop", &self.dir.display().to_string()], &[]);
    }

    fn restart(&self) {
        let (d, p) = (self.dir.display().to_string(), self.port.to_string());
        Self::script(&["start", &d, &p], &[]);
        Self::script(&["unseal", &d, &p], &[]);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn root(&self) -> String {
        std::fs::read_to_string(self.dir.join("root_token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn put(&self, path: &str, doc: &str) {
        let (status, body) = http(
            "POST",
            &format!("{}/v1/kv/{path}", self.url()),
            Some(doc),
            &[("X-Vault-Token", &self.root())],
        );
        assert!((200..300).contains(&status), "{status} {body}");
    }
}

impl Drop for RustyVault {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("tests/support/rustyvault.sh"))
            .args(["stop", &self.dir.display().to_string()])
            .output();
    }
}

fn config(rv: &RustyVault) -> String {
    format!(
        r#"
[server]
socket = "{{socket}}"
allow_root = true

[defaults]
refresh_interval = "1s"
max_stale = "5s"
lease_ttl = "1m"

[stores.vault]
type = "vault"
address = "{}"
mount = "kv"
kv_version = 1
auth = {{ method = "approle", role_id_file = "{d}/role_id", secret_id_file = "{d}/secret_id" }}

[credentials.verify]
store = "vault"
path = "twilio/verify"
"#,
        rv.url(),
        d = rv.dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv1_with_approle_end_to_end() {
    let dir = world_dir();
    let rv = RustyVault::start(dir.path(), "4s");
    let (t1, t2, t3) = (token(0x1c01), token(0x1c02), token(0x1c03));
    rv.put("twilio/verify", &auth_token_doc(&t1));
    let daemon = Daemon::start(dir.path(), &config(&rv)).secrets(&[&t1, &t2, &t3, &rv.root()]);
    let client = Client::connect(&daemon.socket).await.unwrap();
    let first = client.get("verify").await.unwrap();
    assert_eq!(secret_of(&first), t1);

    let mut watch = client.watch("verify").await.unwrap();
    watch.message().await.unwrap().unwrap();
    rv.put("twilio/verify", &auth_token_doc(&t2));
    let next = next_matching(&mut watch, Duration::from_secs(3), "the new value", |c| {
        secret_of(c) == t2
    })
    .await;
    assert_ne!(next.version, first.version);

    // Tokens live 4 s and RustyVault cannot renew them: the store must log
    // in again before (or when) they lapse, without a failed refresh.
    let logins = || daemon.log_text().matches("logged in to Vault").count();
    tokio::task::spawn_blocking({
        let log = daemon.log.clone();
        move || {
            wait_until(Duration::from_secs(20), "two fresh AppRole logins", || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .matches("logged in to Vault")
                    .count()
                    >= 3
            })
        }
    })
    .await
    .unwrap();
    assert!(logins() >= 3);
    assert!(
        !daemon.log_text().contains("cannot refresh credential"),
        "a refresh failed across token expiry:\n{}",
        daemon.log_text()
    );
    assert_eq!(secret_of(&client.get("verify").await.unwrap()), t2);

    // RustyVault goes down: stale; back (restarted, unsealed): recovers.
    rv.stop();
    let stale = next_matching(&mut watch, Duration::from_secs(5), "stale", |c| c.stale).await;
    assert_eq!(secret_of(&stale), t2);
    // RustyVault 0.2.1 often cannot unseal while it restores tokens that are
    // about to lapse (500 "delay_timer … DisInitTime"): let the 4 s tokens
    // it issued run out first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    rv.restart();
    rv.put("twilio/verify", &auth_token_doc(&t3));
    let back = get_until(
        &client,
        "verify",
        Duration::from_secs(10),
        "recovery",
        |r| r.as_ref().is_ok_and(|c| !c.stale && secret_of(c) == t3),
    )
    .await
    .unwrap();
    assert!(!back.stale);
    daemon.assert_log_clean();
}

#[test]
fn bad_secret_id_and_wrong_path_stop_the_start() {
    let dir = world_dir();
    let rv = RustyVault::start(dir.path(), "30s");
    // Nothing at twilio/verify yet.
    let mut d = Daemon::spawn(dir.path(), &config(&rv));
    assert_eq!(d.wait_exit().code(), Some(64));
    assert!(
        d.log_text().contains("store `vault`")
            && d.log_text().contains("`twilio/verify` was not found"),
        "{}",
        d.log_text()
    );

    rv.put("twilio/verify", &auth_token_doc(&token(0x1d01)));
    std::fs::write(
        rv.dir.join("secret_id"),
        "00000000-0000-0000-0000-000000000000",
    )
    .unwrap();
    let mut d = Daemon::spawn(dir.path(), &config(&rv));
    assert_eq!(d.wait_exit().code(), Some(64));
    let log = d.log_text();
    assert!(
        log.contains("AppRole login") && log.contains("invalid secret id"),
        "{log}"
    );
}
