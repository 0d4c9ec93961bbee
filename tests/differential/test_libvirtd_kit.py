"""The test kit's libvirtd runs beside a libvirtd of the host's, and leaves it as it was.

A packaged libvirtd uses the host's /run/libvirtd.pid, /run/libvirt and /etc/libvirt. Here a
stand-in for it runs with exactly those paths (confined to a network namespace of this test, as
every daemon of ours is); the kit's libvirtd is then started and used, and afterwards the
stand-in still answers with the same networks, its pidfile still names it, and the host's
network definitions are the same files as before.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.kit.libvirtd import (
    LIBVIRTD,
    NETWORK_CONFIG_DIR,
    LibvirtdInNetns,
    libvirtd_unavailable_reason,
)

_UNAVAILABLE = libvirtd_unavailable_reason()
pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.netns,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"libvirtd kit: {_UNAVAILABLE}"),
]

HOST_PIDFILE = Path("/run/libvirtd.pid")
HOST_URI = "network:///system"


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _alive_libvirtd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "libvirtd"
    except OSError:
        return False


def _host_pid() -> int | None:
    try:
        text = HOST_PIDFILE.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and _alive_libvirtd(int(text)) else None


def _definitions() -> dict[str, bytes]:
    if not NETWORK_CONFIG_DIR.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in NETWORK_CONFIG_DIR.glob("*.xml")}


def _snapshot() -> dict[str, tuple[str, bytes | str, int]]:
    """The host's network definitions and autostart links, exactly (kind, content, mode)."""
    found: dict[str, tuple[str, bytes | str, int]] = {}
    for directory in (NETWORK_CONFIG_DIR, NETWORK_CONFIG_DIR / "autostart"):
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if path.is_symlink():
                found[str(path)] = ("link", os.readlink(path), 0)
            elif path.is_file():
                found[str(path)] = ("file", path.read_bytes(), path.stat().st_mode & 0o7777)
    return found


def _restore(snapshot: dict[str, tuple[str, bytes | str, int]]) -> None:
    """Put the host's definitions back as they were: the stand-in, like any libvirtd, rewrites
    the definitions it loads (a header comment, a uuid, a MAC)."""
    for path in set(_snapshot()) - set(snapshot):
        os.unlink(path)
    for path, (kind, content, mode) in snapshot.items():
        target = Path(path)
        if kind == "link":
            if not target.is_symlink() or os.readlink(target) != content:
                target.unlink(missing_ok=True)
                os.symlink(content, target)
            continue
        if target.is_symlink() or not target.is_file() or target.read_bytes() != content:
            target.unlink(missing_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as out:
                out.write(content)  # type: ignore[arg-type]
        os.chmod(target, mode)


def test_kit_libvirtd_runs_beside_the_hosts(tmp_path: Path) -> None:
    if _host_pid() is not None:
        pytest.skip("a libvirtd of the host's runs here: the stand-in would be a second one")
    netns = f"vnt-hl-{secrets.token_hex(2)}"
    assert _run(["ip", "netns", "add", netns]).returncode == 0
    stand_in: int | None = None
    original = _snapshot()
    try:
        started = _run(["ip", "netns", "exec", netns, str(LIBVIRTD), "--daemon"], timeout=60)
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and stand_in is None:
            stand_in = _host_pid()
            time.sleep(0.2)
        assert stand_in is not None, "the stand-in libvirtd did not write /run/libvirtd.pid"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            host_list = _run(["virsh", "-c", HOST_URI, "net-list", "--all", "--name"])
            if host_list.returncode == 0:
                break
            time.sleep(0.2)
        assert host_list.returncode == 0, host_list.stderr
        before = _definitions()  # as the host's daemon keeps them

        definition = tmp_path / "kitnet.xml"
        definition.write_text("<network><name>vnt-kit</name><bridge name='vntkit0'/>"
                              "<ip address='10.250.7.1' netmask='255.255.255.0'/></network>")
        with LibvirtdInNetns() as lv:
            assert lv.pid != stand_in
            assert lv.network_names() == set()  # none of the host's definitions is loaded
            assert lv.virsh("net-define", str(definition)).returncode == 0
            assert lv.virsh("net-start", "vnt-kit").returncode == 0
            conf = lv.host_path("/run/libvirt/network/vnt-kit.xml")
            assert conf.is_file() and str(conf).startswith(str(lv.root))
            # the host's daemon does not see the kit's network
            seen = _run(["virsh", "-c", HOST_URI, "net-list", "--all", "--name"])
            assert "vnt-kit" not in seen.stdout.split()

        assert _host_pid() == stand_in
        after_list = _run(["virsh", "-c", HOST_URI, "net-list", "--all", "--name"])
        assert after_list.returncode == 0 and after_list.stdout == host_list.stdout
        assert _definitions() == before
        assert not Path("/run/libvirt/network/vnt-kit.xml").exists()
    finally:
        if stand_in is not None and _alive_libvirtd(stand_in):
            # what it autostarted from the host's definitions runs in our namespace: stop it
            # the orderly way, so that no status of it stays in the host's /run/libvirt
            active = _run(["virsh", "-c", HOST_URI, "net-list", "--name"]).stdout.split()
            for name in active:
                _run(["virsh", "-c", HOST_URI, "net-destroy", name])
            os.kill(stand_in, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _alive_libvirtd(stand_in) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive_libvirtd(stand_in):
                os.kill(stand_in, signal.SIGKILL)
        for pid in _run(["ip", "netns", "pids", netns]).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        _run(["ip", "netns", "delete", netns])
        _restore(original)
    assert _snapshot() == original
