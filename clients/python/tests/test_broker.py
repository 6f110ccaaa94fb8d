"""Broker: get, list, watch (with reconnects), mint_access_token, errors."""

import queue
import threading
import time

import jwt
import pytest

import credbroker


def test_get_each_kind(world):
    b = world.broker
    key = world.remember_cred(b.get("tw-key"))
    assert key.kind == "api_key" and key.account_sid == world.sid_a and key.api_key_sid.startswith("SK")
    assert key.basic_auth[0] == key.api_key_sid
    assert key.version and key.expires_at is not None and not key.expired() and key.previous is None
    tok = world.remember_cred(b.get("tw-hooks"))
    assert tok.kind == "auth_token" and tok.basic_auth[0] == world.sid_w
    assert tok.auth_token == world.token_w, "the Auth Token served is the stored one"
    oauth = world.remember_cred(b.get("tw-oauth"))
    assert oauth.kind == "oauth_client" and oauth.account_sid == world.sid_a
    assert oauth.access_token and oauth.access_token.count(".") == 2, "a bearer JWT"
    assert oauth.access_token_expires_at is not None and oauth.basic_auth is None
    assert oauth.api_key_secret is None and oauth.auth_token is None
    grace = world.remember_cred(b.get("tw-grace-key"))
    assert grace.previous is not None and grace.previous.kind == "api_key"
    assert grace.previous.api_key_sid == world.kb_old_sid and grace.previous.retire_at is not None


def test_list_names_and_kinds(world):
    got = {(c.name, c.kind) for c in world.broker.list()}
    assert {("tw-key", "api_key"), ("tw-token", "auth_token"), ("tw-oauth", "oauth_client"),
            ("tw-hooks", "auth_token")} <= got


def test_errors_name_the_credential(world):
    with pytest.raises(credbroker.CredentialNotFound) as e:
        world.broker.get("no-such-credential")
    assert e.value.credential == "no-such-credential" and e.value.code == "NOT_FOUND"
    assert "'no-such-credential'" in str(e.value) and "NOT_FOUND" in str(e.value)
    with pytest.raises(credbroker.FailedPrecondition) as e:
        world.broker.validate_webhook("tw-key", "https://example.com/hook", {}, "sig")
    assert "'tw-key'" in str(e.value)
    with pytest.raises(credbroker.PermissionDenied) as e:  # an Auth Token has no Access Token policy
        world.broker.mint_access_token("tw-hooks", "user-a")
    assert "'tw-hooks'" in str(e.value)
    with credbroker.Broker(str(world.tmp / "nothing-here.sock"), timeout=2) as gone:
        with pytest.raises(credbroker.CredentialUnavailable) as e:
            gone.get("tw-key")
        assert "'tw-key'" in str(e.value) and e.value.code == "UNAVAILABLE"
        assert isinstance(e.value, credbroker.BrokerError)


def test_default_authority_is_set_by_the_package(world):
    # Without it grpcio sends the socket path as :authority and the daemon's h2
    # resets the stream: the package sets grpc.default_authority itself.
    assert ("grpc.default_authority", "localhost") in credbroker.channel_options()
    with credbroker.Broker(world.sock, authority=None, timeout=5) as bare:
        with pytest.raises(credbroker.BrokerError) as e:
            bare.get("tw-key")
    assert e.value.code == "INTERNAL" and "grpc.default_authority" in str(e.value)


def test_mint_access_token(world):
    t = world.broker.mint_access_token("tw-mint", "user-alice", 600, voice={"incoming_allow": True})
    world.remember(t.token)
    claims = jwt.decode(t.token, world.mint_secret, algorithms=["HS256"])
    assert claims["iss"] == world.mint_sid and claims["sub"] == world.sid_m
    assert claims["grants"]["identity"] == "user-alice" and claims["grants"]["voice"]["incoming"]["allow"] is True
    assert claims["exp"] - claims["iat"] <= 600 and t.expires_at is not None
    assert "<redacted>" in repr(t) and t.token not in repr(t)
    with pytest.raises(credbroker.InvalidRequest) as e:
        world.broker.mint_access_token("tw-mint", "user-alice", 7 * 86400)
    assert "'tw-mint'" in str(e.value)
    with pytest.raises(credbroker.PermissionDenied):
        world.broker.mint_access_token("tw-mint", "mallory", 60)


def test_watch_follows_changes_and_reconnects_across_a_daemon_restart(world):
    b = world.broker
    got = queue.Queue()
    stream = b.watch("tw-watch")

    def consume():
        try:
            for cred in stream:
                got.put(cred)
        except Exception as err:  # noqa: BLE001
            got.put(err)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    # A second watch that must not reconnect: it raises when the daemon goes.
    once = b.watch("tw-watch", reconnect=False)
    once_first = next(once)
    once_result = queue.Queue()

    def drain_once():
        try:
            for _ in once:
                pass
            once_result.put("ended without an error")
        except Exception as err:  # noqa: BLE001
            once_result.put(err)

    threading.Thread(target=drain_once, daemon=True).start()
    first = got.get(timeout=10)
    assert isinstance(first, credbroker.Credential) and first.auth_token == world.token_w
    # A change in the store is pushed.
    world.write_docs(**{"tw-watch": {"account_sid": world.sid_w, "auth_token": world.token_w2}})

    def next_version(old_version, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            item = got.get(timeout=max(0.1, deadline - time.monotonic()))
            assert not isinstance(item, Exception), f"the watch raised {type(item).__name__}: {item}"
            if item.version != old_version:
                return item

    second = next_version(first.version)
    assert second.auth_token == world.token_w2
    # The daemon goes away and comes back with another value: the same
    # iterator reconnects (backoff) and yields it, raising nothing.
    world.stop_daemon()
    err = once_result.get(timeout=20)
    assert isinstance(err, credbroker.CredentialUnavailable), f"reconnect=False: {err!r}"
    assert "'tw-watch'" in str(err) and once_first.name == "tw-watch"
    world.write_docs(**{"tw-watch": {"account_sid": world.sid_w, "auth_token": world.token_w}})
    world.start_daemon()
    third = next_version(second.version, timeout=30)
    assert third.auth_token == world.token_w
    # close() from another thread ends the iteration without an error.
    stream.close()
    t.join(10)
    assert not t.is_alive(), "the watch did not stop on close()"
    while not got.empty():
        item = got.get()
        assert not isinstance(item, Exception), f"the watch raised {type(item).__name__}: {item}"


def test_close_ends_watches_and_the_background_thread(world):
    b = credbroker.Broker(world.sock, reconnect_backoff=(0.2, 2.0))
    before = set(threading.enumerate())
    client = credbroker.twilio_client(b, "tw-hooks", http_client=world.http())
    assert client.account_sid == world.sid_w
    threads = [t for t in set(threading.enumerate()) - before if t.name == "credbroker-watch-tw-hooks"]
    assert len(threads) == 1, "one background watch thread for the credential"
    credbroker.twilio_client(b, "tw-hooks", http_client=world.http())
    assert [t for t in set(threading.enumerate()) - before if t.name.startswith("credbroker-watch")] == threads, \
        "a second client of the same credential shares the thread"
    stream = b.watch("tw-hooks")
    next(stream)
    b.close()
    assert list(stream) == [], "a watch ends when its Broker is closed"
    threads[0].join(10)
    assert not threads[0].is_alive(), "the background thread ended"
    with pytest.raises(credbroker.BrokerError) as e:
        b.get("tw-hooks")
    assert "closed" in str(e.value)
