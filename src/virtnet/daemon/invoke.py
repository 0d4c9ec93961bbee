"""The CLI's verbs, run inside the daemon for a thin client (``POST /v1/cli``).

The daemon runs the very same click commands as ``virtnet --direct`` does, so output and exit
status are identical by construction. Three things differ from a run in the user's shell, and
each is routed through a context variable set for the duration of one invocation (several run
at once, in worker threads):

- Output: ``sys.stdout`` and ``sys.stderr`` are replaced, once, by streams that write into the
  current invocation's capture (in order, stdout and stderr interleaved as printed) or, outside
  an invocation, to the daemon's own streams.
- Files: the client sends the content of the files its command line names (and its stdin when
  a command reads ``-``); the daemon never opens a path a client gave. ``cli.read_input`` and
  ``cli.Path`` (the only ways cli.py reads files; tests/unit/test_daemon_invoke.py keeps it so)
  are routed to what the client sent.
- The engine: ``cli.engine_of`` and ``cli.port_manager_of`` return the daemon's resident ones,
  whose lock is shared by every thread (a flock is per open file, so separate engines in one
  process would wait for each other by polling).

Only the verbs of FORWARDED_VERBS run here; the others always run in the client.
"""

from __future__ import annotations

import contextvars
import errno
import io
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, TextIO

from virtnet.face.fastcli import FORWARDED_VERBS

log = logging.getLogger("virtnetd")

# The verbs the daemon runs for a client (virtnet.face.fastcli keeps the one list, with why:
# the thin client must know them without importing anything of the daemon's).
# Among them, those that only read: anyone allowed to connect may run them (server.Peer).
READ_ONLY_VERBS = frozenset({
    "validate", "format", "update", "dnsmasq-conf", "plan",
    "net-list", "net-info", "net-dumpxml", "net-uuid", "net-name", "net-dhcp-leases",
    "net-addresses", "net-forward-list", "port-list", "port-dumpxml",
    "net-port-list", "net-port-dumpxml",
})
STDOUT, STDERR = 1, 2


# --- captured output ------------------------------------------------------------------------


class Capture:
    """What one invocation printed: (stream, text) chunks in the order they were written."""

    def __init__(self) -> None:
        self.chunks: list[list[Any]] = []

    def add(self, stream: int, text: str) -> None:
        if not text:
            return
        if self.chunks and self.chunks[-1][0] == stream:
            self.chunks[-1][1] += text
        else:
            self.chunks.append([stream, text])

    def text(self, stream: int) -> str:
        return "".join(text for fd, text in self.chunks if fd == stream)


_capture: contextvars.ContextVar[Capture | None] = contextvars.ContextVar(
    "virtnet_capture", default=None)


class RoutedStream(io.TextIOBase):
    """sys.stdout / sys.stderr of the daemon: the current invocation's capture, if any."""

    def __init__(self, stream: int, original: TextIO | None) -> None:
        super().__init__()
        self.stream = stream
        self.original = original

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "strict"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            # click probes with b"" to tell binary from text streams: this one is text.
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        capture = _capture.get()
        if capture is not None:
            capture.add(self.stream, text)
        elif self.original is not None:
            self.original.write(text)
        return len(text)

    def flush(self) -> None:
        if _capture.get() is None and self.original is not None:
            self.original.flush()

    def isatty(self) -> bool:
        return False if _capture.get() is not None else bool(
            self.original is not None and self.original.isatty())

    def fileno(self) -> int:
        if _capture.get() is not None or self.original is None:
            raise io.UnsupportedOperation("a captured stream has no file descriptor")
        return self.original.fileno()


# --- the client's files ---------------------------------------------------------------------


@dataclass
class ClientFiles:
    """Files as the client saw them: content (regular files only) or the errno it got."""

    entries: dict[str, bytes | int] = field(default_factory=dict)
    stdin: bytes | None = None

    def entry(self, path: str) -> bytes | int:
        # A path the client did not send does not exist as far as this command knows.
        return self.entries.get(path, errno.ENOENT)


_files: contextvars.ContextVar[ClientFiles | None] = contextvars.ContextVar(
    "virtnet_client_files", default=None)


class ClientPath:
    """What cli.py does with ``Path(x)`` for a forwarded command: is_file() and read_text()."""

    def __init__(self, path: str, files: ClientFiles) -> None:
        self.path = path
        self.files = files

    def __str__(self) -> str:
        return str(PurePath(self.path))

    def __fspath__(self) -> str:
        # Never handed to the OS: a forwarded command only reads what the client sent.
        raise OSError(errno.EPERM, "virtnetd does not open paths given by clients", self.path)

    def is_file(self) -> bool:
        return isinstance(self.files.entry(self.path), bytes)

    def read_bytes(self) -> bytes:
        entry = self.files.entry(self.path)
        if isinstance(entry, int):
            raise OSError(entry, os.strerror(entry), str(self))
        return entry

    def read_text(self, encoding: str | None = None, errors: str | None = None) -> str:
        return self.read_bytes().decode(encoding or "utf-8", errors or "strict")


# --- installation ---------------------------------------------------------------------------


@dataclass
class Resident:
    """The daemon's engine and port manager, shared by every invocation."""

    engine: Any
    ports: Any


_installed: Resident | None = None
_install_lock = threading.Lock()


def install(resident: Resident) -> None:
    """Route cli.py's output, file reads and engine to the current invocation (once per
    process; outside an invocation everything behaves as before)."""
    global _installed
    with _install_lock:
        if _installed is not None:
            _installed = resident
            return
        import virtnet.face.cli as cli

        original_read_input = cli.read_input
        original_path = cli.Path
        original_engine_of = cli.engine_of
        original_port_manager_of = cli.port_manager_of

        def read_input(path: str) -> tuple[bytes, str]:
            files = _files.get()
            if files is None:
                return original_read_input(path)
            from virtnet.spec.xml.parse import MAX_DOCUMENT_BYTES

            if path == "-":
                return (files.stdin or b"")[: MAX_DOCUMENT_BYTES + 1], "<stdin>"
            entry = files.entry(path)
            if isinstance(entry, int):
                cli.fail(f"{path}: cannot read: {os.strerror(entry)}")
            return entry[: MAX_DOCUMENT_BYTES + 1], path

        def path_of(*parts: Any) -> Any:
            files = _files.get()
            if files is not None and len(parts) == 1 and isinstance(parts[0], str):
                return ClientPath(parts[0], files)
            return original_path(*parts)

        def engine_of(ctx: Any) -> Any:
            if _files.get() is not None and _installed is not None:
                return _installed.engine
            return original_engine_of(ctx)

        def port_manager_of(ctx: Any) -> Any:
            if _files.get() is not None and _installed is not None:
                return _installed.ports
            return original_port_manager_of(ctx)

        cli.read_input = read_input
        cli.Path = path_of
        cli.engine_of = engine_of
        cli.port_manager_of = port_manager_of
        if not isinstance(sys.stdout, RoutedStream):
            sys.stdout = RoutedStream(STDOUT, sys.stdout)
        if not isinstance(sys.stderr, RoutedStream):
            sys.stderr = RoutedStream(STDERR, sys.stderr)
        _installed = resident


# --- one invocation -------------------------------------------------------------------------


@dataclass
class InvokeResult:
    status: int
    output: list[list[Any]]  # [[1 or 2, text], ...] in the order printed
    elapsed: float  # seconds spent in the command

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "output": self.output,
                "elapsed_ms": round(self.elapsed * 1000.0, 3)}


def exit_status(code: Any, capture: Capture) -> int:
    """What the process would exit with after ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    capture.add(STDERR, f"{code}\n")  # sys.exit("message") prints it and exits with 1
    return 1


def invoke(argv: list[str], files: ClientFiles, state_dir: str | None) -> InvokeResult:
    """Run ``virtnet [--state-dir DIR] ARGV`` here, as the client would have run it."""
    if _installed is None:
        raise RuntimeError("invoke.install() was not called")
    import virtnet.face.cli as cli

    capture = Capture()
    args = (["--state-dir", state_dir] if state_dir is not None else []) + list(argv)
    capture_token = _capture.set(capture)
    files_token = _files.set(files)
    start = time.perf_counter()
    try:
        cli.main.main(args=args, prog_name="virtnet", standalone_mode=True)
        status = 0
    except SystemExit as exc:
        status = exit_status(exc.code, capture)
    except Exception as exc:  # noqa: BLE001 - a bug must not take the daemon down
        log.exception("virtnet %s failed inside the daemon", " ".join(argv[:1]))
        capture.add(STDERR, f"error: internal error in virtnetd: {type(exc).__name__}: {exc}\n")
        status = 1
    finally:
        elapsed = time.perf_counter() - start
        _files.reset(files_token)
        _capture.reset(capture_token)
    return InvokeResult(status, capture.chunks, elapsed)


__all__ = [
    "FORWARDED_VERBS",
    "READ_ONLY_VERBS",
    "Capture",
    "ClientFiles",
    "ClientPath",
    "InvokeResult",
    "Resident",
    "install",
    "invoke",
]
