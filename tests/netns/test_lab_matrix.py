"""The lab measures, on the real kernel, the matrix doctor predicts: every forward mode, with
the switch ports' hairpin off and on, cell for cell (every ordered pair of guest1, guest2,
host, lan, upstream).

Each lab is small (two guests, probes of 2 x 0.5 s) and removed afterwards. Every probe starts
from a clean state (no neighbour entry, no learned MAC left by an earlier one). Forward modes
on a bridge of virtnet's own do not care about the switch's hairpin (their uplink is not
bridged), so their hairpin-on variants are marked slow; every other combination runs in `make
test`. The slow tests also build each direct network's lab three times and probe its cells
forward and backward each time: the same matrix on every run, in any order.
The three DHCP clients share the work: guests of the NAT network use udhcpc, of the isolated
one dhclient, of the routed one dhcpcd (each where installed; udhcpc otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtnet.insight.lab import Lab, ns_pids
from virtnet.insight.lab_layout import LabOptions
from virtnet.spec.model import ForwardMode
from virtnet.spec.xml.parse import parse_network

pytestmark = pytest.mark.netns

DEFINITIONS = {
    "isolated": ("<network><name>iso</name><bridge name='vntiso0' stp='off'/>"
                 "<ip address='192.168.140.1' prefix='24'><dhcp>"
                 "<range start='192.168.140.100' end='192.168.140.150'/></dhcp></ip></network>"),
    "nat": ("<network><name>natnet</name><forward mode='nat'/><bridge name='vntnat0' stp='off'/>"
            "<ip address='192.168.122.1' netmask='255.255.255.0'><dhcp>"
            "<range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>"),
    "route": ("<network><name>routed</name><forward mode='route' dev='eth1'/>"
              "<bridge name='vntrt0' stp='off'/><ip address='192.168.150.1' prefix='24'><dhcp>"
              "<range start='192.168.150.100' end='192.168.150.199'/>"
              "<host mac='52:54:00:aa:00:10' name='build' ip='192.168.150.10'/></dhcp></ip>"
              "</network>"),
    "open": ("<network><name>opennet</name><forward mode='open'/>"
             "<bridge name='vntopen0' stp='off'/><ip address='192.168.160.1' prefix='24'/>"
             "</network>"),
    "hostbridge": ("<network><name>hostbr</name><forward mode='bridge'/><bridge name='br0'/>"
                   "</network>"),
    "macvtap-bridge": ("<network><name>mvbridge</name><forward mode='bridge'>"
                       "<interface dev='eth1'/></forward></network>"),
    "private": ("<network><name>mvprivate</name><forward mode='private'>"
                "<interface dev='eth1'/></forward></network>"),
    # guest1 on eth1 (the host's address), guest2 on eth2: the switch floods guest1's ARP to
    # the host's eth2, which answers for the address on eth1 (issue #16, hole 11)
    "private-2uplinks": ("<network><name>mvprivate2</name><forward mode='private'>"
                         "<interface dev='eth1'/><interface dev='eth2'/></forward></network>"),
    "vepa": ("<network><name>mvvepa</name><forward mode='vepa'><interface dev='eth1'/>"
             "</forward></network>"),
    "passthrough": ("<network><name>mvpass</name><forward mode='passthrough'>"
                    "<interface dev='eth1'/><interface dev='eth2'/></forward></network>"),
}
# direct networks with two uplinks, measured by the (slow) repeated runs only
TWO_UPLINKS = {
    f"{mode}-2uplinks": (f"<network><name>mv2{mode}</name><forward mode='{mode}'>"
                         "<interface dev='eth1'/><interface dev='eth2'/></forward></network>")
    for mode in ("bridge", "vepa")
}
MACVTAP = ["macvtap-bridge", "private", "vepa", "passthrough", "private-2uplinks",
           *TWO_UPLINKS]
CLIENTS = {"nat": "udhcpc", "isolated": "dhclient", "route": "dhcpcd"}
HAIRPIN_INSENSITIVE = {"isolated", "nat", "route", "open"}


def client_for(mode: str) -> str:
    wanted = CLIENTS.get(mode, "udhcpc")
    found = shutil.which(wanted, path="/usr/sbin:/usr/bin:/sbin:/bin")
    return wanted if found else "udhcpc"


def cases() -> list[Any]:
    out = []
    for mode in DEFINITIONS:
        for hairpin in (False, True):
            marks = [pytest.mark.slow] if hairpin and mode in HAIRPIN_INSENSITIVE else []
            out.append(pytest.param(mode, hairpin, marks=marks,
                                    id=f"{mode}-hairpin-{'on' if hairpin else 'off'}"))
    return out


def skip_unless_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")
    if shutil.which("udhcpc", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        pytest.skip("needs udhcpc")


@contextlib.contextmanager
def running_lab(xml: str, **options: Any) -> Iterator[Lab]:
    """A lab for XML with two guests: its network started, its guests plugged in; torn down
    when left."""
    with Lab(parse_network(xml), xml, LabOptions(guests=2, **options)) as lab:
        lab.build()
        lab.start_network()
        lab.add_guests()
        yield lab


def mismatches(cells: list[Any]) -> list[str]:
    return [f"{c.src}→{c.dst}: predicted {c.predicted}, measured {c.measured} ({c.reason})"
            for c in cells if not c.matches]


@pytest.mark.parametrize("mode, hairpin", cases())
def test_measured_equals_predicted(mode: str, hairpin: bool) -> None:
    skip_unless_root()
    xml = DEFINITIONS[mode]
    began = time.monotonic()
    with running_lab(xml, hairpin=hairpin, dhcp_client=client_for(mode)) as lab:
        cells = lab.measure()
        namespaces = list(lab.namespaces.values())
        guests = list(lab.guests)
    assert len(cells) == 20  # 5 endpoints, every ordered pair
    assert mismatches(cells) == [], "\n".join(mismatches(cells))
    assert all(g.address for g in guests), [g.to_dict() for g in guests]
    if mode in CLIENTS:
        assert all(g.how.startswith("dhcp") for g in guests)
    # teardown left nothing: no namespace, no process
    assert not [ns for ns in namespaces if os.path.exists(f"/run/netns/{ns}")]
    assert time.monotonic() - began < 60


@pytest.mark.slow
@pytest.mark.parametrize("run", [1, 2, 3])
@pytest.mark.parametrize("hairpin", [False, True], ids=["hairpin-off", "hairpin-on"])
@pytest.mark.parametrize("mode", MACVTAP)
def test_direct_matrix_is_the_same_on_every_run_in_any_order(mode: str, hairpin: bool,
                                                            run: int) -> None:
    """Each run a lab of its own; the cells probed forward, then backward (host→guest before
    guest→host, the LAN before the guests): every probe from a clean state, so the order
    changes nothing and both measurements equal the prediction."""
    skip_unless_root()
    xml = DEFINITIONS.get(mode) or TWO_UPLINKS[mode]
    with running_lab(xml, hairpin=hairpin) as lab:
        cells = lab.predict()
        forward = lab.measure(cells)
        backward = lab.measure(list(reversed(cells)))
    assert mismatches(forward) == [] and mismatches(backward) == []
    assert len(forward) == 20


def learned_state(lab: Lab) -> dict[str, list[str]]:
    """What traffic taught the lab's namespaces: neighbours (not permanent or noarp) and the
    switch's learned MACs."""
    found = {}
    for role, ns in lab.namespaces.items():
        entries = json.loads(subprocess.run(["ip", "-j", "-n", ns, "neigh", "show"],
                                            capture_output=True, text=True, check=True,
                                            timeout=20).stdout or "[]")
        found[role] = [e["dst"] for e in entries
                       if not {"PERMANENT", "NOARP"} & set(e.get("state", []))]
    fdb = json.loads(subprocess.run(["bridge", "-n", lab.ns("switch"), "-j", "fdb", "show",
                                     "br", "lan"], capture_output=True, text=True, check=True,
                                    timeout=20).stdout or "[]")
    found["switch fdb"] = [e["mac"] for e in fdb if not e.get("state")
                           and "self" not in e.get("flags", [])]
    return {role: entries for role, entries in found.items() if entries}


def test_each_probe_starts_from_a_clean_state() -> None:
    """private, hairpin on, one uplink: the host's ARP request teaches guest1 the host's MAC,
    and with it guest1 would reach the host, which its own (reflected) ARP never does. The
    lab forgets such lessons before every probe: neighbours and learned MACs everywhere."""
    skip_unless_root()
    xml = DEFINITIONS["private"]
    with running_lab(xml, hairpin=True) as lab:
        assert lab.probe("host", "guest1")
        taught = learned_state(lab)
        assert "guest1" in taught and "switch fdb" in taught, taught
        assert not lab.probe("guest1", "host")  # the lesson was forgotten first
        assert lab.probe("host", "guest1")
        lab.clean_state()
        # (the switch may relearn a MAC at once from the namespaces' IPv6 chatter)
        assert [role for role in learned_state(lab) if role != "switch fdb"] == []


def test_the_host_answering_on_its_other_uplink_follows_its_arp_settings() -> None:
    """The lab's namespaces inherit the machine's IPv4 settings; the prediction reads them from
    the lab's host. With arp_ignore=1 on eth2 the host answers there only for eth2's own
    addresses, and guest1 (private, on eth1) no longer finds the host."""
    skip_unless_root()
    xml = DEFINITIONS["private-2uplinks"]
    with running_lab(xml, hairpin=True) as lab:
        assert [g.uplink for g in lab.guests] == ["eth1", "eth2"]
        before = lab.measure()
        subprocess.run(["ip", "netns", "exec", lab.ns("host"), "sysctl", "-qw",
                        "net.ipv4.conf.eth2.arp_ignore=1"], check=True, timeout=20)
        after = lab.measure()
    assert mismatches(before) == [] and mismatches(after) == []
    cell = {(c.src, c.dst): c for c in before}["guest1", "host"]
    assert cell.measured and "ARP flux" in cell.reason
    assert not {(c.src, c.dst): c for c in after}["guest1", "host"].measured


def test_reservations_and_modes_are_exercised() -> None:
    """The definitions cover every forward mode the issue names, and the routed one has a
    reservation the lab's first guest takes."""
    modes = {parse_network(x).forward_mode for x in DEFINITIONS.values()}
    assert modes == {ForwardMode.NONE, ForwardMode.NAT, ForwardMode.ROUTE, ForwardMode.OPEN,
                     ForwardMode.BRIDGE, ForwardMode.PRIVATE, ForwardMode.VEPA,
                     ForwardMode.PASSTHROUGH}
    assert parse_network(DEFINITIONS["hostbridge"]).bridge_name == "br0"
    assert parse_network(DEFINITIONS["macvtap-bridge"]).uses_macvtap


def test_teardown_after_a_failure_inside_the_lab() -> None:
    skip_unless_root()
    xml = DEFINITIONS["nat"]
    lab = Lab(parse_network(xml), xml, LabOptions(guests=1))
    with pytest.raises(RuntimeError, match="boom"):
        with lab:
            lab.build()
            lab.start_network()
            namespaces = list(lab.namespaces.values())
            host = lab.ns("host")
            dnsmasq = ns_pids(host)
            assert dnsmasq, "the network's dnsmasq runs in the lab's host namespace"
            raise RuntimeError("boom")
    assert not [ns for ns in namespaces if os.path.exists(f"/run/netns/{ns}")]
    assert not [pid for pid in dnsmasq if alive(pid)]
    assert lab.state is None


def alive(pid: int, wait: float = 2.0) -> bool:
    """Whether PID still runs (a killed daemon may stay a zombie for a moment until init
    reaps it)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state not in ("Z", "X"):
            if time.monotonic() > deadline:
                return True
            time.sleep(0.05)
            continue
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_cli_lab_tears_down_when_interrupted(signum: int, tmp_path: Path) -> None:
    skip_unless_root()
    definition = tmp_path / "net.xml"
    definition.write_text(DEFINITIONS["nat"])
    before = set(Path("/run/netns").iterdir()) if Path("/run/netns").exists() else set()
    # as from a terminal: SIGINT at its default even when pytest runs as a background job
    # (whose SIGINT the shell ignores, and children would inherit that)
    proc = subprocess.Popen([sys.executable, "-m", "virtnet.face.cli", "lab", str(definition)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        ours: set[Path] = set()
        while time.monotonic() < deadline and len(ours) < 5:  # host, switch, lan, upstream, g1
            time.sleep(0.1)
            ours = {p for p in Path("/run/netns").iterdir()
                    if p not in before and p.name.startswith("vnt-lab-")}
        assert len(ours) >= 5, "the lab did not get as far as its guests"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "the lab was removed" in err
    assert not [p for p in ours if p.exists()]
