#!/usr/bin/env python3
"""A small Python client for credbroker, over its Unix socket.

    credbroker_client.py get NAME [--socket S] [--reveal]
    credbroker_client.py watch NAME [--socket S] [--reveal] [--count N]

`get` prints one credential lease; `watch` prints one line per message of
WatchCredential (the first at once, then one on every change) and reconnects
with backoff when the broker goes away. Secrets are printed as `<redacted>`
unless --reveal is given.

The stubs are generated from proto/credbroker/v1/broker.proto by grpcio-tools
(see README.md); they are looked up on PYTHONPATH, then in ./build next to
this file.

Use `open_channel()` and the stubs from your own code the same way: the
channel option it sets is required (see the comment there).
"""

import argparse
import datetime
import os
import random
import sys
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SOCKET = "/run/credbroker/broker.sock"
REDACTED = "<redacted>"

try:
    from credbroker.v1 import broker_pb2, broker_pb2_grpc
except ImportError:
    sys.path.append(os.path.join(HERE, "build"))
    try:
        from credbroker.v1 import broker_pb2, broker_pb2_grpc
    except ImportError:
        sys.exit(
            "credbroker_client: the gRPC stubs are missing; generate them with\n"
            f"  mkdir -p {HERE}/build\n"
            f"  python -m grpc_tools.protoc -I PROTO_DIR --python_out={HERE}/build "
            f"--grpc_python_out={HERE}/build PROTO_DIR/credbroker/v1/broker.proto\n"
            "(PROTO_DIR = the repository's proto/ directory), or put them on PYTHONPATH"
        )


def open_channel(socket_path, authority="localhost"):
    """An insecure gRPC channel to the broker's Unix socket."""
    options = []
    if authority:
        # Required. For a `unix:` target grpc-core (grpcio) sends the socket
        # path, percent-encoded, as the HTTP/2 :authority header (for
        # /run/credbroker/broker.sock: `run%2Fcredbroker%2Fbroker.sock`).
        # The broker's HTTP/2 stack (tonic/h2) does not accept that as an
        # authority and resets every such stream with PROTOCOL_ERROR, which
        # grpcio reports as INTERNAL "Received RST_STREAM with error code 1".
        # Any plain host name works; the broker ignores it (callers are
        # identified by their SO_PEERCRED uid/gid, not by the authority).
        options.append(("grpc.default_authority", authority))
    return grpc.insecure_channel("unix:" + os.path.abspath(socket_path), options=options)


def _ts(ts):
    """A google.protobuf.Timestamp as RFC 3339 (seconds), or '-' when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    when = datetime.datetime.fromtimestamp(ts.seconds, tz=datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _secret_fields(msg, reveal):
    """The (key, value) pairs of a Credential's or PreviousCredential's secret."""
    def hide(value):
        return value if reveal else REDACTED

    kind = msg.WhichOneof("secret")
    if kind == "auth_token":
        return [("kind", "auth_token"), ("auth_token", hide(msg.auth_token.token))]
    if kind == "api_key":
        # The API Key SID is an identifier, not a secret.
        return [
            ("kind", "api_key"),
            ("api_key_sid", msg.api_key.sid),
            ("api_key_secret", hide(msg.api_key.secret)),
        ]
    return [("kind", "none")]


def credential_fields(cred, reveal=False):
    """The fields of a Credential to print, in order, secrets redacted unless reveal."""
    fields = [("name", cred.name), ("account_sid", cred.account_sid)]
    fields += _secret_fields(cred, reveal)
    fields += [
        ("version", cred.version),
        ("issued_at", _ts(cred.issued_at)),
        ("expires_at", _ts(cred.expires_at)),
        ("stale", "true" if cred.stale else "false"),
    ]
    if cred.stale:
        fields.append(("stale_since", _ts(cred.stale_since)))
    if cred.HasField("previous"):
        prev = cred.previous
        fields += [("previous_" + k, v) for k, v in _secret_fields(prev, reveal) if k != "kind"]
        fields += [("previous_version", prev.version), ("previous_retire_at", _ts(prev.retire_at))]
    return fields


def cmd_get(stub, args):
    cred = stub.GetCredential(broker_pb2.GetCredentialRequest(name=args.name), timeout=args.timeout)
    for key, value in credential_fields(cred, args.reveal):
        print(f"{key}: {value}")
    return 0


def cmd_watch(stub, args):
    seen = 0
    backoff = 1.0
    while True:
        stream = stub.WatchCredential(broker_pb2.WatchCredentialRequest(name=args.name))
        try:
            for cred in stream:
                backoff = 1.0
                print(" ".join(f"{k}={v}" for k, v in credential_fields(cred, args.reveal)), flush=True)
                seen += 1
                if args.count and seen >= args.count:
                    stream.cancel()
                    return 0
        except grpc.RpcError as err:
            # The broker ends watch streams with UNAVAILABLE when it shuts down
            # or the credential becomes unavailable: reconnect with backoff.
            if err.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            print(f"credbroker_client: watch {args.name}: {err.code().name}: {err.details()}; "
                  f"retrying in {backoff:.0f}s", file=sys.stderr, flush=True)
        else:
            print(f"credbroker_client: watch {args.name}: the stream ended; reconnecting",
                  file=sys.stderr, flush=True)
        time.sleep(backoff * random.uniform(0.8, 1.2))
        backoff = min(backoff * 2, 30.0)


def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        default=os.environ.get("CREDBROKER_SOCKET", DEFAULT_SOCKET),
        help=f"the broker's socket [default: $CREDBROKER_SOCKET, else {DEFAULT_SOCKET}]",
    )
    common.add_argument("--reveal", action="store_true", help="print the secret too")
    common.add_argument(
        "--authority",
        default="localhost",
        help="the :authority sent on the unix: channel (grpc.default_authority) "
        "[default: localhost]; an empty string leaves grpcio's default, which the broker rejects",
    )
    parser = argparse.ArgumentParser(prog="credbroker_client.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("get", parents=[common], help="print the current credential NAME")
    get.add_argument("name", metavar="NAME")
    get.add_argument("--timeout", type=float, default=10.0, help="deadline, in seconds [default: 10]")
    watch = sub.add_parser("watch", parents=[common], help="print NAME now and on every change, one line each")
    watch.add_argument("name", metavar="NAME")
    watch.add_argument("--count", type=int, default=0, help="exit after N messages [default: 0, never]")
    args = parser.parse_args(argv)

    with open_channel(args.socket, args.authority) as channel:
        stub = broker_pb2_grpc.CredentialBrokerStub(channel)
        try:
            return {"get": cmd_get, "watch": cmd_watch}[args.command](stub, args)
        except grpc.RpcError as err:
            print(f"credbroker_client: {args.command} {args.name}: {err.code().name}: {err.details()}",
                  file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
