#!/usr/bin/env python3
"""A stateful fake of the parts of HashiCorp Vault's HTTP API that credbroker
uses and RustyVault lacks: the KV v2 secrets engine, the Kubernetes auth
method's login, and the token auth method's self endpoints.

Python 3.11 standard library only. Response shapes, status codes and error
messages follow Vault's public API documents and its server behaviour:

* every JSON answer is Vault's envelope: request_id, lease_id, renewable,
  lease_duration, data, wrap_info, warnings, auth (and mount_type);
* errors are {"errors": [...]} with Vault's status codes;
* a missing KV secret (or version, or metadata) is 404 {"errors": []};
* a soft-deleted or destroyed version is 404 with the full envelope, whose
  data is {"data": null, "metadata": {...}} (no "errors" key), as Vault does;
* a missing X-Vault-Token is 403 {"errors": ["permission denied"]}; an
  unknown, revoked or expired token is 403 {"errors": ["2 errors occurred:
  \\n\\t* permission denied\\n\\t* invalid token\\n\\n"]}, Vault's exact text;
  a path the token may not read (see /__fake/deny) is 403
  {"errors": ["1 error occurred:\\n\\t* permission denied\\n\\n"]}.

Usage:
  vault_fake.py [--port 0] [--host 127.0.0.1] [--kv-mount secret]...
                [--k8s-mount kubernetes] [--k8s-role ROLE]
                [--k8s-jwt-file FILE] [--policies default,credbroker]
                [--token-ttl 3600] [--token-max-ttl 3*ttl]
                [--root-token T] [--state FILE]

The first stdout line is PORT=<n> (flushed). Nothing secret is ever printed:
the request log on stderr has method, path and status only.

Test hooks (no token needed), under /__fake/:
  POST /__fake/expire-tokens            every non-root token expires now
  GET  /__fake/stats                    counters (no secrets)
  POST /__fake/reset-stats
  POST /__fake/deny {"path": P, "deny": true[, "write": true]}
       reads (data and metadata) of P answer 403; P is a KV path
       ("twilio/verify") or an API path ("secret/data/twilio/verify")
  POST /__fake/seal {"sealed": true}    every /v1 call answers 503
                                        {"errors":["Vault is sealed"]}
  POST /__fake/fail {"path": P, "status": 500, "count": 1}
       the next `count` calls whose API path starts with P answer `status`
  POST /__fake/delay {"ms": N}          delay every /v1 answer by N ms
"""

from __future__ import annotations

import argparse
import copy
import hmac
import json
import os
import re
import secrets
import signal
import string
import sys
import tempfile
import threading
import time
import uuid
from base64 import urlsafe_b64decode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

VAULT_VERSION = "1.17.0"
DEFAULT_MAX_VERSIONS = 10  # Vault keeps 10 versions when max_versions is 0

MSG_DENIED = "permission denied"
MSG_INVALID_TOKEN = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
MSG_POLICY_DENIED = "1 error occurred:\n\t* permission denied\n\n"
MSG_CAS_MISMATCH = "check-and-set parameter did not match the current version"
MSG_CAS_REQUIRED = "check-and-set parameter required for this call"
MSG_UNSUPPORTED_PATH = "1 error occurred:\n\t* unsupported path\n\n"
MSG_UNSUPPORTED_OP = "1 error occurred:\n\t* unsupported operation\n\n"


# ---------------------------------------------------------------- time helpers

def now_ns() -> int:
    return time.time_ns()


def rfc3339nano(ns: int | None) -> str:
    """Go's time.RFC3339Nano in UTC: trailing zeros of the fraction trimmed."""
    if ns is None:
        return ""
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if frac:
        base += "." + f"{frac:09d}".rstrip("0")
    return base + "Z"


def go_duration(seconds: int) -> str:
    """Go's time.Duration.String() for whole seconds: 1h0m0s, 30m0s, 45s."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{sign}{h}h{m}m{s}s"
    if m:
        return f"{sign}{m}m{s}s"
    return f"{sign}{s}s"


_DUR_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_seconds(raw) -> int:
    """Vault's parseutil.ParseDurationSecond: ints are seconds, strings are
    seconds or Go durations (plus a "d" suffix)."""
    if raw is None or raw == "":
        return 0
    if isinstance(raw, bool):
        raise ValueError("bad duration")
    if isinstance(raw, (int, float)):
        return int(raw)
    s = str(raw).strip()
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    pos, total = 0, 0.0
    for m in _DUR_RE.finditer(s):
        if m.start() != pos:
            raise ValueError("bad duration")
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError("bad duration")
    return int(total)


# ------------------------------------------------------------------- the state

class ApiError(Exception):
    def __init__(self, status: int, errors: list[str]):
        super().__init__(status)
        self.status = status
        self.errors = errors


class RawResponse(Exception):
    """A full Vault envelope answered with a non-200 status (Vault's
    logical.RespondWithStatusCode)."""

    def __init__(self, status: int, data):
        super().__init__(status)
        self.status = status
        self.data = data


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.kv: dict[str, dict[str, dict]] = {m: {} for m in args.kv_mount}
        self.tokens: dict[str, dict] = {}
        self.denied: dict[str, dict] = {}  # kv path -> {"write": bool}
        self.sealed = False
        self.delay_ms = 0
        self.failures: list[dict] = []
        self.reset_stats()
        if args.state and os.path.exists(args.state):
            self.load()

    # -- persistence
    def load(self):
        with open(self.args.state, encoding="utf-8") as f:
            doc = json.load(f)
        for mount, keys in doc.get("kv", {}).items():
            self.kv.setdefault(mount, {}).update(keys)
        self.tokens = doc.get("tokens", {})

    def save(self):
        if not self.args.state:
            return
        doc = {"kv": self.kv, "tokens": self.tokens}
        d = os.path.dirname(os.path.abspath(self.args.state))
        fd, tmp = tempfile.mkstemp(prefix=".vault-fake-", dir=d)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.args.state)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    # -- stats (never secrets: only paths and counts)
    def reset_stats(self):
        self.stats = {
            "requests": 0,
            "logins": 0,
            "login_failures": 0,
            "renewals": 0,
            "renewal_failures": 0,
            "lookups": 0,
            "tokens_issued": 0,
            "permission_denied": 0,
            "reads": {},
            "read_not_found": {},
            "writes": {},
            "cas_failures": {},
            "metadata_reads": {},
            "lists": {},
            "deletes": {},
        }

    def bump(self, key: str, path: str | None = None):
        if path is None:
            self.stats[key] += 1
        else:
            self.stats[key][path] = self.stats[key].get(path, 0) + 1

    def snapshot_stats(self):
        now = now_ns()
        s = copy.deepcopy(self.stats)
        s["tokens_active"] = sum(
            1 for t in self.tokens.values() if t["expire_ns"] is None or t["expire_ns"] > now
        )
        s["denied_paths"] = sorted(self.denied)
        s["sealed"] = self.sealed
        return s

    # -- tokens
    def new_token(self, *, policies, meta, display_name, path) -> dict:
        ttl = self.args.token_ttl
        now = now_ns()
        tok = "hvs." + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))
        entry = {
            "accessor": "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24)),
            "policies": policies,
            "meta": meta,
            "display_name": display_name,
            "path": path,
            "entity_id": str(uuid.uuid4()),
            "issue_ns": now,
            "creation_ttl": ttl,
            "expire_ns": now + ttl * 1_000_000_000,
            "max_expire_ns": now + self.args.token_max_ttl * 1_000_000_000,
            "renewable": True,
        }
        self.tokens[tok] = entry
        self.bump("tokens_issued")
        self.save()
        return tok, entry

    def root_entry(self) -> dict:
        return {
            "accessor": "root-accessor-fake00000",
            "policies": ["root"],
            "meta": None,
            "display_name": "root",
            "path": "auth/token/root",
            "entity_id": "",
            "issue_ns": self.started_ns,
            "creation_ttl": 0,
            "expire_ns": None,
            "max_expire_ns": None,
            "renewable": False,
        }

    def check_token(self, token: str | None) -> tuple[str, dict]:
        if not token:
            raise ApiError(403, [MSG_DENIED])
        if self.args.root_token and hmac.compare_digest(token, self.args.root_token):
            return token, self.root_entry()
        entry = self.tokens.get(token)
        if entry is None:
            raise ApiError(403, [MSG_INVALID_TOKEN])
        if entry["expire_ns"] is not None and entry["expire_ns"] <= now_ns():
            del self.tokens[token]
            self.save()
            raise ApiError(403, [MSG_INVALID_TOKEN])
        return token, entry


# --------------------------------------------------------------------- helpers

def envelope(data=None, *, auth=None, warnings=None, mount_type=""):
    return {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": warnings,
        "auth": auth,
        "mount_type": mount_type,
    }


def auth_block(token: str, entry: dict, lease_duration: int) -> dict:
    return {
        "client_token": token,
        "accessor": entry["accessor"],
        "policies": entry["policies"],
        "token_policies": entry["policies"],
        "metadata": entry["meta"],
        "lease_duration": lease_duration,
        "renewable": entry["renewable"],
        "entity_id": entry["entity_id"],
        "token_type": "service",
        "orphan": True,
        "mfa_requirement": None,
        "num_uses": 0,
    }


def jwt_claims(jwt: str) -> dict:
    try:
        payload = jwt.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(urlsafe_b64decode(payload))
        return claims if isinstance(claims, dict) else {}
    except Exception:
        return {}


def version_meta(key: dict, vnum: int, *, with_version: bool) -> dict:
    v = key["versions"][str(vnum)]
    out = {
        "created_time": rfc3339nano(v["created_ns"]),
        "deletion_time": rfc3339nano(v["deletion_ns"]),
        "destroyed": v["destroyed"],
    }
    if with_version:
        out["custom_metadata"] = key["custom_metadata"]
        out["version"] = vnum
    return out


def is_deleted(v: dict) -> bool:
    return v["deletion_ns"] is not None and v["deletion_ns"] <= now_ns()


def new_key() -> dict:
    return {
        "created_ns": None,  # set by the first version, as Vault's AddVersion does
        "updated_ns": now_ns(),
        "current_version": 0,
        "oldest_version": 0,
        "max_versions": 0,
        "cas_required": False,
        "delete_version_after": "0s",
        "custom_metadata": None,
        "versions": {},
    }


def json_merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = json_merge_patch(out.get(k), v)
    return out


# --------------------------------------------------------------------- handler

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vault-fake"
    sys_version = ""

    # quiet, secret-free log: method, path (no query), status
    def log_message(self, fmt, *args):
        pass

    def log_request(self, code="-", size="-"):
        path = urlsplit(self.path).path
        sys.stderr.write(f"vault-fake: {self.command} {path} {code}\n")

    @property
    def st(self) -> State:
        return self.server.state  # type: ignore[attr-defined]

    # -- plumbing
    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n > 0 else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, ["failed to parse JSON input: invalid character in request body"])
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise ApiError(400, ["failed to parse JSON input: body must be a JSON object"])
        return body

    def send_json(self, status: int, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_empty(self, status: int = 204):
        self.send_response(status)
        self.send_header("Cache-Control", "no-store")
        if status != 204:
            self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_LIST(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def dispatch(self):
        parts = urlsplit(self.path)
        # rustify may leave stray whitespace (e.g. a tab) in a path; Vault's
        # router never sees it because URL parsing strips it.
        path = re.sub(r"[\t\r\n]", "", unquote(parts.path))
        path = re.sub(r"/{2,}", "/", path)
        query = parse_qs(parts.query)
        try:
            body = self.read_body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else {}
            if path.startswith("/__fake/"):
                self.hook(path[len("/__fake/"):], body)
                return
            if not path.startswith("/v1/"):
                raise ApiError(404, ["404 page not found"])
            api = path[len("/v1/"):]
            if self.st.delay_ms:
                time.sleep(self.st.delay_ms / 1000)
            with self.st.lock:
                self.st.bump("requests")
                status, doc = self.route(api.rstrip("/") if api != "" else api, api.endswith("/"), query, body)
        except ApiError as e:
            if e.status == 403:
                with self.st.lock:
                    self.st.bump("permission_denied")
            self.send_json(e.status, {"errors": e.errors})
            return
        except RawResponse as r:
            self.send_json(r.status, r.data)
            return
        except Exception as e:  # a bug in the fake: still answer like Vault
            sys.stderr.write(f"vault-fake: internal error: {type(e).__name__}\n")
            self.send_json(500, {"errors": ["1 error occurred:\n\t* internal error\n\n"]})
            return
        if doc is None:
            self.send_empty(status)
        else:
            self.send_json(status, doc)

    # -- test hooks
    def hook(self, name: str, body: dict):
        st = self.st
        with st.lock:
            if name == "stats" and self.command == "GET":
                self.send_json(200, st.snapshot_stats())
                return
            if self.command != "POST":
                raise ApiError(405, ["hooks other than stats take POST"])
            if name == "expire-tokens":
                now = now_ns()
                n = 0
                for entry in st.tokens.values():
                    if entry["expire_ns"] is None or entry["expire_ns"] > now:
                        entry["expire_ns"] = now - 1
                        n += 1
                st.save()
                self.send_json(200, {"expired": n})
            elif name == "reset-stats":
                st.reset_stats()
                self.send_json(200, {})
            elif name == "deny":
                p = self.kv_path_of(str(body.get("path", "")))
                if not p:
                    raise ApiError(400, ["missing path"])
                if body.get("deny", True):
                    st.denied[p] = {"write": bool(body.get("write", False))}
                else:
                    st.denied.pop(p, None)
                self.send_json(200, {"denied": sorted(st.denied)})
            elif name == "seal":
                st.sealed = bool(body.get("sealed", True))
                self.send_json(200, {"sealed": st.sealed})
            elif name == "fail":
                st.failures.append({
                    "path": str(body.get("path", "")).strip("/"),
                    "status": int(body.get("status", 500)),
                    "count": int(body.get("count", 1)),
                })
                self.send_json(200, {"pending": len(st.failures)})
            elif name == "delay":
                st.delay_ms = int(body.get("ms", 0))
                self.send_json(200, {"ms": st.delay_ms})
            else:
                raise ApiError(404, [f"unknown hook {name!r}"])

    def kv_path_of(self, p: str) -> str:
        p = p.strip().strip("/")
        if p.startswith("v1/"):
            p = p[3:]
        for mount in self.st.kv:
            for sub in ("data/", "metadata/"):
                pre = f"{mount}/{sub}"
                if p.startswith(pre):
                    return p[len(pre):]
        return p

    # -- router
    def route(self, api: str, trailing_slash: bool, query, body):
        st = self.st
        method = self.command
        if method == "GET" and query.get("list", [""])[0] in ("true", "1"):
            method = "LIST"

        for f in st.failures:
            if f["count"] > 0 and api.startswith(f["path"]):
                f["count"] -= 1
                st.failures = [x for x in st.failures if x["count"] > 0]
                raise ApiError(f["status"], ["fake injected failure"])

        if api == "sys/health":
            return self.health()
        if st.sealed:
            raise ApiError(503, ["Vault is sealed"])
        if api == "sys/seal-status":
            return 200, {"type": "shamir", "initialized": True, "sealed": False, "t": 1, "n": 1,
                         "progress": 0, "nonce": "", "version": VAULT_VERSION, "build_date": "",
                         "migration": False, "recovery_seal": False, "storage_type": "inmem"}

        k8s = f"auth/{st.args.k8s_mount}/login"
        if api == k8s:
            if method not in ("POST", "PUT"):
                raise ApiError(405, [MSG_UNSUPPORTED_OP])
            return self.k8s_login(body)

        # everything below needs a token
        token, entry = st.check_token(self.headers.get("X-Vault-Token"))

        if api == "auth/token/lookup-self":
            if method not in ("GET", "POST"):
                raise ApiError(405, [MSG_UNSUPPORTED_OP])
            return self.lookup_self(token, entry)
        if api == "auth/token/renew-self":
            if method not in ("POST", "PUT"):
                raise ApiError(405, [MSG_UNSUPPORTED_OP])
            return self.renew_self(token, entry, body)
        if api == "auth/token/revoke-self":
            if method not in ("POST", "PUT"):
                raise ApiError(405, [MSG_UNSUPPORTED_OP])
            if token in st.tokens:
                del st.tokens[token]
                st.save()
            return 204, None

        mount, _, rest = api.partition("/")
        if mount in st.kv:
            return self.kv(mount, rest, trailing_slash, method, query, body)
        raise ApiError(404, [f'no handler for route "{api}". route entry not found.'])

    def health(self):
        st = self.st
        doc = {
            "initialized": True,
            "sealed": st.sealed,
            "standby": False,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()),
            "version": VAULT_VERSION,
            "enterprise": False,
            "cluster_name": "vault-cluster-fake",
            "cluster_id": st.cluster_id,
            "echo_duration_ms": 0,
            "clock_skew_ms": 0,
        }
        if st.sealed:
            raise RawResponse(503, doc)
        return 200, doc

    # -- kubernetes auth
    def k8s_login(self, body):
        st = self.st
        role = body.get("role") or ""
        jwt = body.get("jwt") or ""
        if not isinstance(role, str) or not role:
            st.bump("login_failures")
            raise ApiError(400, ["missing role"])
        if not isinstance(jwt, str) or not jwt:
            st.bump("login_failures")
            raise ApiError(400, ["missing jwt"])
        if not st.args.k8s_role or role != st.args.k8s_role:
            st.bump("login_failures")
            raise ApiError(400, [f"invalid role name {json.dumps(role)}"])
        expected = None
        if st.args.k8s_jwt_file:
            try:
                with open(st.args.k8s_jwt_file, encoding="utf-8") as f:
                    expected = f.read().strip()
            except OSError:
                expected = None
        if not expected or not hmac.compare_digest(jwt.strip().encode(), expected.encode()):
            st.bump("login_failures")
            raise ApiError(403, [MSG_DENIED])
        claims = jwt_claims(jwt)
        sa = claims.get("kubernetes.io", {}) if isinstance(claims.get("kubernetes.io"), dict) else {}
        sa_obj = sa.get("serviceaccount") if isinstance(sa.get("serviceaccount"), dict) else {}
        sa_name = sa_obj.get("name") or claims.get("kubernetes.io/serviceaccount/service-account.name") or "credbroker"
        sa_ns = sa.get("namespace") or claims.get("kubernetes.io/serviceaccount/namespace") or "default"
        sa_uid = sa_obj.get("uid") or claims.get("kubernetes.io/serviceaccount/service-account.uid") \
            or str(uuid.uuid5(uuid.NAMESPACE_URL, f"{sa_ns}/{sa_name}"))
        meta = {
            "role": role,
            "service_account_name": str(sa_name),
            "service_account_namespace": str(sa_ns),
            "service_account_secret_name": "",
            "service_account_uid": str(sa_uid),
        }
        token, entry = st.new_token(
            policies=st.args.policies,
            meta=meta,
            display_name=f"{st.args.k8s_mount}-{sa_ns}-{sa_name}",
            path=f"auth/{st.args.k8s_mount}/login",
        )
        st.bump("logins")
        return 200, envelope(None, auth=auth_block(token, entry, entry["creation_ttl"]))

    # -- token self endpoints
    def lookup_self(self, token, entry):
        st = self.st
        st.bump("lookups")
        now = now_ns()
        if entry["expire_ns"] is None:
            ttl, expire = 0, None
        else:
            ttl = max(0, (entry["expire_ns"] - now) // 1_000_000_000)
            expire = rfc3339nano(entry["expire_ns"])
        data = {
            "accessor": entry["accessor"],
            "creation_time": entry["issue_ns"] // 1_000_000_000,
            "creation_ttl": entry["creation_ttl"],
            "display_name": entry["display_name"],
            "entity_id": entry["entity_id"],
            "expire_time": expire,
            "explicit_max_ttl": 0,
            "id": token,
            "issue_time": rfc3339nano(entry["issue_ns"]),
            "meta": entry["meta"],
            "num_uses": 0,
            "orphan": True,
            "path": entry["path"],
            "policies": entry["policies"],
            "renewable": entry["renewable"],
            "ttl": ttl,
            "type": "service",
        }
        if entry["expire_ns"] is not None:
            data["last_renewal_time"] = entry.get("last_renewal_ns", entry["issue_ns"]) // 1_000_000_000
        return 200, envelope(data, mount_type="token")

    def renew_self(self, token, entry, body):
        st = self.st
        if not entry["renewable"] or entry["expire_ns"] is None:
            st.bump("renewal_failures")
            raise ApiError(400, ["lease is not renewable"])
        try:
            inc = parse_duration_seconds(body.get("increment"))
        except ValueError:
            st.bump("renewal_failures")
            raise ApiError(400, ['error converting input for field "increment": invalid duration'])
        want = inc if inc > 0 else st.args.token_ttl
        now = now_ns()
        left = (entry["max_expire_ns"] - now) // 1_000_000_000
        warnings = None
        ttl = want
        if want > left:
            ttl = max(0, left)
            warnings = [f'TTL of "{go_duration(want)}" exceeded the effective max_ttl of '
                        f'"{go_duration(ttl)}"; TTL value is capped accordingly']
        entry["expire_ns"] = now + ttl * 1_000_000_000
        entry["last_renewal_ns"] = now
        st.bump("renewals")
        st.save()
        return 200, envelope(None, auth=auth_block(token, entry, ttl), warnings=warnings)

    # -- KV v2
    def kv(self, mount, rest, trailing_slash, method, query, body):
        st = self.st
        keys = st.kv[mount]
        sub, _, path = rest.partition("/")
        api_path = f"{mount}/{sub}/{path}" if path else f"{mount}/{sub}"

        if sub == "config":
            if method == "GET":
                return 200, envelope({"cas_required": False, "delete_version_after": "0s",
                                      "max_versions": 0}, mount_type="kv")
            raise ApiError(405, [MSG_UNSUPPORTED_OP])

        if sub == "metadata" and method == "LIST":
            st.bump("lists", api_path)
            prefix = (path + "/") if path else ""
            found = set()
            for k in keys:
                if k.startswith(prefix):
                    tail = k[len(prefix):]
                    head, sep, _ = tail.partition("/")
                    found.add(head + sep)
            if not found:
                raise ApiError(404, [])
            return 200, envelope({"keys": sorted(found)}, mount_type="kv")

        if sub not in ("data", "metadata", "delete", "undelete", "destroy") or not path or trailing_slash:
            raise ApiError(404, [MSG_UNSUPPORTED_PATH])

        denied = st.denied.get(path)
        key = keys.get(path)

        if sub == "data":
            if method == "GET":
                st.bump("reads", api_path)
                if denied is not None:
                    raise ApiError(403, [MSG_POLICY_DENIED])
                return self.kv_read(key, query, api_path)
            if method in ("POST", "PUT", "PATCH"):
                if denied is not None and denied["write"]:
                    raise ApiError(403, [MSG_POLICY_DENIED])
                return self.kv_write(keys, path, key, body, api_path, patch=(method == "PATCH"))
            if method == "DELETE":
                if denied is not None and denied["write"]:
                    raise ApiError(403, [MSG_POLICY_DENIED])
                st.bump("deletes", api_path)
                if key and key["current_version"]:
                    v = key["versions"].get(str(key["current_version"]))
                    if v and v["deletion_ns"] is None and not v["destroyed"]:
                        v["deletion_ns"] = now_ns()
                        key["updated_ns"] = now_ns()
                        st.save()
                return 204, None
            raise ApiError(405, [MSG_UNSUPPORTED_OP])

        if sub == "metadata":
            if method == "GET":
                st.bump("metadata_reads", api_path)
                if denied is not None:
                    raise ApiError(403, [MSG_POLICY_DENIED])
                if key is None:
                    raise ApiError(404, [])
                return 200, envelope(self.metadata_doc(key), mount_type="kv")
            if method in ("POST", "PUT"):
                if denied is not None and denied["write"]:
                    raise ApiError(403, [MSG_POLICY_DENIED])
                if key is None:
                    key = keys[path] = new_key()
                if "max_versions" in body:
                    key["max_versions"] = int(body["max_versions"] or 0)
                if "cas_required" in body:
                    key["cas_required"] = bool(body["cas_required"])
                if "delete_version_after" in body:
                    key["delete_version_after"] = go_duration(parse_duration_seconds(body["delete_version_after"]))
                if "custom_metadata" in body:
                    cm = body["custom_metadata"]
                    key["custom_metadata"] = {str(k): str(v) for k, v in cm.items()} if cm else None
                key["updated_ns"] = now_ns()
                st.save()
                return 204, None
            if method == "DELETE":
                if denied is not None and denied["write"]:
                    raise ApiError(403, [MSG_POLICY_DENIED])
                st.bump("deletes", api_path)
                if keys.pop(path, None) is not None:
                    st.save()
                return 204, None
            raise ApiError(405, [MSG_UNSUPPORTED_OP])

        # delete / undelete / destroy: POST {"versions": [..]}
        if method not in ("POST", "PUT"):
            raise ApiError(405, [MSG_UNSUPPORTED_OP])
        versions = body.get("versions")
        if not versions:
            raise ApiError(400, ["no version number provided"])
        st.bump("deletes", api_path)
        if key is not None:
            for vn in versions:
                v = key["versions"].get(str(int(vn)))
                if v is None:
                    continue
                if sub == "delete" and v["deletion_ns"] is None and not v["destroyed"]:
                    v["deletion_ns"] = now_ns()
                elif sub == "undelete" and not v["destroyed"]:
                    v["deletion_ns"] = None
                elif sub == "destroy":
                    v["destroyed"] = True
                    v["data"] = None
            key["updated_ns"] = now_ns()
            st.save()
        return 204, None

    def kv_read(self, key, query, api_path):
        st = self.st
        if key is None:
            st.bump("read_not_found", api_path)
            raise ApiError(404, [])
        raw_v = query.get("version", ["0"])[0]
        try:
            vnum = int(raw_v or "0")
        except ValueError:
            raise ApiError(400, [f'error converting input {raw_v} for field "version": '
                                 f'cannot parse \'\' as int: strconv.ParseInt: parsing "{raw_v}": invalid syntax'])
        if vnum <= 0:
            vnum = key["current_version"]
        v = key["versions"].get(str(vnum))
        if v is None:
            st.bump("read_not_found", api_path)
            raise ApiError(404, [])
        doc = envelope({"data": None, "metadata": version_meta(key, vnum, with_version=True)},
                       mount_type="kv")
        if is_deleted(v) or v["destroyed"]:
            st.bump("read_not_found", api_path)
            raise RawResponse(404, doc)
        doc["data"]["data"] = copy.deepcopy(v["data"])
        return 200, doc

    def kv_write(self, keys, path, key, body, api_path, *, patch: bool):
        st = self.st
        data = body.get("data")
        if data is None or not isinstance(data, dict):
            raise ApiError(400, ["no data provided"])
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise ApiError(400, ['error converting input for field "options": not a map'])
        if patch:
            if key is None or not key["current_version"]:
                raise ApiError(404, [])
            cur = key["versions"].get(str(key["current_version"]))
            if cur is None or is_deleted(cur) or cur["destroyed"]:
                raise ApiError(404, [])
        existing = key if key is not None else new_key()
        if "cas" in options and options["cas"] is not None:
            try:
                cas = int(options["cas"])
            except (TypeError, ValueError):
                raise ApiError(400, ["error parsing check-and-set parameter"])
            if cas != existing["current_version"]:
                st.bump("cas_failures", api_path)
                raise ApiError(400, [MSG_CAS_MISMATCH])
        elif existing["cas_required"]:
            st.bump("cas_failures", api_path)
            raise ApiError(400, [MSG_CAS_REQUIRED])
        if patch:
            data = json_merge_patch(existing["versions"][str(existing["current_version"])]["data"], data)
        if key is None:
            key = keys[path] = existing
        now = now_ns()
        if key["created_ns"] is None:
            key["created_ns"] = now
        vnum = key["current_version"] + 1
        key["versions"][str(vnum)] = {
            "created_ns": now,
            "deletion_ns": None,
            "destroyed": False,
            "data": copy.deepcopy(data),
        }
        key["current_version"] = vnum
        key["updated_ns"] = now
        maxv = key["max_versions"] or DEFAULT_MAX_VERSIONS
        live = sorted(int(n) for n in key["versions"])
        while len(live) > maxv:
            del key["versions"][str(live.pop(0))]
            key["oldest_version"] = live[0]
        st.bump("writes", api_path)
        st.save()
        return 200, envelope(version_meta(key, vnum, with_version=True), mount_type="kv")

    @staticmethod
    def metadata_doc(key):
        return {
            "cas_required": key["cas_required"],
            "created_time": rfc3339nano(key["created_ns"]),
            "current_version": key["current_version"],
            "custom_metadata": key["custom_metadata"],
            "delete_version_after": key["delete_version_after"],
            "max_versions": key["max_versions"],
            "oldest_version": key["oldest_version"],
            "updated_time": rfc3339nano(key["updated_ns"]),
            "versions": {n: version_meta(key, int(n), with_version=False) for n in key["versions"]},
        }


# ------------------------------------------------------------------------ main

def parse_args(argv):
    p = argparse.ArgumentParser(description="Stateful fake of Vault's KV v2, Kubernetes auth and token self APIs.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--kv-mount", action="append", default=None,
                   help="KV v2 mount path (repeatable; default secret)")
    p.add_argument("--k8s-mount", default="kubernetes")
    p.add_argument("--k8s-role", default=None)
    p.add_argument("--k8s-jwt-file", default=None, help="read at every login")
    p.add_argument("--policies", default="default,credbroker", help="comma-separated policies of login tokens")
    p.add_argument("--token-ttl", type=int, default=3600, help="seconds")
    p.add_argument("--token-max-ttl", type=int, default=None, help="seconds (default 3 x --token-ttl)")
    p.add_argument("--root-token", default=None, help="accepted everywhere, never expires")
    p.add_argument("--state", default=None, help="JSON file: loaded at start, rewritten after each change")
    a = p.parse_args(argv)
    a.kv_mount = [m.strip("/") for m in (a.kv_mount or ["secret"])]
    a.k8s_mount = a.k8s_mount.strip("/")
    a.policies = sorted({x.strip() for x in a.policies.split(",") if x.strip()})
    if a.token_max_ttl is None:
        a.token_max_ttl = 3 * a.token_ttl
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    state = State(args)
    state.started_ns = now_ns()
    state.cluster_id = str(uuid.uuid4())
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.state = state  # type: ignore[attr-defined]
    sys.stdout.write(f"PORT={server.server_address[1]}\n")
    sys.stdout.flush()

    def stop(_sig, _frm):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
