"""The CLI's verbs, run inside the daemon for a thin client (``POST /v1/cli``).

The daemon runs the very same click commands as ``virtnet --direct`` does, so output and exit
status are identical by construction. What differs from a run in the user's shell is handed to
the command line as its session (virtnet.face.common.Session), one per invocation (several run
at once, in worker threads), with nothing of any module replaced:

- Output: a Capture of this invocation, stdout and stderr interleaved as printed.
- Files: the client sends the content of the files its command line names (and its stdin when
  a command reads ``-``); the daemon never opens a path a client gave. A verb reads files only
  through its session (``read_input`` and ``file_path``), here :class:`ClientFiles`.
- Services: the daemon's resident engine and port manager, whose lock is shared by every
  thread (a flock is per open file, so separate engines in one process would wait for each
  other by polling).

Only the verbs of FORWARDED_VERBS run here; the others always run in the client.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import click

from virtnet.face.cli import main
from virtnet.face.common import Session, fail
from virtnet.face.fastcli import FORWARDED_VERBS, READ_ONLY_VERBS
from virtnet.face.output import STDERR, STDOUT, Capture, Output
from virtnet.spec.xml.parse import MAX_DOCUMENT_BYTES

log = logging.getLogger("virtnetd")


# --- the client's files ---------------------------------------------------------------------


@dataclass
class ClientFiles:
    """Files as the client saw them: content (regular files only) or the errno it got."""

    entries: dict[str, bytes | int] = field(default_factory=dict)
    stdin: bytes | None = None

    def entry(self, path: str) -> bytes | int:
        # A path the client did not send does not exist as far as this command knows.
        return self.entries.get(path, errno.ENOENT)

    def read_input(self, path: str) -> tuple[bytes, str]:
        """What the client sent for PATH ('-': its stdin), as virtnet.face.cli.read_input
        reads a file of its own."""
        if path == "-":
            return (self.stdin or b"")[: MAX_DOCUMENT_BYTES + 1], "<stdin>"
        entry = self.entry(path)
        if isinstance(entry, int):
            fail(f"{path}: cannot read: {os.strerror(entry)}")
        return entry[: MAX_DOCUMENT_BYTES + 1], path

    def path(self, name: str) -> ClientPath:
        return ClientPath(name, self)


class ClientPath:
    """What a verb does with a path of its session: is_file() and read_text()."""

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


# --- the daemon's services ------------------------------------------------------------------


@dataclass
class ResidentServices:
    """The daemon's engine and port manager, shared by every invocation."""

    engine: Any
    ports: Any


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


def run_command_line(args: list[str], session: Session) -> int:
    """``virtnet ARGS`` with SESSION, reporting as click's standalone mode would (usage
    errors, aborts) but to the session's output; the exit status."""
    out = session.out
    try:
        result = main.main(args=args, prog_name="virtnet", standalone_mode=False, obj=session)
    except click.ClickException as exc:
        exc.show(file=out.stream(err=True))
        return exc.exit_code
    except click.Abort as exc:
        if isinstance(exc.__cause__, (EOFError, KeyboardInterrupt)):
            out.echo(err=True)  # the blank line click prints before it
        out.echo("Aborted!", err=True)
        return 1
    return result if isinstance(result, int) else 0


def invoke(argv: list[str], files: ClientFiles, state_dir: str | None,
           services: ResidentServices) -> InvokeResult:
    """Run ``virtnet [--state-dir DIR] ARGV`` here with SERVICES, as the client would have run
    it with its own."""
    capture = Capture()
    session = Session(services=services, files=files, out=Output.captured(capture))
    args = (["--state-dir", state_dir] if state_dir is not None else []) + list(argv)
    start = time.perf_counter()
    try:
        status = run_command_line(args, session)
    except SystemExit as exc:
        status = exit_status(exc.code, capture)
    except Exception as exc:  # noqa: BLE001 - a bug must not take the daemon down
        log.exception("virtnet %s failed inside the daemon", " ".join(argv[:1]))
        capture.add(STDERR, f"error: internal error in virtnetd: {type(exc).__name__}: {exc}\n")
        status = 1
    elapsed = time.perf_counter() - start
    return InvokeResult(status, capture.chunks, elapsed)


__all__ = [
    "FORWARDED_VERBS",
    "READ_ONLY_VERBS",
    "STDERR",
    "STDOUT",
    "Capture",
    "ClientFiles",
    "ClientPath",
    "InvokeResult",
    "ResidentServices",
    "exit_status",
    "invoke",
    "run_command_line",
]
