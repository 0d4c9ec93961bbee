"""The macvtap lab: a host with uplinks into a LAN switch, a LAN host, and guest namespaces.

    guest namespaces ── macvtap ports ──┐
                                        host ns: eth1..ethN (veth) ──── switch ns: bridge 'lan'
                                                                          sw1..swN (hairpin off/on)
                                                                          swlan ──── LAN host ns
The switch is a bridge in a namespace of its own, so "an external switch port with hairpin on"
(a 802.1Qbg reflective relay) is one bridge-port flag. Every namespace is created through the
caller's factory (the tests' ``make_netns``), which deletes them afterwards.

Also here: UDP senders and receivers that measure a rate at the Ethernet level (what tc
shapes), for the bandwidth tests.
"""

from __future__ import annotations

import select
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CMD_TIMEOUT_S = 20.0
SUBNET = "10.77.0"
PREFIX = 24
HOST_IP = f"{SUBNET}.1"
LAN_IP = f"{SUBNET}.100"
# Ethernet (14) + IPv4 (20) + UDP (8) header bytes around each datagram's payload
UDP_FRAME_OVERHEAD = 42


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True,
                          timeout=CMD_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise AssertionError(f"ip -n {ns} {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def sysctl(ns: str, key: str, value: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"],
                   check=True, capture_output=True, timeout=CMD_TIMEOUT_S)


@dataclass
class Lab:
    host: str
    switch: str
    lan: str
    uplinks: list[str] = field(default_factory=list)

    def switch_port(self, uplink: str) -> str:
        return "sw" + uplink.removeprefix("eth")

    def set_hairpin(self, uplink: str, on: bool) -> None:
        ip(self.switch, "link", "set", "dev", self.switch_port(uplink), "type", "bridge_slave",
           "hairpin", "on" if on else "off")

    def forget(self, *guests: str) -> None:
        """A clean state for the next probe: what earlier traffic taught the lab's namespaces
        and GUESTS (neighbour caches, the switch's learned MACs) is forgotten."""
        from virtnet.insight.lab import clean_namespaces

        namespaces = {ns: [] for ns in (self.host, self.lan, *guests)}
        clean_namespaces({self.switch: ["lan"], **namespaces})

    def link_mac(self, ns: str, name: str) -> str:
        import json

        return str(json.loads(ip(ns, "-j", "link", "show", "dev", name).stdout)[0]["address"])

    def move_to_guest(self, device: str, guest: str, address: str) -> None:
        """Make a port's device a guest's interface: moved into GUEST, addressed, up (a
        macvtap then behaves as a macvlan of its mode)."""
        ip(self.host, "link", "set", "dev", device, "netns", guest)
        ip(guest, "address", "add", f"{address}/{PREFIX}", "dev", device)
        ip(guest, "link", "set", "dev", device, "up")

    def move_back(self, device: str, guest: str) -> None:
        ip(guest, "link", "set", "dev", device, "netns", self.host)

    def veth_guest(self, guest: str, mac: str, address: str, host_end: str) -> None:
        """A guest behind a veth whose host end HOST_END a relay will serve (see vmnic)."""
        ip(self.host, "link", "add", host_end, "type", "veth", "peer", "name", "eth0",
           "netns", guest)
        sysctl(self.host, f"net.ipv6.conf.{host_end}.disable_ipv6", "1")
        ip(self.host, "link", "set", "dev", host_end, "up")
        ip(guest, "link", "set", "dev", "eth0", "address", mac)
        ip(guest, "address", "add", f"{address}/{PREFIX}", "dev", "eth0")
        ip(guest, "link", "set", "dev", "eth0", "up")


def build_lab(make_netns: Callable[[], str], uplinks: int = 3, host_address: bool = True) -> Lab:
    lab = Lab(host=make_netns(), switch=make_netns(), lan=make_netns())
    ip(lab.switch, "link", "add", "lan", "type", "bridge", "stp_state", "0",
       "forward_delay", "0")
    ip(lab.switch, "link", "set", "dev", "lan", "up")
    for number in range(1, uplinks + 1):
        uplink, port = f"eth{number}", f"sw{number}"
        ip(lab.host, "link", "add", uplink, "type", "veth", "peer", "name", port,
           "netns", lab.switch)
        ip(lab.switch, "link", "set", "dev", port, "master", "lan")
        ip(lab.switch, "link", "set", "dev", port, "up")
        ip(lab.host, "link", "set", "dev", uplink, "up")
        lab.uplinks.append(uplink)
    if host_address:
        ip(lab.host, "address", "add", f"{HOST_IP}/{PREFIX}", "dev", "eth1")
    ip(lab.lan, "link", "add", "eth0", "type", "veth", "peer", "name", "swlan",
       "netns", lab.switch)
    ip(lab.switch, "link", "set", "dev", "swlan", "master", "lan")
    ip(lab.switch, "link", "set", "dev", "swlan", "up")
    ip(lab.lan, "address", "add", f"{LAN_IP}/{PREFIX}", "dev", "eth0")
    ip(lab.lan, "link", "set", "dev", "eth0", "up")
    return lab


# --- rate measurement (run inside namespaces, in forked children) --------------------------


def udp_sink(port: int, seconds: float, warmup: float) -> dict[str, float]:
    """Receive UDP on PORT; from WARMUP s after the first datagram until SECONDS after it,
    measure the rate of Ethernet frames (payload + headers) and of payload."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind(("0.0.0.0", port))
        first = None
        frames = payload = 0
        window_start = window_end = 0.0
        deadline = time.monotonic() + seconds + 15.0
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], 1.0)
            if not ready:
                if first is not None:
                    break
                continue
            data = sock.recv(65536)
            now = time.monotonic()
            if first is None:
                first = now
                window_start, window_end = first + warmup, first + seconds
            if now >= window_end:
                break
            if now >= window_start:
                payload += len(data)
                frames += len(data) + UDP_FRAME_OVERHEAD
        span = window_end - window_start
        return {"frame_rate": frames / span, "payload_rate": payload / span}


def udp_blast(address: str, port: int, rate: float, seconds: float, size: int = 1400) -> int:
    """Send SIZE-byte datagrams to ADDRESS:PORT at RATE bytes/s (payload) for SECONDS."""
    sent = 0
    payload = b"v" * size
    interval = size / rate
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        next_send = start
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                break
            if now < next_send:
                time.sleep(min(next_send - now, 0.01))
                continue
            try:
                sock.sendto(payload, (address, port))
                sent += 1
            except OSError:
                pass  # a full queue: the shaper is doing its job
            next_send += interval
    return sent


__all__ = ["HOST_IP", "LAN_IP", "Lab", "build_lab", "ip", "udp_blast", "udp_sink"]
