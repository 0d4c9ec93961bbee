"""What a long-lived virtnetd keeps, inside a network namespace of the test's own: the memory
probe bench/soak.py reads (SIGUSR2, only when asked for), and the device names of deleted
ports given out again (the soak found a daemon that kept every deleted port's name taken:
one more name held in memory per port, and new names without end)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtnet.daemon.__main__ import MEMORY_PROBE_ENV, TRACEMALLOC_ENV
from virtnet.host.netns import pids_in_netns
from tests.kit.daemon import VirtnetdProcess

pytestmark = pytest.mark.netns

NETWORK = "mem"
XML = (f"<network><name>{NETWORK}</name><forward mode='nat'/>"
       "<bridge name='vmem0' stp='off'/>"
       "<ip address='10.94.0.1' netmask='255.255.255.0'><dhcp>"
       "<range start='10.94.0.100' end='10.94.0.150'/></dhcp></ip></network>")
SIGUSR2_BIT = 1 << (signal.SIGUSR2 - 1)  # in /proc/PID/status signal masks
WAIT_S = 20.0


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return proc


@pytest.fixture
def place() -> Iterator[tuple[str, Path, list[VirtnetdProcess]]]:
    """A namespace and a traversable state root; daemons appended to the list are stopped."""
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")
    ns = "vnt-" + secrets.token_hex(4)
    root = Path(tempfile.mkdtemp(prefix="vnt-memory-"))
    root.chmod(0o755)  # dnsmasq, once it dropped root, reads its hosts files below
    daemons: list[VirtnetdProcess] = []
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield ns, root, daemons
    finally:
        for daemon in daemons:
            daemon.stop()
        for pid in pids_in_netns(ns):  # dnsmasq, or a daemon that did not stop
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sh("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(root, ignore_errors=True)


def caught_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigCgt line")


def wait_for(path: Path) -> dict:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {WAIT_S:g} s"
        time.sleep(0.02)
    return json.loads(path.read_text())


def test_the_memory_probe_answers_sigusr2_only_when_asked_for(place: tuple) -> None:
    ns, root, daemons = place
    plain = VirtnetdProcess(ns, root / "plain", env={MEMORY_PROBE_ENV: "", TRACEMALLOC_ENV: ""})
    daemons.append(plain)
    plain.start()
    assert not caught_signals(plain.pid) & SIGUSR2_BIT  # nothing set up
    plain.stop()

    prefix = root / "probe"
    probed = VirtnetdProcess(ns, root / "probed",
                             env={MEMORY_PROBE_ENV: str(prefix), TRACEMALLOC_ENV: ""})
    daemons.append(probed)
    probed.start()
    assert caught_signals(probed.pid) & SIGUSR2_BIT
    os.kill(probed.pid, signal.SIGUSR2)
    figures = wait_for(Path(f"{prefix}.1.json"))
    assert figures["n"] == 1 and figures["allocated_blocks"] > 0 and figures["gc_objects"] > 0
    assert figures["vmrss_kb"] > 0 and "MainThread" in figures["threads"]
    assert "traced_bytes" not in figures  # a plain probe does not trace
    with probed.client() as api:
        assert api.info()["pid"] == probed.pid  # still serving
    assert probed.stop() == 0
    assert wait_for(Path(f"{prefix}.2.json"))["n"] == 2  # the stop writes the last one


def test_a_deleted_ports_device_name_is_given_out_again(place: tuple) -> None:
    ns, root, daemons = place
    daemon = VirtnetdProcess(ns, root / "state")
    daemons.append(daemon)
    daemon.start()
    with daemon.client() as api:
        api.define(XML)
        api.start(NETWORK)
        # One port at a time: each may have the lowest name, so each must.
        names = []
        for i in range(6):
            port = api.create_port(NETWORK, f"52:54:00:94:00:{i + 1:02x}")
            names.append(port["device"])
            api.delete_port(NETWORK, port["uuid"])
        assert names == ["vnet0"] * 6
        # A name freed below others still held is the lowest free one again.
        first = api.create_port(NETWORK, "52:54:00:94:01:01")
        second = api.create_port(NETWORK, "52:54:00:94:01:02")
        assert (first["device"], second["device"]) == ("vnet0", "vnet1")
        api.delete_port(NETWORK, first["uuid"])
        third = api.create_port(NETWORK, "52:54:00:94:01:03")
        assert third["device"] == "vnet0"
        for port in (second, third):
            api.delete_port(NETWORK, port["uuid"])
        api.destroy(NETWORK)
