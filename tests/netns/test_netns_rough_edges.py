"""Issue #18's rough edges through the CLI with its output piped, as `| cat` or `> file` see
it: doctor's and lab's tables keep one row per line, lab prints a line per stage on stderr,
graph names the uplink from the namespace's default route and fits a page; doctor warns of
the subnets of libvirt's networks (files in a temp dir, and a real libvirtd's); and in a
--netns namespace an allocated bridge is still virbr0 (libvirt's names count only where
libvirtd runs)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.kit.libvirtd import LibvirtdInNetns, libvirtd_unavailable_reason

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120
NAT = ("<network><name>natnet</name><forward mode='nat'/><bridge name='vntre0' stp='off'/>"
       "<ip address='192.168.122.1' prefix='24'><dhcp><range start='192.168.122.2' "
       "end='192.168.122.99'/></dhcp></ip></network>")
ISOLATED = ("<network><name>isonet</name><bridge name='vntre1' stp='off'/>"
            "<ip address='10.231.0.1' prefix='24'><dhcp><range start='10.231.0.10' "
            "end='10.231.0.50'/></dhcp></ip></network>")
LONG_REASON = "NAT: only replies come in; for inbound connections use forward mode 'route'"


def piped(*argv: str, ns: str | None = None, state: Path | None = None
          ) -> subprocess.CompletedProcess[str]:
    """virtnet ARGV with stdout and stderr pipes, as `| cat` runs it (no COLUMNS either)."""
    head = [sys.executable, "-m", "virtnet.face.cli"]
    if ns is not None:
        head += ["--netns", ns, "--state-dir", str(state)]
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([*head, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=TIMEOUT_S, env=env, cwd=ROOT)


def host_with_uplink(kit: Any) -> str:
    """A namespace whose default route leaves by vntup0."""
    ns = kit.make_netns()
    kit.run(["ip", "-n", ns, "link", "add", "vntup0", "type", "veth", "peer", "name", "vntup1"])
    kit.run(["ip", "-n", ns, "address", "add", "10.77.0.5/24", "dev", "vntup0"])
    kit.run(["ip", "-n", ns, "link", "set", "vntup0", "up"])
    kit.run(["ip", "-n", ns, "link", "set", "vntup1", "up"])
    kit.run(["ip", "-n", ns, "route", "add", "default", "via", "10.77.0.1"])
    return ns


def test_doctor_piped_prints_one_row_per_line(netns_kit: Any, root: Path) -> None:
    ns = host_with_uplink(netns_kit)
    (root / "nat.xml").write_text(NAT)
    proc = piped("doctor", str(root / "nat.xml"), ns=ns, state=root / "state")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "LAN→guest" in line]
    assert len(rows) == 1 and LONG_REASON in rows[0], proc.stdout
    assert "\x1b[" not in proc.stdout  # no colours in a file


def test_lab_piped_prints_progress_lines_and_whole_rows(root: Path) -> None:
    (root / "iso.xml").write_text(ISOLATED)
    proc = piped("lab", str(root / "iso.xml"), "--guests", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stages = [line for line in proc.stderr.splitlines() if line.startswith("lab: ")]
    assert any("creating namespaces" in line for line in stages), proc.stderr
    assert any("starting network isonet" in line for line in stages), proc.stderr
    probes = [line for line in stages if line.startswith("lab: probing ")]
    assert probes and probes[-1].endswith(f"({len(probes)}/{len(probes)})"), proc.stderr
    assert "cells as predicted: all match" in proc.stdout
    # every cell of the table is one line: from, to and the reason's end together
    cells = [line for line in proc.stdout.splitlines() if line.startswith("│ guest1 ")]
    assert cells and all(line.rstrip().endswith("│") for line in cells), proc.stdout


def test_graph_names_the_default_routes_uplink_and_fits_a_page(netns_kit: Any,
                                                               root: Path) -> None:
    ns = host_with_uplink(netns_kit)
    default = str(ROOT / "examples" / "default.xml")
    dot = piped("graph", default, "-o", str(root / "g.dot"), ns=ns, state=root / "state")
    assert dot.returncode == 0, dot.stderr
    assert 'uplink [label="uplink vntup0\\n(of the default route)"]' in (root / "g.dot").read_text()
    png = piped("graph", default, "-o", str(root / "g.png"), ns=ns, state=root / "state")
    assert png.returncode == 0, png.stderr
    width, _height = struct.unpack(">II", (root / "g.png").read_bytes()[16:24])
    assert width <= 1000, width


def _doctor_json(state: str, xml: str, libvirt_dirs: list[str]) -> dict[str, Any]:
    from virtnet.insight.doctor import run_doctor
    from virtnet.service.engine import Engine
    from virtnet.paths import StatePaths

    engine = Engine(StatePaths.under(Path(state)))
    report = run_doctor(engine, [engine.parse(xml, "test")],
                        libvirt_dirs=[Path(d) for d in libvirt_dirs])
    return report.to_dict()


def _shares_and_allocates(state: str) -> tuple[bool, str | None]:
    from virtnet.service.engine import Engine
    from virtnet.host import HostProcess
    from virtnet.paths import StatePaths

    net = Engine(StatePaths.under(Path(state))).define("<network><name>b</name></network>", "t")
    return HostProcess.in_libvirt_netns(), net.bridge_name


def test_doctor_warns_of_libvirts_subnets_in_files(netns_kit: Any, root: Path) -> None:
    ns = netns_kit.make_netns()
    etc, run = root / "etc", root / "run"
    etc.mkdir()
    run.mkdir()
    (etc / "default.xml").write_text("<network><name>default</name><bridge name='virbr0'/>"
                                     "<ip address='192.168.122.1' netmask='255.255.255.0'/>"
                                     "</network>")
    (run / "junk.xml").write_text("<networkstatus><network><name>j")
    data = netns_kit.run_in_netns(ns, _doctor_json, str(root / "state"), NAT,
                                  [str(etc), str(run)])
    warnings = data["networks"][0]["warnings"]
    assert len(warnings) == 1 and "libvirt's network 'default'" in warnings[0], warnings
    assert str(etc / "default.xml") in warnings[0]
    empty = netns_kit.run_in_netns(ns, _doctor_json, str(root / "state"), NAT, [str(run)])
    assert empty["networks"][0]["warnings"] == []
    # in a --netns namespace libvirt's bridges do not count: the first name is still virbr0
    assert netns_kit.run_in_netns(ns, _shares_and_allocates, str(root / "state")) == \
        (False, "virbr0")


@pytest.mark.libvirt
@pytest.mark.skipif(libvirtd_unavailable_reason() is not None,
                    reason=f"libvirt check: {libvirtd_unavailable_reason()}")
def test_doctor_warns_of_a_real_libvirts_networks(netns_kit: Any, root: Path) -> None:
    ns = netns_kit.make_netns()
    persistent = root / "lv.xml"
    persistent.write_text("<network><name>vnt-lv-doc</name><bridge name='vntlvd0'/>"
                          "<ip address='192.168.122.1' netmask='255.255.255.0'/></network>")
    with LibvirtdInNetns() as libvirt:
        defined = libvirt.virsh("net-define", str(persistent))
        assert defined.returncode == 0, defined.stderr
        dirs = [str(libvirt.host_path("/etc/libvirt/qemu/networks")),
                str(libvirt.host_path("/run/libvirt/network"))]
        data = netns_kit.run_in_netns(ns, _doctor_json, str(root / "state"), NAT, dirs)
    warnings = data["networks"][0]["warnings"]
    assert any("libvirt's network 'vnt-lv-doc'" in w and "vnt-lv-doc.xml" in w
               for w in warnings), json.dumps(data, indent=1)
