"""credbroker.twilio_client: a real twilio.rest.Client whose requests the
SDK builds, authenticated by the broker's current credential, across
rotations (API key, Auth Token) and bearer-token refreshes, with no restart.
Twilio is tests/support/twilio_fake.py; the daemon is the real one."""

import hashlib
import time

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.credential.client_credential_provider import ClientCredentialProvider
from twilio.rest import Client

import credbroker
from conftest import DYN_TTL, OAUTH_TTL, Load, wait_for

MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
VERIFICATIONS = "/v2/Services/{ServiceSid}/Verifications"


def sdk_work(client, service):
    """Alternate two SDK calls: a read on api.twilio.com and a create on verify.twilio.com."""
    def work(i):
        if i % 2:
            client.messages.list(limit=1)
        else:
            v = client.verify.v2.services(service).verifications.create(to="+15005550006", channel="sms")
            assert v.status == "pending"
    return work


def app_requests(world, usernames, since):
    return [r for r in world.fake_requests()
            if r["time"] >= since and r["username"] in usernames and r["route"] in (MESSAGES, VERIFICATIONS)]


def test_api_key_rotation_under_continuous_requests(world):
    b = world.broker
    client = credbroker.twilio_client(b, "tw-key", http_client=world.http())
    assert isinstance(client, Client)
    before = world.remember_cred(b.get("tw-key"))
    old_sid = before.api_key_sid
    assert client.username == old_sid and client.account_sid == world.sid_a
    start = time.time()
    with Load(sdk_work(client, world.service)) as load:
        load.wait_ok(10)
        out = world.rotate("tw-key")
        assert "rotated" in out
        promoted = world.remember_cred(wait_for(
            lambda: (lambda c: c if c.api_key_sid != old_sid else None)(b.get("tw-key")), 10,
            "the daemon to serve the promoted key"))
        assert promoted.api_key_sid != old_sid and promoted.previous.api_key_sid == old_sid
        new_sid = promoted.api_key_sid
        # The client follows the push. At retire_at the daemon retires the
        # rotation another process (the CLI, as a CronJob) made: it deletes
        # the old key at Twilio and drops `previous`.
        wait_for(lambda: client.username == new_sid, 10, "the client to switch to the new key")
        wait_for(lambda: old_sid not in world.fake_key_sids(), 40, "the old key's deletion at Twilio")
        wait_for(lambda: b.get("tw-key").previous is None, 20, "the end of the grace window")
        retired_at = time.time()
        n = load.ok
        load.wait_ok(n + 10)
    assert load.failures == [], f"failed SDK requests: {load.failures[:5]}"
    assert load.ok >= 30
    seen = app_requests(world, {old_sid, new_sid}, start)
    assert {r["username"] for r in seen if r["status"] in (200, 201)} == {old_sid, new_sid}
    assert [r for r in seen if r["status"] == 401] == [], "no request needed a second try"
    after = [r for r in seen if r["time"] > retired_at + 0.5]
    assert after and all(r["username"] == new_sid for r in after)
    assert not world.twilio_accepts(old_sid, before.api_key_secret), "the old key no longer works"


def test_auth_token_rotation_under_continuous_requests(world):
    b = world.broker
    client = credbroker.twilio_client(b, "tw-token", http_client=world.http())
    before = world.remember_cred(b.get("tw-token"))
    old_token = before.auth_token
    assert client.username == world.sid_a and client.account_sid == world.sid_a
    start = time.time()
    with Load(sdk_work(client, world.service)) as load:
        load.wait_ok(10)
        # Through the RotationAdmin RPC: the daemon rotates, and retires the
        # old token by itself at retire_at (promotes the secondary at Twilio).
        status = world.rotate_rpc("tw-token")
        assert status.step == "promoted", f"Rotate answered step {status.step!r}: {status.last_error[:300]}"
        promoted = world.remember_cred(wait_for(
            lambda: (lambda c: c if c.auth_token != old_token else None)(b.get("tw-token")), 10,
            "the daemon to serve the promoted token"))
        assert promoted.auth_token != old_token and promoted.previous.auth_token == old_token
        wait_for(lambda: client.password == promoted.auth_token, 10, "the client to switch to the new token")
        wait_for(lambda: not world.twilio_accepts(world.sid_a, old_token), 40,
                 "the old primary token to stop working at Twilio")
        wait_for(lambda: b.get("tw-token").previous is None, 20, "the end of the grace window")
        n = load.ok
        load.wait_ok(n + 10)
    assert load.failures == [], f"failed SDK requests: {load.failures[:5]}"
    assert world.twilio_accepts(world.sid_a, promoted.auth_token)
    seen = app_requests(world, {world.sid_a}, start)
    assert len(seen) >= 20 and [r for r in seen if r["status"] == 401] == []


def test_grace_window_retry_with_the_previous_key(world):
    """The new key has not reached Twilio yet: 401/20003 with it, then once
    more with the previous one; the one that worked is tried first after."""
    b = world.broker
    client = credbroker.twilio_client(b, "tw-grace-key", http_client=world.http())
    new, old = world.kb_new_sid, world.kb_old_sid

    def statuses(since):
        return [(r["username"], r["status"]) for r in app_requests(world, {new, old}, since)]

    t0 = time.time()
    client.messages.list(limit=1)
    assert statuses(t0) == [(new, 401), (old, 200)]
    t1 = time.time()
    client.messages.list(limit=1)
    assert statuses(t1) == [(old, 200)], "the previous key, which worked, goes first"
    # The new key starts working and the old one is deleted: one 401 more, then the new one.
    assert world.fake("/__fake/keys", {"account_sid": world.sid_b, "sid": new, "secret": world.kb_new_secret,
                                       "type": "standard"})[0] == 200
    status, _ = world.fake(f"/2010-04-01/Accounts/{world.sid_b}/Keys/{old}.json", method="DELETE",
                           auth=(world.sid_b, world.token_b))
    assert status == 204
    t2 = time.time()
    client.messages.list(limit=1)
    assert statuses(t2) == [(old, 401), (new, 200)]
    t3 = time.time()
    client.messages.list(limit=1)
    assert statuses(t3) == [(new, 200)]


def test_grace_window_retry_with_the_previous_auth_token(world):
    client = credbroker.twilio_client(world.broker, "tw-grace-token", http_client=world.http())
    t0 = time.time()
    client.messages.list(limit=1)
    assert [r["status"] for r in app_requests(world, {world.sid_c}, t0)] == [401, 200]
    t1 = time.time()
    client.messages.list(limit=1)
    assert [r["status"] for r in app_requests(world, {world.sid_c}, t1)] == [200]


def test_a_refused_credential_without_previous_is_not_retried(world):
    client = credbroker.twilio_client(world.broker, "tw-refused", http_client=world.http())
    t0 = time.time()
    with pytest.raises(TwilioRestException) as e:
        client.verify.v2.services(world.service).verifications.create(to="+15005550006", channel="sms")
    assert e.value.status == 401 and e.value.code == 20003
    assert [r["status"] for r in app_requests(world, {world.sid_d}, t0)] == [401]
    text = f"{e.value} {e.value!r}"
    assert not [s for s in world.known if s in text], "a secret value appears in the SDK's exception"


def test_client_kwargs_and_reserved_names(world):
    with pytest.raises(TypeError):
        credbroker.twilio_client(world.broker, "tw-key", password="x")
    c = credbroker.twilio_client(world.broker, "tw-key", http_client=world.http(),
                                 user_agent_extensions=["credbroker-test"])
    assert c.user_agent_extensions == ["credbroker-test"]
    with pytest.raises(AttributeError):
        c.password = "something-else"
    with pytest.raises(credbroker.CredentialNotFound):
        credbroker.twilio_client(world.broker, "no-such-credential")


def test_oauth_bearer_tokens_across_refreshes(world):
    """kind oauth_client: twilio-python's ClientCredentialProvider with the
    broker's token manager; tokens live OAUTH_TTL s and the daemon pushes a
    new one every 2/3 of that: SDK requests go on with 0 failures over
    several tokens, none after its exp, and the app never calls /v2/token."""
    b = world.broker
    http = world.http()
    client = credbroker.twilio_client(b, "tw-oauth", http_client=http)
    assert isinstance(client, Client)
    assert isinstance(client.credential_provider, ClientCredentialProvider)
    assert isinstance(client.credential_provider.token_manager, credbroker.BrokerTokenManager)
    assert client.account_sid == world.sid_a and client.username is None
    first = world.remember_cred(b.get("tw-oauth"))
    issued0 = world.fake("/__fake/state")[1]["tokens_issued"]
    start = time.time()
    # Each request goes out with the newest token the broker had pushed to
    # the package when the request started or ended (twilio-python alone
    # would keep a token until its exp, 2 s past the broker's refresh).
    feed = b._feed("tw-oauth")
    stale_sends = []
    work = sdk_work(client, world.service)

    def tag(token):
        return hashlib.sha256(f"Bearer {token}".encode()).hexdigest()[:16]

    def checked(i):
        before = tag(feed.current().access_token)
        work(i)
        after = tag(feed.current().access_token)
        if http.sent[-1][2] not in (before, after):
            stale_sends.append(i)

    with Load(checked) as load:
        # Past two whole token lifetimes: at least three tokens in use.
        wait_for(lambda: world.fake("/__fake/state")[1]["tokens_issued"] >= issued0 + 3, 4 * OAUTH_TTL,
                 "three bearer-token refreshes by the daemon")
        wait_for(lambda: time.time() > start + 2 * OAUTH_TTL, 3 * OAUTH_TTL, "two token lifetimes")
        n = load.ok
        load.wait_ok(n + 5)
    world.remember_cred(b.get("tw-oauth"))
    assert load.failures == [], f"failed SDK requests: {load.failures[:5]}"
    used = {tag for (_, path, tag) in http.sent if tag}
    assert len(used) >= 3, f"the app used {len(used)} bearer tokens"
    assert stale_sends == [], f"{len(stale_sends)} requests went out with an older token than the broker's"
    assert all(tag for (_, _, tag) in http.sent), "every request carried a bearer token"
    assert not [p for (_, p, _) in http.sent if p.endswith("/token")], "the app never asked Twilio for a token"
    seen = [r for r in world.fake_requests() if r["time"] >= start and r["route"] in (MESSAGES, VERIFICATIONS)
            and r["username"] in (world.client_id, None)]  # the app's client id; None: a refused token
    bad = [(r["route"], r["status"], round(r["time"] - start, 2)) for r in seen if r["status"] not in (200, 201)]
    assert len(seen) >= 20 and bad == [], f"refused at Twilio: {bad[:5]}; {len(seen)} of {len(http.sent)} requests seen"
    assert first.access_token_expires_at is not None


def test_dynamic_keys_are_refetched_as_they_age(world):
    """kind dynamic_api_key cannot be watched (FAILED_PRECONDITION): the
    client asks again once a lease is past half its life, when the broker
    mints a new restricted key, so requests go on across several keys."""
    client = credbroker.twilio_client(world.broker, "tw-dyn", http_client=world.http())
    first_sid = client.username
    assert first_sid.startswith("SK") and client.account_sid == world.sid_a
    start = time.time()
    with Load(lambda i: client.messages.list(limit=1), pause=0.05) as load:
        wait_for(lambda: time.time() > start + 2 * DYN_TTL, 3 * DYN_TTL, "two key lifetimes")
    assert load.failures == [], f"failed SDK requests: {load.failures[:5]}"
    dyn = {k["sid"] for k in world.fake("/__fake/state")[1]["keys"]
           if k["friendly_name"].startswith("credbroker-dyn:tw-dyn:")}
    seen = [r for r in world.fake_requests() if r["time"] >= start and r["route"] == MESSAGES
            and r["username"] and r["username"].startswith("SK") and r["username"] not in
            (world.key_sid, world.admin_sid)]
    used = {r["username"] for r in seen}
    assert len(used) >= 3, f"{len(used)} dynamic keys used"
    assert [r for r in seen if r["status"] != 200] == [], "every request with a dynamic key succeeded"
    assert first_sid not in dyn, "the first key was deleted at Twilio when its TTL ended"


def test_broker_away_past_the_lease_then_back(world):
    """The daemon stops: the client goes on with its lease until it ends,
    then raises CredentialUnavailable with nothing sent to Twilio; when the
    daemon is back, the same client works again."""
    b = world.broker
    client = credbroker.twilio_client(b, "tw-key", http_client=world.http())
    client.messages.list(limit=1)
    feed = b._feed("tw-key")
    world.stop_daemon()
    try:
        lease = feed._cred
        if not lease.expired():
            client.messages.list(limit=1)  # the lease held is still good
        wait_for(lambda: lease.expired(), 30, "the lease to end")
        t0 = time.time()
        with pytest.raises(credbroker.CredentialUnavailable) as e:
            client.messages.list(limit=1)
        assert "'tw-key'" in str(e.value) and "lease ended" in str(e.value)
        assert app_requests(world, {client.credbroker_name, lease.api_key_sid}, t0) == [], \
            "nothing reached Twilio"
    finally:
        world.start_daemon()
    wait_for(lambda: not feed._cred.expired(), 20, "the watch to reconnect and bring a new lease")
    client.messages.list(limit=1)
