#!/usr/bin/env python3
"""A stateful fake of the one Kubernetes API call Vault's `kubernetes` auth
method makes: TokenReview (authentication.k8s.io/v1), over TLS.

OpenBao's real `kubernetes` auth method calls it to check a service-account
JWT; no Kubernetes API server runs here, so this stands in for one. It follows
the Kubernetes API reference for TokenReview ("TokenReview v1
authentication.k8s.io") and the API server's authentication rules:

- `POST /apis/authentication.k8s.io/v1/tokenreviews` needs the reviewer's own
  bearer token (`Authorization: Bearer <token_reviewer_jwt>`); without a valid
  one it answers 401 with a `Status` object (reason Unauthorized), as the API
  server does, and reviews nothing.
- The body is a TokenReview (`spec.token`, optional `spec.audiences`;
  `apiVersion`/`kind` may be absent, as client-go sends them, but not
  another type). Anything else is 400 (BadRequest Status).
- The answer is 201 Created with the TokenReview and its `status`:
  `authenticated: true` with `user.username` =
  `system:serviceaccount:NAMESPACE:NAME`, `user.uid`, `user.groups`, and
  `audiences` for a token it issued that is neither revoked nor expired and
  whose audience intersects `spec.audiences` (when given); otherwise
  `authenticated: false` with an `error`, never user fields.

Service-account tokens are JWTs as a kubelet mounts them (projected tokens):
RS256-signed by this fake's own key, with `iss`, `sub`, `aud`, `exp`, `iat`,
`nbf` and the `kubernetes.io` claim (`namespace`, `serviceaccount.name`,
`serviceaccount.uid`).

At start it makes a CA and a server certificate for 127.0.0.1 (valid for a
day) and writes the CA to `--ca-out`; the test gives that PEM to OpenBao as
`kubernetes_ca_cert`, so OpenBao verifies the TLS connection for real.

Ports: the Kubernetes API on `--tls-port` (TLS); the control API on
`--port` (plain HTTP, loopback), announced first on stdout as `PORT=<n>`:

  POST /__fake/serviceaccount-token {"namespace", "name", "audiences"?, "ttl"?}
       -> {"token": JWT}   (also a reviewer's token: name it like any account)
  POST /__fake/reviewer {"token"}     accept this bearer token as a reviewer
  POST /__fake/revoke {"token"}       that token no longer authenticates
  GET  /__fake/stats                  {"reviews", "authenticated", "refused", "unauthorized"}

Python stdlib plus `cryptography` and PyJWT (both in the venv scripts/test-all
installs). Loopback only.
"""

import argparse
import datetime
import json
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCE = ISSUER
MAX_BODY = 64 * 1024

LOCK = threading.Lock()
STATE = {
    "tokens": {},  # token -> {"namespace", "name", "uid", "aud", "exp", "revoked"}
    "reviewers": set(),
    "stats": {"reviews": 0, "authenticated": 0, "refused": 0, "unauthorized": 0},
}
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SA_UIDS = {}


def make_tls(ca_out, cert_dir):
    """A CA, and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "credbroker-test-kubernetes-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    with open(ca_out, "wb") as f:
        f.write(ca_pem)
    cert_file = f"{cert_dir}/apiserver.crt"
    key_file = f"{cert_dir}/apiserver.key"
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_file, key_file


def issue_token(namespace, name, audiences, ttl):
    now = int(time.time())
    with LOCK:
        uid = SA_UIDS.setdefault((namespace, name), str(uuid.uuid4()))
    claims = {
        "iss": ISSUER,
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "aud": audiences,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": uid},
        },
    }
    token = jwt.encode(claims, SIGNING_KEY, algorithm="RS256", headers={"kid": "fake-apiserver"})
    with LOCK:
        STATE["tokens"][token] = {
            "namespace": namespace,
            "name": name,
            "uid": uid,
            "aud": audiences,
            "exp": now + ttl,
            "revoked": False,
        }
    return token


def status_object(code, reason, message):
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    control = False

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    def do_GET(self):
        if self.control and self.path == "/__fake/stats":
            with LOCK:
                return self.reply(200, dict(STATE["stats"]))
        if not self.control:
            return self.unauthorized_or_404()
        self.reply(404, {"error": "no such control endpoint"})

    def unauthorized_or_404(self):
        if not self.reviewer_ok():
            return self.reply(401, status_object(401, "Unauthorized", "Unauthorized"))
        self.reply(404, status_object(404, "NotFound", "the server could not find the requested resource"))

    def reviewer_ok(self):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        with LOCK:
            return auth[len("Bearer "):] in STATE["reviewers"]

    def do_POST(self):
        if self.control:
            return self.do_control()
        if self.path.split("?")[0] != "/apis/authentication.k8s.io/v1/tokenreviews":
            return self.unauthorized_or_404()
        if not self.reviewer_ok():
            with LOCK:
                STATE["stats"]["unauthorized"] += 1
            return self.reply(401, status_object(401, "Unauthorized", "Unauthorized"))
        review = self.body()
        # The URL names the type: the API server defaults an absent
        # apiVersion/kind (client-go sends none), but refuses another one.
        if (
            not isinstance(review, dict)
            or review.get("apiVersion", "authentication.k8s.io/v1") != "authentication.k8s.io/v1"
            or review.get("kind", "TokenReview") != "TokenReview"
            or not isinstance(review.get("spec"), dict)
            or not isinstance(review["spec"].get("token"), str)
        ):
            return self.reply(400, status_object(400, "BadRequest", "the body is not a TokenReview"))
        spec = review["spec"]
        wanted = spec.get("audiences") or [API_AUDIENCE]
        with LOCK:
            STATE["stats"]["reviews"] += 1
            info = STATE["tokens"].get(spec["token"])
            if info is None:
                why = "invalid bearer token, token lookup failed"
            elif info["revoked"]:
                why = "invalid bearer token, service account token has been invalidated"
            elif info["exp"] < time.time():
                why = "invalid bearer token, service account token has expired"
            elif not set(wanted) & set(info["aud"]):
                why = "invalid bearer token, token audiences do not match"
            else:
                why = None
            STATE["stats"]["refused" if why else "authenticated"] += 1
        if why:
            status = {"authenticated": False, "user": {}, "error": f"[{why}]"}
        else:
            ns, name = info["namespace"], info["name"]
            status = {
                "authenticated": True,
                "user": {
                    "username": f"system:serviceaccount:{ns}:{name}",
                    "uid": info["uid"],
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
                },
                "audiences": sorted(set(wanted) & set(info["aud"])),
            }
        self.reply(
            201,
            {
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": status,
            },
        )

    def do_control(self):
        body = self.body()
        if not isinstance(body, dict):
            return self.reply(400, {"error": "a JSON object, please"})
        if self.path == "/__fake/serviceaccount-token":
            token = issue_token(
                body.get("namespace", "default"),
                body["name"],
                body.get("audiences") or [API_AUDIENCE],
                int(body.get("ttl", 3600)),
            )
            return self.reply(200, {"token": token})
        if self.path == "/__fake/reviewer":
            with LOCK:
                STATE["reviewers"].add(body["token"])
            return self.reply(200, {})
        if self.path == "/__fake/revoke":
            with LOCK:
                if body["token"] not in STATE["tokens"]:
                    return self.reply(404, {"error": "not a token this fake issued"})
                STATE["tokens"][body["token"]]["revoked"] = True
            return self.reply(200, {})
        self.reply(404, {"error": "no such control endpoint"})


class ControlHandler(Handler):
    control = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="control port (plain HTTP)")
    parser.add_argument("--tls-port", type=int, required=True, help="Kubernetes API port (TLS)")
    parser.add_argument("--ca-out", required=True, help="write the CA certificate (PEM) here")
    parser.add_argument("--state", help="unused (state lives in memory)")
    args = parser.parse_args()
    import os

    cert, key = make_tls(args.ca_out, os.path.dirname(os.path.abspath(args.ca_out)))
    api = ThreadingHTTPServer(("127.0.0.1", args.tls_port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    api.socket = context.wrap_socket(api.socket, server_side=True)
    control = ThreadingHTTPServer(("127.0.0.1", args.port), ControlHandler)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    print(f"PORT={control.server_address[1]}", flush=True)
    control.serve_forever()


if __name__ == "__main__":
    main()
