#!/usr/bin/python3
"""Issue 25's cross-network injection, as an unprivileged container process does it: an ordinary
UDP socket (no raw socket) sends VXLAN packets to a VTEP through the container's gateway, each
carrying a frame for a container of another network; and the listener that counts what arrives.

  vxlan_inject.py send VTEP PORT VNI DST_IP SRC_IP DPORT COUNT   # prints how many were sent
  vxlan_inject.py listen PORT SECONDS                             # prints "ready", then the count
"""
import socket
import struct
import sys
import time


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mac_of(ip):
    """Docker's convention, which the overlay follows: 02:42 and the IPv4 address."""
    return bytes([0x02, 0x42]) + socket.inet_aton(ip)


def inner_frame(dst_ip, src_ip, dport, payload):
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
        socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return mac_of(dst_ip) + mac_of(src_ip) + b"\x08\x00" + ip + udp


def send(vtep, port, vni, dst_ip, src_ip, dport, count):
    vxlan = struct.pack("!II", 0x08000000, vni << 8)
    packet = vxlan + inner_frame(dst_ip, src_ip, dport, b"injected")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    for _ in range(count):
        try:
            s.sendto(packet, (vtep, port))
            sent += 1
        except OSError:
            pass
        time.sleep(0.05)
    print(sent)


def listen(port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.2)
    print("ready", flush=True)
    got, end = 0, time.time() + seconds
    while time.time() < end:
        try:
            s.recvfrom(2048)
            got += 1
        except socket.timeout:
            pass
    print(got, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        a = sys.argv[2:]
        send(a[0], int(a[1]), int(a[2]), a[3], a[4], int(a[5]), int(a[6]))
    else:
        listen(int(sys.argv[2]), float(sys.argv[3]))
