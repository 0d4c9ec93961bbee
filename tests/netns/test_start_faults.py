"""Failed and interrupted starts through the real CLI (``virtnet --netns NS --state-dir DIR``).

The network is libvirt's default NAT network (examples/default.xml: bridge virbr0,
192.168.122.1/24, DHCP): every kind of step a start has (bridge, sysctls, firewall, address,
link up, forwarding, dnsmasq files, dnsmasq).

- ``VIRTNET_FAULT_STEP=k`` for every step k of its plan (the count comes from
  ``virtnet plan default --json``) and natural faults (an occupied bridge name, a dnsmasq that
  cannot bind port 53, an nftables error, a forward dev that does not exist, a subnet that
  collides with a route): ``net-start`` exits 1 with one clear message, no traceback, and
  afterwards no link, address, route, nftables table or chain, process or file of the network
  is left (only its definition), and the network is recorded inactive.
- ``VIRTNET_CRASH_AFTER_STEP=k`` for every k (the process dies as if killed): the next
  commands reconcile: ``net-list`` shows the network inactive with the interrupted start as a
  problem, ``net-start`` succeeds and ``net-destroy`` leaves nothing.

tests/netns/test_cli_network.py covers one injected fault and one crash; this file covers
every step and the faults the host itself causes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

CLI_TIMEOUT_S = 60.0
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "default.xml"
NAME = "default"
BRIDGE = "virbr0"
FAILED = f"error: Failed to start network {NAME}\nerror: "


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("nft", "dnsmasq"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"needs {tool}")


def virtnet(
    ns: str, state: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``virtnet --netns NS --state-dir STATE ARGS`` as a user types it (never checked here)."""
    argv = [sys.executable, "-m", "virtnet.face.cli", "--netns", ns, "--state-dir", str(state), *args]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIRTNET_")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                          env={**clean, **(env or {})})


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{' '.join(proc.args[3:])} failed:\n{proc.stdout}{proc.stderr}"
    return proc




@dataclass
class Lab:
    kit: Any
    ns: str
    state: Path
    definition: Path

    def cli(self, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        return virtnet(self.ns, self.state, *args, env=env)

    def snapshot(self) -> Any:
        return self.kit.snapshot(self.ns, self.state)

    def info(self) -> dict[str, Any]:
        return json.loads(ok(self.cli("net-info", NAME, "--json")).stdout)

    def assert_failed_cleanly(self, proc: subprocess.CompletedProcess[str], reason: str,
                              before: Snapshot) -> None:
        """One clear message and exit 1; nothing of the network left; recorded inactive."""
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stderr.startswith(FAILED), proc.stderr
        assert reason in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        after = self.snapshot()
        assert after == before
        assert after.files == ["etc/networks/default.xml"]  # the definition, nothing else
        info = self.info()
        assert (info["active"], info["problems"]) == (False, [])


def make_lab(kit: Any, tmp_path: Path, xml: str | None = None) -> Lab:
    ns = kit.make_netns()
    state = tmp_path / "state"
    definition = tmp_path / "default.xml"
    definition.write_text(xml if xml is not None else EXAMPLE.read_text())
    lab = Lab(kit, ns, state, definition)
    ok(lab.cli("net-define", str(definition)))
    return lab


def plan_length(lab: Lab) -> int:
    plan = json.loads(ok(lab.cli("plan", NAME, "--json")).stdout)
    kinds = [action["kind"] for action in plan["actions"]]
    # the steps this file is about must all be there, or it tests less than it claims
    for kind in ("create-bridge", "set-sysctl", "load-firewall", "add-address", "link-up",
                 "write-file", "start-dnsmasq"):
        assert kind in kinds, kinds
    return len(kinds)


# --- injected faults -----------------------------------------------------------------------


def test_fault_at_every_step_leaves_nothing(netns_kit: Any, tmp_path: Path) -> None:
    lab = make_lab(netns_kit, tmp_path)
    before = lab.snapshot()
    steps = plan_length(lab)
    for k in range(1, steps + 1):
        proc = lab.cli("net-start", NAME, env={"VIRTNET_FAULT_STEP": str(k)})
        lab.assert_failed_cleanly(proc, f"step {k} (", before)
        assert f"injected fault at step {k}" in proc.stderr
    # and the network still starts and stops normally afterwards
    ok(lab.cli("net-start", NAME))
    assert lab.info()["active"] is True
    ok(lab.cli("net-destroy", NAME))
    assert lab.snapshot() == before


# --- natural faults ------------------------------------------------------------------------


def test_occupied_bridge_name(netns_kit: Any, tmp_path: Path) -> None:
    lab = make_lab(netns_kit, tmp_path)
    netns_kit.run(["ip", "-n", lab.ns, "link", "add", BRIDGE, "type", "bridge"])
    netns_kit.run(["ip", "-n", lab.ns, "link", "set", BRIDGE, "up"])
    before = lab.snapshot()
    proc = lab.cli("net-start", NAME)
    lab.assert_failed_cleanly(proc, f"interface {BRIDGE} already exists", before)
    assert BRIDGE in lab.snapshot().links  # somebody else's bridge is left alone


BLOCK_PORT_53 = """
import socket, sys, time
bound = []
for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: the address does not exist yet
    sock.bind(("192.168.122.1", 53))
    if kind == socket.SOCK_STREAM:
        sock.listen(1)
    bound.append(sock)
print("bound", flush=True)
time.sleep(120)
"""


def test_dnsmasq_that_cannot_bind_port_53(netns_kit: Any, tmp_path: Path) -> None:
    lab = make_lab(netns_kit, tmp_path)
    blocker = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns, sys.executable, "-c", BLOCK_PORT_53],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert blocker.stdout is not None and blocker.stdout.readline() == "bound\n"
        before = lab.snapshot()
        assert before.pids == [blocker.pid]
        proc = lab.cli("net-start", NAME)
        lab.assert_failed_cleanly(proc, "dnsmasq", before)
        assert "Address already in use" in proc.stderr
    finally:
        blocker.kill()  # the process this test started, by its pid
        blocker.wait(timeout=10)


def test_nftables_error(netns_kit: Any, tmp_path: Path) -> None:
    """Our table already holds a map of the same name with another type: the whole nft
    transaction is refused, so not one rule of the network is loaded."""
    lab = make_lab(netns_kit, tmp_path)
    netns_kit.ns_run(lab.ns, ["nft", "-f", "-"],
                     input="add table inet virtnet\n"
                           "add map inet virtnet to_bridge { type ipv4_addr : verdict; }\n")
    before = lab.snapshot()
    proc = lab.cli("net-start", NAME)
    lab.assert_failed_cleanly(proc, "load firewall rules of network default", before)
    assert "Error: datatype mismatch" in proc.stderr
    assert "^^^" not in proc.stderr  # libnftables quotes a wrong source line: left out
    assert "net-default" not in lab.snapshot().ruleset


def test_forward_dev_that_does_not_exist(netns_kit: Any, tmp_path: Path) -> None:
    xml = EXAMPLE.read_text().replace("<forward mode='nat'/>",
                                      "<forward mode='nat' dev='nosuch0'/>")
    assert "nosuch0" in xml
    lab = make_lab(netns_kit, tmp_path, xml)
    before = lab.snapshot()
    proc = lab.cli("net-start", NAME)
    lab.assert_failed_cleanly(proc, "forward device nosuch0 does not exist", before)


def test_subnet_colliding_with_a_route(netns_kit: Any, tmp_path: Path) -> None:
    lab = make_lab(netns_kit, tmp_path)
    other = netns_kit.make_netns()
    run = netns_kit.run
    run(["ip", "-n", lab.ns, "link", "add", "up0", "type", "veth", "peer", "name", "eth0",
         "netns", other])
    run(["ip", "-n", lab.ns, "address", "add", "10.250.0.1/24", "dev", "up0"])
    run(["ip", "-n", lab.ns, "link", "set", "up0", "up"])
    run(["ip", "-n", other, "link", "set", "eth0", "up"])
    run(["ip", "-n", lab.ns, "route", "add", "192.168.122.0/24", "via", "10.250.0.2"])
    before = lab.snapshot()
    proc = lab.cli("net-start", NAME)
    lab.assert_failed_cleanly(
        proc, "subnet 192.168.122.0/24 overlaps the host route 192.168.122.0/24 on up0", before)


# --- crashes -------------------------------------------------------------------------------


def test_crash_after_every_step_is_reconciled(netns_kit: Any, tmp_path: Path) -> None:
    lab = make_lab(netns_kit, tmp_path)
    before = lab.snapshot()
    steps = plan_length(lab)
    for k in range(1, steps + 1):
        crashed = lab.cli("net-start", NAME, env={"VIRTNET_CRASH_AFTER_STEP": str(k)})
        assert crashed.returncode == 137, (k, crashed.stderr)
        # the next command sees an interrupted start: inactive, everywhere, with a reason
        listed = json.loads(ok(lab.cli("net-list", "--all", "--json")).stdout)
        assert [(r["name"], r["state"]) for r in listed] == [(NAME, "inactive")], k
        assert f"interrupted start left {k} step(s)" in listed[0]["problems"][0], k
        assert (BRIDGE in lab.snapshot().links) is True, k  # half-built, and known to be
        # net-start undoes the half-built start and starts afresh
        ok(lab.cli("net-start", NAME))
        info = lab.info()
        assert (info["active"], info["problems"]) == (True, []), (k, info)
        assert lab.snapshot().pids == [info["dnsmasq_pid"]], k  # no orphan dnsmasq
        ok(lab.cli("net-destroy", NAME))
        assert lab.snapshot() == before, k


def test_crash_then_destroy_cleans_up(netns_kit: Any, tmp_path: Path) -> None:
    """net-destroy, not net-start, as the first command after a crash (after the last step,
    when dnsmasq already runs)."""
    lab = make_lab(netns_kit, tmp_path)
    before = lab.snapshot()
    steps = plan_length(lab)
    crashed = lab.cli("net-start", NAME, env={"VIRTNET_CRASH_AFTER_STEP": str(steps)})
    assert crashed.returncode == 137
    assert len(lab.snapshot().pids) == 1  # the dnsmasq of the interrupted start
    ok(lab.cli("net-destroy", NAME))
    assert lab.snapshot() == before
    assert lab.info()["problems"] == []

