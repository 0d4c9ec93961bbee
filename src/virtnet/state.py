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
- ``status_dir/NAME.journal``: the status of a start in progress, one line per step begun and
  per step applied (see :class:`StatusJournal`); left behind by an interrupted start, it reads
  back as an inactive status listing the steps to undo, the one cut halfway included.

Every file is written atomically (temp file in the same directory, then rename), so a concurrent
reader or a killed writer never sees half a file. Persistent files (definitions, autostart links)
are also fsynced, file and directory, so they survive a power loss. Runtime records (status,
ports) are not: they live in the run directory, which does not outlive a reboot anyway (tmpfs
on real hosts), and the rename alone makes them safe against a crash of virtnet, which is what
an interrupted start must survive. Up to 13 status writes per start made those fsyncs the
largest cost of ``net-start`` (24-38 ms where the run directory is on ext4).
Files are 0600 and directories 0700 because definitions may carry secrets in dnsmasq options.

Names become paths only through :mod:`virtnet.ids` (checked, joined so that they cannot leave
their directory); records are read without following a symlink, and a file name found in a
directory listing that is not a valid network name is ignored (reported to ``warn`` when the
caller gives one), as is a symlink where a definition or record is expected.

Every function here that touches a file raises :class:`virtnet.errors.StorageError` (naming the
file and the errno) where the OSError would have escaped: a full, read-only or unreadable state
directory is one clear error, and a write that fails leaves the old file and no temp file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from virtnet.errors import Busy, StorageError, VirtnetError, storage_errors
from virtnet.ids import (
    IdentifierError,
    check_network_name,
    ensure_real_dir,
    network_file,
    network_name_problem,
    read_state_file,
)
from virtnet.paths import StatePaths

FILE_MODE = 0o600
DIR_MODE = 0o700
PARENT_DIR_MODE = 0o755
STATUS_FORMAT_VERSION = 1
DEFAULT_LOCK_TIMEOUT = 30.0  # seconds a command waits for another one before giving up
JOURNAL_SUFFIX = ".journal"


class StateError(VirtnetError):
    """The state directory is unusable: unreadable record, lock not obtained."""


class RecordError(StateError):
    """One file of the state cannot be read or makes no sense (``path`` names it)."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


# The one validator of names that become paths (virtnet.ids); kept under its old name.
check_name = check_network_name

Warn = Callable[[str], None]


# --- atomic files ----------------------------------------------------------------------


def ensure_dir(path: Path, mode: int = DIR_MODE) -> Path:
    """Create ``path`` with ``mode`` (0700 by default), and missing parents with 0755.

    Parents stay traversable on purpose: dnsmasq drops root and must still reach its hosts
    files under the state directory; only the directories holding definitions and status are
    private.
    """
    ensure_real_dir(path)
    missing = []
    current = path
    with storage_errors("create directory", path):
        while not current.is_dir():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
    for directory in reversed(missing):
        wanted = mode if directory == path else PARENT_DIR_MODE
        with storage_errors("create directory", directory):
            try:
                directory.mkdir(mode=wanted)
            except FileExistsError:
                continue  # another process made it between our check and mkdir
            os.chmod(directory, wanted)  # mkdir's mode is filtered by the umask
    return path


def fsync_dir(path: Path) -> None:
    with storage_errors("sync", path):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_file(path: Path) -> bytes | None:
    """PATH's content, or None when there is no such file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError.of(exc, "read", path) from exc


def list_dir(directory: Path) -> list[str]:
    """DIRECTORY's entries (none if it does not exist)."""
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError.of(exc, "read", directory) from exc


def path_exists(path: Path) -> bool:
    """Whether PATH exists (a dangling symlink counts); a directory on the way that cannot
    be searched is an error, not a no."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise StorageError.of(exc, "read", path) from exc
    return True


def atomic_write(path: Path, data: bytes | str, mode: int = FILE_MODE, *,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers see either the old or the new content.

    ``durable``: also fsync the file and its directory, so the new content survives a power
    loss. Runtime records in the run directory pass False (see the module's docstring): the
    rename alone keeps them whole when virtnet itself is killed.
    """
    if isinstance(data, str):
        data = data.encode()
    crash_stage = _crash_in_write_stage()
    ensure_dir(path.parent)
    with storage_errors("write", path):
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp")
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as handle:
                if crash_stage is not None:
                    _crash_while_writing(crash_stage, handle, data)
                handle.write(data)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            if crash_stage == "before-rename":
                os._exit(CRASH_EXIT_STATUS)
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise
    if crash_stage == "after-rename":
        os._exit(CRASH_EXIT_STATUS)
    if durable:
        fsync_dir(path.parent)


# Crash tests (VIRTNET_CRASH_IN_WRITE=stage): the first atomic write of the process dies, as
# if killed, at that stage. "empty": the temp file exists, nothing written; "partial": half
# the data written; "before-rename": all written (and fsynced if durable), not renamed;
# "after-rename": renamed, directory not fsynced.
CRASH_IN_WRITE_ENV = "VIRTNET_CRASH_IN_WRITE"
CRASH_IN_WRITE_STAGES = ("empty", "partial", "before-rename", "after-rename")
CRASH_EXIT_STATUS = 137  # = virtnet.plan.CRASH_EXIT_STATUS


def _crash_in_write_stage() -> str | None:
    stage = os.environ.get(CRASH_IN_WRITE_ENV)
    if not stage:
        return None
    if stage not in CRASH_IN_WRITE_STAGES:
        raise StateError(f"{CRASH_IN_WRITE_ENV} must be one of {', '.join(CRASH_IN_WRITE_STAGES)}")
    return stage


def _crash_while_writing(stage: str, handle: Any, data: bytes) -> None:
    if stage == "empty":
        os._exit(CRASH_EXIT_STATUS)
    if stage == "partial":
        handle.write(data[: len(data) // 2])
        handle.flush()
        os._exit(CRASH_EXIT_STATUS)


def remove_file(path: Path, *, durable: bool = True) -> bool:
    """Remove ``path``; a missing file is not an error. Returns whether something was removed.
    ``durable``: fsync the directory so the removal survives a power loss."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        # A read-only file system refuses even to remove what is not there (EROFS before
        # ENOENT): that is still nothing to remove.
        if not path_exists(path):
            return False
        raise StorageError.of(exc, "remove", path) from exc
    if durable:
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
            raise Busy(f"timed out after {self.timeout:g}s waiting for the state lock")
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
        fd = self._open()
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
                    raise Busy(
                        f"another virtnet command{holder} is still changing the state in "
                        f"{self.path.parent}; gave up after waiting {self.timeout:g}s"
                    )
                time.sleep(self.poll)
            # Only informative (who holds the lock): written over the old pid, then cut to
            # length, so that a full disk (the old content's block is reused) or a read-only
            # one never stops a command that may have nothing to write, or space to free.
            pid = f"{os.getpid()}\n".encode()
            with contextlib.suppress(OSError):
                os.pwrite(fd, pid, 0)
                os.ftruncate(fd, len(pid))
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                           FILE_MODE)
        except OSError as exc:
            if exc.errno == errno.EROFS:
                # flock works on a descriptor open for reading: the commands that only read
                # still serialise, and those that write fail at their first write, naming it
                with contextlib.suppress(OSError):
                    return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            raise StorageError.of(exc, "open the state lock", self.path) from exc

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
        # Not dataclasses.asdict: it deep-copies every action (firewall rulesets, dnsmasq
        # files) on each of a start's many status writes; the record is serialised at once.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
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


def _json_line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


# Step journals (a start's, virtnet.ports' port-creates') are lines of JSON, per step k:
# {"begun": action} before its first host change (Action.to_dict() as planned), then
# {"done": k} once applied, with {"recorded": {...}} when apply recorded something (pids,
# old values: the fields Action.spec() leaves out), or {"failed": k} when it raised (it left
# nothing behind, and what it failed on may be someone else's, so it is never undone).
# A plain action line (Action.to_dict()) is an applied step too. Serialising each action
# once, before its step, keeps the "done" lines to a few bytes.
BEGUN_KEY = "begun"
DONE_KEY = "done"
RECORDED_KEY = "recorded"
FAILED_KEY = "failed"


def begun_line(action: dict[str, Any]) -> bytes:
    return _json_line({BEGUN_KEY: action})


def done_line(step: int, recorded: dict[str, Any]) -> bytes:
    if not recorded:
        return b'{"%s":%d}\n' % (DONE_KEY.encode(), step)
    return _json_line({DONE_KEY: step, RECORDED_KEY: recorded})


def failed_line(step: int) -> bytes:
    return b'{"%s":%d}\n' % (FAILED_KEY.encode(), step)


def journal_steps(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The actions a step journal's entries say to undo, in apply order: every applied one
    (with what it recorded), and the last one begun if it neither applied nor failed (the
    process was killed inside it: applied partly, wholly or not at all; every undo tolerates
    the three)."""
    actions: list[dict[str, Any]] = []
    pending: dict[str, Any] | None = None
    for entry in entries:
        if BEGUN_KEY in entry:
            pending = dict(entry[BEGUN_KEY])
        elif DONE_KEY in entry:
            if pending is not None:  # (a "done" always follows its "begun")
                pending.update(entry.get(RECORDED_KEY) or {})
                actions.append(pending)
            pending = None
        elif FAILED_KEY in entry:
            pending = None
        else:
            actions.append(entry)
            pending = None
    if pending is not None:
        actions.append(pending)
    return actions


class AppendedLines:
    """A file of lines, each appended with one write(2): what the step journals are made of.

    The file is created (0600, emptied) with the first line, preceded by ``first`` when that
    is given (a journal's header). A kill leaves at most the last line without its newline,
    which readers ignore.
    """

    def __init__(self, path: Path, first: bytes = b"") -> None:
        self.path = path
        self._first = first
        self._fd: int | None = None

    def _write(self, data: bytes) -> None:
        created = self._fd is None
        if created:
            ensure_dir(self.path.parent)
            with storage_errors("write", self.path):
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                             | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
            self._fd = fd
            data = self._first + data
        try:
            with storage_errors("write", self.path):
                if created:
                    os.fchmod(self._fd, FILE_MODE)  # the umask filtered the creation mode
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
        except StorageError:
            if created:  # a file without its first line records nothing: it goes
                with contextlib.suppress(StorageError):
                    self.discard()
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Close and remove the file (gone already is fine)."""
        self.close()
        remove_file(self.path, durable=False)


class StatusJournal(AppendedLines):
    """The status record of a start in progress, kept as one line per step begun or applied.

    A start records each step right before and right after applying it, so that a kill,
    between two steps or inside one, leaves a record of what to undo. Rewriting the whole
    record each time costs a file replacement per step (0.3-0.5 ms on ext4, more than the
    step itself for most steps); appending a line costs one write(2). The first line is the
    record without actions, the further lines follow :func:`journal_steps`. A line without
    its final newline was cut by a crash and is ignored when read back: a cut "done" line
    leaves its step's "begun" line, so the step is still undone.

    The file is created with the first step, so a start that fails before any step leaves
    nothing; :meth:`StateStore.write_status` (the completed record) and
    :meth:`StateStore.delete_status` remove it.
    """

    def __init__(self, path: Path, status: NetworkStatus) -> None:
        header = status.to_dict()
        header.update(actions=[], active=False)
        super().__init__(path, _json_line(header))

    def begin(self, action: dict[str, Any]) -> None:
        """Record that a step is about to change the host (its action as planned)."""
        self._write(begun_line(action))

    def done(self, step: int, recorded: dict[str, Any]) -> None:
        """Record that the step begun last applied, and what it recorded."""
        self._write(done_line(step, recorded))

    def failed(self, step: int) -> None:
        """Record that step ``step`` raised, so it is not undone later."""
        self._write(failed_line(step))

    def append(self, action: dict[str, Any]) -> None:
        """Record an applied step as a whole (its action with what it recorded)."""
        self._write(_json_line(action))

    def __enter__(self) -> StatusJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_record_file(path: Path) -> bytes | None:
    """The content of the state file PATH (not through a symlink), None if there is none;
    RecordError naming the file if it is a symlink or no regular file, StorageError (the
    file and the errno) if it cannot be read."""
    try:
        return read_state_file(path)
    except FileNotFoundError:
        return None
    except IdentifierError as exc:
        raise RecordError(path, str(exc).removeprefix(f"{path} ")) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RecordError(path, "is a symlink: records are never read through one") from None
        raise StorageError.of(exc, "read", path) from None


def _status_of(data: Any, path: Path, name: str | None) -> NetworkStatus:
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    status = NetworkStatus.from_dict(data)
    if name is not None and status.name != name:
        raise RecordError(path, f"records network '{status.name}', not '{name}' (its file "
                          "name); ignored")
    check_network_name(status.name)
    return status


def read_journal(path: Path, name: str | None = None) -> NetworkStatus | None:
    """The inactive status a journal records, or None if there is none (or it was cut before
    its first line was complete: no step had been recorded)."""
    raw = read_record_file(path)
    if raw is None:
        return None
    lines = raw.split(b"\n")[:-1]  # what follows the last newline is a cut line, or nothing
    if not lines:
        return None
    try:
        status = _status_of(json.loads(lines[0]), path, name)
        status.actions = journal_steps([json.loads(line) for line in lines[1:]])
    except RecordError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, VirtnetError) as exc:
        raise RecordError(path, f"unreadable status journal: {exc}") from None
    status.active = False
    return status


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

    def defined_names(self, warn: Warn | None = None) -> list[str]:
        return _names_in(self.paths.networks_dir, ".xml", warn)

    def is_defined(self, name: str) -> bool:
        return _is_regular(self.paths.definition(name))

    def read_definition(self, name: str) -> bytes | None:
        return read_record_file(self.paths.definition(name))

    def write_definition(self, name: str, xml: str) -> Path:
        path = self.paths.definition(name)
        atomic_write(path, xml)
        return path

    def delete_definition(self, name: str) -> None:
        """Remove the definition and its autostart link (libvirt drops both on undefine)."""
        self.set_autostart(name, False)
        remove_file(self.paths.definition(name))

    # --- autostart -----------------------------------------------------------------------

    def is_autostart(self, name: str) -> bool:
        """Whether NAME's autostart link is there and names its definition. The link is read,
        never followed: one leading elsewhere does not count, nor does a dangling one (the
        definition gone: it can never start anything)."""
        link = self.paths.autostart_link(name)
        try:
            target = os.readlink(link)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # not a symlink: not an autostart link of ours
                return False
            raise StorageError.of(exc, "read", link) from exc
        definition = self.paths.definition(name)
        return target in (str(definition.absolute()), f"../{definition.name}") \
            and _is_regular(definition)

    def set_autostart(self, name: str, enabled: bool) -> None:
        link = self.paths.autostart_link(name)
        if not enabled:
            remove_file(link)
            return
        target = self.paths.definition(name).absolute()
        with storage_errors("read", link):
            if link.is_symlink() and os.readlink(link) == str(target):
                return
        ensure_dir(link.parent)
        temp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        remove_file(temp, durable=False)
        with storage_errors("write", link):
            os.symlink(target, temp)
            try:
                os.replace(temp, link)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        fsync_dir(link.parent)

    def autostart_names(self) -> list[str]:
        return [name for name in _names_in(self.paths.autostart_dir, ".xml", links=True)
                if self.is_autostart(name)]

    # --- runtime status ------------------------------------------------------------------

    def status_names(self, warn: Warn | None = None) -> list[str]:
        """Networks with a status record or the journal of an interrupted start."""
        names = set(_names_in(self.paths.status_dir, ".json", warn))
        names.update(_names_in(self.paths.status_dir, JOURNAL_SUFFIX, warn))
        return sorted(names)

    def has_status(self, name: str) -> bool:
        """Whether NAME has a status file or a start journal (readable or not)."""
        return any(os.path.lexists(path)
                   for path in (self.paths.status(name), self.journal_path(name)))

    def journal_path(self, name: str) -> Path:
        return network_file(self.paths.status_dir, name, JOURNAL_SUFFIX)

    def begin_status(self, status: NetworkStatus) -> StatusJournal:
        """The journal a start appends its applied steps to (see :class:`StatusJournal`)."""
        return StatusJournal(self.journal_path(status.name), status)

    def read_status(self, name: str) -> NetworkStatus | None:
        """NAME's status record; failing that, what the journal of an interrupted start
        recorded (inactive); None if neither exists."""
        path = self.paths.status(name)
        raw = read_record_file(path)
        if raw is None:
            return read_journal(self.journal_path(name), name)
        try:
            return _status_of(json.loads(raw), path, name)
        except RecordError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, VirtnetError) as exc:
            raise RecordError(path, f"unreadable status record: {exc}") from None

    def write_status(self, status: NetworkStatus) -> None:
        """Replace NAME's status record: atomically, not durably (a runtime record; see the
        module's docstring). Compact JSON: the C encoder, several times faster than an
        indented dump, on a record rewritten after every step of a start."""
        path = self.paths.status(status.name)
        atomic_write(path, json.dumps(status.to_dict(), separators=(",", ":")) + "\n",
                     durable=False)
        remove_file(self.journal_path(status.name), durable=False)  # superseded

    def delete_status(self, name: str) -> None:
        remove_file(self.paths.status(name), durable=False)
        remove_file(self.journal_path(name), durable=False)

    def remove_stale_temp_files(self) -> list[Path]:
        """Remove the temp files of atomic writes a killed command left behind. Only while
        holding the lock: every writer of these directories holds it, so no temp file there
        is in use. Returns what was removed."""
        removed = []
        for directory in (self.paths.networks_dir, self.paths.autostart_dir,
                          self.paths.status_dir, self.paths.dnsmasq_dir):
            entries = list_dir(directory)
            for entry in entries:
                if entry.startswith(".") and entry.endswith(".tmp"):
                    if remove_file(directory / entry, durable=False):
                        removed.append(directory / entry)
        return removed

    def all_names(self, warn: Warn | None = None) -> list[str]:
        """Every known network: defined ones and transient active ones, sorted like virsh
        (case-insensitively). File names that cannot be network names are reported to
        WARN and left out."""
        names = set(self.defined_names(warn)) | set(self.status_names(warn))
        return sorted(names, key=lambda name: (name.lower(), name))


def _is_regular(path: Path) -> bool:
    """Whether PATH is a regular file itself (a symlink does not count); a directory on the
    way that cannot be searched is an error, not a no."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise StorageError.of(exc, "read", path) from exc


def _names_in(directory: Path, suffix: str, warn: Warn | None = None, *,
              links: bool = False) -> list[str]:
    """The network names of DIRECTORY's regular files NAME+SUFFIX (symlinks instead with
    ``links``: the autostart directory). Hidden files are temp files, skipped silently; a
    name that cannot be a network's, or a file of the wrong type, is reported to WARN."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError.of(exc, "read", directory) from exc
    names = []
    for entry in entries:
        name = entry.name
        if not name.endswith(suffix) or name.startswith("."):
            continue
        try:
            right_type = entry.is_symlink() if links else \
                entry.is_file(follow_symlinks=False)
        except OSError:
            right_type = False
        stem = name[: -len(suffix)]
        problem = network_name_problem(stem)
        if problem is None and not right_type:
            problem = ("a symlink: records are never read through one" if entry.is_symlink()
                       else "not a regular file")
        if problem is not None:
            if warn is not None:
                warn(f"{entry.path}: ignored: {problem}")
            continue
        names.append(stem)
    return sorted(names)

