"""The definition verbs: validate, format, update and dnsmasq-conf read a definition FILE and
print; none touches the state or the host."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click

from virtnet.errors import ValidationError, XMLParseError
from virtnet.face.common import command, echo, emit_json, fail, file_path, read_input
from virtnet.paths import DnsmasqPaths, StatePaths
from virtnet.render.dnsmasq import render_addnhosts, render_conf, render_hostsfile
from virtnet.spec.update import apply_update
from virtnet.spec.validate import validate
from virtnet.spec.xml.format import format_network
from virtnet.spec.xml.parse import network_from_tree, parse_document, parse_network
from virtnet.spec.xml.schema import unknown_items


@command("validate")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def validate_cmd(files: tuple[str, ...], as_json: bool) -> None:
    """Check network definitions; exit 0 if all are valid, 1 otherwise.

    Elements and attributes libvirt's schema does not know (a misspelt <forward>, which
    libvirt's parser would silently drop) count as problems, each named with its line."""
    results = []
    for path in files:
        data, name = read_input(path)
        try:
            root = parse_document(data, name)
        except XMLParseError as exc:
            results.append({"file": name, "valid": False, "problems": [str(exc)]})
            continue
        problems = [str(item) for item in unknown_items(root, name)]
        try:
            net = network_from_tree(root, name)
        except XMLParseError as exc:
            problems.append(str(exc))
        else:
            problems += [f"{name}: {p}" for p in validate(net)]
        results.append({"file": name, "valid": not problems, "problems": problems})
    if as_json:
        emit_json(results)
    else:
        for result in results:
            if result["valid"]:
                echo(f"{result['file']}: valid")
            for problem in result["problems"]:
                echo(problem, err=True)
    sys.exit(0 if all(r["valid"] for r in results) else 1)


@command("format")
@click.argument("file")
def format_cmd(file: str) -> None:
    """Print a definition in libvirt's canonical layout (refused if it does not parse)."""
    data, name = read_input(file)
    net = parse_network(data, source=name)
    # Like libvirt's parse-and-format: the rules libvirt applies only at define time (what a
    # forward mode supports) are for `validate` and net-define, not for formatting.
    problems = validate(net, stage="parse")
    if problems:
        raise ValidationError(problems, source=name)
    echo(format_network(net), nl=False)


@command("update")
@click.argument("file")
@click.argument("command", metavar="COMMAND")
@click.argument("section", metavar="SECTION")
@click.argument("xml", metavar="XML")
@click.option(
    "--parent-index",
    type=int,
    default=-1,
    show_default=True,
    help="Which <ip> (0-based, among all <ip> elements) a dhcp host/range update works on; "
    "-1 picks the one that already has DHCP.",
)
def update_cmd(file: str, command: str, section: str, xml: str, parent_index: int) -> None:
    """Apply one net-update to the definition in FILE and print the result.

    COMMAND is add (= add-last), add-first, add-last, delete or modify. SECTION is one of
    ip-dhcp-host, ip-dhcp-range, dns-host, dns-txt, dns-srv, forward-interface, portgroup.
    XML is the entry itself ('<host .../>'), or @PATH to read it from a file (as in virsh, a
    value not starting with '<' is also read as a path).
    """
    snippet = xml
    if not xml.lstrip().startswith("<"):
        snippet_path = xml[1:] if xml.startswith("@") else xml
        try:
            snippet = file_path(snippet_path).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"{snippet_path}: cannot read the XML snippet: {exc.strerror}")
        except UnicodeDecodeError:
            fail(f"{snippet_path}: cannot read the XML snippet: it is not UTF-8 text")
    data, name = read_input(file)
    net = parse_network(data, source=name)
    updated = apply_update(net, command, section, snippet, parent_index)
    # The updated definition must still be a valid one (libvirt re-reads it the same way).
    problems = validate(updated)
    if problems:
        raise ValidationError(problems, source=f"{name} after update")
    echo(format_network(updated), nl=False)


@command("dnsmasq-conf")
@click.argument("file")
@click.option("--dnsmasq-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory the dnsmasq files are said to live in (default: the state's).")
@click.option("--hostsfile", is_flag=True, help="Print the DHCP hosts file instead.")
@click.option("--addnhosts", is_flag=True, help="Print the addn-hosts file instead.")
@click.pass_context
def dnsmasq_conf_cmd(ctx: click.Context, file: str, dnsmasq_dir: Path | None, hostsfile: bool,
                     addnhosts: bool) -> None:
    """Print the dnsmasq configuration net-start would write for a definition FILE."""
    if hostsfile and addnhosts:
        raise click.UsageError("--hostsfile and --addnhosts exclude each other")

    data, name = read_input(file)
    net = parse_network(data, source=name)
    problems = validate(net)
    if problems:
        raise ValidationError(problems, source=name)
    paths = DnsmasqPaths.for_state(StatePaths.from_option(ctx.obj.state_dir))
    if dnsmasq_dir is not None:
        paths = replace(paths, directory=dnsmasq_dir)
    if hostsfile:
        text = render_hostsfile(net)
    elif addnhosts:
        text = render_addnhosts(net)
    else:
        text = render_conf(net, paths)
    echo(text, nl=False)


# The verbs of this group, as virtnet.face.cli registers them.
COMMANDS = (
    validate_cmd,
    format_cmd,
    update_cmd,
    dnsmasq_conf_cmd,
)
