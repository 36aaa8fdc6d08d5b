#!/usr/bin/python3
"""A checksummed TCP transfer or UDP exchange: what arrives must be byte for byte what was sent.

  transfer.py recv PORT                 # accepts one connection, prints "<bytes> <sha256>"
  transfer.py send HOST PORT MB SEED    # sends MB MiB of seeded pseudo-random bytes, prints the same
  transfer.py udp-recv PORT COUNT       # receives COUNT datagrams (3 s for each at most)
  transfer.py udp-send HOST PORT SEED SIZE...  # one datagram per SIZE, without DF

Both sides print the length and SHA-256 of the stream (of the datagrams, in order), so a test
compares the two lines.
"""
import hashlib
import random
import socket
import sys
import time


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
    report(iter(lambda: c.recv(1 << 20), b""))


def report(blocks):
    """Prints the length and SHA-256 of `blocks`, taken in order."""
    h, n = hashlib.sha256(), 0
    for b in blocks:
        h.update(b)
        n += len(b)
    print(n, h.hexdigest(), flush=True)


def send(host, port, mb, seed):
    rng = random.Random(seed)
    c = socket.create_connection((host, port), timeout=30)

    def blocks():
        for _ in range(mb):
            b = rng.randbytes(1 << 20)
            c.sendall(b)
            yield b

    report(blocks())
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
    c.close()


def udp_recv(port, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("0.0.0.0", port))
    s.settimeout(3)
    print("listening", flush=True)

    def datagrams():
        for _ in range(count):
            try:
                yield s.recv(1 << 16)
            except socket.timeout:
                return

    report(datagrams())


def udp_send(host, port, seed, sizes):
    rng = random.Random(seed)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # IP_MTU_DISCOVER (10) = IP_PMTUDISC_DONT (0): never DF, whatever the path MTU; the kernel
    # fragments only what is larger than the interface. (Linux's values: Python names them
    # only on some builds.)
    s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_MTU_DISCOVER", 10), 0)

    def datagrams():
        for size in sizes:
            b = rng.randbytes(size)
            s.sendto(b, (host, port))
            time.sleep(0.01)
            yield b

    report(datagrams())


if __name__ == "__main__":
    if sys.argv[1] == "recv":
        recv(int(sys.argv[2]))
    elif sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "udp-recv":
        udp_recv(int(sys.argv[2]), int(sys.argv[3]))
    else:
        udp_send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), [int(a) for a in sys.argv[5:]])
