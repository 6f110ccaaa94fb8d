"""One world for the package's tests: the Twilio fake
(tests/support/twilio_fake.py), the real credbroker daemon ($CREDBROKER_BIN)
on a Unix socket with a file store of fake credentials, and a Broker.

Run by tests/clients_python.sh. Every secret here is made up by the test;
the ones the tests saw are written (never printed) to
$CREDBROKER_TEST_SECRETS_FILE at the end, so that the script can check that
none of them appears in the output or the logs.
"""

import base64
import json
import os
import secrets
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from twilio.http.http_client import TwilioHttpClient

import credbroker

ROOT = Path(__file__).resolve().parents[3]
FAKE = ROOT / "tests" / "support" / "twilio_fake.py"
TWILIO_HOSTS = ("https://api.twilio.com", "https://verify.twilio.com", "https://oauth.twilio.com")
OAUTH_TTL = 6  # seconds: the daemon refreshes bearer tokens every 4 s
GRACE = "8s"
DYN_TTL = 6  # seconds: a dynamic key is served until half of it, then a new one


def hex32():
    return secrets.token_hex(16)


def account_sid():
    return "AC" + hex32()


def key_sid():
    return "SK" + hex32()


def key_secret():
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


def note_pid(pid):
    """Appends a PID we started to $CREDBROKER_TEST_PIDS_FILE, so that the
    calling script can stop it if this process dies first."""
    path = os.environ.get("CREDBROKER_TEST_PIDS_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{pid}\n")


def wait_for(cond, timeout, what):
    """Polls cond() until it is truthy (its value) or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class FakeHostHttpClient(TwilioHttpClient):
    """twilio-python's own HTTP client with Twilio's hosts rewritten to the
    fake's http://127.0.0.1:PORT; the SDK builds every request as usual.
    Records (method, path, sha256 of the bearer token or None) of each
    request, never a credential; every secret it sends goes to `remember`
    (the run's list of secrets to look for in the output)."""

    def __init__(self, base, remember):
        super().__init__()
        self.base = base
        self.remember = remember
        self.sent = []

    def request(self, method, url, params=None, data=None, headers=None, auth=None, timeout=None,
                allow_redirects=False):
        for host in TWILIO_HOSTS:
            if url.startswith(host + "/"):
                url = self.base + url[len(host):]
                break
        else:
            raise AssertionError(f"a request to an unexpected host: {url.split('?')[0]}")
        bearer = (headers or {}).get("Authorization", "")
        tag = None
        if auth is not None:
            self.remember(auth[1])
        if bearer.startswith("Bearer "):
            import hashlib
            self.remember(bearer[len("Bearer "):])
            tag = hashlib.sha256(bearer.encode()).hexdigest()[:16]
        self.sent.append((method, url[len(self.base):].split("?")[0], tag))
        return super().request(method, url, params=params, data=data, headers=headers, auth=auth,
                               timeout=timeout or 10, allow_redirects=allow_redirects)


class World:
    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.bin = os.environ.get("CREDBROKER_BIN") or ""
        if not os.access(self.bin, os.X_OK):
            pytest.exit(f"CREDBROKER_BIN is not an executable credbroker binary: {self.bin!r}", returncode=2)
        self.sock = str(self.tmp / "run" / "broker.sock")
        self.config = self.tmp / "config.toml"
        self.secrets_path = self.tmp / "secrets.json"
        self.known = set()  # every secret value of the run (never printed)
        self.fake_proc = self.daemon_proc = None
        self.docs = {}
        self.lock = threading.Lock()

    # -- bookkeeping of secrets
    def remember(self, *values):
        for v in values:
            if isinstance(v, str) and len(v) >= 16:
                with self.lock:
                    self.known.add(v)

    def remember_cred(self, cred):
        self.remember(cred.auth_token, cred.api_key_secret, cred.access_token)
        if cred.previous is not None:
            self.remember(cred.previous.auth_token, cred.previous.api_key_secret)
        return cred

    # -- the fake
    def start_fake(self, seed):
        seed_path = self.tmp / "seed.json"
        seed_path.write_text(json.dumps(seed))
        self.fake_log = open(self.tmp / "twilio-fake.log", "w")
        self.fake_proc = subprocess.Popen(
            [sys.executable, str(FAKE), "--port", "0", "--seed", str(seed_path)],
            stdout=subprocess.PIPE, stderr=self.fake_log, text=True)
        note_pid(self.fake_proc.pid)
        line = self.fake_proc.stdout.readline().strip()
        if not line.startswith("PORT="):
            pytest.exit("the Twilio fake did not start", returncode=2)
        self.fake_base = f"http://127.0.0.1:{int(line[5:])}"

    def fake(self, path, doc=None, method=None, auth=None):
        data = None if doc is None else json.dumps(doc).encode()
        req = urllib.request.Request(self.fake_base + path, data=data, method=method or ("GET" if data is None else "POST"))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth is not None:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = resp.read()
                return resp.status, (json.loads(body) if body else None)
        except urllib.error.HTTPError as err:
            return err.code, None

    def fake_requests(self):
        return self.fake("/__fake/requests")[1]["requests"]

    def fake_key_sids(self):
        return {k["sid"] for k in self.fake("/__fake/state")[1]["keys"]}

    def twilio_accepts(self, username, password):
        return self.fake("/__fake/check", {"username": username, "password": password})[1]["valid"]

    def http(self):
        return FakeHostHttpClient(self.fake_base, self.remember)

    # -- the store
    def write_docs(self, **docs):
        """Replaces documents in secrets.json (temp file + rename)."""
        with self.lock:
            current = json.loads(self.secrets_path.read_text()) if self.secrets_path.exists() else {}
            current.update(docs)
            tmp = self.secrets_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(current, indent=1))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.secrets_path)

    def read_doc(self, path):
        return json.loads(self.secrets_path.read_text())[path]

    # -- the daemon
    def start_daemon(self):
        self.daemon_log = open(self.tmp / "daemon.log", "a")
        # At debug: more of what the daemon does is in the log that the
        # calling script scans for secrets.
        self.daemon_proc = subprocess.Popen([self.bin, "serve", "--config", str(self.config)],
                                            stdout=self.daemon_log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "CREDBROKER_LOG": "debug"})
        note_pid(self.daemon_proc.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.daemon_proc.poll() is not None:
                pytest.exit("the daemon exited at start (see daemon.log)", returncode=2)
            ok = subprocess.run([self.bin, "health", "--socket", self.sock], capture_output=True).returncode == 0
            if ok:
                return
            time.sleep(0.1)
        pytest.exit("the daemon is not SERVING after 30 s", returncode=2)

    def stop_daemon(self):
        proc, self.daemon_proc = self.daemon_proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def rotate(self, name, *args):
        """`credbroker rotate --credential NAME --config FILE`: its output (no secrets)."""
        out = subprocess.run([self.bin, "rotate", "--credential", name, "--config", str(self.config), *args],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "CREDBROKER_LOG": "debug"})
        text = out.stdout + out.stderr
        with open(self.tmp / "rotate.log", "a") as f:  # scanned for secrets by the calling script
            f.write(text)
        assert out.returncode == 0, f"credbroker rotate {name} exited {out.returncode}: {text[-2000:]}"
        return text

    def rotate_rpc(self, name):
        """RotationAdmin.Rotate over the socket (the daemon's own uid is its
        default admin list): the RotationStatus."""
        import grpc
        from credbroker.v1 import broker_pb2, broker_pb2_grpc
        with grpc.insecure_channel("unix:" + self.sock, options=credbroker.channel_options()) as ch:
            return broker_pb2_grpc.RotationAdminStub(ch).Rotate(broker_pb2.RotateRequest(name=name), timeout=120)

    def stop_all(self):
        self.stop_daemon()
        if self.fake_proc is not None and self.fake_proc.poll() is None:
            self.fake_proc.send_signal(signal.SIGTERM)
            try:
                self.fake_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.fake_proc.kill()
                self.fake_proc.wait()


@pytest.fixture(scope="session")
def world():
    tmp = tempfile.mkdtemp(prefix="credbroker-pyclients.")
    w = World(tmp)
    try:
        build(w)
        yield w
    finally:
        try:
            w.broker.close()
        except AttributeError:
            pass
        w.stop_all()
        # Everything that held a secret at some point in the run.
        try:
            def walk(v):
                if isinstance(v, dict):
                    for k, x in v.items():
                        if isinstance(x, str) and ("secret" in k.lower() or "token" in k.lower()):
                            w.remember(x)
                        else:
                            walk(x)
            walk(json.loads(w.secrets_path.read_text()))
        except (OSError, ValueError):
            pass
        out = os.environ.get("CREDBROKER_TEST_SECRETS_FILE")
        if out:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("".join(s + "\n" for s in sorted(w.known)))
        keep = os.environ.get("CREDBROKER_TEST_KEEP_LOGS")
        if keep:
            for name in ("daemon.log", "twilio-fake.log", "rotate.log"):
                try:
                    os.replace(Path(tmp) / name, Path(keep) / name)
                except OSError:
                    pass
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


def build(w):
    # Account A: rotated Auth Token, rotated Standard key (admin: a Main key),
    # an OAuth app, a Verify service. Account B: a key in a grace window.
    # Account C: an Auth Token in a grace window. Account W: webhooks,
    # watches. Account M: Access Tokens.
    w.sid_a, w.token_a = account_sid(), hex32()
    w.admin_sid, w.admin_secret = key_sid(), key_secret()
    w.key_sid, w.key_secret = key_sid(), key_secret()
    w.service = "VA" + hex32()
    w.client_id, w.client_secret = "OQ" + hex32(), key_secret()
    w.sid_b, w.token_b = account_sid(), hex32()
    w.kb_old_sid, w.kb_old_secret = key_sid(), key_secret()
    w.kb_new_sid, w.kb_new_secret = key_sid(), key_secret()
    w.sid_c, w.tc_old, w.tc_new = account_sid(), hex32(), hex32()
    w.sid_d, w.td = account_sid(), hex32()  # not at the fake: refused
    w.sid_w, w.token_w, w.token_w2 = account_sid(), hex32(), hex32()
    w.sid_m, w.mint_sid, w.mint_secret = account_sid(), key_sid(), key_secret()
    w.remember(w.token_a, w.admin_secret, w.key_secret, w.client_secret, w.token_b, w.kb_old_secret,
               w.kb_new_secret, w.tc_old, w.tc_new, w.td, w.token_w, w.token_w2, w.mint_secret)

    w.start_fake({
        "accounts": [{"sid": w.sid_a, "auth_token": w.token_a}, {"sid": w.sid_b, "auth_token": w.token_b},
                     {"sid": w.sid_c, "auth_token": w.tc_old}],
        "keys": [
            {"account_sid": w.sid_a, "sid": w.admin_sid, "secret": w.admin_secret, "type": "main"},
            {"account_sid": w.sid_a, "sid": w.key_sid, "secret": w.key_secret, "type": "standard"},
            {"account_sid": w.sid_b, "sid": w.kb_old_sid, "secret": w.kb_old_secret, "type": "standard"},
        ],
        "services": [{"sid": w.service, "account_sid": w.sid_a}],
        "oauth_apps": [{"account_sid": w.sid_a, "client_id": w.client_id, "client_secret": w.client_secret}],
    })
    status, _ = w.fake("/__fake/oauth", {"ttl": OAUTH_TTL})
    assert status == 200, "the Twilio fake has no /__fake/oauth (OAuth support)"

    far = "2099-01-01T00:00:00Z"
    w.write_docs(**{
        "tw-admin": {"account_sid": w.sid_a, "api_key_sid": w.admin_sid, "api_key_secret": w.admin_secret},
        "tw-key": {"account_sid": w.sid_a, "api_key_sid": w.key_sid, "api_key_secret": w.key_secret},
        "tw-token": {"account_sid": w.sid_a, "auth_token": w.token_a},
        "tw-oauth": {"accountSid": w.sid_a, "clientId": w.client_id, "clientSecret": w.client_secret},
        # A rotation's grace window where the new value does not work at
        # Twilio yet (it has not propagated): the previous one still does.
        "tw-grace-key": {"account_sid": w.sid_b, "api_key_sid": w.kb_new_sid, "api_key_secret": w.kb_new_secret,
                         "previous": {"api_key_sid": w.kb_old_sid, "api_key_secret": w.kb_old_secret,
                                      "retire_at": far}},
        "tw-grace-token": {"account_sid": w.sid_c, "auth_token": w.tc_new,
                           "previous": {"auth_token": w.tc_old, "retire_at": far}},
        "tw-refused": {"account_sid": w.sid_d, "auth_token": w.td},
        "tw-hooks": {"account_sid": w.sid_w, "auth_token": w.token_w},
        "tw-watch": {"account_sid": w.sid_w, "auth_token": w.token_w},
        "tw-mint": {"account_sid": w.sid_m, "api_key_sid": w.mint_sid, "api_key_secret": w.mint_secret},
    })
    creds = "".join(
        f'\n[credentials.{n}]\nstore = "local"\npath = "{n}"\n{extra}'
        for n, extra in [
            ("tw-admin", 'kind = "api_key"\n'),
            ("tw-key", f'kind = "api_key"\n[credentials.tw-key.rotation]\nschedule = "0 0 0 1 1 * 2099"\n'
                       f'grace = "{GRACE}"\nadmin_credential = "tw-admin"\npropagation = "5s"\n'),
            ("tw-token", f'kind = "auth_token"\n[credentials.tw-token.rotation]\nschedule = "0 0 0 1 1 * 2099"\n'
                         f'grace = "{GRACE}"\npropagation = "5s"\n'),
            ("tw-oauth", ""),
            ("tw-grace-key", 'kind = "api_key"\n'),
            ("tw-grace-token", 'kind = "auth_token"\n'),
            ("tw-refused", ""),
            ("tw-hooks", ""),
            ("tw-watch", ""),
            ("tw-mint", 'kind = "api_key"\n[credentials.tw-mint.access_tokens]\nmax_ttl = "1h"\n'
                        'grants = ["voice", "video"]\nidentity_prefix = "user-"\n'),
        ]) + f"""
[credentials.tw-dyn]
kind = "dynamic_api_key"
admin_credential = "tw-admin"
ttl = "{DYN_TTL}s"
max_live_keys = 20
policy = '{{"allow": ["/twilio/messaging/messages/read"]}}'
"""
    w.config.write_text(f"""
[server]
socket = "{w.sock}"
socket_mode = "0660"
allow_root = true      # CI runs as root
lock_memory = false    # a test: no need to pin the debug binary in RAM

[defaults]
lease_ttl = "4s"
refresh_interval = "2s"
max_stale = "15m"

[stores.local]
type = "file"
path = "{w.secrets_path}"

[twilio]
api_base = "{w.fake_base}"
iam_base = "{w.fake_base}"
accounts_base = "{w.fake_base}"
oauth_base = "{w.fake_base}"
{creds}""")
    w.start_daemon()
    w.broker = credbroker.Broker(w.sock, reconnect_backoff=(0.2, 2.0))


class Load:
    """Calls fn(i) in a loop on a thread, paced, until stopped; counts
    successes and keeps each failure as (type, message)."""

    def __init__(self, fn, pause=0.02):
        self.fn = fn
        self.pause = pause
        self.ok = 0
        self.failures = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sdk-load", daemon=True)

    def _run(self):
        i = 0
        while not self._stop.is_set():
            try:
                self.fn(i)
                self.ok += 1
            except Exception as err:  # noqa: BLE001 (every failure counts)
                self.failures.append((type(err).__name__, str(err)[:300]))
            i += 1
            self._stop.wait(self.pause)

    def wait_ok(self, n, timeout=30):
        wait_for(lambda: self.ok >= n or self.failures, timeout, f"{n} successful SDK requests")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
