"""A real libvirtd for differential tests, confined to namespaces of its own.

    with LibvirtdInNetns() as lv:
        lv.virsh("net-define", path)          # -> subprocess.CompletedProcess

libvirtd runs inside a fresh network namespace ``vnt-lv-XXXX`` (so whatever it builds —
bridges, dnsmasq, firewall rules — never reaches the root namespace) and inside a private mount
namespace in which /run, /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt
are directories of our own under a temporary folder. So it never meets the host's libvirt: a
packaged libvirtd may run on the host meanwhile, its definitions are neither loaded nor touched
(the copy of /etc/libvirt holds no network), and its pidfile and socket are not ours. virsh
reaches ours through the socket in our /run (``?socket=`` in the URI); what libvirtd writes is
readable from outside through :meth:`LibvirtdInNetns.host_path`. On exit the daemon is stopped
by pid, the namespace deleted and the folder removed.

Users of this helper are still serialised with an flock on /run/virtnet-test-libvirtd.lock: the
differential tests are heavy, and two at once would only compete for the machine.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

LIBVIRTD = Path("/usr/sbin/libvirtd")
LOCKFILE = Path("/run/virtnet-test-libvirtd.lock")

# The host's own libvirt directories, which tests check we never wrote to.
NETWORK_CONFIG_DIR = Path("/etc/libvirt/qemu/networks")
NETWORK_RUN_DIR = Path("/run/libvirt/network")

# Directories libvirtd sees replaced by ours (mount point -> name of our folder); /etc/libvirt
# is a copy of the host's configuration without network definitions.
PRIVATE_MOUNTS = {
    "/run": "run",
    "/etc/libvirt": "etc",
    "/var/lib/libvirt": "lib",
    "/var/cache/libvirt": "cache",
    "/var/log/libvirt": "log",
}

DEFINED_RE = re.compile(r"^Network (.+) (?:defined|created) from ", re.MULTILINE)


class LibvirtdError(RuntimeError):
    """libvirtd could not be started or stopped cleanly."""


def libvirtd_unavailable_reason() -> str | None:
    """Why a LibvirtdInNetns cannot run here, or None if it can (for pytest skips)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, libvirtd)"
    if not LIBVIRTD.exists():
        return f"{LIBVIRTD} is not installed"
    for tool in ("virsh", "ip", "unshare"):
        if not any((Path(d) / tool).exists() for d in os.environ.get("PATH", "").split(":")):
            return f"{tool} is not installed"
    return None


def _run(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


# Run by /bin/sh inside the new namespaces: our folders over the host's directories, then
# libvirtd. "$1" is our folder; each mount point that does not exist on the host is skipped
# (nothing is created on the host's file system).
MOUNT_AND_START = """
set -e
mount --make-rprivate /
for pair in {pairs}; do
    point=${{pair%%=*}}; name=${{pair#*=}}
    if [ -d "$point" ]; then mount --bind "$1/$name" "$point"; fi
done
mkdir -p /run/libvirt
exec {libvirtd} --daemon --pid-file /run/libvirtd.pid
"""


class LibvirtdInNetns:
    """Start libvirtd inside new namespaces on enter; undo everything on exit.

    ``lock_timeout`` bounds the wait for another test's libvirtd; ``start_timeout`` the wait
    for the daemon's socket to answer.
    """

    def __init__(self, lock_timeout: float = 300.0, start_timeout: float = 30.0) -> None:
        self.lock_timeout = lock_timeout
        self.start_timeout = start_timeout
        self.netns = f"vnt-lv-{secrets.token_hex(2)}"
        self.pid: int | None = None
        self.root: Path | None = None  # our folder: run/, etc/, lib/, cache/, log/
        self._lock_fd: int | None = None
        self._netns_created = False
        self._created: set[str] = set()

    # --- public -------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The connection URI of this libvirtd, for a virsh run by hand."""
        if self.root is None:
            raise LibvirtdError("libvirtd is not running")
        return f"network:///system?socket={self.root}/run/libvirt/libvirt-sock"

    def virsh_argv(self, *args: str) -> list[str]:
        """The argv of ``virsh ARGS`` against this libvirtd."""
        return ["virsh", "-c", self.uri, *args]

    def virsh(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``virsh ARGS`` against this libvirtd.

        Networks defined or created through this method are remembered and removed on exit.
        """
        proc = _run(self.virsh_argv(*args), timeout=timeout)
        if proc.returncode == 0 and args and args[0] in ("net-define", "net-create"):
            for name in DEFINED_RE.findall(proc.stdout):
                self._created.add(name)
        return proc

    def host_path(self, path: Path | str) -> Path:
        """Where a file libvirtd sees at PATH is on the host (under our folder)."""
        if self.root is None:
            raise LibvirtdError("libvirtd is not running")
        text = str(path)
        for point, name in sorted(PRIVATE_MOUNTS.items(), key=lambda item: -len(item[0])):
            if text == point or text.startswith(point + "/"):
                return self.root / name / text[len(point):].lstrip("/")
        return Path(text)  # not one of libvirtd's private directories: the host's own file

    def network_names(self) -> set[str]:
        """Names of all networks this libvirtd knows (active or not)."""
        proc = self.virsh("net-list", "--all", "--name")
        if proc.returncode != 0:
            raise LibvirtdError(f"virsh net-list failed: {proc.stderr.strip()}")
        return {line.strip() for line in proc.stdout.splitlines() if line.strip()}

    def forget(self, name: str) -> None:
        """Undefine (and destroy) one network now, e.g. between test cases."""
        self.virsh("net-destroy", name)
        self.virsh("net-undefine", name)
        if name not in self.network_names():
            self._created.discard(name)

    # --- context manager ----------------------------------------------------------------

    def __enter__(self) -> LibvirtdInNetns:
        self._take_lock()
        try:
            self._make_root()
            self._create_netns()
            self._start_libvirtd()
        except BaseException as failure:
            try:
                self._teardown()
            except LibvirtdError as cleanup:
                failure.add_note(f"cleanup after the failed start also failed: {cleanup}")
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._teardown()

    # --- start --------------------------------------------------------------------------

    def _take_lock(self) -> None:
        fd = os.open(LOCKFILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise LibvirtdError(
                        f"{LOCKFILE} still held by another test after {self.lock_timeout:.0f}s"
                    ) from None
                time.sleep(0.5)
        self._lock_fd = fd

    def _make_root(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vnt-lv-"))
        self.root.chmod(0o755)
        for name in PRIVATE_MOUNTS.values():
            (self.root / name).mkdir(mode=0o755)
        etc = self.root / "etc"
        host_etc = Path("/etc/libvirt")
        if host_etc.is_dir():
            shutil.copytree(host_etc, etc, symlinks=True, dirs_exist_ok=True)
        # No network of the host's (the package's 'default' among them) is loaded.
        networks = etc / "qemu" / "networks"
        if networks.is_dir():
            shutil.rmtree(networks)
        (networks / "autostart").mkdir(parents=True)
        for sub in ("dnsmasq", "network"):
            (self.root / "lib" / sub).mkdir()

    def _create_netns(self) -> None:
        proc = _run(["ip", "netns", "add", self.netns])
        if proc.returncode != 0:
            raise LibvirtdError(f"ip netns add {self.netns}: {proc.stderr.strip()}")
        self._netns_created = True
        proc = _run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        if proc.returncode != 0:
            raise LibvirtdError(f"cannot set lo up in {self.netns}: {proc.stderr.strip()}")

    def _start_libvirtd(self) -> None:
        assert self.root is not None
        pairs = " ".join(f"{point}={name}" for point, name in PRIVATE_MOUNTS.items())
        script = MOUNT_AND_START.format(pairs=pairs, libvirtd=LIBVIRTD)
        proc = _run(["ip", "netns", "exec", self.netns, "unshare", "--mount",
                     "--propagation", "private", "/bin/sh", "-c", script, "sh",
                     str(self.root)], timeout=60)
        if proc.returncode != 0:
            raise LibvirtdError(f"libvirtd --daemon failed: {(proc.stderr or proc.stdout).strip()}")
        pidfile = self.root / "run" / "libvirtd.pid"
        socket = self.root / "run" / "libvirt" / "libvirt-sock"
        ns_inode = os.stat(f"/run/netns/{self.netns}").st_ino
        deadline = time.monotonic() + self.start_timeout
        last_error = "no pidfile"
        while time.monotonic() < deadline:
            pid = _read_pid(pidfile)
            if pid is not None and _comm(pid) == "libvirtd" and _netns_inode(pid) == ns_inode:
                self.pid = pid
                if socket.exists():
                    check = _run(self.virsh_argv("net-list", "--all", "--name"))
                    if check.returncode == 0:
                        return
                    last_error = check.stderr.strip()
            time.sleep(0.2)
        raise LibvirtdError(f"libvirtd did not answer within {self.start_timeout:.0f}s: {last_error}")

    # --- teardown -----------------------------------------------------------------------

    def _teardown(self) -> None:
        # Every step runs even if an earlier one failed, so one stuck virsh cannot leave the
        # namespace, the daemon or the lock behind; the first failure is reported at the end.
        steps = (self._undefine_created, self._stop_libvirtd, self._kill_leftovers,
                 self._delete_netns, self._remove_root)
        failures: list[BaseException] = []
        try:
            for step in steps:
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - collected and re-raised below
                    failures.append(exc)
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None
        if failures:
            raise LibvirtdError(f"libvirtd cleanup incomplete: {failures[0]!r}") from failures[0]

    def _undefine_created(self) -> None:
        # Stop what runs (dnsmasq) the orderly way first; the folder goes with the rest.
        if self.pid is None:
            return
        try:
            names = self.network_names()
        except (LibvirtdError, subprocess.TimeoutExpired):
            names = set()
        for name in sorted(names | self._created):
            self.virsh("net-destroy", name, timeout=30)
            self.virsh("net-undefine", name, timeout=30)

    def _stop_libvirtd(self) -> None:
        pid = self.pid
        if pid is None:
            return
        # Kill only the libvirtd we started: the pid our pidfile named, still libvirtd.
        if _comm(pid) == "libvirtd":
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _pid_alive(pid) and _comm(pid) == "libvirtd" and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid) and _comm(pid) == "libvirtd":
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.2)
        self.pid = None

    def _delete_netns(self) -> None:
        if self._netns_created:
            proc = _run(["ip", "netns", "delete", self.netns])
            if proc.returncode != 0:
                raise LibvirtdError(f"ip netns delete {self.netns}: {proc.stderr.strip()}")
            self._netns_created = False

    def _kill_leftovers(self) -> None:
        # Processes still inside our namespace were started by our libvirtd (dnsmasq).
        if not self._netns_created:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = [int(p) for p in _run(["ip", "netns", "pids", self.netns]).stdout.split()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
                time.sleep(0.1)

    def _remove_root(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def _read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
