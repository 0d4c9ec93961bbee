"""virtnet's on-disk state: persistent definitions, autostart links, runtime status records and
the process-wide lock that serialises every command that changes any of them.

Layout (see ``virtnet.paths.StatePaths``):
- ``networks_dir/NAME.xml``: the persistent definition, as ``net-dumpxml --inactive`` prints it.
- ``autostart_dir/NAME.xml``: a symlink to the definition when autostart is on (libvirt's way).
- ``status_dir/NAME.json``: present exactly while NAME is active. It records the live definition
  (which may differ from the persistent one after a redefine or a ``--live`` update), the
  actions that were applied (so ``net-destroy`` undoes exactly those), dnsmasq's pid, the
  connection count and when the network started. A transient network (``net-create``) has a
  status record and no definition.

Every file is written atomically (temp file in the same directory, fsync, rename, fsync of the
directory), so a crash or a concurrent reader never sees half a file; files are 0600 and
directories 0700 because definitions may carry secrets in dnsmasq options.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from virtnet.errors import VirtnetError
from virtnet.paths import StatePaths

FILE_MODE = 0o600
DIR_MODE = 0o700
PARENT_DIR_MODE = 0o755
STATUS_FORMAT_VERSION = 1
MAX_NAME_BYTES = 200  # NAME_MAX (255) less what the longest derived file name adds
DEFAULT_LOCK_TIMEOUT = 30.0  # seconds a command waits for another one before giving up


class StateError(VirtnetError):
    """The state directory is unusable: unreadable record, lock not obtained, bad name."""


def check_name(name: str) -> str:
    """Refuse names that cannot safely become a file name (the name is part of every path)."""
    if not name or "/" in name or "\0" in name or name in (".", "..") or name.startswith("."):
        raise StateError(f"network name {name!r} cannot be used as a file name")
    if len(name.encode(errors="surrogateescape")) > MAX_NAME_BYTES:
        raise StateError(f"network name '{name[:40]}...' is too long to be used as a file name "
                         f"(at most {MAX_NAME_BYTES} bytes)")
    return name


# --- atomic files ----------------------------------------------------------------------


def ensure_dir(path: Path, mode: int = DIR_MODE) -> Path:
    """Create ``path`` with ``mode`` (0700 by default), and missing parents with 0755.

    Parents stay traversable on purpose: dnsmasq drops root and must still reach its hosts
    files under the state directory; only the directories holding definitions and status are
    private.
    """
    missing = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        wanted = mode if directory == path else PARENT_DIR_MODE
        try:
            directory.mkdir(mode=wanted)
        except FileExistsError:
            continue  # another process made it between our check and mkdir
        os.chmod(directory, wanted)  # mkdir's mode is filtered by the umask
    return path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so that readers see either the old or the new content."""
    if isinstance(data, str):
        data = data.encode()
    ensure_dir(path.parent)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    fsync_dir(path.parent)


def remove_file(path: Path) -> bool:
    """Remove ``path``; a missing file is not an error. Returns whether something was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


# --- the lock --------------------------------------------------------------------------


class StateLock:
    """An exclusive lock over the whole state directory, held by one virtnet process at a time.

    ``flock`` on ``paths.lock_file``: the kernel releases it when the holder dies, so a crashed
    command never leaves the state locked. Re-entrant within one process (engine operations call
    each other), and thread-safe for a daemon serving several clients.
    """

    def __init__(self, path: Path, timeout: float = DEFAULT_LOCK_TIMEOUT, poll: float = 0.05):
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self) -> None:
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise StateError(f"timed out after {self.timeout:g}s waiting for the state lock")
        try:
            if self._depth == 0:
                self._fd = self._lock_file()
            self._depth += 1
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        if self._depth == 0:
            raise RuntimeError("state lock released more often than acquired")
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            # Closing the descriptor drops the flock; the pid in the file is only informative.
            os.close(self._fd)
            self._fd = None
        self._thread_lock.release()

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _lock_file(self) -> int:
        ensure_dir(self.path.parent, PARENT_DIR_MODE)  # the run directory, not a private one
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise StateError(f"cannot lock {self.path}: {exc.strerror}") from exc
                if time.monotonic() >= deadline:
                    holder = self._holder(fd)
                    raise StateError(
                        f"another virtnet command{holder} is still changing the state in "
                        f"{self.path.parent}; gave up after waiting {self.timeout:g}s"
                    )
                time.sleep(self.poll)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            text = os.pread(fd, 32, 0).decode().strip()
        except OSError:
            return ""
        return f" (pid {text})" if text.isdigit() else ""


# --- status records --------------------------------------------------------------------


@dataclass
class NetworkStatus:
    """What virtnet knows about an active network: written after a successful start."""

    name: str
    uuid: str
    bridge: str | None
    live_xml: str  # the definition the network runs with (net-dumpxml without --inactive)
    actions: list[dict[str, Any]] = field(default_factory=list)  # Action.to_dict(), apply order
    dnsmasq_pid: int | None = None
    connections: int = 0
    started_at: float = 0.0  # unix time, from the store's clock
    active: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = STATUS_FORMAT_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkStatus:
        version = data.get("version", STATUS_FORMAT_VERSION)
        if version != STATUS_FORMAT_VERSION:
            raise StateError(f"status record format {version} is not understood")
        return cls(
            name=str(data["name"]),
            uuid=str(data["uuid"]),
            bridge=data.get("bridge"),
            live_xml=str(data["live_xml"]),
            actions=list(data.get("actions", [])),
            dnsmasq_pid=data.get("dnsmasq_pid"),
            connections=int(data.get("connections", 0)),
            started_at=float(data.get("started_at", 0.0)),
            active=bool(data.get("active", True)),
        )


# --- the store -------------------------------------------------------------------------


class StateStore:
    """Reads and writes definitions, autostart links and status records under ``paths``."""

    def __init__(
        self,
        paths: StatePaths,
        clock: Callable[[], float] = time.time,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self.paths = paths
        self.clock = clock
        self.lock = StateLock(paths.lock_file, timeout=lock_timeout)

    def now(self) -> float:
        return self.clock()

    # --- definitions ---------------------------------------------------------------------

    def defined_names(self) -> list[str]:
        return _names_in(self.paths.networks_dir, ".xml")

    def is_defined(self, name: str) -> bool:
        return self.paths.definition(check_name(name)).is_file()

    def read_definition(self, name: str) -> bytes | None:
        try:
            return self.paths.definition(check_name(name)).read_bytes()
        except FileNotFoundError:
            return None

    def write_definition(self, name: str, xml: str) -> Path:
        path = self.paths.definition(check_name(name))
        atomic_write(path, xml)
        return path

    def delete_definition(self, name: str) -> None:
        """Remove the definition and its autostart link (libvirt drops both on undefine)."""
        self.set_autostart(name, False)
        remove_file(self.paths.definition(check_name(name)))

    # --- autostart -----------------------------------------------------------------------

    def is_autostart(self, name: str) -> bool:
        link = self.paths.autostart_link(check_name(name))
        # A dangling link (definition gone) does not count: it can never start anything.
        return link.is_symlink() and link.exists()

    def set_autostart(self, name: str, enabled: bool) -> None:
        link = self.paths.autostart_link(check_name(name))
        if not enabled:
            remove_file(link)
            return
        target = self.paths.definition(name).absolute()
        if link.is_symlink() and os.readlink(link) == str(target):
            return
        ensure_dir(link.parent)
        temp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        os.symlink(target, temp)
        os.replace(temp, link)
        fsync_dir(link.parent)

    def autostart_names(self) -> list[str]:
        return [name for name in _names_in(self.paths.autostart_dir, ".xml")
                if self.is_autostart(name)]

    # --- runtime status ------------------------------------------------------------------

    def status_names(self) -> list[str]:
        return _names_in(self.paths.status_dir, ".json")

    def read_status(self, name: str) -> NetworkStatus | None:
        path = self.paths.status(check_name(name))
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return NetworkStatus.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"{path}: unreadable status record: {exc}") from exc

    def write_status(self, status: NetworkStatus) -> None:
        path = self.paths.status(check_name(status.name))
        atomic_write(path, json.dumps(status.to_dict(), indent=2) + "\n")

    def delete_status(self, name: str) -> None:
        remove_file(self.paths.status(check_name(name)))

    def all_names(self) -> list[str]:
        """Every known network: defined ones and transient active ones, sorted like virsh
        (case-insensitively)."""
        names = set(self.defined_names()) | set(self.status_names())
        return sorted(names, key=lambda name: (name.lower(), name))


def _names_in(directory: Path, suffix: str) -> list[str]:
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(
        entry[: -len(suffix)]
        for entry in entries
        if entry.endswith(suffix) and not entry.startswith(".")
        and (directory / entry).is_file()
    )

