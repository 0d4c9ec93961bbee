"""systemd integration of virtnetd: the shipped units verify, and socket activation works.

- contrib/systemd/virtnetd.{service,socket} pass ``systemd-analyze verify`` (with ExecStart
  pointing at this installation's virtnetd), and a unit with a mistake does not (so the check
  can fail).
- ``systemd-socket-activate`` holds the socket and starts virtnetd (inside a test namespace)
  on the first connection, passing the listening socket (LISTEN_FDS); that first request is
  answered; readiness reaches NOTIFY_SOCKET as READY=1; on SIGTERM the daemon stops cleanly and
  leaves the socket to its owner.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtnet.host.netns import pids_in_netns
from tests.kit.daemon import script

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
SHIPPED_EXEC = "/usr/bin/virtnetd"


def installed_units(directory: Path, service_text: str | None = None) -> list[Path]:
    """The units as a package installs them, ExecStart at this installation's virtnetd."""
    virtnetd = script("virtnetd")
    if len(virtnetd) != 1:
        pytest.skip("the virtnetd console script is not installed next to this interpreter")
    text = service_text or (UNITS / "virtnetd.service").read_text()
    (directory / "virtnetd.service").write_text(text.replace(SHIPPED_EXEC, virtnetd[0]))
    shutil.copy(UNITS / "virtnetd.socket", directory / "virtnetd.socket")
    return [directory / "virtnetd.socket", directory / "virtnetd.service"]


def verify(units: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_shipped_units_verify(tmp_path: Path) -> None:
    service = (UNITS / "virtnetd.service").read_text()
    assert f"ExecStart={SHIPPED_EXEC}" in service
    assert "Type=notify" in service and "KillMode=process" in service
    socket_unit = (UNITS / "virtnetd.socket").read_text()
    assert "ListenStream=/run/virtnet/virtnetd.sock" in socket_unit
    assert "SocketMode=0660" in socket_unit and "SocketGroup=virtnet" in socket_unit
    assert (UNITS / "virtnet.sysusers.conf").read_text().splitlines()[-1] == "g virtnet -"
    good = verify(installed_units(tmp_path))
    assert good.returncode == 0, good.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    bad = verify(installed_units(broken, service.replace("KillMode=process", "KillMode=bogus")
                                 .replace(SHIPPED_EXEC, "/nonexistent/virtnetd")))
    assert bad.returncode != 0 and "not executable" in bad.stderr


@pytest.fixture
def namespace() -> Iterator[tuple[str, Path]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")
    if shutil.which("systemd-socket-activate") is None:
        pytest.skip("needs systemd-socket-activate")
    ns = "vnt-" + secrets.token_hex(4)
    root = Path(tempfile.mkdtemp(prefix="vnt-sd-"))
    root.chmod(0o755)
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        yield ns, root
    finally:
        for pid in pids_in_netns(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", ns], timeout=30, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.netns
def test_socket_activation_and_readiness(namespace: tuple[str, Path]) -> None:
    from virtnet.client import Client

    ns, root = namespace
    sock_path = root / "activated.sock"
    notify_path = root / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(60)
    activator = subprocess.Popen(
        ["systemd-socket-activate", "-l", str(sock_path), "-E", f"NOTIFY_SOCKET={notify_path}",
         *script("virtnetd"), "--netns", ns, "--state-dir", str(root / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(500):
            if sock_path.exists():
                break
            assert activator.poll() is None, activator.stdout.read() if activator.stdout else ""
            time.sleep(0.01)
        assert sock_path.exists()
        # Nothing runs yet: the first connection starts the daemon, and is answered by it.
        with Client(str(sock_path), timeout=60) as api:
            info = api.info()
        assert info["pid"] == activator.pid  # systemd-socket-activate execs the daemon
        assert info["netns"] == ns and info["socket"] == str(sock_path)
        message = notify.recv(4096).decode()
        assert "READY=1" in message.splitlines() and f"MAINPID={activator.pid}" in message
        activator.send_signal(signal.SIGTERM)
        assert activator.wait(30) == 0
        stopping = notify.recv(4096).decode()
        assert "STOPPING=1" in stopping
        # The socket belongs to whoever activated the daemon: the daemon leaves it there.
        assert sock_path.exists()
        assert not (root / "state" / "run" / "virtnetd.sock").exists()
    finally:
        if activator.poll() is None:
            activator.kill()
            activator.wait(30)
        notify.close()
