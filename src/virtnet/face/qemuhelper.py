"""virtnet-qemu-helper: QEMU's bridge-helper protocol, answered with a virtnet port.

QEMU runs a helper for ``-netdev bridge,br=NAME,helper=PATH`` (and ``-netdev tap,helper=``)
with ``--use-vnet --fd=N --br=NAME``, where N is one end of a socketpair it keeps the other end
of, and waits for one open tap descriptor on it before it goes on. This helper asks virtnetd
for a port on the network NAME names (a network's name, or the bridge of one), receives the
port's opened device (tap or macvtap) from the daemon, passes it to QEMU and exits. QEMU
needs no privilege and no access to /dev/net/tun; the helper needs no setuid bit: the daemon
decides by the caller's uid and groups (its API group, a network's allow-list) whether it may.
On a network of taps the port goes when QEMU does: the daemon makes the tap non-persistent,
the kernel deletes it with QEMU's last descriptor, and the daemon then releases the port. A
macvtap port stays until ``port-delete`` (a macvtap outlives its descriptors).

The guest's MAC is the port's: give it with ``--mac=`` (in a helper command with arguments,
``helper="virtnet-qemu-helper --mac=52:54:00:..."``) or ``VIRTNET_PORT_MAC`` in QEMU's
environment, and the same MAC to the guest's ``-device ...,mac=``. Without one the daemon
picks one and the helper prints it on stderr; QEMU has then given the guest another MAC.

Exit status 0 when QEMU got its descriptor, 1 with one message on stderr otherwise (QEMU then
reports that the helper failed and does not start).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from virtnet.client import ApiError, Client, ConnectionLost, socket_path_for
from virtnet.host import HostProcess

USAGE = ("usage: virtnet-qemu-helper [--use-vnet] --br=NETWORK --fd=N [--mac=MAC] "
         "[--socket=PATH]")


class HelperError(Exception):
    """What the helper says on stderr before it exits with status 1."""


def parse_args(argv: list[str]) -> dict[str, Any]:
    """QEMU's options (``--use-vnet``, ``--fd=N``, ``--br=NAME``) and the helper's own."""
    got: dict[str, Any] = {"use_vnet": False, "fd": None, "br": None,
                           "mac": os.environ.get("VIRTNET_PORT_MAC") or None, "socket": None}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if key == "--use-vnet" and not eq:
            got["use_vnet"] = True
        elif key in ("--fd", "--br", "--mac", "--socket") and eq and value:
            got[key[2:]] = value
        elif key in ("-h", "--help"):
            raise HelperError(USAGE)
        else:
            raise HelperError(f"unknown argument {arg!r}\n{USAGE}")
    if got["br"] is None or got["fd"] is None:
        raise HelperError(f"--br= and --fd= are required (QEMU gives both)\n{USAGE}")
    try:
        got["fd"] = int(got["fd"])
    except ValueError:
        raise HelperError(f"--fd={got['fd']}: not a descriptor number") from None
    return got


def find_network(networks: list[dict[str, Any]], name: str) -> str:
    """The network NAME names: a network's name first, else the one whose bridge it is."""
    for net in networks:
        if net.get("name") == name:
            return name
    for net in networks:
        if net.get("bridge") == name:
            return str(net["name"])
    raise HelperError(f"no virtnet network is named {name!r} or has it as its bridge")


def run(argv: list[str]) -> dict[str, Any]:
    """Create the port, hand its device to QEMU; the port's summary."""
    args = parse_args(argv)
    socket_path = args["socket"] or socket_path_for(None)
    try:
        with Client(socket_path, timeout=30) as api:
            network = find_network(api.networks(all=True), args["br"])
            port = api.create_port(network, args["mac"], owner=f"qemu-{os.getppid()}",
                                   pass_fd=True, vnet_hdr=args["use_vnet"],
                                   release_on_close=api.ports_are_taps(network))
    except ApiError as exc:
        raise HelperError(str(exc)) from None
    except (ConnectionLost, OSError) as exc:
        raise HelperError(f"cannot reach virtnetd at {socket_path}: {exc}") from None
    fd = port.pop("fd")
    try:
        HostProcess.send_fd_on(args["fd"], fd)
    except OSError as exc:
        raise HelperError(f"cannot pass the port's device to QEMU on --fd={args['fd']}: "
                          f"{exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return port


def main(argv: list[str] | None = None) -> int:
    try:
        port = run(sys.argv[1:] if argv is None else argv)
    except HelperError as exc:
        print(f"virtnet-qemu-helper: {exc}", file=sys.stderr)
        return 1
    print(f"virtnet-qemu-helper: port {port.get('uuid')} on {port.get('network')}, device "
          f"{port.get('device')}, mac {port.get('mac')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
