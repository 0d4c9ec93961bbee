"""The lab measures, on the real kernel, the matrix doctor predicts: every forward mode, with
the switch ports' hairpin off and on, cell for cell (every ordered pair of guest1, guest2,
host, lan, upstream).

Each lab is small (two guests, probes of 2 x 0.5 s) and removed afterwards. Forward modes on a
bridge of virtnet's own do not care about the switch's hairpin (their uplink is not bridged),
so their hairpin-on variants are marked slow; every other combination runs in `make test`.
The three DHCP clients share the work: guests of the NAT network use udhcpc, of the isolated
one dhclient, of the routed one dhcpcd (each where installed; udhcpc otherwise).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from virtnet.lab import Lab, LabOptions, ns_pids
from virtnet.model import ForwardMode
from virtnet.xml.parse import parse_network

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
    "vepa": ("<network><name>mvvepa</name><forward mode='vepa'><interface dev='eth1'/>"
             "</forward></network>"),
    "passthrough": ("<network><name>mvpass</name><forward mode='passthrough'>"
                    "<interface dev='eth1'/><interface dev='eth2'/></forward></network>"),
}
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


@pytest.mark.parametrize("mode, hairpin", cases())
def test_measured_equals_predicted(mode: str, hairpin: bool) -> None:
    skip_unless_root()
    xml = DEFINITIONS[mode]
    began = time.monotonic()
    with Lab(parse_network(xml), xml, LabOptions(guests=2, hairpin=hairpin,
                                                 dhcp_client=client_for(mode))) as lab:
        lab.build()
        lab.start_network()
        lab.add_guests()
        cells = lab.measure()
        namespaces = list(lab.namespaces.values())
        guests = list(lab.guests)
    assert len(cells) == 20  # 5 endpoints, every ordered pair
    mismatches = [f"{c.src}→{c.dst}: predicted {c.predicted}, measured {c.measured} "
                  f"({c.reason})" for c in cells if not c.matches]
    assert mismatches == [], "\n".join(mismatches)
    assert all(g.address for g in guests), [g.to_dict() for g in guests]
    if mode in CLIENTS:
        assert all(g.how.startswith("dhcp") for g in guests)
    # teardown left nothing: no namespace, no process
    assert not [ns for ns in namespaces if os.path.exists(f"/run/netns/{ns}")]
    assert time.monotonic() - began < 60


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
    proc = subprocess.Popen([sys.executable, "-m", "virtnet.cli", "lab", str(definition)],
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
