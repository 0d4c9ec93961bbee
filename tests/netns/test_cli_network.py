"""The net-* verbs end to end: the real CLI in subprocesses, inside a namespace of the test's
own (``--netns``), with all state in a temporary directory (``--state-dir``).

For each forward mode with a bridge of our own (isolated, nat, route, open) and for a host
bridge: define, start, list, info, destroy, undefine; while active the bridge, its addresses,
routes, firewall chains and dnsmasq exist; afterwards not one link, address, route, nftables
table or chain, process or file of that network is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

CLI_TIMEOUT_S = 60.0


def virtnet(
    ns: str, state: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``virtnet --netns NS --state-dir STATE ARGS`` as a user types it."""
    argv = [sys.executable, "-m", "virtnet.face.cli", "--netns", ns, "--state-dir", str(state), *args]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"virtnet {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc


def virtnet_json(ns: str, state: Path, *args: str) -> Any:
    return json.loads(virtnet(ns, state, *args, "--json").stdout)




def write(tmp_path: Path, name: str, xml: str) -> Path:
    path = tmp_path / f"{name}.xml"
    path.write_text(xml)
    return path


DHCP = "<dhcp><range start='{p}.10' end='{p}.20'/></dhcp>"


def bridged_xml(name: str, mode: str | None, prefix: str, extra: str = "") -> str:
    forward = f"<forward mode='{mode}'/>" if mode else ""
    return (
        f"<network><name>{name}</name>{forward}{extra}"
        f"<ip address='{prefix}.1' netmask='255.255.255.0'>{DHCP.format(p=prefix)}</ip>"
        "</network>"
    )


@dataclass(frozen=True)
class ModeCase:
    mode: str | None
    firewalled: bool
    extra: str = ""
    route: str | None = None  # a static route the network adds


MODES = {
    "isolated": ModeCase(None, True),
    "nat": ModeCase("nat", True),
    "route": ModeCase(
        "route", True, "<route address='10.99.0.0' prefix='24' gateway='{p}.5'/>",
        route="10.99.0.0/24",
    ),
    "open": ModeCase("open", False),
}


@pytest.mark.parametrize("label", list(MODES))
def test_own_bridge_network_lifecycle_leaves_nothing_behind(
    netns_kit: Any, tmp_path: Path, label: str
) -> None:
    case = MODES[label]
    ns = netns_kit.make_netns()
    state = tmp_path / "state"
    prefix = f"10.77.{list(MODES).index(label)}"
    # <route> elements follow <ip> in libvirt's layout, but any order parses.
    extra = case.extra.format(p=prefix)
    xml = bridged_xml(label, case.mode, prefix).replace("</network>", extra + "</network>")
    before = netns_kit.snapshot(ns, state)

    out = virtnet(ns, state, "net-define", str(write(tmp_path, label, xml))).stdout
    assert out == f"Network {label} defined from {tmp_path / label}.xml\n\n"
    rows = virtnet_json(ns, state, "net-list", "--all")
    assert [(r["name"], r["state"], r["persistent"]) for r in rows] == [(label, "inactive", True)]
    bridge = rows[0]["bridge"]
    assert bridge == "virbr0"

    assert virtnet(ns, state, "net-start", label).stdout == f"Network {label} started\n\n"
    listing = virtnet(ns, state, "net-list").stdout
    assert f" {label} " in listing and " active " in listing
    info = virtnet_json(ns, state, "net-info", label)
    assert info["active"] and info["bridge"] == bridge and info["problems"] == []
    assert info["dnsmasq_running"] is True
    pid = info["dnsmasq_pid"]
    assert pid in netns_kit.live_pids(ns)

    running = netns_kit.snapshot(ns, state)
    assert bridge in running.links
    assert f"{prefix}.1/24" in running.addresses
    assert f"{prefix}.0/24" in running.routes
    if case.route:
        assert case.route in running.routes
    assert (running.ruleset != before.ruleset) is case.firewalled
    if case.firewalled:
        assert f"net-{label}-" in running.ruleset

    assert virtnet(ns, state, "net-destroy", label).stdout == f"Network {label} destroyed\n\n"
    assert virtnet_json(ns, state, "net-info", label)["active"] is False
    assert virtnet(ns, state, "net-undefine", label).stdout == (
        f"Network {label} has been undefined\n\n")
    after = netns_kit.snapshot(ns, state)
    assert after == before
    assert virtnet_json(ns, state, "net-list", "--all") == []


def test_host_bridge_network_uses_the_bridge_and_leaves_it(
    netns_kit: Any, tmp_path: Path
) -> None:
    ns = netns_kit.make_netns()
    state = tmp_path / "state"
    netns_kit.run(["ip", "-n", ns, "link", "add", "brhost", "type", "bridge"])
    before = netns_kit.snapshot(ns, state)
    xml = "<network><name>hb</name><forward mode='bridge'/><bridge name='brhost'/></network>"
    virtnet(ns, state, "net-define", str(write(tmp_path, "hb", xml)))
    virtnet(ns, state, "net-start", "hb")
    info = virtnet_json(ns, state, "net-info", "hb")
    assert info["active"] and info["bridge"] == "brhost" and info["problems"] == []
    assert netns_kit.snapshot(ns, state).links == before.links  # nothing created
    virtnet(ns, state, "net-destroy", "hb")
    assert "brhost" in netns_kit.ns_links(ns)  # the host's bridge stays

    # The host's bridge going away under an active network is reported.
    virtnet(ns, state, "net-start", "hb")
    netns_kit.run(["ip", "-n", ns, "link", "del", "brhost"])
    assert "bridge brhost is missing" in virtnet_json(ns, state, "net-info", "hb")["problems"]
    virtnet(ns, state, "net-destroy", "hb")
    netns_kit.run(["ip", "-n", ns, "link", "add", "brhost", "type", "bridge"])
    virtnet(ns, state, "net-undefine", "hb")
    assert netns_kit.snapshot(ns, state) == before


def test_host_bridge_that_is_missing_is_a_clear_start_error(
    netns_kit: Any, tmp_path: Path
) -> None:
    ns = netns_kit.make_netns()
    state = tmp_path / "state"
    xml = "<network><name>hb</name><forward mode='bridge'/><bridge name='brnone'/></network>"
    virtnet(ns, state, "net-define", str(write(tmp_path, "hb", xml)))
    proc = virtnet(ns, state, "net-start", "hb", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: Failed to start network hb\nerror: ")
    assert "brnone does not exist" in proc.stderr
    assert virtnet_json(ns, state, "net-info", "hb")["active"] is False


def test_transient_network_from_net_create_vanishes_on_destroy(
    netns_kit: Any, tmp_path: Path
) -> None:
    ns = netns_kit.make_netns()
    state = tmp_path / "state"
    before = netns_kit.snapshot(ns, state)
    path = write(tmp_path, "tr", bridged_xml("tr", "nat", "10.78.0"))
    assert virtnet(ns, state, "net-create", str(path)).stdout == (
        f"Network tr created from {path}\n\n")
    rows = virtnet_json(ns, state, "net-list")
    assert [(r["name"], r["persistent"], r["state"]) for r in rows] == [("tr", False, "active")]
    assert not (state / "etc" / "networks" / "tr.xml").exists()
    refused = virtnet(ns, state, "net-autostart", "tr", check=False)
    assert "cannot set autostart for transient network" in refused.stderr
    virtnet(ns, state, "net-destroy", "tr")
    assert virtnet_json(ns, state, "net-list", "--all") == []
    assert netns_kit.snapshot(ns, state) == before


def test_dead_dnsmasq_is_reported_and_restarted_by_net_start(
    netns_kit: Any, tmp_path: Path
) -> None:
    ns = netns_kit.make_netns()
    state = tmp_path / "state"
    virtnet(ns, state, "net-define", str(write(tmp_path, "d", bridged_xml("d", None, "10.79.0"))))
    virtnet(ns, state, "net-start", "d")
    pid = virtnet_json(ns, state, "net-info", "d")["dnsmasq_pid"]
    os.kill(pid, signal.SIGKILL)  # the dnsmasq our network started, by its recorded pid
    _wait_gone(pid)
    text = virtnet(ns, state, "net-info", "d").stdout
    assert f"dnsmasq (pid {pid}) is not running" in text
    out = virtnet(ns, state, "net-start", "d").stdout
    assert "dnsmasq restarted" in out
    info = virtnet_json(ns, state, "net-info", "d")
    assert info["problems"] == [] and info["dnsmasq_pid"] != pid
    assert info["dnsmasq_pid"] in netns_kit.live_pids(ns)
    again = virtnet(ns, state, "net-start", "d", check=False)
    assert "network is already active" in again.stderr
    virtnet(ns, state, "net-destroy", "d")


def test_vanished_bridge_is_reported_not_trusted(netns_kit: Any, tmp_path: Path) -> None:
    ns = netns_kit.make_netns()
    state = tmp_path / "state"
    virtnet(ns, state, "net-define", str(write(tmp_path, "v", bridged_xml("v", "open", "10.80.0"))))
    virtnet(ns, state, "net-start", "v")
    netns_kit.run(["ip", "-n", ns, "link", "del", "virbr0"])
    info = virtnet_json(ns, state, "net-info", "v")
    assert info["bridge_present"] is False and "bridge virbr0 is missing" in info["problems"]
    refused = virtnet(ns, state, "net-start", "v", check=False)
    assert refused.returncode == 1 and "net-destroy" in refused.stderr
    virtnet(ns, state, "net-destroy", "v")  # undo tolerates what is already gone
    virtnet(ns, state, "net-start", "v")
    assert virtnet_json(ns, state, "net-info", "v")["problems"] == []
    virtnet(ns, state, "net-destroy", "v")


def test_failed_start_undoes_everything(netns_kit: Any, tmp_path: Path) -> None:
    ns = netns_kit.make_netns()
    state = tmp_path / "state"
    virtnet(ns, state, "net-define", str(write(tmp_path, "f", bridged_xml("f", "nat", "10.81.0"))))
    before = netns_kit.snapshot(ns, state)
    proc = virtnet(ns, state, "net-start", "f", check=False, env={"VIRTNET_FAULT_STEP": "6"})
    assert proc.returncode == 1 and "injected fault at step 6" in proc.stderr
    assert netns_kit.snapshot(ns, state) == before
    assert virtnet_json(ns, state, "net-info", "f")["active"] is False


def test_interrupted_start_is_reported_then_cleaned_by_net_start(
    netns_kit: Any, tmp_path: Path
) -> None:
    ns = netns_kit.make_netns()
    state = tmp_path / "state"
    virtnet(ns, state, "net-define", str(write(tmp_path, "c", bridged_xml("c", "nat", "10.82.0"))))
    before = netns_kit.snapshot(ns, state)
    crashed = virtnet(ns, state, "net-start", "c", check=False,
                      env={"VIRTNET_CRASH_AFTER_STEP": "4"})
    assert crashed.returncode == 137
    info = virtnet_json(ns, state, "net-info", "c")
    assert info["active"] is False
    assert "interrupted start left 4 step(s)" in info["problems"][0]
    assert "virbr0" in netns_kit.ns_links(ns)  # half-built, and known to be
    virtnet(ns, state, "net-start", "c")
    assert virtnet_json(ns, state, "net-info", "c")["problems"] == []
    virtnet(ns, state, "net-destroy", "c")
    assert netns_kit.snapshot(ns, state) == before


def test_autostart_plan_and_dumpxml(netns_kit: Any, tmp_path: Path) -> None:
    ns = netns_kit.make_netns()
    state = tmp_path / "state"
    virtnet(ns, state, "net-define", str(write(tmp_path, "p", bridged_xml("p", "nat", "10.83.0"))))
    assert virtnet(ns, state, "net-autostart", "p").stdout == (
        "Network p marked as autostarted\n\n")
    assert [r["name"] for r in virtnet_json(ns, state, "net-list", "--all", "--autostart")] == ["p"]
    assert virtnet(ns, state, "net-autostart", "p", "--disable").stdout == (
        "Network p unmarked as autostarted\n\n")
    assert virtnet_json(ns, state, "net-list", "--all", "--autostart") == []

    plan = virtnet_json(ns, state, "plan", "p")
    described = virtnet(ns, state, "plan", "p").stdout.splitlines()
    commands = virtnet(ns, state, "plan", "p", "--commands").stdout
    assert plan["network"] == "p" and len(described) == len(plan["actions"])
    assert "ip link add virbr0" in commands
    from_file = virtnet_json(ns, state, "plan", str(tmp_path / "p.xml"))
    assert from_file["network"] == "p"
    assert [a["kind"] for a in from_file["actions"]] == [a["kind"] for a in plan["actions"]]
    # The plan printed is the plan applied: the recorded actions have the same specs.
    virtnet(ns, state, "net-start", "p")
    from virtnet.plan.actions import Action
    from virtnet.plan import coexist, forwards  # noqa: F401 - kinds a start also records

    recorded = json.loads((state / "run" / "network" / "p.json").read_text())["actions"]
    assert [Action.from_dict(a).spec() for a in recorded] == [
        Action.from_dict(a).spec() for a in plan["actions"]]

    inactive = virtnet(ns, state, "net-dumpxml", "p", "--inactive").stdout
    assert "<bridge name='virbr0' stp='on' delay='0'/>" in inactive
    uuid = virtnet(ns, state, "net-uuid", "p").stdout.strip()
    assert f"<uuid>{uuid}</uuid>" in inactive
    assert virtnet(ns, state, "net-name", uuid).stdout == "p\n\n"
    virtnet(ns, state, "net-destroy", "p")


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} still alive after {timeout}s")


def test_start_list_destroy_never_import_pyroute2(netns_kit: Any, tmp_path: Path) -> None:
    """The network verbs speak rtnetlink themselves (virtnet.host.rtnl): pyroute2's import
    alone costs more than a whole net-start should take."""
    ns = netns_kit.make_netns()
    state = tmp_path / "state"
    virtnet(ns, state, "net-define", str(write(tmp_path, "n", bridged_xml("n", "nat", "10.78.0"))))
    for args in (("net-start", "n"), ("net-list", "--all"), ("net-info", "n"),
                 ("net-destroy", "n")):
        argv = [sys.executable, "-X", "importtime", "-m", "virtnet.face.cli", "--netns", ns,
                "--state-dir", str(state), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                    if line.startswith("import time:")]
        assert "virtnet.service.engine" in imported, args  # the listing is real, not empty
        assert not [name for name in imported if name.startswith("pyroute2")], args


def test_a_subnet_overlapping_an_active_network_is_refused_and_doctor_says_so(
    netns_kit: Any, tmp_path: Path
) -> None:
    ns = netns_kit.make_netns()
    state = tmp_path / "state"
    a_xml = ("<network><name>A</name><forward mode='nat'/><bridge name='vbra'/>"
             "<ip address='192.168.122.1' netmask='255.255.255.0'/>"
             "<ip family='ipv6' address='fd00:77:0:1::1' prefix='64'/></network>")
    b_xml = ("<network><name>B</name><forward mode='nat'/><bridge name='vbrb'/>"
             "<ip address='192.168.122.129' netmask='255.255.255.128'/></network>")
    c_xml = ("<network><name>C</name><bridge name='vbrc'/>"
             "<ip family='ipv6' address='fd00:77::1' prefix='48'/></network>")
    for name, xml in (("A", a_xml), ("B", b_xml), ("C", c_xml)):
        virtnet(ns, state, "net-define", str(write(tmp_path, name, xml)))
    virtnet(ns, state, "net-start", "A")
    before = netns_kit.snapshot(ns, state)

    refused = virtnet(ns, state, "net-start", "B", check=False)
    assert refused.returncode == 1
    collision = ("subnet 192.168.122.128/25 overlaps 192.168.122.0/24 of active network 'A' "
                 "(on vbra)")
    assert refused.stderr == ("error: Failed to start network B\n"
                              "error: network 'B' cannot start on this host:\n"
                              f"  /network/ip[1]: {collision}\n")
    assert netns_kit.snapshot(ns, state) == before  # nothing changed on the host
    assert virtnet_json(ns, state, "net-info", "B")["active"] is False

    ipv6 = virtnet(ns, state, "net-start", "C", check=False)
    assert ipv6.returncode == 1
    assert ("  /network/ip[1]: subnet fd00:77::/48 overlaps fd00:77:0:1::/64 of active network "
            "'A' (on vbra)\n") in ipv6.stderr
    assert netns_kit.snapshot(ns, state) == before

    # doctor's verdict names the same collision, in the same words
    doctor = virtnet(ns, state, "doctor", "B", "--json", check=False)
    assert doctor.returncode == 1
    report = json.loads(doctor.stdout)
    assert report["networks"][0]["network"] == "B"
    assert f"cannot start: {collision}" in report["networks"][0]["problems"]
    # A itself collides with nothing: what lies on its own bridge is its own
    doctor_a = json.loads(virtnet(ns, state, "doctor", "A", "--json", check=False).stdout)
    assert not [p for p in doctor_a["networks"][0]["problems"] if "overlaps" in p]
    virtnet(ns, state, "net-destroy", "A")
    virtnet(ns, state, "net-start", "B")  # free now
    virtnet(ns, state, "net-destroy", "B")


def test_a_live_change_that_would_overlap_an_active_network_is_refused(
    netns_kit: Any, tmp_path: Path
) -> None:
    ns = netns_kit.make_netns()
    state = tmp_path / "state"
    a_xml = ("<network><name>A</name><forward mode='nat'/><bridge name='vbra'/>"
             "<ip address='192.168.122.1' netmask='255.255.255.0'/></network>")
    b_xml = ("<network><name>B</name><forward mode='nat'/><bridge name='vbrb'/>"
             "<ip address='10.77.0.1' netmask='255.255.255.0'/></network>")
    for name, xml in (("A", a_xml), ("B", b_xml)):
        virtnet(ns, state, "net-define", str(write(tmp_path, name, xml)))
        virtnet(ns, state, "net-start", name)
    before = netns_kit.snapshot(ns, state)
    # B gains a second subnet inside A's: refused before anything changes, dry run included
    grown = write(tmp_path, "B2", b_xml.replace(
        "</network>", "<ip address='192.168.122.129' netmask='255.255.255.128'/></network>"))
    for extra in (["--dry-run"], []):
        refused = virtnet(ns, state, "net-apply", str(grown), *extra, check=False)
        assert refused.returncode == 1, refused.stdout
        assert ("/network/ip[2]: subnet 192.168.122.128/25 overlaps 192.168.122.0/24 of active "
                "network 'A' (on vbra)") in refused.stderr
        assert netns_kit.snapshot(ns, state) == before
    # a change that keeps B's own subnet collides with nothing (its bridge's routes are its own)
    virtnet(ns, state, "net-apply", str(write(tmp_path, "B3", b_xml.replace(
        "<bridge name='vbrb'/>", "<bridge name='vbrb' stp='off'/>"))))
    for name in ("A", "B"):
        virtnet(ns, state, "net-destroy", name)
