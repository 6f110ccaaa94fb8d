"""Webhook signature checks without the Auth Token in the app."""

import logging
from hashlib import sha256

from .types import WebhookResult

log = logging.getLogger("credbroker")

HMAC_SHA1 = "HMAC_SHA1"


class RequestValidator:
    """A drop-in for ``twilio.request_validator.RequestValidator`` whose
    checks are made by the broker (ValidateWebhook), so the app never holds
    the Auth Token: ``RequestValidator(broker, name)`` instead of
    ``RequestValidator(auth_token)``.

    ``validate(uri, params, signature)`` takes what twilio-python's takes:
    ``params`` is the form POST parameters (dict, Flask MultiDict, Django
    QueryDict), or for a JSON webhook the raw body as a string (the URL then
    carries ``bodySHA256``). The broker tries the current Auth Token, then
    the previous one during a rotation's grace window
    (``validate_result(...).matched`` says which).

    Only Auth Token signatures (HMAC-SHA1) are the broker's to check: with
    ``algorithm="HMAC_SHA256"`` (webhooks signed with a SharedKey, which the
    broker does not hold) ``validate`` logs a warning and returns False.
    A broker that cannot be asked raises a BrokerError (answer 503 so that
    Twilio retries, rather than 403).
    """

    def __init__(self, broker, name):
        self.broker = broker
        self.name = name

    def __repr__(self):
        return f"RequestValidator(credential={self.name!r})"

    def validate_result(self, uri, params, signature):
        """The broker's WebhookResult (``valid``, ``matched``)."""
        if not signature:
            # A request without the header: invalid, as twilio-python answers
            # (the broker refuses the call itself as INVALID_ARGUMENT).
            return WebhookResult(False, "")
        if params is None:
            params = {}
        if isinstance(params, (str, bytes)):
            return self.broker.validate_webhook(self.name, uri, None, signature, body=params)
        return self.broker.validate_webhook(self.name, uri, params, signature)

    def validate(self, uri, params, signature, algorithm=None):
        """True if ``signature`` (the X-Twilio-Signature header) is valid
        for this request, as twilio-python's RequestValidator.validate."""
        if (algorithm or HMAC_SHA1).upper() != HMAC_SHA1:
            log.warning("credbroker: webhook signature algorithm %r is not an Auth Token's (HMAC_SHA1); "
                        "the broker cannot check it", algorithm)
            return False
        return self.validate_result(uri, params, signature).valid

    def compute_hash(self, body):
        """SHA-256 of a JSON webhook's body, hex (what ``bodySHA256`` holds)."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        return sha256(body).hexdigest()

    def get_values(self, param_dict, param_name):
        """As twilio-python's: the values of a parameter (MultiDict, QueryDict, dict)."""
        try:
            return param_dict.getall(param_name)
        except AttributeError:
            try:
                return param_dict.getlist(param_name)
            except AttributeError:
                return [param_dict[param_name]]
