"""virtnetd end to end, inside network namespaces of the test's own.

One daemon serves a namespace for the whole module (``lab``): a NAT network is defined through
the thin CLI and started through the API, a guest namespace (behind a veth on the bridge) gets
a DHCP lease, and the tests then check in turn, each leaving the lab as it found it:
the lease seen as an event and by net-dhcp-leases; a killed dnsmasq restarted within a second
(events); the daemon SIGKILLed (network, dnsmasq and the guest's address stay; the restarted
daemon adopts the network), SIGTERMed, and started after dnsmasq died meanwhile (repaired);
ports created and deleted through the API and without the daemon (events, kernel links, no
device given twice); a port's tap handed over (SCM_RIGHTS) to an unprivileged member of the
daemon's group, who talks ARP through it; a handed-over tap its holder lets go, and devices
deleted while no daemon ran, releasing their ports (one moved away keeps its port); one MAC
per network; access for others (read only); the fast path's
imports; a client meaning another namespace refused; doctor; net-edit; clear errors for bad
requests and slow clients cut off; a lease renewed and released (events within a second).

Start-up behaviours (an interrupted start cleaned, autostart once per boot) get a daemon each.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from virtnet.client import ApiError, Client, EventStream
from tests.kit.daemon import VirtnetdProcess, script
from virtnet.host.netns import pids_in_netns as pids_in

pytestmark = pytest.mark.netns

NETWORK = "lan"
SUBNET = "10.91.0"
GUEST_MAC = "52:54:00:91:00:0b"
GUEST_IP = f"{SUBNET}.11"
ADMIN_GID = 4242  # the daemon's group in these tests (no /etc/group entry needed)
MEMBER_UID = 4243
OTHER_UID = 4244
REQUEST_TIMEOUT_S = 2.0


def network_xml(name: str = NETWORK, subnet: str = SUBNET, bridge: str = "virbr0") -> str:
    # STP off: a new bridge port forwards at once instead of after STP's listening/learning.
    return (f"<network><name>{name}</name><forward mode='nat'/>"
            f"<bridge name='{bridge}' stp='off'/>"
            f"<ip address='{subnet}.1' netmask='255.255.255.0'><dhcp>"
            f"<range start='{subnet}.100' end='{subnet}.150'/>"
            f"<host mac='{GUEST_MAC}' name='guest' ip='{subnet}.11'/>"
            "</dhcp></ip></network>")


# --- namespaces, processes ------------------------------------------------------------------


def sh(*argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc




def new_netns(created: list[str]) -> str:
    ns = "vnt-" + secrets.token_hex(4)
    sh("ip", "netns", "add", ns)
    created.append(ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    return ns


def delete_netns(ns: str) -> None:
    if not Path(f"/run/netns/{ns}").exists():
        return
    for pid in pids_in(ns):  # the daemon and the dnsmasq it started live in there
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sh("ip", "netns", "delete", ns, check=False)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def links(ns: str) -> list[str]:
    out = sh("ip", "-n", ns, "-j", "link", "show").stdout
    return sorted(link["ifname"] for link in json.loads(out or "[]"))


def guest_addresses(ns: str) -> list[str]:
    out = sh("ip", "-n", ns, "-j", "-4", "address", "show", "dev", "eth0").stdout
    return [info["local"] for link in json.loads(out or "[]") for info in link["addr_info"]]


def wait_event(stream: EventStream, predicate: Callable[[dict[str, Any]], bool],
               timeout: float, seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The first event matching PREDICATE within TIMEOUT seconds (others are collected)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching event within {timeout:g} s; saw {seen}")
        stream.settimeout(remaining)
        try:
            event = next(stream)
        except (TimeoutError, socket.timeout):
            raise AssertionError(f"no matching event within {timeout:g} s; saw {seen}") \
                from None
        if seen is not None:
            seen.append(event)
        if predicate(event):
            return event


def run_as(uid: int, gids: list[int], fn: Callable[..., Any], *args: Any,
           timeout: float = 30.0) -> Any:
    """fn(*args) in a forked child running as UID with groups GIDS (first: primary)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            os.setgroups(gids[1:])
            os.setgid(gids[0])
            os.setuid(uid)
            payload = ("ok", fn(*args))
        except BaseException:  # noqa: BLE001 - everything goes back to the test
            payload = ("error", traceback.format_exc())
        with os.fdopen(write_fd, "wb") as out:
            out.write(pickle.dumps(payload))
        os._exit(0)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + timeout
    with os.fdopen(read_fd, "rb") as inp:
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([inp], [], [], remaining)
            if not ready:
                break
            chunk = os.read(inp.fileno(), 65536)
            if not chunk:
                break
            chunks.append(chunk)
    if time.monotonic() >= deadline:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    kind, value = pickle.loads(b"".join(chunks))
    if kind != "ok":
        raise AssertionError(f"child running as uid {uid} failed:\n{value}")
    return value


# --- the lab ----------------------------------------------------------------------------------


@dataclass
class Lab:
    ns: str
    guest_ns: str
    root: Path
    daemon: VirtnetdProcess

    @property
    def state(self) -> Path:
        return self.daemon.state_dir

    def api(self) -> Client:
        return self.daemon.client()

    def virtnet(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.daemon.virtnet(*args, **kwargs)

    def info(self) -> dict[str, Any]:
        with self.api() as api:
            return api.network(NETWORK)


UDHCPC_SCRIPT = """#!/bin/sh
echo "$1 $ip" >> "{out}"
if [ "$1" = bound ]; then ip address add "$ip/$mask" dev "$interface"; fi
"""


def run_udhcpc(ns: str, workdir: Path) -> str:
    out = workdir / "udhcpc.events"
    hook = workdir / "udhcpc.sh"
    hook.write_text(UDHCPC_SCRIPT.format(out=out))
    hook.chmod(0o755)
    pidfile = workdir / "udhcpc.pid"
    sh("ip", "netns", "exec", ns, "udhcpc", "-f", "-q", "-n", "-t", "10", "-T", "1", "-i",
       "eth0", "-s", str(hook), "-p", str(pidfile), timeout=40)
    bound = [line.split()[1] for line in out.read_text().splitlines() if line.startswith("bound")]
    assert len(bound) == 1, out.read_text()
    return bound[0]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")
    if shutil.which("udhcpc") is None:
        pytest.skip("needs udhcpc")
    created: list[str] = []
    # dnsmasq drops root and must traverse the state directory; pytest's tmp_path is private.
    root = Path(tempfile.mkdtemp(prefix="vnt-daemon-"))
    root.chmod(0o755)
    daemon = VirtnetdProcess("", root / "state",
                             args=("--group", str(ADMIN_GID),
                                   "--request-timeout", str(REQUEST_TIMEOUT_S)))
    try:
        ns = new_netns(created)
        guest_ns = new_netns(created)
        daemon.netns = ns
        daemon.start()
        yield Lab(ns, guest_ns, root, daemon)
    finally:
        daemon.stop()
        for ns in reversed(created):
            delete_netns(ns)
        shutil.rmtree(root, ignore_errors=True)


# --- the story, in order ------------------------------------------------------------------------


def test_define_start_and_a_guest_lease_seen_as_events(lab: Lab) -> None:
    definition = lab.root / f"{NETWORK}.xml"
    definition.write_text(network_xml())
    with lab.api() as api, api.events(timeout=10) as stream:
        seen: list[dict[str, Any]] = []
        out = lab.virtnet("net-define", str(definition)).stdout
        assert out == f"Network {NETWORK} defined from {definition}\n\n"
        wait_event(stream, lambda e: e["type"] == "network-defined", 5, seen)
        info = api.start(NETWORK)
        assert info["active"] and info["dnsmasq_running"] and info["problems"] == []
        started = wait_event(stream, lambda e: e["type"] == "network-started", 5, seen)
        assert started["network"] == NETWORK and started["dnsmasq_pid"] == info["dnsmasq_pid"]

        sh("ip", "-n", lab.ns, "link", "add", "vg0", "type", "veth", "peer", "name", "eth0",
           "netns", lab.guest_ns)
        sh("ip", "-n", lab.guest_ns, "link", "set", "eth0", "address", GUEST_MAC, "up")
        sh("ip", "-n", lab.ns, "link", "set", "vg0", "master", info["bridge"], "up")
        address = run_udhcpc(lab.guest_ns, lab.root)
        bound_at = time.time()
        assert address == GUEST_IP
        lease = wait_event(stream, lambda e: e["type"] == "lease-added", 5, seen)
        assert lease["mac"] == GUEST_MAC and lease["ip"] == GUEST_IP
        assert lease["time"] - bound_at < 1.0  # dnsmasq wrote the lease before udhcpc bound
    leases = lab.virtnet("net-dhcp-leases", NETWORK).stdout
    assert GUEST_MAC in leases and f"{GUEST_IP}/24" in leases
    assert guest_addresses(lab.guest_ns) == [GUEST_IP]


def test_a_killed_dnsmasq_is_restarted_within_a_second(lab: Lab) -> None:
    pid = lab.info()["dnsmasq_pid"]
    with lab.api() as api, api.events(NETWORK, timeout=10) as stream:
        seen: list[dict[str, Any]] = []
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)  # the dnsmasq of our network, by its recorded pid
        died = wait_event(stream, lambda e: e["type"] == "dnsmasq-died", 5, seen)
        restarted = wait_event(stream, lambda e: e["type"] == "dnsmasq-restarted", 5, seen)
    assert died["pid"] == pid
    assert restarted["previous_pid"] == pid and restarted["pid"] != pid
    assert restarted["time"] - killed_at < 1.0, seen
    info = lab.info()
    assert info["dnsmasq_pid"] == restarted["pid"] and info["problems"] == []
    assert alive(restarted["pid"])
    # The restarted dnsmasq read the lease file back: the guest's lease is still listed.
    assert GUEST_MAC in lab.virtnet("net-dhcp-leases", NETWORK).stdout


def test_networks_outlive_a_sigkilled_daemon_and_are_adopted(lab: Lab, netns_kit: Any) -> None:
    before = lab.info()
    lab.daemon.kill()
    assert not lab.daemon.running
    # With no daemon at all, the network still runs: bridge, dnsmasq, the guest's address.
    assert before["bridge"] in links(lab.ns)
    assert alive(before["dnsmasq_pid"])
    assert guest_addresses(lab.guest_ns) == [GUEST_IP]
    assert netns_kit.ping(lab.guest_ns, f"{SUBNET}.1")
    # The thin CLI runs in-process when nobody answers on the socket.
    listing = lab.virtnet("net-list").stdout
    assert f" {NETWORK} " in listing and " active " in listing

    lab.daemon.start()
    info = lab.info()
    assert info["active"] and info["adopted"] and info["problems"] == []
    assert info["dnsmasq_pid"] == before["dnsmasq_pid"]  # adopted, not restarted
    assert netns_kit.ping(lab.guest_ns, f"{SUBNET}.1")
    assert GUEST_MAC in lab.virtnet("net-dhcp-leases", NETWORK).stdout

    # SIGTERM: a clean stop, the socket goes away, the network stays.
    assert lab.daemon.stop() == 0
    assert not lab.daemon.socket_path.exists()
    assert alive(before["dnsmasq_pid"]) and before["bridge"] in links(lab.ns)
    lab.daemon.start()
    assert lab.info()["adopted"]
    assert guest_addresses(lab.guest_ns) == [GUEST_IP]

    # A dnsmasq that died while no daemon ran is restarted when one starts.
    lab.daemon.kill()
    os.kill(before["dnsmasq_pid"], signal.SIGKILL)
    lab.daemon.start()
    info = lab.info()
    assert info["adopted"] and info["problems"] == [] and alive(info["dnsmasq_pid"])
    assert info["dnsmasq_pid"] != before["dnsmasq_pid"]
    with lab.api() as api, api.events(since=0, timeout=5) as stream:
        started = wait_event(stream, lambda e: e["type"] == "daemon-started", 5)
    assert started["networks"] == {NETWORK: "repaired"}


def test_ports_created_and_deleted_through_the_api(lab: Lab) -> None:
    with lab.api() as api, api.events(NETWORK, timeout=10) as stream:
        seen: list[dict[str, Any]] = []
        created = [api.create_port(NETWORK, f"52:54:00:91:01:{i:02x}", owner=f"vm{i}")
                   for i in range(3)]
        devices = [port["device"] for port in created]
        assert len(set(devices)) == 3 and all(d.startswith("vnet") for d in devices)
        for port in created:
            event = wait_event(stream, lambda e: e["type"] == "port-created", 5, seen)
            assert (event["uuid"], event["device"]) == (port["uuid"], port["device"])
        assert set(devices) <= set(links(lab.ns))
        listed = api.ports(NETWORK)
        assert [p["uuid"] for p in listed] == [p["uuid"] for p in created]
        assert f"<uuid>{created[1]['uuid']}</uuid>" in api.port_xml(NETWORK, created[1]["uuid"])
        assert api.port(NETWORK, devices[2])["uuid"] == created[2]["uuid"]  # by device name
        assert api.network(NETWORK)["connections"] == 3
        # The CLI (through the daemon) sees the same ports.
        assert all(p["uuid"] in lab.virtnet("port-list", NETWORK).stdout for p in created)
        # A port made without the daemon is seen by it at once (what it keeps in memory is
        # checked against the disk), and never given the same device twice.
        outside = json.loads(lab.virtnet("port-create", NETWORK, "--mac", "52:54:00:91:01:09",
                                         "--json", direct=True).stdout)
        after = api.create_port(NETWORK, "52:54:00:91:01:0a")
        assert after["device"] not in devices + [outside["device"]]
        assert {p["uuid"] for p in api.ports(NETWORK)} == {
            p["uuid"] for p in created + [outside, after]}
        lab.virtnet("port-delete", NETWORK, outside["uuid"], direct=True)
        api.delete_port(NETWORK, after["uuid"])
        assert [p["uuid"] for p in api.ports(NETWORK)] == [p["uuid"] for p in created]
        wanted = {(kind, port["uuid"]) for kind in ("port-created", "port-deleted")
                  for port in (outside, after)}
        got: set[tuple[str, str]] = set()
        while not wanted <= got:
            event = wait_event(stream, lambda e: e["type"].startswith("port-"), 5, seen)
            got.add((event["type"], event["uuid"]))
        assert got == wanted  # each once, whoever made the change
        for port in created:
            api.delete_port(NETWORK, port["uuid"])
            event = wait_event(stream, lambda e: e["type"] == "port-deleted", 5, seen)
            assert event["uuid"] == port["uuid"]
        assert not set(devices) & set(links(lab.ns))
        with pytest.raises(ApiError) as missing:
            api.delete_port(NETWORK, created[0]["uuid"])
        assert missing.value.status == 404 and "Network port not found" in missing.value.message
        with pytest.raises(ApiError) as bad:
            api.create_port(NETWORK, "not-a-mac")
        assert bad.value.status == 400 and "invalid MAC address" in bad.value.message


def server_timing(response: Any) -> dict[str, float]:
    header = response.headers["server-timing"]
    return {name: float(value) for name, _, value in
            (item.strip().partition(";dur=") for item in header.split(","))}


def test_answers_say_where_the_daemon_spent_its_time(lab: Lab) -> None:
    with lab.api() as api:
        info = server_timing(api.call("GET", "/v1", raw=True))
        # the daemon's own information takes no engine work
        assert info["work"] == 0.0 and info["handler"] > 0.0
        created = api.call("POST", f"/v1/networks/{NETWORK}/ports",
                           {"mac": "52:54:00:91:02:01"}, raw=True)
        port = created.json()
        timing = server_timing(created)
        # a port create is engine work in a worker thread, within the handler's time
        assert 0.0 < timing["work"] <= timing["handler"]
        deleted = api.call("DELETE", f"/v1/networks/{NETWORK}/ports/{port['uuid']}", raw=True)
        assert deleted.status == 200 and server_timing(deleted)["work"] > 0.0
    # a refusal says it too
    refused = raw_exchange(lab.daemon.socket_path, b"GET /v1/networks/no-such-network HTTP/1.1\r\n"
                           b"Host: x\r\nConnection: close\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 404") and b"\r\nServer-Timing: work;dur=" in refused


# --- SCM_RIGHTS and access --------------------------------------------------------------------


ETH_P_ARP = 0x0806


def arp_request(mac: str, sender_ip: str, target_ip: str) -> bytes:
    source = bytes.fromhex(mac.replace(":", ""))
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, source,
                       socket.inet_aton(sender_ip), b"\0" * 6, socket.inet_aton(target_ip))
    return b"\xff" * 6 + source + struct.pack("!H", ETH_P_ARP) + body


def member_uses_a_handed_over_tap(socket_path: str, mac: str, tun: int) -> dict[str, Any]:
    """Runs as an unprivileged member of the daemon's group: create a port, receive its tap,
    show that the tap could not be attached otherwise, even with /dev/net/tun open (TUN is
    opened by root before the fork, so the node's mode does not matter: 0600 on a fresh
    Debian, 0666 elsewhere), then ask ARP through it."""
    from virtnet.host.ipc import IFF_NO_PI, IFF_TAP, TUNSETIFF
    import fcntl

    with Client(socket_path, timeout=30) as api:
        port = api.create_port(NETWORK, mac, owner="unprivileged", pass_fd=True, vnet_hdr=False)
        fd = port["fd"]
        try:
            try:
                fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH22x", port["device"].encode(),
                                                         IFF_TAP | IFF_NO_PI))
                open_error = 0
            except OSError as exc:
                open_error = exc.errno
            reply = None
            for _ in range(10):
                os.write(fd, arp_request(mac, f"{SUBNET}.77", f"{SUBNET}.1"))
                deadline = time.monotonic() + 0.5
                while reply is None and (remaining := deadline - time.monotonic()) > 0:
                    ready, _, _ = select.select([fd], [], [], remaining)
                    if not ready:
                        break
                    frame = os.read(fd, 2048)
                    ethertype = struct.unpack("!H", frame[12:14])[0]
                    if ethertype == ETH_P_ARP and struct.unpack("!H", frame[20:22])[0] == 2:
                        reply = {"sender_ip": socket.inet_ntoa(frame[28:32]),
                                 "to_mac": frame[0:6].hex(":")}
                if reply is not None:
                    break
        finally:
            os.close(fd)
        api.delete_port(NETWORK, port["uuid"])
        return {"port": port, "open_error": open_error, "reply": reply, "uid": os.getuid()}


def test_a_tap_handed_over_to_an_unprivileged_member(lab: Lab) -> None:
    mac = "52:54:00:91:02:01"
    # The member's own way in to the tap: /dev/net/tun opened by root and inherited, so that
    # the test needs no particular mode on the node (nor changes it).
    tun = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        result = run_as(MEMBER_UID, [MEMBER_UID, ADMIN_GID], member_uses_a_handed_over_tap,
                        str(lab.daemon.socket_path), mac, tun)
    finally:
        os.close(tun)
    assert result["uid"] == MEMBER_UID
    assert result["port"]["fd_passed"] is True
    assert result["open_error"] == errno.EPERM  # the tap is root's: only the hand-over works
    assert result["reply"] == {"sender_ip": f"{SUBNET}.1", "to_mac": mac}
    with lab.api() as api:
        assert api.ports(NETWORK) == []


TUNSETPERSIST = 0x400454CB


def member_lets_the_tap_go(socket_path: str, mac: str) -> dict[str, Any]:
    """Runs as an unprivileged member: receive a port's tap, make it non-persistent (any
    holder of its descriptor may), and close it: the kernel deletes the tap."""
    import fcntl

    with Client(socket_path, timeout=30) as api:
        port = api.create_port(NETWORK, mac, owner="leaver", pass_fd=True)
    fd = port.pop("fd")
    try:
        fcntl.ioctl(fd, TUNSETPERSIST, 0)
    finally:
        os.close(fd)
    return port


def test_a_port_whose_tap_went_with_its_holder_is_released(lab: Lab) -> None:
    mac = "52:54:00:91:02:02"
    with lab.api() as api, api.events(NETWORK, timeout=10) as stream:
        seen: list[dict[str, Any]] = []
        port = run_as(MEMBER_UID, [MEMBER_UID, ADMIN_GID], member_lets_the_tap_go,
                      str(lab.daemon.socket_path), mac)
        wait_event(stream, lambda e: e["type"] == "port-created", 5, seen)
        gone = wait_event(stream, lambda e: e["type"] == "port-deleted", 5, seen)
        assert gone == {**gone, "uuid": port["uuid"], "device": port["device"], "mac": mac,
                        "reason": "device-gone"}
        assert api.ports(NETWORK) == []
        assert api.network(NETWORK)["connections"] == 0
        assert port["device"] not in links(lab.ns)
        # the MAC is free again
        again = api.create_port(NETWORK, mac)
        api.delete_port(NETWORK, again["uuid"])


def member_closes_a_port_released_on_close(socket_path: str, mac: str) -> dict[str, Any]:
    """Runs as an unprivileged member: a port that goes with its descriptor, which it
    receives and closes (as a VM does when it exits), doing nothing to the tap itself."""
    with Client(socket_path, timeout=30) as api:
        port = api.create_port(NETWORK, mac, owner="vm", pass_fd=True, release_on_close=True)
    os.close(port.pop("fd"))
    return port


def test_a_port_released_on_close_goes_with_its_last_descriptor(lab: Lab) -> None:
    mac = "52:54:00:91:02:07"
    with lab.api() as api, api.events(NETWORK, timeout=10) as stream:
        seen: list[dict[str, Any]] = []
        port = run_as(MEMBER_UID, [MEMBER_UID, ADMIN_GID], member_closes_a_port_released_on_close,
                      str(lab.daemon.socket_path), mac)
        gone = wait_event(stream, lambda e: e["type"] == "port-deleted", 5, seen)
        assert (gone["uuid"], gone["reason"]) == (port["uuid"], "device-gone")
        assert api.ports(NETWORK) == []
        assert port["device"] not in links(lab.ns)
        # without a descriptor to go with, the request is refused and nothing is made
        with pytest.raises(ApiError) as refused:
            api.call("POST", f"/v1/networks/{NETWORK}/ports",
                     {"mac": mac, "release_on_close": True})
        assert refused.value.status == 400 and "needs pass_fd" in refused.value.message
        assert api.ports(NETWORK) == []


def member_runs_port_exec(state_dir: str, mac: str, script: str) -> tuple[int, str]:
    """Runs as an unprivileged member: virtnet port-exec, its command a shell SCRIPT whose
    output goes to a file (the status and that output come back)."""
    from virtnet.face.fastcli import main as virtnet_main

    out = Path(tempfile.mkdtemp(prefix="vnt-port-exec-")) / "out"  # the member's own
    try:
        status = virtnet_main(["--state-dir", state_dir, "port-exec", NETWORK, "--mac", mac,
                               "--", "sh", "-c", f"exec >{out} 2>&1; {script}"])
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    try:
        return status, out.read_text() if out.exists() else "(the command did not run)"
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def test_port_exec_runs_a_command_with_the_ports_descriptor_then_deletes_it(lab: Lab) -> None:
    mac = "52:54:00:91:02:08"
    # the command sees its descriptor (a tap, by {fd} and the environment) and the port
    script = ("test {fd} = $VIRTNET_PORT_FD && readlink /proc/self/fd/{fd} && "
              "echo mac=$VIRTNET_PORT_MAC dev={device} && exit 7")
    (lab.root / "state").chmod(0o755)
    status, output = run_as(MEMBER_UID, [MEMBER_UID, ADMIN_GID], member_runs_port_exec,
                            str(lab.root / "state"), mac, script)
    assert status == 7, output
    assert "/dev/net/tun" in output and f"mac={mac} dev=vnet" in output
    with lab.api() as api:
        assert api.ports(NETWORK) == []  # deleted when the command ended
        assert api.network(NETWORK)["connections"] == 0


def test_a_mac_is_given_to_one_port_of_a_network_at_a_time(lab: Lab) -> None:
    with lab.api() as api:
        first = api.create_port(NETWORK, "52:54:00:91:02:03")
        try:
            for same in ("52:54:00:91:02:03", "52:54:00:91:02:03".upper()):
                with pytest.raises(ApiError) as taken:
                    api.create_port(NETWORK, same)
                assert taken.value.status == 400
                assert (f"network '{NETWORK}' already has a port with MAC address "
                        f"52:54:00:91:02:03 (port {first['uuid']})") in taken.value.message
            with pytest.raises(ApiError) as multicast:
                api.create_port(NETWORK, "01:00:5e:00:00:01")
            assert multicast.value.status == 400 and "is multicast" in multicast.value.message
            assert [p["uuid"] for p in api.ports(NETWORK)] == [first["uuid"]]
        finally:
            api.delete_port(NETWORK, first["uuid"])


def test_devices_gone_while_no_daemon_ran_are_released_at_start(lab: Lab) -> None:
    """A tap deleted while the daemon was down releases its port when it starts; a tap
    moved into another namespace is still its port's, then as when the daemon runs."""
    import fcntl

    with lab.api() as api:
        leaving = api.create_port(NETWORK, "52:54:00:91:02:04", pass_fd=True)
        moving = api.create_port(NETWORK, "52:54:00:91:02:05")
        marker = api.create_port(NETWORK, "52:54:00:91:02:06")
    fd = leaving.pop("fd")
    lab.daemon.kill()
    try:
        fcntl.ioctl(fd, TUNSETPERSIST, 0)
    finally:
        os.close(fd)  # the tap goes, unseen
    sh("ip", "-n", lab.ns, "link", "set", "dev", moving["device"], "netns", lab.guest_ns)
    lab.daemon.start()
    try:
        with lab.api() as api:
            listed = {p["uuid"] for p in api.ports(NETWORK)}
            assert listed == {moving["uuid"], marker["uuid"]}
            with api.events(since=0, timeout=5) as stream:
                gone = wait_event(stream, lambda e: e["type"] == "port-deleted", 5)
            assert (gone["uuid"], gone["reason"]) == (leaving["uuid"], "device-gone")
            # while the daemon runs: a device moved away keeps its port, a deleted one not
            with api.events(NETWORK, timeout=10) as stream:
                sh("ip", "-n", lab.guest_ns, "link", "set", "dev", moving["device"], "netns",
                   lab.ns)
                sh("ip", "-n", lab.ns, "link", "set", "dev", moving["device"], "netns",
                   lab.guest_ns)
                sh("ip", "-n", lab.ns, "link", "delete", "dev", marker["device"])
                gone = wait_event(stream, lambda e: e["type"] == "port-deleted", 5)
            assert gone["uuid"] == marker["uuid"]  # the notifications come in order
            assert {p["uuid"] for p in api.ports(NETWORK)} == {moving["uuid"]}
    finally:
        sh("ip", "-n", lab.guest_ns, "link", "set", "dev", moving["device"], "netns", lab.ns,
           check=False)
        with lab.api() as api:
            for port in api.ports(NETWORK):
                api.delete_port(NETWORK, port["uuid"])
    assert not {moving["device"], marker["device"]} & set(links(lab.ns))


def other_user_calls(socket_path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Client(socket_path, timeout=30) as api:
        out["info"] = api.info()["peer"]
        out["networks"] = [n["name"] for n in api.networks()]
        try:
            api.create_port(NETWORK, "52:54:00:91:03:01")
        except ApiError as exc:
            out["create"] = (exc.status, exc.message)
        try:
            api.destroy(NETWORK)
        except ApiError as exc:
            out["destroy"] = (exc.status, exc.message)
    return out


def other_user_cli(argv: list[str]) -> tuple[int | None, str, str]:
    """The thin CLI's forwarding, in this process (the interpreter under /root is not
    executable for other users); None: it would have run in-process."""
    import io

    from virtnet.face import fastcli

    out, err = io.StringIO(), io.StringIO()
    sys.stdout, sys.stderr = out, err
    try:
        status = fastcli.forward(fastcli.split_command_line(argv), {})
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    return status, out.getvalue(), err.getvalue()


def test_others_may_only_read(lab: Lab) -> None:
    socket_path = lab.daemon.socket_path
    assert (os.stat(socket_path).st_mode & 0o777, os.stat(socket_path).st_gid) == (0o660,
                                                                                   ADMIN_GID)
    socket_path.chmod(0o666)  # by default others cannot even connect; here they may try
    try:
        out = run_as(OTHER_UID, [OTHER_UID], other_user_calls, str(socket_path))
        cli = ["--netns", lab.ns, "--state-dir", str(lab.state)]
        listing = run_as(OTHER_UID, [OTHER_UID], other_user_cli, cli + ["net-list"])
        destroy = run_as(OTHER_UID, [OTHER_UID], other_user_cli, cli + ["net-destroy", NETWORK])
    finally:
        socket_path.chmod(0o660)
    assert out["info"] == {"uid": OTHER_UID, "gid": OTHER_UID, "pid": out["info"]["pid"],
                           "may_change": False}
    assert out["networks"] == [NETWORK]
    for verb in ("create", "destroy"):
        status, message = out[verb]
        assert status == 403
        assert message.startswith(f"permission denied: only root or members of group "
                                  f"'{ADMIN_GID}' may change networks (uid {OTHER_UID}")
    assert listing[0] == 0 and f" {NETWORK} " in listing[1]
    assert destroy[0] == 1 and "permission denied" in destroy[2]
    assert lab.info()["active"]


# --- the thin client --------------------------------------------------------------------------


HEAVY_MODULES = ("lxml", "click", "rich", "pyroute2", "aiohttp", "virtnet.service.engine", "virtnet.face.cli",
                 "json", "socket", "http")


def test_the_fast_path_loads_no_heavy_module(lab: Lab) -> None:
    argv = [sys.executable, "-X", "importtime", *script("virtnet")[-1:], "--netns", lab.ns,
            "--state-dir", str(lab.state), "net-list", "--all"]
    if not argv[3].endswith("virtnet"):
        pytest.skip("the virtnet console script is not installed next to this interpreter")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = [line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line]
    assert "virtnet.face.fastcli" in imported
    heavy = [m for m in imported if m.split(".")[0] in HEAVY_MODULES or m in HEAVY_MODULES]
    assert heavy == []
    assert proc.stdout == lab.virtnet("net-list", "--all", direct=True).stdout


def test_a_client_meaning_another_namespace_is_refused(lab: Lab) -> None:
    argv = [*script("virtnet"), "--netns", lab.guest_ns, "--state-dir", str(lab.state),
            "net-destroy", NETWORK]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"error: virtnetd at {lab.daemon.socket_path} manages network namespace '{lab.ns}', "
        f"not '{lab.guest_ns}'; use --direct, or the virtnetd of that namespace\n")
    root_ns = subprocess.run([*script("virtnet"), "--state-dir", str(lab.state), "net-list"],
                             capture_output=True, text=True, timeout=60)
    assert root_ns.returncode == 1 and "not this client's network namespace" in root_ns.stderr
    assert lab.info()["active"]


def test_doctor_through_the_api(lab: Lab) -> None:
    with lab.api() as api:
        available = api.info()["doctor"]
        if not available:
            with pytest.raises(ApiError) as missing:
                api.call("GET", "/v1/doctor")
            assert missing.value.status == 501
            return
        report = api.call("GET", f"/v1/doctor?network={NETWORK}")
    assert set(report) >= {"healthy", "host", "networks"}
    assert len(report["networks"]) == 1


def test_net_edit_runs_here_and_the_daemon_sees_the_change(lab: Lab) -> None:
    editor = f"sed -i 's/{SUBNET}.150/{SUBNET}.160/'"
    out = lab.virtnet("net-edit", NETWORK, env={"VISUAL": editor}).stdout
    assert out == f"Network {NETWORK} XML configuration edited.\n\n"
    assert f"{SUBNET}.160" in lab.virtnet("net-dumpxml", NETWORK, "--inactive").stdout
    with lab.api() as api:
        assert f"{SUBNET}.160" in api.dumpxml(NETWORK, inactive=True)
        assert f"{SUBNET}.150" in api.dumpxml(NETWORK)  # the running network is unchanged


MISSPELT = ("<network>\n  <name>typo</name>\n  <forwrd mode='nat'/>\n"
            "  <ip address='10.92.0.1' netmask='255.255.255.0'/>\n</network>\n")


def test_define_with_validate_refuses_unknown_elements_through_the_api_and_the_cli(
        lab: Lab, tmp_path: Path) -> None:
    item = "/network/forwrd: unknown element <forwrd> in <network>"
    with lab.api() as api:
        with pytest.raises(ApiError) as refused:
            api.define(MISSPELT, validate=True)
        assert (refused.value.status, refused.value.kind) == (400, "SchemaError")
        assert f"request:3: {item} (did you mean <forward>?)" in refused.value.message
        assert "typo" not in [n["name"] for n in api.networks(all=True)]
        defined = api.define(MISSPELT)  # libvirt's leniency: defined, isolated, warned about
        assert defined["warnings"] == [f"request:3: {item} (did you mean <forward>?)"]
        assert defined["forward_mode"] == "none"
        api.undefine("typo")
    # the thin CLI forwards both to the daemon and prints what the in-process run prints
    path = tmp_path / "typo.xml"
    path.write_text(MISSPELT)
    timing = {"VIRTNET_CLIENT_TIMING": "1"}
    refused_cli = lab.virtnet("net-define", "--validate", str(path), check=False, env=timing)
    assert refused_cli.returncode == 1
    assert '"forwarded":true' in refused_cli.stderr
    assert f"error: Failed to define network from {path}\n" in refused_cli.stderr
    assert f"  {path}:3: {item} (did you mean <forward>?)\n" in refused_cli.stderr
    assert "typo" not in lab.virtnet("net-list", "--all", "--name").stdout.split()
    plain = lab.virtnet("net-define", str(path), env=timing)
    assert '"forwarded":true' in plain.stderr
    assert f"warning: {path}:3: {item}, ignored (did you mean <forward>?)\n" in plain.stderr
    assert plain.stdout == f"Network typo defined from {path}\n\n"
    lab.virtnet("net-undefine", "typo")


# --- bad requests -----------------------------------------------------------------------------


def raw_exchange(path: Path, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def http_error(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


def test_bad_requests_get_clear_json_errors(lab: Lab) -> None:
    path = lab.daemon.socket_path
    huge = b"x" * (17 * 1024 * 1024)
    cases = [
        (b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
         b"Content-Length: %d\r\n\r\n" % len(huge) + huge, 413, "larger than the daemon"),
        (b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
         b"Content-Length: 7\r\n\r\n{\"xml\":", 400, "not valid JSON"),
        (b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
         b"Content-Length: 10\r\n\r\n{\"xml\": 1}", 400, "field 'xml' must be a string"),
        (b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
         b"Content-Length: 2\r\n\r\n[]", 400, "must be a JSON object"),
        (b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404,
         "no such endpoint: /v1/nothing"),
        (b"PATCH /v1/networks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405,
         "PATCH is not allowed"),
        (b"GET /v1/networks?bogus=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400,
         "unknown query parameter"),
        (post(f"/v1/networks/{NETWORK}/ports", b'{"mac": "52:54:00:00:00:01", "x"'), 400,
         "not valid JSON"),
        (post(f"/v1/networks/{NETWORK}/ports", b'{"mac": 5}'), 400,
         "field 'mac' must be a string, not an integer"),
        (post(f"/v1/networks/{NETWORK}/ports", b'{"mac": "52:54:00:00:00:01", "pass_fd": 1}'),
         400, "field 'pass_fd' must be true or false"),
        (post(f"/v1/networks/{NETWORK}/ports", b'{"mac": "52:54:00:00:00:01", "nope": 1}'),
         400, "unknown field(s): nope"),
        (post("/v1/cli", b'{"argv": ["net-edit", "x"], "netns": null}'), 400,
         "'net-edit' runs in the client"),
    ]
    for request, status, text in cases:
        got, error = http_error(raw_exchange(path, request))
        assert (got, text in error["message"]) == (status, True), (request[:60], error)
    # Malformed HTTP itself is answered by aiohttp (400, plain text) and does no harm.
    malformed = raw_exchange(path, b"GET /v1 HTTP/1.1\r\nHost x\r\n\r\n")
    assert malformed.split(b" ", 2)[1] == b"400" and b"Invalid header" in malformed
    # A body that never arrives: 408 after the request timeout, and the connection closes.
    start = time.monotonic()
    got, error = http_error(raw_exchange(
        path, b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"))
    assert got == 408 and "did not arrive" in error["message"]
    assert time.monotonic() - start < REQUEST_TIMEOUT_S + 3
    # A request head that never completes: cut off.
    start = time.monotonic()
    assert raw_exchange(path, b"GET /v1/networks HTTP/1.1\r\nHost:") == b""
    assert time.monotonic() - start < REQUEST_TIMEOUT_S + 3
    assert lab.daemon.running and lab.info()["active"]


def netns_id(lab: Lab) -> dict[str, int]:
    st = os.stat(f"/run/netns/{lab.ns}")
    return {"dev": st.st_dev, "ino": st.st_ino}


def test_hostile_bodies_get_a_json_4xx(lab: Lab) -> None:
    """Found by the API fuzzer (bench/fuzz_api.py): each of these answered 500, or 200 with
    an internal error, before."""
    path = lab.daemon.socket_path
    ports = f"/v1/networks/{NETWORK}/ports"
    cli = json.dumps({"argv": ["validate", "a.xml"], "files": {"a.xml": {"errno": 10**22}},
                      "netns": netns_id(lab)}).encode()
    cases = [
        (post("/v1/plan", b'{"xml": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 400,
         "the body is not valid JSON: nested too deeply"),
        (post("/v1/plan", b'{"a":' * 100_000 + b"1" + b"}" * 100_000), 400, "nested too deeply"),
        (post("/v1/plan", b'{"xml": "\xff"}'), 400, "the body is not UTF-8"),
        (post("/v1/plan", '{"xml": "<network/>"}'.encode("utf-16")), 400, "not UTF-8"),
        (post("/v1/plan", b'{"xml": NaN}'), 400, "NaN is not a JSON value"),
        (post("/v1/plan", b'{"xml": ' + b"9" * 5000 + b"}"), 400, "not valid JSON"),
        (post(f"/v1/networks/{NETWORK}/update",
              b'{"command": "add", "section": "ip-dhcp-host", "xml": "<host/>", '
              b'"parent_index": 100000000000000000000000}'), 400,
         f"field 'parent_index' must be an integer from -1 to {2**63 - 1}"),
        (post(ports, b'{"mac": "52:54:00:91:05:01", "inbound": {"average": %d}}' % 2**64), 400,
         f"inbound: field 'average' must be an integer from 1 to {2**64 - 1}"),
        (post(ports, b'{"mac": "52:54:00:91:05:01", "inbound": {"average": %d}}'
              % (2**64 - 1)), 400, "is more than tc can set (at most 4294967295 kB/s)"),
        (post(ports, b'{"mac": "52:54:00:91:05:01", "outbound": "99999999999999999999"}'), 400,
         "is more than tc can set"),
        (post(ports, b'{"mac": "52:54:00:91:05:01", "inbound": {"floor": 10}}'), 400,
         "Invalid use of 'floor' on interface with MAC address 52:54:00:91:05:01"),
        (post(ports, b'{"mac": "52:54:00:91:05:01", "owner": "\\udc80"}'), 400,
         "invalid owner name '\\udc80': character U+DC80 cannot be written"),
        (post("/v1/cli", cli), 400, "field 'errno' must be an integer from 1 to 4095"),
        (b"GET /v1/events?since=%C2%B2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400,
         "query parameter 'since' must be an event's seq"),
    ]
    with lab.api() as api:
        ports_before = api.ports(NETWORK)
    for request, status, text in cases:
        got, error = http_error(raw_exchange(path, request))
        assert (got, text in error["message"]) == (status, True), (request[:80], error)
        assert error["status"] == got
    # A client's spelling of the state directory with a NUL in it is no error of the daemon's.
    body = json.dumps({"argv": ["net-name", "no-such-uuid"], "netns": netns_id(lab),
                       "state_dir": "/a\u0000b"}).encode()
    answer = raw_exchange(path, post("/v1/cli", body))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"internal error" not in answer
    with lab.api() as api:
        assert api.ports(NETWORK) == ports_before  # nothing was made on the way
    assert "Traceback" not in lab.daemon.log()


def test_statuses_follow_the_error_types(lab: Lab) -> None:
    with lab.api() as api:
        with pytest.raises(ApiError) as missing_port:
            api.port(NETWORK, "00000000-0000-4000-8000-000000000000")
        with pytest.raises(ApiError) as missing_network:
            api.network("no-such-network")
        with pytest.raises(ApiError) as clash:  # the host as it is now, not the request
            api.plan(xml=network_xml("other", SUBNET, bridge="virbr5"))
    assert (missing_port.value.status, missing_port.value.kind) == (404, "PortNotFound")
    assert (missing_network.value.status, missing_network.value.kind) == (404, "NotFoundError")
    assert (clash.value.status, clash.value.kind) == (409, "HostConflict")
    assert (f"subnet {SUBNET}.0/24 overlaps {SUBNET}.0/24 of active network '{NETWORK}' (on "
            "virbr0)") in clash.value.message


def test_a_running_network_has_a_plan(lab: Lab) -> None:
    """plan of an active network: the plan of its start, with no clash of the network with
    its own bridge, address and routes (it answered 500 through the daemon before)."""
    assert lab.info()["active"]
    with lab.api() as api:
        plan = api.plan(NETWORK)
    assert plan["actions"][0]["kind"] == "create-bridge"
    assert plan["actions"][0]["name"] == "virbr0"
    assert f"ip address add {SUBNET}.1/24 broadcast {SUBNET}.255 dev virbr0" in plan["commands"]
    direct = lab.virtnet("plan", NETWORK, direct=True)
    forwarded = lab.virtnet("plan", NETWORK)
    assert direct.stdout == forwarded.stdout and direct.stderr == forwarded.stderr == ""
    assert "create bridge virbr0" in direct.stdout.splitlines()[0]
    assert lab.info()["active"]


def test_an_event_stream_stays_open_past_the_request_timeout(lab: Lab) -> None:
    with lab.api() as api, api.events(NETWORK, timeout=REQUEST_TIMEOUT_S * 3) as stream:
        time.sleep(REQUEST_TIMEOUT_S * 1.5)
        port = api.create_port(NETWORK, "52:54:00:91:04:01")
        event = wait_event(stream, lambda e: e["type"] == "port-created", 5)
        assert event["uuid"] == port["uuid"]
        api.delete_port(NETWORK, port["uuid"])


def test_lease_renewed_and_released_are_events(lab: Lab) -> None:
    if shutil.which("dhclient") is None:
        pytest.skip("needs dhclient (it releases its lease on request; udhcpc -q does not)")
    hook = lab.root / "dhclient.sh"
    hook.write_text("#!/bin/sh\nexit 0\n")  # the guest keeps its address as it is
    hook.chmod(0o755)
    conf = lab.root / "dhclient.conf"
    conf.write_text("timeout 20;\n")
    files = ["-cf", str(conf), "-pf", str(lab.root / "dhclient.pid"), "-lf",
             str(lab.root / "dhclient.leases"), "-sf", str(hook)]
    with lab.api() as api, api.events(NETWORK, timeout=10) as stream:
        seen: list[dict[str, Any]] = []
        # Asking again renews the lease (a later expiry); -r releases it (and stops dhclient).
        sh("ip", "netns", "exec", lab.guest_ns, "dhclient", "-4", "-1", *files, "eth0",
           timeout=40)
        renewed = wait_event(stream, lambda e: e["type"] == "lease-renewed", 5, seen)
        sh("ip", "netns", "exec", lab.guest_ns, "dhclient", "-4", "-r", *files, "eth0",
           timeout=40)
        released_at = time.time()
        released = wait_event(stream, lambda e: e["type"] == "lease-released", 5, seen)
    assert renewed["mac"] == GUEST_MAC and released["ip"] == GUEST_IP
    assert released["time"] - released_at < 1.0
    assert GUEST_MAC not in lab.virtnet("net-dhcp-leases", NETWORK).stdout


def test_stopping_the_network_and_undefining_are_events(lab: Lab) -> None:
    with lab.api() as api, api.events(timeout=10) as stream:
        seen: list[dict[str, Any]] = []
        assert lab.virtnet("net-destroy", NETWORK).stdout == f"Network {NETWORK} destroyed\n\n"
        wait_event(stream, lambda e: e["type"] == "network-stopped", 5, seen)
        api.undefine(NETWORK)
        wait_event(stream, lambda e: e["type"] == "network-undefined", 5, seen)
        assert [e["network"] for e in seen] == [NETWORK] * len(seen)
        assert api.networks(all=True) == []


# --- start-up ---------------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[str, Path, list[VirtnetdProcess]]]:
    """A namespace and a traversable state root; daemons appended to the list are stopped."""
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")
    created: list[str] = []
    daemons: list[VirtnetdProcess] = []
    root = Path(tempfile.mkdtemp(prefix="vnt-daemon-"))
    root.chmod(0o755)
    try:
        yield new_netns(created), root, daemons
    finally:
        for daemon in daemons:
            daemon.stop()
        for ns in created:
            delete_netns(ns)
        shutil.rmtree(root, ignore_errors=True)


def test_an_interrupted_start_is_cleaned_when_the_daemon_starts(fresh: Any) -> None:
    ns, root, daemons = fresh
    daemon = VirtnetdProcess(ns, root / "state")
    daemons.append(daemon)
    definition = root / "c.xml"
    definition.write_text(network_xml("c", "10.92.0"))
    daemon.virtnet("net-define", str(definition))  # no daemon yet: in-process
    crashed = daemon.virtnet("net-start", "c", check=False,
                             env={"VIRTNET_CRASH_AFTER_STEP": "3"})
    assert crashed.returncode == 137
    assert "virbr0" in links(ns)  # half-built
    daemon.start()
    with daemon.client() as api:
        info = api.network("c")
        assert info["active"] is False and info["problems"] == []
        with api.events(since=0, timeout=5) as stream:
            cleaned = next(stream)
            started = next(stream)
    assert (cleaned["type"], cleaned["network"]) == ("network-cleaned", "c")
    assert started["type"] == "daemon-started" and started["networks"] == {"c": "cleaned"}
    assert "virbr0" not in links(ns)


def test_autostart_networks_start_once_per_boot(fresh: Any) -> None:
    ns, root, daemons = fresh
    daemon = VirtnetdProcess(ns, root / "state")
    daemons.append(daemon)
    definition = root / "auto.xml"
    definition.write_text(network_xml("auto", "10.93.0"))
    daemon.virtnet("net-define", str(definition))
    daemon.virtnet("net-autostart", "auto")
    daemon.start()
    with daemon.client() as api:
        assert api.network("auto")["active"]
        assert api.network("auto")["adopted"] is False  # started by this daemon
    # Its user stops it; a daemon restart must not start it again (only a boot does).
    daemon.virtnet("net-destroy", "auto")
    daemon.restart()
    with daemon.client() as api:
        assert api.network("auto")["active"] is False
    assert (root / "state" / "run" / "virtnetd.autostarted").exists()


def test_one_daemon_per_state_directory(fresh: Any) -> None:
    ns, root, daemons = fresh
    first = VirtnetdProcess(ns, root / "state")
    daemons.append(first)
    first.start()
    second = subprocess.run([*script("virtnetd"), "--netns", ns, "--state-dir",
                             str(root / "state")], capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"another virtnetd (pid {first.pid}) already serves this state directory" \
        in second.stderr
    assert first.running


def test_the_daemon_logs_each_change_with_who_asked(fresh: Any) -> None:
    ns, root, daemons = fresh
    daemon = VirtnetdProcess(ns, root / "state")
    daemons.append(daemon)
    daemon.start()
    definition = root / "logged.xml"
    definition.write_text(network_xml("logged", "10.94.0"))
    daemon.virtnet("net-define", str(definition))
    daemon.virtnet("net-list")  # reads are not changes: not logged
    from virtnet.client import Connection

    connection = Connection(str(daemon.socket_path), 30.0)
    try:
        answer = connection.request("DELETE", "/v1/networks/nosuch%0Aforged")
    finally:
        connection.close()
    assert answer.status == 404
    daemon.virtnet("net-undefine", "logged")
    log = daemon.log()
    changes = [line for line in log.splitlines() if " by uid " in line]
    assert len(changes) == 3, log
    assert changes[0].endswith(f"net-define {definition} by uid 0, gid 0, pid "
                               f"{changes[0].split(' pid ')[1].split(':')[0]}: exit status 0")
    assert "net-list" not in log
    # a client's text stays on its line, escaped
    assert "DELETE '/v1/networks/nosuch\\nforged' by uid 0" in changes[1] and \
        changes[1].endswith(": 404")
    assert "net-undefine logged by uid 0" in changes[2]


def test_net_event_prints_lifecycle_events_as_virsh_does(fresh: Any) -> None:
    """The text virsh 9.0 prints for the same four changes (seen from a live libvirtd)."""
    ns, root, daemons = fresh
    daemon = VirtnetdProcess(ns, root / "state")
    daemons.append(daemon)
    daemon.start()
    definition = root / "ev.xml"
    definition.write_text(network_xml("ev", "10.95.0"))
    base = [*script("virtnet"), "--netns", ns, "--state-dir", str(root / "state"), "net-event"]
    looping = subprocess.Popen([*base, "--event", "lifecycle", "--loop", "--timeout", "6"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen([*base, "ev", "--event", "lifecycle", "--timestamp"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # both subscribed
        daemon.virtnet("net-define", str(definition))
        daemon.virtnet("net-start", "ev")
        daemon.virtnet("net-destroy", "ev", direct=True)  # seen too, without the daemon
        daemon.virtnet("net-undefine", "ev")
        out, err = looping.communicate(timeout=30)
        first_out, first_err = first.communicate(timeout=30)
    finally:
        for proc in (looping, first):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert looping.returncode == 0, err
    assert out == ("event 'lifecycle' for network ev: Defined\n"
                   "event 'lifecycle' for network ev: Started\n"
                   "event 'lifecycle' for network ev: Stopped\n"
                   "event 'lifecycle' for network ev: Undefined\n"
                   "event loop timed out\nevents received: 4\n\n")
    # a network not defined yet: virsh's error, then the first event of any network
    assert first_err == "error: failed to get network 'ev'\n"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: event 'lifecycle' for "
                        r"network ev: Defined\nevents received: 1\n\n", first_out), first_out
    quiet = daemon.virtnet("net-event", "--event", "lifecycle", "--timeout", "1", check=False)
    assert (quiet.returncode, quiet.stdout) == (1, "event loop timed out\nevents received: 0\n\n")
