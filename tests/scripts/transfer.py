#!/usr/bin/python3
"""A checksummed TCP transfer: what arrives must be byte for byte what was sent.

  transfer.py recv PORT                 # accepts one connection, prints "<bytes> <sha256>"
  transfer.py send HOST PORT MB SEED    # sends MB MiB of seeded pseudo-random bytes, prints the same

Both sides print the length and SHA-256 of the stream, so a test compares the two lines.
"""
import hashlib
import random
import socket
import sys


def recv(port):
    # IPv4 and IPv6 on one socket; a namespace without IPv6 falls back to IPv4 alone.
    if socket.has_dualstack_ipv6():
        try:
            s = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=1)
        except OSError:
            s = socket.create_server(("0.0.0.0", port), backlog=1)
    else:
        s = socket.create_server(("0.0.0.0", port), backlog=1)
    print("listening", flush=True)
    c, _ = s.accept()
    h, n = hashlib.sha256(), 0
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        h.update(b)
        n += len(b)
    print(n, h.hexdigest(), flush=True)


def send(host, port, mb, seed):
    rng = random.Random(seed)
    h, n = hashlib.sha256(), 0
    c = socket.create_connection((host, port), timeout=30)
    for _ in range(mb):
        b = rng.randbytes(1 << 20)
        c.sendall(b)
        h.update(b)
        n += len(b)
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
    c.close()
    print(n, h.hexdigest(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "recv":
        recv(int(sys.argv[2]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
