"""virtnet's command line: virsh's verbs where virsh has them, our own beside them.

This module is the root group (global options, errors as exit statuses, help) and the one verb
that needs the user's terminal (net-edit). The other verbs live by group in
virtnet.face.{defs,net,port,insight,day_two}_cmds, and a group's module is imported only when
one of its verbs runs (or the help lists them all): ``virtnet --version`` and a verb's start-up
never pay for the groups they do not use (lxml, rich, the engine, the insight modules).

Whoever runs the command line gives it a session (virtnet.face.common.Session): the services,
the files and the output of this invocation. Run here, it is this process's own; inside the
daemon (virtnet.face.verbs) it is the daemon's resident engine, the files the client sent and
a capture of what is printed.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import click

from virtnet import __version__
from virtnet.errors import VirtnetError
from virtnet.face.common import (  # re-exported: the names the tests and tools know cli by
    ERROR_CODES,
    EXIT_FAILED,
    EXIT_USAGE,
    FAILED_CODE,
    JSON_ERRORS,
    PIPED_WIDTH,
    USAGE_CODE,
    LocalServices,
    HelpToSession,
    Session,
    VirshFailure,
    VirtnetCommand,
    complete_network,
    echo,
    emit_json,
    engine_of,
    error_code,
    error_details,
    fail,
    lookup_network,
    output_console,
    port_manager_of,
    virsh_echo,
    virsh_fail,
    virsh_fields,
    virsh_table,
    warn_user,
    yes_no,
)
from virtnet.host import HostProcess

# Which module holds which verbs (imported when one of them is asked for).
VERB_GROUPS: dict[str, tuple[str, ...]] = {
    "virtnet.face.defs_cmds": ("validate", "format", "update", "dnsmasq-conf"),
    "virtnet.face.net_cmds": (
        "net-define", "net-create", "net-undefine", "net-start", "net-destroy", "net-autostart",
        "net-list", "net-info", "net-dumpxml", "net-uuid", "net-name", "net-dhcp-leases",
        "net-update", "plan"),
    "virtnet.face.port_cmds": (
        "port-create", "port-delete", "port-list", "port-dumpxml",
        "net-port-create", "net-port-list", "net-port-dumpxml", "net-port-delete",
        "domif-xml"),
    "virtnet.face.insight_cmds": ("doctor", "lab", "graph"),
    "virtnet.face.day_two_cmds": (
        "net-forward-add", "net-forward-del", "net-forward-list", "net-apply", "net-addresses",
        "net-new", "net-event"),
    "virtnet.face.migrate_cmds": ("import", "export"),
    "virtnet.face.port_exec": ("port-exec",),
}
MODULE_OF_VERB = {verb: module for module, verbs in VERB_GROUPS.items() for verb in verbs}


def read_input(path: str) -> tuple[bytes, str]:
    """Read a definition file ('-' for stdin) of this process; return its bytes and a display
    name."""
    from virtnet.spec.xml.parse import MAX_DOCUMENT_BYTES  # lazy: lxml, for file verbs only

    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1)
            return data, "<stdin>"
        with open(path, "rb") as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
        return data, path
    except OSError as exc:
        fail(f"{path}: cannot read: {exc.strerror}")


class LocalFiles:
    """The files of this process, as the user's shell sees them (and its stdin for '-')."""

    def read_input(self, path: str) -> tuple[bytes, str]:
        return read_input(path)

    def path(self, name: str) -> Path:
        return Path(name)


class VirtnetGroup(HelpToSession, click.Group):
    """Turns every VirtnetError into one message and exit status 1, and a wrong command line
    into one message and status 2; both as JSON when the command line asks for --json.

    Its verbs are loaded by group on first use (click's lazy subcommands); ``commands``, the
    whole table, loads them all."""

    command_class = VirtnetCommand

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loaded: set[str] = set()
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def commands(self) -> MutableMapping[str, click.Command]:
        for module in VERB_GROUPS:
            self._load(module)
        return self._commands

    @commands.setter
    def commands(self, value: MutableMapping[str, click.Command]) -> None:
        self._commands = value

    def _load(self, module_name: str) -> None:
        if module_name in self._loaded:
            return
        module = importlib.import_module(module_name)
        for command in module.COMMANDS:
            self._commands[command.name] = command
        self._loaded.add(module_name)
        assert {c.name for c in module.COMMANDS} == set(VERB_GROUPS[module_name]), module_name

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        assert name is not None
        self._commands[name] = cmd  # not through ``commands``: that would load every group

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self._commands and cmd_name in MODULE_OF_VERB:
            self._load(MODULE_OF_VERB[cmd_name])
        return self._commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self._commands) | set(MODULE_OF_VERB))

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[JSON_ERRORS] = "--json" in args
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VirtnetError as exc:
            fail(str(exc), error_code(exc), error_details(exc))
        except click.UsageError as exc:
            if not ctx.meta[JSON_ERRORS]:
                raise
            fail(exc.format_message(), USAGE_CODE, status=EXIT_USAGE)


@click.group(cls=VirtnetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--netns",
    metavar="NAME",
    default=None,
    help="Do everything inside this existing network namespace.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep all state (definitions, runtime, dnsmasq files) under this directory.",
)
# The version is given, not looked up: importlib.metadata costs ~40 ms per command.
@click.version_option(version=__version__, package_name="virtnet")
@click.pass_context
def main(ctx: click.Context, netns: str | None, state_dir: Path | None) -> None:
    """virtnet: libvirt-compatible virtual networks, faithful, transactional, explainable."""
    given = ctx.obj if isinstance(ctx.obj, Session) else Session()
    ctx.obj = Session(netns=netns, state_dir=state_dir,
                      services=given.services or LocalServices(state_dir),
                      files=given.files or LocalFiles(), out=given.out)
    if netns is not None:
        # Before any command runs, so every socket, sysctl and child process lives in there.
        HostProcess.enter_netns(netns)


@main.command("net-edit")
@click.argument("network", shell_complete=complete_network)
@click.pass_context
def net_edit_cmd(ctx: click.Context, network: str) -> None:
    """Edit a network's definition in $VISUAL or $EDITOR; it is checked before it is saved."""
    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    original = engine.definition_xml(record.name)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory(prefix="virtnet-edit-") as tmp:
        path = Path(tmp) / f"{record.name}.xml"
        path.write_text(original)
        while True:
            # $EDITOR may carry arguments ("code --wait"): split it as a shell would, but run
            # it without one.
            status = HostProcess.run_attached([*shlex.split(editor), str(path)])
            if status != 0:
                fail(f"{editor} exited with status {status}; "
                     f"network {record.name} left unchanged")
            edited = path.read_bytes()
            try:
                changed = edited.decode(errors="replace") != original and engine.edit(
                    record.name, edited, source=str(path)
                )
            except VirtnetError as exc:
                echo(f"error: {exc}", err=True)
                # Like virsh: offer another round in the editor when someone can answer.
                if sys.stdin.isatty() and click.confirm("Failed. Try again?", default=True):
                    continue
                fail(f"network {record.name} left unchanged")
            break
    if changed:
        virsh_echo(f"Network {record.name} XML configuration edited.")
    else:
        virsh_echo(f"Network {record.name} XML configuration not changed.")


@main.command("help")
@click.argument("verb", required=False)
@click.pass_context
def help_cmd(ctx: click.Context, verb: str | None) -> None:
    """Show the help of VERB (as VERB --help does), or of virtnet."""
    parent = ctx.parent if ctx.parent is not None else ctx
    if verb is None:
        echo(parent.get_help())
        return
    command = main.get_command(parent, verb)
    if command is None:
        raise click.UsageError(f"unknown verb '{verb}' (virtnet help lists them)", ctx=ctx)
    with click.Context(command, info_name=verb, parent=parent) as sub:
        echo(command.get_help(sub))


__all__ = [
    "ERROR_CODES", "EXIT_FAILED", "EXIT_USAGE", "FAILED_CODE", "JSON_ERRORS", "MODULE_OF_VERB",
    "PIPED_WIDTH", "USAGE_CODE", "VERB_GROUPS", "LocalFiles", "Path", "VirshFailure",
    "VirtnetCommand", "VirtnetGroup", "complete_network", "emit_json", "engine_of",
    "error_code", "error_details", "fail", "lookup_network", "main", "output_console",
    "port_manager_of", "read_input", "virsh_echo", "virsh_fail", "virsh_fields",
    "virsh_table", "warn_user", "yes_no",
]


if __name__ == "__main__":
    main()
