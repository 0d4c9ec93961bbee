"""Real DHCP clients get their leases from the dnsmasq a network started, inside namespaces.

One network (IPv4 with reserved hosts, IPv6 with a DHCPv6 reservation, a DNS domain) is
started once for the module with the real CLI (``--netns``, ``--state-dir``). Each test plugs a
guest namespace into its bridge through a veth with a reserved MAC and runs one client in it,
with its own pid/lease files and script in a temporary directory and a timeout; a client that
stays in the background is killed by its pid afterwards. The reserved host must get exactly its
address, its name must resolve through the network's DNS (a small DNS query over UDP sent
from the guest), and net-dhcp-leases must list the lease.

net-update --live is checked here too, because only a real client shows that dnsmasq took the
change: a host added live is served after a SIGHUP (same dnsmasq pid), a range added live
needs a restart (new pid).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from virtnet.host.netns import pids_in_netns as pids_in

pytestmark = pytest.mark.netns

CLI_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 30
NETWORK = "lan"
DOMAIN = "lab.test"
SUBNET = "10.88.0"
SUBNET6 = "fd88::"
RESERVED = {
    "udhcpc": ("52:54:00:88:00:01", f"{SUBNET}.11", "guest-udhcpc"),
    "dhcpcd": ("52:54:00:88:00:02", f"{SUBNET}.12", "guest-dhcpcd"),
    "dhclient": ("52:54:00:88:00:03", f"{SUBNET}.13", "guest-dhclient"),
}
LATE_HOST = ("52:54:00:88:00:04", f"{SUBNET}.14", "late")
V6_GUEST_MAC = "52:54:00:88:00:06"
V6_DUID = "00:03:00:01:" + V6_GUEST_MAC  # DUID-LL: what dhclient -D LL sends
V6_ADDRESS = f"{SUBNET6}66"


def network_xml() -> str:
    hosts = "".join(
        f"<host mac='{mac}' name='{name}' ip='{ip}'/>" for mac, ip, name in RESERVED.values()
    )
    return (
        # STP off: a new bridge port forwards at once instead of after 2 x 2 s of STP states.
        f"<network><name>{NETWORK}</name><bridge stp='off'/><domain name='{DOMAIN}'/>"
        f"<ip address='{SUBNET}.1' netmask='255.255.255.0'><dhcp>"
        f"<range start='{SUBNET}.100' end='{SUBNET}.150'/>{hosts}</dhcp></ip>"
        f"<ip family='ipv6' address='{SUBNET6}1' prefix='64'><dhcp>"
        f"<range start='{SUBNET6}100' end='{SUBNET6}1ff'/>"
        f"<host id='{V6_DUID}' name='guest6' ip='{V6_ADDRESS}'/>"
        "</dhcp></ip></network>"
    )


# --- plumbing (module scoped: the network starts once) -------------------------------------


def run(
    argv: list[str], check: bool = True, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc




def delete_netns(ns: str) -> None:
    if not Path(f"/run/netns/{ns}").exists():
        return
    for pid in pids_in(ns):  # what our network or clients left running in there
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run(["ip", "netns", "delete", ns], check=False)


@dataclass
class Lab:
    ns: str
    state: Path
    bridge: str

    def virtnet(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "virtnet.face.cli", "--netns", self.ns,
                "--state-dir", str(self.state), *args]
        return run(argv, check=check, timeout=CLI_TIMEOUT_S)

    def json(self, *args: str) -> Any:
        return json.loads(self.virtnet(*args, "--json").stdout)

    def dnsmasq_pid(self) -> int:
        info = self.json("net-info", NETWORK)
        assert info["problems"] == [], info["problems"]
        return int(info["dnsmasq_pid"])


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")
    ns = "vnt-" + secrets.token_hex(4)
    # dnsmasq drops root (to nobody) and then reads its hosts files on SIGHUP: the state
    # directory must be traversable, which pytest's private tmp_path is not.
    root = Path(tempfile.mkdtemp(prefix="vnt-dhcp-lab-"))
    root.chmod(0o755)
    state = root / "state"
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        lab = Lab(ns, state, bridge="")
        definition = state.parent / f"{NETWORK}.xml"
        definition.write_text(network_xml())
        lab.virtnet("net-define", str(definition))
        lab.virtnet("net-start", NETWORK)
        lab.bridge = lab.json("net-info", NETWORK)["bridge"]
        yield lab
        lab.virtnet("net-destroy", NETWORK, check=False)
    finally:
        delete_netns(ns)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class GuestPort:
    ns: str
    ifname: str
    mac: str
    workdir: Path


@pytest.fixture
def make_guest(lab: Lab, tmp_path: Path) -> Iterator[Any]:
    """Factory: a guest namespace whose ``eth0`` (with the given MAC) is on the bridge."""
    created: list[str] = []

    def make(mac: str, ipv6: bool = False) -> GuestPort:
        ns = "vnt-" + secrets.token_hex(4)
        run(["ip", "netns", "add", ns])
        created.append(ns)
        port = "vg" + secrets.token_hex(3)
        run(["ip", "-n", lab.ns, "link", "add", port, "type", "veth",
             "peer", "name", "eth0", "netns", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "set", "eth0", "address", mac])
        if ipv6:
            # No duplicate address detection: the link-local address is usable at once.
            run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"])
        run(["ip", "-n", lab.ns, "link", "set", port, "master", lab.bridge, "up"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        wait_forwarding(lab.ns, port)
        workdir = tmp_path / ns
        workdir.mkdir()
        return GuestPort(ns, "eth0", mac, workdir)

    try:
        yield make
    finally:
        for ns in created:
            delete_netns(ns)


def wait_forwarding(ns: str, port: str, timeout: float = 10.0) -> None:
    """Wait until the bridge forwards on PORT (STP walks it through listening/learning)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = run(["bridge", "-n", ns, "-j", "link", "show", "dev", port]).stdout
        if any(entry.get("state") == "forwarding" for entry in json.loads(out or "[]")):
            return
        time.sleep(0.05)
    raise AssertionError(f"bridge port {port} did not reach forwarding within {timeout}s")


def guest_ipv4(guest: GuestPort) -> list[str]:
    out = run(["ip", "-n", guest.ns, "-j", "-4", "address", "show", "dev", guest.ifname]).stdout
    return [info["local"] for link in json.loads(out) for info in link.get("addr_info", [])]


def kill_by_pidfile(path: Path, program: str) -> None:
    """Stop a client that went to the background, by the pid it wrote (checked by name)."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return
    if comm == program:
        os.kill(pid, signal.SIGTERM)


# --- DNS ------------------------------------------------------------------------------------


def dns_query(server: str, name: str, qtype: int = 1, timeout: float = 2.0) -> list[str]:
    """Ask SERVER for NAME's A (1) or AAAA (28) records over UDP; the addresses answered."""
    query_id = secrets.randbits(16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    packet = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + question + b"\0"
    packet += struct.pack("!HH", qtype, 1)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, 53))
        data, _ = sock.recvfrom(4096)
    answer_id, _flags, qdcount, ancount = struct.unpack("!HHHH", data[:8])
    assert answer_id == query_id
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
    addresses = []
    for _ in range(ancount):
        offset = _skip_name(data, offset)
        rtype, _rclass, _ttl, length = struct.unpack("!HHIH", data[offset:offset + 10])
        offset += 10
        rdata = data[offset:offset + length]
        offset += length
        if rtype == qtype == 1:
            addresses.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == qtype == 28:
            addresses.append(socket.inet_ntop(socket.AF_INET6, rdata))
    return addresses


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # compression pointer: two bytes, end of the name
            return offset + 2
        offset += 1 + length


def resolve_from(kit: Any, guest: GuestPort, name: str, qtype: int = 1) -> list[str]:
    """dns_query run inside the guest's namespace, retried a bounded number of times."""
    for _ in range(3):
        try:
            return kit.run_in_netns(guest.ns, dns_query, f"{SUBNET}.1", name, qtype)
        except (TimeoutError, OSError):
            continue
    raise AssertionError(f"no DNS answer for {name} from {SUBNET}.1")


# --- clients ------------------------------------------------------------------------------

UDHCPC_SCRIPT = """#!/bin/sh
echo "$1 $ip" >> "{out}"
if [ "$1" = bound ]; then ip address add "$ip/$mask" dev "$interface"; fi
"""

DHCLIENT_SCRIPT = """#!/bin/sh
echo "$reason $new_ip_address $new_ip6_address" >> "{out}"
case "$reason" in
  BOUND|REBOOT) ip address add "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
esac
"""


def script(guest: GuestPort, text: str) -> tuple[Path, Path]:
    out = guest.workdir / "events"
    path = guest.workdir / "script.sh"
    path.write_text(text.format(out=out))
    path.chmod(0o755)
    return path, out


def run_udhcpc(guest: GuestPort, hostname: str) -> str:
    path, out = script(guest, UDHCPC_SCRIPT)
    pidfile = guest.workdir / "udhcpc.pid"
    try:
        run(["ip", "netns", "exec", guest.ns, "udhcpc", "-f", "-q", "-n", "-t", "10", "-T", "1",
             "-i", guest.ifname, "-s", str(path), "-p", str(pidfile),
             "-x", f"hostname:{hostname}"], timeout=CLIENT_TIMEOUT_S)
    finally:
        kill_by_pidfile(pidfile, "udhcpc")
    bound = [line.split()[1] for line in out.read_text().splitlines() if line.startswith("bound ")]
    assert len(bound) == 1, out.read_text()
    return bound[0]


def run_dhcpcd(guest: GuestPort, hostname: str) -> str:
    # dhcpcd keeps its pid and lease files under /run and /var/lib/dhcpcd: a tmpfs over each,
    # in the private mount namespace `ip netns exec` gives us, keeps them ours and temporary.
    # No config file and no hook script: nothing outside the guest namespace is changed.
    shell = (
        "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/lib/dhcpcd && "
        f"dhcpcd -f /dev/null -c /bin/true --noarp -h {hostname} -4 -1 -t 20 {guest.ifname}; "
        f"status=$?; dhcpcd -f /dev/null -x {guest.ifname} >/dev/null 2>&1; exit $status"
    )
    run(["ip", "netns", "exec", guest.ns, "sh", "-c", shell], timeout=CLIENT_TIMEOUT_S)
    addresses = guest_ipv4(guest)
    assert len(addresses) == 1, addresses
    return addresses[0]


def run_dhclient(guest: GuestPort, hostname: str) -> str:
    path, out = script(guest, DHCLIENT_SCRIPT)
    conf = guest.workdir / "dhclient.conf"
    conf.write_text(f'timeout 20;\nsend host-name "{hostname}";\n')
    pidfile = guest.workdir / "dhclient.pid"
    try:
        run(["ip", "netns", "exec", guest.ns, "dhclient", "-4", "-1", "-cf", str(conf),
             "-pf", str(pidfile), "-lf", str(guest.workdir / "dhclient.leases"),
             "-sf", str(path), guest.ifname], timeout=CLIENT_TIMEOUT_S)
    finally:
        kill_by_pidfile(pidfile, "dhclient")  # it stays in the background once bound
    bound = [line.split()[1] for line in out.read_text().splitlines()
             if line.split()[0] in ("BOUND", "REBOOT")]
    assert len(bound) == 1, out.read_text()
    return bound[0]


CLIENTS = {"udhcpc": run_udhcpc, "dhcpcd": run_dhcpcd, "dhclient": run_dhclient}


def require(tool: str) -> None:
    if not any(Path(d, tool).exists() for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin")):
        pytest.skip(f"needs {tool}")


# --- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("client", list(CLIENTS))
def test_reserved_host_gets_its_address_and_name(
    lab: Lab, make_guest: Any, netns_kit: Any, client: str
) -> None:
    require(client)
    mac, reserved_ip, name = RESERVED[client]
    guest = make_guest(mac)
    assert CLIENTS[client](guest, name) == reserved_ip
    assert guest_ipv4(guest) == [reserved_ip]

    assert resolve_from(netns_kit, guest, name) == [reserved_ip]
    assert resolve_from(netns_kit, guest, f"{name}.{DOMAIN}") == [reserved_ip]

    leases = lab.json("net-dhcp-leases", NETWORK, "--mac", mac)
    assert [(row["mac"], row["ip"], row["protocol"], row["hostname"], row["prefix"])
            for row in leases] == [(mac, reserved_ip, "ipv4", name, 24)]
    table = lab.virtnet("net-dhcp-leases", NETWORK).stdout
    assert f" {mac} " in table and f" {reserved_ip}/24 " in table


def test_dhcpv6_reservation_and_router_advertisements(
    lab: Lab, make_guest: Any, netns_kit: Any
) -> None:
    require("dhclient")
    guest = make_guest(V6_GUEST_MAC, ipv6=True)
    # Router advertisements: the guest has no address in the network's prefix, so a route to
    # that prefix on its link can only come from the prefix information of dnsmasq's RAs.
    deadline = time.monotonic() + 15
    on_link: list[str] = []
    while time.monotonic() < deadline and f"{SUBNET6}/64" not in on_link:
        out = run(["ip", "-n", guest.ns, "-j", "-6", "route", "show", "dev", "eth0"]).stdout
        on_link = [route["dst"] for route in json.loads(out or "[]")]
        time.sleep(0.1)
    assert f"{SUBNET6}/64" in on_link
    addresses = run(["ip", "-n", guest.ns, "-j", "-6", "address", "show", "dev", "eth0"]).stdout
    assert [a["local"] for link in json.loads(addresses) for a in link["addr_info"]
            if a.get("scope") == "global"] == []

    path, out = script(guest, DHCLIENT_SCRIPT)
    conf = guest.workdir / "dhclient6.conf"
    conf.write_text("timeout 20;\n")
    pidfile = guest.workdir / "dhclient6.pid"
    try:
        run(["ip", "netns", "exec", guest.ns, "dhclient", "-6", "-1", "-D", "LL",
             "-cf", str(conf), "-pf", str(pidfile), "-lf", str(guest.workdir / "leases6"),
             "-sf", str(path), guest.ifname], timeout=CLIENT_TIMEOUT_S)
    finally:
        kill_by_pidfile(pidfile, "dhclient")
    bound = [line.split()[-1] for line in out.read_text().splitlines()
             if line.startswith("BOUND6")]
    assert bound == [V6_ADDRESS], out.read_text()

    leases = lab.json("net-dhcp-leases", NETWORK, "--mac", V6_GUEST_MAC)
    assert [(row["ip"], row["protocol"], row["prefix"], row["client_id"]) for row in leases] == [
        (V6_ADDRESS, "ipv6", 64, V6_DUID)]


def test_live_dhcp_host_update_is_served_after_sighup(
    lab: Lab, make_guest: Any, netns_kit: Any
) -> None:
    require("udhcpc")
    mac, ip, name = LATE_HOST
    pid = lab.dnsmasq_pid()
    out = lab.virtnet("net-update", NETWORK, "add", "ip-dhcp-host",
                      f"<host mac='{mac}' name='{name}' ip='{ip}'/>", "--live").stdout
    assert out == f"Updated network {NETWORK} live state\n"
    assert lab.dnsmasq_pid() == pid  # re-read on SIGHUP, not restarted
    live = lab.virtnet("net-dumpxml", NETWORK).stdout
    persistent = lab.virtnet("net-dumpxml", NETWORK, "--inactive").stdout
    assert f"name='{name}'" in live and f"name='{name}'" not in persistent
    guest = make_guest(mac)
    assert run_udhcpc(guest, name) == ip
    assert resolve_from(netns_kit, guest, name) == [ip]


def test_live_dns_host_update_resolves_without_restart(
    lab: Lab, make_guest: Any, netns_kit: Any
) -> None:
    pid = lab.dnsmasq_pid()
    lab.virtnet("net-update", NETWORK, "add", "dns-host",
                f"<host ip='{SUBNET}.200'><hostname>extra</hostname></host>",
                "--live", "--config")
    assert lab.dnsmasq_pid() == pid
    guest = make_guest("52:54:00:88:00:09")
    # A static address: a dynamic lease would cost dnsmasq's ping check of a new address.
    run(["ip", "-n", guest.ns, "address", "add", f"{SUBNET}.210/24", "dev", "eth0"])
    assert resolve_from(netns_kit, guest, "extra") == [f"{SUBNET}.200"]


def test_live_range_update_restarts_dnsmasq(lab: Lab) -> None:
    pid = lab.dnsmasq_pid()
    lab.virtnet("net-update", NETWORK, "add", "ip-dhcp-range",
                f"<range start='{SUBNET}.160' end='{SUBNET}.170'/>", "--live")
    new_pid = lab.dnsmasq_pid()
    assert new_pid != pid
    assert new_pid in pids_in(lab.ns)
    conf = (lab.state / "lib" / "dnsmasq" / f"{NETWORK}.conf").read_text()
    assert f"dhcp-range={SUBNET}.160,{SUBNET}.170" in conf
