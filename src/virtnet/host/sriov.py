"""SR-IOV virtual functions, as this host's kernel and sysfs show them.

The VFs of a PF are found in sysfs (``/sys/class/net/PF/device/virtfnN``). sysfs shows the
namespace that mounted it: when virtnet runs inside another network namespace (``--netns``)
without its own /sys, the PF is looked up by ifindex to make sure the sysfs entry is the
same device, and refused otherwise. Addresses are given as the kernel writes them
('0000:01:10.2'); reading them as PCI addresses is the caller's business.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from virtnet.errors import HostError

if TYPE_CHECKING:
    from virtnet.host.rtnl import Rtnl

SYS_CLASS_NET = Path("/sys/class/net")
SYS_PCI_DEVICES = Path("/sys/bus/pci/devices")


@dataclass(frozen=True)
class VirtualFunction:
    address: str  # its PCI address, '0000:01:10.2'
    netdev: str | None  # its network interface while bound to a network driver


def _sysfs_ifindex(name: str) -> int | None:
    try:
        return int((SYS_CLASS_NET / name / "ifindex").read_text())
    except (OSError, ValueError):
        return None


def virtual_functions(rtnl: Rtnl, pf: str) -> list[VirtualFunction]:
    """The SR-IOV virtual functions of PF, in VF order; HostError with the reason if none."""
    count = rtnl.num_vfs(pf)
    if count is None:
        raise HostError(f"physical function {pf} does not exist on this host")
    if count == 0:
        raise HostError(
            f"{pf} has no SR-IOV virtual functions (the kernel reports none for it): this "
            "host has no SR-IOV capable device there, or its VFs are not enabled (sriov_numvfs)"
        )
    link = rtnl.link(pf)
    if link is None or _sysfs_ifindex(pf) != link.index:
        raise HostError(
            f"cannot list the SR-IOV virtual functions of {pf}: /sys shows another network "
            "namespace than the one virtnet runs in"
        )
    device = SYS_CLASS_NET / pf / "device"
    try:
        total = int((device / "sriov_totalvfs").read_text())
    except (OSError, ValueError):
        total = 0
    if total <= 0:
        raise HostError(
            f"{pf} has no SR-IOV virtual functions: the host has no SR-IOV capable device "
            f"there (no {device}/sriov_totalvfs)"
        )
    found = []
    for entry in sorted(device.glob("virtfn*"), key=lambda p: int(p.name[6:] or 0)):
        address = os.path.basename(os.readlink(entry))
        nets = sorted(p.name for p in (entry / "net").glob("*")) if (entry / "net").is_dir() \
            else []
        found.append(VirtualFunction(address, nets[0] if nets else None))
    if not found:
        raise HostError(f"{pf} supports SR-IOV but has no virtual functions enabled "
                        f"(sriov_numvfs is 0)")
    return found


def check_virtual_function(address: str) -> None:
    """HostError unless ADDRESS is an SR-IOV virtual function present on this host."""
    path = SYS_PCI_DEVICES / address
    if not path.exists():
        raise HostError(
            f"PCI device {address} does not exist on this host (no SR-IOV virtual function "
            "there)"
        )
    if not (path / "physfn").exists():
        raise HostError(f"PCI device {address} is not an SR-IOV virtual function")


__all__ = ["VirtualFunction", "check_virtual_function", "virtual_functions"]
