#!/usr/bin/python3
"""Hostile packets for the overlay, sent with scapy from where an attacker would stand.

  hostile_corpus.py underlay IFACE JSON   # onto the underlay segment, towards a host of ours
  hostile_corpus.py container IFACE JSON  # from inside a container, out of its eth0
  hostile_corpus.py flood IFACE JSON      # JSON["count"] unknown-VNI frames, fast, onto the underlay

JSON names the addresses (see tests/tests/hostile.rs); CORPUS_ONLY=reason,reason limits what is
sent (for narrowing a failure down). Prints one JSON object: how many frames
were sent per counter the receiving host must move.
"""
import json
import os
import sys

from scapy.all import ARP, ICMP, IP, UDP, Ether, Raw, VXLAN, conf, fragment, sendp

conf.verb = 0


def underlay(iface, a):
    sent = {}

    only = os.environ.get("CORPUS_ONLY")

    def send(reason, frames, times=1, also=None):
        """Sends frames that move `reason`'s counter, and `also`'s once each too."""
        if only and reason not in only.split(","):
            return
        frames = [bytes(f) for f in frames] * times
        sendp([Raw(f) for f in frames], iface=iface)
        for r in [reason] + ([also] if also else []):
            sent[r] = sent.get(r, 0) + len(frames)

    outer = Ether(src=a["attacker_mac"], dst=a["host_mac"])

    def vxlan(vni, src=a["legit_vtep"], inner_dst=a["victim_mac"], flags=0x08, dport=4789):
        inner = (
            Ether(src=a["sender_mac"], dst=inner_dst)
            / IP(src=a["sender_ip"], dst=a["victim_ip"])
            / ICMP()
            / Raw(b"x" * 16)
        )
        return (
            outer
            / IP(src=src, dst=a["host_ip"])
            / UDP(sport=40000, dport=dport)
            / VXLAN(flags=flags, vni=vni)
            / inner
        )

    good = bytes(vxlan(42))
    # Truncated past the UDP port and before the inner Ethernet header ends.
    send("drop_too_short", [good[:n] for n in (42, 45, 50, 57, 63)], times=4)
    # Truncated before the UDP port: not ours to judge.
    send("underlay_pass", [good[:n] for n in (14, 20, 33, 38)], times=5)
    send("drop_bad_vxlan", [vxlan(42, flags=0x0C), vxlan(42, flags=0x00)], times=10)
    send("drop_unknown_vni", [vxlan(999), vxlan(0xFFFFFF)], times=10)
    # Spoofed outer source: not a VTEP of VNI 42; a VTEP of 42 but not of 43.
    send("drop_unknown_vtep", [vxlan(42, src=a["attacker_ip"]), vxlan(43)], times=10)
    # Inner frame for the other network's container, in VNI 42: VNI-keyed, it reaches nobody.
    send("drop_no_endpoint", [vxlan(42, inner_dst=a["other_vni_mac"])], times=20)
    # Broadcast inside the tunnel from a VTEP of the network: delivered to the network's bridge
    # on the host (its members), never anywhere else.
    send("decap_flood", [vxlan(42, inner_dst="ff:ff:ff:ff:ff:ff")], times=500)
    # Fragments and IP options: left to the host stack. There the agent's GRO helper device
    # (ovgro4789) has a VXLAN socket, so a whole packet reaches the kernel's own
    # decapsulation, whose output the helper's gro_sink drops: one drop_kernel_vxlan each.
    frag = vxlan(42)
    frag[IP].flags = "MF"
    send("underlay_fragment", [frag], times=20)  # a first fragment alone: never reassembled
    opts = vxlan(42)
    opts[IP].options = [b"\x01\x01\x01\x00"]
    send("underlay_ip_options", [opts], times=20, also="drop_kernel_vxlan")
    for i in range(5):
        # Both fragments of one valid packet: the host reassembles it for the socket.
        whole = vxlan(42) / Raw(b"f" * 200)
        whole[IP].id = 4000 + i
        first, *rest = fragment(whole, fragsize=120)
        send("underlay_fragment", [first], also="drop_kernel_vxlan")
        send("underlay_pass", rest)
    # Full-size frames from a stranger.
    big = vxlan(42, src=a["attacker_ip"]) / Raw(b"z" * 1380)
    send("drop_unknown_vtep", [big], times=20)
    return sent


def flood(iface, a):
    """As many VXLAN frames for an unknown VNI as a raw socket can send, `a["count"]` of them:
    drops at the highest rate this machine makes, for the monitor's rate limit."""
    import socket

    frame = bytes(
        Ether(src=a["attacker_mac"], dst=a["host_mac"])
        / IP(src=a["legit_vtep"], dst=a["host_ip"])
        / UDP(sport=40000, dport=4789)
        / VXLAN(flags=0x08, vni=999)
        / Ether(src=a["sender_mac"], dst=a["victim_mac"])
        / IP(src=a["sender_ip"], dst=a["victim_ip"])
        / ICMP()
    )
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    sent = 0
    for _ in range(a["count"]):
        try:
            s.send(frame)
            sent += 1
        except BlockingIOError:
            pass
    return {"drop_unknown_vni": sent}


def container(iface, a):
    sent = {}

    def send(reason, frames, times=1):
        frames = [bytes(f) for f in frames] * times
        sendp([Raw(f) for f in frames], iface=iface)
        sent[reason] = sent.get(reason, 0) + len(frames)

    me, peer = a["my_mac"], a["peer_mac"]
    ip = IP(src=a["my_ip"], dst=a["peer_ip"]) / ICMP()
    send("drop_spoofed_mac", [Ether(src="02:42:de:ad:be:ef", dst=peer) / ip], times=20)
    send(
        "drop_spoofed_ip",
        [Ether(src=me, dst=peer) / IP(src=a["peer_ip"], dst=a["peer_ip"]) / ICMP()],
        times=20,
    )
    # An ARP reply claiming the peer's address, and one with a forged sender MAC.
    claim = ARP(op=2, hwsrc=me, psrc=a["peer_ip"], hwdst="ff:ff:ff:ff:ff:ff", pdst=a["peer_ip"])
    send("drop_spoofed_ip", [Ether(src=me, dst="ff:ff:ff:ff:ff:ff") / claim], times=20)
    forged = ARP(op=1, hwsrc=peer, psrc=a["my_ip"], pdst=a["peer_ip"])
    send("drop_spoofed_mac", [Ether(src=me, dst="ff:ff:ff:ff:ff:ff") / forged], times=20)
    # An IGMP report from the peer's address: dropped before it is snooped, so it never makes
    # this host a member of anything.
    igmp = bytes([0x16, 0, 0xFA, 0xF4, 239, 10, 0, 1])
    spoofed_report = Ether(src=me, dst="01:00:5e:0a:00:01") / IP(
        src=a["peer_ip"], dst="239.10.0.1", ttl=1, proto=2
    ) / Raw(igmp)
    send("drop_spoofed_ip", [spoofed_report], times=20)
    # An Ethernet header that promises IPv4 and stops.
    send("drop_too_short", [bytes(Ether(src=me, dst=peer, type=0x0800))], times=20)
    # A burst of broadcast (under the network's storm limit): to the network's other hosts, as
    # any broadcast.
    storm = Ether(src=me, dst="ff:ff:ff:ff:ff:ff") / IP(src=a["my_ip"], dst="255.255.255.255") / UDP(dport=9)
    send("flood", [storm], times=500)
    # Straight at the other network's container: not in this VNI's FDB, so it stays local.
    other = Ether(src=me, dst=a["other_vni_mac"]) / IP(src=a["my_ip"], dst=a["peer_ip"]) / ICMP()
    send("container_pass", [other], times=20)
    return sent


if __name__ == "__main__":
    mode, iface, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps({"underlay": underlay, "container": container, "flood": flood}[mode](iface, args)))
