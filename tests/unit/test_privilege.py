"""virtnet.service.privilege, and the CLI as an unprivileged user.

Read-only commands work as ``nobody`` (run through ``setpriv``); commands that change the host
refuse without CAP_NET_ADMIN with one message, before touching anything (the state directory
is compared byte for byte, with modes and times). State files are created 0600 and their
private directories 0700. These tests need root to switch to ``nobody``; they skip otherwise.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtnet.errors import HostError
from virtnet.service.privilege import (
    CAP_NET_ADMIN,
    check_dnsmasq_dir,
    effective_capabilities,
    has_net_admin,
    untraversable_ancestor,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "default.xml"
RESERVED = EXAMPLE.read_text().replace(
    "</dhcp>", "  <host mac='52:54:00:00:00:11' name='g1' ip='192.168.122.11'/>\n    </dhcp>")
TIMEOUT_S = 60.0


# --- pure parts ------------------------------------------------------------------------------


def status_with(cap_eff: int) -> str:
    return f"Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff:016x}\nCapBnd:\t0\n"


def test_cap_eff_bit_12_decides() -> None:
    assert effective_capabilities(status_with(0x1F)) == 0x1F
    assert has_net_admin(status_with(1 << CAP_NET_ADMIN)) is True
    assert has_net_admin(status_with(0x000001FFFFFFFFFF & ~(1 << CAP_NET_ADMIN))) is False
    assert has_net_admin(status_with(0)) is False


def test_missing_cap_eff_line_is_an_error() -> None:
    with pytest.raises(HostError, match="CapEff"):
        effective_capabilities("Name:\tx\n")


def test_untraversable_ancestor(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    closed = open_dir / "closed"
    inner = closed / "inner"
    inner.mkdir(parents=True)
    tmp_path.chmod(0o755)
    open_dir.chmod(0o755)
    closed.chmod(0o700)
    # tmp_path's own parents (pytest's private directory) may be closed too: look below it
    assert untraversable_ancestor(inner) in (closed, *tmp_path.parents)
    closed.chmod(0o711)
    assert untraversable_ancestor(inner) in (None, *tmp_path.parents)


def test_dnsmasq_dir_check_only_matters_with_reservations(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    check_dnsmasq_dir("n", closed / "dnsmasq", has_hosts=False)  # nothing to re-read
    with pytest.raises(HostError, match="cannot be entered by other users"):
        check_dnsmasq_dir("n", closed / "dnsmasq", has_hosts=True)


# --- the CLI as nobody -----------------------------------------------------------------------


def _can_switch_user() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run commands as nobody"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux)"
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return "no user nobody"
    return None


needs_root = pytest.mark.skipif(_can_switch_user() is not None,
                                reason=_can_switch_user() or "")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory nobody owns and every parent of which nobody can enter (pytest's tmp_path
    is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="vnt-priv-"))
    try:
        root.chmod(0o755)
        (root / "default.xml").write_text(EXAMPLE.read_text())
        (root / "reserved.xml").write_text(RESERVED)
        nobody = pwd.getpwnam("nobody")
        for path in (root, root / "default.xml", root / "reserved.xml"):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            sys.executable, "-m", "virtnet.face.cli", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTNET_")}
    env["HOME"] = str(cwd)
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT_S,
                          env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every path under ROOT with its mode, modification time and content."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if path.is_file() else b""
        found[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, content)
    return found


@needs_root
def test_read_only_commands_work_as_nobody(workdir: Path) -> None:
    assert "valid" in ok(as_nobody(workdir, "validate", "default.xml"))
    assert "<name>default</name>" in ok(as_nobody(workdir, "format", "default.xml"))
    assert "create bridge virbr0" in ok(as_nobody(workdir, "plan", "default.xml"))
    assert "dhcp-range=" in ok(as_nobody(workdir, "dnsmasq-conf", "default.xml"))
    state = ("--state-dir", str(workdir / "state"))
    # a definition nobody made is in a state directory nobody can read
    ok(as_nobody(workdir, *state, "net-define", "default.xml"))
    assert "default" in ok(as_nobody(workdir, *state, "net-list", "--all"))
    assert "inactive" in ok(as_nobody(workdir, *state, "net-list", "--all"))
    assert "virbr0" in ok(as_nobody(workdir, *state, "net-info", "default"))
    assert "<name>default</name>" in ok(as_nobody(workdir, *state, "net-dumpxml", "default"))
    assert "create bridge virbr0" in ok(as_nobody(workdir, *state, "plan", "default"))


@needs_root
@pytest.mark.parametrize("args", [
    ("net-start", "default"),
    ("net-destroy", "default"),
    ("net-create", "reserved.xml"),
    ("port-create", "default", "--mac", "52:54:00:00:00:22"),
    ("port-delete", "default", "52:54:00:00:00:22"),
    ("net-update", "default", "add", "ip-dhcp-host",
     "<host mac='52:54:00:00:00:33' ip='192.168.122.33'/>", "--live"),
    ("net-forward-add", "default", "--proto", "tcp", "--port", "8080",
     "--to", "192.168.122.10", "--live"),
    ("net-forward-del", "default", "--proto", "tcp", "--port", "8080", "--live"),
])
def test_host_changing_commands_refuse_before_anything(workdir: Path,
                                                       args: tuple[str, ...]) -> None:
    state = ("--state-dir", str(workdir / "state"))
    ok(as_nobody(workdir, *state, "net-define", "default.xml"))
    before = tree(workdir)
    proc = as_nobody(workdir, *state, *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "needs CAP_NET_ADMIN" in proc.stderr, proc.stderr
    assert proc.stderr.count("CAP_NET_ADMIN") == 1  # one message, not one per step
    assert tree(workdir) == before  # not a file touched, not even the lock


@needs_root
def test_state_files_are_private(workdir: Path) -> None:
    state = workdir / "state"
    ok(as_nobody(workdir, "--state-dir", str(state), "net-define", "default.xml"))
    ok(as_nobody(workdir, "--state-dir", str(state), "net-autostart", "default"))
    definition = state / "etc" / "networks" / "default.xml"
    assert stat.S_IMODE(definition.stat().st_mode) == 0o600
    assert stat.S_IMODE(definition.parent.stat().st_mode) == 0o700
    lock = next(state.rglob("virtnet.lock"))
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    # parents stay traversable: dnsmasq, once it dropped root, must reach its hosts files
    assert stat.S_IMODE(state.stat().st_mode) == 0o755


@needs_root
def test_commands_that_only_write_the_state_work_as_nobody(workdir: Path) -> None:
    """Like net-define: changing a definition (not the host) needs no privilege, so an
    inactive network's net-apply, --config updates and forwards, autostart and undefine
    work as nobody in nobody's state directory."""
    state = ("--state-dir", str(workdir / "state"))
    ok(as_nobody(workdir, *state, "net-define", "default.xml"))
    forward = ("--proto", "tcp", "--port", "8080", "--to", "192.168.122.10")
    ok(as_nobody(workdir, *state, "net-forward-add", "default", *forward))  # current: config
    ok(as_nobody(workdir, *state, "net-forward-add", "default", "--proto", "udp", "--port",
                 "53", "--to", "192.168.122.11", "--config"))
    listed = ok(as_nobody(workdir, *state, "net-forward-list", "default", "--inactive"))
    assert "8080" in listed and "192.168.122.11" in listed
    ok(as_nobody(workdir, *state, "net-forward-del", "default", "--proto", "tcp", "--port",
                 "8080"))
    ok(as_nobody(workdir, *state, "net-update", "default", "add", "ip-dhcp-host",
                 "<host mac='52:54:00:00:00:33' ip='192.168.122.33'/>", "--config"))
    uuid = ok(as_nobody(workdir, *state, "net-uuid", "default")).strip()
    applied_file = workdir / "applied.xml"
    applied_file.write_text(RESERVED.replace("</name>", f"</name>\n  <uuid>{uuid}</uuid>", 1))
    applied = ok(as_nobody(workdir, *state, "net-apply", str(applied_file)))
    assert "it is not running" in applied
    assert "52:54:00:00:00:11" in ok(as_nobody(workdir, *state, "net-dumpxml", "default"))
    ok(as_nobody(workdir, *state, "net-autostart", "default"))
    ok(as_nobody(workdir, *state, "net-undefine", "default"))
    assert "default" not in ok(as_nobody(workdir, *state, "net-list", "--all"))
