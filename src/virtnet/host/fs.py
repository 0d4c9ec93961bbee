"""Files: atomic writes, durable removal, private directories and appended-line files.

The only code of virtnet's state that touches files (the record formats are in
:mod:`virtnet.store.store`, the journals' lines in :mod:`virtnet.execute.journal`). Every function
raises :class:`virtnet.errors.StorageError` (naming the file and the errno) where the OSError
would have escaped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from virtnet.errors import Busy, StorageError, storage_errors
from virtnet.ids import ensure_real_dir

FILE_MODE = 0o600
DIR_MODE = 0o700
PARENT_DIR_MODE = 0o755
DEFAULT_LOCK_TIMEOUT = 30.0  # seconds a command waits for another one before giving up
CRASH_EXIT_STATUS = 137  # = virtnet.execute.faults.CRASH_EXIT_STATUS


def _no_crash() -> str | None:
    return None


# Crash tests: the stage at which the first atomic write of the process dies, as if killed.
# "empty": the temp file exists, nothing written; "partial": half the data written;
# "before-rename": all written (and fsynced if durable), not renamed; "after-rename":
# renamed, directory not fsynced. virtnet.execute.faults installs the reader of
# VIRTNET_CRASH_IN_WRITE here (this module imports nothing above host/).
write_crash_stage: Callable[[], str | None] = _no_crash


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
    crash_stage = write_crash_stage()
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

    def write(self, data: bytes) -> None:
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
                        raise StorageError.of(exc, "lock", self.path) from exc
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


def atomic_symlink(link: Path, target: Path) -> None:
    """Replace LINK with a symlink to TARGET (temp link, then rename), durably."""
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


class Files:
    """The handle through which the state store reaches its files, as actions reach the
    kernel through :class:`virtnet.host.Host`: one place to substitute in tests."""

    ensure_dir = staticmethod(ensure_dir)
    fsync_dir = staticmethod(fsync_dir)
    read_file = staticmethod(read_file)
    list_dir = staticmethod(list_dir)
    path_exists = staticmethod(path_exists)
    atomic_write = staticmethod(atomic_write)
    atomic_symlink = staticmethod(atomic_symlink)
    remove_file = staticmethod(remove_file)

    @staticmethod
    def lock(path: Path, timeout: float = DEFAULT_LOCK_TIMEOUT) -> StateLock:
        """The process-wide exclusive lock on PATH (see :class:`StateLock`)."""
        return StateLock(path, timeout=timeout)
