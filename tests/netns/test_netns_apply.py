"""net-apply on a running network, on the real kernel, through the CLI.

While a guest pings the host continuously, net-apply adds a DHCP host, changes the range and
adds a route: not one ping is lost, the bridge keeps its ifindex, and a DHCP client with the
new host's MAC gets the reserved address. A failing apply (fault injected at a later step)
leaves the running network exactly as it was, and the definition unsaved.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

BASE = """<network>
  <name>live</name>
  <forward mode='nat'/>
  <bridge stp='off'/>
  <ip address='192.168.79.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.79.100' end='192.168.79.150'/>{hosts}
    </dhcp>
  </ip>{routes}
</network>
"""
NEW_RANGE = "<range start='192.168.79.100' end='192.168.79.200'/>"
HOST_ENTRY = "\n      <host mac='52:54:00:aa:bb:01' name='reserved' ip='192.168.79.42'/>"
ROUTE = "\n  <route address='10.79.0.0' prefix='24' gateway='192.168.79.5'/>"


def virtnet(ns: str, state: Path, *args: str, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "virtnet.face.cli", "--netns", ns, "--state-dir", str(state), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"virtnet {' '.join(args)}:\n{proc.stdout}{proc.stderr}")
    return proc


def ping_until(address: str, stop_file: str, interval: float, limit_s: float) -> tuple[int, int]:
    """Echo ADDRESS every INTERVAL s until STOP_FILE exists; (sent, answered). Each echo
    waits up to 1 s for its answer."""
    def checksum(data: bytes) -> int:
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        total = (total >> 16) + (total & 0xFFFF)
        total += total >> 16
        return ~total & 0xFFFF

    ident, sent, answered = os.getpid() & 0xFFFF, 0, 0
    end = time.monotonic() + limit_s
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        while not os.path.exists(stop_file) and time.monotonic() < end:
            sent += 1
            body = struct.pack("!BBHHH", 8, 0, 0, ident, sent) + b"virtnet-live...."
            sock.sendto(body[:2] + struct.pack("!H", checksum(body)) + body[4:], (address, 0))
            deadline = time.monotonic() + 1.0
            while (remaining := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], remaining)[0]:
                    break
                data, (source, _) = sock.recvfrom(2048)
                start = (data[0] & 0x0F) * 4
                kind, _, _, rid, seq = struct.unpack("!BBHHH", data[start:start + 8])
                if (kind, source, rid, seq) == (0, address, ident, sent):
                    answered += 1
                    break
            time.sleep(interval)
    return sent, answered


def write(path: Path, hosts: str = "", routes: str = "", rng: str | None = None) -> Path:
    text = BASE.format(hosts=hosts, routes=routes)
    if rng is not None:
        text = text.replace("<range start='192.168.79.100' end='192.168.79.150'/>", rng)
    path.write_text(text)
    return path


@pytest.fixture
def state() -> Iterator[Path]:
    """A state directory dnsmasq can still read after it drops root (to nobody): it reads
    its dhcp-hostsfile only then, and pytest's private tmp_path (0700) is not traversable,
    so a dhcp-host there would silently not be served."""
    root = Path(tempfile.mkdtemp(prefix="vnt-apply-"))
    try:
        root.chmod(0o755)
        yield root / "state"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def observe(kit: Any, ns: str, state: Path) -> dict[str, Any]:
    files = {p.name: p.read_text() for p in state.rglob("*") if p.is_file()
             and p.suffix in (".conf", ".hostsfile", ".addnhosts")}
    return {"routes": kit.ns_routes(ns), "ruleset": kit.ns_nft_ruleset(ns), "files": files,
            "links": kit.ns_json(ns, ["link", "show"])}


def test_live_apply_loses_no_ping_and_serves_the_new_host(
    netns_kit: Any, tmp_path: Path, state: Path
) -> None:
    kit = netns_kit
    host = kit.make_netns()
    path = write(tmp_path / "live.xml")
    virtnet(host, state, "net-define", str(path))
    virtnet(host, state, "net-start", "live")
    bridge = json.loads(virtnet(host, state, "net-info", "live", "--json").stdout)["bridge"]
    ifindex = kit.ns_json(host, ["link", "show", bridge])[0]["ifindex"]
    guest = kit.add_guest(host, bridge, kit.make_netns(), "192.168.79.10/24", "192.168.79.1")

    # a failing apply first: nothing may change
    before = observe(kit, host, state)
    new = write(tmp_path / "new.xml", HOST_ENTRY, ROUTE, NEW_RANGE)
    dry = virtnet(host, state, "net-apply", str(new), "--dry-run").stdout
    assert "add route to 10.79.0.0/24" in dry and "restart dnsmasq" in dry
    failed = virtnet(host, state, "net-apply", str(new), check=False,
                     env={"VIRTNET_APPLY_FAULT_STEP": "3"})
    assert failed.returncode != 0 and "runs as before" in failed.stderr
    after = observe(kit, host, state)
    assert after["routes"] == before["routes"] and after["files"] == before["files"]
    assert after["ruleset"] == before["ruleset"]
    assert "192.168.79.42" not in virtnet(host, state, "net-dumpxml", "live", "--inactive").stdout

    stop = tmp_path / "stop"
    pinger = kit.start_in_netns(guest.ns, ping_until, "192.168.79.1", str(stop), 0.02, 60.0)
    time.sleep(0.5)
    applied = virtnet(host, state, "net-apply", str(new)).stdout
    time.sleep(0.5)
    stop.write_text("stop")
    sent, answered = pinger.result(30)
    assert sent > 20 and answered == sent, f"{sent - answered} of {sent} pings lost"
    assert "changed" in applied
    assert kit.ns_json(host, ["link", "show", bridge])[0]["ifindex"] == ifindex
    assert "10.79.0.0/24" in kit.ns_routes(host)
    assert "192.168.79.42" in virtnet(host, state, "net-dumpxml", "live", "--inactive").stdout

    # the new host entry is served: a DHCP client with its MAC gets the reserved address
    client_ns = kit.make_netns()
    port = "vgdhcp0"
    kit.run(["ip", "-n", host, "link", "add", port, "type", "veth", "peer", "name", "eth0",
             "netns", client_ns])
    kit.run(["ip", "-n", host, "link", "set", port, "master", bridge, "up"])
    kit.run(["ip", "-n", client_ns, "link", "set", "eth0", "address", "52:54:00:aa:bb:01",
             "up"])
    offer = kit.ns_run(client_ns, ["udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "2", "-i",
                                   "eth0", "-s", "/bin/true"]).stderr + kit.ns_run(
        client_ns, ["true"]).stdout
    assert "lease of 192.168.79.42 obtained" in offer, offer
    virtnet(host, state, "net-destroy", "live")


def test_what_cannot_change_live_is_named(netns_kit: Any, tmp_path: Path,
                                          state: Path) -> None:
    kit = netns_kit
    host = kit.make_netns()
    path = write(tmp_path / "live.xml")
    virtnet(host, state, "net-define", str(path))
    virtnet(host, state, "net-start", "live")
    routed = tmp_path / "routed.xml"
    routed.write_text(path.read_text().replace("mode='nat'", "mode='route'"))
    refused = virtnet(host, state, "net-apply", str(routed), check=False)
    assert refused.returncode != 0 and "forward mode (nat → route)" in refused.stderr
    restarted = virtnet(host, state, "net-apply", str(routed), "--restart").stdout
    assert "restarted" in restarted
    dumped = virtnet(host, state, "net-dumpxml", "live").stdout
    assert "mode='route'" in dumped or 'mode="route"' in dumped
    virtnet(host, state, "net-destroy", "live")
