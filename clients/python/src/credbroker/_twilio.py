"""twilio-python (9.13) clients whose credential comes from the broker.

``twilio_client(broker, name, **client_kwargs)`` returns a real
``twilio.rest.Client`` (a subclass, ``BrokerClient``): the SDK builds every
request itself; only the credential it authenticates with is the broker's
current one, so a rotation needs no restart of the app.

* ``auth_token`` and ``api_key`` credentials: a background thread holds a
  WatchCredential stream (one per Broker and credential name) and swaps the
  lease in as one reference; ``username``, ``password``, ``auth`` and
  ``account_sid`` of the client read that lease, and each request takes one
  lease for all of them (never a username of one value with the password of
  another). ``BrokerClient.request`` overrides ``ClientBase.request`` only to
  pass that lease's (username, password) as the request's ``auth``; if
  Twilio answers 401 with code 20003 while the lease carries ``previous``
  (a rotation's grace window), the request is sent once more with the other
  value, and the value that worked is tried first for the rest of that
  version.
* ``oauth_client`` credentials: twilio-python's own extension point,
  ``ClientCredentialProvider(client_id, client_secret, token_manager=…)``,
  with ``BrokerTokenManager``, whose ``fetch_access_token()`` returns the
  broker's current bearer token. The client id and secret are held by the
  broker only, so the provider gets placeholders (it needs non-None values
  and uses them only to build its default token manager, which is replaced
  here). twilio-python's TokenAuthStrategy caches a token until its JWT
  ``exp`` has passed; ``BrokerClient.request`` replaces that cached token
  with the newer one whenever the broker has pushed one (the broker
  refreshes at two thirds of a token's life), so requests never go out with
  a token about to expire, and retries once with a newer token on 401/20003.
"""

import json

from twilio.credential.client_credential_provider import ClientCredentialProvider
from twilio.http.token_manager import TokenManager
from twilio.rest import Client

from . import errors
from .types import API_KEY, AUTH_TOKEN, OAUTH_CLIENT

# Placeholders for ClientCredentialProvider: the app never holds the OAuth
# app's id or secret (only the broker does), and the provider only uses them
# to build its own token manager, which BrokerTokenManager replaces.
PLACEHOLDER_CLIENT_ID = "credbroker-held"
PLACEHOLDER_CLIENT_SECRET = "credbroker-held"

_RESERVED = ("username", "password", "account_sid", "credential_provider")


def _refused_credential(response):
    """True for Twilio's 401 with code 20003 ("Authenticate")."""
    if response is None or response.status_code != 401:
        return False
    try:
        return json.loads(response.text or "{}").get("code") == 20003
    except (ValueError, AttributeError):
        return False


class BrokerTokenManager(TokenManager):
    """A twilio-python TokenManager whose tokens are the broker's bearer
    tokens for ``oauth_client`` credential ``name`` (kept fresh by a watch)."""

    def __init__(self, broker, name):
        self.name = name
        self._feed = broker._feed(name)
        if self._feed.current().kind != OAUTH_CLIENT:
            raise errors.FailedPrecondition(
                f"credential {name!r}: BrokerTokenManager needs an oauth_client credential, "
                f"not {self._feed.current().kind}", credential=name)

    def fetch_access_token(self, version=None):
        return self._feed.current().access_token

    def __repr__(self):
        return f"BrokerTokenManager(name={self.name!r})"


def _read_only(attr):
    def get(self):
        cred = self._credbroker_feed.current()
        auth = cred.basic_auth
        if attr == "account_sid":
            return cred.account_sid
        if auth is None:
            return None
        return {"username": auth[0], "password": auth[1], "auth": auth}[attr]

    def set_(self, value):
        # ClientBase.__init__ assigns these; afterwards they follow the broker.
        if getattr(self, "_credbroker_ready", False):
            raise AttributeError(f"BrokerClient.{attr} follows the broker's credential and cannot be set")

    return property(get, set_, doc=f"The broker's current {attr} (read at each access).")


class BrokerClient(Client):
    """A twilio.rest.Client authenticated by the broker's current credential.
    Build it with ``credbroker.twilio_client``."""

    username = _read_only("username")
    password = _read_only("password")
    auth = _read_only("auth")
    account_sid = _read_only("account_sid")

    def __init__(self, feed, **client_kwargs):
        self._credbroker_feed = feed
        self._credbroker_ready = False
        self.credbroker_name = feed.name
        super().__init__(**client_kwargs)
        self._credbroker_ready = True

    def __repr__(self):
        return f"<Twilio {self.account_sid} via credbroker {self.credbroker_name!r}>"

    def request(self, method, uri, params=None, data=None, headers=None, auth=None, timeout=None,
                allow_redirects=False):
        if auth is not None:  # the caller chose its own credential
            return super().request(method, uri, params=params, data=data, headers=headers, auth=auth,
                                   timeout=timeout, allow_redirects=allow_redirects)
        feed = self._credbroker_feed
        cred = feed.current()

        def send(with_auth):
            return super(BrokerClient, self).request(
                method, uri, params=params, data=data, headers=dict(headers or {}), auth=with_auth,
                timeout=timeout, allow_redirects=allow_redirects)

        if cred.kind == OAUTH_CLIENT:
            strategy = self.credential_provider.to_auth_strategy()
            if strategy.token is not None and strategy.token != cred.access_token:
                # The broker has pushed a newer token: hand it to the strategy
                # (one assignment, so a thread between its fetch_token() and
                # its header sees the old token or the new one, both valid).
                strategy.token = cred.access_token
            response = send(None)
            if _refused_credential(response):
                fresh = feed.refresh()
                if fresh.access_token and fresh.access_token != cred.access_token:
                    strategy.token = fresh.access_token
                    response = send(None)
            return response

        if cred.kind not in (AUTH_TOKEN, API_KEY):
            raise errors.FailedPrecondition(
                f"credential {feed.name!r}: a {cred.kind} credential cannot authenticate Twilio requests",
                credential=feed.name)
        order = feed.basic_auth_order(cred)
        response = send(order[0])
        if len(order) > 1 and _refused_credential(response):
            retry = send(order[1])
            if not _refused_credential(retry):
                feed.worked(cred, order[1])
            return retry
        if len(order) > 1 and response.status_code != 401:
            feed.worked(cred, order[0])
        return response


def twilio_client(broker, name, **client_kwargs):
    """A ``twilio.rest.Client`` that always authenticates with the broker's
    current credential ``name`` (kinds ``auth_token``, ``api_key``,
    ``oauth_client``). ``client_kwargs`` go to ``twilio.rest.Client``
    (``http_client``, ``region``, ``edge``, ``user_agent_extensions``, ...),
    except the credential itself (``username``, ``password``,
    ``account_sid``, ``credential_provider``).

    Raises a BrokerError at once if the credential cannot be read.
    """
    bad = [k for k in _RESERVED if k in client_kwargs]
    if bad:
        raise TypeError(f"twilio_client: {', '.join(bad)} come from the broker; do not pass them")
    feed = broker._feed(name)
    cred = feed.current()
    if cred.kind == OAUTH_CLIENT:
        provider = ClientCredentialProvider(
            PLACEHOLDER_CLIENT_ID, PLACEHOLDER_CLIENT_SECRET, token_manager=BrokerTokenManager(broker, name))
        return BrokerClient(feed, credential_provider=provider, **client_kwargs)
    if cred.kind in (AUTH_TOKEN, API_KEY):
        return BrokerClient(feed, **client_kwargs)
    raise errors.FailedPrecondition(
        f"credential {name!r}: kind {cred.kind!r} cannot authenticate a Twilio client", credential=name)
