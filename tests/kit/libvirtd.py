"""A real libvirtd for differential tests, confined to a network namespace of its own.

    with LibvirtdInNetns() as lv:
        lv.virsh("net-define", path)          # -> subprocess.CompletedProcess

Only one libvirtd may run on a machine (pidfile /run/libvirtd.pid, socket under /run/libvirt),
so the context manager serialises users with an flock on /run/virtnet-test-libvirtd.lock, then
also waits for any libvirtd still named by the pidfile to go away. libvirtd runs inside a fresh
namespace ``vnt-lv-XXXX`` so that whatever it builds (bridges, dnsmasq, firewall rules) never
reaches the root namespace. It still shares the host's file system: on exit the helper removes
the definitions and runtime files of exactly the networks it defined, nothing else.

libvirtd loads every definition already under /etc/libvirt/qemu/networks at start. The package
ships one, ``default``: it is undefined inside the namespace so tests start from an empty list,
and its original file (and autostart link) is put back on exit, so the host ends as it began.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

LIBVIRTD = Path("/usr/sbin/libvirtd")
PIDFILE = Path("/run/libvirtd.pid")
LOCKFILE = Path("/run/virtnet-test-libvirtd.lock")
SOCKET = Path("/run/libvirt/libvirt-sock")
URI = "network:///system"

NETWORK_CONFIG_DIR = Path("/etc/libvirt/qemu/networks")
NETWORK_AUTOSTART_DIR = NETWORK_CONFIG_DIR / "autostart"
NETWORK_LIB_DIR = Path("/var/lib/libvirt/network")
NETWORK_RUN_DIR = Path("/run/libvirt/network")
DNSMASQ_LIB_DIR = Path("/var/lib/libvirt/dnsmasq")

DEFINED_RE = re.compile(r"^Network (.+) (?:defined|created) from ", re.MULTILINE)


class LibvirtdError(RuntimeError):
    """libvirtd could not be started or stopped cleanly."""


def libvirtd_unavailable_reason() -> str | None:
    """Why a LibvirtdInNetns cannot run here, or None if it can (for pytest skips)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, libvirtd)"
    if not LIBVIRTD.exists():
        return f"{LIBVIRTD} is not installed"
    for tool in ("virsh", "ip"):
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


def _read_pidfile() -> int | None:
    try:
        text = PIDFILE.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


class LibvirtdInNetns:
    """Start libvirtd inside a new namespace on enter; undo everything on exit.

    ``lock_timeout`` bounds the wait for another user's libvirtd; ``start_timeout`` the wait
    for the daemon's socket to answer.
    """

    def __init__(self, lock_timeout: float = 300.0, start_timeout: float = 30.0) -> None:
        self.lock_timeout = lock_timeout
        self.start_timeout = start_timeout
        self.netns = f"vnt-lv-{secrets.token_hex(2)}"
        self.pid: int | None = None
        self._lock_fd: int | None = None
        self._netns_created = False
        self._preexisting_configs: set[str] = set()
        self._created: set[str] = set()
        self._saved_default: tuple[bytes, bool] | None = None  # file bytes, had autostart link

    # --- public -------------------------------------------------------------------------

    def virsh(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``virsh -c network:///system ARGS`` against this libvirtd.

        Networks defined or created through this method are remembered and removed on exit.
        """
        proc = _run(["virsh", "-c", URI, *args], timeout=timeout)
        if proc.returncode == 0 and args and args[0] in ("net-define", "net-create"):
            for name in DEFINED_RE.findall(proc.stdout):
                self._created.add(name)
        return proc

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
        if name not in self.network_names() and name not in self._preexisting_configs:
            self._remove_state(name)
            self._created.discard(name)

    # --- context manager ----------------------------------------------------------------

    def __enter__(self) -> LibvirtdInNetns:
        self._take_lock()
        try:
            self._wait_for_other_libvirtd()
            self._preexisting_configs = {p.stem for p in NETWORK_CONFIG_DIR.glob("*.xml")}
            self._save_default()
            self._create_netns()
            self._start_libvirtd()
            self._clear_preloaded_networks()
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

    def _wait_for_other_libvirtd(self) -> None:
        # Another engineer's libvirtd (started without the lock) must finish first.
        deadline = time.monotonic() + self.lock_timeout
        while True:
            pid = _read_pidfile()
            if pid is None or not _pid_alive(pid) or _comm(pid) != "libvirtd":
                return
            if time.monotonic() > deadline:
                raise LibvirtdError(f"libvirtd pid {pid} ({PIDFILE}) is still running")
            time.sleep(1)

    def _save_default(self) -> None:
        config = NETWORK_CONFIG_DIR / "default.xml"
        if config.is_file():
            link = NETWORK_AUTOSTART_DIR / "default.xml"
            self._saved_default = (config.read_bytes(), link.is_symlink())

    def _create_netns(self) -> None:
        proc = _run(["ip", "netns", "add", self.netns])
        if proc.returncode != 0:
            raise LibvirtdError(f"ip netns add {self.netns}: {proc.stderr.strip()}")
        self._netns_created = True
        proc = _run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        if proc.returncode != 0:
            raise LibvirtdError(f"cannot set lo up in {self.netns}: {proc.stderr.strip()}")

    def _start_libvirtd(self) -> None:
        proc = _run(["ip", "netns", "exec", self.netns, str(LIBVIRTD), "-d"], timeout=60)
        if proc.returncode != 0:
            raise LibvirtdError(f"libvirtd -d failed: {(proc.stderr or proc.stdout).strip()}")
        ns_inode = os.stat(f"/run/netns/{self.netns}").st_ino
        deadline = time.monotonic() + self.start_timeout
        last_error = "no pidfile"
        while time.monotonic() < deadline:
            pid = _read_pidfile()
            if pid is not None and _comm(pid) == "libvirtd" and _netns_inode(pid) == ns_inode:
                self.pid = pid
                if SOCKET.exists():
                    check = _run(["virsh", "-c", URI, "net-list", "--all", "--name"])
                    if check.returncode == 0:
                        return
                    last_error = check.stderr.strip()
            time.sleep(0.2)
        raise LibvirtdError(f"libvirtd did not answer within {self.start_timeout:.0f}s: {last_error}")

    def _clear_preloaded_networks(self) -> None:
        # Whatever libvirtd loaded at start and autostarted now runs in our namespace: stop it,
        # so nothing (dnsmasq) survives us. 'default' is undefined to give an empty list.
        active = _run(["virsh", "-c", URI, "net-list", "--name"]).stdout.split()
        for name in active:
            self.virsh("net-destroy", name)
        if "default" in self.network_names():
            self.virsh("net-undefine", "default")

    # --- teardown -----------------------------------------------------------------------

    def _teardown(self) -> None:
        # Every step runs even if an earlier one failed, so one stuck virsh cannot leave the
        # namespace, the daemon or the lock behind; the first failure is reported at the end.
        steps = (self._undefine_created, self._stop_libvirtd, self._kill_leftovers,
                 self._delete_netns, self._remove_created_state, self._restore_default)
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
        if self.pid is None:
            return
        try:
            now = self.network_names()
        except (LibvirtdError, subprocess.TimeoutExpired):
            now = set()
        # Networks defined by other means than virsh() are ours too: nothing else runs here.
        self._created |= now - self._preexisting_configs
        for name in sorted(self._created):
            self.virsh("net-destroy", name, timeout=30)
            self.virsh("net-undefine", name, timeout=30)

    def _stop_libvirtd(self) -> None:
        pid = self.pid
        if pid is None:
            return
        # Kill only the libvirtd we started: same pid as the pidfile named, still libvirtd.
        if _read_pidfile() == pid and _comm(pid) == "libvirtd":
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

    def _remove_created_state(self) -> None:
        for name in self._created:
            if name not in self._preexisting_configs:
                self._remove_state(name)

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

    @staticmethod
    def _remove_state(name: str) -> None:
        if not name or "/" in name or name in (".", ".."):
            return
        candidates = [
            NETWORK_CONFIG_DIR / f"{name}.xml",
            NETWORK_AUTOSTART_DIR / f"{name}.xml",
            NETWORK_LIB_DIR / f"{name}.xml",
            NETWORK_RUN_DIR / f"{name}.xml",
            NETWORK_RUN_DIR / f"{name}.pid",
        ]
        candidates += DNSMASQ_LIB_DIR.glob(f"{glob_escape(name)}.*")
        for path in candidates:
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def _restore_default(self) -> None:
        if self._saved_default is None:
            return
        content, autostart = self._saved_default
        config = NETWORK_CONFIG_DIR / "default.xml"
        config.write_bytes(content)
        os.chmod(config, 0o600)
        link = NETWORK_AUTOSTART_DIR / "default.xml"
        if autostart and not link.is_symlink():
            link.symlink_to(config)
        self._saved_default = None


def glob_escape(text: str) -> str:
    """Escape glob metacharacters so a network name matches only itself."""
    return re.sub(r"([*?\[])", r"[\1]", text)
