"""A port's device handed to whoever runs the VM: opened as a hypervisor opens it.

The daemon passes the descriptor over its socket (SCM_RIGHTS) to a VM manager that runs without
root; ``virtnet port-exec`` hands it to the command it runs. Either way a device is trusted by
its number, never by its name.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from virtnet.errors import HostError, PortError
from virtnet.host import Host
from virtnet.host.ipc import IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, TUN_DEVICE
from virtnet.plan.ports import PortRequest
from virtnet.service.ports import PortManager, port_summary
from virtnet.store.ports import PortRecord


def open_port_device(record: PortRecord, vnet_hdr: bool = True) -> int:
    """Open the port's device as QEMU would: a tap through /dev/net/tun by name, a macvtap
    through its character device; with virtio-net headers unless ``vnet_hdr`` is False.

    A device is trusted by its number, never by its name: a macvtap's node is opened and the
    descriptor's device number checked against the one this namespace's sysfs gives the
    port's macvtap (:func:`virtnet.host.devices.open_tap_node`); a tap, once attached, must
    still be the port's (its recorded ifindex). The caller owns the returned descriptor
    (opened close-on-exec)."""
    flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
    open_flags = os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK
    if record.char_device:
        if record.device is None or record.ifindex is None:
            raise PortError(f"port {record.uuid} has no macvtap device to hand over")
        try:
            fd = Host.open_tap_node(record.char_device, record.device, record.ifindex, open_flags)
        except HostError as exc:
            raise PortError(f"port {record.uuid}: {exc}") from None
        name = b""
    elif record.device and record.port.plug_type.value in ("network", "bridge"):
        try:
            fd = Host.open_tun(open_flags)
        except OSError as exc:
            raise PortError(f"cannot open {TUN_DEVICE} for port {record.uuid}: "
                            f"{exc.strerror}") from None
        name = record.device.encode()
    else:
        raise PortError(f"port {record.uuid} has no tap or macvtap device to hand over")
    try:
        Host.attach_tap(fd, name, flags)
        if name and record.ifindex is not None and _index_of(record.device) != record.ifindex:
            os.close(fd)
            raise PortError(f"tap {record.device} is no longer the device of port "
                            f"{record.uuid} (its ifindex was {record.ifindex})")
        os.set_blocking(fd, True)  # a hypervisor chooses for itself; hand over the default
    except OSError as exc:
        os.close(fd)
        raise PortError(f"cannot attach to {record.device or record.char_device} for port "
                        f"{record.uuid}: {exc.strerror}") from None
    return fd


def _index_of(name: str | None) -> int | None:
    try:
        return socket.if_nametoindex(name or "")
    except OSError:
        return None



def release_with_descriptor(record: PortRecord, fd: int) -> None:
    """Make the port go with the last descriptor on its device: its tap stops being
    persistent, so the kernel deletes it when the holder of FD (and of any copy) closes it,
    and the supervisor's link watch then releases the port (``reason: device-gone``).
    PortError for a port whose device outlives its descriptors (a macvtap, a VF)."""
    if record.char_device or record.port.plug_type.value not in ("network", "bridge"):
        raise PortError(f"port {record.uuid}: only a tap port can be released with its "
                        "descriptor (a macvtap stays until port-delete)")
    try:
        Host.set_tap_persistent(fd, False)
    except OSError as exc:
        raise PortError(f"port {record.uuid}: cannot make tap {record.device} go with its "
                        f"descriptor: {exc.strerror}") from None


def create_with_descriptor(manager: PortManager, network: str, *, mac: str | None,
                           portgroup: str | None = None, owner_name: str | None = None,
                           owner_uuid: str | None = None, vnet_hdr: bool = True
                           ) -> tuple[dict[str, Any], int]:
    """A port made on NETWORK (with MAC, in PORTGROUP, for its owner), with its device
    opened: (its summary, the descriptor). A device that cannot be opened takes its port
    back with it."""
    request = PortRequest(mac=mac, portgroup=portgroup, owner_name=owner_name,
                          owner_uuid=owner_uuid)
    record = manager.create(network, request)
    try:
        fd = open_port_device(record, vnet_hdr=vnet_hdr)
    except BaseException:
        manager.delete(network, record.uuid)
        raise
    return port_summary(record), fd


__all__ = ["create_with_descriptor", "open_port_device", "release_with_descriptor"]
