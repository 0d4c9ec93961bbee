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
  per step applied (a virtnet.execute.journal Journal); left behind by an interrupted start, it reads
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

import errno
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from virtnet.errors import StorageError, VirtnetError, storage_errors
from virtnet.execute import faults  # noqa: F401 - installs the crash hook of atomic writes
from virtnet.execute.journal import (  # noqa: F401 - the line format, under its old names
    BEGUN_KEY,
    DONE_KEY,
    FAILED_KEY,
    RECORDED_KEY,
    Journal,
    begun_line,
    done_line,
    failed_line,
    journal_steps,
)
from virtnet.execute.journal import parse as parse_journal
from virtnet.host import HostProcess
from virtnet.host.fs import (  # noqa: F401 - the file effects, under their old names
    DEFAULT_LOCK_TIMEOUT,
    DIR_MODE,
    FILE_MODE,
    PARENT_DIR_MODE,
    AppendedLines,
    Files,
    StateLock,
    atomic_write,
    ensure_dir,
    fsync_dir,
    list_dir,
    path_exists,
    read_file,
    remove_file,
)
from virtnet.ids import (
    IdentifierError,
    check_network_name,
    network_file,
    network_name_problem,
    read_state_file,
)
from virtnet.paths import StatePaths

STATUS_FORMAT_VERSION = 1
JOURNAL_SUFFIX = ".journal"
FILES = HostProcess.files  # the files' half of the host handle (virtnet.host.fs)


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


# The start journal (NAME.journal): the status record without actions as its header, then
# the lines of virtnet.execute.journal, each step's action on its "begun" line.


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
    """The inactive status a start journal records, or None if there is none (or it was cut
    before its first line was complete: no step had been recorded)."""
    raw = read_record_file(path)
    if raw is None:
        return None
    try:
        journal = parse_journal(raw, header=True)
        if journal is None:
            return None
        status = _status_of(journal.header, path, name)
        status.actions = journal.actions_to_undo()
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
        self.lock = FILES.lock(paths.lock_file, timeout=lock_timeout)

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
        FILES.atomic_write(path, xml)
        return path

    def delete_definition(self, name: str) -> None:
        """Remove the definition and its autostart link (libvirt drops both on undefine)."""
        self.set_autostart(name, False)
        FILES.remove_file(self.paths.definition(name))

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
            FILES.remove_file(link)
            return
        target = self.paths.definition(name).absolute()
        with storage_errors("read", link):
            if link.is_symlink() and os.readlink(link) == str(target):
                return
        FILES.atomic_symlink(link, target)

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

    def begin_status(self, status: NetworkStatus) -> Journal:
        """The journal a start appends its steps to (virtnet.execute.journal), created with
        the first step, so a start that fails before any leaves nothing. Its header is the
        record without actions, inactive; write_status (the completed record) and
        delete_status remove it."""
        header = status.to_dict()
        header.update(actions=[], active=False)
        return Journal(self.journal_path(status.name), header)

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
        FILES.atomic_write(path, json.dumps(status.to_dict(), separators=(",", ":")) + "\n",
                     durable=False)
        FILES.remove_file(self.journal_path(status.name), durable=False)  # superseded

    def delete_status(self, name: str) -> None:
        FILES.remove_file(self.paths.status(name), durable=False)
        FILES.remove_file(self.journal_path(name), durable=False)

    def remove_stale_temp_files(self) -> list[Path]:
        """Remove the temp files of atomic writes a killed command left behind. Only while
        holding the lock: every writer of these directories holds it, so no temp file there
        is in use. Returns what was removed."""
        removed = []
        for directory in (self.paths.networks_dir, self.paths.autostart_dir,
                          self.paths.status_dir, self.paths.dnsmasq_dir):
            entries = FILES.list_dir(directory)
            for entry in entries:
                if entry.startswith(".") and entry.endswith(".tmp"):
                    if FILES.remove_file(directory / entry, durable=False):
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

