"""A guest NIC emulator for tests: what QEMU does with a port's device, in a few lines.

QEMU reads the frames a guest receives from the port's file descriptor (a tap opened through
/dev/net/tun by name, or a macvtap's node) and writes the frames the guest sends into it.
Here the "guest" is a network namespace: the relay copies frames between that descriptor and
one end of a veth pair whose other end (with the guest's MAC and address) sits in the guest
namespace. The port's device stays where virtnet created it, so everything virtnet set on it
(its mode, its bridge, its tc shaping) acts on the guest's traffic exactly as with a VM.

Checksum and segmentation offloads pass through as QEMU passes them: every frame carries a
virtio-net header on both sides (IFF_VNET_HDR on the tap, PACKET_VNET_HDR on the packet
socket), so a frame whose checksum the guest's stack left to "the hardware" keeps saying so
and the host finishes it, instead of leaving with a wrong checksum.

The relay runs in a forked process (started in the host namespace) until stopped.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
SOL_PACKET = 263
PACKET_VNET_HDR = 15
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_FRAME = 65536
STOP_TIMEOUT_S = 5.0


FLAGS = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR


def open_tap(name: str) -> int:
    """Attach to the persistent tap NAME as its guest, with virtio-net headers."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), FLAGS))
    return fd


def open_macvtap(char_device: str) -> int:
    """Open a macvtap's character device, with virtio-net headers."""
    fd = os.open(char_device, os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", b"", FLAGS))
    return fd


def _relay(device_fd: int, veth: str, ready_fd: int) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.bind((veth, 0))
    os.set_blocking(device_fd, False)
    sock.setblocking(False)
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    while True:
        readable, _, _ = select.select([device_fd, sock], [], [])
        if device_fd in readable:
            # frames for the guest: out through the veth to its namespace
            for _ in range(64):
                try:
                    frame = os.read(device_fd, MAX_FRAME)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EIO:  # the device is down or gone
                        return
                    raise
                try:
                    sock.send(frame)
                except OSError:
                    pass  # a full queue drops the frame, as a NIC ring would
        if sock in readable:
            for _ in range(64):
                try:
                    frame, address = sock.recvfrom(MAX_FRAME)
                except BlockingIOError:
                    break
                if address[2] == PACKET_OUTGOING:
                    continue  # what we sent ourselves towards the guest
                try:
                    os.write(device_fd, frame)
                except OSError:
                    pass


@dataclass
class Relay:
    pid: int

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return
            time.sleep(0.01)


def start_relay(netns: str, veth: str, *, tap: str | None = None,
                char_device: str | None = None) -> Relay:
    """Fork a relay inside NETNS between the port's device (a tap by name, or a macvtap's
    character device) and VETH; returns once it is relaying."""
    if (tap is None) == (char_device is None):
        raise ValueError("give exactly one of tap and char_device")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            from virtnet.host.netns import enter_netns

            enter_netns(netns)
            device_fd = open_tap(tap) if tap is not None else open_macvtap(char_device or "")
            _relay(device_fd, veth, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    ready, _, _ = select.select([read_fd], [], [], STOP_TIMEOUT_S)
    ok = bool(ready) and os.read(read_fd, 1) == b"1"
    os.close(read_fd)
    relay = Relay(pid)
    if not ok:
        relay.stop()
        raise RuntimeError(f"the guest NIC relay for {tap or char_device} did not start")
    return relay


__all__ = ["Relay", "open_macvtap", "open_tap", "start_relay"]
