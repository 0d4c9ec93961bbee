"""``virtnet port-exec NETWORK [port options] -- COMMAND...``: a port for one VM's lifetime.

The port is created, its device opened as a hypervisor opens it (a tap through /dev/net/tun,
a macvtap through its character device), and COMMAND runs with that descriptor inherited. Its
number is in the environment (``VIRTNET_PORT_FD``, with ``VIRTNET_PORT_MAC``,
``VIRTNET_PORT_UUID`` and ``VIRTNET_PORT_DEVICE``) and replaces ``{fd}`` (and ``{mac}``,
``{uuid}``, ``{device}``) in COMMAND's arguments, so a QEMU command line reads::

    virtnet port-exec default -- qemu-system-x86_64 ... \\
        -netdev tap,id=n0,fd={fd} -device virtio-net-pci,netdev=n0,mac={mac}

When COMMAND ends, however it ends, the port is deleted; port-exec exits with COMMAND's
status (128 + N when signal N ended it). Interrupting port-exec (Ctrl-C, SIGTERM) passes the
signal on to COMMAND and still deletes the port after it.

With a virtnetd serving the state directory, the port comes from the daemon by descriptor
hand-over, so port-exec needs no privilege of its own (the daemon's group is enough); without
one it is made in this process, which must then be root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from virtnet.client import ApiError, Client, socket_path_for
from virtnet.errors import PortError, PortNotFound, VirtnetError
from virtnet.host import Host

PLACEHOLDERS = ("fd", "mac", "uuid", "device")


@dataclass
class HeldPort:
    """A port made for the command, with its open device."""

    summary: dict[str, Any]
    fd: int

    def values(self) -> dict[str, str]:
        return {"fd": str(self.fd), "mac": str(self.summary.get("mac") or ""),
                "uuid": str(self.summary.get("uuid") or ""),
                "device": str(self.summary.get("device") or "")}


def substitute(argv: list[str], values: dict[str, str]) -> list[str]:
    """ARGV with each ``{name}`` of PLACEHOLDERS replaced; other braces are left alone (a
    command's own ``{...}`` is no concern of ours)."""
    out = []
    for arg in argv:
        for name in PLACEHOLDERS:
            arg = arg.replace("{" + name + "}", values[name])
        out.append(arg)
    return out


def environment(port: HeldPort) -> dict[str, str]:
    return {f"VIRTNET_PORT_{name.upper()}": value for name, value in port.values().items()}


def daemon_client(state_dir: str | None) -> Client | None:
    """A connection to the daemon serving STATE_DIR, or None when none answers."""
    client = Client(socket_path_for(state_dir), timeout=60)
    try:
        client.info()
    except (OSError, ApiError):
        client.close()
        return None
    return client


def run_port_exec(network: str, fields: dict[str, Any], command: list[str], *,
                  state_dir: str | None, create_here: Any, delete_here: Any) -> int:
    """Create the port (through the daemon if one serves STATE_DIR, else with CREATE_HERE),
    run COMMAND with it and delete it afterwards. FIELDS are the API's port-create fields;
    CREATE_HERE(network, fields) -> (summary, fd) and DELETE_HERE(network, uuid) do it in this
    process."""
    if not command:
        raise PortError("port-exec needs a COMMAND after --")
    client = daemon_client(state_dir)
    try:
        if client is not None:
            summary = client.create_port(network, pass_fd=True, **fields,
                                         release_on_close=client.ports_are_taps(network))
            fd = summary.pop("fd")
        else:
            summary, fd = create_here(network, fields)
        port = HeldPort(summary, fd)
        try:
            status = Host.run_with_fds(substitute(command, port.values()), [fd],
                                       environment(port))
        finally:
            os.close(fd)
            _delete(client, delete_here, network, str(summary["uuid"]))
    finally:
        if client is not None:
            client.close()
    return status


def _delete(client: Client | None, delete_here: Any, network: str, uuid: str) -> None:
    """Delete the port after the command, unless it went with its device already."""
    try:
        if client is not None:
            client.delete_port(network, uuid)
        else:
            delete_here(network, uuid)
    except ApiError as exc:
        if exc.status != 404:
            raise
    except PortNotFound:
        pass  # gone with its tap (the daemon released it) or deleted meanwhile


# --- the verb ----------------------------------------------------------------------------------

import click  # noqa: E402 - the verb's own; the functions above need no click

from virtnet.face.common import command, complete_network, fail, port_manager_of  # noqa: E402


@command("port-exec", ignore_unknown_options=True)
@click.argument("network", shell_complete=complete_network)
@click.option("--mac", default=None, metavar="MAC",
              help="The guest interface's MAC address (default: one made up, {mac} says it).")
@click.option("--portgroup", default=None, metavar="NAME", help="Portgroup to take settings from.")
@click.option("--owner", default=None, metavar="NAME", help="Name of the guest owning the port.")
@click.option("--owner-uuid", default=None, metavar="UUID", help="UUID of the owning guest.")
@click.option("--no-vnet-hdr", is_flag=True, help="Open the device without virtio-net headers.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def port_exec_cmd(ctx: click.Context, network: str, mac: str | None, portgroup: str | None,
                  owner: str | None, owner_uuid: str | None, no_vnet_hdr: bool,
                  command: tuple[str, ...]) -> None:
    """Create a port on NETWORK, run COMMAND (after --) with its device as an inherited
    descriptor ({fd} in COMMAND, VIRTNET_PORT_FD in its environment; {mac}, {uuid}, {device}
    too), and delete the port when COMMAND exits. Exits with COMMAND's status."""
    fields = {key: value for key, value in {"portgroup": portgroup, "owner": owner,
                                            "owner_uuid": owner_uuid}.items()
              if value is not None}
    def create_here(net: str, _fields: dict[str, Any]) -> tuple[dict[str, Any], int]:
        # the engine's side, as root without a daemon: loaded only then
        from virtnet.service.handover import create_with_descriptor

        return create_with_descriptor(port_manager_of(ctx), net, mac=mac, portgroup=portgroup,
                                      owner_name=owner, owner_uuid=owner_uuid,
                                      vnet_hdr=not no_vnet_hdr)

    def delete_here(net: str, uuid: str) -> None:
        port_manager_of(ctx).delete(net, uuid)

    argv = list(command[1:] if command and command[0] == "--" else command)
    try:
        status = run_port_exec(network, {"mac": mac, "vnet_hdr": not no_vnet_hdr, **fields},
                               argv, state_dir=ctx.obj.state_dir, create_here=create_here,
                               delete_here=delete_here)
    except ApiError as exc:
        fail(str(exc))
    except VirtnetError as exc:
        fail(str(exc))
    except FileNotFoundError as exc:
        fail(f"cannot run {argv[0]!r}: {exc.strerror}")
    ctx.exit(status)


COMMANDS = (port_exec_cmd,)
