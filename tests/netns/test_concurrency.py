"""20 virtnet processes at once on one state directory (``--direct``, inside a namespace of the
test's own): defining, starting, stopping and creating ports on the same and on different
networks.

Every command either succeeds or fails with one clear ``error:`` message (never a traceback,
never a lock timeout); afterwards every record reads back, the state agrees with the kernel
(each active network has its bridge and its dnsmasq, each inactive one nothing), no two ports
share a device name, every successful port-create has its record and its tap, and no tap is
left without a record. Two rounds with different mixes; then everything is destroyed and the
namespace is as it began.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

TIMEOUT_S = 50.0
PROCESSES = 20


def network_xml(name: str, bridge: str, octet: int) -> str:
    return f"""<network>
  <name>{name}</name>
  <forward mode='nat'/>
  <bridge name='{bridge}'/>
  <ip address='10.{octet}.0.1' netmask='255.255.255.0'>
    <dhcp><range start='10.{octet}.0.10' end='10.{octet}.0.99'/></dhcp>
  </ip>
</network>
"""


class Lab:
    def __init__(self, kit: Any, ns: str, root: Path) -> None:
        self.kit, self.ns, self.root = kit, ns, root
        self.state = root / "state"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTNET_")}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "virtnet.face.fastcli", "--direct", "--netns", self.ns,
                "--state-dir", str(self.state), *args]

    def cli(self, *args: str) -> str:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True,
                              timeout=TIMEOUT_S, env=self.env)
        assert proc.returncode == 0, f"{args}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    def define(self, name: str, bridge: str, octet: int) -> Path:
        path = self.root / f"{name}.xml"
        path.write_text(network_xml(name, bridge, octet))
        return path

    def at_once(self, commands: list[tuple[str, ...]]) -> list[tuple[tuple[str, ...], int, str, str]]:
        """Start every command at the same moment; wait for all; (args, status, out, err)."""
        procs = [(args, subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env=self.env))
                 for args in commands]
        results = []
        deadline = time.monotonic() + TIMEOUT_S
        for args, proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((args, proc.returncode, out, err))
        return results

    def taps(self) -> list[str]:
        return [n for n in self.kit.ns_links(self.ns) if n.startswith("vnet")]


def assert_clear(results: list[tuple[tuple[str, ...], int, str, str]]) -> dict[str, int]:
    """Each command succeeded or failed with one clear message; returns counts by verb."""
    succeeded: dict[str, int] = {}
    for args, status, _out, err in results:
        assert "Traceback" not in err, (args, err)
        assert "state lock" not in err and "gave up after waiting" not in err, (args, err)
        if status == 0:
            succeeded[args[0]] = succeeded.get(args[0], 0) + 1
        else:
            assert status == 1, (args, status, err)
            assert err.startswith("error: ") and err.strip(), (args, err)
    return succeeded


def assert_consistent(lab: Lab, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """State reads back and agrees with the kernel; returns the ports by network."""
    listed = {r["name"]: r for r in json.loads(lab.cli("net-list", "--all", "--json"))}
    assert sorted(listed) == sorted(names)
    links = lab.kit.ns_links(lab.ns)
    pids = sorted(lab.kit.live_pids(lab.ns))
    dnsmasq_pids = []
    ports: dict[str, list[dict[str, Any]]] = {}
    for name, row in listed.items():
        assert row["problems"] == [], (name, row)
        lab.cli("net-dumpxml", "--inactive", name)  # a whole definition
        info = json.loads(lab.cli("net-info", name, "--json"))
        if row["state"] == "active":
            assert row["bridge"] in links, name
            dnsmasq_pids.append(info["dnsmasq_pid"])
            ports[name] = json.loads(lab.cli("port-list", name, "--json"))
        else:
            assert row["bridge"] not in links, name
    assert sorted(dnsmasq_pids) == pids  # one dnsmasq per active network, no orphan
    devices = [p["device"] for found in ports.values() for p in found]
    assert len(devices) == len(set(devices)), devices  # no duplicate device names
    assert sorted(devices) == sorted(lab.taps())  # no tap without a record, or the reverse
    return ports


def test_twenty_processes_at_once(netns_kit: Any, root: Path) -> None:
    ns = netns_kit.make_netns()
    lab = Lab(netns_kit, ns, root)
    base = lab.kit.ns_links(ns), lab.kit.ns_addresses(ns), lab.kit.ns_nft_ruleset(ns)
    names = []
    for index in range(4):  # n0, n1 active; n2, n3 inactive
        name = f"n{index}"
        lab.cli("net-define", str(lab.define(name, f"vbr{index}", 40 + index)))
        names.append(name)
    lab.cli("net-start", "n0")
    lab.cli("net-start", "n1")
    fresh = [lab.define(f"c{i}", f"vbc{i}", 50 + i) for i in range(3)]
    redefined = lab.root / "n2-redefined.xml"  # with its uuid, so it replaces n2
    redefined.write_text(lab.cli("net-dumpxml", "--inactive", "n2").replace(
        "stp='on'", "stp='off'"))

    # round 1: port-creates on one network and another, starts and stops, defines
    macs = [f"52:54:00:44:00:{i:02x}" for i in range(20)]
    round1 = (
        [("port-create", "n0", "--mac", mac) for mac in macs[:7]]
        + [("port-create", "n1", "--mac", mac) for mac in macs[7:10]]
        + [("net-start", "n2")] * 3  # the same network thrice: one starts it
        + [("net-destroy", "n1")]  # while ports are created on it
        + [("net-start", "n3"), ("port-create", "n3", "--mac", macs[10])]
        + [("net-define", str(path)) for path in fresh]
        + [("net-define", str(redefined))]  # redefine of one being started
    )
    assert len(round1) == PROCESSES
    results = lab.at_once(round1)
    succeeded = assert_clear(results)
    failed = [(args, err) for args, status, _, err in results if status]
    assert succeeded["net-define"] == 4, failed
    assert succeeded.get("net-start", 0) >= 2  # n2 once, n3
    assert succeeded["net-define"] == 4
    names += [f"c{i}" for i in range(3)]
    ports = assert_consistent(lab, names)
    # every port-create of n0 succeeded: none lost
    assert sorted(p["mac"] for p in ports["n0"]) == sorted(macs[:7])

    # round 2: deletes, creates on the same and other networks, stops and starts again
    round2 = (
        [("port-delete", "n0", mac) for mac in macs[:5]]
        + [("port-create", "n0", "--mac", mac) for mac in macs[11:16]]
        + [("port-create", "n2", "--mac", mac) for mac in macs[16:19]]
        + [("net-destroy", "n3")] * 2
        + [("net-start", "c0"), ("net-start", "c1"), ("net-destroy", "n2")]
        + [("net-undefine", "c2"), ("net-list", "--all")]
    )
    assert len(round2) == PROCESSES
    succeeded = assert_clear(lab.at_once(round2))
    assert succeeded["port-delete"] == 5 and succeeded["net-destroy"] >= 2
    names.remove("c2")
    ports = assert_consistent(lab, names)
    assert sorted(p["mac"] for p in ports["n0"]) == sorted(macs[5:7] + macs[11:16])

    # everything stopped: the namespace is as it began
    for row in json.loads(lab.cli("net-list", "--json")):
        lab.cli("net-destroy", row["name"])
    assert (lab.kit.ns_links(ns), lab.kit.ns_addresses(ns), lab.kit.ns_nft_ruleset(ns)) == base
    assert lab.kit.live_pids(ns) == []
