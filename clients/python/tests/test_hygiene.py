"""No secret in the package's reprs, str()s or exception messages.
(tests/clients_python.sh also scans the whole test output and the logs for
every secret of the run.)"""

import pytest

import credbroker


def no_secret(world, text, what):
    for s in world.known:
        assert s not in text, f"a secret value appears in {what}"


def test_reprs_redact(world):
    b = world.broker
    shown = []
    for name in ("tw-key", "tw-token", "tw-oauth", "tw-grace-key", "tw-grace-token", "tw-hooks", "tw-mint"):
        cred = world.remember_cred(b.get(name))
        for text in (repr(cred), str(cred), f"{cred}", repr(cred.previous), repr([cred])):
            no_secret(world, text, f"repr of {name}")
        assert "<redacted>" in repr(cred)
        shown.append(repr(cred))
    assert any("previous=PreviousCredential(" in s for s in shown)
    assert not hasattr(credbroker.Credential(), "__dict__"), "slots only: vars() shows nothing"
    token = b.mint_access_token("tw-mint", "user-bob", 60)
    world.remember(token.token)
    no_secret(world, repr(token) + str(token), "an AccessToken's repr")
    client = credbroker.twilio_client(b, "tw-key", http_client=world.http())
    oauth = credbroker.twilio_client(b, "tw-oauth", http_client=world.http())
    for obj in (client, oauth, oauth.credential_provider.token_manager, b,
                credbroker.RequestValidator(b, "tw-hooks"), b.watch("tw-key")):
        no_secret(world, repr(obj), f"repr of {type(obj).__name__}")


def test_exception_messages(world):
    b = world.broker
    raised = []
    calls = [
        lambda: b.get("no-such-credential"),
        lambda: b.mint_access_token("tw-mint", "mallory", 60),
        lambda: b.mint_access_token("tw-mint", "user-a", 7 * 86400),
        lambda: b.mint_access_token("tw-hooks", "user-a"),
        lambda: b.validate_webhook("tw-key", "https://example.com/", {}, "sig"),
        lambda: b.validate_webhook("tw-hooks", "https://example.com/", {}, ""),
        lambda: credbroker.twilio_client(b, "tw-mint").username.__setattr__("x", 1),
    ]
    for call in calls:
        with pytest.raises(Exception) as e:
            call()
        raised.append(e.value)
    assert sum(isinstance(e, credbroker.BrokerError) for e in raised) >= 6
    for e in raised:
        no_secret(world, f"{e} {e!r} {e.args!r}", f"a {type(e).__name__} message")
