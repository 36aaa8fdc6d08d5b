#!/usr/bin/python3
"""Neighbour solicitations a container should not be able to hurt anyone with, from inside it
(a packet socket on eth0, frames built here byte by byte):

  ndp_flood.py SRC KNOWN UNKNOWN COUNT
      COUNT solicitations from SRC (this container's IPv6 address) for KNOWN, as Linux sends
      them; then one of each malformed kind RFC 4861 says to discard; then COUNT // 10 for
      UNKNOWN (nobody has it: they go to the whole network, under storm control).
Prints {"known": N, "malformed": M, "unknown": U}.
"""
import json
import socket
import struct
import sys


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def solicitation(mac, src, target, hop=255, code=0, option=None, corrupt=False):
    group = bytes.fromhex("ff0200000000000000000001ff") + target[13:]
    option = option if option is not None else b"\x01\x01" + mac
    body = struct.pack("!BBHI", 135, code, 0, 0) + target + option
    pseudo = src + group + struct.pack("!I", len(body)) + b"\0\0\0\x3a"
    c = checksum(pseudo + body) ^ (0xFFFF if corrupt else 0)
    body = body[:2] + struct.pack("!H", c) + body[4:]
    ip = struct.pack("!IHBB", 6 << 28, len(body), 58, hop) + src + group
    eth = b"\x33\x33\xff" + target[13:] + mac + b"\x86\xdd"
    return eth + ip + body


def main(src, known, unknown, count):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    mac = open("/sys/class/net/eth0/address").read().strip()
    mac = bytes.fromhex(mac.replace(":", ""))
    src, known, unknown = (socket.inet_pton(socket.AF_INET6, a) for a in (src, known, unknown))
    frame = solicitation(mac, src, known)
    for _ in range(count):
        s.send(frame)
    malformed = [
        solicitation(mac, src, known, hop=64),
        solicitation(mac, src, known, code=1),
        solicitation(mac, src, known, corrupt=True),
        solicitation(mac, src, known, option=b"\x01\x00" + mac),  # an option of length 0
        solicitation(mac, src, b"\xff\x02" + known[2:]),  # a multicast target
    ]
    for f in malformed:
        s.send(f)
    for i in range(count // 10):
        s.send(solicitation(mac, src, unknown))
    print(json.dumps({"known": count, "malformed": len(malformed), "unknown": count // 10}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
