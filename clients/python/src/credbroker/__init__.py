"""credbroker: Python client of the credbroker daemon.

    import credbroker
    broker = credbroker.Broker("/run/credbroker/broker.sock")
    client = credbroker.twilio_client(broker, "twilio-verify")   # a twilio.rest.Client

``Broker`` speaks gRPC to the daemon's Unix socket (get, watch, list,
validate_webhook, mint_access_token). ``twilio_client``, ``BrokerClient``,
``BrokerTokenManager`` and ``RequestValidator`` build on twilio-python and
import it on first use, so ``Broker`` works without twilio installed.
"""

from .broker import DEFAULT_SOCKET, Broker, channel_options
from .errors import (
    BrokerError,
    CredentialNotFound,
    CredentialUnavailable,
    FailedPrecondition,
    InvalidRequest,
    PermissionDenied,
    ResourceExhausted,
)
from .types import AccessToken, Credential, CredentialInfo, PreviousCredential, WebhookResult

__version__ = "0.1.0"

__all__ = [
    "AccessToken", "Broker", "BrokerClient", "BrokerError", "BrokerTokenManager", "Credential",
    "CredentialInfo", "CredentialNotFound", "CredentialUnavailable", "DEFAULT_SOCKET", "FailedPrecondition",
    "InvalidRequest", "PermissionDenied", "PreviousCredential", "RequestValidator", "ResourceExhausted",
    "WebhookResult", "channel_options", "twilio_client",
]

_LAZY = {
    "twilio_client": "._twilio",
    "BrokerClient": "._twilio",
    "BrokerTokenManager": "._twilio",
    "RequestValidator": ".webhook",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'credbroker' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
