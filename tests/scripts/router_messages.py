#!/usr/bin/python3
"""ICMPv6 router messages from a container, and a listener for them (raw ICMPv6 sockets: the
kernel fills in the checksum).

  router_messages.py send IFACE ADDR...  # router advertisements and redirects to each ADDR
                                         # (link-local), router solicitations to ff02::2
  router_messages.py listen IFACE SECONDS FROM  # joins ff02::2 (all routers) on IFACE,
                                                # prints "ready", then after SECONDS how many
                                                # router advertisements, redirects and
                                                # solicitations arrived from address FROM:
                                                # "ra=N redirect=N rs=N"
"""
import socket
import sys
import time

ROUTER_SOLICITATION, ROUTER_ADVERTISEMENT, REDIRECT = 133, 134, 137


def send(iface, targets):
    index = socket.if_nametoindex(iface)
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    # RFC 4861: hop limit 255, or a receiver discards them unread.
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    # Hop limit, flags, router lifetime 1800 s, reachable time, retransmission timer.
    advertisement = bytes([ROUTER_ADVERTISEMENT, 0, 0, 0, 64, 0, 0x07, 0x08]) + bytes(8)
    # Target and destination: "send everything for fe80::1 to me".
    target = socket.inet_pton(socket.AF_INET6, "fe80::1")
    redirect = bytes([REDIRECT, 0, 0, 0]) + bytes(4) + target + target
    solicitation = bytes([ROUTER_SOLICITATION, 0, 0, 0]) + bytes(4)
    messages = [(m, to) for to in targets for m in (advertisement, redirect)]
    messages.append((solicitation, "ff02::2"))
    for message, to in messages:
        for _ in range(3):
            s.sendto(message, (to, 0, 0, index))
            time.sleep(0.05)


def listen(iface, seconds, source):
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    # A host is no member of the all-routers group: join it, or solicitations would be
    # discarded on arrival whoever let them through.
    group = socket.inet_pton(socket.AF_INET6, "ff02::2")
    index = socket.if_nametoindex(iface)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group + index.to_bytes(4, "little"))
    counts = {ROUTER_ADVERTISEMENT: 0, REDIRECT: 0, ROUTER_SOLICITATION: 0}
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data, (sender, *_) = s.recvfrom(2048)
        except socket.timeout:
            break
        # Only the sender's: hosts' bridges solicit too when they come up.
        if data and data[0] in counts and sender.split("%")[0] == source:
            counts[data[0]] += 1
    print(
        f"ra={counts[ROUTER_ADVERTISEMENT]} redirect={counts[REDIRECT]} "
        f"rs={counts[ROUTER_SOLICITATION]}",
        flush=True,
    )


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], sys.argv[3:])
    else:
        listen(sys.argv[2], float(sys.argv[3]), sys.argv[4])
