"""virtnet import and export against a live libvirt 9.0: networks libvirt defined (its own
files, written by its own daemon) come into virtnet unchanged, a network libvirt runs is
refused, and what virtnet exports libvirt defines back to the same XML."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit.libvirtd import LibvirtdInNetns, libvirtd_unavailable_reason

_UNAVAILABLE = libvirtd_unavailable_reason()
pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.netns,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"differential test: {_UNAVAILABLE}"),
]

TAG = secrets.token_hex(2)
KEPT, RUNNING = f"vntm{TAG}", f"vntr{TAG}"


def network_xml(name: str, third: int) -> str:
    return f"""<network>
  <name>{name}</name>
  <forward mode='nat'/>
  <bridge name='{name}br' stp='on' delay='0'/>
  <ip address='10.204.{third}.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.204.{third}.10' end='10.204.{third}.20'/>
      <host mac='52:54:00:3b:00:05' name='web' ip='10.204.{third}.5'/>
    </dhcp>
  </ip>
  <dns><host ip='10.204.{third}.5'><hostname>web</hostname></host></dns>
</network>
"""


def virtnet(netns: str, state: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "virtnet.face.fastcli", "--direct", "--netns", netns,
                           "--state-dir", str(state), *args],
                          capture_output=True, text=True, timeout=60)
    if ok:
        assert proc.returncode == 0, f"virtnet {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc


@pytest.fixture
def netns():
    name = f"vnt-mig-{TAG}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=20)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], timeout=20)


def test_import_and_export_round_trip_through_libvirt(netns: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with LibvirtdInNetns() as lv:
        assert lv.root is not None
        config_dir = lv.root / "etc" / "qemu" / "networks"
        status_dir = lv.root / "run" / "libvirt" / "network"
        for name, third in ((KEPT, 1), (RUNNING, 2)):
            (tmp_path / f"{name}.xml").write_text(network_xml(name, third))
            lv.virsh("net-define", str(tmp_path / f"{name}.xml"))
        lv.virsh("net-autostart", KEPT)
        lv.virsh("net-start", RUNNING)
        original = lv.virsh("net-dumpxml", "--inactive", KEPT).stdout

        # a dry run defines nothing
        virtnet(netns, state, "import", "--from", str(config_dir), "--status-dir",
                str(status_dir), "--dry-run", KEPT)
        assert "vntm" not in virtnet(netns, state, "net-list", "--all").stdout

        # all of libvirt's: the running one refused with the reason, the other imported
        proc = virtnet(netns, state, "import", "--from", str(config_dir), "--status-dir",
                       str(status_dir), "--json", ok=False)
        assert proc.returncode == 1
        outcome = {item["name"]: item for item in json.loads(proc.stdout)}
        assert outcome[KEPT]["done"] and outcome[KEPT]["autostart"]
        assert not outcome[RUNNING]["done"]
        assert "libvirt runs it now" in outcome[RUNNING]["reason"]
        listed = virtnet(netns, state, "net-list", "--all").stdout
        assert KEPT in listed and RUNNING not in listed
        assert virtnet(netns, state, "net-dumpxml", "--inactive", KEPT).stdout == original
        assert "Autostart:      yes" in virtnet(netns, state, "net-info", KEPT).stdout

        # importing it again is refused: virtnet has it
        again = virtnet(netns, state, "import", "--from", str(config_dir), "--status-dir",
                        str(status_dir), KEPT, ok=False)
        assert again.returncode == 1 and "virtnet already has a network" in again.stderr

        # export it, and libvirt takes it back as it was
        lv.virsh("net-autostart", "--disable", KEPT)
        lv.virsh("net-undefine", KEPT)
        out = tmp_path / "export"
        virtnet(netns, state, "export", KEPT, "--to", str(out))
        assert (out / "autostart" / f"{KEPT}.xml").resolve() == (out / f"{KEPT}.xml").resolve()
        lv.virsh("net-define", str(out / f"{KEPT}.xml"))
        assert lv.virsh("net-dumpxml", "--inactive", KEPT).stdout == original
        # nothing is overwritten
        twice = virtnet(netns, state, "export", KEPT, "--to", str(out), ok=False)
        assert twice.returncode == 1 and "exists: nothing is overwritten" in twice.stderr
        lv.virsh("net-undefine", KEPT)
        lv.virsh("net-destroy", RUNNING)
        lv.virsh("net-undefine", RUNNING)
