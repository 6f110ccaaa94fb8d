#!/usr/bin/env python3
"""A stateful fake of the parts of Twilio's REST API that credbroker uses.

Python 3.11 standard library only. Response bodies follow Twilio's OpenAPI
documents (twilio-oai: twilio_api_v2010.json, twilio_iam_v1.json,
twilio_accounts_v1.json, twilio_verify_v2.json) field for field, and the
tests run it behind `prism proxy --errors` (tests/support/prism.sh) so any
drift from the spec fails the request. One fake serves every Twilio host:

  api.twilio.com       GET  /2010-04-01/Accounts/{AccountSid}.json              (Auth Token, Main key)
                       GET  /2010-04-01/Accounts/{AccountSid}/Messages.json     (paged; none sent here)
                       GET  /2010-04-01/Accounts/{AccountSid}/Calls.json        (paged; none made here)
                       GET  /2010-04-01/Accounts/{AccountSid}/Keys.json     (paged)
                       POST /2010-04-01/Accounts/{AccountSid}/Keys.json     FriendlyName
                       GET|POST|DELETE /2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json
  iam.twilio.com       GET  /v1/Keys?AccountSid=AC..                        (paged)
                       POST /v1/Keys   AccountSid, FriendlyName, KeyType=restricted, Policy
                       GET|POST|DELETE /v1/Keys/{Sid}                       (POST: FriendlyName, Policy)
  accounts.twilio.com  POST|DELETE /v1/AuthTokens/Secondary
                       POST /v1/AuthTokens/Promote
  verify.twilio.com    POST /v2/Services/{ServiceSid}/Verifications         To, Channel
  oauth.twilio.com     POST /v2/token   grant_type=client_credentials, client_id,
                                        client_secret (twilio-python 9.13's
                                        ClientTokenManager; 200, as RFC 6749 §5.1)
                       POST /v1/token   GrantType, ClientId, ClientSecret
                                        (twilio_oauth_v1.json; 201)

Twilio's conventions kept here:
* HTTP Basic auth on every API route. Username: an Account SID (password its
  primary Auth Token, or its secondary while one exists) or an API Key SID
  (password its secret). Anything else is 401 {"code": 20003, "message":
  "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003",
  "status": 401}.
* Key types, always enforced (Twilio's "API keys" docs; there is no
  lenient mode): "main" (seeded only, as Twilio creates them only in the
  Console) may do everything an Auth Token may; "standard" keys, what
  POST /v1/Keys and the 2010 Keys create, may do everything except the
  Account resource (/Accounts/{sid}.json), the Keys endpoints (both APIs)
  and Auth Tokens: those answer 401 20003, as Twilio answers a Standard key
  on /Accounts or Keys; "restricted" keys may do only what their Policy
  allows ({"allow": ["/twilio/messaging/messages/read"]}), anything else
  401 70051 (Twilio's restricted-key refusal).
* Propagation: a key or secondary Auth Token created while a delay is set
  (POST /__fake/propagation) answers 401 20003 until that delay has passed
  since its creation, as a credential just made at Twilio may.
* OAuth 2.0 client credentials: an OAuth app (client_id "OQ" + 32 hex,
  client_secret, its account) exchanges its id and secret at the token
  endpoints (no Basic auth) for a bearer token: a JWT (HS256, signed with a
  key of this fake's own) whose payload has iss, sub (the client id),
  account_sid, iat, exp (now + the token lifetime, 3600 s unless set) and a
  jti. The answer is {"access_token", "refresh_token": null, "id_token":
  null, "token_type": "Bearer", "expires_in"} (the oauth.v1.token schema).
  A wrong or unknown client answers 401 20003, another grant_type 400.
  `Authorization: Bearer <token>` is accepted on every API route until the
  token's exp (not one second later), for the app's account, with what a
  Standard key may do (not the Account resource, Keys or Auth Tokens: 401
  20003). The strict reading: Twilio does not document OAuth tokens on
  those routes. A token stays valid until exp when the app's secret
  changes, as a signed JWT does.
* Request bodies are application/x-www-form-urlencoded; a body of another
  type is ignored, as Twilio does (so required parameters are missing).
* Errors are {"code", "message", "more_info", "status"}; 404 is 20404
  "The requested resource /path was not found".
* Dates: RFC 2822 ("Mon, 13 Jun 2016 22:50:08 +0000") where the spec says
  date-time-rfc-2822 (2010 API and iam /v1/Keys); ISO 8601
  ("2015-07-31T04:00:00Z") where it says date-time (accounts v1, verify v2).
* Key SIDs "SK" + 32 hex; secrets 32 alphanumerics, returned only by the
  create call; Auth Tokens 32 hex.

Usage:
  twilio_fake.py [--port 0] [--host 127.0.0.1] [--state FILE] [--seed FILE]
                 [--absolute-uris]

  --port 0 picks a free port; the first stdout line is PORT=<n> (flushed).
  --state FILE: loaded at start, rewritten (mode 0600, atomically) after every
    change, so a killed and restarted fake keeps accounts, keys, tokens and
    services. Counters and injected failures are not persisted.
  --seed FILE: JSON {"accounts": [{"sid", "auth_token", "friendly_name"?}],
    "keys": [{"account_sid", "sid", "secret", "friendly_name"?, "type"?,
    "policy"?}], "services": [{"sid", "account_sid", "friendly_name"?}],
    "oauth_apps": [{"account_sid", "client_id", "client_secret"}]};
    entries already in the state are kept as they are.
  The 2010 list envelope's uri/first_page_uri/previous_page_uri/
    next_page_uri are relative ("/2010-04-01/..."), as Twilio sends them
    (its paging docs show them so; the OpenAPI document says `format: uri`,
    which tests/support/prism.sh relaxes to uri-reference for those four
    fields only). --absolute-uris sends "https://api.twilio.com/..." instead.
    Clients take only path and query from these and join them to their
    configured base URL.

Nothing secret is ever printed: the request log on stderr has method, path,
status and the username (a SID) only.

Test hooks (no auth), under /__fake/:
  POST /__fake/accounts {"sid", "auth_token"?, "friendly_name"?}
       seed (or replace) an account; a missing auth_token is generated and
       returned in the answer {"sid", "auth_token"}
  POST /__fake/keys {"account_sid", "sid"?, "secret"?, "friendly_name"?,
       "type": "main"|"standard"|"restricted" (default main), "policy"?}
       seed a key; the answer has sid and secret
  POST /__fake/services {"sid"?, "account_sid", "friendly_name"?}
       seed a Verify service (VA...); the answer has its sid
  POST /__fake/oauth_apps {"account_sid", "client_id"?, "client_secret"?}
       seed (or replace: a new secret) an OAuth app; the answer has
       client_id and client_secret
  POST /__fake/oauth {"ttl": N}
       bearer tokens issued from now on live N seconds (default 3600)
  GET  /__fake/state   accounts (sid, friendly_name, status, has_secondary),
       keys (sid, account_sid, friendly_name, type, policy, dates), services,
       verifications, counters; never a secret
  GET  /__fake/requests  the last 1000 API requests: method, path, route,
       status, username (SID) — never a password
  POST /__fake/propagation {"seconds": N}
       keys and secondary Auth Tokens created from now on answer 401 20003
       for N seconds after their creation (0: at once, the default);
       -1: never (a credential that never starts working);
       "release": true also makes every credential still waiting work now
  POST /__fake/keys {"count": N, "account_sid", "friendly_name"?, "type"?}
       with "count": seed N keys at once (for paging tests)
  POST /__fake/check {"username", "password"} -> {"valid": bool,
       "type": "auth_token_primary"|"auth_token_secondary"|"main"|
       "standard"|"restricted"|null}
  POST /__fake/fail {"path_prefix", "status", "count", "method"?, "code"?,
       "message"?, "retry_after"?, "after"?}
       the next `count` API requests whose path starts with path_prefix
       (and whose method is `method`, if given) answer `status` with Twilio's
       error JSON (429 20429, 500 20500, 503 20503, 401 20003, ...);
       with "after": true the request is carried out first and only its
       answer is lost (a key created whose answer never arrives);
       count 0 removes the rules for that prefix
  POST /__fake/delay {"path_prefix", "seconds", "count", "method"?}
       the next `count` API requests whose path starts with path_prefix
       wait `seconds` before they are carried out (a slow Twilio; a large
       `seconds`, an answer that never comes); other requests are served
       meanwhile, and GET /__fake/state counts those waiting
       ("requests_held")
  POST /__fake/corrupt {"path_prefix", "count", "method"?, "status"?,
       "set"?: {field: value}, "drop"?: [field]}
       break the next `count` successful JSON answers (to prove that Prism
       catches a response that violates the spec)
  POST /__fake/reset   forget everything (accounts, keys, services, tokens,
       counters, failures); rewrites the state file
  POST /__fake/reset-counters
"""

from __future__ import annotations

import argparse
import base64
import copy
import email.utils
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

API_BASE = "https://api.twilio.com"
IAM_BASE = "https://iam.twilio.com"
ACCOUNTS_BASE = "https://accounts.twilio.com"
VERIFY_BASE = "https://verify.twilio.com"

ACCOUNT_SID_RE = re.compile(r"^AC[0-9a-fA-F]{32}$")
KEY_SID_RE = re.compile(r"^SK[0-9a-fA-F]{32}$")
SERVICE_SID_RE = re.compile(r"^VA[0-9a-fA-F]{32}$")
CLIENT_ID_RE = re.compile(r"^OQ[0-9a-fA-F]{32}$")
OAUTH_ISSUER = "https://oauth.twilio.com"
E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")

KEY_TYPES = ("main", "standard", "restricted")
MAX_FRIENDLY_NAME = 64  # "It can be up to 64 characters long." (iam v1 spec)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

# Restricted-key permission of each route a restricted key may ever use.
# Key, Auth Token and Account routes have none: only Auth Tokens and Main
# keys may use them.
PERM_VERIFICATION_CREATE = "/twilio/verify/services/verifications/create"
PERM_MESSAGES_READ = "/twilio/messaging/messages/read"
PERM_CALLS_READ = "/twilio/voice/calls/read"

ERROR_TEXT = {
    400: (20001, "Bad Request"),
    401: (20003, "Authenticate"),
    403: (20403, "Forbidden"),
    404: (20404, "Not Found"),
    405: (20004, "Method not allowed"),
    409: (20409, "Conflict"),
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    502: (20502, "Bad Gateway"),
    503: (20503, "Service Unavailable"),
    504: (20504, "Gateway Timeout"),
}


# ---------------------------------------------------------------- helpers

def rfc2822(ts: float) -> str:
    """Twilio's 2010-style date: 'Mon, 13 Jun 2016 22:50:08 +0000'."""
    return email.utils.formatdate(int(ts), usegmt=False).replace("-0000", "+0000")


def iso8601(ts: float) -> str:
    """Twilio's v1/v2 date: '2015-07-31T04:00:00Z'."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def new_auth_token() -> str:
    return secrets.token_hex(16)


def new_key_secret() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def same(a: str, b: str | None) -> bool:
    if b is None:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


class TwilioError(Exception):
    """An answer in Twilio's error JSON."""

    def __init__(self, status: int, code: int | None = None, message: str | None = None):
        super().__init__(status)
        dcode, dmsg = ERROR_TEXT.get(status, (20500 if status >= 500 else 20001, "Error"))
        self.status = status
        self.code = code if code is not None else dcode
        self.message = message if message is not None else dmsg

    def body(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


def not_found(path: str) -> TwilioError:
    return TwilioError(404, 20404, f"The requested resource {path} was not found")


def unauthorized() -> TwilioError:
    return TwilioError(401, 20003, "Authenticate")


def outside_policy() -> TwilioError:
    return TwilioError(401, 70051, "Authorization Error: the API key's policy does not allow this request")


def missing_param(name: str) -> TwilioError:
    return TwilioError(400, 20001, f"Missing required parameter {name} in the post body")


def invalid_param(name: str, code: int = 20001) -> TwilioError:
    return TwilioError(400, code, f"Invalid parameter: {name}")


class FakeError(Exception):
    """An answer of the test hooks: {"error": msg}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------- state

class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.held = 0  # requests waiting out a delay right now (kept by reset)
        self.clear()
        if args.state and os.path.exists(args.state):
            self.load()
        if args.seed:
            with open(args.seed, encoding="utf-8") as f:
                self.apply_seed(json.load(f))
            self.save()

    def clear(self):
        self.accounts: dict[str, dict] = {}
        self.keys: dict[str, dict] = {}  # insertion order = creation order
        self.services: dict[str, dict] = {}
        self.verifications: dict[str, dict] = {}
        self.oauth_apps: dict[str, dict] = {}  # client_id -> app
        self.oauth_ttl = 3600
        self.tokens_issued = 0
        # Signs this fake's bearer tokens; a restart (or reset) voids them.
        self.jwt_key = secrets.token_bytes(32)
        self.failures: list[dict] = []
        self.delays: list[dict] = []
        self.corruptions: list[dict] = []
        # seconds a credential created from now on takes to start working;
        # None: never
        self.propagation: float | None = 0.0
        self.reset_counters()

    def reset_counters(self):
        self.counters: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.total = 0

    # -- persistence: secrets go to the state file (mode 0600) only
    def load(self):
        with open(self.args.state, encoding="utf-8") as f:
            doc = json.load(f)
        self.accounts = doc.get("accounts", {})
        self.keys = doc.get("keys", {})
        self.services = doc.get("services", {})
        self.verifications = doc.get("verifications", {})
        self.oauth_apps = doc.get("oauth_apps", {})

    def save(self):
        if not self.args.state:
            return
        doc = {
            "accounts": self.accounts,
            "keys": self.keys,
            "services": self.services,
            "verifications": self.verifications,
            "oauth_apps": self.oauth_apps,
        }
        d = os.path.dirname(os.path.abspath(self.args.state))
        fd, tmp = tempfile.mkstemp(prefix=".twilio-fake-", dir=d)
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

    def apply_seed(self, doc: dict):
        for a in doc.get("accounts", []):
            if a.get("sid") not in self.accounts:
                self.add_account(a)
        for k in doc.get("keys", []):
            if k.get("sid") not in self.keys:
                self.add_key(k)
        for s in doc.get("services", []):
            if s.get("sid") not in self.services:
                self.add_service(s)
        for o in doc.get("oauth_apps", []):
            if o.get("client_id") not in self.oauth_apps:
                self.add_oauth_app(o)

    # -- seeding (test hooks and --seed)
    def add_account(self, a: dict) -> dict:
        sid = a.get("sid")
        if not isinstance(sid, str) or not ACCOUNT_SID_RE.match(sid):
            raise FakeError(400, "sid must be AC + 32 hex digits")
        token = a.get("auth_token") or new_auth_token()
        if not isinstance(token, str):
            raise FakeError(400, "auth_token must be a string")
        now = time.time()
        self.accounts[sid] = {
            "sid": sid,
            "auth_token": token,
            "secondary_auth_token": None,
            "secondary_created": None,
            "friendly_name": a.get("friendly_name") or f"{sid[:8]}'s account",
            "status": a.get("status", "active"),
            "type": a.get("type", "Full"),
            "created": now,
            "updated": now,
        }
        return {"sid": sid, "auth_token": token}

    def add_key(self, k: dict) -> dict:
        acc = k.get("account_sid")
        if acc not in self.accounts:
            raise FakeError(400, "account_sid must name a seeded account")
        sid = k.get("sid") or new_sid("SK")
        if not isinstance(sid, str) or not KEY_SID_RE.match(sid):
            raise FakeError(400, "sid must be SK + 32 hex digits")
        secret = k.get("secret") or new_key_secret()
        ktype = k.get("type", "main")
        if ktype not in KEY_TYPES:
            raise FakeError(400, f"type must be one of {', '.join(KEY_TYPES)}")
        policy = k.get("policy")
        if ktype == "restricted":
            if isinstance(policy, str):
                policy = json.loads(policy)
            if not valid_policy(policy):
                raise FakeError(400, 'a restricted key needs a policy {"allow": [...]}')
        else:
            policy = None
        now = time.time()
        self.keys[sid] = {
            "sid": sid,
            "account_sid": acc,
            "secret": secret,
            "friendly_name": k.get("friendly_name", ""),
            "type": ktype,
            "policy": policy,
            "created": now,
            "updated": now,
            "valid_from": self.valid_from(now) if k.get("propagates") else now,
        }
        return {"sid": sid, "secret": secret}

    def valid_from(self, now: float) -> float:
        """When a credential created now starts working (inf: never)."""
        return float("inf") if self.propagation is None else now + self.propagation

    @staticmethod
    def working(valid_from) -> bool:
        return valid_from is None or time.time() >= valid_from

    def add_service(self, s: dict) -> dict:
        acc = s.get("account_sid")
        if acc not in self.accounts:
            raise FakeError(400, "account_sid must name a seeded account")
        sid = s.get("sid") or new_sid("VA")
        if not isinstance(sid, str) or not SERVICE_SID_RE.match(sid):
            raise FakeError(400, "sid must be VA + 32 hex digits")
        self.services[sid] = {
            "sid": sid,
            "account_sid": acc,
            "friendly_name": s.get("friendly_name", "credbroker test service"),
        }
        return {"sid": sid}

    def add_oauth_app(self, o: dict) -> dict:
        acc = o.get("account_sid")
        if acc not in self.accounts:
            raise FakeError(400, "account_sid must name a seeded account")
        client_id = o.get("client_id") or new_sid("OQ")
        if not isinstance(client_id, str) or not CLIENT_ID_RE.match(client_id):
            raise FakeError(400, "client_id must be OQ + 32 hex digits")
        secret = o.get("client_secret") or new_key_secret()
        if not isinstance(secret, str) or not secret:
            raise FakeError(400, "client_secret must be a non-empty string")
        self.oauth_apps[client_id] = {
            "client_id": client_id, "account_sid": acc, "client_secret": secret,
        }
        return {"client_id": client_id, "client_secret": secret}

    # -- OAuth bearer tokens
    def issue_token(self, app: dict) -> dict:
        now = int(time.time())
        header = {"alg": "HS256", "typ": "JWT"}
        payload = {
            "iss": OAUTH_ISSUER, "sub": app["client_id"], "account_sid": app["account_sid"],
            "iat": now, "exp": now + int(self.oauth_ttl), "jti": secrets.token_hex(16),
        }
        signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
            b64url(json.dumps(payload, separators=(",", ":")).encode())
        sig = hmac.new(self.jwt_key, signing_input.encode(), "sha256").digest()
        self.tokens_issued += 1
        return {
            "access_token": signing_input + "." + b64url(sig),
            "refresh_token": None,
            "id_token": None,
            "token_type": "Bearer",
            "expires_in": int(self.oauth_ttl),
        }

    def bearer_principal(self, token: str) -> dict | None:
        """The principal of a bearer token this fake issued, until its exp."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(self.jwt_key, (parts[0] + "." + parts[1]).encode(), "sha256").digest()
        try:
            if not hmac.compare_digest(b64url(expected), parts[2]):
                return None
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
            return None
        # Valid up to exp, not at it (RFC 7519: "on or after" exp is refused).
        if time.time() >= payload["exp"]:
            return None
        app = self.oauth_apps.get(payload.get("sub"))
        acc = self.accounts.get(payload.get("account_sid"))
        if not app or not acc or acc["status"] != "active":
            return None
        return {"account_sid": acc["sid"], "sid": app["client_id"], "type": "oauth"}

    # -- authentication
    def authenticate(self, username: str, password: str) -> dict | None:
        """The principal for a Basic credential, or None."""
        if username.startswith("AC"):
            acc = self.accounts.get(username)
            if not acc or acc["status"] != "active":
                return None
            if same(password, acc["auth_token"]):
                return {"account_sid": username, "sid": username, "type": "auth_token_primary"}
            if same(password, acc["secondary_auth_token"]) and self.working(
                    acc.get("secondary_valid_from")):
                return {"account_sid": username, "sid": username, "type": "auth_token_secondary"}
            return None
        if username.startswith("SK"):
            key = self.keys.get(username)
            if not key or not same(password, key["secret"]) or not self.working(
                    key.get("valid_from")):
                return None
            acc = self.accounts.get(key["account_sid"])
            if not acc or acc["status"] != "active":
                return None
            return {
                "account_sid": key["account_sid"],
                "sid": username,
                "type": key["type"],
                "policy": key["policy"],
            }
        return None

    # -- views without secrets
    def public_state(self) -> dict:
        return {
            "accounts": [
                {
                    "sid": a["sid"],
                    "friendly_name": a["friendly_name"],
                    "status": a["status"],
                    "has_secondary": a["secondary_auth_token"] is not None,
                }
                for a in self.accounts.values()
            ],
            "keys": [
                {
                    "sid": k["sid"],
                    "account_sid": k["account_sid"],
                    "friendly_name": k["friendly_name"],
                    "type": k["type"],
                    "policy": k["policy"],
                    "date_created": iso8601(k["created"]),
                    "date_updated": iso8601(k["updated"]),
                }
                for k in self.keys.values()
            ],
            "services": list(self.services.values()),
            "verifications": len(self.verifications),
            "oauth_apps": [
                {"client_id": o["client_id"], "account_sid": o["account_sid"]}
                for o in self.oauth_apps.values()
            ],
            "oauth_ttl": self.oauth_ttl,
            "tokens_issued": self.tokens_issued,
            "counters": self.counters,
            "requests_total": self.total,
            "requests_held": self.held,
            "failures_pending": [
                {k: v for k, v in f.items()} for f in self.failures
            ],
        }


def valid_policy(policy) -> bool:
    return (
        isinstance(policy, dict)
        and isinstance(policy.get("allow"), list)
        and all(isinstance(p, str) for p in policy["allow"])
        and all(isinstance(p, str) for p in policy.get("deny", []) or [])
    )


# ------------------------------------------------------------------ routes

class Route:
    def __init__(self, method: str, template: str, handler, admin: bool, perm: str | None = None,
                 public: bool = False):
        self.method = method
        # public: no Authorization (the OAuth token endpoints).
        self.public = public
        self.template = template
        self.handler = handler
        # admin: only an Auth Token or a Main key may call it.
        self.admin = admin
        self.perm = perm
        pat = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+?)", re.escape(template))
        self.regex = re.compile("^" + pat + "$")


class Api:
    """The Twilio routes. Each handler gets (state, principal, params,
    form, path, query) and returns (status, body|None)."""

    def __init__(self, args):
        self.args = args
        R = Route
        self.routes = [
            # The Account resource: Auth Tokens and Main keys only.
            R("GET", "/2010-04-01/Accounts/{Sid}.json", self.fetch_account, admin=True),
            R("GET", "/2010-04-01/Accounts/{AccountSid}/Messages.json", self.list_messages,
              admin=False, perm=PERM_MESSAGES_READ),
            R("GET", "/2010-04-01/Accounts/{AccountSid}/Calls.json", self.list_calls,
              admin=False, perm=PERM_CALLS_READ),
            R("GET", "/2010-04-01/Accounts/{AccountSid}/Keys.json", self.list_keys_2010, admin=True),
            R("POST", "/2010-04-01/Accounts/{AccountSid}/Keys.json", self.create_key_2010, admin=True),
            R("GET", "/2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json", self.fetch_key_2010, admin=True),
            R("POST", "/2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json", self.update_key_2010, admin=True),
            R("DELETE", "/2010-04-01/Accounts/{AccountSid}/Keys/{Sid}.json", self.delete_key_2010, admin=True),
            R("GET", "/v1/Keys", self.list_keys_v1, admin=True),
            R("POST", "/v1/Keys", self.create_key_v1, admin=True),
            R("GET", "/v1/Keys/{Sid}", self.fetch_key_v1, admin=True),
            R("POST", "/v1/Keys/{Sid}", self.update_key_v1, admin=True),
            R("DELETE", "/v1/Keys/{Sid}", self.delete_key_v1, admin=True),
            R("POST", "/v1/AuthTokens/Secondary", self.create_secondary, admin=True),
            R("DELETE", "/v1/AuthTokens/Secondary", self.delete_secondary, admin=True),
            R("POST", "/v1/AuthTokens/Promote", self.promote, admin=True),
            R("POST", "/v2/Services/{ServiceSid}/Verifications", self.create_verification,
              admin=False, perm=PERM_VERIFICATION_CREATE),
            R("POST", "/v2/token", self.create_token_v2, admin=False, public=True),
            R("POST", "/v1/token", self.create_token_v1, admin=False, public=True),
        ]

    def match(self, method: str, path: str):
        """(route, params) or raises 404/405."""
        allowed = False
        for r in self.routes:
            m = r.regex.match(path)
            if m:
                if r.method == method:
                    return r, m.groupdict()
                allowed = True
        if allowed:
            raise TwilioError(405, 20004, "Method not allowed")
        raise not_found(path)

    @staticmethod
    def authorize(route: Route, principal: dict):
        t = principal["type"]
        if t in ("auth_token_primary", "auth_token_secondary", "main"):
            return
        if t == "restricted":
            allow = (principal.get("policy") or {}).get("allow", [])
            deny = (principal.get("policy") or {}).get("deny", []) or []
            if route.perm and route.perm in allow and route.perm not in deny:
                return
            raise outside_policy()
        # standard key (and OAuth bearer token): everything but the Account
        # resource, Keys and Auth Tokens
        if route.admin:
            raise unauthorized()

    # -- shared pieces
    @staticmethod
    def own_account(state: State, principal: dict, account_sid: str) -> dict:
        """The account a path names; a credential of another account is
        refused with 20003, as Twilio does."""
        if account_sid != principal["account_sid"]:
            raise unauthorized()
        return state.accounts[account_sid]

    @staticmethod
    def friendly_name(form: dict, default: str | None) -> str | None:
        if "FriendlyName" not in form:
            return default
        name = form["FriendlyName"]
        if len(name) > MAX_FRIENDLY_NAME:
            raise TwilioError(
                400, 20001,
                f"FriendlyName must be at most {MAX_FRIENDLY_NAME} characters long")
        return name

    @staticmethod
    def page_args(query: dict, items: list[dict]):
        """Twilio paging: PageSize (1..1000, default 50), Page (for client
        state), PageToken (PA + the last SID of the previous page, PB + the
        first SID of the next one)."""
        try:
            size = int(query.get("PageSize", DEFAULT_PAGE_SIZE))
            page = int(query.get("Page", 0))
        except ValueError:
            raise TwilioError(400, 20001, "Invalid paging parameters")
        if not 1 <= size <= MAX_PAGE_SIZE or page < 0:
            raise TwilioError(400, 20001, "Invalid paging parameters")
        token = query.get("PageToken")
        start = page * size
        if token:
            # PA<sid>: the page after that SID; PB<sid>: the page before it.
            if token[:2] not in ("PA", "PB"):
                raise TwilioError(400, 20001, "Invalid PageToken")
            sids = [i["sid"] for i in items]
            ref = token[2:]
            if token.startswith("PA"):
                start = sids.index(ref) + 1 if ref in sids else len(items)
            else:
                start = max(0, sids.index(ref) - size) if ref in sids else 0
        chunk = items[start:start + size]
        more = start + size < len(items)
        next_token = "PA" + chunk[-1]["sid"] if more and chunk else None
        return page, size, start, chunk, next_token

    # -- accounts
    def fetch_account(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["Sid"])
        sid = acc["sid"]
        base = f"/2010-04-01/Accounts/{sid}"
        subs = ["addresses", "conferences", "signing_keys", "transcriptions",
                "connect_apps", "sip", "authorized_connect_apps", "usage", "keys",
                "applications", "recordings", "short_codes", "calls", "notifications",
                "incoming_phone_numbers", "queues", "messages",
                "outgoing_caller_ids", "available_phone_numbers", "balance"]
        names = {
            "signing_keys": "SigningKeys", "connect_apps": "ConnectApps", "sip": "SIP",
            "authorized_connect_apps": "AuthorizedConnectApps",
            "short_codes": "SMS/ShortCodes",
            "incoming_phone_numbers": "IncomingPhoneNumbers",
            "outgoing_caller_ids": "OutgoingCallerIds",
            "available_phone_numbers": "AvailablePhoneNumbers",
        }
        body = {
            "auth_token": acc["auth_token"],
            "date_created": rfc2822(acc["created"]),
            "date_updated": rfc2822(acc["updated"]),
            "friendly_name": acc["friendly_name"],
            "owner_account_sid": sid,
            "sid": sid,
            "status": acc["status"],
            "subresource_uris": {
                s: f"{base}/{names.get(s, s.capitalize())}.json" for s in subs
            },
            "type": acc["type"],
            "uri": f"{base}.json",
        }
        return 200, body

    def empty_list_2010(self, key, path, query):
        """A 2010 list envelope with no items (this fake sends no messages
        and makes no calls): what a test read gets."""
        page, size, start, chunk, _ = self.page_args(query, [])
        base = API_BASE if self.args.absolute_uris else ""

        def uri(**kw):
            return f"{base}{path}?" + urlencode({"PageSize": size, **kw})

        return 200, {
            key: [],
            "end": 0,
            "first_page_uri": uri(Page=0),
            "next_page_uri": None,
            "page": page,
            "page_size": size,
            "previous_page_uri": None,
            "start": start,
            "uri": uri(Page=page),
        }

    def list_messages(self, state, principal, p, form, path, query):
        self.own_account(state, principal, p["AccountSid"])
        return self.empty_list_2010("messages", path, query)

    def list_calls(self, state, principal, p, form, path, query):
        self.own_account(state, principal, p["AccountSid"])
        return self.empty_list_2010("calls", path, query)

    # -- keys, 2010 API
    @staticmethod
    def key_2010(k: dict, secret: bool = False) -> dict:
        body = {
            "sid": k["sid"],
            "friendly_name": k["friendly_name"],
            "date_created": rfc2822(k["created"]),
            "date_updated": rfc2822(k["updated"]),
        }
        if secret:
            body["secret"] = k["secret"]
        return body

    def account_keys(self, state, account_sid):
        return [k for k in state.keys.values() if k["account_sid"] == account_sid]

    def find_key(self, state, account_sid, sid, path) -> dict:
        k = state.keys.get(sid)
        if not k or k["account_sid"] != account_sid:
            raise not_found(path)
        return k

    def list_keys_2010(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        items = self.account_keys(state, acc["sid"])
        page, size, start, chunk, next_token = self.page_args(query, items)
        base = API_BASE if self.args.absolute_uris else ""

        def uri(**kw):
            return f"{base}{path}?" + urlencode({"PageSize": size, **kw})

        body = {
            "keys": [self.key_2010(k) for k in chunk],
            "end": start + len(chunk) - 1 if chunk else 0,
            "first_page_uri": uri(Page=0),
            "next_page_uri": uri(Page=page + 1, PageToken=next_token) if next_token else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": (
                uri(Page=page - 1, PageToken="PB" + chunk[0]["sid"]) if page > 0 and chunk else None
            ),
            "start": start,
            "uri": uri(Page=page, **({"PageToken": query["PageToken"]} if query.get("PageToken") else {})),
        }
        return 200, body

    def create_key_2010(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        name = self.friendly_name(form, "")
        k = state.keys[state.add_key({"account_sid": acc["sid"], "type": "standard",
                                      "friendly_name": name, "propagates": True})["sid"]]
        return 201, self.key_2010(k, secret=True)

    def fetch_key_2010(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        return 200, self.key_2010(self.find_key(state, acc["sid"], p["Sid"], path))

    def update_key_2010(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        k = self.find_key(state, acc["sid"], p["Sid"], path)
        k["friendly_name"] = self.friendly_name(form, k["friendly_name"])
        k["updated"] = time.time()
        return 200, self.key_2010(k)

    def delete_key_2010(self, state, principal, p, form, path, query):
        acc = self.own_account(state, principal, p["AccountSid"])
        k = self.find_key(state, acc["sid"], p["Sid"], path)
        del state.keys[k["sid"]]
        return 204, None

    # -- keys, iam v1
    @staticmethod
    def key_v1(k: dict, secret: bool = False) -> dict:
        body = {
            "sid": k["sid"],
            "friendly_name": k["friendly_name"],
            "date_created": rfc2822(k["created"]),
            "date_updated": rfc2822(k["updated"]),
        }
        if secret:
            body["secret"] = k["secret"]
        body["policy"] = copy.deepcopy(k["policy"])
        return body

    def parse_policy(self, raw: str):
        try:
            policy = json.loads(raw)
        except ValueError:
            raise TwilioError(400, 20001, "Invalid Policy: not a JSON object")
        if not valid_policy(policy):
            raise TwilioError(400, 20001,
                              'Invalid Policy: expected {"allow": ["/twilio/..."]}')
        return policy

    def list_keys_v1(self, state, principal, p, form, path, query):
        account_sid = query.get("AccountSid")
        if not account_sid:
            raise TwilioError(400, 20001, "Missing required parameter AccountSid")
        acc = self.own_account(state, principal, account_sid)
        items = self.account_keys(state, acc["sid"])
        page, size, start, chunk, next_token = self.page_args(query, items)

        def url(**kw):
            return f"{IAM_BASE}{path}?" + urlencode({"AccountSid": acc["sid"], "PageSize": size, **kw})

        body = {
            "keys": [
                {
                    "sid": k["sid"],
                    "friendly_name": k["friendly_name"],
                    "date_created": rfc2822(k["created"]),
                    "date_updated": rfc2822(k["updated"]),
                }
                for k in chunk
            ],
            "meta": {
                "page": page,
                "page_size": size,
                "first_page_url": url(Page=0),
                "previous_page_url": (
                    url(Page=page - 1, PageToken="PB" + chunk[0]["sid"]) if page > 0 and chunk else None
                ),
                "url": url(Page=page, **({"PageToken": query["PageToken"]} if query.get("PageToken") else {})),
                "next_page_url": url(Page=page + 1, PageToken=next_token) if next_token else None,
                "key": "keys",
            },
        }
        return 200, body

    def create_key_v1(self, state, principal, p, form, path, query):
        account_sid = form.get("AccountSid")
        if not account_sid:
            raise missing_param("AccountSid")
        if not ACCOUNT_SID_RE.match(account_sid):
            raise invalid_param("AccountSid")
        acc = self.own_account(state, principal, account_sid)
        name = self.friendly_name(form, "")
        key_type = form.get("KeyType")
        if key_type not in (None, "restricted"):
            raise invalid_param("KeyType")
        policy = None
        if key_type == "restricted":
            if "Policy" not in form:
                raise TwilioError(400, 20001, "Policy is required for a restricted key")
            policy = self.parse_policy(form["Policy"])
        elif "Policy" in form:
            raise TwilioError(400, 20001, "Policy is only allowed with KeyType=restricted")
        sid = state.add_key({"account_sid": acc["sid"],
                             "type": "restricted" if policy is not None else "standard",
                             "friendly_name": name, "policy": policy,
                             "propagates": True})["sid"]
        return 201, self.key_v1(state.keys[sid], secret=True)

    def fetch_key_v1(self, state, principal, p, form, path, query):
        return 200, self.key_v1(self.find_key(state, principal["account_sid"], p["Sid"], path))

    def update_key_v1(self, state, principal, p, form, path, query):
        k = self.find_key(state, principal["account_sid"], p["Sid"], path)
        name = self.friendly_name(form, k["friendly_name"])
        if "Policy" in form:
            if k["type"] != "restricted":
                raise TwilioError(400, 20001, "Policy can only be set on a restricted key")
            k["policy"] = self.parse_policy(form["Policy"])
        k["friendly_name"] = name
        k["updated"] = time.time()
        return 200, self.key_v1(k)

    def delete_key_v1(self, state, principal, p, form, path, query):
        k = self.find_key(state, principal["account_sid"], p["Sid"], path)
        del state.keys[k["sid"]]
        return 204, None

    # -- auth tokens, accounts v1
    def create_secondary(self, state, principal, p, form, path, query):
        acc = state.accounts[principal["account_sid"]]
        if acc["secondary_auth_token"] is not None:
            raise TwilioError(400, 20001, "A secondary Auth Token already exists for this account")
        now = time.time()
        acc["secondary_auth_token"] = new_auth_token()
        acc["secondary_created"] = now
        acc["secondary_valid_from"] = state.valid_from(now)
        return 201, {
            "account_sid": acc["sid"],
            "date_created": iso8601(now),
            "date_updated": iso8601(now),
            "secondary_auth_token": acc["secondary_auth_token"],
            "url": f"{ACCOUNTS_BASE}/v1/AuthTokens/Secondary",
        }

    def delete_secondary(self, state, principal, p, form, path, query):
        acc = state.accounts[principal["account_sid"]]
        if acc["secondary_auth_token"] is None:
            raise not_found(path)
        acc["secondary_auth_token"] = None
        acc["secondary_created"] = None
        acc["secondary_valid_from"] = None
        return 204, None

    def promote(self, state, principal, p, form, path, query):
        acc = state.accounts[principal["account_sid"]]
        if acc["secondary_auth_token"] is None:
            raise TwilioError(400, 20001, "No secondary Auth Token to promote")
        now = time.time()
        created = acc["secondary_created"] or now
        acc["auth_token"] = acc["secondary_auth_token"]
        acc["secondary_auth_token"] = None
        acc["secondary_created"] = None
        acc["secondary_valid_from"] = None
        acc["updated"] = now
        return 200, {
            "account_sid": acc["sid"],
            "auth_token": acc["auth_token"],
            "date_created": iso8601(created),
            "date_updated": iso8601(now),
            "url": f"{ACCOUNTS_BASE}/v1/AuthTokens/Promote",
        }

    # -- verify v2
    def create_verification(self, state, principal, p, form, path, query):
        svc = state.services.get(p["ServiceSid"])
        if not svc or svc["account_sid"] != principal["account_sid"]:
            raise not_found(path)
        to = form.get("To")
        channel = form.get("Channel")
        if not to:
            raise missing_param("To")
        if not channel:
            raise missing_param("Channel")
        if channel == "auto":
            channel = "sms"
        if channel not in ("sms", "call", "email", "whatsapp", "sna"):
            raise TwilioError(400, 60200, "Invalid parameter `Channel`")
        if channel == "email":
            if "@" not in to:
                raise TwilioError(400, 60200, "Invalid parameter `To`")
        elif not E164_RE.match(to):
            raise TwilioError(400, 60200, "Invalid parameter `To`")
        now = time.time()
        sid = new_sid("VE")
        attempt_channel = channel.upper() if channel in ("sms", "call", "email") else channel
        v = {
            "sid": sid,
            "service_sid": svc["sid"],
            "account_sid": svc["account_sid"],
            "to": to,
            "channel": channel,
            "status": "pending",
            "valid": False,
            "date_created": iso8601(now),
            "date_updated": iso8601(now),
            "lookup": {},
            "amount": form.get("Amount"),
            "payee": form.get("Payee"),
            "send_code_attempts": [
                {"time": iso8601(now), "channel": attempt_channel, "attempt_sid": new_sid("VL")}
            ],
            "sna": None,
            "url": f"{VERIFY_BASE}/v2/Services/{svc['sid']}/Verifications/{sid}",
        }
        state.verifications[sid] = v
        return 201, copy.deepcopy(v)

    # -- OAuth token endpoints (no Authorization; the form carries the client)
    def create_token_v2(self, state, principal, p, form, path, query):
        return 200, token_grant(state, form.get("grant_type"), form.get("client_id"),
                                form.get("client_secret"),
                                ("grant_type", "client_id", "client_secret"))

    def create_token_v1(self, state, principal, p, form, path, query):
        return 201, token_grant(state, form.get("GrantType"), form.get("ClientId"),
                                form.get("ClientSecret"), ("GrantType", "ClientId", "ClientSecret"))


# ------------------------------------------------------------------- OAuth

def token_grant(state: State, grant_type, client_id, client_secret, names) -> dict:
    """The token answer for a client-credentials grant, or a TwilioError.
    `names` are the form fields' names as this endpoint spells them."""
    for value, name in zip((grant_type, client_id, client_secret), names):
        if not value:
            raise missing_param(name)
    if grant_type != "client_credentials":
        raise invalid_param(names[0])
    app = state.oauth_apps.get(client_id)
    if app is None or not same(client_secret, app["client_secret"]):
        raise TwilioError(401, 20003, "Authenticate: invalid client credentials")
    acc = state.accounts.get(app["account_sid"])
    if not acc or acc["status"] != "active":
        raise TwilioError(401, 20003, "Authenticate: invalid client credentials")
    return state.issue_token(app)




# ----------------------------------------------------------------- handler

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "twilio-fake/1.0"
    sys_version = ""

    # stderr log: method, path, status, username — never a secret
    def log_message(self, fmt, *args):  # noqa: D401 (silence the default log)
        pass

    def log(self, status: int, user: str | None):
        sys.stderr.write(f"twilio-fake: {self.command} {self.path} -> {status}"
                         f"{' (' + user + ')' if user else ''}\n")
        sys.stderr.flush()

    @property
    def state(self) -> State:
        return self.server.state  # type: ignore[attr-defined]

    @property
    def api(self) -> Api:
        return self.server.api  # type: ignore[attr-defined]

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    # -- plumbing
    def read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send_json(self, status: int, body, extra_headers: dict | None = None):
        if status == 204 or body is None:
            self.send_response(status)
            for k, v in (extra_headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def dispatch(self):
        split = urlsplit(self.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        raw = self.read_body()
        if path.startswith("/__fake/"):
            try:
                status, body = self.control(path, raw)
            except FakeError as e:
                status, body = e.status, {"error": e.message}
            except (ValueError, TypeError, KeyError) as e:
                status, body = 400, {"error": f"bad request: {type(e).__name__}"}
            self.send_json(status, body)
            self.log(status, None)
            return
        status, body, headers, user, route = self.twilio(path, query, raw)
        # Count before answering, so a test that reads /__fake/state right
        # after the answer sees this request.
        self.count(path, status, user, route)
        self.send_json(status, body, headers)
        self.log(status, user)

    def count(self, path, status, user, route):
        with self.state.lock:
            st = self.state
            st.total += 1
            name = f"{self.command} {route.template}" if route else f"{self.command} (unrouted)"
            c = st.counters.setdefault(name, {"count": 0, "status": {}, "usernames": {}})
            c["count"] += 1
            c["status"][str(status)] = c["status"].get(str(status), 0) + 1
            if user:
                c["usernames"][user] = c["usernames"].get(user, 0) + 1
            st.requests.append({"method": self.command, "path": path,
                                "route": route.template if route else None,
                                "status": status, "username": user, "time": time.time()})
            del st.requests[:-1000]

    def basic_auth(self) -> tuple[str, str] | None:
        h = self.headers.get("Authorization", "")
        scheme, _, token = h.partition(" ")
        if scheme.lower() != "basic" or not token:
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        user, sep, pw = decoded.partition(":")
        return (user, pw) if sep else None

    def bearer(self) -> str | None:
        h = self.headers.get("Authorization", "")
        scheme, _, token = h.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None

    def twilio(self, path, query, raw):
        """(status, body, headers, username, route) for an API request."""
        st = self.state
        wait = 0.0
        with st.lock:
            for d in st.delays:
                if path.startswith(d["path_prefix"]) and d.get("method") in (None, self.command):
                    d["count"] -= 1
                    if d["count"] <= 0:
                        st.delays.remove(d)
                    wait = d["seconds"]
                    break
        # Outside the lock: other requests go on meanwhile.
        if wait > 0:
            with st.lock:
                st.held += 1
            try:
                time.sleep(wait)
            finally:
                with st.lock:
                    st.held -= 1
        creds = self.basic_auth()
        bearer = self.bearer()
        user = creds[0] if creds and re.match(r"^(AC|SK)[0-9a-fA-F]{32}$", creds[0]) else None
        route = None
        with st.lock:
            try:
                try:
                    route, params = self.api.match(self.command, path)
                except TwilioError:
                    route, params = None, None
                fail = self.take_failure(path)
                if fail is not None and not fail[3]:
                    return fail[:3] + (user, route)
                if route is not None and route.public:
                    principal = None
                else:
                    if creds:
                        principal = st.authenticate(*creds)
                    elif bearer:
                        principal = st.bearer_principal(bearer)
                        # The log names the app (its client id), never the token.
                        user = principal["sid"] if principal else None
                    else:
                        principal = None
                    if principal is None:
                        raise unauthorized()
                    if route is None:
                        self.api.match(self.command, path)  # raises 404/405
                    Api.authorize(route, principal)
                form = self.parse_form(raw)
                status, body = route.handler(st, principal, params, form, path, query)
                if self.command != "GET" and 200 <= status < 300:
                    st.save()
                if fail is not None:
                    # Carried out; only the answer is lost.
                    return fail[:3] + (user, route)
                if body is not None and 200 <= status < 300:
                    status, body = self.apply_corruption(path, status, body)
                return status, body, None, user, route
            except TwilioError as e:
                return e.status, e.body(), None, user, route

    def parse_form(self, raw: bytes) -> dict:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not raw or ctype not in ("application/x-www-form-urlencoded", ""):
            return {}
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TwilioError(400, 20001, "Request body is not UTF-8")
        return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}

    def take_failure(self, path: str):
        for f in self.state.failures:
            if path.startswith(f["path_prefix"]) and f.get("method") in (None, self.command):
                f["count"] -= 1
                if f["count"] <= 0:
                    self.state.failures.remove(f)
                err = TwilioError(f["status"], f.get("code"), f.get("message"))
                headers = {}
                if f.get("retry_after") is not None:
                    headers["Retry-After"] = str(f["retry_after"])
                return err.status, err.body(), headers, bool(f.get("after"))
        return None

    def apply_corruption(self, path: str, status: int, body):
        for c in self.state.corruptions:
            if path.startswith(c["path_prefix"]) and c.get("method") in (None, self.command):
                c["count"] -= 1
                if c["count"] <= 0:
                    self.state.corruptions.remove(c)
                body = copy.deepcopy(body)
                for f in c.get("drop", []):
                    body.pop(f, None)
                body.update(c.get("set", {}))
                return c.get("status", status), body
        return status, body

    # -- test hooks
    def control(self, path: str, raw: bytes):
        st = self.state
        doc = json.loads(raw) if raw.strip() else {}
        if not isinstance(doc, dict):
            raise FakeError(400, "expected a JSON object")
        m = self.command
        with st.lock:
            if path == "/__fake/state" and m == "GET":
                return 200, st.public_state()
            if path == "/__fake/requests" and m == "GET":
                return 200, {"requests": list(st.requests)}
            if m != "POST":
                raise FakeError(405, "method not allowed")
            if path == "/__fake/accounts":
                out = st.add_account(doc)
                st.save()
                return 200, out
            if path == "/__fake/keys":
                if "count" in doc:
                    n = int(doc.pop("count"))
                    if not 1 <= n <= 5000:
                        raise FakeError(400, "count must be 1..5000")
                    out = {"sids": [st.add_key(dict(doc))["sid"] for _ in range(n)]}
                else:
                    out = st.add_key(doc)
                st.save()
                return 200, out
            if path == "/__fake/propagation":
                seconds = float(doc.get("seconds", 0))
                st.propagation = None if seconds < 0 else seconds
                if doc.get("release"):
                    now = time.time()
                    for k in st.keys.values():
                        if k.get("valid_from", 0) > now:
                            k["valid_from"] = now
                    for a in st.accounts.values():
                        if (a.get("secondary_valid_from") or 0) > now:
                            a["secondary_valid_from"] = now
                    st.save()
                return 200, {"propagation": seconds}
            if path == "/__fake/services":
                out = st.add_service(doc)
                st.save()
                return 200, out
            if path == "/__fake/oauth_apps":
                out = st.add_oauth_app(doc)
                st.save()
                return 200, out
            if path == "/__fake/oauth":
                ttl = int(doc.get("ttl", 3600))
                if not 1 <= ttl <= 86400:
                    raise FakeError(400, "ttl must be 1..86400 seconds")
                st.oauth_ttl = ttl
                return 200, {"ttl": ttl}
            if path == "/__fake/check":
                u, pw = doc.get("username"), doc.get("password")
                if not isinstance(u, str) or not isinstance(pw, str):
                    raise FakeError(400, "username and password must be strings")
                p = st.authenticate(u, pw)
                return 200, {"valid": p is not None, "type": p["type"] if p else None}
            if path == "/__fake/fail":
                prefix = doc.get("path_prefix")
                if not isinstance(prefix, str):
                    raise FakeError(400, "path_prefix must be a string")
                count = int(doc.get("count", 1))
                st.failures = [f for f in st.failures if f["path_prefix"] != prefix]
                if count > 0:
                    status = int(doc.get("status", 500))
                    st.failures.append({
                        "path_prefix": prefix, "status": status, "count": count,
                        "method": doc.get("method"), "code": doc.get("code"),
                        "message": doc.get("message"), "retry_after": doc.get("retry_after"),
                        "after": bool(doc.get("after")),
                    })
                return 200, {"failures": st.failures}
            if path == "/__fake/delay":
                prefix = doc.get("path_prefix")
                if not isinstance(prefix, str):
                    raise FakeError(400, "path_prefix must be a string")
                st.delays = [d for d in st.delays if d["path_prefix"] != prefix]
                count = int(doc.get("count", 1))
                if count > 0:
                    st.delays.append({"path_prefix": prefix, "count": count,
                                      "seconds": float(doc.get("seconds", 1)),
                                      "method": doc.get("method")})
                return 200, {"delays": st.delays}
            if path == "/__fake/corrupt":
                prefix = doc.get("path_prefix")
                if not isinstance(prefix, str):
                    raise FakeError(400, "path_prefix must be a string")
                st.corruptions.append({
                    "path_prefix": prefix, "count": int(doc.get("count", 1)),
                    "method": doc.get("method"), "set": doc.get("set", {}),
                    "drop": doc.get("drop", []),
                    **({"status": int(doc["status"])} if "status" in doc else {}),
                })
                return 200, {"corruptions": len(st.corruptions)}
            if path == "/__fake/reset":
                st.clear()
                st.save()
                return 200, {"reset": True}
            if path == "/__fake/reset-counters":
                st.reset_counters()
                return 200, {"reset": True}
        raise FakeError(404, f"no test hook {path}")


# -------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description="Stateful fake of Twilio's REST API (tests only)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--state", help="JSON file the state is kept in (loaded at start)")
    ap.add_argument("--seed", help="JSON file of accounts, keys and services to add at start")
    ap.add_argument("--absolute-uris", action="store_true",
                    help="absolute uri fields in 2010 list envelopes (Twilio sends relative ones)")
    return ap.parse_args(argv)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    server = Server((args.host, args.port), Handler)
    server.state = State(args)  # type: ignore[attr-defined]
    server.api = Api(args)  # type: ignore[attr-defined]
    server.args = args  # type: ignore[attr-defined]
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
