"""`virtnet doctor` reading a real (namespaced) host: a healthy NAT network, a second DHCP
server on its bridge, and a Docker-like iptables-nft FORWARD policy in front of an open
network. Everything runs in a fresh namespace through the CLI (--netns, --state-dir).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
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

TIMEOUT_S = 60.0
NAT = ("<network><name>natnet</name><forward mode='nat'/><bridge name='vntdoc0' stp='off'/>"
       "<ip address='192.168.122.1' prefix='24'><dhcp><range start='192.168.122.2' "
       "end='192.168.122.99'/></dhcp></ip></network>")
OPEN = ("<network><name>opennet</name><forward mode='open'/><bridge name='vntdoc1' stp='off'/>"
        "<ip address='192.168.160.1' prefix='24'/></network>")


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc




@dataclass
class Host:
    ns: str
    root: Path

    def virtnet(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-m", "virtnet.face.cli", "--netns", self.ns, "--state-dir",
                    str(self.root / "state"), *args], check=check)

    def start(self, xml: str) -> None:
        path = self.root / "net.xml"
        path.write_text(xml)
        self.virtnet("net-define", str(path))
        self.virtnet("net-start", xml.split("<name>")[1].split("</name>")[0])

    def doctor(self, *names: str) -> tuple[int, dict[str, Any]]:
        proc = self.virtnet("doctor", *names, "--json", check=False)
        return proc.returncode, json.loads(proc.stdout)


@pytest.fixture
def host() -> Iterator[Host]:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")
    ns = "vnt-" + secrets.token_hex(4)
    root = Path(tempfile.mkdtemp(prefix="vnt-doctor-"))
    root.chmod(0o755)  # dnsmasq drops root and must read its files
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        yield Host(ns, root)
    finally:
        for pid in pids_in(ns):  # dnsmasq of the networks, the rogue one
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        run(["ip", "netns", "delete", ns], check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_healthy_nat_network_then_a_second_dhcp_server(host: Host) -> None:
    host.start(NAT)
    status, report = host.doctor()
    assert status == 0, report
    assert report["healthy"] is True
    network = report["networks"][0]
    assert (network["network"], network["mode"], network["active"]) == ("natnet", "nat", True)
    rows = {row["pair"]: row["predicted"] for row in network["reachability"]}
    assert rows["guest↔guest"] and rows["guest→LAN"] and not rows["LAN→guest"]
    assert not rows["guest→outside"]  # this namespace has no default route
    checks = {c["check"]: c for c in report["host"]}
    assert checks["IPv4 forwarding"]["ok"]  # net-start switched it on in here

    rogue = subprocess.Popen(
        ["ip", "netns", "exec", host.ns, "dnsmasq", "--keep-in-foreground", "--port=0",
         "--interface=vntdoc0", "--bind-interfaces", "--dhcp-range=192.168.122.200,"
         "192.168.122.210", f"--pid-file={host.root}/rogue.pid",
         f"--dhcp-leasefile={host.root}/rogue.leases"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not (host.root / "rogue.pid").exists() and time.monotonic() < deadline:
            assert rogue.poll() is None, rogue.stderr.read() if rogue.stderr else ""
            time.sleep(0.05)
        status, report = host.doctor("natnet")
        assert status == 1
        problems = report["networks"][0]["problems"]
        assert len(problems) == 1 and problems[0].startswith(
            "a second DHCP server on vntdoc0: dnsmasq (pid ")
        assert "serves DHCP on vntdoc0" in problems[0]
    finally:
        rogue.send_signal(signal.SIGTERM)
        rogue.wait(timeout=10)
    host.virtnet("net-destroy", "natnet")


def test_open_network_behind_an_iptables_nft_forward_drop(host: Host) -> None:
    if shutil.which("iptables-nft", path="/usr/sbin:/usr/bin:/sbin") is None:
        pytest.skip("needs iptables-nft")
    host.start(OPEN)
    run(["ip", "netns", "exec", host.ns, "iptables-nft", "-P", "FORWARD", "DROP"])
    status, report = host.doctor("opennet")
    assert status == 1
    firewall = [c for c in report["host"] if c["check"] == "firewall"]
    assert [c["detail"].split(":")[0] for c in firewall] == [
        "ip filter (iptables-nft) chain FORWARD"]
    network = report["networks"][0]
    assert any("drops forwarded traffic: ip filter FORWARD" in p for p in network["problems"])
    row = next(r for r in network["reachability"] if r["pair"] == "guest→LAN")
    assert not row["predicted"]
    fixes = [f["command"] for f in row["fix"]]
    assert fixes == ['nft insert rule ip filter FORWARD iifname "vntdoc1" accept',
                     'nft insert rule ip filter FORWARD oifname "vntdoc1" accept']
    # the suggested fix, applied, clears the problem
    for command in fixes:
        run(["ip", "netns", "exec", host.ns, "sh", "-c", command])
    status, report = host.doctor("opennet")
    assert report["networks"][0]["problems"] == []
    assert status == 0
    host.virtnet("net-destroy", "opennet")


def test_text_output_names_problems_and_fixes(host: Host) -> None:
    path = host.root / "mv.xml"
    path.write_text("<network><name>mv</name><forward mode='bridge'><interface dev='eth9'/>"
                    "</forward></network>")
    proc = host.virtnet("doctor", str(path), check=False)
    assert proc.returncode == 1
    assert "cannot start: interface eth9 does not exist" in proc.stdout
    assert "shim-eth9 link eth9 type macvlan mode bridge" in proc.stdout.replace("\n", " ")
    assert "problems found" in proc.stdout
