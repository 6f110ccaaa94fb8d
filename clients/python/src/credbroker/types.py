"""What the broker hands out, as plain Python objects.

Secrets are readable as attributes (``auth_token``, ``api_key_secret``,
``access_token``) but never shown: ``repr()`` and ``str()`` print
``<redacted>`` in their place. Timestamps are timezone-aware UTC datetimes
(None when the broker left them unset).
"""

import datetime

REDACTED = "<redacted>"

# Credential.kind, as ListCredentials spells kinds.
AUTH_TOKEN = "auth_token"
API_KEY = "api_key"
OAUTH_CLIENT = "oauth_client"


def _time(ts):
    """A google.protobuf.Timestamp as an aware UTC datetime, or None if unset."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return datetime.datetime.fromtimestamp(ts.seconds, tz=datetime.timezone.utc) + datetime.timedelta(
        microseconds=ts.nanos // 1000
    )


def _iso(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


class _Secretful:
    """Shared by Credential and PreviousCredential: one secret of one kind."""

    __slots__ = ("account_sid", "kind", "auth_token", "api_key_sid", "api_key_secret")

    def _load_secret(self, msg, account_sid):
        self.account_sid = account_sid
        self.auth_token = self.api_key_sid = self.api_key_secret = None
        which = msg.WhichOneof("secret")
        if which == "auth_token":
            self.kind = AUTH_TOKEN
            self.auth_token = msg.auth_token.token
        elif which == "api_key":
            self.kind = API_KEY
            self.api_key_sid = msg.api_key.sid
            self.api_key_secret = msg.api_key.secret
        elif which == "bearer":
            self.kind = OAUTH_CLIENT
        else:
            self.kind = None
        return which

    @property
    def basic_auth(self):
        """(username, password) for HTTP Basic auth at Twilio: (Account SID,
        Auth Token) or (API Key SID, API Key Secret); None for other kinds."""
        if self.kind == AUTH_TOKEN:
            return (self.account_sid, self.auth_token)
        if self.kind == API_KEY:
            return (self.api_key_sid, self.api_key_secret)
        return None

    def _secret_repr(self):
        parts = [f"kind={self.kind!r}"]
        if self.kind == AUTH_TOKEN:
            parts.append(f"auth_token={REDACTED}")
        elif self.kind == API_KEY:
            # The API Key SID names the key; it is not a secret.
            parts += [f"api_key_sid={self.api_key_sid!r}", f"api_key_secret={REDACTED}"]
        return parts


class PreviousCredential(_Secretful):
    """The value a rotation is replacing, served during its grace window."""

    __slots__ = ("version", "retire_at")

    @classmethod
    def _from_proto(cls, msg, account_sid):
        self = cls()
        self._load_secret(msg, account_sid)
        self.version = msg.version
        self.retire_at = _time(msg.retire_at)
        return self

    def __repr__(self):
        parts = self._secret_repr() + [f"version={self.version!r}", f"retire_at={_iso(self.retire_at)!r}"]
        return f"PreviousCredential({', '.join(parts)})"

    __str__ = __repr__


class Credential(_Secretful):
    """One lease of credential ``name``: valid until ``expires_at``.

    kind ``auth_token``: ``account_sid``, ``auth_token``;
    kind ``api_key``: ``account_sid``, ``api_key_sid``, ``api_key_secret``;
    kind ``oauth_client``: ``account_sid``, ``access_token`` (a bearer JWT)
    and ``access_token_expires_at``.
    ``previous`` is a PreviousCredential during a rotation's grace window.
    """

    __slots__ = (
        "name", "version", "issued_at", "expires_at", "stale", "stale_since", "previous",
        "access_token", "access_token_expires_at",
    )

    @classmethod
    def _from_proto(cls, msg):
        self = cls()
        self.name = msg.name
        which = self._load_secret(msg, msg.account_sid)
        self.access_token = self.access_token_expires_at = None
        if which == "bearer":
            self.access_token = msg.bearer.access_token
            self.access_token_expires_at = _time(msg.bearer.expires_at)
        self.version = msg.version
        self.issued_at = _time(msg.issued_at)
        self.expires_at = _time(msg.expires_at)
        self.stale = msg.stale
        self.stale_since = _time(msg.stale_since) if msg.stale else None
        self.previous = (
            PreviousCredential._from_proto(msg.previous, msg.account_sid) if msg.HasField("previous") else None
        )
        return self

    def expired(self, now=None):
        """True once the lease has ended (refetch, or rely on a watch)."""
        return self.expires_at is not None and (now or _now()) >= self.expires_at

    def __repr__(self):
        parts = [f"name={self.name!r}", f"account_sid={self.account_sid!r}"] + self._secret_repr()
        if self.kind == OAUTH_CLIENT:
            parts += [f"access_token={REDACTED}",
                      f"access_token_expires_at={_iso(self.access_token_expires_at)!r}"]
        parts += [f"version={self.version!r}", f"expires_at={_iso(self.expires_at)!r}", f"stale={self.stale!r}"]
        if self.previous is not None:
            parts.append(f"previous={self.previous!r}")
        return f"Credential({', '.join(parts)})"

    __str__ = __repr__


class CredentialInfo:
    """A name and kind from ``Broker.list()`` (no secret)."""

    __slots__ = ("name", "kind")

    def __init__(self, name, kind):
        self.name = name
        self.kind = kind

    def __eq__(self, other):
        return isinstance(other, CredentialInfo) and (self.name, self.kind) == (other.name, other.kind)

    def __hash__(self):
        return hash((self.name, self.kind))

    def __repr__(self):
        return f"CredentialInfo(name={self.name!r}, kind={self.kind!r})"


class WebhookResult:
    """The broker's verdict on an X-Twilio-Signature. Truthy when valid;
    ``matched`` is "current", "previous" (a rotation's grace window) or ""."""

    __slots__ = ("valid", "matched")

    def __init__(self, valid, matched):
        self.valid = bool(valid)
        self.matched = matched

    def __bool__(self):
        return self.valid

    def __repr__(self):
        return f"WebhookResult(valid={self.valid!r}, matched={self.matched!r})"


class AccessToken:
    """A Twilio Access Token (a JWT) minted by the broker: ``token`` (a
    bearer credential, redacted in repr) and ``expires_at``."""

    __slots__ = ("token", "expires_at")

    def __init__(self, token, expires_at):
        self.token = token
        self.expires_at = expires_at

    def __repr__(self):
        return f"AccessToken(token={REDACTED}, expires_at={_iso(self.expires_at)!r})"

    __str__ = __repr__
