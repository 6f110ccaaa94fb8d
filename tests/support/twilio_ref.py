#!/usr/bin/env python3
"""Reference answers from the official Twilio Python library, for the Rust tests.

Checks credbroker's webhook signatures (src/twilio/webhook.rs) and Access
Tokens (src/twilio/access_token.rs) against twilio-python itself rather than
against our reading of it. Python 3.11 with, pinned:

    pip install twilio==9.13.0 PyJWT==2.15.1

Reads one JSON request on stdin, writes one JSON answer on stdout. A JSON
array of requests gets an array of answers, in order (one process for many
vectors). A request that fails answers {"error": "<ExceptionType>: <message>"}
with any token or secret in the message replaced by "[redacted]"; the exit
status is 0 unless stdin is not JSON.

Requests ("params" is a list of [name, value] pairs, repeats allowed; bodies
travel base64-encoded as "body_b64"):

  {"op": "sign", "token", "url", "params"}
      -> {"signature"}                RequestValidator.compute_signature
  {"op": "sign_body", "token", "url", "body_b64"}
      -> {"signature", "url", "body_sha256"}
         twilio-python has no helper that builds a JSON webhook's URL: this
         appends "bodySHA256=<RequestValidator.compute_hash(body)>" to url
         (after "&", or "?" when url has no query) and signs that URL with
         no parameters, as Twilio does.
  {"op": "validate", "token", "url", "params"?, "body_b64"?, "signature"}
      -> {"valid"}                    RequestValidator.validate
         With "body_b64" the body (UTF-8) is passed in place of the
         parameters, which is how twilio-python validates a JSON webhook.
  {"op": "access_token", "account_sid", "key_sid", "key_secret", "identity",
   "ttl", "grants": {"voice": {"outgoing_application_sid", "incoming_allow"},
                     "video": {"room"}, "chat": {"service_sid"},
                     "sync": {"service_sid"}}}       (each grant optional)
      -> {"claims", "header"}         twilio.jwt.access_token.AccessToken,
         decoded with PyJWT (signature checked, exp/nbf not)
  {"op": "decode", "token", "secret", "verify_exp"?: true}
      -> {"payload", "header"}        jwt.decode(..., algorithms=["HS256"])
         or {"error"} when PyJWT refuses the token.

Nothing secret is printed: answers carry only signatures, decoded claims and
headers, and error messages with secrets redacted.
"""

import base64
import json
import sys


class MultiParams(dict):
    """Form parameters with repeats, as Flask's MultiDict offers them.

    RequestValidator iterates the names and calls getall(name) for each
    name's values, so repeated names reach it exactly as in a real app.
    """

    def __init__(self, pairs):
        super().__init__()
        self._pairs = [(str(k), str(v)) for k, v in pairs]
        for name, value in self._pairs:
            self.setdefault(name, value)

    def getall(self, name):
        return [v for k, v in self._pairs if k == name]


def _validator(req):
    from twilio.request_validator import RequestValidator

    return RequestValidator(req["token"])


def _body(req):
    return base64.b64decode(req["body_b64"]).decode("utf-8")


def op_sign(req):
    params = MultiParams(req.get("params") or [])
    return {"signature": _validator(req).compute_signature(req["url"], params)}


def op_sign_body(req):
    validator = _validator(req)
    body_sha256 = validator.compute_hash(_body(req))
    url = req["url"]
    url += ("&" if "?" in url else "?") + "bodySHA256=" + body_sha256
    return {
        "signature": validator.compute_signature(url, {}),
        "url": url,
        "body_sha256": body_sha256,
    }


def op_validate(req):
    if "body_b64" in req:
        params = _body(req)
    else:
        params = MultiParams(req.get("params") or [])
    valid = _validator(req).validate(req["url"], params, req["signature"])
    return {"valid": bool(valid)}


def op_access_token(req):
    import jwt
    from twilio.jwt.access_token import AccessToken
    from twilio.jwt.access_token.grants import ChatGrant, SyncGrant, VideoGrant, VoiceGrant

    token = AccessToken(
        req["account_sid"],
        req["key_sid"],
        req["key_secret"],
        identity=req.get("identity") or None,
        ttl=int(req["ttl"]),
    )
    grants = req.get("grants") or {}
    if "voice" in grants:
        voice = grants["voice"] or {}
        token.add_grant(
            VoiceGrant(
                incoming_allow=True if voice.get("incoming_allow") else None,
                outgoing_application_sid=voice.get("outgoing_application_sid") or None,
            )
        )
    if "video" in grants:
        token.add_grant(VideoGrant(room=(grants["video"] or {}).get("room") or None))
    if "chat" in grants:
        token.add_grant(ChatGrant(service_sid=(grants["chat"] or {}).get("service_sid") or None))
    if "sync" in grants:
        token.add_grant(SyncGrant(service_sid=(grants["sync"] or {}).get("service_sid") or None))
    encoded = token.to_jwt()
    claims = jwt.decode(
        encoded,
        req["key_secret"],
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    return {"claims": claims, "header": jwt.get_unverified_header(encoded)}


def op_decode(req):
    import jwt

    verify_exp = req.get("verify_exp", True)
    options = {"verify_exp": verify_exp, "verify_nbf": verify_exp, "verify_iat": verify_exp}
    payload = jwt.decode(req["token"], req["secret"], algorithms=["HS256"], options=options)
    return {"payload": payload, "header": jwt.get_unverified_header(req["token"])}


OPS = {
    "sign": op_sign,
    "sign_body": op_sign_body,
    "validate": op_validate,
    "access_token": op_access_token,
    "decode": op_decode,
}

SECRET_FIELDS = ("token", "secret", "key_secret")


def answer(req):
    try:
        op = OPS.get(req.get("op"))
        if op is None:
            return {"error": "unknown op %r (one of %s)" % (req.get("op"), ", ".join(OPS))}
        return op(req)
    except Exception as e:  # noqa: BLE001 - every failure becomes an answer
        message = "%s: %s" % (type(e).__name__, e)
        for field in SECRET_FIELDS:
            value = req.get(field)
            if isinstance(value, str) and value:
                message = message.replace(value, "[redacted]")
        return {"error": message}


def main():
    request = json.load(sys.stdin)
    if isinstance(request, list):
        result = [answer(r) for r in request]
    else:
        result = answer(request)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
