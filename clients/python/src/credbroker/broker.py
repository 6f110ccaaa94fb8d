"""The connection to the broker's Unix socket: ``Broker``."""

import logging
import os
import random
import threading

import grpc

from . import errors
from .types import AccessToken, Credential, CredentialInfo, WebhookResult, _now, _time
from .v1 import broker_pb2 as pb
from .v1 import broker_pb2_grpc as pb_grpc

log = logging.getLogger("credbroker")

DEFAULT_SOCKET = "/run/credbroker/broker.sock"

# Watch streams end with these when the broker shuts down, restarts or loses
# the credential's store past max_stale: reconnect.
_RECONNECT = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.ABORTED,
})


def channel_options(authority="localhost"):
    """The grpcio channel options the broker needs.

    ``grpc.default_authority`` is required: on a ``unix:`` target grpc-core
    sends the socket path, percent-encoded, as the HTTP/2 ``:authority``
    (``run%2Fcredbroker%2Fbroker.sock``). The broker's HTTP/2 stack (tonic
    over h2) does not accept that as an authority and resets every such
    stream (grpcio reports INTERNAL "Received RST_STREAM with error code 1").
    Any plain host name works: the broker identifies callers by their peer
    credentials (SO_PEERCRED uid/gid), not by the authority.

    The reconnect backoff is shortened from grpc-core's defaults (1 s growing
    to 120 s): a local socket is cheap to retry, and a restarted broker should
    be found within seconds.
    """
    options = [
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5000),
    ]
    if authority:
        options.append(("grpc.default_authority", authority))
    return options


def _form_pairs(params):
    """(key, value) pairs of form parameters given as a dict (str values, or
    lists of them), a Flask MultiDict / Django QueryDict, or pairs."""
    if params is None:
        return []
    if isinstance(params, (str, bytes)):
        raise TypeError("params: form parameters as a mapping or (key, value) pairs; a raw body goes in body=")
    pairs = []
    if hasattr(params, "keys"):
        for key in params.keys():
            if hasattr(params, "getall"):
                values = params.getall(key)
            elif hasattr(params, "getlist"):
                values = params.getlist(key)
            else:
                values = params[key]
                if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                    values = [values]
            pairs += [(key, v) for v in values]
    else:
        pairs = [(k, v) for k, v in params]
    return [pb.FormParam(key=str(k), value=v.decode() if isinstance(v, bytes) else str(v)) for k, v in pairs]


def _grant(cls, value, name):
    if value is None:
        return None
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**value)
    raise TypeError(f"{name}: a dict of the grant's fields, or a {cls.__name__}")


class Broker:
    """A client of the credbroker daemon on its Unix socket.

    ``socket_path`` defaults to ``$CREDBROKER_SOCKET``, else
    ``/run/credbroker/broker.sock``. ``timeout`` is the deadline of each
    unary call, in seconds. ``reconnect_backoff`` = (first, longest) wait in
    seconds between watch reconnects (doubling, jittered ±20%).
    ``authority`` is sent as ``grpc.default_authority`` (see
    ``channel_options``); leave it.

    Thread-safe: one Broker may serve every thread of a process. ``close()``
    (or a ``with`` block) ends its watches and its channel.
    """

    def __init__(self, socket_path=None, *, timeout=10.0, reconnect_backoff=(1.0, 30.0), authority="localhost"):
        path = socket_path or os.environ.get("CREDBROKER_SOCKET") or DEFAULT_SOCKET
        self.socket_path = os.path.abspath(path)
        self.timeout = timeout
        self._backoff = (float(reconnect_backoff[0]), float(reconnect_backoff[1]))
        self._channel = grpc.insecure_channel("unix:" + self.socket_path, options=channel_options(authority))
        self._stub = pb_grpc.CredentialBrokerStub(self._channel)
        self._lock = threading.Lock()
        self._calls = set()
        self._feeds = {}
        self._closed = threading.Event()

    def __repr__(self):
        return f"Broker(socket_path={self.socket_path!r})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def closed(self):
        return self._closed.is_set()

    def close(self):
        """Ends every watch (their iterators stop) and closes the channel."""
        self._closed.set()
        with self._lock:
            calls = list(self._calls)
            feeds = list(self._feeds.values())
        for call in calls:
            call.cancel()
        for feed in feeds:
            feed._stop()
        self._channel.close()

    def _check_open(self, name=None):
        if self._closed.is_set():
            subject = f"credential {name!r}" if name is not None else "credbroker"
            raise errors.BrokerError(f"{subject}: the Broker is closed", credential=name)

    # -- calls -------------------------------------------------------------

    def get(self, name, *, timeout=None):
        """The current lease of credential ``name`` (a Credential)."""
        self._check_open(name)
        try:
            msg = self._stub.GetCredential(pb.GetCredentialRequest(name=name), timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise errors.from_rpc_error(err, "get", name) from None
        return Credential._from_proto(msg)

    def list(self, *, timeout=None):
        """Names and kinds of the credentials this process may read."""
        self._check_open()
        try:
            msg = self._stub.ListCredentials(pb.ListCredentialsRequest(), timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise errors.from_rpc_error(err, "list") from None
        return [CredentialInfo(c.name, c.kind) for c in msg.credentials]

    def validate_webhook(self, credential, url, params=None, signature="", *, body=None, timeout=None):
        """Checks an ``X-Twilio-Signature`` with the Auth Token held by the
        broker (current, then previous during a rotation's grace window).

        ``url``: the full URL Twilio requested; ``params``: the form POST
        parameters (dict, MultiDict/QueryDict or (key, value) pairs);
        ``body``: the raw body of a JSON webhook (str or bytes; the URL then
        carries ``bodySHA256``); ``signature``: the header's value.
        Returns a WebhookResult (truthy when valid).
        """
        self._check_open(credential)
        if isinstance(body, str):
            body = body.encode("utf-8")
        req = pb.ValidateWebhookRequest(
            credential=credential, url=url, params=_form_pairs(params), body=body or b"", signature=signature or ""
        )
        try:
            msg = self._stub.ValidateWebhook(req, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise errors.from_rpc_error(err, "validate webhook", credential) from None
        return WebhookResult(msg.valid, msg.matched)

    def mint_access_token(self, credential, identity, ttl_seconds=0, *, voice=None, video=None, chat=None,
                          sync=None, timeout=None):
        """A Twilio Access Token signed by the broker with the API Key Secret
        of ``credential``. Grants are dicts of their proto fields:
        ``voice={"outgoing_application_sid": "AP…", "incoming_allow": True}``,
        ``video={"room": "…"}``, ``chat={"service_sid": "IS…"}``,
        ``sync={"service_sid": "IS…"}`` (``{}`` for a grant with no field set).
        ``ttl_seconds=0`` asks for the credential's ``max_ttl``.
        Returns an AccessToken (``token``, ``expires_at``)."""
        self._check_open(credential)
        req = pb.MintAccessTokenRequest(
            credential=credential, identity=identity, ttl_seconds=int(ttl_seconds),
            voice=_grant(pb.VoiceGrant, voice, "voice"), video=_grant(pb.VideoGrant, video, "video"),
            chat=_grant(pb.ChatGrant, chat, "chat"), sync=_grant(pb.SyncGrant, sync, "sync"),
        )
        try:
            msg = self._stub.MintAccessToken(req, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise errors.from_rpc_error(err, "mint access token", credential) from None
        return AccessToken(msg.token, _time(msg.expires_at))

    def watch(self, name, *, reconnect=True):
        """An iterator over credential ``name`` (a ``Watch``): the current
        lease at once, then one on every change (new version, stale flag,
        previous value added or dropped) and a renewed lease halfway through
        each lease.

        When the stream ends (the broker shuts down or restarts, the
        credential becomes unavailable) it reconnects with backoff and jitter
        (``reconnect_backoff``), logging a warning, and goes on; with
        ``reconnect=False`` it raises CredentialUnavailable instead. Refusals
        (NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION) are raised. It
        stops when ``close()`` is called on it (from any thread) or on the
        Broker.
        """
        return Watch(self, name, reconnect)

    def _watch(self, name, reconnect, stop):
        first, longest = self._backoff
        delay = first

        def stopped():
            return self._closed.is_set() or stop.is_set()

        while not stopped():
            call = self._stub.WatchCredential(pb.WatchCredentialRequest(name=name))
            with self._lock:
                self._calls.add(call)
            stop.call = call
            if stopped():
                call.cancel()
            try:
                for msg in call:
                    delay = first
                    yield Credential._from_proto(msg)
                reason = "the stream ended"
            except grpc.RpcError as err:
                if stopped():
                    return
                if err.code() not in _RECONNECT or not reconnect:
                    raise errors.from_rpc_error(err, "watch", name) from None
                reason = f"{err.code().name}"
            finally:
                call.cancel()
                stop.call = None
                with self._lock:
                    self._calls.discard(call)
            if stopped():
                return
            if not reconnect:
                raise errors.CredentialUnavailable(f"credential {name!r}: watch: {reason}", credential=name,
                                                   code="UNAVAILABLE")
            wait = delay * random.uniform(0.8, 1.2)
            log.warning("credbroker: watch of credential %r: %s; reconnecting in %.1fs", name, reason, wait)
            if stop.wait(wait) or self._closed.is_set():
                return
            delay = min(delay * 2, longest)

    # -- shared watches ----------------------------------------------------

    def _feed(self, name):
        """The one _Feed of credential ``name`` for this Broker (started on
        first use: a GetCredential, then a background watch)."""
        with self._lock:
            feed = self._feeds.get(name)
        if feed is not None:
            return feed
        feed = _Feed(self, name)  # the first get() raises here, outside the lock
        with self._lock:
            existing = self._feeds.setdefault(name, feed)
        if existing is not feed:
            feed._stop()
            return existing
        feed._start()
        return feed


class _StopFlag(threading.Event):
    call = None


class Watch:
    """The iterator ``Broker.watch`` returns. ``close()`` ends it from any
    thread: the iteration in progress stops (StopIteration) without error."""

    def __init__(self, broker, name, reconnect):
        self.name = name
        self._stop = _StopFlag()
        self._gen = broker._watch(name, reconnect, self._stop)

    def __repr__(self):
        return f"Watch(name={self.name!r})"

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._gen)

    def close(self):
        self._stop.set()
        call = self._stop.call
        if call is not None:
            call.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Feed:
    """The latest lease of one credential, kept by a background thread
    holding a WatchCredential stream. Readers take ``current()``: one
    reference to an immutable Credential, so a swap is atomic for them.

    Thread model: one daemon thread per (Broker, credential name), named
    ``credbroker-watch-NAME``; it only receives and swaps. Readers never wait
    on it unless the lease they hold has ended, when ``current()`` asks the
    broker itself (GetCredential) before answering.
    """

    def __init__(self, broker, name):
        self.broker = broker
        self.name = name
        self._cred = broker.get(name)
        self._watched = True  # False: a credential that cannot be watched (dynamic keys)
        self._prefer_previous = None  # the version whose previous value worked when current did not
        self._stopped = threading.Event()
        self._watch = None
        self._thread = threading.Thread(target=self._run, name=f"credbroker-watch-{name}", daemon=True)

    def _start(self):
        self._thread.start()

    def _stop(self):
        self._stopped.set()
        watch = self._watch
        if watch is not None:
            watch.close()

    def _set(self, cred):
        self._cred = cred  # one reference: readers see the old lease or the new one

    def _run(self):
        first, longest = self.broker._backoff
        while not self._stopped.is_set() and not self.broker.closed:
            try:
                self._watch = self.broker.watch(self.name)
                if self._stopped.is_set():
                    return
                for cred in self._watch:
                    self._set(cred)
                return  # stopped, or the broker was closed
            except errors.FailedPrecondition:
                # Not watchable: a dynamic_api_key is minted per call.
                # current() asks the broker again past half of each lease.
                self._watched = False
                log.info("credbroker: credential %r cannot be watched; refetched as its leases age", self.name)
                return
            except errors.BrokerError as err:
                # A refusal (the credential removed from the config, the
                # allow list changed): keep the lease held until it ends.
                log.warning("credbroker: %s; the watch retries in %.0fs", err, longest)
                if self._stopped.wait(longest * random.uniform(0.8, 1.2)):
                    return
            except Exception:
                log.exception("credbroker: the watch of credential %r failed; retrying", self.name)
                if self._stopped.wait(first):
                    return

    def _aged(self, cred):
        """An unwatched lease past half its life: the broker serves a
        dynamic key until half its TTL, then a new one."""
        if self._watched or cred.expires_at is None or cred.issued_at is None:
            return False
        return _now() >= cred.issued_at + (cred.expires_at - cred.issued_at) / 2

    def current(self):
        """The latest lease; a fresh one from the broker if it has ended
        (or, for an unwatched credential, is past half its life)."""
        cred = self._cred
        if not cred.expired() and not self._aged(cred):
            return cred
        if not cred.expired():
            try:
                return self.refresh()
            except errors.BrokerError:
                return cred  # still valid: try again on the next request
        try:
            fresh = self.broker.get(self.name)
        except errors.BrokerError as err:
            raise errors.CredentialUnavailable(
                f"credential {self.name!r}: the lease ended at "
                f"{cred.expires_at:%Y-%m-%dT%H:%M:%SZ} and could not be renewed ({err.code})",
                credential=self.name, code=err.code,
            ) from None
        self._set(fresh)
        return fresh

    def refresh(self):
        """A lease straight from the broker (after Twilio refused ours)."""
        fresh = self.broker.get(self.name)
        self._set(fresh)
        return fresh

    # -- which value to try first during a grace window --------------------

    def basic_auth_order(self, cred):
        """[(user, password), ...]: the value to try first, then the other
        one during a rotation's grace window."""
        current = cred.basic_auth
        prev = cred.previous.basic_auth if cred.previous is not None else None
        if prev is None or prev == current:
            return [current]
        if self._prefer_previous == cred.version:
            return [prev, current]
        return [current, prev]

    def worked(self, cred, auth):
        """Remember which value Twilio accepted for this version."""
        prev = cred.previous.basic_auth if cred.previous is not None else None
        self._prefer_previous = cred.version if (prev is not None and auth == prev) else None
