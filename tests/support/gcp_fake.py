#!/usr/bin/env python3
"""A stateful fake of the GCP Secret Manager v1 REST API, for tests.

There is no emulator for Secret Manager, so credbroker's `gcp_secret_manager`
store is tested against this: a small server that follows Google's public
REST reference (https://cloud.google.com/secret-manager/docs/reference/rest)
for what the Rust SDK (`google-cloud-secretmanager-v1`) sends and what the
tests need. Standard library only, so CI needs nothing but Python 3.11.

Behaviour kept from the real service, because the store depends on it:
  * resource names `projects/{p}/secrets/{s}[/versions/{n}]`, versions
    numbered 1, 2, ... per secret and never reused;
  * `versions/latest` is the most recently created version whatever its
    state (as Google documents); reading a DISABLED or DESTROYED version's
    data fails with 400 FAILED_PRECONDITION, a secret without versions with
    404 NOT_FOUND;
  * etags are quoted strings (`"\"1a2b\""`, per AIP-154), change on every
    modification of their own resource, and a stale etag fails with
    400 FAILED_PRECONDITION (Google's ETag page: "fails with a
    FAILED_PRECONDITION error and an HTTP status code 400");
  * `payload.dataCrc32c` (decimal int64, as a JSON string or number) is
    checked on addVersion and a mismatch fails with 400 INVALID_ARGUMENT; the
    checksum is returned on access;
  * enums are names (`"ENABLED"`), or numbers when the request says
    `$alt=json;enum-encoding=int`, as the Rust SDK does;
  * errors are `{"error": {"code": 404, "message": "...", "status": "NOT_FOUND"}}`.

Simplifications: names echo the project id given (the real service answers
with the project number), no IAM, no locations, no rotation/TTL timers,
and filters support only `state:X` (versions) and `name:X` / `labels.K=V`
(secrets).

Test hooks:
  --port N       listen on 127.0.0.1:N (0: any free port); the first line
                 on stdout is `PORT=<n>`.
  --state FILE   load state from FILE at start and save it after each change
                 (atomically), so a killed and restarted fake keeps its data.
                 The file holds payloads: keep it in a test's temp dir.
  POST /__fake/deny  {"secret": ID, "deny": true|false}: every request that
                 names secret ID (in any project) answers 403
                 PERMISSION_DENIED until undone. Not persisted.
  GET /__fake/requests  the requests seen so far, as
                 [{"method", "path", "authorization": bool, "status"}]:
                 no bodies, so no payloads (lets a test check that no
                 credentials were sent).
  POST /__fake/reset  forget everything.

Payloads are never printed or logged.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import json
import os
import re
import sys
import tempfile
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# --- CRC32C (Castagnoli), as Google's `dataCrc32c` -------------------------

_CRC32C_POLY = 0x82F63B78  # reflected 0x1EDC6F41


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _CRC32C_POLY if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of `data`; crc32c(b"123456789") == 0xE3069283."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- errors -----------------------------------------------------------------

# gRPC code name -> (HTTP status, enum number), per google.rpc.Code.
CODES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


class ApiError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def code(self) -> int:
        return CODES[self.status]

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


# --- state ------------------------------------------------------------------

STATE_NAMES = {1: "ENABLED", 2: "DISABLED", 3: "DESTROYED"}
STATE_NUMBERS = {v: k for k, v in STATE_NAMES.items()}

# Secret fields a client may set (on create, or on patch through updateMask).
MUTABLE_SECRET_FIELDS = {
    "labels",
    "annotations",
    "topics",
    "expireTime",
    "ttl",
    "rotation",
    "versionAliases",
    "versionDestroyTtl",
    "customerManagedEncryption",
    "tags",
}
CREATE_ONLY_SECRET_FIELDS = {"replication"}
SNAKE_TO_CAMEL = {
    "expire_time": "expireTime",
    "version_aliases": "versionAliases",
    "version_destroy_ttl": "versionDestroyTtl",
    "customer_managed_encryption": "customerManagedEncryption",
    "data_crc32c": "dataCrc32c",
}

SECRET_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def camel(field: str) -> str:
    return SNAKE_TO_CAMEL.get(field, field)


def now_rfc3339() -> str:
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


class Store:
    """All secrets, behind one lock, so every check-and-set is atomic."""

    def __init__(self, path: str | None):
        self.lock = threading.RLock()
        self.path = path
        self.secrets: dict[str, dict] = {}  # "projects/p/secrets/s" -> record
        self.etag_counter = 0
        self.denied: set[str] = set()
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
            self.secrets = saved.get("secrets", {})
            self.etag_counter = saved.get("etag_counter", 0)

    def next_etag(self) -> str:
        self.etag_counter += 1
        # Quoted, as Google's are; unique across restarts thanks to the time.
        return '"%x%04x"' % (time.time_ns() // 1000, self.etag_counter % 0x10000)

    def save(self) -> None:
        if not self.path:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".gcp_fake.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"secrets": self.secrets, "etag_counter": self.etag_counter}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def reset(self) -> None:
        self.secrets = {}
        self.denied = set()
        self.save()


# --- rendering --------------------------------------------------------------


def render_state(state: str, int_enums: bool):
    return STATE_NUMBERS[state] if int_enums else state


def render_secret(rec: dict) -> dict:
    out = {"name": rec["name"], "createTime": rec["createTime"], "etag": rec["etag"]}
    for k, v in rec["fields"].items():
        if v not in (None, {}, []):
            out[k] = v
    return out


def render_version(rec: dict, v: dict, int_enums: bool) -> dict:
    out = {
        "name": f'{rec["name"]}/versions/{v["number"]}',
        "createTime": v["createTime"],
        "state": render_state(v["state"], int_enums),
        "etag": v["etag"],
        "replicationStatus": {"automatic": {}},
    }
    if v.get("clientSpecifiedPayloadChecksum"):
        out["clientSpecifiedPayloadChecksum"] = True
    if v["state"] == "DESTROYED":
        out["destroyTime"] = v["destroyTime"]
    return out


def parse_int64(value, field: str) -> int:
    """An int64 in proto3 JSON: a number or a decimal string."""
    if isinstance(value, bool):
        raise ApiError("INVALID_ARGUMENT", f"Invalid value at '{field}': expected an int64.")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    raise ApiError("INVALID_ARGUMENT", f"Invalid value at '{field}': expected an int64.")


# --- the API ----------------------------------------------------------------


class Api:
    def __init__(self, store: Store):
        self.store = store

    # Helpers. Callers hold the store lock.

    def check_denied(self, secret_id: str, permission: str, resource: str) -> None:
        if secret_id in self.store.denied:
            raise ApiError(
                "PERMISSION_DENIED",
                f"Permission '{permission}' denied for resource '{resource}' (or it may not exist).",
            )

    def secret(self, project: str, secret_id: str) -> dict:
        name = f"projects/{project}/secrets/{secret_id}"
        rec = self.store.secrets.get(name)
        if rec is None:
            raise ApiError("NOT_FOUND", f"Secret [{name}] not found.")
        return rec

    def version(self, rec: dict, version_id: str) -> dict:
        versions = rec["versions"]
        if version_id == "latest":
            if not versions:
                raise ApiError("NOT_FOUND", f'Secret [{rec["name"]}] not found or has no versions.')
            return versions[-1]
        if version_id.isdigit():
            n = int(version_id)
        else:
            aliases = rec["fields"].get("versionAliases") or {}
            if version_id not in aliases:
                raise ApiError(
                    "NOT_FOUND", f'Secret Version [{rec["name"]}/versions/{version_id}] not found.'
                )
            n = int(aliases[version_id])
        for v in versions:
            if v["number"] == n:
                return v
        raise ApiError("NOT_FOUND", f'Secret Version [{rec["name"]}/versions/{version_id}] not found.')

    @staticmethod
    def check_etag(given, current: str) -> None:
        if given not in (None, "") and given != current:
            raise ApiError("FAILED_PRECONDITION", "The etag provided in the request does not match the current etag.")

    @staticmethod
    def take_fields(body: dict, allowed: set[str]) -> dict:
        out = {}
        for k, v in body.items():
            k = camel(k)
            if k in allowed:
                out[k] = v
        return out

    # Secrets.

    def create_secret(self, project: str, query: dict, body: dict) -> dict:
        secret_id = query.get("secretId", [""])[0]
        if not secret_id:
            raise ApiError("INVALID_ARGUMENT", "secret_id is required.")
        if not SECRET_ID_RE.match(secret_id):
            raise ApiError(
                "INVALID_ARGUMENT",
                "secret_id must be 1 to 255 characters of letters, digits, '-' and '_'.",
            )
        self.check_denied(secret_id, "secretmanager.secrets.create", f"projects/{project}")
        name = f"projects/{project}/secrets/{secret_id}"
        if name in self.store.secrets:
            raise ApiError("ALREADY_EXISTS", f"Secret [{name}] already exists.")
        replication = body.get("replication")
        if not isinstance(replication, dict) or not (
            "automatic" in replication or "userManaged" in replication or "user_managed" in replication
        ):
            raise ApiError("INVALID_ARGUMENT", "Secret.replication is required.")
        fields = self.take_fields(body, MUTABLE_SECRET_FIELDS | CREATE_ONLY_SECRET_FIELDS)
        rec = {
            "name": name,
            "createTime": now_rfc3339(),
            "etag": self.store.next_etag(),
            "fields": fields,
            "versions": [],
        }
        self.store.secrets[name] = rec
        self.store.save()
        return render_secret(rec)

    def get_secret(self, project: str, secret_id: str) -> dict:
        self.check_denied(secret_id, "secretmanager.secrets.get", f"projects/{project}/secrets/{secret_id}")
        return render_secret(self.secret(project, secret_id))

    def list_secrets(self, project: str, query: dict) -> dict:
        secrets = [r for n, r in sorted(self.store.secrets.items()) if n.startswith(f"projects/{project}/secrets/")]
        flt = query.get("filter", [""])[0].strip()
        if flt:
            m_name = re.fullmatch(r"name:(\S+)", flt)
            m_label = re.fullmatch(r"labels\.([\w-]+)=(\S*)", flt)
            if m_name:
                secrets = [r for r in secrets if m_name.group(1) in r["name"]]
            elif m_label:
                k, v = m_label.groups()
                secrets = [r for r in secrets if (r["fields"].get("labels") or {}).get(k) == v]
            else:
                raise ApiError("INVALID_ARGUMENT", "The fake supports only `name:X` and `labels.K=V` filters.")
        page, token = paginate(secrets, query)
        out = {"secrets": [render_secret(r) for r in page], "totalSize": len(secrets)}
        if token:
            out["nextPageToken"] = token
        return out

    def patch_secret(self, project: str, secret_id: str, query: dict, body: dict) -> dict:
        self.check_denied(secret_id, "secretmanager.secrets.update", f"projects/{project}/secrets/{secret_id}")
        rec = self.secret(project, secret_id)
        mask = query.get("updateMask", [""])[0]
        if not mask:
            raise ApiError("INVALID_ARGUMENT", "update_mask is required.")
        paths = [camel(p.strip()) for p in mask.split(",") if p.strip()]
        for p in paths:
            if p not in MUTABLE_SECRET_FIELDS:
                raise ApiError("INVALID_ARGUMENT", f"The update_mask path '{p}' is not supported or not mutable.")
        self.check_etag(body.get("etag"), rec["etag"])
        new_fields = self.take_fields(body, MUTABLE_SECRET_FIELDS)
        for p in paths:
            if p in new_fields:
                rec["fields"][p] = new_fields[p]
            else:
                rec["fields"].pop(p, None)
        rec["etag"] = self.store.next_etag()
        self.store.save()
        return render_secret(rec)

    def delete_secret(self, project: str, secret_id: str, query: dict) -> dict:
        self.check_denied(secret_id, "secretmanager.secrets.delete", f"projects/{project}/secrets/{secret_id}")
        rec = self.secret(project, secret_id)
        self.check_etag(query.get("etag", [None])[0], rec["etag"])
        del self.store.secrets[rec["name"]]
        self.store.save()
        return {}

    # Versions.

    def add_version(self, project: str, secret_id: str, body: dict, int_enums: bool) -> dict:
        self.check_denied(secret_id, "secretmanager.versions.add", f"projects/{project}/secrets/{secret_id}")
        rec = self.secret(project, secret_id)
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise ApiError("INVALID_ARGUMENT", "payload is required.")
        try:
            data = base64.b64decode(payload.get("data", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ApiError("INVALID_ARGUMENT", "Invalid value at 'payload.data': not valid base64.") from None
        if len(data) > 64 * 1024:
            raise ApiError("INVALID_ARGUMENT", "Secret payload data must be no larger than 64KiB.")
        given = payload.get("dataCrc32c", payload.get("data_crc32c"))
        checksum = crc32c(data)
        if given is not None:
            if parse_int64(given, "payload.data_crc32c") != checksum:
                raise ApiError(
                    "INVALID_ARGUMENT",
                    "Checksum mismatch: the data_crc32c provided does not match the checksum of the payload data.",
                )
        number = rec["versions"][-1]["number"] + 1 if rec["versions"] else 1
        v = {
            "number": number,
            "createTime": now_rfc3339(),
            "state": "ENABLED",
            "etag": self.store.next_etag(),
            "data": base64.b64encode(data).decode("ascii"),
            "crc32c": checksum,
            "clientSpecifiedPayloadChecksum": given is not None,
        }
        rec["versions"].append(v)
        self.store.save()
        return render_version(rec, v, int_enums)

    def list_versions(self, project: str, secret_id: str, query: dict, int_enums: bool) -> dict:
        self.check_denied(secret_id, "secretmanager.versions.list", f"projects/{project}/secrets/{secret_id}")
        rec = self.secret(project, secret_id)
        versions = list(reversed(rec["versions"]))  # newest first, as Google lists them
        flt = query.get("filter", [""])[0].strip()
        if flt:
            m = re.fullmatch(r"state\s*[:=]\s*(ENABLED|DISABLED|DESTROYED)", flt)
            if not m:
                raise ApiError("INVALID_ARGUMENT", "The fake supports only `state:X` filters on versions.")
            versions = [v for v in versions if v["state"] == m.group(1)]
        page, token = paginate(versions, query)
        out = {"versions": [render_version(rec, v, int_enums) for v in page], "totalSize": len(versions)}
        if token:
            out["nextPageToken"] = token
        return out

    def get_version(self, project: str, secret_id: str, version_id: str, int_enums: bool) -> dict:
        self.check_denied(
            secret_id, "secretmanager.versions.get", f"projects/{project}/secrets/{secret_id}/versions/{version_id}"
        )
        rec = self.secret(project, secret_id)
        return render_version(rec, self.version(rec, version_id), int_enums)

    def access_version(self, project: str, secret_id: str, version_id: str) -> dict:
        self.check_denied(
            secret_id, "secretmanager.versions.access", f"projects/{project}/secrets/{secret_id}/versions/{version_id}"
        )
        rec = self.secret(project, secret_id)
        v = self.version(rec, version_id)
        name = f'{rec["name"]}/versions/{v["number"]}'
        if v["state"] != "ENABLED":
            raise ApiError("FAILED_PRECONDITION", f'Secret Version [{name}] is in {v["state"]} state.')
        return {"name": name, "payload": {"data": v["data"], "dataCrc32c": str(v["crc32c"])}}

    def change_version(self, project: str, secret_id: str, version_id: str, verb: str, body: dict, int_enums: bool):
        self.check_denied(
            secret_id, f"secretmanager.versions.{verb}", f"projects/{project}/secrets/{secret_id}/versions/{version_id}"
        )
        rec = self.secret(project, secret_id)
        v = self.version(rec, version_id)
        self.check_etag(body.get("etag"), v["etag"])
        name = f'{rec["name"]}/versions/{v["number"]}'
        if v["state"] == "DESTROYED":
            raise ApiError("FAILED_PRECONDITION", f"Secret Version [{name}] is in DESTROYED state.")
        if verb == "enable":
            v["state"] = "ENABLED"
        elif verb == "disable":
            v["state"] = "DISABLED"
        else:
            v["state"] = "DESTROYED"
            v["destroyTime"] = now_rfc3339()
            v["data"] = ""  # the data is gone, also from the state file
            v["crc32c"] = 0
        v["etag"] = self.store.next_etag()
        self.store.save()
        return render_version(rec, v, int_enums)


def paginate(items: list, query: dict) -> tuple[list, str]:
    try:
        size = int(query.get("pageSize", ["0"])[0] or 0)
        start = int(query.get("pageToken", ["0"])[0] or 0)
    except ValueError:
        raise ApiError("INVALID_ARGUMENT", "Invalid pageSize or pageToken.") from None
    if size < 0 or start < 0:
        raise ApiError("INVALID_ARGUMENT", "Invalid pageSize or pageToken.")
    if size == 0:
        size = 25000
    page = items[start : start + size]
    token = str(start + size) if start + size < len(items) else ""
    return page, token


SEG = r"([^/:]+)"
ROUTES = [
    # (method, regex over the path, handler name)
    ("POST", rf"^/v1/projects/{SEG}/secrets$", "create_secret"),
    ("GET", rf"^/v1/projects/{SEG}/secrets$", "list_secrets"),
    ("GET", rf"^/v1/projects/{SEG}/secrets/{SEG}$", "get_secret"),
    ("PATCH", rf"^/v1/projects/{SEG}/secrets/{SEG}$", "patch_secret"),
    ("DELETE", rf"^/v1/projects/{SEG}/secrets/{SEG}$", "delete_secret"),
    ("POST", rf"^/v1/projects/{SEG}/secrets/{SEG}:addVersion$", "add_version"),
    ("GET", rf"^/v1/projects/{SEG}/secrets/{SEG}/versions$", "list_versions"),
    ("GET", rf"^/v1/projects/{SEG}/secrets/{SEG}/versions/{SEG}$", "get_version"),
    ("GET", rf"^/v1/projects/{SEG}/secrets/{SEG}/versions/{SEG}:access$", "access_version"),
    ("POST", rf"^/v1/projects/{SEG}/secrets/{SEG}/versions/{SEG}:(enable|disable|destroy)$", "change_version"),
]
ROUTES = [(m, re.compile(p), h) for m, p, h in ROUTES]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gcp-secretmanager-fake/1"
    api: Api  # set on the class by main()
    request_log: list
    log_lock = threading.Lock()

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        # Paths and codes only; never bodies (they carry payloads).
        if os.environ.get("GCP_FAKE_VERBOSE"):
            sys.stderr.write("gcp_fake: %s\n" % (format % args))

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, obj) -> None:
        data = json.dumps(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            raw = self.read_body()
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise ApiError("INVALID_ARGUMENT", "Invalid JSON payload received.") from None
            if not isinstance(body, dict):
                raise ApiError("INVALID_ARGUMENT", "Invalid JSON payload received: expected an object.")
            if path.startswith("/__fake/"):
                status, obj = self.control(method, path, body)
            else:
                status, obj = 200, self.route(method, path, query, body)
        except ApiError as e:
            status, obj = e.code, e.body()
        except Exception as e:  # a bug in the fake: say so, without request data
            status = 500
            obj = ApiError("INTERNAL", f"fake internal error: {type(e).__name__}").body()
        with self.log_lock:
            if len(self.request_log) >= 10000:  # bounded, for long test runs
                del self.request_log[:1000]
            self.request_log.append(
                {
                    "method": method,
                    "path": path,
                    "authorization": "Authorization" in self.headers,
                    "status": status,
                }
            )
        self.send_json(status, obj)

    def route(self, method: str, path: str, query: dict, body: dict):
        alt = ";".join(query.get("$alt", []) + query.get("alt", []))
        int_enums = "enum-encoding=int" in alt
        api = self.api
        for m, rx, handler in ROUTES:
            match = rx.match(path)
            if not match:
                continue
            if m != method:
                continue
            g = match.groups()
            with api.store.lock:
                if handler == "create_secret":
                    return api.create_secret(g[0], query, body)
                if handler == "list_secrets":
                    return api.list_secrets(g[0], query)
                if handler == "get_secret":
                    return api.get_secret(g[0], g[1])
                if handler == "patch_secret":
                    return api.patch_secret(g[0], g[1], query, body)
                if handler == "delete_secret":
                    return api.delete_secret(g[0], g[1], query)
                if handler == "add_version":
                    return api.add_version(g[0], g[1], body, int_enums)
                if handler == "list_versions":
                    return api.list_versions(g[0], g[1], query, int_enums)
                if handler == "get_version":
                    return api.get_version(g[0], g[1], g[2], int_enums)
                if handler == "access_version":
                    return api.access_version(g[0], g[1], g[2])
                if handler == "change_version":
                    return api.change_version(g[0], g[1], g[2], g[3], body, int_enums)
        raise ApiError("NOT_FOUND", f"Method not found: {method} {path}")

    def control(self, method: str, path: str, body: dict):
        store = self.api.store
        if method == "POST" and path == "/__fake/deny":
            secret = body.get("secret")
            if not isinstance(secret, str) or not secret:
                raise ApiError("INVALID_ARGUMENT", "`secret` (a secret id) is required.")
            with store.lock:
                if body.get("deny", True):
                    store.denied.add(secret)
                else:
                    store.denied.discard(secret)
            return 200, {"secret": secret, "deny": secret in store.denied}
        if method == "GET" and path == "/__fake/requests":
            with self.log_lock:
                return 200, list(self.request_log)
        if method == "POST" and path == "/__fake/reset":
            with store.lock:
                store.reset()
            with self.log_lock:
                self.request_log.clear()
            return 200, {}
        raise ApiError("NOT_FOUND", f"No fake control endpoint {method} {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Fake GCP Secret Manager v1 REST API for tests.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--state", help="persist state to this JSON file and load it at start")
    args = parser.parse_args(argv)

    Handler.api = Api(Store(args.state))
    Handler.request_log = []
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"PORT={server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
