"""net-apply killed after (and inside) each of its steps, then reconciled by the next command.

A running NAT network gets a new definition whose diff has steps of every kind: an old route
undone, a new one applied, the firewall replaced in one nft transaction (a NAT port range),
the bridge tuned in place (STP, MTU), dnsmasq's configuration rewritten and dnsmasq restarted
(a wider DHCP range). For each step k, ``VIRTNET_CRASH_AFTER_APPLY_STEP=k`` (exit 137 once
step k is journalled done) and ``VIRTNET_CRASH_IN_APPLY_STEP=k`` (SIGKILL inside it) leave the
network half changed with an apply journal; the next command (net-list, net-info or
net-apply --dry-run, in turn) must put the namespace back exactly as before the apply: links,
addresses, routes, the rules of ``table inet virtnet``, dnsmasq's files and one dnsmasq, whose
pid is the one recorded. The journal is then gone, and the apply itself goes through.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

NAME = "crashapply"
BRIDGE = "vcapply0"
CRASH_EXIT_STATUS = 137
OLD = f"""<network>
  <name>{NAME}</name>
  <uuid>6a0b7f3e-91c1-4d0e-9a55-0c2d91000077</uuid>
  <forward mode='nat'/>
  <bridge name='{BRIDGE}' stp='off' delay='0'/>
  <ip address='10.77.0.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.77.0.100' end='10.77.0.150'/>
    </dhcp>
  </ip>
  <route address='10.78.0.0' prefix='24' gateway='10.77.0.5'/>
</network>
"""
NEW = f"""<network>
  <name>{NAME}</name>
  <uuid>6a0b7f3e-91c1-4d0e-9a55-0c2d91000077</uuid>
  <forward mode='nat'>
    <nat><port start='2000' end='3000'/></nat>
  </forward>
  <bridge name='{BRIDGE}' stp='on' delay='0'/>
  <mtu size='1400'/>
  <ip address='10.77.0.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.77.0.100' end='10.77.0.200'/>
    </dhcp>
  </ip>
  <route address='10.79.0.0' prefix='24' gateway='10.77.0.6'/>
</network>
"""
RECOVERING = (("net-list", "--all"), ("net-info", NAME, "--json"), ("net-apply", "--dry-run"))


@pytest.fixture(autouse=True)
def _tools(netns_kit: Any) -> None:
    netns_kit.require_tools("nft", "dnsmasq")


def virtnet(ns: str, state: Path, *args: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIRTNET_")}
    argv = [sys.executable, "-m", "virtnet.face.cli", "--netns", ns, "--state-dir", str(state), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"virtnet {' '.join(args)} ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc


def _without_handles(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_handles(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [_without_handles(v) for v in value]
    return value


def _dnsmasqs(kit: Any, ns: str) -> list[int]:
    found = []
    for pid in kit.live_pids(ns):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq":
                found.append(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return sorted(found)


def observe(kit: Any, ns: str, state: Path) -> dict[str, Any]:
    """What the host shows of the network, and what the state records of it (the dnsmasq
    action's pid and lease bookkeeping aside: a recovery may restart dnsmasq)."""
    table = kit.ns_run(ns, ["nft", "-j", "list", "table", "inet", "virtnet"], check=False)
    files = {str(p.relative_to(state)): p.read_text() for p in sorted(state.rglob("*"))
             if p.is_file() and p.suffix in (".conf", ".hostsfile", ".addnhosts")}
    status = json.loads((state / "run" / "network" / f"{NAME}.json").read_text())
    actions = [{k: v for k, v in a.items() if k not in ("pid", "created_lease_file")}
               for a in status["actions"]]
    # carrier comes and goes on its own (a bridge without ports loses it a moment after start)
    links = [{**{k: v for k, v in link.items() if k != "operstate"},
              "flags": [f for f in link["flags"] if f not in ("NO-CARRIER", "LOWER_UP")]}
             for link in kit.ns_json(ns, ["link", "show"])]
    return {
        "links": links,
        # (link-local IPv6 addresses come with the carrier, on their own)
        "addresses": sorted(
            (link["ifname"], a["family"], a["local"], a["prefixlen"], a.get("broadcast"))
            for link in kit.ns_json(ns, ["address", "show"])
            for a in link.get("addr_info", []) if a.get("scope") != "link"),
        "routes": [{**r, "flags": [f for f in r.get("flags", []) if f != "linkdown"]}
                   for r in kit.ns_json(ns, ["route", "show"])
                   + kit.ns_json(ns, ["-6", "route", "show"])
                   if not r["dst"].startswith("fe80")],
        "nft": _without_handles(json.loads(table.stdout)) if table.returncode == 0 else None,
        "files": files,
        "live_xml": status["live_xml"],
        "actions": actions,
    }


def assert_as_before(kit: Any, ns: str, state: Path, before: dict[str, Any], label: str) -> int:
    """Assert the host and the record are as BEFORE; returns the running dnsmasq's pid."""
    after = observe(kit, ns, state)
    for key in before:
        assert after[key] == before[key], f"{label}: {key} differs after the recovery"
    info = json.loads(virtnet(ns, state, "net-info", NAME, "--json").stdout)
    running = _dnsmasqs(kit, ns)
    assert info["problems"] == [] and info["dnsmasq_running"], f"{label}: {info}"
    assert running == [info["dnsmasq_pid"]], f"{label}: dnsmasqs {running}, {info}"
    status = json.loads((state / "run" / "network" / f"{NAME}.json").read_text())
    recorded = [a["pid"] for a in status["actions"] if a["kind"] == "start-dnsmasq"]
    assert recorded == [info["dnsmasq_pid"]], label
    return info["dnsmasq_pid"]


def dhcp_offer(kit: Any, ns: str, wanted: str) -> str:
    """The address dnsmasq leases to a new client asking for WANTED (udhcpc -r)."""
    client = kit.make_netns()
    kit.run(["ip", "-n", ns, "link", "add", "vcaport0", "type", "veth", "peer", "name",
             "eth0", "netns", client])
    kit.run(["ip", "-n", ns, "link", "set", "vcaport0", "master", BRIDGE, "up"])
    kit.run(["ip", "-n", client, "link", "set", "eth0", "up"])
    out = kit.ns_run(client, ["udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "2", "-r", wanted,
                              "-i", "eth0", "-s", "/bin/true"], check=False)
    found = re.search(r"lease of (\S+) obtained", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    return found.group(1)


@dataclass
class Running:
    """The OLD network defined and started in a namespace of its own, and NEW on disk."""

    ns: str
    state: Path
    new_file: Path
    before: dict[str, Any]  # observe() right after the start
    journal: Path


def start_old(kit: Any, root: Path) -> Running:
    ns = kit.make_netns()
    state = root / "state"
    old_file, new_file = root / "old.xml", root / "new.xml"
    old_file.write_text(OLD)
    new_file.write_text(NEW)
    virtnet(ns, state, "net-define", str(old_file))
    virtnet(ns, state, "net-start", NAME)
    return Running(ns, state, new_file, observe(kit, ns, state),
                   state / "run" / "network" / f"{NAME}.apply-journal")


def test_a_killed_apply_is_reverted_by_the_next_command(netns_kit: Any, root: Path) -> None:
    kit = netns_kit
    running = start_old(kit, root)
    ns, state, new_file, before, journal = (running.ns, running.state, running.new_file,
                                            running.before, running.journal)

    dry = json.loads(virtnet(ns, state, "net-apply", str(new_file), "--dry-run",
                             "--json").stdout)
    steps = dry["steps"]
    kinds = " | ".join(steps)
    for expected in ("undo: add route to 10.78.0.0/24", "add route to 10.79.0.0/24",
                     "replace in one nft transaction", "on bridge", "restart dnsmasq"):
        assert expected in kinds, kinds
    changed_host = restarted = 0
    first_pid = json.loads(virtnet(ns, state, "net-info", NAME, "--json").stdout)["dnsmasq_pid"]
    recovering = iter(RECOVERING * (2 * len(steps)))
    for hook in ("VIRTNET_CRASH_AFTER_APPLY_STEP", "VIRTNET_CRASH_IN_APPLY_STEP"):
        for step in range(1, len(steps) + 1):
            label = f"{hook}={step} ({steps[step - 1]})"
            killed = virtnet(ns, state, "net-apply", str(new_file), env={hook: str(step)},
                             check=False)
            assert killed.returncode in (CRASH_EXIT_STATUS, -9), f"{label}: {killed.stderr}"
            assert journal.exists(), label
            crashed = observe(kit, ns, state)
            changed_host += any(crashed[k] != before[k] for k in ("links", "routes", "nft",
                                                                   "files"))
            command = next(recovering)
            args = (*command, str(new_file)) if command[0] == "net-apply" else command
            virtnet(ns, state, *args)
            assert not journal.exists(), f"{label}: {command[0]} left the journal"
            pid = assert_as_before(kit, ns, state, before, f"{label}, then {command[0]}")
            if steps[step - 1].startswith("restart dnsmasq"):
                restarted += pid != first_pid
                first_pid = pid  # the old configuration's daemon from now on
            else:  # the old dnsmasq, which read the old configuration, was left alone
                assert pid == first_pid, label
    # every step changes the host when it is done (an undone route, a rewritten file...)
    assert changed_host >= len(steps), changed_host
    assert restarted, "a recovery of the dnsmasq restart never started dnsmasq afresh"
    # the dnsmasq started by the last recovery serves the old range (10.77.0.100-150)
    if shutil.which("udhcpc") is not None:
        offered = int(dhcp_offer(kit, ns, "10.77.0.180").rsplit(".", 1)[1])
        assert 100 <= offered <= 150, offered

    applied = virtnet(ns, state, "net-apply", str(new_file)).stdout
    assert "changed" in applied and not journal.exists()
    routes = [r["dst"] for r in kit.ns_json(ns, ["route", "show"])]
    assert "10.79.0.0/24" in routes and "10.78.0.0/24" not in routes
    link = kit.ns_json(ns, ["-d", "link", "show", BRIDGE])[0]
    assert link["mtu"] == 1400 and link["linkinfo"]["info_data"]["stp_state"] == 1
    info = json.loads(virtnet(ns, state, "net-info", NAME, "--json").stdout)
    assert info["problems"] == [] and _dnsmasqs(kit, ns) == [info["dnsmasq_pid"]]
    virtnet(ns, state, "net-destroy", NAME)


def test_an_unprivileged_read_leaves_the_journal(netns_kit: Any, root: Path) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv (util-linux) to drop CAP_NET_ADMIN")
    kit = netns_kit
    running = start_old(kit, root)
    ns, state, new_file, before, journal = (running.ns, running.state, running.new_file,
                                            running.before, running.journal)
    killed = virtnet(ns, state, "net-apply", str(new_file),
                     env={"VIRTNET_CRASH_AFTER_APPLY_STEP": "2"}, check=False)
    assert killed.returncode == CRASH_EXIT_STATUS and journal.exists()
    # entered the namespace first (as root), then CAP_NET_ADMIN dropped for the CLI
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIRTNET_")}
    read = subprocess.run(
        ["ip", "netns", "exec", ns, setpriv, "--bounding-set", "-net_admin", "--inh-caps",
         "-net_admin", sys.executable, "-m", "virtnet.face.cli", "--state-dir", str(state),
         "net-info", NAME, "--json"],
        capture_output=True, text=True, timeout=60, env=clean)
    assert read.returncode == 0, read.stderr
    assert journal.exists()
    assert any("interrupted net-apply" in p for p in json.loads(read.stdout)["problems"])
    virtnet(ns, state, "net-list")
    assert not journal.exists()
    assert_as_before(kit, ns, state, before, "after the privileged net-list")
    virtnet(ns, state, "net-destroy", NAME)


def test_a_killed_live_update_is_reverted_too(netns_kit: Any, root: Path) -> None:
    """net-update --live goes through the same journalled steps: a wider DHCP range (dnsmasq's
    configuration rewritten, dnsmasq restarted) killed after each step is put back, and the
    update then goes through."""
    kit = netns_kit
    running = start_old(kit, root)
    ns, state, new_file, before, journal = (running.ns, running.state, running.new_file,
                                            running.before, running.journal)
    update = ("net-update", NAME, "add", "ip-dhcp-range",
              "<range start='10.77.0.160' end='10.77.0.170'/>", "--live")
    for step in (1, 2):  # the conf file rewritten; dnsmasq restarted
        killed = virtnet(ns, state, *update, env={"VIRTNET_CRASH_AFTER_APPLY_STEP": str(step)},
                         check=False)
        assert killed.returncode == CRASH_EXIT_STATUS, killed.stderr
        assert journal.exists()
        virtnet(ns, state, "net-list")
        assert not journal.exists()
        assert_as_before(kit, ns, state, before, f"net-update killed after step {step}")
    virtnet(ns, state, *update)
    assert not journal.exists()
    dumped = virtnet(ns, state, "net-dumpxml", NAME).stdout
    assert "10.77.0.160" in dumped
    conf = next((state / "lib" / "dnsmasq").glob("*.conf")).read_text()
    assert "10.77.0.160" in conf
    info = json.loads(virtnet(ns, state, "net-info", NAME, "--json").stdout)
    assert info["problems"] == [] and _dnsmasqs(kit, ns) == [info["dnsmasq_pid"]]
    virtnet(ns, state, "net-destroy", NAME)
