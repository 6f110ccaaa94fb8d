"""Holds many connections to a Unix socket, as a hostile local caller would.

    flood.py SOCKET COUNT MODE HOLD_SECONDS

MODE `silent` sends nothing; `preface` sends the HTTP/2 client preface and
an empty SETTINGS frame, then nothing more. After opening them (a refused
connect counts as refused), it prints `opened N` on stdout and flushes, holds
them for HOLD_SECONDS, then prints a JSON line: how many were opened, and
how many the server had closed by then.
"""

import json
import socket
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


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
    held, refused = [], 0
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            if mode == "preface":
                s.sendall(PREFACE)
            held.append(s)
        except OSError:
            refused += 1
            s.close()
    print(f"opened {len(held)}", flush=True)
    time.sleep(hold)
    # Read what the server sent (its SETTINGS), then look for EOF.
    closed = 0
    for s in held:
        s.setblocking(False)
        try:
            while True:
                data = s.recv(65536)
                if data == b"":
                    closed += 1
                    break
        except BlockingIOError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            closed += 1
    print(json.dumps({"opened": len(held), "refused": refused, "closed": closed}), flush=True)


main()
