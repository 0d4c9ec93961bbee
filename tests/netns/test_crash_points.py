"""virtnet killed at many points of net-start, net-destroy, net-define and port-create, then
reconciled by the next command (through the real CLI, ``--netns NS --state-dir DIR``).

Kill points (each dies with status 137 and no cleanup, as under SIGKILL):
- net-start: ``VIRTNET_CRASH_AFTER_STEP=k`` for every step k of a NAT network with a DHCP
  reservation and IPv6 (the steps of plain default are covered by test_start_faults.py); the
  next command alternates between net-start and net-destroy.
- net-destroy: ``VIRTNET_CRASH_AFTER_UNDO_STEP=k`` for every undo step k, with a guest port on
  the network (removed first); the next command alternates likewise.
- net-define: ``VIRTNET_CRASH_IN_WRITE=stage`` at each stage of the atomic definition write,
  for a first define and a redefine; net-start and net-destroy likewise inside their status
  record's write (the killed write's temp file must be swept away by the next command).
- port-create: ``VIRTNET_CRASH_AFTER_STEP=k`` for every step of a shaped tap port's plan, and
  ``VIRTNET_CRASH_IN_WRITE`` at each stage of the port record's write.
- real SIGKILLs at seeded random moments of net-start and net-destroy (marked slow).
- inside a step (``VIRTNET_CRASH_IN_STEP=k``: SIGKILL right after the step's first host
  change, before the step returned): net-start's bridge, firewall, port-forward, dnsmasq
  (also with its pid file gone) and shaping steps, and port-create's tap (created, not yet
  enslaved), shaping and macvtap steps. The half-done step is seen on the host before the
  next command, which must undo it with the rest.

The invariant after the reconciling command: the network is either fully up (bridge,
addresses, nftables chains, one dnsmasq, recorded active without problems) or fully absent
(namespace exactly as before the first start, recorded inactive without problems); the
definition on disk is always a whole one (the old or the new); no port device is left without
its record, and no record without its device. Run with ``-s`` to see the tally.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

CLI_TIMEOUT_S = 60.0
NAME = "crashnet"
BRIDGE = "vcrash0"
ADDRESS = "10.91.0.1/24"
XML = f"""<network>
  <name>{NAME}</name>
  <uuid>6a0b7f3e-91c1-4d0e-9a55-0c2d91000001</uuid>
  <forward mode='nat'/>
  <bridge name='{BRIDGE}' stp='on' delay='0'/>
  <bandwidth><inbound average='1000' peak='2000' burst='1024'/></bandwidth>
  <ip address='10.91.0.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.91.0.10' end='10.91.0.99'/>
      <host mac='52:54:00:91:00:10' name='guest1' ip='10.91.0.10'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='fd91::1' prefix='64'/>
</network>
"""
PORT_MAC = "52:54:00:91:00:10"
# the crash network with a port forward: its start has a load-forwards step too
FORWARD_XML = XML.replace("</uuid>", """</uuid>
  <metadata>
    <virtnet:forwards xmlns:virtnet="http://virtnet.dev/schemas/forward/1.0">
      <virtnet:port proto="tcp" port="8080" to="10.91.0.10" to-port="80"/>
    </virtnet:forwards>
  </metadata>""")
SIGKILL_ROUNDS = 6
WRITE_STAGES = ("empty", "partial", "before-rename", "after-rename")

CACHE_FILES = frozenset({"run/kernel-tc-features.json"})

TALLY: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_tally() -> Iterator[None]:
    yield
    lines = [f"  {key}: {count}" for key, count in sorted(TALLY.items())]
    tried = sum(v for k, v in TALLY.items() if k.endswith(" tried"))
    survived = sum(v for k, v in TALLY.items() if k.endswith(" survived"))
    print(f"\ncrash points: {tried} tried, {survived} survived\n" + "\n".join(lines))


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("nft", "dnsmasq", "tc"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"needs {tool}")


def _argv(ns: str, state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "virtnet.face.cli", "--netns", ns, "--state-dir", str(state), *args]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIRTNET_")}
    return {**clean, **(extra or {})}


@dataclass
class Lab:
    kit: Any
    ns: str
    state: Path
    definition: Path

    def cli(self, *args: str, env: dict[str, str] | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(_argv(self.ns, self.state, *args), capture_output=True,
                              text=True, timeout=CLI_TIMEOUT_S, env=_env(env))
        assert "Traceback" not in proc.stderr, proc.stderr
        if check:
            assert proc.returncode == 0, f"{args}: {proc.stdout}{proc.stderr}"
        return proc

    def info(self) -> dict[str, Any]:
        return json.loads(self.cli("net-info", NAME, "--json", check=True).stdout)

    def links(self) -> list[str]:
        return self.kit.ns_links(self.ns)

    def host_view(self) -> tuple[Any, ...]:
        """Everything of the namespace a network could leave behind."""
        return (self.links(), self.kit.ns_addresses(self.ns), self.kit.ns_routes(self.ns),
                self.kit.ns_nft_ruleset(self.ns), sorted(self.kit.live_pids(self.ns)),
                self.kit.ns_run(self.ns, ["tc", "qdisc", "show"]).stdout)

    def files(self) -> list[str]:
        """State files, less the lock and caches of kernel features (probed once, kept)."""
        found = (str(p.relative_to(self.state)) for p in self.state.rglob("*")
                 if p.is_file() and p.name != "virtnet.lock")
        return sorted(name for name in found if name not in CACHE_FILES)


def make_lab(kit: Any, root: Path, xml: str = XML) -> Lab:
    ns = kit.make_netns()
    definition = root / f"{NAME}.xml"
    definition.write_text(xml)
    lab = Lab(kit, ns, root / "state", definition)
    lab.cli("net-define", str(definition), check=True)
    return lab


def assert_fully_up(lab: Lab) -> None:
    info = lab.info()
    assert (info["active"], info["problems"]) == (True, []), info
    assert BRIDGE in lab.links()
    assert ADDRESS in lab.kit.ns_addresses(lab.ns)
    assert f"net-{NAME}" in lab.kit.ns_nft_ruleset(lab.ns)
    assert sorted(lab.kit.live_pids(lab.ns)) == [info["dnsmasq_pid"]]


def assert_fully_absent(lab: Lab, baseline: tuple[Any, ...], files: list[str]) -> None:
    info = lab.info()
    assert (info["active"], info["problems"]) == (False, []), info
    assert lab.host_view() == baseline
    assert lab.files() == files


def plan_steps(lab: Lab) -> int:
    plan = json.loads(lab.cli("plan", NAME, "--json", check=True).stdout)
    return len(plan["actions"])


def reconcile(lab: Lab, k: int, baseline: tuple[Any, ...], files: list[str]) -> None:
    """The next command after a kill: net-start for even k (must end fully up), net-destroy
    for odd k (must end fully absent); then back to absent for the next round."""
    if k % 2 == 0:
        lab.cli("net-start", NAME, check=True)
        assert_fully_up(lab)
        lab.cli("net-destroy", NAME, check=True)
    else:
        lab.cli("net-destroy", NAME, check=True)
    assert_fully_absent(lab, baseline, files)


# --- net-start ---------------------------------------------------------------------------


def test_kill_after_every_start_step(netns_kit: Any, root: Path) -> None:
    lab = make_lab(netns_kit, root)
    baseline, files = lab.host_view(), lab.files()
    steps = plan_steps(lab)
    assert steps >= 12
    for k in range(1, steps + 1):
        TALLY["net-start tried"] += 1
        crashed = lab.cli("net-start", NAME, env={"VIRTNET_CRASH_AFTER_STEP": str(k)})
        assert crashed.returncode == 137, (k, crashed.stderr)
        listed = json.loads(lab.cli("net-list", "--all", "--json", check=True).stdout)
        assert [(r["name"], r["state"]) for r in listed] == [(NAME, "inactive")], k
        reconcile(lab, k, baseline, files)
        TALLY["net-start survived"] += 1


# --- net-destroy -------------------------------------------------------------------------


def test_kill_after_every_destroy_undo_step(netns_kit: Any, root: Path) -> None:
    lab = make_lab(netns_kit, root)
    baseline, files = lab.host_view(), lab.files()
    steps = plan_steps(lab)
    for k in range(1, steps + 1):
        TALLY["net-destroy tried"] += 1
        lab.cli("net-start", NAME, check=True)
        lab.cli("port-create", NAME, "--mac", PORT_MAC, "--inbound", "100,200,64", check=True)
        assert "vnet0" in lab.links()
        crashed = lab.cli("net-destroy", NAME, env={"VIRTNET_CRASH_AFTER_UNDO_STEP": str(k)})
        assert crashed.returncode == 137, (k, crashed.stderr)
        assert "vnet0" not in lab.links()  # ports go first
        # never "active" with half of it gone: recorded inactive, the rest to undo
        info = lab.info()
        assert info["active"] is False and info["problems"], (k, info)
        reconcile(lab, k, baseline, files)
        TALLY["net-destroy survived"] += 1


# --- the status record's write ---------------------------------------------------------------


def test_kill_inside_status_write(netns_kit: Any, root: Path) -> None:
    """net-start killed inside its final status write, and net-destroy inside its first (the
    record marked inactive), at each stage: the next command reconciles as after any other
    kill, and sweeps the killed write's temp file away (the state files are exactly as
    before the first start)."""
    lab = make_lab(netns_kit, root)
    # a first start probes tc and caches what it found, with an atomic write of its own
    # that the hook would hit first
    lab.cli("net-start", NAME, check=True)
    lab.cli("net-destroy", NAME, check=True)
    baseline, files = lab.host_view(), lab.files()
    for k, stage in enumerate(WRITE_STAGES):
        TALLY["net-start status write tried"] += 1
        crashed = lab.cli("net-start", NAME, env={"VIRTNET_CRASH_IN_WRITE": stage})
        assert crashed.returncode == 137, (stage, crashed.stderr)
        assert any(name.endswith(".tmp") for name in lab.files()) or stage == "after-rename"
        reconcile(lab, k, baseline, files)
        TALLY["net-start status write survived"] += 1

        TALLY["net-destroy status write tried"] += 1
        lab.cli("net-start", NAME, check=True)
        crashed = lab.cli("net-destroy", NAME, env={"VIRTNET_CRASH_IN_WRITE": stage})
        assert crashed.returncode == 137, (stage, crashed.stderr)
        if stage != "after-rename":
            assert_fully_up(lab)  # killed before its first undo: still running whole
        lab.cli("net-destroy", NAME, check=True)
        assert_fully_absent(lab, baseline, files)
        TALLY["net-destroy status write survived"] += 1


# --- net-define --------------------------------------------------------------------------


def test_kill_inside_definition_write(netns_kit: Any, root: Path) -> None:
    ns = netns_kit.make_netns()
    state = root / "state"
    lab = Lab(netns_kit, ns, state, root / f"{NAME}.xml")
    lab.definition.write_text(XML)
    redefined = root / "redefined.xml"
    redefined.write_text(XML.replace("delay='0'", "delay='3'"))
    stored = state / "etc" / "networks" / f"{NAME}.xml"
    for stage in WRITE_STAGES:
        # a first define: afterwards there is no definition or a whole one
        TALLY["net-define tried"] += 1
        crashed = lab.cli("net-define", str(lab.definition),
                          env={"VIRTNET_CRASH_IN_WRITE": stage})
        assert crashed.returncode == 137, (stage, crashed.stderr)
        listed = json.loads(lab.cli("net-list", "--all", "--json", check=True).stdout)
        if stage == "after-rename":
            assert [r["name"] for r in listed] == [NAME]
            assert "delay='0'" in stored.read_text()
        else:
            assert listed == [] and not stored.exists(), stage
            lab.cli("net-define", str(lab.definition), check=True)
        TALLY["net-define survived"] += 1

        # a redefine: afterwards the old definition or the new one, never a part
        TALLY["net-define tried"] += 1
        crashed = lab.cli("net-define", str(redefined), env={"VIRTNET_CRASH_IN_WRITE": stage})
        assert crashed.returncode == 137, (stage, crashed.stderr)
        dumped = lab.cli("net-dumpxml", NAME, "--inactive", check=True).stdout
        wanted = "delay='3'" if stage == "after-rename" else "delay='0'"
        assert wanted in dumped and dumped.rstrip().endswith("</network>"), (stage, dumped)
        # the next define (under the lock) removes the killed write's temp file
        lab.cli("net-define", str(lab.definition), check=True)
        assert sorted(p.name for p in stored.parent.iterdir()) == [f"{NAME}.xml"], stage
        lab.cli("net-undefine", NAME, check=True)
        TALLY["net-define survived"] += 1


# --- port-create -------------------------------------------------------------------------


def _ports(lab: Lab) -> list[dict[str, Any]]:
    return json.loads(lab.cli("port-list", NAME, "--json", check=True).stdout)


def _taps(lab: Lab) -> list[str]:
    return [name for name in lab.links() if name.startswith("vnet")]


def test_kill_inside_port_create(netns_kit: Any, root: Path) -> None:
    lab = make_lab(netns_kit, root)
    lab.cli("net-start", NAME, check=True)
    args = ("port-create", NAME, "--mac", PORT_MAC, "--inbound", "100,200,64",
            "--outbound", "100", "--json")
    qdiscs = lab.kit.ns_run(lab.ns, ["tc", "qdisc", "show"]).stdout
    plan_env = [{"VIRTNET_CRASH_AFTER_STEP": str(k)} for k in range(1, 3)]
    write_env = [{"VIRTNET_CRASH_IN_WRITE": stage} for stage in WRITE_STAGES]
    for index, env in enumerate(plan_env + write_env):
        TALLY["port-create tried"] += 1
        crashed = lab.cli(*args, env=env)
        assert crashed.returncode == 137, (env, crashed.stderr)
        # the next command that loads the ports reconciles: a device has its record
        ports = _ports(lab)
        survived = env.get("VIRTNET_CRASH_IN_WRITE") == "after-rename"
        assert [p["device"] for p in ports] == (["vnet0"] if survived else []), (env, ports)
        assert _taps(lab) == (["vnet0"] if survived else []), env
        if index % 2 and ports:
            lab.cli("port-delete", NAME, ports[0]["uuid"], check=True)
        elif not ports:
            # and a port created now gets the first name again: nothing holds it
            created = json.loads(lab.cli(*args, check=True).stdout)
            assert created["device"] == "vnet0"
            lab.cli("port-delete", NAME, created["uuid"], check=True)
        else:
            lab.cli("port-delete", NAME, ports[0]["uuid"], check=True)
        assert _ports(lab) == [] and _taps(lab) == []
        assert lab.kit.ns_run(lab.ns, ["tc", "qdisc", "show"]).stdout == qdiscs
        TALLY["port-create survived"] += 1
    # a kill between port steps, then net-destroy first: nothing left either
    TALLY["port-create tried"] += 1
    assert lab.cli(*args, env={"VIRTNET_CRASH_AFTER_STEP": "1"}).returncode == 137
    assert _taps(lab) == ["vnet0"]
    lab.cli("net-destroy", NAME, check=True)
    assert _taps(lab) == [] and BRIDGE not in lab.links()
    ports_dir = lab.state / "run" / "status" / f"{NAME}.ports"
    assert not ports_dir.exists() or list(ports_dir.iterdir()) == []
    TALLY["port-create survived"] += 1


# --- kills inside a step ----------------------------------------------------------------

KILLED = -signal.SIGKILL  # subprocess's return code of a child killed by SIGKILL
IN_STEP = "VIRTNET_CRASH_IN_STEP"
START_KINDS_KILLED_INSIDE = ("create-bridge", "load-firewall", "load-forwards", "start-dnsmasq",
                             "apply-shaping")


def assert_step_half_done(lab: Lab, kind: str) -> None:
    """What a start killed inside a step of KIND has already changed (so the kill was really
    inside that step, after its first host change)."""
    if kind == "create-bridge":
        assert BRIDGE in lab.links() and ADDRESS not in lab.kit.ns_addresses(lab.ns)
    elif kind == "load-firewall":
        assert f"net-{NAME}" in lab.kit.ns_nft_ruleset(lab.ns)
    elif kind == "load-forwards":
        assert "fwd-pre" in lab.kit.ns_nft_ruleset(lab.ns)
    elif kind == "start-dnsmasq":
        assert lab.kit.live_pids(lab.ns), "dnsmasq is not running"
    elif kind == "apply-shaping":
        qdiscs = lab.kit.ns_run(lab.ns, ["tc", "qdisc", "show", "dev", BRIDGE]).stdout
        assert "htb" in qdiscs, qdiscs
    else:
        raise AssertionError(f"no check for {kind}")


def test_kill_inside_start_steps(netns_kit: Any, root: Path) -> None:
    lab = make_lab(netns_kit, root, FORWARD_XML)
    baseline, files = lab.host_view(), lab.files()
    stored = lab.state / "etc" / "networks" / f"{NAME}.xml"
    definition = stored.read_bytes()
    plan = json.loads(lab.cli("plan", NAME, "--json", check=True).stdout)["actions"]
    points = [(k, action["kind"]) for k, action in enumerate(plan, start=1)
              if action["kind"] in START_KINDS_KILLED_INSIDE]
    assert sorted({kind for _, kind in points}) == sorted(START_KINDS_KILLED_INSIDE)
    # dnsmasq twice: reconciled by net-start (which must be able to bind again) with its pid
    # file removed, so only its command line finds it; and by net-destroy
    dnsmasq = next(k for k, kind in points if kind == "start-dnsmasq")
    rounds = [(k, kind, "net-start" if index % 2 == 0 else "net-destroy")
              for index, (k, kind) in enumerate(points) if kind != "start-dnsmasq"]
    rounds += [(dnsmasq, "start-dnsmasq", "net-start"), (dnsmasq, "start-dnsmasq", "net-destroy")]
    for k, kind, reconciler in rounds:
        TALLY["in-step net-start tried"] += 1
        crashed = lab.cli("net-start", NAME, env={IN_STEP: str(k)})
        assert crashed.returncode == KILLED, (k, kind, crashed.stderr)
        assert_step_half_done(lab, kind)
        info = lab.info()
        assert info["active"] is False, (k, kind, info)
        assert f"interrupted start left {k} step(s)" in info["problems"][0], (k, kind, info)
        if kind == "start-dnsmasq" and reconciler == "net-start":
            pid_files = list(lab.state.rglob(f"{NAME}.pid"))
            assert pid_files, "dnsmasq wrote no pid file"
            for pid_file in pid_files:
                pid_file.unlink()
        reconcile(lab, 0 if reconciler == "net-start" else 1, baseline, files)
        assert stored.read_bytes() == definition, (k, kind)
        TALLY["in-step net-start survived"] += 1


def _master(lab: Lab, device: str) -> str | None:
    [link] = lab.kit.ns_json(lab.ns, ["-d", "link", "show", "dev", device])
    return link.get("master")


def test_kill_inside_port_create_steps(netns_kit: Any, root: Path) -> None:
    lab = make_lab(netns_kit, root)
    baseline, files = lab.host_view(), lab.files()
    lab.cli("net-start", NAME, check=True)
    args = ("port-create", NAME, "--mac", PORT_MAC, "--inbound", "100,200,64",
            "--outbound", "100", "--json")
    qdiscs = lab.kit.ns_run(lab.ns, ["tc", "qdisc", "show"]).stdout
    # step 1 creates the tap (killed before it is enslaved), step 2 shapes it
    for k, reconciler in ((1, "port-list"), (2, "port-list"), (1, "net-destroy")):
        TALLY["in-step port-create tried"] += 1
        crashed = lab.cli(*args, env={IN_STEP: str(k)})
        assert crashed.returncode == KILLED, (k, crashed.stderr)
        assert _taps(lab) == ["vnet0"], k
        assert _master(lab, "vnet0") == (None if k == 1 else BRIDGE), k
        if reconciler == "port-list":
            assert _ports(lab) == [], k
            assert _taps(lab) == [], k
            assert lab.kit.ns_run(lab.ns, ["tc", "qdisc", "show"]).stdout == qdiscs, k
            # and the name is free again
            created = json.loads(lab.cli(*args, check=True).stdout)
            assert created["device"] == "vnet0"
            lab.cli("port-delete", NAME, created["uuid"], check=True)
        else:
            lab.cli("net-destroy", NAME, check=True)
            assert_fully_absent(lab, baseline, files)
            lab.cli("net-start", NAME, check=True)
        TALLY["in-step port-create survived"] += 1
    lab.cli("net-destroy", NAME, check=True)
    assert_fully_absent(lab, baseline, files)


MACVTAP_XML = """<network>
  <name>lan</name>
  <forward mode='bridge'><interface dev='eth1'/></forward>
</network>
"""


def test_kill_inside_macvtap_port_create(netns_kit: Any, root: Path) -> None:
    ns = netns_kit.make_netns()
    netns_kit.run(["ip", "-n", ns, "link", "add", "eth1", "type", "veth", "peer", "name",
                   "eth1peer"])
    for link in ("eth1", "eth1peer"):
        netns_kit.run(["ip", "-n", ns, "link", "set", link, "up"])
    definition = root / "lan.xml"
    definition.write_text(MACVTAP_XML)
    lab = Lab(netns_kit, ns, root / "state", definition)
    lab.cli("net-define", str(definition), check=True)
    lab.cli("net-start", "lan", check=True)
    links = lab.links()
    args = ("port-create", "lan", "--mac", PORT_MAC, "--json")
    TALLY["in-step port-create tried"] += 1
    crashed = lab.cli(*args, env={IN_STEP: "1"})
    assert crashed.returncode == KILLED, crashed.stderr
    assert "macvtap0" in lab.links()  # created, its node not yet made
    assert json.loads(lab.cli("port-list", "lan", "--json", check=True).stdout) == []
    assert lab.links() == links
    created = json.loads(lab.cli(*args, check=True).stdout)
    assert created["device"] == "macvtap0"
    lab.cli("net-destroy", "lan", check=True)
    assert lab.links() == links
    TALLY["in-step port-create survived"] += 1


# --- real SIGKILLs at random moments -----------------------------------------------------


def _kill_at(lab: Lab, delay: float, *args: str) -> int:
    proc = subprocess.Popen(_argv(lab.ns, lab.state, *args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env(None))
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)  # the process this test started, by its pid
    return proc.wait(timeout=CLI_TIMEOUT_S)


def _duration(lab: Lab, *args: str) -> float:
    begin = time.monotonic()
    lab.cli(*args, check=True)
    return time.monotonic() - begin


def _reconcile_unknown(lab: Lab, baseline: tuple[Any, ...], files: list[str]) -> None:
    """After a kill at an unknown moment: the command may have done nothing yet or
    finished. net-destroy then ends fully absent in every case ("not active" when there was
    nothing to undo)."""
    proc = lab.cli("net-destroy", NAME)
    assert proc.returncode == 0 or "is not active" in proc.stderr, proc.stderr
    assert_fully_absent(lab, baseline, files)


@pytest.mark.slow
def test_sigkill_at_random_moments(netns_kit: Any, root: Path) -> None:
    lab = make_lab(netns_kit, root)
    baseline, files = lab.host_view(), lab.files()
    start_s = _duration(lab, "net-start", NAME)
    destroy_s = _duration(lab, "net-destroy", NAME)
    rng = random.Random(7)  # seeded: a failure can be replayed
    for _ in range(SIGKILL_ROUNDS):
        TALLY["sigkill net-start tried"] += 1
        _kill_at(lab, rng.uniform(0.3, 1.0) * start_s, "net-start", NAME)
        _reconcile_unknown(lab, baseline, files)
        TALLY["sigkill net-start survived"] += 1

        TALLY["sigkill net-destroy tried"] += 1
        lab.cli("net-start", NAME, check=True)
        _kill_at(lab, rng.uniform(0.3, 1.0) * destroy_s, "net-destroy", NAME)
        _reconcile_unknown(lab, baseline, files)
        TALLY["sigkill net-destroy survived"] += 1
