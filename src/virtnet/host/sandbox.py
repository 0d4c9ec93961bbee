"""The lab's sandbox: the network namespaces it makes, the bridges and veths that wire them,
what runs inside them (steps in forked children, DHCP clients, fix commands) and the ICMP
probes between them. :mod:`virtnet.insight.lab` decides what to build and what to measure; this
module does it, with iproute2 and a raw socket, only inside namespaces it made (named
``PREFIX<role>``), and removes them again: processes left in them are killed by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtnet.errors import VirtnetError
from virtnet.host.netns import ChildFailed, pids_in_netns, run_in_netns

CMD_TIMEOUT_S = 20.0
CHILD_TIMEOUT_S = 90.0
DHCP_TIMEOUT_S = 45.0
FORWARDING_TIMEOUT_S = 15.0
DHCP_CLIENTS = ("udhcpc", "dhcpcd", "dhclient")
CLEAN_ATTEMPTS = 20  # flushes before a probe, until no namespace has a learned neighbour left
CLEAN_PAUSE_S = 0.05
KEPT_NEIGHBOURS = {"PERMANENT", "NOARP"}  # configuration, not something a probe taught
TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin"


class LabError(VirtnetError):
    """The lab could not be built (missing tools, an unsupported definition)."""


# --- running things -----------------------------------------------------------------------------


def run(argv: list[str], *, check: bool = True, input: str | None = None,
        timeout: float = CMD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, input=input,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def tool(name: str) -> str | None:
    return shutil.which(name, path=TOOL_PATH)


def ns_pids(ns: str) -> list[int]:
    """Pids of the processes whose network namespace is NS."""
    return pids_in_netns(ns)


def call_in_netns(ns: str, fn: Callable[..., Any], *args: Any,
                  timeout: float = CHILD_TIMEOUT_S) -> Any:
    """fn(*args) evaluated in a forked child that entered NS; its exception is re-raised here
    (see :func:`virtnet.host.netns.run_in_netns`)."""
    try:
        return run_in_netns(ns, fn, *args, timeout=timeout, what=f"a step inside {ns}")
    except ChildFailed as exc:
        raise LabError(str(exc)) from None


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
            out = run(["ip", "-j", "-n", ns, "-batch", "-"],
                      input="\n".join(lines) + "\n").stdout
            learned = [entry for entry in json.loads(out or "[]")
                       if not KEPT_NEIGHBOURS & set(entry.get("state", []))]
            if not learned:
                del pending[ns]
        if not pending:
            return
    raise LabError("the neighbour caches of " + ", ".join(pending) +
                   f" did not stay empty after {CLEAN_ATTEMPTS} flushes")


def check_can_run() -> None:
    """The lab needs root (namespaces, raw sockets) and iproute2."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root: it creates network namespaces")
    if not Path("/proc/self/ns/net").exists():
        raise LabError("the kernel has no network namespaces")
    require_iproute2()


def require_iproute2() -> None:
    for name in ("ip", "bridge"):
        if tool(name) is None:
            raise LabError(f"the lab needs {name} (iproute2)")


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
    binary = tool(client)
    if binary is None:
        raise LabError(f"the DHCP client {client} is not installed")
    if client == "udhcpc":
        script = workdir / "udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        pidfile = workdir / "udhcpc.pid"
        try:
            run(["ip", "netns", "exec", ns, binary, "-f", "-q", "-n", "-t", "12", "-T", "3",
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
            run(["ip", "netns", "exec", ns, binary, "-4", "-1", "-cf", str(conf),
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
        run(["ip", "netns", "exec", ns, "sh", "-c", shell], timeout=DHCP_TIMEOUT_S)
    else:
        raise LabError(f"unknown DHCP client {client!r} (one of {', '.join(DHCP_CLIENTS)})")


# --- signals -----------------------------------------------------------------------------------


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
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


# --- the sandbox -------------------------------------------------------------------------------


@dataclass
class Sandbox:
    """The namespaces of one lab, by role, and what is done inside them: the lab's handle
    on the host, as :class:`virtnet.host.Host` is an action's."""

    prefix: str  # of the namespaces' names: PREFIX + TOKEN + '-' + role
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: dict[str, str] = field(default_factory=dict)

    def ns(self, role: str) -> str:
        return self.namespaces[role]

    def state_dir(self) -> Path:
        """A new directory for the state of the virtnet the lab runs; traversable by all, as
        dnsmasq drops root and must still read its files."""
        path = Path(tempfile.mkdtemp(prefix="virtnet-lab-"))
        path.chmod(0o755)
        return path

    def check_can_run(self) -> None:
        check_can_run()

    def require_iproute2(self) -> None:
        require_iproute2()

    def add_namespace(self, role: str) -> str:
        name = f"{self.prefix}{self.token}-{role}"
        # recorded before it exists: an interrupt while `ip netns add` runs must not leave a
        # namespace that teardown does not know (deleting a missing one is harmless)
        self.namespaces[role] = name
        run(["ip", "netns", "add", name])
        self.ip(name, "link", "set", "lo", "up")
        return name

    # --- iproute2 inside a namespace --------------------------------------------------------

    def ip(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", ns, *args], check=check)

    def ip_batch(self, ns: str, lines: list[str]) -> None:
        """Several ``ip`` commands in one process (stops at the first that fails)."""
        if lines:
            run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")

    def sysctl(self, ns: str, key: str, value: str) -> None:
        run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"])

    def shell(self, ns: str, command: str) -> None:
        """COMMAND run by ``sh -e`` inside NS (a fix doctor suggests)."""
        run(["ip", "netns", "exec", ns, "sh", "-ec", command])

    def add_bridge(self, ns: str, name: str, ports: tuple[str, ...] = ()) -> None:
        """Bridge NAME in NS, without STP delays, with PORTS in it, up."""
        self.ip_batch(ns, [f"link add {name} type bridge stp_state 0 forward_delay 0",
                           *(f"link set dev {port} master {name}" for port in ports),
                           f"link set dev {name} up"])

    def add_veth(self, ns: str, name: str, peer_ns: str, peer: str) -> None:
        self.ip(ns, "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_ns)

    def plug(self, ns: str, port: str, bridge: str, *, hairpin: bool | None = None,
             isolated: bool = False) -> None:
        """PORT into BRIDGE (hairpin on or off when given, isolated when asked), up."""
        lines = [f"link set dev {port} master {bridge}"]
        if hairpin is not None:
            lines.append(f"link set dev {port} type bridge_slave hairpin "
                         f"{'on' if hairpin else 'off'}")
        if isolated:
            lines.append(f"link set dev {port} type bridge_slave isolated on")
        lines.append(f"link set dev {port} up")
        self.ip_batch(ns, lines)

    def wire_lan(self, host: str, switch: str, lan: str, upstream: str, *, bridge: str,
                 uplinks: dict[str, str], hairpin: bool, router: str, router_up: str,
                 upstream_address: str) -> None:
        """The LAN around the host namespace HOST: in SWITCH a BRIDGE with a port per uplink
        (UPLINKS: the host's end -> the switch's, hairpin as given), the LAN router LAN on
        it at ROUTER (an address/prefix) forwarding to UPSTREAM over ROUTER_UP, and upstream
        at UPSTREAM_ADDRESS with its default route back through the router."""
        self.add_bridge(switch, bridge)
        for link, port in uplinks.items():
            self.add_veth(host, link, switch, port)
            self.plug(switch, port, bridge, hairpin=hairpin)
            self.ip(host, "link", "set", "dev", link, "up")
        self.add_veth(lan, "eth0", switch, "swlan")
        self.plug(switch, "swlan", bridge)
        self.add_veth(lan, "eth1", upstream, "eth0")
        self.ip_batch(lan, [f"address add {router} dev eth0", "link set dev eth0 up",
                            f"address add {router_up} dev eth1", "link set dev eth1 up"])
        self.sysctl(lan, "net.ipv4.ip_forward", "1")
        self.ip_batch(upstream, [f"address add {upstream_address} dev eth0",
                                 "link set dev eth0 up",
                                 f"route add default via {router_up.split('/')[0]}"])

    def address(self, ns: str, iface: str, address: str, gateway: object | None = None, *,
                up: bool = False) -> None:
        """ADDRESS (with its prefix) on IFACE in NS; IFACE up when asked; the default route
        via GATEWAY when given."""
        lines = [f"address add {address} dev {iface}"]
        if up:
            lines.append(f"link set dev {iface} up")
        if gateway is not None:
            lines.append(f"route add default via {gateway}")
        self.ip_batch(ns, lines)

    def move_link(self, ns: str, name: str, to_ns: str) -> None:
        self.ip(ns, "link", "set", "dev", name, "netns", to_ns)

    def wait_forwarding(self, ns: str, port: str) -> None:
        """STP walks a new bridge port through listening and learning (2 x 2 s at least)."""
        deadline = time.monotonic() + FORWARDING_TIMEOUT_S
        while time.monotonic() < deadline:
            out = run(["bridge", "-n", ns, "-j", "link", "show", "dev", port]).stdout
            if any(entry.get("state") == "forwarding" for entry in json.loads(out or "[]")):
                return
            time.sleep(0.05)
        raise LabError(f"bridge port {port} did not start forwarding within "
                       f"{FORWARDING_TIMEOUT_S:.0f} s")

    def address_of(self, ns: str, iface: str) -> str | None:
        """IFACE's first IPv4 address with its prefix ('192.168.122.57/24'), None if none."""
        out = self.ip(ns, "-j", "-4", "address", "show", "dev", iface).stdout
        for link in json.loads(out or "[]"):
            for info in link.get("addr_info", []):
                return f"{info['local']}/{info['prefixlen']}"
        return None

    # --- steps, clients and probes ----------------------------------------------------------

    def call(self, ns: str, fn: Callable[..., Any], *args: Any,
             timeout: float = CHILD_TIMEOUT_S) -> Any:
        return call_in_netns(ns, fn, *args, timeout=timeout)

    def dhcp(self, client: str, ns: str, iface: str, workdir: Path) -> None:
        run_dhcp_client(client, ns, iface, workdir)

    def dhcp_all(self, client: str, clients: list[tuple[str, str, Path]]) -> None:
        """CLIENT for each (namespace, interface, workdir) of CLIENTS, all at once: dnsmasq
        checks each address with a ping before offering it, one by one would be slow."""
        with ThreadPoolExecutor(max_workers=max(1, len(clients))) as workers:
            jobs = [workers.submit(run_dhcp_client, client, ns, iface, workdir)
                    for ns, iface, workdir in clients]
            for job in jobs:
                job.result()

    def ping(self, ns: str, address: str, attempts: int, timeout: float) -> bool:
        """An ICMP echo from inside NS: True on a round trip (request and reply)."""
        return bool(call_in_netns(ns, icmp_echo, address, attempts, timeout,
                                  timeout=attempts * timeout + 10.0))

    def forget(self, bridges: dict[str, list[str]]) -> None:
        clean_namespaces(bridges)

    # --- teardown ------------------------------------------------------------------------------

    def signals_deferred(self) -> contextlib.AbstractContextManager[None]:
        """While the sandbox is torn down: SIGINT and SIGTERM wait until it is."""
        return signals_deferred()

    def sigterm_as_interrupt(self) -> contextlib.AbstractContextManager[None]:
        """While the sandbox stands: SIGTERM raises KeyboardInterrupt, so teardown runs."""
        return sigterm_as_interrupt()

    def delete_namespaces(self) -> list[str]:
        """Kill what runs in the namespaces (by pid: dnsmasq, DHCP clients), delete them,
        newest first; what could not be removed, as messages."""
        errors = []
        for name in reversed(list(self.namespaces.values())):
            for pid in ns_pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc = run(["ip", "netns", "delete", name], check=False)
            if proc.returncode != 0 and Path(f"/run/netns/{name}").exists():
                errors.append(f"ip netns delete {name}: {proc.stderr.strip()}")
        self.namespaces.clear()
        return errors


__all__ = [
    "DHCP_CLIENTS",
    "LabError",
    "Sandbox",
    "call_in_netns",
    "check_can_run",
    "clean_namespaces",
    "icmp_echo",
    "ns_pids",
    "run",
    "run_dhcp_client",
    "sigterm_as_interrupt",
    "signals_deferred",
    "tool",
]
