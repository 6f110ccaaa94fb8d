#!/usr/bin/env python3
"""A small Python client for credbroker, over its Unix socket.

    credbroker_client.py get NAME [--socket S] [--reveal]
    credbroker_client.py watch NAME [--socket S] [--reveal] [--count N]

`get` prints one credential lease; `watch` prints one line per message of
WatchCredential (the first at once, then one on every change) and reconnects
with backoff when the broker goes away. Secrets are printed as `<redacted>`
unless --reveal is given.

It is built on the `credbroker` package (clients/python: `pip install
clients/python`), which sets the channel option the broker needs
(grpc.default_authority, see clients/python/README.md). Without the package
installed, it is imported from ../../clients/python/src (grpcio and protobuf
must then be installed).
"""

import argparse
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REDACTED = "<redacted>"

try:
    import credbroker
except ImportError:
    sys.path.append(os.path.join(HERE, "..", "..", "clients", "python", "src"))
    try:
        import credbroker
    except ImportError as err:
        sys.exit(f"credbroker_client: cannot import the credbroker package ({err}); "
                 "install it with `pip install clients/python` from the repository root")


def _ts(when):
    """A datetime as RFC 3339 (seconds), or '-' when unset."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else "-"


def _secret_fields(cred, reveal):
    """The (key, value) pairs of a Credential's or PreviousCredential's secret."""
    def hide(value):
        return value if reveal else REDACTED

    if cred.kind == "auth_token":
        return [("kind", "auth_token"), ("auth_token", hide(cred.auth_token))]
    if cred.kind == "api_key":
        # The API Key SID is an identifier, not a secret.
        return [
            ("kind", "api_key"),
            ("api_key_sid", cred.api_key_sid),
            ("api_key_secret", hide(cred.api_key_secret)),
        ]
    if cred.kind == "oauth_client":
        return [
            ("kind", "oauth_client"),
            ("access_token", hide(cred.access_token)),
            ("access_token_expires_at", _ts(cred.access_token_expires_at)),
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
    if cred.previous is not None:
        prev = cred.previous
        fields += [("previous_" + k, v) for k, v in _secret_fields(prev, reveal) if k != "kind"]
        fields += [("previous_version", prev.version), ("previous_retire_at", _ts(prev.retire_at))]
    return fields


def cmd_get(broker, args):
    cred = broker.get(args.name, timeout=args.timeout)
    for key, value in credential_fields(cred, args.reveal):
        print(f"{key}: {value}")
    return 0


def cmd_watch(broker, args):
    # Broker.watch reconnects by itself, with backoff (1 s doubling to 30 s,
    # jittered), when the stream ends: the broker shuts down, restarts, or
    # the credential is unavailable. It logs each reconnect (stderr here).
    seen = 0
    with broker.watch(args.name) as stream:
        for cred in stream:
            print(" ".join(f"{k}={v}" for k, v in credential_fields(cred, args.reveal)), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                return 0
    return 0


def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        default=os.environ.get("CREDBROKER_SOCKET", credbroker.DEFAULT_SOCKET),
        help=f"the broker's socket [default: $CREDBROKER_SOCKET, else {credbroker.DEFAULT_SOCKET}]",
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

    logging.basicConfig(format="credbroker_client: %(message)s", level=logging.WARNING)
    with credbroker.Broker(args.socket, authority=args.authority or None) as broker:
        try:
            return {"get": cmd_get, "watch": cmd_watch}[args.command](broker, args)
        except credbroker.BrokerError as err:
            # e.g. "credential 'x': get: NOT_FOUND: ..." (never a secret)
            print(f"credbroker_client: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
