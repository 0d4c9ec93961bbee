"""A VM manager in miniature: a guest port through virtnetd's API, without libvirt.

    python examples/vm_manager_port.py --network default [--socket PATH] [--guest-ns NAME]

What a VM manager (QEMU scripts, Firecracker, cloud-hypervisor, an orchestrator) does for each
guest interface, with a network namespace standing in for the guest:
1. ask the daemon for a port on the network, with the device handed over (``pass_fd``): the
   daemon opens the tap it made and sends the descriptor over the socket (SCM_RIGHTS), so the
   VM manager needs no right to open or create taps itself;
2. be the guest's NIC: a hypervisor moves frames between that descriptor and the guest. Here a
   small relay does the same between the descriptor and a veth pair inside the guest's
   namespace (``nic0`` on the relay's side, ``eth0`` on the guest's), with virtio-net headers
   on both sides as QEMU has them;
3. the guest runs DHCP on eth0 (udhcpc) and gets its lease from the network's dnsmasq; the
   daemon's event stream reports it;
4. tear down: stop the relay (the guest is "shut down"), delete the port, remove the guest.

Needs root for the guest namespace and the relay's packet socket (a real hypervisor needs
neither: it only uses the descriptor), and udhcpc.
"""

from __future__ import annotations

import argparse
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from virtnet.client import Client, socket_path_for

PACKET_VNET_HDR = 15  # linux/if_packet.h
SOL_PACKET = 263
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
DHCP_TIMEOUT_S = 30

DHCP_SCRIPT = """#!/bin/sh
if [ "$1" = bound ]; then ip address add "$ip/$mask" dev "$interface"; echo "$ip" > "{out}"; fi
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


def relay(device_fd: int, guest_ns: str, nic: str) -> int:
    """Fork the guest's NIC: frames between DEVICE_FD (the port's tap) and NIC (in the guest's
    namespace); returns the relay's pid once it runs."""
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_write)
        select.select([ready_read], [], [], 10)
        os.close(ready_read)
        return pid
    try:
        os.close(ready_read)
        from virtnet.host.netns import enter_netns

        enter_netns(guest_ns)  # the packet socket must be where the veth is
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        sock.bind((nic, 0))
        os.write(ready_write, b"1")
        while True:
            readable, _, _ = select.select([device_fd, sock], [], [])
            if device_fd in readable:  # the network sends to the guest
                sock.send(os.read(device_fd, 65536))
            if sock in readable:  # the guest sends to the network
                frame, address = sock.recvfrom(65536)
                if address[2] != PACKET_OUTGOING:
                    os.write(device_fd, frame)
    except OSError:
        pass
    finally:
        os._exit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", required=True, help="an active network")
    parser.add_argument("--socket", default=None, help="virtnetd's socket")
    parser.add_argument("--state-dir", default=None, help="...or the daemon's state directory")
    parser.add_argument("--guest-ns", default="vmguest-" + secrets.token_hex(3),
                        help="name of the guest's network namespace (created and removed)")
    parser.add_argument("--mac", default="52:54:00:" + ":".join(
        f"{b:02x}" for b in secrets.token_bytes(3)), help="the guest NIC's MAC")
    args = parser.parse_args()

    api = Client(args.socket or socket_path_for(args.state_dir), timeout=60)
    events = api.events(args.network, timeout=DHCP_TIMEOUT_S)
    port = api.create_port(args.network, args.mac, owner=args.guest_ns, pass_fd=True)
    fd = port.pop("fd")
    print(f"port {port['uuid']} on {args.network}: device {port['device']}, "
          f"MAC {port['mac']}, descriptor {fd} handed over")
    relay_pid = None
    workdir = Path(tempfile.mkdtemp(prefix="vm-manager-"))
    sh("ip", "netns", "add", args.guest_ns)
    try:
        sh("ip", "-n", args.guest_ns, "link", "set", "lo", "up")
        sh("ip", "-n", args.guest_ns, "link", "add", "nic0", "type", "veth", "peer", "name",
           "eth0")
        sh("ip", "-n", args.guest_ns, "link", "set", "eth0", "address", args.mac)
        sh("ip", "-n", args.guest_ns, "link", "set", "nic0", "up")
        sh("ip", "-n", args.guest_ns, "link", "set", "eth0", "up")
        relay_pid = relay(fd, args.guest_ns, "nic0")

        out = workdir / "address"
        script = workdir / "dhcp.sh"
        script.write_text(DHCP_SCRIPT.format(out=out))
        script.chmod(0o755)
        sh("ip", "netns", "exec", args.guest_ns, "udhcpc", "-f", "-q", "-n", "-t", "10",
           "-T", "1", "-i", "eth0", "-s", str(script), "-p", str(workdir / "udhcpc.pid"))
        address = out.read_text().strip()
        print(f"guest {args.guest_ns} got {address} on eth0")
        for event in events:
            if event["type"] == "lease-added" and event["mac"] == args.mac:
                print(f"event: lease-added {event['ip']} for {event['mac']}")
                break
        leases = [lease for lease in api.leases(args.network) if lease["mac"] == args.mac]
        print(f"net-dhcp-leases: {leases[0]['address']} for {leases[0]['mac']}")
    finally:
        if relay_pid is not None:
            os.kill(relay_pid, signal.SIGKILL)
            os.waitpid(relay_pid, 0)
        os.close(fd)
        subprocess.run(["ip", "netns", "delete", args.guest_ns], timeout=60, check=False)
        deleted = api.delete_port(args.network, port["uuid"])
        events.close()
        api.close()
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()
    print(f"torn down: guest {args.guest_ns} removed, port {deleted['uuid']} deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
