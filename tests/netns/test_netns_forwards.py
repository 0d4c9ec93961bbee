"""Port forwards on the real kernel: the CLI inside a namespace of the test's own.

A NAT network with two static guests; guest 1 runs a TCP server. After net-forward-add, a
client in the upstream namespace connecting to the host's uplink address gets the guest's
answer, and so do the host itself (output-hook DNAT) and guest 2 (hairpin NAT). After
net-forward-del, and after net-destroy, no DNAT rule is left. The definition carrying the
forward in its metadata also defines in libvirt (run in a namespace).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

CLI_TIMEOUT_S = 60.0
SERVER_PORT = 8000
HOST_PORT = 8080
ANSWER = b"hello from guest 1"


def virtnet(ns: str, state: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "virtnet.face.cli", "--netns", ns, "--state-dir", str(state), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise AssertionError(f"virtnet {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def serve(port: int, count: int, ready_file: str) -> int:
    """Answer COUNT connections with ANSWER (runs inside the guest namespace)."""
    with socket.create_server(("0.0.0.0", port)) as server:
        server.settimeout(60)
        Path(ready_file).write_text("ready")
        served = 0
        while served < count:
            conn, _ = server.accept()
            with conn:
                conn.sendall(ANSWER)
            served += 1
    return served


def fetch(address: str, port: int) -> bytes | None:
    """The answer of ADDRESS:PORT, or None if the connection fails."""
    try:
        with socket.create_connection((address, port), timeout=3) as conn:
            conn.settimeout(3)
            return conn.recv(100)
    except OSError:
        return None


XML = """<network>
  <name>{name}</name>
  <forward mode='nat'/>
  <bridge stp='off'/>
  <ip address='192.168.77.1' netmask='255.255.255.0'/>
</network>
"""


@pytest.fixture
def topology(netns_kit: Any, tmp_path: Path) -> dict[str, Any]:
    kit = netns_kit
    host = kit.make_netns()
    upstream = kit.add_upstream(host, kit.make_netns())
    state = tmp_path / "state"
    name = "fwdnet"
    path = tmp_path / "net.xml"
    path.write_text(XML.format(name=name))
    virtnet(host, state, "net-define", str(path))
    virtnet(host, state, "net-start", name)
    bridge = json.loads(virtnet(host, state, "net-info", name, "--json").stdout)["bridge"]
    guest1 = kit.add_guest(host, bridge, kit.make_netns(), "192.168.77.10/24", "192.168.77.1")
    guest2 = kit.add_guest(host, bridge, kit.make_netns(), "192.168.77.11/24", "192.168.77.1")
    return {"host": host, "upstream": upstream, "state": state, "name": name,
            "guest1": guest1, "guest2": guest2, "path": path}


def dnat_rules(kit: Any, ns: str) -> list[str]:
    """The DNAT rules (and the accepts and hairpin NAT of DNATed connections) in NS."""
    return [line.strip() for line in kit.ns_nft_ruleset(ns).splitlines() if " dnat" in line]


def test_forward_reaches_guest_from_outside_host_and_other_guest(
    netns_kit: Any, topology: dict[str, Any], tmp_path: Path
) -> None:
    kit, t = netns_kit, topology
    host, state, name = t["host"], t["state"], t["name"]
    ready = tmp_path / "ready"
    server = kit.start_in_netns(t["guest1"].ns, serve, SERVER_PORT, 3, str(ready))
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists(), "the guest's server did not start"

    virtnet(host, state, "net-forward-add", name, "--proto", "tcp", "--port", str(HOST_PORT),
            "--to", f"192.168.77.10:{SERVER_PORT}", "--live", "--config")
    listed = json.loads(virtnet(host, state, "net-forward-list", name, "--json").stdout)
    assert listed == [{"proto": "tcp", "port": str(HOST_PORT), "to": "192.168.77.10",
                       "to_port": SERVER_PORT, "address": None}]
    uplink_ip = t["upstream"].uplink_ip
    assert kit.run_in_netns(t["upstream"].ns, fetch, uplink_ip, HOST_PORT) == ANSWER
    assert kit.run_in_netns(host, fetch, uplink_ip, HOST_PORT) == ANSWER
    assert kit.run_in_netns(t["guest2"].ns, fetch, uplink_ip, HOST_PORT) == ANSWER
    assert server.result(30) == 3
    # persisted (--config) in the definition's metadata, in virtnet's namespace
    dumped = virtnet(host, state, "net-dumpxml", name, "--inactive").stdout
    assert "http://virtnet.dev/schemas/forward/1.0" in dumped and f'port="{HOST_PORT}"' in dumped

    virtnet(host, state, "net-forward-del", name, "--proto", "tcp", "--port", str(HOST_PORT),
            "--live")
    assert dnat_rules(kit, host) == []
    assert kit.run_in_netns(t["upstream"].ns, fetch, uplink_ip, HOST_PORT) is None
    # still in the persistent definition (only --live was removed): next start has it
    assert json.loads(virtnet(host, state, "net-forward-list", name, "--inactive",
                              "--json").stdout)[0]["port"] == str(HOST_PORT)

    virtnet(host, state, "net-forward-add", name, "--proto", "udp", "--port", "5000-5010",
            "--to", "192.168.77.11")
    assert dnat_rules(kit, host)
    virtnet(host, state, "net-destroy", name)
    assert dnat_rules(kit, host) == []
    assert "virtnet" not in kit.ns_nft_ruleset(host)


def test_bad_forwards_are_refused_and_change_nothing(
    netns_kit: Any, topology: dict[str, Any]
) -> None:
    kit, t = netns_kit, topology
    host, state, name = t["host"], t["state"], t["name"]
    before = kit.ns_nft_ruleset(host)
    outside = virtnet(host, state, "net-forward-add", name, "--proto", "tcp", "--port", "80",
                      "--to", "10.1.2.3", check=False)
    assert outside.returncode != 0 and "none of the network's subnets" in outside.stderr
    virtnet(host, state, "net-forward-add", name, "--proto", "tcp", "--port", "80",
            "--to", "192.168.77.10")
    clash = virtnet(host, state, "net-forward-add", name, "--proto", "tcp", "--port", "70-90",
                    "--to", "192.168.77.11", check=False)
    assert clash.returncode != 0 and "already forwarded" in clash.stderr
    # the one good forward: prerouting and output DNAT, its forward accept, its hairpin NAT
    assert len(dnat_rules(kit, host)) == 4
    virtnet(host, state, "net-forward-del", name, "--proto", "tcp", "--port", "80")
    assert kit.ns_nft_ruleset(host) == before


@pytest.mark.libvirt
def test_definition_with_forwards_defines_in_libvirt(tmp_path: Path) -> None:
    from virtnet.service.engine import Engine
    from virtnet.spec.forwards import make_forward, read_forwards, write_forwards
    from tests.kit.libvirtd import LibvirtdInNetns, libvirtd_unavailable_reason

    reason = libvirtd_unavailable_reason()
    if reason is not None or shutil.which("virsh") is None:
        pytest.skip(reason or "needs virsh")
    net = Engine.parse(XML.format(name="vnt-fwd-lv"), "net.xml")
    forwards = [make_forward("tcp", "8080", "192.168.77.10:80"),
                make_forward("udp", "5000-5010", "192.168.77.11", "198.51.100.1")]
    write_forwards(net, forwards)
    path = tmp_path / "net.xml"
    path.write_text(Engine.format(net))
    with LibvirtdInNetns() as lv:
        defined = lv.virsh("net-define", str(path))
        assert defined.returncode == 0, defined.stderr
        dumped = lv.virsh("net-dumpxml", "vnt-fwd-lv", "--inactive")
        assert dumped.returncode == 0, dumped.stderr
    # libvirt kept our element verbatim: it reads back as the same forwards
    assert read_forwards(Engine.parse(dumped.stdout, "libvirt")) == forwards
