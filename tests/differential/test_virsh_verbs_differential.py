"""virsh's net-port-* verbs and net-dumpxml --xpath, ours against a live libvirt 9.0.

The same network is defined and started by libvirt (tests.kit.libvirtd, namespaces of its own)
and by virtnet (a namespace of this test); then the same commands run on both sides and their
output and exit status must be the same.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.libvirtd import LibvirtdInNetns, libvirtd_unavailable_reason

_UNAVAILABLE = libvirtd_unavailable_reason()
pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.netns,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"differential test: {_UNAVAILABLE}"),
]

NAME = f"vntv{secrets.token_hex(2)}"
BRIDGE = f"{NAME}br"
NETWORK = f"""<network>
  <name>{NAME}</name>
  <uuid>6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f</uuid>
  <bridge name='{BRIDGE}' stp='on' delay='0'/>
  <mac address='52:54:00:3a:11:22'/>
  <ip address='10.203.7.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.203.7.10' end='10.203.7.20'/>
      <host mac='52:54:00:3a:00:05' name='web' ip='10.203.7.5'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='fd00:203:7::1' prefix='64'/>
</network>
"""
PORT_UUID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
PORT = f"""<networkport>
  <uuid>{PORT_UUID}</uuid>
  <owner>
    <name>vm1</name>
    <uuid>11111111-2222-4333-8444-555555555555</uuid>
  </owner>
  <mac address='52:54:00:3a:00:07'/>
</networkport>
"""
XPATHS = ["//ip", "//ip/@address", "//name/text()", "//ip[1]/dhcp", "//@family", "//nosuch",
          "/", "string(//name)", "count(//ip)", "//["]


class Sides:
    def __init__(self, lv: LibvirtdInNetns, ns: str, state: Path, files: Path) -> None:
        self.lv, self.ns, self.state, self.files = lv, ns, state, files

    def theirs(self, *args: str) -> tuple[str, int]:
        proc = self.lv.virsh(*args)
        return proc.stdout, proc.returncode

    def ours(self, *args: str) -> tuple[str, int]:
        proc = subprocess.run([sys.executable, "-m", "virtnet.face.cli", "--netns", self.ns,
                               "--state-dir", str(self.state), *args],
                              capture_output=True, text=True, timeout=60, check=False)
        return proc.stdout, proc.returncode

    def both(self, *args: str) -> tuple[tuple[str, int], tuple[str, int]]:
        return self.theirs(*args), self.ours(*args)


@pytest.fixture(scope="module")
def sides() -> Iterator[Sides]:
    # dnsmasq reads its files as nobody: the state dir's parents must be traversable
    files = Path(tempfile.mkdtemp(prefix="vnt-vv-"))
    files.chmod(0o755)
    (files / "net.xml").write_text(NETWORK)
    (files / "port.xml").write_text(PORT)
    ns = f"vnt-vv-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        with LibvirtdInNetns() as lv:
            side = Sides(lv, ns, files / "state", files)
            for verb in (("net-define", str(files / "net.xml")), ("net-start", NAME)):
                theirs, ours = side.both(*verb)
                assert theirs[1] == 0 and ours[1] == 0, (theirs, ours)
            yield side
            side.ours("net-destroy", NAME)
    finally:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              timeout=30).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], timeout=30, check=False)
        subprocess.run(["ip", "netns", "delete", ns], timeout=30, check=False)
        shutil.rmtree(files, ignore_errors=True)


@pytest.mark.parametrize("expression", XPATHS)
@pytest.mark.parametrize("wrap", [False, True])
def test_dumpxml_xpath_prints_what_virsh_prints(sides: Sides, expression: str,
                                                wrap: bool) -> None:
    args = ["net-dumpxml", NAME, "--inactive", "--xpath", expression, *(["--wrap"] * wrap)]
    theirs, ours = sides.both(*args)
    assert ours == theirs


def test_port_verbs_print_what_virsh_prints(sides: Sides) -> None:
    port_file = str(sides.files / "port.xml")
    steps: list[tuple[str, ...]] = [
        ("net-port-list", NAME),
        ("net-port-create", NAME, port_file),
        ("net-port-list", NAME),
        ("net-port-list", NAME, "--uuid"),
        ("net-port-list", NAME, "--uuid", "--table"),
        ("net-port-list", "nosuch"),
        ("net-port-delete", NAME, PORT_UUID),
        ("net-port-list", NAME, "--uuid"),
    ]
    differences: list[Any] = []
    for step in steps:
        theirs, ours = sides.both(*step)
        if theirs != ours:
            differences.append((step, theirs, ours))
    assert not differences


def test_port_dumpxml_keeps_what_was_asked(sides: Sides) -> None:
    port_file = str(sides.files / "port.xml")
    assert sides.both("net-port-create", NAME, port_file)[1][1] == 0
    try:
        theirs, ours = sides.both("net-port-dumpxml", NAME, PORT_UUID)
        assert theirs[1] == ours[1] == 0
        # libvirt's port of a bridge network says where it plugs; ours says the same and names
        # the tap virtnet made for it, which libvirt leaves to the hypervisor
        for line in theirs[0].splitlines():
            assert line in ours[0].splitlines(), (theirs[0], ours[0])
    finally:
        sides.both("net-port-delete", NAME, PORT_UUID)
