"""Day two, virtnet's own verbs: port forwards, net-apply, net-addresses, net-new, and
virsh's net-event over virtnetd's event stream."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from virtnet.client import Client, DaemonUnavailable
from virtnet.face.common import (
    EXIT_FAILED,
    VirshFailure,
    command,
    complete_network,
    echo,
    emit_json,
    engine_of,
    fail,
    lookup_network,
    read_input,
    virsh_echo,
    virsh_fail,
    virsh_fields,
    virsh_table,
)
from virtnet.insight.addresses import format_table, network_addresses
from virtnet.insight.netnew import NewNetworkOptions, new_network, summary
from virtnet.service.forwards import add_forward, delete_forward, list_forwards
from virtnet.service.live import apply_definition
from virtnet.spec.forwards import make_forward


def live_config_options(fn: Any) -> Any:
    """virsh's --live / --config / --current (neither: the current state)."""
    fn = click.option("--current", is_flag=True, help="The current state (the default).")(fn)
    fn = click.option("--config", is_flag=True, help="Change the persistent definition.")(fn)
    return click.option("--live", is_flag=True, help="Change the running network.")(fn)


@command("net-forward-add")
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
    engine = engine_of(ctx)
    try:
        fwd = make_forward(proto, port, to, address)
    except ValueError as exc:
        virsh_fail(f"invalid forward: {exc}")
    with VirshFailure(f"Failed to add a port forward to network {network}"):
        add_forward(engine, network, fwd, live=live, config=config)
    virsh_echo(f"Port forward {proto} {port} -> {fwd.target()} added to network {network}")


@command("net-forward-del")
@click.argument("network", shell_complete=complete_network)
@click.option("--proto", type=click.Choice(["tcp", "udp"]), required=True)
@click.option("--port", required=True, metavar="P[-Q]")
@click.option("--address", default=None, metavar="HOSTADDR")
@live_config_options
@click.pass_context
def net_forward_del_cmd(ctx: click.Context, network: str, proto: str, port: str,
                        address: str | None, live: bool, config: bool, current: bool) -> None:
    """Remove a port forward."""
    engine = engine_of(ctx)
    with VirshFailure(f"Failed to remove a port forward from network {network}"):
        delete_forward(engine, network, proto, port, address, live=live, config=config)
    virsh_echo(f"Port forward {proto} {port} removed from network {network}")


@command("net-forward-list")
@click.argument("network", shell_complete=complete_network)
@click.option("--inactive", is_flag=True, help="The persistent definition's forwards.")
@click.option("--json", "as_json", is_flag=True, help="Print the forwards as JSON.")
@click.pass_context
def net_forward_list_cmd(ctx: click.Context, network: str, inactive: bool, as_json: bool) -> None:
    """List a network's port forwards."""
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


@command("net-apply")
@click.argument("file")
@click.option("--dry-run", is_flag=True, help="Print the steps; change nothing.")
@click.option("--restart", is_flag=True,
              help="Allow stopping and starting the network for what cannot change live.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def net_apply_cmd(ctx: click.Context, file: str, dry_run: bool, restart: bool,
                  as_json: bool) -> None:
    """Change a running network to FILE's definition, touching only what differs."""
    engine = engine_of(ctx)
    data, name = read_input(file)
    with VirshFailure(f"Failed to apply {name}"):
        result = apply_definition(engine, data, name, dry_run=dry_run, restart=restart)
    if as_json:
        emit_json(result.to_dict())
        return
    for index, line in enumerate(result.steps, start=1):
        echo(f"{index:>3}. {line}")
    if not result.steps:
        echo(f"Network {result.network}: nothing to change")
    elif not dry_run:
        echo(f"Network {result.network} changed" + (" (restarted)" if result.restarted else ""))


@command("net-addresses")
@click.argument("network", shell_complete=complete_network)
@click.option("--json", "as_json", is_flag=True, help="Print the guests as JSON.")
@click.pass_context
def net_addresses_cmd(ctx: click.Context, network: str, as_json: bool) -> None:
    """Every guest on a running network: MAC, addresses, hostname, and where each fact came
    from (DHCP lease, ARP or IPv6 neighbour discovery)."""
    engine = engine_of(ctx)
    record = lookup_network(engine, network)
    with VirshFailure(f"Failed to get the guest addresses of network {record.name}"):
        guests = network_addresses(engine, record.name)
    if as_json:
        emit_json([guest.to_dict() for guest in guests])
        return
    headers, rows = format_table(guests)
    virsh_echo(virsh_table(headers, rows))


@command("net-new")
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
        echo(xml, nl=not xml.endswith("\n"))
    else:
        fields = [("Name", name), ("UUID", str(made["uuid"])), ("Mode", str(made["mode"]))]
        if made["bridge"] is not None:
            fields.append(("Bridge", str(made["bridge"])))
        if made["dev"] is not None:
            fields.append(("Device", str(made["dev"])))
        for ip in net_new_ips(made):
            fields.append(ip)
        echo(f"Network {name} defined\n")
        echo(virsh_fields(fields), nl=False)


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


@command("net-event")
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
            echo(f"error: failed to get network '{network}'", err=True)
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
                echo(f"{when}event 'lifecycle' for network {event['network']}: {name}")
                count += 1
                if not loop:
                    break
                if deadline is not None:
                    stream.settimeout(max(0.001, deadline - time.monotonic()))
    except TimeoutError:
        echo("event loop timed out")
    except (DaemonUnavailable, OSError) as exc:
        fail(f"net-event needs virtnetd serving {state or '/'}: {exc}")
    finally:
        client.close()
    virsh_echo(f"events received: {count}")
    if count == 0:
        sys.exit(EXIT_FAILED)


# The verbs of this group, as virtnet.face.cli registers them.
COMMANDS = (
    net_forward_add_cmd,
    net_forward_del_cmd,
    net_forward_list_cmd,
    net_apply_cmd,
    net_addresses_cmd,
    net_new_cmd,
    net_event_cmd,
)
