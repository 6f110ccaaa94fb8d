"""The exceptions the package raises.

Every message names the credential (or the call) and the broker's status
code; none ever holds a secret value. The broker's own messages name
credentials and never their values (DESIGN.md, "gRPC contract"); they are
cut to a bound before they are quoted here.
"""

import grpc

_MAX_DETAILS = 300


class BrokerError(Exception):
    """Base class: the broker refused a call or could not be reached.

    ``credential`` is the credential's name (None for calls that name none,
    such as ``list()``); ``code`` the gRPC status code's name (``"NOT_FOUND"``
    ...) or None when no call was made.
    """

    def __init__(self, message, credential=None, code=None):
        super().__init__(message)
        self.credential = credential
        self.code = code


class CredentialNotFound(BrokerError):
    """NOT_FOUND: the broker has no credential of that name."""


class PermissionDenied(BrokerError):
    """PERMISSION_DENIED: this process's uid/gid may not read the credential
    (the broker gives the same answer whether or not the name exists)."""


class CredentialUnavailable(BrokerError):
    """UNAVAILABLE (or DEADLINE_EXCEEDED): the broker is not running or not
    reachable on its socket, or the credential's store has been down for
    longer than ``max_stale``. Retry later."""


class InvalidRequest(BrokerError):
    """INVALID_ARGUMENT: the request itself was refused (an Access Token TTL
    too long, no identity, ...)."""


class FailedPrecondition(BrokerError):
    """FAILED_PRECONDITION: the call does not fit the credential's kind
    (webhooks need an Auth Token, Access Tokens an API key, watches a stored
    credential)."""


class ResourceExhausted(BrokerError):
    """RESOURCE_EXHAUSTED: e.g. too many live dynamic keys."""


_BY_CODE = {
    grpc.StatusCode.NOT_FOUND: CredentialNotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: CredentialUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: CredentialUnavailable,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def _cut(text):
    text = " ".join(str(text or "").split())
    return text if len(text) <= _MAX_DETAILS else text[: _MAX_DETAILS - 1] + "…"


def from_rpc_error(err, what, credential=None):
    """A BrokerError for grpc.RpcError `err` raised by call `what`
    (e.g. "get", "watch") on `credential`."""
    try:
        code = err.code()
        details = err.details()
    except Exception:  # not a call error (e.g. a channel closed under us)
        code, details = grpc.StatusCode.UNKNOWN, ""
    subject = f"credential {credential!r}" if credential is not None else "credbroker"
    message = f"{subject}: {what}: {code.name}: {_cut(details)}"
    if code == grpc.StatusCode.INTERNAL and "RST_STREAM" in (details or ""):
        message += (" (the broker resets streams whose :authority it cannot parse: "
                    "is grpc.default_authority set?)")
    cls = _BY_CODE.get(code, BrokerError)
    return cls(message, credential=credential, code=code.name)
