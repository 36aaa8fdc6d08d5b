#!/usr/bin/python3
"""Broadcast and multicast from inside a container, with plain sockets (as an application does).

  bum.py recv PORT SECONDS [GROUP ...]   # counts datagrams to PORT (joining each GROUP on eth0)
  bum.py send DEST PORT COUNT [RATE]     # COUNT datagrams to DEST (a group or a broadcast address)
                                         # out of eth0, at most RATE per second if given
(BUM_IFACE=dev: another interface than eth0.)

recv prints one JSON object: {"count": N, "from": {source: N}, "to": {destination: N}} for
what arrived in SECONDS (destination: the group, or "broadcast"). send prints {"sent": N}.
"""
import json
import socket
import os
import struct
import sys
import time

# <linux/in.h>; Python 3.11's socket module lacks it.
IP_PKTINFO = 8

# A container's interface; a legacy host's vxlan device when the test says so.
IFACE = os.environ.get("BUM_IFACE", "eth0").encode()


def recv(port, seconds, groups):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    s.bind(("", port))
    for group in groups:
        index = socket.if_nametoindex(IFACE.decode())
        mreqn = socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("i", index)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    print("ready", file=sys.stderr, flush=True)
    end = time.time() + seconds
    seen, sources, dests = 0, {}, {}
    while (left := end - time.time()) > 0:
        s.settimeout(left)
        try:
            _, anc, _, (src, _) = s.recvmsg(2048, socket.CMSG_SPACE(12))
        except socket.timeout:
            break
        dst = "?"
        for level, kind, data in anc:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                dst = socket.inet_ntoa(data[8:12])
        seen += 1
        sources[src] = sources.get(src, 0) + 1
        dests[dst] = dests.get(dst, 0) + 1
    print(json.dumps({"count": seen, "from": sources, "to": dests}))


def send(dest, port, count, rate):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    # Out of eth0 whatever the routes say (a container of an internal network has none).
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, IFACE)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    sent = 0
    for i in range(count):
        try:
            s.sendto(b"bum %d" % i, (dest, port))
            sent += 1
        except OSError:
            pass
        if rate:
            time.sleep(1.0 / rate)
    print(json.dumps({"sent": sent}))


if __name__ == "__main__":
    if sys.argv[1] == "recv":
        recv(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:])
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) > 5 else 0)
