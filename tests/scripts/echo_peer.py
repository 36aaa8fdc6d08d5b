#!/usr/bin/python3
"""Who am I to the other side? A server that answers each TCP connection and UDP datagram with
the peer address it saw, and the client that asks.

  echo_peer.py serve ADDR PORT          # TCP and UDP on ADDR:PORT until killed; prints "ready"
  echo_peer.py ask tcp|udp ADDR PORT    # prints the address the server saw, or fails

An ADDR with a colon is IPv6.
"""
import socket
import sys
import threading


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def serve(addr, port):
    tcp = socket.socket(family(addr), socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((addr, port))
    tcp.listen(16)
    udp = socket.socket(family(addr), socket.SOCK_DGRAM)
    udp.bind((addr, port))

    def udp_loop():
        while True:
            _, peer = udp.recvfrom(2048)
            udp.sendto(peer[0].encode(), peer)

    threading.Thread(target=udp_loop, daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, peer = tcp.accept()
        conn.sendall(peer[0].encode())
        conn.close()


def ask(proto, addr, port):
    if proto == "tcp":
        s = socket.create_connection((addr, port), timeout=3)
        print(s.recv(64).decode())
    else:
        s = socket.socket(family(addr), socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(b"?", (addr, port))
        print(s.recvfrom(64)[0].decode())


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        ask(sys.argv[2], sys.argv[3], int(sys.argv[4]))
