"""The guest port verbs: port-create, port-delete, port-list, port-dumpxml, and virsh's own
names for them (net-port-*)."""

from __future__ import annotations

from typing import Any

import click

from virtnet.face.common import (
    VirshFailure,
    command,
    complete_network,
    emit_json,
    lookup_network,
    port_manager_of,
    read_input,
    virsh_echo,
    virsh_fail,
    virsh_table,
)
from virtnet.render.attach import Attachment, libvirt_interface, libvirt_network_interface
from virtnet.plan.ports import PortRequest, parse_rate_option
from virtnet.service.ports import port_summary
from virtnet.spec.model import Bandwidth
from virtnet.spec.xml.portxml import parse_port


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


@command("port-create")
@click.argument("network", shell_complete=complete_network)
@click.option("--mac", default=None, metavar="MAC",
              help="The guest interface's MAC address (default: one made up, 52:54:00:...).")
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
    if xml_file is not None:
        request = port_request_from_file(xml_file)
        if mac is not None:
            request.mac = mac
    else:
        request = PortRequest(mac=mac)  # None: one is made up, as libvirt does
    if portgroup is not None:
        request.portgroup = portgroup
    if owner is not None:
        request.owner_name = owner
    if owner_uuid is not None:
        request.owner_uuid = owner_uuid
    if inbound is not None or outbound is not None:
        request.bandwidth = request.bandwidth or Bandwidth()
        if inbound is not None:
            request.bandwidth.inbound = parse_rate_option("--inbound", inbound, floor=True)
        if outbound is not None:
            request.bandwidth.outbound = parse_rate_option("--outbound", outbound, floor=False)
    port = create_port(ctx, network, request)
    summary = port_summary(port)
    if as_json:
        emit_json(summary)
    else:
        virsh_echo(f"Network port {port.uuid} created: {port_line(summary)}")


def port_request_from_file(path: str) -> Any:
    """The port request of a <networkport> XML file ('-' for stdin)."""
    data, name = read_input(path)
    return PortRequest.from_port(parse_port(data, source=name))


def create_port(ctx: click.Context, network: str, request: Any) -> Any:
    """Create the port REQUEST asks for on NETWORK, failing as virsh does."""
    manager = port_manager_of(ctx)
    record = lookup_network(manager.engine, network)
    with VirshFailure(f"Failed to create network port on network {record.name}"):
        return manager.create(record.name, request)


@command("port-delete")
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


@command("port-list")
@click.argument("network", shell_complete=complete_network)
@click.option("--json", "as_json", is_flag=True, help="Print the ports as JSON.")
@click.pass_context
def port_list_cmd(ctx: click.Context, network: str, as_json: bool) -> None:
    """List the ports of an active NETWORK."""
    manager = port_manager_of(ctx)
    record = lookup_network(manager.engine, network)
    with VirshFailure(f"Failed to list network ports of {record.name}"):
        ports = [port_summary(port) for port in manager.list(record.name)]
    if as_json:
        emit_json(ports)
        return
    rows = [[p["uuid"], p["device"] or "-", p["mac"], p["uplink"] or p["bridge"]
             or p["pci_address"] or "-", p["mode"] or p["plug"], p["portgroup"] or "-",
             p["owner"] or "-"] for p in ports]
    virsh_echo(virsh_table(["UUID", "Device", "MAC", "Via", "Mode", "Portgroup", "Owner"],
                           rows))


@command("port-dumpxml")
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


@command("net-port-create")
@click.argument("network", shell_complete=complete_network)
@click.argument("file")
@click.pass_context
def net_port_create_cmd(ctx: click.Context, network: str, file: str) -> None:
    """Create a port of NETWORK from a <networkport> XML FILE (virsh's name for port-create)."""
    port = create_port(ctx, network, port_request_from_file(file))
    virsh_echo(f"Network port {port.uuid} created from {file}")


@command("net-port-list")
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


@command("net-port-dumpxml")
@click.argument("network", shell_complete=complete_network)
@click.argument("port")
@click.pass_context
def net_port_dumpxml_cmd(ctx: click.Context, network: str, port: str) -> None:
    """Print a port in libvirt's <networkport> layout (virsh's name for port-dumpxml)."""
    ctx.invoke(port_dumpxml_cmd, network=network, port=port)


@command("net-port-delete")
@click.argument("network", shell_complete=complete_network)
@click.argument("port")
@click.pass_context
def net_port_delete_cmd(ctx: click.Context, network: str, port: str) -> None:
    """Delete a port of NETWORK and its device (virsh's name for port-delete)."""
    ctx.invoke(port_delete_cmd, network=network, port=port)


@command("domif-xml")
@click.argument("network", shell_complete=complete_network)
@click.option("--port", "port_ref", default=None, metavar="PORT",
              help="For this port (UUID, device or MAC): the device virtnet made.")
@click.option("--mac", default=None, metavar="MAC", help="The guest interface's MAC address.")
@click.option("--model", default="virtio", show_default=True, metavar="MODEL",
              help="The guest's NIC model.")
@click.pass_context
def domif_xml_cmd(ctx: click.Context, network: str, port_ref: str | None, mac: str | None,
                  model: str) -> None:
    """Print the <interface> element that puts a libvirt domain on NETWORK.

    With --port, the domain uses that port's own device as it is (libvirt leaves it alone,
    virtnet keeps it: listed, shaped, deleted by virtnet). Without, libvirt makes the device
    itself where a port of NETWORK would be now: a tap on its bridge, a macvtap on the
    uplink its pool would give, or its free virtual function."""
    manager = port_manager_of(ctx)
    record = lookup_network(manager.engine, network)
    with VirshFailure(f"Failed to describe an interface on network {record.name}"):
        if port_ref is not None:
            attachment = Attachment.from_summary(manager.get(record.name, port_ref).facts())
            xml = libvirt_interface(attachment, model=model)
        else:
            port = manager.preview(record.name, PortRequest(mac=mac))
            xml = libvirt_network_interface(
                bridge=port.bridge, uplink=port.dev,
                mode=port.mode.value if port.mode is not None else None,
                pci_address=str(port.address) if port.address is not None else None,
                mac=mac, model=model)
    virsh_echo(xml)


# The verbs of this group, as virtnet.face.cli registers them.
COMMANDS = (
    port_create_cmd,
    port_delete_cmd,
    port_list_cmd,
    port_dumpxml_cmd,
    net_port_create_cmd,
    net_port_list_cmd,
    net_port_dumpxml_cmd,
    net_port_delete_cmd,
    domif_xml_cmd,
)
