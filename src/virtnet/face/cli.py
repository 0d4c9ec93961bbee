"""virtnet's command line: virsh's verbs where virsh has them, our own beside them.

Kept light on purpose: heavy modules (lxml, rich, pyroute2, the engine) are imported inside the
commands that use them, never at the top of this module.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from virtnet import __version__
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
from virtnet.host import Host


class Context:
    """Global options, passed to every command."""

    def __init__(self, netns: str | None, state_dir: Path | None) -> None:
        self.netns = netns
        self.state_dir = state_dir


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


def _json_errors() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(JSON_ERRORS))


def fail(message: str, code: str = FAILED_CODE, details: dict[str, Any] | None = None,
         status: int = EXIT_FAILED) -> NoReturn:
    """Print one clear message (a JSON object with --json) and exit with STATUS."""
    if _json_errors():
        error = {"code": code, "message": message, **(details or {})}
        click.echo(json.dumps({"error": error}), err=True)
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(status)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def read_input(path: str) -> tuple[bytes, str]:
    """Read a definition file ('-' for stdin); return its bytes and a display name."""
    from virtnet.spec.xml.parse import MAX_DOCUMENT_BYTES

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
    """Turns every VirtnetError into one message and exit status 1, and a wrong command line
    into one message and status 2; both as JSON when the command line asks for --json."""

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


def complete_network(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of a network argument (virtnet.face.completion; loaded only at a TAB)."""
    from virtnet.face.completion import complete_network as complete

    return complete(ctx, param, incomplete)


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
    ctx.obj = Context(netns=netns, state_dir=state_dir)
    if netns is not None:
        # Before any command runs, so every socket, sysctl and child process lives in there.
        Host.enter_netns(netns)


# --- definitions: validate, format -----------------------------------------------------


@main.command("validate")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def validate_cmd(files: tuple[str, ...], as_json: bool) -> None:
    """Check network definitions; exit 0 if all are valid, 1 otherwise.

    Elements and attributes libvirt's schema does not know (a misspelt <forward>, which
    libvirt's parser would silently drop) count as problems, each named with its line."""
    from virtnet.spec.validate import validate
    from virtnet.spec.xml.parse import network_from_tree, parse_document
    from virtnet.spec.xml.schema import unknown_items

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
                click.echo(f"{result['file']}: valid")
            for problem in result["problems"]:
                click.echo(problem, err=True)
    sys.exit(0 if all(r["valid"] for r in results) else 1)


@main.command("format")
@click.argument("file")
def format_cmd(file: str) -> None:
    """Print a definition in libvirt's canonical layout (refused if it does not parse)."""
    from virtnet.spec.validate import validate
    from virtnet.spec.xml.format import format_network
    from virtnet.spec.xml.parse import parse_network

    data, name = read_input(file)
    net = parse_network(data, source=name)
    # Like libvirt's parse-and-format: the rules libvirt applies only at define time (what a
    # forward mode supports) are for `validate` and net-define, not for formatting.
    problems = validate(net, stage="parse")
    if problems:
        raise ValidationError(problems, source=name)
    click.echo(format_network(net), nl=False)


@main.command("update")
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
    from virtnet.spec.update import apply_update
    from virtnet.spec.validate import validate
    from virtnet.spec.xml.format import format_network
    from virtnet.spec.xml.parse import parse_network

    snippet = xml
    if not xml.lstrip().startswith("<"):
        snippet_path = xml[1:] if xml.startswith("@") else xml
        try:
            snippet = Path(snippet_path).read_text(encoding="utf-8")
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
    click.echo(format_network(updated), nl=False)


# --- networks: virsh's net-* verbs (state under --state-dir, inside --netns) -----------


def engine_of(ctx: click.Context) -> Any:
    """The engine over this invocation's state directory (imported lazily: it is heavy)."""
    from virtnet.service.engine import Engine
    from virtnet.paths import StatePaths

    return Engine(StatePaths.from_option(ctx.obj.state_dir))


def virsh_echo(text: str = "") -> None:
    """Print a command's output followed by the blank line virsh adds after every command."""
    if text and not text.endswith("\n"):
        text += "\n"
    click.echo(text + "\n", nl=False)


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
    click.echo("")
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
            if _json_errors():  # one object: virsh's first line leads the message
                fail(f"{self.what}: {exc}", error_code(exc), error_details(exc))
            virsh_fail(f"{self.what}\nerror: {exc}")
        return False


def lookup_network(engine: Any, name: str) -> Any:
    """The network named (or with UUID) ``name``, or virsh's two-line "failed to get" error."""
    with VirshFailure(f"failed to get network '{name}'"):
        return engine.lookup(name)


def warn_user(message: str) -> None:
    """A warning for the user, on stderr (the command goes on)."""
    click.echo(f"warning: {message}", err=True)


PIPED_WIDTH = 4096  # columns of rich's output to a pipe or file: wider than any table row


def output_console() -> Any:
    """rich's console for stdout: sized to the terminal on one; piped or redirected, so wide
    that no table row or line wraps (``| grep`` and ``> file`` see one row per line, and a
    table is only as wide as its content)."""
    from rich.console import Console  # lazy: rich is heavy, and only doctor and lab print so

    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPED_WIDTH, soft_wrap=True)


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


@main.command("net-define")
@click.argument("file")
@click.option("--validate", is_flag=True,
              help="Refuse the file if it has elements or attributes libvirt's schema does "
                   "not know (otherwise each is a warning, and ignored).")
@click.pass_context
def net_define_cmd(ctx: click.Context, file: str, validate: bool) -> None:
    """Define a persistent network from an XML FILE (or '-' for stdin)."""
    from virtnet.spec.xml.schema import check_document

    data, name = read_input(file)
    with VirshFailure(f"Failed to define network from {name}"):
        unknown = check_document(data, name, refuse=validate)
        for item in unknown:
            click.echo(f"warning: {item.describe(', ignored')}", err=True)
        net = engine_of(ctx).define(data, source=name)
    virsh_echo(f"Network {net.name} defined from {name}")


@main.command("net-create")
@click.argument("file")
@click.pass_context
def net_create_cmd(ctx: click.Context, file: str) -> None:
    """Create and start a transient network from an XML FILE (or '-' for stdin)."""
    data, name = read_input(file)
    with VirshFailure(f"Failed to create network from {name}"):
        net = engine_of(ctx).create(data, source=name)
    virsh_echo(f"Network {net.name} created from {name}")


@main.command("net-undefine")
@click.argument("network", shell_complete=complete_network)
@click.pass_context
def net_undefine_cmd(ctx: click.Context, network: str) -> None:
    """Forget a persistent network (an active one keeps running, as transient)."""
    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    with VirshFailure(f"Failed to undefine network {record.name}"):
        engine.undefine(record.name)
    virsh_echo(f"Network {record.name} has been undefined")


@main.command("net-start")
@click.argument("network", shell_complete=complete_network)
@click.pass_context
def net_start_cmd(ctx: click.Context, network: str) -> None:
    """Start a defined network; for an active one, restart its dnsmasq if it died."""
    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    with VirshFailure(f"Failed to start network {record.name}"):
        engine.start(record.name)
    if record.active:
        virsh_echo(f"Network {record.name} repaired: dnsmasq restarted")
    else:
        virsh_echo(f"Network {record.name} started")


@main.command("net-destroy")
@click.argument("network", shell_complete=complete_network)
@click.pass_context
def net_destroy_cmd(ctx: click.Context, network: str) -> None:
    """Stop an active network, undoing everything its start did."""
    from virtnet.service.engine import NotFoundError

    engine = engine_of(ctx)
    try:
        name = engine.lookup(network).name
    except NotFoundError:
        name = lookup_network(engine, network).name  # virsh's "failed to get network"
    except VirtnetError:
        name = network  # a file of it is unreadable: destroy still finds what it made
    with VirshFailure(f"Failed to destroy network {name}"):
        name = engine.destroy(name, warn=warn_user)
    virsh_echo(f"Network {name} destroyed")


@main.command("net-autostart")
@click.argument("network", shell_complete=complete_network)
@click.option("--disable", is_flag=True, help="Do not start the network with the host.")
@click.pass_context
def net_autostart_cmd(ctx: click.Context, network: str, disable: bool) -> None:
    """Mark a persistent network to start with the host (or not, with --disable)."""
    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    verb = "unmark" if disable else "mark"
    with VirshFailure(f"failed to {verb} network {record.name} as autostarted"):
        engine.set_autostart(record.name, not disable)
    virsh_echo(f"Network {record.name} {verb}ed as autostarted")


@main.command("net-list")
@click.option("--all", "all_", is_flag=True, help="List inactive and active networks.")
@click.option("--inactive", is_flag=True, help="List inactive networks only.")
@click.option("--persistent", is_flag=True, help="List persistent networks.")
@click.option("--transient", is_flag=True, help="List transient networks.")
@click.option("--autostart", is_flag=True, help="List networks with autostart enabled.")
@click.option("--no-autostart", is_flag=True, help="List networks with autostart disabled.")
@click.option("--name", "names_only", is_flag=True, help="List network names only.")
@click.option("--uuid", "uuids_only", is_flag=True, help="List UUIDs only.")
@click.option("--table", is_flag=True, help="List as a table (the default).")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
def net_list_cmd(
    ctx: click.Context, all_: bool, inactive: bool, persistent: bool, transient: bool,
    autostart: bool, no_autostart: bool, names_only: bool, uuids_only: bool, table: bool,
    as_json: bool,
) -> None:
    """List networks (active ones unless --all or --inactive), as virsh net-list does."""
    if table + names_only + uuids_only > 1:
        virsh_fail("Only one argument from --table, --name and --uuid may be specified.")
    rows = engine_of(ctx).list_networks(
        all=all_, inactive=inactive, persistent=persistent, transient=transient,
        autostart=autostart, no_autostart=no_autostart, warn=warn_user,
    )
    if as_json:
        emit_json(rows)
    elif names_only or uuids_only:
        key = "name" if names_only else "uuid"
        virsh_echo("".join(f"{row[key]}\n" for row in rows))
    else:
        cells = [
            [row["name"], row["state"], yes_no(row["autostart"]), yes_no(row["persistent"])]
            for row in rows
        ]
        virsh_echo(virsh_table(["Name", "State", "Autostart", "Persistent"], cells))
        for row in rows:
            for problem in row["problems"]:
                click.echo(f"warning: network {row['name']}: {problem}", err=True)


@main.command("net-info")
@click.argument("network", shell_complete=complete_network)
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON.")
@click.pass_context
def net_info_cmd(ctx: click.Context, network: str, as_json: bool) -> None:
    """Basic information about a network, and what the kernel shows is wrong with it."""
    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    info = engine.info(record.name)
    if as_json:
        emit_json(info)
        return
    fields = [
        ("Name", info["name"]),
        ("UUID", info["uuid"]),
        ("Active", yes_no(info["active"])),
        ("Persistent", yes_no(info["persistent"])),
        ("Autostart", yes_no(info["autostart"])),
    ]
    if info["bridge"]:
        fields.append(("Bridge", info["bridge"]))
    # accept rules added to other firewalls' chains at start (Docker, firewalld...), and why
    fields += [("Opened", f"{rule['table']} {rule['chain']}: {rule['rule']} ({rule['why']})")
               for rule in info.get("coexistence", [])]
    fields += [("Problem", problem) for problem in info["problems"]]
    virsh_echo(virsh_fields(fields))


@main.command("net-dumpxml")
@click.argument("network", shell_complete=complete_network)
@click.option("--inactive", is_flag=True, help="The persistent definition, not the live one.")
@click.option("--xpath", default=None, metavar="EXPRESSION",
              help="Print only the nodes the XPath EXPRESSION selects, one per line.")
@click.option("--wrap", is_flag=True, help="With --xpath: all of them inside one <nodes>.")
@click.pass_context
def net_dumpxml_cmd(ctx: click.Context, network: str, inactive: bool, xpath: str | None,
                    wrap: bool) -> None:
    """Print a network's definition in libvirt's layout."""
    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    text = engine.dumpxml(record.name, inactive=inactive)
    if xpath is not None:
        from virtnet.spec.xml.document import XPathError, select_nodes

        try:
            text = select_nodes(text, xpath, record.name, wrap=wrap,
                                warn=lambda message: click.echo(f"warning: {message}",
                                                                err=True))
        except XPathError as exc:
            virsh_fail(exc.message)
    virsh_echo(text)


@main.command("net-uuid")
@click.argument("network", shell_complete=complete_network)
@click.option("--json", "as_json", is_flag=True, help="Print the UUID as JSON.")
@click.pass_context
def net_uuid_cmd(ctx: click.Context, network: str, as_json: bool) -> None:
    """Print a network's UUID."""
    record = lookup_network(engine_of(ctx), network)
    if as_json:
        emit_json({"name": record.name, "uuid": record.uuid})
    else:
        virsh_echo(record.uuid)


@main.command("net-name")
@click.argument("uuid")
@click.option("--json", "as_json", is_flag=True, help="Print the name as JSON.")
@click.pass_context
def net_name_cmd(ctx: click.Context, uuid: str, as_json: bool) -> None:
    """Print the name of the network with this UUID."""
    from virtnet.service.engine import UUID_LENGTH

    if len(uuid) != UUID_LENGTH:
        virsh_fail(f"failed to get network '{uuid}'")  # virsh does not even look it up
    with VirshFailure(f"failed to get network '{uuid}'"):
        name = engine_of(ctx).name_of(uuid)
    if as_json:
        emit_json({"name": name, "uuid": uuid})
    else:
        virsh_echo(name)


@main.command("net-dhcp-leases")
@click.argument("network", shell_complete=complete_network)
@click.option("--mac", default=None, help="Only the leases of this MAC address.")
@click.option("--json", "as_json", is_flag=True, help="Print the leases as JSON.")
@click.pass_context
def net_dhcp_leases_cmd(ctx: click.Context, network: str, mac: str | None, as_json: bool) -> None:
    """The DHCP leases dnsmasq has given on a network."""
    from virtnet.store.leases import HEADERS

    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    with VirshFailure(f"Failed to get leases info for {record.name}"):
        leases = engine.dhcp_leases(record.name, mac=mac)
    if as_json:
        emit_json([lease.to_dict() for lease in leases])
    else:
        virsh_echo(virsh_table(list(HEADERS), [lease.cells() for lease in leases]))


@main.command("net-update")
@click.argument("network", shell_complete=complete_network)
@click.argument("command", metavar="COMMAND")
@click.argument("section", metavar="SECTION")
@click.argument("xml", metavar="XML")
@click.option("--parent-index", type=int, default=-1, help="Which <ip> a dhcp update works on.")
@click.option("--live", is_flag=True, help="Affect the running network.")
@click.option("--config", is_flag=True, help="Affect the next start of the network.")
@click.option("--current", is_flag=True, help="Affect the running network if it runs, "
              "else the next start.")
@click.pass_context
def net_update_cmd(
    ctx: click.Context, network: str, command: str, section: str, xml: str, parent_index: int,
    live: bool, config: bool, current: bool,
) -> None:
    """Add, delete or modify one entry of a network (virsh net-update).

    COMMAND: add (= add-last), add-first, add-last, delete, modify. SECTION: ip-dhcp-host,
    ip-dhcp-range, dns-host, dns-txt, dns-srv, forward-interface, portgroup... XML: the entry
    itself, or (when it does not start with '<') a file holding it.
    """
    if current and (live or config):
        virsh_fail(
            f"Options --current and --{'live' if live else 'config'} are mutually exclusive"
        )
    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    snippet = xml
    if not xml.startswith("<"):
        try:
            snippet = Path(xml).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{xml}: cannot read the XML entry: {exc}")
    with VirshFailure(f"Failed to update network {record.name}"):
        did_live, did_config = engine.update(
            record.name, command, section, snippet, parent_index, live=live, config=config
        )
    if did_live and did_config:
        what = "persistent config and live state"
    else:
        what = "live state" if did_live else "persistent config"
    # virsh prints this one without a newline of its own: only its trailing blank line shows.
    click.echo(f"Updated network {record.name} {what}")


@main.command("net-edit")
@click.argument("network", shell_complete=complete_network)
@click.pass_context
def net_edit_cmd(ctx: click.Context, network: str) -> None:
    """Edit a network's definition in $VISUAL or $EDITOR; it is checked before it is saved."""
    import shlex
    import tempfile

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
            status = Host.run_attached([*shlex.split(editor), str(path)])
            if status != 0:
                fail(f"{editor} exited with status {status}; "
                     f"network {record.name} left unchanged")
            edited = path.read_bytes()
            try:
                changed = edited.decode(errors="replace") != original and engine.edit(
                    record.name, edited, source=str(path)
                )
            except VirtnetError as exc:
                click.echo(f"error: {exc}", err=True)
                # Like virsh: offer another round in the editor when someone can answer.
                if sys.stdin.isatty() and click.confirm("Failed. Try again?", default=True):
                    continue
                fail(f"network {record.name} left unchanged")
            break
    if changed:
        virsh_echo(f"Network {record.name} XML configuration edited.")
    else:
        virsh_echo(f"Network {record.name} XML configuration not changed.")


@main.command("plan")
@click.argument("target", metavar="NAME|FILE", shell_complete=complete_network)
@click.option("--commands", is_flag=True, help="Print the equivalent shell commands.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_context
def plan_cmd(ctx: click.Context, target: str, commands: bool, as_json: bool) -> None:
    """Print the plan net-start would execute for a network (by name, or from a FILE)."""
    from virtnet.service.engine import NotFoundError

    engine = engine_of(ctx)
    try:
        # A known network wins over a file of the same name in the current directory.
        plan_of: Any = engine.lookup(target).name
    except NotFoundError:
        if target != "-" and not Path(target).is_file():
            lookup_network(engine, target)  # virsh's "failed to get network" error
        data, name = read_input(target)
        plan_of = engine.parse(data, source=name)
    with VirshFailure(f"cannot plan network {target}"):
        plan = engine.plan(plan_of)
    if as_json:
        emit_json(plan.to_dict())
    elif commands:
        for line in plan.commands():
            click.echo(line)
    else:
        for index, line in enumerate(plan.describe(), start=1):
            click.echo(f"{index:>3}. {line}")


@main.command("dnsmasq-conf")
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
    from dataclasses import replace

    from virtnet.render.dnsmasq import DnsmasqPaths, render_addnhosts, render_conf, render_hostsfile
    from virtnet.paths import StatePaths
    from virtnet.spec.validate import validate
    from virtnet.spec.xml.parse import parse_network

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
    click.echo(text, nl=False)


# --- guest ports: port-create, port-delete, port-list, port-dumpxml ----------------------


def port_manager_of(ctx: click.Context) -> Any:
    from virtnet.service.ports import PortManager

    return PortManager(engine_of(ctx))


def port_line(summary: dict[str, Any]) -> str:
    """One line saying what a port got: device, character device, uplink or bridge."""
    where = []
    if summary["device"]:
        device = summary["device"]
        if summary["ifindex"] is not None:
            device += f" (ifindex {summary['ifindex']})"
        where.append(device)
    if summary["char_device"]:
        where.append(summary["char_device"])
    if summary["uplink"]:
        where.append(f"on {summary['uplink']}, mode {summary['mode']}")
    if summary["bridge"]:
        where.append(f"on bridge {summary['bridge']}")
    if summary["pci_address"]:
        where.append(f"VF {summary['pci_address']}")
    return ", ".join(where)


@main.command("port-create")
@click.argument("network", shell_complete=complete_network)
@click.option("--mac", default=None, metavar="MAC", help="The guest interface's MAC address.")
@click.option("--portgroup", default=None, metavar="NAME", help="Portgroup to take settings from.")
@click.option("--owner", default=None, metavar="NAME", help="Name of the guest owning the port.")
@click.option("--owner-uuid", default=None, metavar="UUID", help="UUID of the owning guest.")
@click.option("--inbound", default=None, metavar="AVG[,PEAK[,BURST[,FLOOR]]]",
              help="The port's inbound rate (kB/s, burst KiB), as virsh attach-interface.")
@click.option("--outbound", default=None, metavar="AVG[,PEAK[,BURST]]",
              help="The port's outbound rate (kB/s, burst KiB).")
@click.option("--file", "xml_file", default=None, metavar="FILE",
              help="Take the request from a <networkport> XML FILE ('-' for stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print the port as JSON.")
@click.pass_context
def port_create_cmd(ctx: click.Context, network: str, mac: str | None, portgroup: str | None,
                    owner: str | None, owner_uuid: str | None, inbound: str | None,
                    outbound: str | None, xml_file: str | None, as_json: bool) -> None:
    """Allocate a guest port on an active NETWORK and create its device (tap or macvtap)."""
    from virtnet.service.ports import PortRequest, parse_rate_option

    if xml_file is not None:
        request = port_request_from_file(xml_file)
        if mac is not None:
            request.mac = mac
    elif mac is None:
        raise click.UsageError("--mac is required (or give a <networkport> with --file)")
    else:
        request = PortRequest(mac=mac)
    if portgroup is not None:
        request.portgroup = portgroup
    if owner is not None:
        request.owner_name = owner
    if owner_uuid is not None:
        request.owner_uuid = owner_uuid
    if inbound is not None or outbound is not None:
        from virtnet.spec.model import Bandwidth

        request.bandwidth = request.bandwidth or Bandwidth()
        if inbound is not None:
            request.bandwidth.inbound = parse_rate_option("--inbound", inbound, floor=True)
        if outbound is not None:
            request.bandwidth.outbound = parse_rate_option("--outbound", outbound, floor=False)
    port = create_port(ctx, network, request)
    summary = port.summary()
    if as_json:
        emit_json(summary)
    else:
        virsh_echo(f"Network port {port.uuid} created: {port_line(summary)}")


def port_request_from_file(path: str) -> Any:
    """The port request of a <networkport> XML file ('-' for stdin)."""
    from virtnet.service.ports import PortRequest
    from virtnet.spec.xml.portxml import parse_port

    data, name = read_input(path)
    return PortRequest.from_port(parse_port(data, source=name))


def create_port(ctx: click.Context, network: str, request: Any) -> Any:
    """Create the port REQUEST asks for on NETWORK, failing as virsh does."""
    manager = port_manager_of(ctx)
    record = lookup_network(manager.engine, network)
    with VirshFailure(f"Failed to create network port on network {record.name}"):
        return manager.create(record.name, request)


@main.command("port-delete")
@click.argument("network", shell_complete=complete_network)
@click.argument("port")
@click.pass_context
def port_delete_cmd(ctx: click.Context, network: str, port: str) -> None:
    """Delete a port of NETWORK (by UUID, device name or MAC) and its device."""
    manager = port_manager_of(ctx)
    record = lookup_network(manager.engine, network)
    with VirshFailure(f"Failed to delete network port {port}"):
        deleted = manager.delete(record.name, port)
    virsh_echo(f"Network port {deleted.uuid} deleted")


@main.command("port-list")
@click.argument("network", shell_complete=complete_network)
@click.option("--json", "as_json", is_flag=True, help="Print the ports as JSON.")
@click.pass_context
def port_list_cmd(ctx: click.Context, network: str, as_json: bool) -> None:
    """List the ports of an active NETWORK."""
    manager = port_manager_of(ctx)
    record = lookup_network(manager.engine, network)
    with VirshFailure(f"Failed to list network ports of {record.name}"):
        ports = [port.summary() for port in manager.list(record.name)]
    if as_json:
        emit_json(ports)
        return
    rows = [[p["uuid"], p["device"] or "-", p["mac"], p["uplink"] or p["bridge"]
             or p["pci_address"] or "-", p["mode"] or p["plug"], p["portgroup"] or "-",
             p["owner"] or "-"] for p in ports]
    virsh_echo(virsh_table(["UUID", "Device", "MAC", "Via", "Mode", "Portgroup", "Owner"],
                           rows))


@main.command("port-dumpxml")
@click.argument("network", shell_complete=complete_network)
@click.argument("port")
@click.pass_context
def port_dumpxml_cmd(ctx: click.Context, network: str, port: str) -> None:
    """Print a port in libvirt's <networkport> layout."""
    manager = port_manager_of(ctx)
    record = lookup_network(manager.engine, network)
    with VirshFailure(f"failed to get network port '{port}'"):
        text = manager.dumpxml(record.name, port)
    virsh_echo(text)


# virsh's own names for the port verbs (virsh net-port-*): its arguments, its output.


@main.command("net-port-create")
@click.argument("network", shell_complete=complete_network)
@click.argument("file")
@click.pass_context
def net_port_create_cmd(ctx: click.Context, network: str, file: str) -> None:
    """Create a port of NETWORK from a <networkport> XML FILE (virsh's name for port-create)."""
    port = create_port(ctx, network, port_request_from_file(file))
    virsh_echo(f"Network port {port.uuid} created from {file}")


@main.command("net-port-list")
@click.argument("network", shell_complete=complete_network)
@click.option("--uuid", "uuid_only", is_flag=True, help="List the UUIDs only.")
@click.option("--table", is_flag=True, help="A table (the default).")
@click.option("--json", "as_json", is_flag=True, help="Print the ports as JSON.")
@click.pass_context
def net_port_list_cmd(ctx: click.Context, network: str, uuid_only: bool, table: bool,
                      as_json: bool) -> None:
    """List the ports of NETWORK by UUID, as virsh does (port-list shows more)."""
    if as_json:
        ctx.invoke(port_list_cmd, network=network, as_json=True)
        return
    if uuid_only and table:
        virsh_fail("Only one argument from --table and --uuid may be specified.")
    manager = port_manager_of(ctx)
    record = lookup_network(manager.engine, network)
    with VirshFailure(f"Failed to list network ports of {record.name}"):
        uuids = [port.uuid for port in manager.list(record.name)]
    if uuid_only:
        virsh_echo("".join(f"{uuid}\n" for uuid in uuids))
    else:
        virsh_echo(virsh_table(["UUID"], [[uuid] for uuid in uuids]))


@main.command("net-port-dumpxml")
@click.argument("network", shell_complete=complete_network)
@click.argument("port")
@click.pass_context
def net_port_dumpxml_cmd(ctx: click.Context, network: str, port: str) -> None:
    """Print a port in libvirt's <networkport> layout (virsh's name for port-dumpxml)."""
    ctx.invoke(port_dumpxml_cmd, network=network, port=port)


@main.command("net-port-delete")
@click.argument("network", shell_complete=complete_network)
@click.argument("port")
@click.pass_context
def net_port_delete_cmd(ctx: click.Context, network: str, port: str) -> None:
    """Delete a port of NETWORK and its device (virsh's name for port-delete)."""
    ctx.invoke(port_delete_cmd, network=network, port=port)


# --- explain and prove reachability: doctor, lab, graph ----------------------------------


def _network_or_file(engine: Any, target: str) -> tuple[Any, Any]:
    """(definition, record or None): a known network by name wins over a file of that name."""
    from virtnet.service.engine import NotFoundError

    try:
        record = engine.lookup(target)
        return record.current, record
    except NotFoundError:
        if target != "-" and not Path(target).is_file():
            lookup_network(engine, target)  # virsh's "failed to get network" error
    data, name = read_input(target)
    net = engine.parse(data, source=name)
    return net, None


@main.command("doctor")
@click.argument("networks", nargs=-1, metavar="[NETWORK|FILE]...",
                shell_complete=complete_network)
@click.option("--guest-config", is_flag=True,
              help="Also print the guests' DHCP client configuration for each network.")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON.")
@click.pass_context
def doctor_cmd(ctx: click.Context, networks: tuple[str, ...], guest_config: bool,
               as_json: bool) -> None:
    """Check the host and explain who can reach whom on each network (all defined ones if
    none is named); exit 0 when healthy, 1 with problems."""
    from virtnet.insight.doctor import run_doctor

    engine = engine_of(ctx)
    targets = []
    for target in networks:
        net, record = _network_or_file(engine, target)
        targets.append(record.name if record is not None else net)
    report = run_doctor(engine, targets)
    if as_json:
        emit_json(report.to_dict())
        sys.exit(0 if report.healthy else 1)
    from rich.table import Table

    console = output_console()
    host = Table(title="host", show_lines=False, title_justify="left")
    for column in ("check", "", "detail"):
        host.add_column(column)
    for check in report.checks:
        mark = "[green]ok[/]" if check.ok else ("[red]PROBLEM[/]" if check.problem
                                                 else "[yellow]note[/]")
        detail = check.detail + "".join(f"\n  fix: {f}" for f in check.fix)
        host.add_row(check.name, mark, detail)
    console.print(host)
    for diagnosis in report.networks:
        state = "active" if diagnosis.active else "inactive"
        table = Table(title=f"network {diagnosis.name} ({diagnosis.mode}, {state})",
                      title_justify="left", show_lines=True)
        for column in ("pair", "", "why"):
            table.add_column(column)
        fixes: list[Any] = []
        for row in diagnosis.rows:
            cell = row.cell
            mark = "[green]yes[/]" if cell.predicted else "[red]no[/]"
            numbers = []
            for fix in cell.fix:
                if fix not in fixes:
                    fixes.append(fix)
                numbers.append(str(fixes.index(fix) + 1))
            note = f" (fix {', '.join(numbers)})" if numbers else ""
            table.add_row(row.label, mark, cell.reason + note)
        console.print(table)
        # the commands outside the table, one per line, so they copy and paste whole
        for number, fix in enumerate(fixes, start=1):
            click.echo(f"  fix {number} (on the {fix.where}): {fix.command}")
        for problem in diagnosis.problems:
            console.print(f"[red]problem:[/] {problem}", highlight=False)
        for warning in diagnosis.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        for note in diagnosis.notes:
            console.print(f"[dim]{note}[/]", highlight=False)
        if guest_config and diagnosis.guest_config:
            console.print("guest DHCP configuration:")
            for manager, text in diagnosis.guest_config.items():
                console.print(f"  [bold]{manager}[/]")
                for line in text.rstrip().splitlines():
                    console.print(f"    {line}", highlight=False, markup=False)
    console.print("[green]healthy[/]" if report.healthy else "[red]problems found[/]")
    sys.exit(0 if report.healthy else 1)


def lab_progress_line(message: str) -> None:
    """One stage of a lab run as a line on stderr (when not on a terminal)."""
    click.echo(f"lab: {message}", err=True)


@main.command("lab")
@click.argument("file")
@click.option("--guests", type=click.IntRange(1, 16), default=2, show_default=True,
              help="How many guests to plug in.")
@click.option("--hairpin", type=click.Choice(["on", "off"]), default="off", show_default=True,
              help="Hairpin (reflective relay) on the LAN switch's ports of the uplinks.")
@click.option("--dhcp-client", type=click.Choice(["udhcpc", "dhcpcd", "dhclient"]),
              default="udhcpc", show_default=True,
              help="The client guests run where the network serves DHCP.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def lab_cmd(file: str, guests: int, hairpin: str, dhcp_client: str, as_json: bool) -> None:
    """Build a sandbox of namespaces for the network in FILE, start it with virtnet, measure
    who reaches whom and compare with the prediction; exit 1 if any cell differs."""
    from virtnet.insight.lab import LabOptions, run_lab

    data, _name = read_input(file)
    options = LabOptions(guests=guests, hairpin=hairpin == "on", dhcp_client=dhcp_client)
    xml = data.decode("utf-8", errors="replace")
    try:
        if as_json:
            report = run_lab(xml, options)
            emit_json(report.to_dict())
            sys.exit(0 if report.all_match else 1)
        console = output_console()
        if sys.stdout.isatty():  # the spinner is drawn on stdout
            with console.status("building the lab") as status:
                report = run_lab(xml, options, progress=lambda message: status.update(message))
        else:  # rich's spinner shows nothing off a terminal: a plain line per stage instead
            report = run_lab(xml, options, progress=lab_progress_line)
    except KeyboardInterrupt:
        click.echo("interrupted: the lab was removed", err=True)
        sys.exit(130)
    from rich.table import Table

    for guest in report.guests:
        console.print(f"{guest.name}: {guest.address or 'no address'} — {guest.how}",
                      highlight=False)
    table = Table(title=f"lab: network {report.network}, {report.mode}, hairpin "
                        f"{'on' if report.hairpin else 'off'}", title_justify="left")
    for column in ("from", "to", "predicted", "measured", "why"):
        table.add_column(column)
    for cell in report.cells:
        def word(value: bool) -> str:
            return "[green]yes[/]" if value else "[red]no[/]"

        measured = word(cell.measured) if cell.matches else f"[bold reverse]{word(cell.measured)}[/]"
        table.add_row(cell.src, cell.dst, word(cell.predicted), measured, cell.reason)
    console.print(table)
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items())
    verdict = "[green]all match[/]" if report.all_match else "[red]MISMATCH[/]"
    console.print(f"{report.matched}/{len(report.cells)} cells as predicted: {verdict} ({timing})")
    sys.exit(0 if report.all_match else 1)


@main.command("graph")
@click.argument("target", metavar="NETWORK|FILE", shell_complete=complete_network)
@click.option("-o", "--output", "output", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The picture to write: .svg or .png (.dot writes the Graphviz text).")
@click.option("--hairpin", type=click.Choice(["on", "off"]), default="off", show_default=True,
              help="Draw the external switch ports as hairpinning.")
@click.option("--guests", type=click.IntRange(1, 16), default=2, show_default=True,
              help="How many guests to draw when the network has no ports (yet).")
@click.pass_context
def graph_cmd(ctx: click.Context, target: str, output: Path, hairpin: str, guests: int) -> None:
    """Draw a network's topology (uplinks, bridge or macvtap devices, ports, guests) with the
    pairs that cannot reach each other marked."""
    from virtnet.insight.doctor import read_host_view
    from virtnet.insight.graph import (drawn_topology, guests_of_ports, hypothetical_guests, render,
                               to_dot, write_output)

    engine = engine_of(ctx)
    net, record = _network_or_file(engine, target)
    drawn = None
    if record is not None and record.active:
        from virtnet.service.ports import PortManager

        ports = [port.summary() for port in PortManager(engine).list(record.name)]
        drawn = guests_of_ports(ports) if ports else None
    if drawn is None:
        drawn = hypothetical_guests(net, guests)
    active = record is not None and record.active
    # the host as the doctor reads it: the uplink's name, its addresses, other firewalls;
    # a host that cannot be read (no privilege) is drawn as a plain one
    try:
        view = read_host_view(engine.active_bridges())
    except (HostError, OSError):
        view = None
    topo = drawn_topology(net, view, active, len(drawn), hairpin == "on")
    text = to_dot(net, drawn, topo, active=record.active if record is not None else None)
    if output.suffix.lower() == ".dot":
        write_output(output, text)
    else:
        render(text, output)
    click.echo(f"{output}: network {net.name}, {len(drawn)} guest(s)")


# --- day two: port forwards, net-apply, net-addresses, net-new (virtnet's own verbs) ------


def live_config_options(fn: Any) -> Any:
    """virsh's --live / --config / --current (neither: the current state)."""
    fn = click.option("--current", is_flag=True, help="The current state (the default).")(fn)
    fn = click.option("--config", is_flag=True, help="Change the persistent definition.")(fn)
    return click.option("--live", is_flag=True, help="Change the running network.")(fn)


@main.command("net-forward-add")
@click.argument("network", shell_complete=complete_network)
@click.option("--proto", type=click.Choice(["tcp", "udp"]), required=True)
@click.option("--port", required=True, metavar="P[-Q]", help="Host port or range.")
@click.option("--to", "to", required=True, metavar="ADDR[:PORT]", help="Guest address (and port).")
@click.option("--address", default=None, metavar="HOSTADDR",
              help="Only connections to this host address (default: any).")
@live_config_options
@click.pass_context
def net_forward_add_cmd(ctx: click.Context, network: str, proto: str, port: str, to: str,
                        address: str | None, live: bool, config: bool, current: bool) -> None:
    """Forward a host port to a guest of a NAT network (DNAT, also from the host and guests)."""
    from virtnet.service.forwards import add_forward
    from virtnet.spec.forwards import make_forward

    engine = engine_of(ctx)
    try:
        fwd = make_forward(proto, port, to, address)
    except ValueError as exc:
        virsh_fail(f"invalid forward: {exc}")
    with VirshFailure(f"Failed to add a port forward to network {network}"):
        add_forward(engine, network, fwd, live=live, config=config)
    virsh_echo(f"Port forward {proto} {port} -> {fwd.target()} added to network {network}")


@main.command("net-forward-del")
@click.argument("network", shell_complete=complete_network)
@click.option("--proto", type=click.Choice(["tcp", "udp"]), required=True)
@click.option("--port", required=True, metavar="P[-Q]")
@click.option("--address", default=None, metavar="HOSTADDR")
@live_config_options
@click.pass_context
def net_forward_del_cmd(ctx: click.Context, network: str, proto: str, port: str,
                        address: str | None, live: bool, config: bool, current: bool) -> None:
    """Remove a port forward."""
    from virtnet.service.forwards import delete_forward

    engine = engine_of(ctx)
    with VirshFailure(f"Failed to remove a port forward from network {network}"):
        delete_forward(engine, network, proto, port, address, live=live, config=config)
    virsh_echo(f"Port forward {proto} {port} removed from network {network}")


@main.command("net-forward-list")
@click.argument("network", shell_complete=complete_network)
@click.option("--inactive", is_flag=True, help="The persistent definition's forwards.")
@click.option("--json", "as_json", is_flag=True, help="Print the forwards as JSON.")
@click.pass_context
def net_forward_list_cmd(ctx: click.Context, network: str, inactive: bool, as_json: bool) -> None:
    """List a network's port forwards."""
    from virtnet.service.forwards import list_forwards

    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    with VirshFailure(f"Failed to list the port forwards of network {network}"):
        rows = list_forwards(engine, record.name, inactive=inactive)
    if as_json:
        emit_json(rows)
        return
    table = [[r["proto"], r["address"] or "*", r["port"], r["to"],
              str(r["to_port"]) if r["to_port"] else r["port"]] for r in rows]
    virsh_echo(virsh_table(["Protocol", "Host address", "Port", "Guest", "Guest port"], table))


@main.command("net-apply")
@click.argument("file")
@click.option("--dry-run", is_flag=True, help="Print the steps; change nothing.")
@click.option("--restart", is_flag=True,
              help="Allow stopping and starting the network for what cannot change live.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def net_apply_cmd(ctx: click.Context, file: str, dry_run: bool, restart: bool,
                  as_json: bool) -> None:
    """Change a running network to FILE's definition, touching only what differs."""
    from virtnet.service.live import apply_definition

    engine = engine_of(ctx)
    data, name = read_input(file)
    with VirshFailure(f"Failed to apply {name}"):
        result = apply_definition(engine, data, name, dry_run=dry_run, restart=restart)
    if as_json:
        emit_json(result.to_dict())
        return
    for index, line in enumerate(result.steps, start=1):
        click.echo(f"{index:>3}. {line}")
    if not result.steps:
        click.echo(f"Network {result.network}: nothing to change")
    elif not dry_run:
        click.echo(f"Network {result.network} changed" + (" (restarted)" if result.restarted else ""))


@main.command("net-addresses")
@click.argument("network", shell_complete=complete_network)
@click.option("--json", "as_json", is_flag=True, help="Print the guests as JSON.")
@click.pass_context
def net_addresses_cmd(ctx: click.Context, network: str, as_json: bool) -> None:
    """Every guest on a running network: MAC, addresses, hostname, and where each fact came
    from (DHCP lease, ARP or IPv6 neighbour discovery)."""
    from virtnet.insight.addresses import format_table, network_addresses

    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    with VirshFailure(f"Failed to get the guest addresses of network {record.name}"):
        guests = network_addresses(engine, record.name)
    if as_json:
        emit_json([guest.to_dict() for guest in guests])
        return
    headers, rows = format_table(guests)
    virsh_echo(virsh_table(headers, rows))


@main.command("net-new")
@click.argument("name")
@click.option("--mode", type=click.Choice(["nat", "route", "isolated", "open", "bridge",
                                           "macvtap"]), default="nat", show_default=True)
@click.option("--subnet", default=None, help="IPv4 CIDR, or 'auto' (default for modes with "
              "their own bridge): the first free private /24.")
@click.option("--ipv6", default=None, help="IPv6 /64 CIDR, or 'auto': a free ULA /64.")
@click.option("--no-dhcp", is_flag=True, help="No DHCP range.")
@click.option("--domain", default=None, help="DNS domain of the network's guests.")
@click.option("--dev", default=None, help="nat/route: the uplink; macvtap: the parent "
              "interface.")
@click.option("--bridge", default=None, help="Own-bridge modes: its name; bridge mode: the "
              "existing host bridge.")
@click.option("--macvtap-mode", type=click.Choice(["bridge", "private", "vepa", "passthrough"]),
              default="bridge", show_default=True)
@click.option("--print", "print_only", is_flag=True, help="Print the definition; define "
              "nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what was made as JSON.")
@click.pass_context
def net_new_cmd(ctx: click.Context, name: str, mode: str, subnet: str | None,
                ipv6: str | None, no_dhcp: bool, domain: str | None, dev: str | None,
                bridge: str | None, macvtap_mode: str, print_only: bool, as_json: bool) -> None:
    """Make a network from a few flags, without writing XML (defines it, or --print).

    --subnet auto (and --ipv6 auto) picks a subnet that overlaps no address or route of the
    host, no other virtnet network and no network libvirt has defined or runs here."""
    from virtnet.insight.netnew import NewNetworkOptions, new_network, summary

    engine = engine_of(ctx)
    options = NewNetworkOptions(name=name, mode=mode, subnet=subnet, ipv6=ipv6,
                                dhcp=not no_dhcp, domain=domain, dev=dev, bridge=bridge,
                                macvtap_mode=macvtap_mode)
    with VirshFailure(f"Failed to make network {name}"):
        net = new_network(engine, options, define=not print_only)
    made = {**summary(net), "defined": not print_only}
    if as_json:
        if print_only:
            made["xml"] = engine.format(net, inactive=True)
        emit_json(made)
    elif print_only:
        xml = engine.format(net, inactive=True)
        click.echo(xml, nl=not xml.endswith("\n"))
    else:
        fields = [("Name", name), ("UUID", str(made["uuid"])), ("Mode", str(made["mode"]))]
        if made["bridge"] is not None:
            fields.append(("Bridge", str(made["bridge"])))
        if made["dev"] is not None:
            fields.append(("Device", str(made["dev"])))
        for ip in net_new_ips(made):
            fields.append(ip)
        click.echo(f"Network {name} defined\n")
        click.echo(virsh_fields(fields), nl=False)


def net_new_ips(made: dict[str, Any]) -> list[tuple[str, str]]:
    """net-new's lines for each subnet: "IPv4: 192.168.124.1/24 (DHCP a - b)"."""
    lines = []
    for ip in made["ips"]:
        label = "IPv4" if ip["family"] == "ipv4" else "IPv6"
        dhcp = f" (DHCP {', '.join(ip['dhcp'])})" if ip.get("dhcp") else ""
        lines.append((label, f"{ip['address']}{dhcp}"))
    return lines


# virsh's lifecycle events, from virtnetd's event stream (docs/api.md "Events")
LIFECYCLE_EVENTS = {"network-defined": "Defined", "network-undefined": "Undefined",
                    "network-started": "Started", "network-stopped": "Stopped"}
EVENT_KINDS = ("lifecycle",)


@main.command("net-event")
@click.argument("network", required=False, shell_complete=complete_network)
@click.option("--event", "kind", default=None, metavar="TYPE",
              help="The kind of event to wait for: lifecycle.")
@click.option("--loop", is_flag=True, help="Go on after the first event.")
@click.option("--timeout", type=click.IntRange(min=1), default=None, metavar="SECONDS",
              help="Stop after SECONDS.")
@click.option("--list", "list_kinds", is_flag=True, help="List the kinds of event.")
@click.option("--timestamp", is_flag=True, help="Show when each event happened (UTC).")
@click.pass_context
def net_event_cmd(ctx: click.Context, network: str | None, kind: str | None, loop: bool,
                  timeout: int | None, list_kinds: bool, timestamp: bool) -> None:
    """Wait for networks' lifecycle events and print them, as virsh net-event does.

    The events come from virtnetd, which sees every change, made through it or not."""
    from virtnet.client import Client, DaemonUnavailable

    if list_kinds:
        virsh_echo("".join(f"{name}\n" for name in EVENT_KINDS))
        return
    if kind is None:
        virsh_fail("either --list or --event <type> is required")
    if kind not in EVENT_KINDS:
        virsh_fail(f"unknown event type {kind}")
    state = ctx.obj.state_dir
    client = Client(state_dir=state, timeout=timeout)
    if network is not None:
        try:
            known = {row["name"] for row in client.networks(all=True)}
        except (DaemonUnavailable, OSError) as exc:
            fail(f"net-event needs virtnetd serving {state or '/'}: {exc}")
        if network not in known:
            # virsh says so, then listens to every network all the same
            click.echo(f"error: failed to get network '{network}'", err=True)
            network = None
    deadline = None if timeout is None else time.monotonic() + timeout
    count = 0
    try:
        with client.events(network, timeout=timeout) as stream:
            for event in stream:
                name = LIFECYCLE_EVENTS.get(event.get("type", ""))
                if name is None:
                    continue
                when = ""
                if timestamp:
                    seconds = float(event.get("time", time.time()))
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
                    when = f"{stamp}.{int(seconds * 1000) % 1000:03d}+0000: "
                click.echo(f"{when}event 'lifecycle' for network {event['network']}: {name}")
                count += 1
                if not loop:
                    break
                if deadline is not None:
                    stream.settimeout(max(0.001, deadline - time.monotonic()))
    except TimeoutError:
        click.echo("event loop timed out")
    except (DaemonUnavailable, OSError) as exc:
        fail(f"net-event needs virtnetd serving {state or '/'}: {exc}")
    finally:
        client.close()
    virsh_echo(f"events received: {count}")
    if count == 0:
        sys.exit(EXIT_FAILED)


@main.command("help")
@click.argument("verb", required=False)
@click.pass_context
def help_cmd(ctx: click.Context, verb: str | None) -> None:
    """Show the help of VERB (as VERB --help does), or of virtnet."""
    parent = ctx.parent if ctx.parent is not None else ctx
    if verb is None:
        click.echo(parent.get_help())
        return
    command = main.get_command(parent, verb)
    if command is None:
        raise click.UsageError(f"unknown verb '{verb}' (virtnet help lists them)", ctx=ctx)
    with click.Context(command, info_name=verb, parent=parent) as sub:
        click.echo(command.get_help(sub))


# --- new commands are added above this line ------------------------------------------

from virtnet.face import migrate_cmds, port_exec  # noqa: E402,F401 - register their verbs


if __name__ == "__main__":
    main()
