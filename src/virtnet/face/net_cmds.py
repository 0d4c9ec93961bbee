"""The network verbs: virsh's net-* (state under --state-dir, inside --netns) and plan."""

from __future__ import annotations

from typing import Any

import click

from virtnet.errors import NotFoundError, VirtnetError
from virtnet.face.common import (
    VirshFailure,
    command,
    complete_network,
    echo,
    emit_json,
    engine_of,
    fail,
    file_path,
    lookup_network,
    read_input,
    virsh_echo,
    virsh_fail,
    virsh_fields,
    virsh_table,
    warn_user,
    yes_no,
)
from virtnet.ids import UUID_LENGTH
from virtnet.spec.xml.document import XPathError, select_nodes
from virtnet.spec.xml.schema import check_document
from virtnet.store.leases import HEADERS


@command("net-define")
@click.argument("file")
@click.option("--validate", is_flag=True,
              help="Refuse the file if it has elements or attributes libvirt's schema does "
                   "not know (otherwise each is a warning, and ignored).")
@click.pass_context
def net_define_cmd(ctx: click.Context, file: str, validate: bool) -> None:
    """Define a persistent network from an XML FILE (or '-' for stdin)."""
    data, name = read_input(file)
    with VirshFailure(f"Failed to define network from {name}"):
        unknown = check_document(data, name, refuse=validate)
        for item in unknown:
            echo(f"warning: {item.describe(', ignored')}", err=True)
        net = engine_of(ctx).define(data, source=name)
    virsh_echo(f"Network {net.name} defined from {name}")


@command("net-create")
@click.argument("file")
@click.pass_context
def net_create_cmd(ctx: click.Context, file: str) -> None:
    """Create and start a transient network from an XML FILE (or '-' for stdin)."""
    data, name = read_input(file)
    with VirshFailure(f"Failed to create network from {name}"):
        net = engine_of(ctx).create(data, source=name)
    virsh_echo(f"Network {net.name} created from {name}")


@command("net-undefine")
@click.argument("network", shell_complete=complete_network)
@click.pass_context
def net_undefine_cmd(ctx: click.Context, network: str) -> None:
    """Forget a persistent network (an active one keeps running, as transient)."""
    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    with VirshFailure(f"Failed to undefine network {record.name}"):
        engine.undefine(record.name)
    virsh_echo(f"Network {record.name} has been undefined")


@command("net-start")
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


@command("net-destroy")
@click.argument("network", shell_complete=complete_network)
@click.pass_context
def net_destroy_cmd(ctx: click.Context, network: str) -> None:
    """Stop an active network, undoing everything its start did."""
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


@command("net-autostart")
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


@command("net-list")
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
                echo(f"warning: network {row['name']}: {problem}", err=True)


@command("net-info")
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


@command("net-dumpxml")
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
        try:
            text = select_nodes(text, xpath, record.name, wrap=wrap,
                                warn=lambda message: echo(f"warning: {message}",
                                                                err=True))
        except XPathError as exc:
            virsh_fail(exc.message)
    virsh_echo(text)


@command("net-uuid")
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


@command("net-name")
@click.argument("uuid")
@click.option("--json", "as_json", is_flag=True, help="Print the name as JSON.")
@click.pass_context
def net_name_cmd(ctx: click.Context, uuid: str, as_json: bool) -> None:
    """Print the name of the network with this UUID."""
    if len(uuid) != UUID_LENGTH:
        virsh_fail(f"failed to get network '{uuid}'")  # virsh does not even look it up
    with VirshFailure(f"failed to get network '{uuid}'"):
        name = engine_of(ctx).name_of(uuid)
    if as_json:
        emit_json({"name": name, "uuid": uuid})
    else:
        virsh_echo(name)


@command("net-dhcp-leases")
@click.argument("network", shell_complete=complete_network)
@click.option("--mac", default=None, help="Only the leases of this MAC address.")
@click.option("--json", "as_json", is_flag=True, help="Print the leases as JSON.")
@click.pass_context
def net_dhcp_leases_cmd(ctx: click.Context, network: str, mac: str | None, as_json: bool) -> None:
    """The DHCP leases dnsmasq has given on a network."""
    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    with VirshFailure(f"Failed to get leases info for {record.name}"):
        leases = engine.dhcp_leases(record.name, mac=mac)
    if as_json:
        emit_json([lease.to_dict() for lease in leases])
    else:
        virsh_echo(virsh_table(list(HEADERS), [lease.cells() for lease in leases]))


@command("net-update")
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
            snippet = file_path(xml).read_text(encoding="utf-8")
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
    echo(f"Updated network {record.name} {what}")


@command("plan")
@click.argument("target", metavar="NAME|FILE", shell_complete=complete_network)
@click.option("--commands", is_flag=True, help="Print the equivalent shell commands.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_context
def plan_cmd(ctx: click.Context, target: str, commands: bool, as_json: bool) -> None:
    """Print the plan net-start would execute for a network (by name, or from a FILE)."""
    engine = engine_of(ctx)
    try:
        # A known network wins over a file of the same name in the current directory.
        plan_of: Any = engine.lookup(target).name
    except NotFoundError:
        if target != "-" and not file_path(target).is_file():
            lookup_network(engine, target)  # virsh's "failed to get network" error
        data, name = read_input(target)
        plan_of = engine.parse(data, source=name)
    with VirshFailure(f"cannot plan network {target}"):
        plan = engine.plan(plan_of)
    if as_json:
        emit_json(plan.to_dict())
    elif commands:
        for line in plan.commands():
            echo(line)
    else:
        for index, line in enumerate(plan.describe(), start=1):
            echo(f"{index:>3}. {line}")


# The verbs of this group, as virtnet.face.cli registers them.
COMMANDS = (
    net_define_cmd,
    net_create_cmd,
    net_undefine_cmd,
    net_start_cmd,
    net_destroy_cmd,
    net_autostart_cmd,
    net_list_cmd,
    net_info_cmd,
    net_dumpxml_cmd,
    net_uuid_cmd,
    net_name_cmd,
    net_dhcp_leases_cmd,
    net_update_cmd,
    plan_cmd,
)
