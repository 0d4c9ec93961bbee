"""What every verb group of the command line shares: the invocation's session (services,
files, output), the error codes, and virsh's ways of printing.

A verb never reaches a module global for these: the session is the click context's object,
made by whoever runs the command line (virtnet.face.cli in the user's shell, virtnet.face.verbs
inside the daemon), and the helpers below find it through the current click context.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import click

from virtnet.errors import (
    Busy,
    HostConflict,
    HostError,
    InvalidOperationError,
    NotFoundError,
    PortError,
    PortNotFound,
    StorageError,
    UpdateError,
    ValidationError,
    VirtnetError,
    XMLParseError,
)
from virtnet.face.output import Output
from virtnet.paths import StatePaths

# Exit statuses: 0 done, 1 the operation failed or was refused (nothing changed), 2 the command
# line itself was wrong (click's usage errors). With --json, an error is one JSON object on
# stderr: {"error": {"code": CODE, "message": TEXT, ...details}}, CODE one of the stable names
# below, chosen by the error's type (most specific first), never by its text.
EXIT_FAILED = 1
EXIT_USAGE = 2
ERROR_CODES: tuple[tuple[type[VirtnetError], str], ...] = (
    (PortNotFound, "port-not-found"),
    (NotFoundError, "not-found"),
    (XMLParseError, "invalid-xml"),
    (ValidationError, "invalid-definition"),
    (UpdateError, "update-refused"),
    (PortError, "port-refused"),
    (InvalidOperationError, "invalid-operation"),
    (Busy, "busy"),
    (StorageError, "storage"),
    (HostConflict, "host-conflict"),
    (HostError, "host-error"),
)
USAGE_CODE = "usage"
FAILED_CODE = "failed"  # any other refusal: a file that cannot be read, an editor that failed
JSON_ERRORS = "virtnet.json_errors"  # ctx.meta key: the command line asked for --json


# --- the session of one invocation ----------------------------------------------------------


class Files(Protocol):
    """How a verb reads the files its command line names (the user's, or what a client sent)."""

    def read_input(self, path: str) -> tuple[bytes, str]:
        """A definition file's bytes ('-' for stdin) and its display name; fails the command
        when it cannot be read."""
        ...

    def path(self, name: str) -> Any:
        """NAME as a path of which the verb may ask is_file() and read_text()."""
        ...


class Services(Protocol):
    """The engine and port manager a verb works with."""

    @property
    def engine(self) -> Any: ...

    @property
    def ports(self) -> Any: ...


class LocalServices:
    """An engine (and port manager) of this process over a state directory, made on first use."""

    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = state_dir
        self._engine: Any = None
        self._ports: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            # lazy: the engine's imports are most of a command's start-up, and --help,
            # --version and the definition verbs need none of them
            from virtnet.service.engine import Engine

            self._engine = Engine(StatePaths.from_option(self.state_dir))
        return self._engine

    @property
    def ports(self) -> Any:
        if self._ports is None:
            from virtnet.service.ports import PortManager  # lazy, as the engine

            self._ports = PortManager(self.engine)
        return self._ports


@dataclass
class Session:
    """One invocation: the global options, the services, the files and the output."""

    netns: str | None = None
    state_dir: Path | None = None
    services: Services | None = None  # None: LocalServices over state_dir
    files: Files | None = None  # None: this process's own files (virtnet.face.cli)
    out: Output = field(default_factory=Output)


def current_session() -> Session:
    """The session of the command being run."""
    ctx = click.get_current_context()
    session = ctx.obj
    assert isinstance(session, Session), "virtnet.face.cli.main makes the session"
    return session


def current_output() -> Output:
    """The output of the command being run (the process's streams outside any command)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and isinstance(ctx.obj, Session):
        return ctx.obj.out
    return Output()


def echo(message: Any = "", err: bool = False, nl: bool = True) -> None:
    """Print to the current command's output (click.echo's arguments)."""
    current_output().echo(message, err=err, nl=nl)


def read_input(path: str) -> tuple[bytes, str]:
    """Read a definition file ('-' for stdin) through the session's files."""
    files = current_session().files
    assert files is not None
    return files.read_input(path)


def file_path(name: str) -> Any:
    """NAME as a path of the session's files (is_file(), read_text())."""
    files = current_session().files
    assert files is not None
    return files.path(name)


def engine_of(ctx: click.Context) -> Any:
    """The engine of this invocation."""
    session: Session = ctx.obj
    assert session.services is not None
    return session.services.engine


def port_manager_of(ctx: click.Context) -> Any:
    """The port manager of this invocation."""
    session: Session = ctx.obj
    assert session.services is not None
    return session.services.ports


def show_help(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """--help: click's own, printed to the session's output."""
    if value and not ctx.resilient_parsing:
        session = ctx.obj
        out = session.out if isinstance(session, Session) else None
        if out is None:
            click.echo(ctx.get_help(), color=ctx.color)
        else:
            out.echo(ctx.get_help(), color=ctx.color)
        ctx.exit()


class HelpToSession(click.Command):
    """A command whose --help prints to the session's output, not to sys.stdout."""

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = super().get_help_option(ctx)
        if option is not None:
            option.callback = show_help
        return option


class VirtnetCommand(HelpToSession, click.Command):
    """Every verb's command class (virtnet.face.common.command)."""


def command(name: str, **context_settings: Any) -> Callable[[Callable[..., Any]], click.Command]:
    """click.command for a verb (its --help prints to the session's output)."""
    return click.command(name, cls=VirtnetCommand, context_settings=context_settings or None)


# --- errors ---------------------------------------------------------------------------------


def error_code(exc: VirtnetError) -> str:
    """The stable code of EXC's kind."""
    for kind, code in ERROR_CODES:
        if isinstance(exc, kind):
            return code
    return FAILED_CODE


def error_details(exc: VirtnetError) -> dict[str, Any]:
    """What a program may want besides the message: where a definition is wrong, which file."""
    if isinstance(exc, XMLParseError):
        return {"source": exc.source, "line": exc.line, "path": exc.path}
    if isinstance(exc, ValidationError):
        return {"source": exc.source, "problems": [
            {"path": p.path, "message": p.message, "value": p.value} for p in exc.problems]}
    if isinstance(exc, StorageError):
        return {"path": exc.path, "errno": exc.errno_name}
    return {}


def json_errors() -> bool:
    """Whether the command line asked for --json (errors are then JSON too)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(JSON_ERRORS))


def fail(message: str, code: str = FAILED_CODE, details: dict[str, Any] | None = None,
         status: int = EXIT_FAILED) -> NoReturn:
    """Print one clear message (a JSON object with --json) and exit with STATUS."""
    if json_errors():
        error = {"code": code, "message": message, **(details or {})}
        echo(json.dumps({"error": error}), err=True)
    else:
        echo(f"error: {message}", err=True)
    sys.exit(status)


def emit_json(data: Any) -> None:
    echo(json.dumps(data, indent=2, sort_keys=False))


def complete_network(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of a network argument (virtnet.face.completion; loaded only at a TAB)."""
    from virtnet.face.completion import complete_network as complete  # lazy: only at a TAB

    return complete(ctx, param, incomplete)


# --- virsh's layout -------------------------------------------------------------------------


def virsh_echo(text: str = "") -> None:
    """Print a command's output followed by the blank line virsh adds after every command."""
    if text and not text.endswith("\n"):
        text += "\n"
    echo(text + "\n", nl=False)


def virsh_table(headers: list[str], rows: list[list[str]]) -> str:
    """virsh's table layout: one leading space per cell, columns padded to the widest cell
    plus two spaces (none after the last), a dashed line as wide as every column plus 3."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = ""
        for index, cell in enumerate(cells):
            out += " " + cell
            if index < len(cells) - 1:
                out += " " * (widths[index] - len(cell) + 2)
        return out + "\n"

    return line(headers) + "-" * sum(w + 3 for w in widths) + "\n" + "".join(map(line, rows))


def virsh_fields(fields: list[tuple[str, str]]) -> str:
    """virsh's "Label:         value" layout (label left-aligned in 15 columns)."""
    return "".join(f"{label + ':':<15} {value}\n" for label, value in fields)


def virsh_fail(message: str) -> NoReturn:
    """Fail as virsh does: its blank line still goes to stdout, the error lines to stderr."""
    echo("")
    fail(message)


class VirshFailure:
    """``with VirshFailure("Failed to start network x"):`` prefixes any VirtnetError raised
    inside with virsh's own first error line."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, VirtnetError):
            if json_errors():  # one object: virsh's first line leads the message
                fail(f"{self.what}: {exc}", error_code(exc), error_details(exc))
            virsh_fail(f"{self.what}\nerror: {exc}")
        return False


def lookup_network(engine: Any, name: str) -> Any:
    """The network named (or with UUID) ``name``, or virsh's two-line "failed to get" error."""
    with VirshFailure(f"failed to get network '{name}'"):
        return engine.lookup(name)


def warn_user(message: str) -> None:
    """A warning for the user, on stderr (the command goes on)."""
    echo(f"warning: {message}", err=True)


PIPED_WIDTH = 4096  # columns of rich's output to a pipe or file: wider than any table row


def output_console() -> Any:
    """rich's console for stdout: sized to the terminal on one; piped or redirected, so wide
    that no table row or line wraps (``| grep`` and ``> file`` see one row per line, and a
    table is only as wide as its content)."""
    from rich.console import Console  # lazy: rich is heavy, and only doctor and lab print so

    out = current_output()
    if out.isatty():
        return Console(file=out.stdout)
    return Console(file=out.stdout, width=PIPED_WIDTH, soft_wrap=True)


def yes_no(value: bool) -> str:
    return "yes" if value else "no"
