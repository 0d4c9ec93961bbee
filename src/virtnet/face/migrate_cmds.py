"""``virtnet import`` and ``virtnet export``: networks from a libvirt and back (the CLI side of
virtnet.service.migrate). Both run in the user's process, never in the daemon: they read and
write the directories the command line names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from virtnet.face.common import EXIT_FAILED, command, echo, emit_json, engine_of
from virtnet.service.migrate import export_networks, import_networks, libvirt_network_files


def _report(outcomes: list[Any], verb: str, dry_run: bool, as_json: bool) -> None:
    if as_json:
        emit_json([outcome.to_dict() for outcome in outcomes])
    else:
        would = "would be " if dry_run else ""
        for outcome in outcomes:
            if outcome.done:
                extra = " (autostart)" if outcome.autostart else ""
                echo(f"Network {outcome.name} {would}{verb}{extra}: {outcome.path}")
                for step in outcome.next_steps:
                    echo(f"  then: {step}")
            else:
                echo(f"Network {outcome.name} not {verb}: {outcome.reason}", err=True)
        if not outcomes:
            echo("No network to " + ("import" if verb == "imported" else "export"))
        echo("")
    if any(not outcome.done for outcome in outcomes):
        raise SystemExit(EXIT_FAILED)


@command("import")
@click.argument("networks", nargs=-1)
@click.option("--from", "config_dir", type=click.Path(file_okay=False, path_type=Path),
              default="/etc/libvirt/qemu/networks", show_default=True,
              help="libvirt's directory of network definitions (autostart/ inside it).")
@click.option("--status-dir", type=click.Path(file_okay=False, path_type=Path),
              default="/run/libvirt/network", show_default=True,
              help="libvirt's status files: the networks it runs now.")
@click.option("--dry-run", is_flag=True, help="Say what would be imported; define nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_context
def import_cmd(ctx: click.Context, networks: tuple[str, ...], config_dir: Path,
               status_dir: Path, dry_run: bool, as_json: bool) -> None:
    """Define libvirt's networks (all, or NETWORKS) in virtnet, as they are: name, UUID,
    bridge, MAC and autostart. A network libvirt runs now is refused with the reason.
    libvirt's files are left as they are; the output says how to retire them there."""
    engine = engine_of(ctx)
    files = libvirt_network_files(config_dir, status_dir)
    _report(import_networks(engine, files, networks, dry_run=dry_run), "imported", dry_run,
            as_json)


@command("export")
@click.argument("networks", nargs=-1)
@click.option("--to", "target", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Where to write NAME.xml (libvirt's own directory is "
              "/etc/libvirt/qemu/networks, read when libvirtd starts).")
@click.option("--dry-run", is_flag=True, help="Say what would be written; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_context
def export_cmd(ctx: click.Context, networks: tuple[str, ...], target: Path, dry_run: bool,
               as_json: bool) -> None:
    """Write virtnet's networks (all persistent ones, or NETWORKS) as libvirt keeps them:
    NAME.xml and an autostart link. No file is overwritten; virtnet's definitions stay until
    you undefine them, and the output says how to hand each to a running libvirtd."""
    _report(export_networks(engine_of(ctx), networks, target, dry_run=dry_run), "exported",
            dry_run, as_json)


COMMANDS = (import_cmd, export_cmd)
