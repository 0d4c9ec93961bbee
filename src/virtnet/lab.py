"""The lab: a sandbox of network namespaces in which a network runs for real, so that the
reachability :mod:`virtnet.reach` predicts is measured, cell by cell.

    guests ── a veth on the bridge, or a macvtap port moved in ──┐
                                                    host ns (virtnet runs here)
                           uplinks named by the definition (eth1..) │ veth pairs
    upstream ns ── lan ns (LAN host, router) ── switch ns: bridge 'lan', a port per
                                                uplink (hairpin on/off), one for lan

- The host namespace gets the uplinks the definition names (a nat/route/open network without a
  forward dev gets eth1), its LAN address on the first of them (on the host bridge for a host
  bridge network, which the lab creates with that uplink in it; on an extra interface for
  passthrough, whose uplinks belong to the guests), and a default route via the LAN router.
- The network is defined and started with virtnet's engine in a child process that entered the
  host namespace; macvtap guests get their ports with virtnet's port manager the same way.
- Guests on a bridge get a veth on it (what a VM's tap is), and take their address by real DHCP
  (udhcpc, dhcpcd or dhclient) when the network serves it; other guests get static addresses.
- Every ordered pair is probed with ICMP echo from inside the source namespace: a "yes" is a
  round trip, the request and its reply. Each probe starts from a clean state: the neighbour
  caches of every namespace flushed and seen empty, the bridges' learned MACs forgotten, so
  that no probe profits from (or suffers by) an earlier one's ARP. (A guest that learned the
  host's MAC from the host's own ARP request would reach it although its own ARP never could.)

Everything is removed at the end, even on failure or Ctrl-C (SIGINT and SIGTERM): the network
is destroyed, processes left in the lab's namespaces are killed by pid, the namespaces (named
``vnt-lab-<random>-<role>``) deleted, the state directory removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pickle
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtnet.errors import VirtnetError
from virtnet.model import ForwardMode, Network
from virtnet.reach import (
    HOST,
    LAN,
    UPSTREAM,
    Cell,
    Fix,
    Topology,
    bridge_address,
    guest_name,
    ipv4_network,
    pool,
    predict,
    serves_dhcp,
)

NS_PREFIX = "vnt-lab-"
CMD_TIMEOUT_S = 20.0
CHILD_TIMEOUT_S = 90.0
DHCP_TIMEOUT_S = 45.0
FORWARDING_TIMEOUT_S = 15.0
DHCP_CLIENTS = ("udhcpc", "dhcpcd", "dhclient")
SWITCH_BRIDGE = "lan"
LAN_ROUTER_HOST = 100  # the LAN router's host number in the LAN subnet
HOST_HOST = 1  # the host's
FIRST_GUEST_HOST = 10  # guest i gets host number FIRST_GUEST_HOST + i when static
LAN_CANDIDATES = ("10.77.0.0/24", "10.78.0.0/24", "172.30.77.0/24")
UPSTREAM_CANDIDATES = ("198.51.100.0/24", "203.0.113.0/24")
SCRATCH_CANDIDATES = ("172.31.99.0/24", "10.79.0.0/24")  # guests of a bridge without IPv4
PASSTHROUGH_HOST_LINK = "lanmgmt"
GUEST_MAC_PREFIX = "52:54:00:77"
CLEAN_ATTEMPTS = 20  # flushes before a probe, until no namespace has a learned neighbour left
CLEAN_PAUSE_S = 0.05
KEPT_NEIGHBOURS = {"PERMANENT", "NOARP"}  # configuration, not something a probe taught


class LabError(VirtnetError):
    """The lab could not be built (missing tools, an unsupported definition)."""


# --- running things -----------------------------------------------------------------------------


def _run(argv: list[str], *, check: bool = True, input: str | None = None,
         timeout: float = CMD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, input=input,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def _ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", "-n", ns, *args], check=check)


def _ip_batch(ns: str, lines: list[str]) -> None:
    """Several ``ip`` commands in one process (stops at the first that fails)."""
    if lines:
        _run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")


def _sysctl(ns: str, key: str, value: str) -> None:
    _run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"])


def ns_pids(ns: str) -> list[int]:
    """Pids of the processes whose network namespace is NS."""
    from virtnet.host.netns import pids_in_netns

    return pids_in_netns(ns)


def call_in_netns(ns: str, fn: Callable[..., Any], *args: Any,
                  timeout: float = CHILD_TIMEOUT_S) -> Any:
    """fn(*args) evaluated in a forked child that entered NS; its exception is re-raised here.

    The child never returns into the caller's code: it exits right after sending its result.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(read_fd)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides and cleans up
            from virtnet.host.netns import enter_netns

            try:
                enter_netns(ns)
                payload: tuple[str, Any] = ("ok", fn(*args))
            except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
                payload = ("error", (exc, traceback.format_exc()))
            try:
                data = pickle.dumps(payload)
                pickle.loads(data)
            except Exception:  # noqa: BLE001 - what cannot travel goes back as text
                text = payload[1][1] if payload[0] == "error" else traceback.format_exc()
                data = pickle.dumps(("error", (None, text)))
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
        except BaseException:  # noqa: BLE001
            status = 70
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        with os.fdopen(read_fd, "rb") as inp:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LabError(f"a step inside {ns} did not finish within {timeout:.0f} s")
                ready, _, _ = select.select([inp], [], [], remaining)
                if ready:
                    chunk = os.read(inp.fileno(), 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
    finally:
        with contextlib.suppress(ProcessLookupError):
            if not chunks:
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if not chunks:
        raise LabError(f"a step inside {ns} died without a result")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "ok":
        return value
    exc, text = value
    if isinstance(exc, Exception):
        raise exc
    raise LabError(f"a step inside {ns} failed:\n{text}")


def icmp_echo(address: str, attempts: int, timeout: float) -> bool:
    """One ICMP echo per attempt over a raw socket (``ping`` may be missing); True when
    ADDRESS answers one within TIMEOUT seconds."""

    def checksum(data: bytes) -> int:
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        total = (total >> 16) + (total & 0xFFFF)
        total += total >> 16
        return ~total & 0xFFFF

    ident = os.getpid() & 0xFFFF
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except OSError as exc:
        raise LabError(f"cannot open a raw ICMP socket: {exc.strerror}") from None
    with sock:
        for seq in range(1, attempts + 1):
            body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"virtnet-lab-probe"
            body += b"\0" * (len(body) % 2)
            packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
            try:
                sock.sendto(packet, (address, 0))
            except OSError:
                time.sleep(timeout)  # no route: the attempt fails the same way as silence
                continue
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], remaining)
                if not ready:
                    break
                data, (source, _) = sock.recvfrom(2048)
                header_len = (data[0] & 0x0F) * 4
                icmp_type, _, _, reply_id, reply_seq = struct.unpack(
                    "!BBHHH", data[header_len:header_len + 8])
                if (icmp_type, source, reply_id, reply_seq) == (0, address, ident, seq):
                    return True
    return False


# --- the pieces ------------------------------------------------------------------------------


@dataclass
class LabOptions:
    guests: int = 2
    hairpin: bool = False
    dhcp_client: str = "udhcpc"
    probe_attempts: int = 2
    probe_timeout: float = 0.5  # seconds per attempt: a "no" costs attempts x timeout


@dataclass
class LabGuest:
    name: str  # guest1..
    ns: str
    mac: str
    iface: str | None = None  # its interface inside its namespace (None: it got no port)
    address: str | None = None  # "192.168.122.57/24"
    how: str = ""  # "dhcp (udhcpc)", "static", "no port: ..."
    uplink: str | None = None  # macvtap: the uplink its port is on
    host_end: str | None = None  # veth: its end on the bridge, in the host namespace

    @property
    def ip(self) -> str | None:
        return self.address.split("/")[0] if self.address else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.ns, "mac": self.mac,
                "interface": self.iface, "address": self.address, "how": self.how,
                "uplink": self.uplink}


@dataclass
class LabCell:
    src: str
    dst: str
    predicted: bool
    measured: bool
    reason: str
    fix: tuple[Fix, ...] = ()

    @property
    def matches(self) -> bool:
        return self.predicted == self.measured

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.src, "to": self.dst, "predicted": self.predicted,
                "measured": self.measured, "reason": self.reason,
                "fix": [f.to_dict() for f in self.fix]}


@dataclass
class LabReport:
    network: str
    mode: str
    hairpin: bool
    dhcp_client: str
    guests: list[LabGuest]
    cells: list[LabCell]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def matched(self) -> int:
        return sum(cell.matches for cell in self.cells)

    @property
    def all_match(self) -> bool:
        return self.matched == len(self.cells)

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "mode": self.mode,
            "hairpin": self.hairpin,
            "dhcp_client": self.dhcp_client,
            "guests": [g.to_dict() for g in self.guests],
            "cells": [c.to_dict() for c in self.cells],
            "matched": self.matched,
            "total": len(self.cells),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


# --- steps run inside the host namespace (forked children) -------------------------------------


def _engine(state: str) -> Any:
    from virtnet.engine import Engine
    from virtnet.paths import StatePaths

    return Engine(StatePaths.under(Path(state)))


def _start_network(state: str, xml: str) -> str:
    """Define and start the network; returns its definition as started (defaults assigned)."""
    engine = _engine(state)
    net = engine.define(xml, source="lab")
    engine.start(net.name)
    return engine.dumpxml(net.name)


def _create_port(state: str, network: str, mac: str, owner: str) -> dict[str, Any]:
    from virtnet.ports import PortManager, PortRequest

    return PortManager(_engine(state)).create(network, PortRequest(mac=mac, owner_name=owner)) \
        .summary()


def _host_kernel_settings(uplinks: list[str], addressed: str
                          ) -> tuple[bool, tuple[str, ...]]:
    """br_netfilter, and the UPLINKS that answer ARP for the host's address on ADDRESSED (the
    lab's namespaces take their IPv4 settings from the machine's initial namespace)."""
    from virtnet.doctor import arp_flux_links
    from virtnet.host.sysctl import sysctl_get

    br_netfilter = (sysctl_get("net/bridge/bridge-nf-call-iptables") or "").strip() == "1"
    return br_netfilter, arp_flux_links(uplinks, {addressed})


def _destroy_network(state: str, network: str) -> None:
    engine = _engine(state)
    if engine.lookup(network).status is not None:
        engine.destroy(network)


def clean_namespaces(bridges: dict[str, list[str]]) -> None:
    """Forget what earlier traffic taught the namespaces BRIDGES names (namespace → its bridges):
    each one's neighbour cache flushed, and seen empty again and again until no late frame of
    earlier traffic refills it; each bridge's learned MACs flushed. Entries that are
    configuration (permanent, noarp) stay."""
    pending = dict(bridges)
    for attempt in range(CLEAN_ATTEMPTS):
        if attempt:
            time.sleep(CLEAN_PAUSE_S)
        for ns, names in list(pending.items()):
            lines = ["neigh flush all"]
            lines += [f"link set dev {bridge} type bridge fdb_flush" for bridge in names]
            lines.append("neigh show")
            out = _run(["ip", "-j", "-n", ns, "-batch", "-"],
                       input="\n".join(lines) + "\n").stdout
            learned = [entry for entry in json.loads(out or "[]")
                       if not KEPT_NEIGHBOURS & set(entry.get("state", []))]
            if not learned:
                del pending[ns]
        if not pending:
            return
    raise LabError("the neighbour caches of " + ", ".join(pending) +
                   f" did not stay empty after {CLEAN_ATTEMPTS} flushes")


# --- DHCP clients ------------------------------------------------------------------------------

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew)
    ip address add "$ip/$mask" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done ;;
esac
exit 0
"""

DHCLIENT_SCRIPT = """#!/bin/sh
case "$reason" in
  BOUND|REBOOT|RENEW)
    ip address add "$new_ip_address/$new_subnet_mask" dev "$interface"
    for r in $new_routers; do ip route add default via "$r" dev "$interface"; break; done ;;
esac
exit 0
"""


def _tool(name: str) -> str | None:
    return shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin")


def _kill_pidfile(path: Path, program: str) -> None:
    """Stop a client that stayed in the background, by its pid file (checked by name)."""
    try:
        pid = int(path.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return
    if comm == program:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def run_dhcp_client(client: str, ns: str, iface: str, workdir: Path) -> None:
    """Configure IFACE in NS by DHCP with CLIENT (address and default route); bounded."""
    workdir.mkdir(parents=True, exist_ok=True)
    binary = _tool(client)
    if binary is None:
        raise LabError(f"the DHCP client {client} is not installed")
    if client == "udhcpc":
        script = workdir / "udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        pidfile = workdir / "udhcpc.pid"
        try:
            _run(["ip", "netns", "exec", ns, binary, "-f", "-q", "-n", "-t", "12", "-T", "3",
                  "-i", iface, "-s", str(script), "-p", str(pidfile)], timeout=DHCP_TIMEOUT_S)
        finally:
            _kill_pidfile(pidfile, "udhcpc")
    elif client == "dhclient":
        script = workdir / "dhclient.sh"
        script.write_text(DHCLIENT_SCRIPT)
        script.chmod(0o755)
        conf = workdir / "dhclient.conf"
        conf.write_text("timeout 20;\n")
        pidfile = workdir / "dhclient.pid"
        try:
            _run(["ip", "netns", "exec", ns, binary, "-4", "-1", "-cf", str(conf),
                  "-pf", str(pidfile), "-lf", str(workdir / "dhclient.leases"),
                  "-sf", str(script), iface], timeout=DHCP_TIMEOUT_S)
        finally:
            _kill_pidfile(pidfile, "dhclient")  # it stays in the background once bound
    elif client == "dhcpcd":
        # dhcpcd keeps pid and lease files under /run and /var/lib/dhcpcd: a tmpfs over each,
        # in the private mount namespace of `ip netns exec`, keeps them the guest's own. It
        # sets the address and routes itself; no hook script runs (-c /bin/true).
        shell = ("mount -t tmpfs tmpfs /run && mkdir -p /var/lib/dhcpcd && "
                 "mount -t tmpfs tmpfs /var/lib/dhcpcd && "
                 f"{binary} -f /dev/null -c /bin/true --noarp -4 -1 -t 20 {iface}; "
                 f"status=$?; {binary} -f /dev/null -x {iface} >/dev/null 2>&1; exit $status")
        _run(["ip", "netns", "exec", ns, "sh", "-c", shell], timeout=DHCP_TIMEOUT_S)
    else:
        raise LabError(f"unknown DHCP client {client!r} (one of {', '.join(DHCP_CLIENTS)})")


# --- the lab -----------------------------------------------------------------------------------


def _pick_subnet(candidates: tuple[str, ...], taken: list[ipaddress.IPv4Network]
                 ) -> ipaddress.IPv4Network:
    for text in candidates:
        subnet = ipaddress.IPv4Network(text)
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise LabError("every lab subnet overlaps the network's own addresses")


def _host(subnet: ipaddress.IPv4Network, number: int) -> ipaddress.IPv4Address:
    return subnet.network_address + number


class Lab:
    """One sandbox for one network definition. Use as a context manager: leaving it (however)
    tears everything down."""

    def __init__(self, net: Network, xml: str, options: LabOptions | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.options = options or LabOptions()
        if self.options.guests < 1:
            raise LabError("a lab needs at least one guest")
        if self.options.dhcp_client not in DHCP_CLIENTS:
            raise LabError(f"unknown DHCP client {self.options.dhcp_client!r}")
        if net.forward_mode is ForwardMode.HOSTDEV:
            raise LabError("forward mode 'hostdev' needs SR-IOV hardware; the lab cannot "
                           "emulate virtual functions")
        if net.forward is not None and net.forward.pfs:
            raise LabError("a pool given by <pf dev=...> needs SR-IOV hardware; name the "
                           "interfaces with <interface dev=...> for the lab")
        self.net = net  # replaced by the started definition (defaults assigned)
        self.xml = xml
        self.progress = progress or (lambda message: None)
        self.token = secrets.token_hex(3)
        self.namespaces: dict[str, str] = {}
        self.guests: list[LabGuest] = []
        self.timings: dict[str, float] = {}
        self.state: Path | None = None
        self.started = False
        taken = [n for n in (ipv4_network(net),) if n is not None]
        taken += [r.network for r in net.routes if isinstance(r.network, ipaddress.IPv4Network)]
        self.lan_subnet = _pick_subnet(LAN_CANDIDATES, taken)
        self.upstream_subnet = _pick_subnet(UPSTREAM_CANDIDATES, taken + [self.lan_subnet])
        self.scratch_subnet = _pick_subnet(SCRATCH_CANDIDATES, taken + [self.lan_subnet])
        self.uplinks = self._uplink_names(net)
        self.switch_ports = {uplink: f"sw{i}" for i, uplink in enumerate(self.uplinks, 1)}
        self.host_link = self._host_link_name(net)
        self.applied_fixes: list[Fix] = []
        self.shim = False
        self.lan_route = False

    # --- names and addresses ----------------------------------------------------------------

    @staticmethod
    def _uplink_names(net: Network) -> list[str]:
        names = list(pool(net))
        if net.forward is not None and net.forward.dev and net.forward.dev not in names:
            names.insert(0, net.forward.dev)
        if not names:
            names = ["eth1"]
        for name in names:
            if not 0 < len(name) <= 15 or "/" in name or name in ("lo", SWITCH_BRIDGE):
                raise LabError(f"the lab cannot create an uplink named {name!r}")
        return names

    def _host_link_name(self, net: Network) -> str:
        """Where the host's LAN address goes."""
        if net.forward_mode is ForwardMode.BRIDGE and net.bridge_name:
            return net.bridge_name
        if net.forward_mode is ForwardMode.PASSTHROUGH:
            return PASSTHROUGH_HOST_LINK
        return self.uplinks[0]

    @property
    def host_lan_ip(self) -> ipaddress.IPv4Address:
        return _host(self.lan_subnet, HOST_HOST)

    @property
    def lan_ip(self) -> ipaddress.IPv4Address:
        return _host(self.lan_subnet, LAN_ROUTER_HOST)

    @property
    def upstream_ip(self) -> ipaddress.IPv4Address:
        return _host(self.upstream_subnet, 2)

    def ns(self, role: str) -> str:
        return self.namespaces[role]

    # --- building ----------------------------------------------------------------------------

    def _add_ns(self, role: str) -> str:
        name = f"{NS_PREFIX}{self.token}-{role}"
        # recorded before it exists: an interrupt while `ip netns add` runs must not leave a
        # namespace that teardown does not know (deleting a missing one is harmless)
        self.namespaces[role] = name
        _run(["ip", "netns", "add", name])
        _ip(name, "link", "set", "lo", "up")
        return name

    def build(self) -> None:
        """The host, the switch, the LAN router and upstream, wired; no network yet."""
        for tool in ("ip", "bridge"):
            if _tool(tool) is None:
                raise LabError(f"the lab needs {tool} (iproute2)")
        began = time.monotonic()
        self.progress("creating namespaces: host, switch, LAN router, upstream")
        host, switch = self._add_ns("host"), self._add_ns("switch")
        lan, upstream = self._add_ns("lan"), self._add_ns("upstream")
        _ip_batch(switch, [
            f"link add {SWITCH_BRIDGE} type bridge stp_state 0 forward_delay 0",
            f"link set dev {SWITCH_BRIDGE} up",
        ])
        self.progress(f"plugging uplinks {', '.join(self.uplinks)} into the LAN switch "
                      f"(hairpin {'on' if self.options.hairpin else 'off'})")
        links = list(self.uplinks)
        if self.host_link == PASSTHROUGH_HOST_LINK:
            links.append(PASSTHROUGH_HOST_LINK)
            self.switch_ports[PASSTHROUGH_HOST_LINK] = "swmgmt"
        for link in links:
            port = self.switch_ports[link]
            _ip(host, "link", "add", link, "type", "veth", "peer", "name", port,
                "netns", switch)
            hairpin = "on" if self.options.hairpin else "off"
            _ip_batch(switch, [f"link set dev {port} master {SWITCH_BRIDGE}",
                               f"link set dev {port} type bridge_slave hairpin {hairpin}",
                               f"link set dev {port} up"])
            _ip(host, "link", "set", "dev", link, "up")
        # the LAN router: on the switch, and the way to upstream
        _ip(lan, "link", "add", "eth0", "type", "veth", "peer", "name", "swlan", "netns", switch)
        _ip_batch(switch, [f"link set dev swlan master {SWITCH_BRIDGE}", "link set dev swlan up"])
        _ip(lan, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns",
            upstream)
        prefix = self.lan_subnet.prefixlen
        up_prefix = self.upstream_subnet.prefixlen
        _ip_batch(lan, [
            f"address add {self.lan_ip}/{prefix} dev eth0", "link set dev eth0 up",
            f"address add {_host(self.upstream_subnet, 1)}/{up_prefix} dev eth1",
            "link set dev eth1 up",
        ])
        _sysctl(lan, "net.ipv4.ip_forward", "1")
        _ip_batch(upstream, [
            f"address add {self.upstream_ip}/{up_prefix} dev eth0", "link set dev eth0 up",
            f"route add default via {_host(self.upstream_subnet, 1)}",
        ])
        # the host's own LAN address and default route
        if self.net.forward_mode is ForwardMode.BRIDGE and self.net.bridge_name:
            bridge = self.net.bridge_name
            self.progress(f"creating the host bridge {bridge} with {self.uplinks[0]} in it")
            _ip_batch(host, [f"link add {bridge} type bridge stp_state 0 forward_delay 0",
                             f"link set dev {self.uplinks[0]} master {bridge}",
                             f"link set dev {bridge} up"])
        _ip_batch(host, [f"address add {self.host_lan_ip}/{prefix} dev {self.host_link}",
                         f"link set dev {self.host_link} up",
                         f"route add default via {self.lan_ip}"])
        self.timings["build"] = time.monotonic() - began

    def start_network(self) -> None:
        began = time.monotonic()
        # dnsmasq drops root and must still read its files: the state must be traversable
        self.state = Path(tempfile.mkdtemp(prefix="virtnet-lab-"))
        self.state.chmod(0o755)
        self.progress(f"starting network {self.net.name} with virtnet in the host namespace")
        started_xml = call_in_netns(self.ns("host"), _start_network, str(self.state / "state"),
                                    self.xml)
        self.started = True
        from virtnet.xml.parse import parse_network

        self.net = parse_network(started_xml, source="lab")
        self.timings["start"] = time.monotonic() - began

    def _guest_macs(self) -> list[str]:
        """Reserved MACs first (so reservations are exercised), then lab MACs."""
        reserved = [h.mac for ip in self.net.ipv4_defs() for h in ip.hosts if h.mac]
        macs = [m.lower() for m in reserved]
        index = 1
        while len(macs) < self.options.guests:
            mac = f"{GUEST_MAC_PREFIX}:{self.token[:2]}:{index:02x}"
            if mac not in macs:
                macs.append(mac)
            index += 1
        return macs[: self.options.guests]

    def add_guests(self) -> None:
        began = time.monotonic()
        net = self.net
        macs = self._guest_macs()
        for index in range(1, self.options.guests + 1):
            name = guest_name(index)
            self.guests.append(LabGuest(name, self._add_ns(name), macs[index - 1]))
        if net.uses_macvtap:
            self._macvtap_guests()
        else:
            self._bridge_guests()
        self.timings["guests"] = time.monotonic() - began

    def _macvtap_guests(self) -> None:
        from virtnet.ports import PortError

        assert self.state is not None
        for guest in self.guests:
            self.progress(f"{guest.name}: port-create on {self.net.name}")
            try:
                port = call_in_netns(self.ns("host"), _create_port, str(self.state / "state"),
                                     self.net.name, guest.mac, guest.name)
            except PortError as exc:
                guest.how = f"no port: {exc}"
                continue
            guest.iface, guest.uplink = port["device"], port["uplink"]
            address = f"{_host(self.lan_subnet, FIRST_GUEST_HOST + int(guest.name[5:]))}"
            guest.address = f"{address}/{self.lan_subnet.prefixlen}"
            guest.how = f"static (macvtap {port['mode']} on {port['uplink']})"
            _ip(self.ns("host"), "link", "set", "dev", guest.iface, "netns", guest.ns)
            _ip_batch(guest.ns, [f"address add {guest.address} dev {guest.iface}",
                                 f"link set dev {guest.iface} up",
                                 f"route add default via {self.lan_ip}"])

    def _bridge_guests(self) -> None:
        net = self.net
        bridge = net.bridge_name
        assert bridge is not None
        host = self.ns("host")
        for guest in self.guests:
            guest.host_end = f"vlab{guest.name[5:]}"
            guest.iface = "eth0"
            _ip(host, "link", "add", guest.host_end, "type", "veth", "peer", "name", "eth0",
                "netns", guest.ns)
            lines = [f"link set dev {guest.host_end} master {bridge}"]
            if net.port_isolated:  # what a tap port of the network would get
                lines.append(f"link set dev {guest.host_end} type bridge_slave isolated on")
            lines.append(f"link set dev {guest.host_end} up")
            _ip_batch(host, lines)
            _ip_batch(guest.ns, [f"link set dev eth0 address {guest.mac}",
                                 "link set dev eth0 up"])
        self.progress(f"waiting for {bridge} to forward on the guests' ports")
        for guest in self.guests:
            assert guest.host_end is not None
            self._wait_forwarding(host, guest.host_end)
        dhcp = serves_dhcp(net)
        has_range = any(ip.ranges for ip in net.ipv4_defs())
        reserved = {h.mac.lower() for ip in net.ipv4_defs() for h in ip.hosts if h.mac}
        by_dhcp = []
        for index, guest in enumerate(self.guests, start=1):
            if dhcp and (has_range or guest.mac in reserved):
                by_dhcp.append(guest)
            else:
                self._static_bridge_guest(guest, index)
        if by_dhcp:
            client = self.options.dhcp_client
            names = ", ".join(g.name for g in by_dhcp)
            self.progress(f"{names}: DHCP with {client}")
            assert self.state is not None
            workdir = self.state / "guests"
            # all at once: dnsmasq checks each address with a ping before offering it
            with ThreadPoolExecutor(max_workers=len(by_dhcp)) as pool_:
                jobs = [pool_.submit(run_dhcp_client, client, g.ns, "eth0", workdir / g.name)
                        for g in by_dhcp]
                for job in jobs:
                    job.result()
            for guest in by_dhcp:
                guest.address = self._address_of(guest.ns, "eth0")
                guest.how = f"dhcp ({client})"
                if guest.address is None:
                    raise LabError(f"{guest.name} got no address from {client}")

    def _static_bridge_guest(self, guest: LabGuest, index: int) -> None:
        net = self.net
        lines = []
        if net.forward_mode is ForwardMode.BRIDGE:  # a host bridge: a LAN machine
            subnet, gateway = self.lan_subnet, self.lan_ip
        else:
            gateway_if = bridge_address(net)
            if gateway_if is None:
                subnet, gateway = self.scratch_subnet, None
            else:
                subnet, gateway = gateway_if.network, gateway_if.ip
        number = FIRST_GUEST_HOST + index
        address = _host(subnet, number)
        while gateway is not None and address == gateway:
            number += 1
            address = _host(subnet, number)
        guest.address = f"{address}/{subnet.prefixlen}"
        guest.how = "static"
        lines.append(f"address add {guest.address} dev eth0")
        if gateway is not None:
            lines.append(f"route add default via {gateway}")
        _ip_batch(guest.ns, lines)

    @staticmethod
    def _wait_forwarding(ns: str, port: str) -> None:
        """STP walks a new bridge port through listening and learning (2 x 2 s at least)."""
        deadline = time.monotonic() + FORWARDING_TIMEOUT_S
        while time.monotonic() < deadline:
            out = _run(["bridge", "-n", ns, "-j", "link", "show", "dev", port]).stdout
            if any(entry.get("state") == "forwarding" for entry in json.loads(out or "[]")):
                return
            time.sleep(0.05)
        raise LabError(f"bridge port {port} did not start forwarding within "
                       f"{FORWARDING_TIMEOUT_S:.0f} s")

    @staticmethod
    def _address_of(ns: str, iface: str) -> str | None:
        out = _ip(ns, "-j", "-4", "address", "show", "dev", iface).stdout
        for link in json.loads(out or "[]"):
            for info in link.get("addr_info", []):
                return f"{info['local']}/{info['prefixlen']}"
        return None

    # --- prediction and measurement ----------------------------------------------------------

    def topology(self) -> Topology:
        """What the lab built, as reach sees it."""
        br_netfilter, flux = call_in_netns(self.ns("host"), _host_kernel_settings,
                                           list(self.uplinks), self.host_link)
        return Topology(
            guests=len(self.guests),
            hairpin=self.options.hairpin,
            guest_uplinks=tuple(g.uplink for g in self.guests) if self.net.uses_macvtap
            else None,
            host_uplink=self.host_link,
            host_address=f"{self.host_lan_ip}/{self.lan_subnet.prefixlen}",
            uplink_routes=(f"default via {self.lan_ip}",),
            lan_route=self.lan_route,
            host_shim=self.shim,
            switch_ports=dict(self.switch_ports),
            outside_dev=self.host_link,
            host_uplink_port=self.uplinks[0],
            forward_blockers=self.forward_blockers(),
            br_netfilter=br_netfilter,
            flux_uplinks=flux,
        )

    def forward_blockers(self) -> tuple[str, ...]:
        """Other firewall tables in the host namespace whose forward chains drop (a test may
        add one, as Docker would on a real host)."""
        from virtnet.doctor import network_forward_blockers, read_ruleset

        return network_forward_blockers(self.net, call_in_netns(self.ns("host"), read_ruleset))

    def predict(self) -> list[Cell]:
        return predict(self.net, self.topology())

    def target(self, src: str, dst: str) -> str | None:
        """The IPv4 address SRC aims at to reach DST (None: DST has none)."""
        if dst == LAN:
            return str(self.lan_ip)
        if dst == UPSTREAM:
            return str(self.upstream_ip)
        if dst == HOST:
            gateway = bridge_address(self.net)
            if src.startswith("guest") and self.net.forward_mode.has_own_bridge:
                # a guest of a bridge of our own knows the host by the bridge's address
                return str(gateway.ip) if gateway is not None else str(self.host_lan_ip)
            return str(self.host_lan_ip)
        guest = self.guest(dst)
        return guest.ip

    def guest(self, name: str) -> LabGuest:
        return next(g for g in self.guests if g.name == name)

    def source_ns(self, src: str) -> str:
        if src.startswith("guest"):
            return self.guest(src).ns
        return self.ns({HOST: "host", LAN: "lan", UPSTREAM: "upstream"}[src])

    def _bridges(self, role: str) -> list[str]:
        """The bridges in the namespace of ROLE whose learned MACs a probe may leave."""
        if role == "switch":
            return [SWITCH_BRIDGE]
        if role == "host" and self.started and self.net.bridge_name:
            return [self.net.bridge_name]
        return []

    def clean_state(self) -> None:
        """Forget what earlier probes taught (see :func:`clean_namespaces`)."""
        clean_namespaces({ns: self._bridges(role) for role, ns in self.namespaces.items()})

    def probe(self, src: str, dst: str) -> bool:
        if src.startswith("guest") and self.guest(src).ip is None:
            return False  # a guest without an address reaches nobody
        address = self.target(src, dst)
        if address is None:
            return False
        self.clean_state()
        timeout = self.options.probe_attempts * self.options.probe_timeout + 10.0
        return bool(call_in_netns(self.source_ns(src), icmp_echo, address,
                                  self.options.probe_attempts, self.options.probe_timeout,
                                  timeout=timeout))

    def measure(self, cells: list[Cell] | None = None) -> list[LabCell]:
        """Probe every predicted cell; predicted and measured side by side."""
        began = time.monotonic()
        cells = cells if cells is not None else self.predict()
        out = []
        for number, cell in enumerate(cells, start=1):
            self.progress(f"probing {cell.src} → {cell.dst} ({number}/{len(cells)})")
            out.append(LabCell(cell.src, cell.dst, cell.predicted, self.probe(cell.src, cell.dst),
                               cell.reason, cell.fix))
        self.timings["probe"] = self.timings.get("probe", 0.0) + time.monotonic() - began
        return out

    def report(self, cells: list[LabCell]) -> LabReport:
        return LabReport(self.net.name, self.mode_label(), self.options.hairpin,
                         self.options.dhcp_client, list(self.guests), cells, dict(self.timings))

    def mode_label(self) -> str:
        mode = self.net.forward_mode
        if mode is ForwardMode.BRIDGE:
            return "bridge (host bridge)" if self.net.bridge_name else "bridge (macvtap)"
        return {ForwardMode.NONE: "isolated"}.get(mode, mode.value)

    # --- teardown ------------------------------------------------------------------------------

    def teardown(self) -> None:
        """Remove everything the lab made; goes on past failures (they are reported at the
        end as one LabError)."""
        errors = []
        if self.started and self.state is not None and "host" in self.namespaces:
            self.progress(f"destroying network {self.net.name}")
            try:
                call_in_netns(self.ns("host"), _destroy_network, str(self.state / "state"),
                              self.net.name)
            except Exception as exc:  # noqa: BLE001 - the namespaces go anyway
                errors.append(f"net-destroy: {exc}")
            self.started = False
        self.progress("removing the lab's namespaces")
        for name in reversed(list(self.namespaces.values())):
            for pid in ns_pids(name):  # dnsmasq, DHCP clients: ours, found by namespace
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc = _run(["ip", "netns", "delete", name], check=False)
            if proc.returncode != 0 and Path(f"/run/netns/{name}").exists():
                errors.append(f"ip netns delete {name}: {proc.stderr.strip()}")
        self.namespaces.clear()
        if self.state is not None:
            shutil.rmtree(self.state, ignore_errors=True)
            self.state = None
        if errors:
            raise LabError("the lab was not fully removed:\n  " + "\n  ".join(errors))

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        with _signals_deferred():
            self.teardown()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Teardown must finish: SIGINT and SIGTERM wait until it did (then act as usual)."""
    got: list[int] = []
    handlers = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            handlers[signum] = signal.signal(signum, lambda s, f: got.append(s))
        except ValueError:  # not the main thread: nothing to defer
            pass
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if got:
            raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so every ``finally`` runs."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_can_run() -> None:
    """The lab needs root (namespaces, raw sockets) and iproute2."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root: it creates network namespaces")
    if not Path("/proc/self/ns/net").exists():
        raise LabError("the kernel has no network namespaces")
    for tool in ("ip", "bridge"):
        if _tool(tool) is None:
            raise LabError(f"the lab needs {tool} (iproute2)")


def run_lab(xml: str, options: LabOptions | None = None,
            progress: Callable[[str], None] | None = None) -> LabReport:
    """Build the sandbox for the definition XML, start the network, measure every cell,
    tear down; the report puts predicted and measured side by side."""
    from virtnet.engine import Engine

    check_can_run()
    net = Engine.parse(xml, source="lab")
    began = time.monotonic()
    with sigterm_as_interrupt(), Lab(net, xml, options, progress) as lab:
        lab.build()
        lab.start_network()
        lab.add_guests()
        cells = lab.measure()
        report = lab.report(cells)
    report.timings["total"] = time.monotonic() - began
    return report


__all__ = [
    "DHCP_CLIENTS",
    "Lab",
    "LabCell",
    "LabError",
    "LabGuest",
    "LabOptions",
    "LabReport",
    "call_in_netns",
    "check_can_run",
    "clean_namespaces",
    "icmp_echo",
    "run_dhcp_client",
    "run_lab",
]
