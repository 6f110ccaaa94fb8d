"""Holds many connections to a Unix socket, as a hostile local caller would.

    flood.py SOCKET COUNT MODE HOLD_SECONDS

MODE `silent` sends nothing; `preface` sends the HTTP/2 client preface and
an empty SETTINGS frame, then nothing more; `unread` also starts a
ValidateWebhook call whose 60,000-byte message never arrives (its first
1,000 bytes do). After opening them (a refused connect counts as refused),
it prints `opened N` on stdout and flushes, holds them for HOLD_SECONDS,
then prints a JSON line: how many were opened, how many the server had
closed by then, and how many calls it had answered (a HEADERS frame ending
stream 1) without waiting for the rest of the message. `streams` opens 150
unfinished GetCredential calls (of credential `other`) on each connection
and also counts the streams the server refused (RST_STREAM with
REFUSED_STREAM, past its SETTINGS_MAX_CONCURRENT_STREAMS).
"""

import json
import socket
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def literal(name, value):
    """An HPACK literal header field without indexing (new name)."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def frame(kind, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def grpc_headers(method):
    """The HPACK block of a gRPC call to CredentialBroker/`method`."""
    return b"".join(
        literal(n, v)
        for n, v in [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/credbroker.v1.CredentialBroker/" + method),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
    )


HEADERS = grpc_headers(b"ValidateWebhook")
# HEADERS (END_HEADERS), then DATA without END_STREAM: a gRPC message
# header announcing 60,000 bytes and the first 1,000 of them.
UNREAD_CALL = frame(0x1, 0x4, 1, HEADERS) + frame(
    0x0, 0x0, 1, b"\x00" + (60000).to_bytes(4, "big") + b"x" * 1000
)


def get_call(stream):
    """HEADERS and an unfinished message (10 of 100 bytes) for GetCredential
    of `other` on `stream`."""
    headers = grpc_headers(b"GetCredential")
    return frame(0x1, 0x4, stream, headers) + frame(
        0x0, 0x0, stream, b"\x00" + (100).to_bytes(4, "big") + b"\x0a\x05other" + b"xxx"
    )


def refused_streams(data):
    """How many RST_STREAM frames with REFUSED_STREAM (7) `data` holds."""
    at, n = 0, 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at : at + 3], "big")
        kind = data[at + 3]
        if kind == 0x3 and length == 4 and int.from_bytes(data[at + 9 : at + 13], "big") == 7:
            n += 1
        at += 9 + length
    return n


def answered(data):
    """Whether `data` (what the server sent) holds a HEADERS frame that
    ends stream 1."""
    at = 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at : at + 3], "big")
        kind, flags = data[at + 3], data[at + 4]
        stream = int.from_bytes(data[at + 5 : at + 9], "big") & 0x7FFFFFFF
        if kind == 0x1 and stream == 1 and flags & 0x1:
            return True
        at += 9 + length
    return False


def closed_by_server(s):
    s.setblocking(False)
    try:
        return s.recv(4096, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def main():
    path, count, mode, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    held, refused_connects = [], 0
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            if mode in ("preface", "unread"):
                s.sendall(PREFACE)
            if mode == "unread":
                s.sendall(UNREAD_CALL)
            if mode == "streams":
                s.sendall(PREFACE + b"".join(get_call(2 * i + 1) for i in range(150)))
            held.append(s)
        except OSError:
            refused_connects += 1
            s.close()
    print(f"opened {len(held)}", flush=True)
    time.sleep(hold)
    # Read what the server sent (its SETTINGS), then look for EOF.
    closed, calls_answered, refused = 0, 0, 0
    for s in held:
        s.setblocking(False)
        got = b""
        try:
            while True:
                data = s.recv(65536)
                if data == b"":
                    closed += 1
                    break
                got += data
        except BlockingIOError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            closed += 1
        calls_answered += answered(got)
        refused += refused_streams(got)
    print(
        json.dumps({"opened": len(held), "refused": refused_connects, "closed": closed,
                    "answered": calls_answered, "refused_streams": refused}),
        flush=True,
    )


main()
