"""credbroker.RequestValidator against twilio-python 9.13.0's own
twilio.request_validator.RequestValidator, for the same inputs: the package
asks the broker (ValidateWebhook), twilio-python holds the Auth Token."""

from hashlib import sha256

import pytest
from twilio.request_validator import RequestValidator as TwilioValidator

import credbroker

URL = "https://mycompany.example/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
BODY = '{"property": "value", "boolean": true}'


class MultiDict(dict):
    """What Flask (werkzeug) hands a view: getall() for repeated keys."""

    def __init__(self, pairs):
        super().__init__()
        self.pairs = list(pairs)
        for k, v in self.pairs:
            self.setdefault(k, v)

    def getall(self, key):
        return [v for k, v in self.pairs if k == key]


def body_url(body):
    return "https://mycompany.example/myapp?bodySHA256=" + sha256(body.encode()).hexdigest()


def cases(signer):
    """(label, uri, params, signature): valid ones and tampered ones."""
    sig = signer.compute_signature(URL, PARAMS)
    with_port = URL.replace("mycompany.example", "mycompany.example:443")
    multi = MultiDict(list(PARAMS.items()) + [("Digits", "5678"), ("Digits", "0000")])
    sig_multi = signer.compute_signature(URL, multi)
    burl = body_url(BODY)
    sig_body = signer.compute_signature(burl, {})
    return [
        ("valid form", URL, PARAMS, sig),
        ("valid, port added by the proxy", with_port, PARAMS, sig),
        ("valid, signed with the port", URL, PARAMS, signer.compute_signature(with_port, PARAMS)),
        ("tampered parameter", URL, {**PARAMS, "Digits": "9999"}, sig),
        ("extra parameter", URL, {**PARAMS, "Extra": "1"}, sig),
        ("tampered URL", URL.replace("foo=1", "foo=2"), PARAMS, sig),
        ("tampered signature", URL, PARAMS, sig[:-2] + ("A=" if sig[-2:] != "A=" else "B=")),
        ("empty signature", URL, PARAMS, ""),
        ("repeated keys (MultiDict)", URL, multi, sig_multi),
        ("repeated keys, one value changed", URL,
         MultiDict(list(PARAMS.items()) + [("Digits", "5678"), ("Digits", "0001")]), sig_multi),
        ("JSON body (bodySHA256)", burl, BODY, sig_body),
        ("JSON body tampered", burl, BODY.replace("value", "other"), sig_body),
        ("JSON body, URL hash tampered", burl[:-4] + "0000", BODY, signer.compute_signature(burl[:-4] + "0000", {})),
        ("JSON body, empty", body_url(""), "", signer.compute_signature(body_url(""), {})),
        ("no parameters", URL, {}, signer.compute_signature(URL, {})),
        ("None parameters", URL, None, signer.compute_signature(URL, {})),
    ]


def test_same_verdicts_as_twilio_python(world):
    ours = credbroker.RequestValidator(world.broker, "tw-hooks")
    theirs = TwilioValidator(world.token_w)
    verdicts = []
    for label, uri, params, signature in cases(theirs):
        expected = theirs.validate(uri, params, signature)
        got = ours.validate(uri, params, signature)
        assert got is expected, f"{label}: credbroker says {got}, twilio-python says {expected}"
        verdicts.append(expected)
    assert verdicts.count(True) >= 7 and verdicts.count(False) >= 6, "both outcomes covered"


def test_matched_and_the_previous_token_in_a_grace_window(world):
    # tw-grace-token: current tc_new, previous tc_old (grace window).
    ours = credbroker.RequestValidator(world.broker, "tw-grace-token")
    for token, matched in ((world.tc_new, "current"), (world.tc_old, "previous")):
        theirs = TwilioValidator(token)
        sig = theirs.compute_signature(URL, PARAMS)
        result = ours.validate_result(URL, PARAMS, sig)
        assert result.valid and result.matched == matched and bool(result)
        assert ours.validate(URL, PARAMS, sig) is theirs.validate(URL, PARAMS, sig) is True
    bad = ours.validate_result(URL, PARAMS, "AAAA")
    assert not bad and bad.matched == ""


def test_body_variants_and_helpers(world):
    ours = credbroker.RequestValidator(world.broker, "tw-hooks")
    theirs = TwilioValidator(world.token_w)
    assert ours.compute_hash(BODY) == theirs.compute_hash(BODY)
    burl = body_url(BODY)
    sig = theirs.compute_signature(burl, {})
    assert ours.validate(burl, BODY.encode(), sig) is True, "a bytes body works too"
    # The broker refuses what nothing would cover: a body without bodySHA256
    # (twilio-python itself raises TypeError on a str body there).
    assert ours.validate(URL, BODY, theirs.compute_signature(URL, {})) is False
    # Webhooks signed with a SharedKey (HMAC-SHA256) are not the broker's to check.
    assert ours.validate(URL, PARAMS, theirs.compute_signature(URL, PARAMS), algorithm="HMAC_SHA256") is False
    # Broker.validate_webhook directly, with (key, value) pairs.
    r = world.broker.validate_webhook("tw-hooks", URL, list(PARAMS.items()), theirs.compute_signature(URL, PARAMS))
    assert r.valid and r.matched == "current"


def test_errors(world):
    with pytest.raises(credbroker.FailedPrecondition) as e:
        credbroker.RequestValidator(world.broker, "tw-key").validate(URL, PARAMS, "x")
    assert "'tw-key'" in str(e.value)
    with pytest.raises(credbroker.CredentialNotFound):
        credbroker.RequestValidator(world.broker, "no-such-credential").validate(URL, PARAMS, "x")
