"""`virtnet plan NAME --commands`, run by a shell in a fresh namespace, makes the same kernel
state as `virtnet net-start NAME` in another fresh namespace: links (kind, MAC, MTU, state,
master, bridge STP and forward delay), addresses, routes of every table, the sysctls the plan
sets, virtnet's nftables table, and the dnsmasq command line.

Both namespaces start alike: loopback up, and for definitions that name an uplink, that uplink
(a veth with a fixed MAC, so its IPv6 link-local address is the same in both).
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtnet.host.netns import pids_in_netns as pids_in

pytestmark = pytest.mark.netns

TIMEOUT_S = 60.0
DEFINITIONS = {
    "nat": ("<network><name>natnet</name><forward mode='nat'/>"
            "<bridge name='vntpc0' stp='off' delay='0'/><mac address='52:54:00:12:34:56'/>"
            "<ip address='192.168.122.1' netmask='255.255.255.0'><dhcp>"
            "<range start='192.168.122.2' end='192.168.122.254'/>"
            "<host mac='52:54:00:00:00:42' name='web' ip='192.168.122.42'/></dhcp></ip>"
            "</network>"),
    "route-with-routes": (
        "<network><name>routed</name><forward mode='route' dev='eth1'/>"
        "<bridge name='vntpc1' stp='on' delay='2'/><mac address='52:54:00:12:34:57'/>"
        "<domain name='lab.test'/><ip address='192.168.150.1' prefix='24'><dhcp>"
        "<range start='192.168.150.100' end='192.168.150.199'/></dhcp></ip>"
        "<route address='192.168.160.0' prefix='24' gateway='192.168.150.2'/>"
        "<route address='192.168.170.0' prefix='24' gateway='192.168.150.3' metric='10'/>"
        "</network>"),
    "isolated-dual-stack": (
        "<network ipv6='yes'><name>iso6</name><bridge name='vntpc2' stp='off'/>"
        "<mac address='52:54:00:12:34:58'/><ip address='10.44.0.1' prefix='24'/>"
        "<ip family='ipv6' address='fd44::1' prefix='64'><dhcp>"
        "<range start='fd44::100' end='fd44::1ff'/></dhcp></ip></network>"),
    "open-no-dhcp": ("<network><name>opn</name><forward mode='open'/>"
                     "<bridge name='vntpc3' stp='off'/><mac address='52:54:00:12:34:59'/>"
                     "<ip address='10.45.0.1' prefix='24'/></network>"),
}
UPLINK_MAC = "52:54:00:99:99:01"


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc




@pytest.fixture
def fresh_ns() -> Iterator[Any]:
    """Factory of namespaces (loopback up, an uplink eth1 with a fixed MAC); all removed."""
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")
    if shutil.which("nft", path="/usr/sbin:/usr/bin") is None:
        pytest.skip("needs nft")
    made: list[str] = []

    def make() -> str:
        ns = "vnt-" + secrets.token_hex(4)
        run(["ip", "netns", "add", ns])
        made.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "add", "eth1", "address", UPLINK_MAC, "type", "veth",
             "peer", "name", "eth1peer", "address", "52:54:00:99:99:02"])
        run(["ip", "-n", ns, "link", "set", "eth1", "up"])
        return ns

    try:
        yield make
    finally:
        for ns in made:
            for pid in pids_in(ns):  # the dnsmasq each side started
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            run(["ip", "netns", "delete", ns], check=False)


def kernel_state(ns: str, bridge: str) -> dict[str, Any]:
    def ipj(*args: str) -> Any:
        out = run(["ip", "-n", ns, "-j", *args]).stdout
        return json.loads(out) if out.strip() else []

    links = []
    for link in ipj("-d", "link", "show"):
        info = link.get("linkinfo", {})
        data = info.get("info_data", {})
        links.append({
            "name": link["ifname"], "kind": info.get("info_kind"), "mac": link.get("address"),
            # carrier flags of a bridge without ports settle with a delay: compare UP only
            "mtu": link.get("mtu"), "up": "UP" in link.get("flags", []),
            "master": link.get("master"),
            "stp_state": data.get("stp_state"), "forward_delay": data.get("forward_delay"),
        })
    addresses = sorted(
        (link["ifname"], a["family"], a["local"], a["prefixlen"], a.get("broadcast"),
         a.get("scope"))
        for link in ipj("address", "show") for a in link.get("addr_info", []))
    # a route's "linkdown" flag follows the carrier of a bridge without ports: left out
    routes = sorted(json.dumps({k: v for k, v in r.items() if k != "flags"}, sort_keys=True)
                    for r in ipj("route", "show", "table", "all")
                    + ipj("-6", "route", "show", "table", "all"))
    sysctls = {}
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                f"net.ipv6.conf.{bridge}.disable_ipv6", f"net.ipv6.conf.{bridge}.accept_ra",
                f"net.ipv6.conf.{bridge}.autoconf"):
        sysctls[key] = run(["ip", "netns", "exec", ns, "sysctl", "-n", key]).stdout.strip()
    nft = run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "virtnet"],
              check=False)
    dnsmasq = []
    for pid in pids_in(ns):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq":
                dnsmasq.append(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
        except OSError:
            continue
    return {"links": sorted(links, key=lambda l: l["name"]), "addresses": addresses,
            "routes": routes, "sysctls": sysctls,
            "nft": nft.stdout if nft.returncode == 0 else None, "dnsmasq": dnsmasq}


def virtnet(ns: str, state: Path, *args: str) -> str:
    return run([sys.executable, "-m", "virtnet.face.cli", "--netns", ns, "--state-dir", str(state),
                *args]).stdout


def stop_what_the_shell_started(ns: str, state: Path) -> None:
    for pid in pids_in(ns):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for leftover in list(state.rglob("*.pid")) + list(state.rglob("*.leases")):
        leftover.unlink()


CASES = [pytest.param(case, id=case) for case in DEFINITIONS]


def compare(fresh_ns: Any, xml: str, skip_kinds: tuple[str, ...] = ()) -> None:
    """Run `plan --commands` (less the actions of SKIP_KINDS) in one namespace, net-start in
    another, and compare what the kernel shows."""
    root = Path(tempfile.mkdtemp(prefix="vnt-plan-"))
    root.chmod(0o755)  # dnsmasq drops root and must read its files
    state = root / "state"
    definition = root / "net.xml"
    definition.write_text(xml)
    net_name = xml.split("<name>")[1].split("</name>")[0]
    bridge = xml.split("<bridge name='")[1].split("'")[0]
    try:
        by_shell, by_start = fresh_ns(), fresh_ns()
        virtnet(by_shell, state, "net-define", str(definition))
        commands = virtnet(by_shell, state, "plan", net_name, "--commands")
        plan = plan_of(json.loads(virtnet(by_shell, state, "plan", net_name, "--json")))
        # --commands prints exactly the commands of the plan's actions, in order
        assert commands == "".join(f"{line}\n" for line in plan.commands())
        if skip_kinds:
            commands = "".join(f"{line}\n" for action in plan.actions
                               if action.kind not in skip_kinds for line in action.commands())
        assert commands.strip(), "the plan has commands"
        script = root / "plan.sh"
        script.write_text("set -e\n" + commands)
        run(["ip", "netns", "exec", by_shell, "sh", str(script)])
        shell_state = kernel_state(by_shell, bridge)
        stop_what_the_shell_started(by_shell, state)

        virtnet(by_start, state, "net-start", net_name)
        start_state = kernel_state(by_start, bridge)
        virtnet(by_start, state, "net-destroy", net_name)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert shell_state["links"] == start_state["links"]
    assert shell_state["addresses"] == start_state["addresses"]
    assert shell_state["routes"] == start_state["routes"]
    assert shell_state["sysctls"] == start_state["sysctls"]
    assert shell_state["nft"] == start_state["nft"]
    assert shell_state["dnsmasq"] == start_state["dnsmasq"]
    # and the state is not empty: the bridge is there, with its address
    assert bridge in [link["name"] for link in start_state["links"]]
    first = xml.split("ip address='")[1].split("'")[0]
    assert any(a[0] == bridge and a[2] == first for a in start_state["addresses"])


def plan_of(data: dict[str, Any]) -> Any:
    from virtnet.plan.plans import Plan

    return Plan.from_dict(data)


@pytest.mark.parametrize("case", CASES)
def test_plan_commands_equal_net_start(fresh_ns: Any, case: str) -> None:
    compare(fresh_ns, DEFINITIONS[case])

