"""virtnet's command line: virsh's verbs where virsh has them, our own beside them.

Kept light on purpose: heavy modules (lxml, rich, pyroute2, the engine) are imported inside the
commands that use them, never at the top of this module.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from virtnet.errors import VirtnetError


class Context:
    """Global options, passed to every command."""

    def __init__(self, netns: str | None, state_dir: Path | None) -> None:
        self.netns = netns
        self.state_dir = state_dir


def fail(message: str) -> NoReturn:
    """Print one clear message and exit with status 1."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def read_input(path: str) -> tuple[bytes, str]:
    """Read a definition file ('-' for stdin); return its bytes and a display name."""
    from virtnet.xml.parse import MAX_DOCUMENT_BYTES

    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1)
            return data, "<stdin>"
        with open(path, "rb") as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
        return data, path
    except OSError as exc:
        fail(f"{path}: cannot read: {exc.strerror}")


class VirtnetGroup(click.Group):
    """Turns every VirtnetError into one message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VirtnetError as exc:
            fail(str(exc))


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
@click.version_option(package_name="virtnet")
@click.pass_context
def main(ctx: click.Context, netns: str | None, state_dir: Path | None) -> None:
    """virtnet: libvirt-compatible virtual networks, faithful, transactional, explainable."""
    ctx.obj = Context(netns=netns, state_dir=state_dir)


# --- definitions: validate, format -----------------------------------------------------


@main.command("validate")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def validate_cmd(files: tuple[str, ...], as_json: bool) -> None:
    """Check network definitions; exit 0 if all are valid, 1 otherwise."""
    from virtnet.errors import XMLParseError
    from virtnet.validate import validate
    from virtnet.xml.parse import parse_network

    results = []
    for path in files:
        data, name = read_input(path)
        try:
            net = parse_network(data, source=name)
        except XMLParseError as exc:
            results.append({"file": name, "valid": False, "problems": [str(exc)]})
            continue
        problems = [f"{name}: {p}" for p in validate(net)]
        results.append({"file": name, "valid": not problems, "problems": problems})
    if as_json:
        emit_json(results)
    else:
        for result in results:
            if result["valid"]:
                click.echo(f"{result['file']}: valid")
            for problem in result["problems"]:
                click.echo(problem, err=True)
    sys.exit(0 if all(r["valid"] for r in results) else 1)


@main.command("format")
@click.argument("file")
def format_cmd(file: str) -> None:
    """Print a definition in libvirt's canonical layout (refused if it is not valid)."""
    from virtnet.errors import ValidationError
    from virtnet.validate import validate
    from virtnet.xml.format import format_network
    from virtnet.xml.parse import parse_network

    data, name = read_input(file)
    net = parse_network(data, source=name)
    problems = validate(net)
    if problems:
        raise ValidationError(problems, source=name)
    click.echo(format_network(net), nl=False)


# --- new commands are added above this line ------------------------------------------


if __name__ == "__main__":
    main()
