"""Forward mode 'hostdev': a pool of SR-IOV virtual functions handed to guests by PCI
passthrough.

libvirt's network driver creates nothing at start for such a network; it keeps the pool (the
VFs listed as <address>, or every VF of <pf dev='...'/>) and gives each port a VF nobody
else uses. The guest's hypervisor then detaches the VF (vfio) and sets its MAC and vlan
through the PF. virtnet does the same bookkeeping; its start plan checks, per pool entry,
that the VF is really there, so on a host without SR-IOV the network is planned (``virtnet
plan`` shows it) and its start is refused with the reason.

The VFs of a PF are found in sysfs (``/sys/class/net/PF/device/virtfnN``). sysfs shows the
namespace that mounted it: when virtnet runs inside another network namespace (``--netns``)
without its own /sys, the PF is looked up by ifindex to make sure the sysfs entry is the
same device, and refused otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from virtnet.drivers.base import Driver, NetworkTopology, Pool, refuse_virtualport
from virtnet.errors import HostError, PortError, Problem
from virtnet.model import Network, NetworkFamily, PciAddress, VirtualPortType
from virtnet.plan import Action, Plan
from virtnet.portdef import PlugType

if TYPE_CHECKING:
    from virtnet.host import Host
    from virtnet.host.facts import HostFacts
    from virtnet.paths import StatePaths
    from virtnet.portdef import PortDef
    from virtnet.ports import PoolUsage

SYS_CLASS_NET = Path("/sys/class/net")
SYS_PCI_DEVICES = Path("/sys/bus/pci/devices")


@dataclass(frozen=True)
class VirtualFunction:
    address: PciAddress
    netdev: str | None  # its network interface while bound to a network driver


def parse_pci_address(text: str) -> PciAddress:
    """'0000:01:10.2' → PciAddress."""
    try:
        domain, bus, rest = text.split(":")
        slot, function = rest.split(".")
        return PciAddress(int(domain, 16), int(bus, 16), int(slot, 16), int(function, 16))
    except ValueError:
        raise HostError(f"malformed PCI address {text!r}") from None


def _sysfs_ifindex(name: str) -> int | None:
    try:
        return int((SYS_CLASS_NET / name / "ifindex").read_text())
    except (OSError, ValueError):
        return None


def virtual_functions(pf: str) -> list[VirtualFunction]:
    """The SR-IOV virtual functions of PF, in VF order; HostError with the reason if none."""
    from virtnet.host.rtnl import shared_rtnl

    rtnl = shared_rtnl()
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
        address = parse_pci_address(os.path.basename(os.readlink(entry)))
        nets = sorted(p.name for p in (entry / "net").glob("*")) if (entry / "net").is_dir() \
            else []
        found.append(VirtualFunction(address, nets[0] if nets else None))
    if not found:
        raise HostError(f"{pf} supports SR-IOV but has no virtual functions enabled "
                        f"(sriov_numvfs is 0)")
    return found


def check_virtual_function(address: PciAddress) -> None:
    """HostError unless ADDRESS is an SR-IOV virtual function present on this host."""
    path = SYS_PCI_DEVICES / str(address)
    if not path.exists():
        raise HostError(
            f"PCI device {address} does not exist on this host (no SR-IOV virtual function "
            "there)"
        )
    if not (path / "physfn").exists():
        raise HostError(f"PCI device {address} is not an SR-IOV virtual function")


@dataclass
class UseVfPool(Action):
    """Check that the network's VF pool exists; nothing is created or changed."""

    kind: ClassVar[str] = "use-vf-pool"
    network: str
    pf: str | None = None
    addresses: list[str] | None = None

    def describe(self) -> str:
        if self.pf:
            return f"use the SR-IOV virtual functions of {self.pf} (nothing is created)"
        return f"use the SR-IOV virtual functions {', '.join(self.addresses or [])}"

    def commands(self) -> list[str]:
        if self.pf:
            return [f"ls /sys/class/net/{self.pf}/device/virtfn*"]
        return [f"ls -d /sys/bus/pci/devices/{address}/physfn" for address in self.addresses or []]

    def apply(self, host: Host) -> None:
        if self.pf:
            virtual_functions(self.pf)
        for text in self.addresses or []:
            check_virtual_function(parse_pci_address(text))

    def undo(self, host: Host) -> None:
        return None


@dataclass
class ReserveVf(Action):
    """A port's VF: checked at apply; the hypervisor detaches and configures it."""

    kind: ClassVar[str] = "reserve-vf"
    network: str
    address: str
    mac: str

    def describe(self) -> str:
        return f"give the SR-IOV virtual function {self.address} to the guest with MAC {self.mac}"

    def commands(self) -> list[str]:
        return [f"ls -d /sys/bus/pci/devices/{self.address}/physfn"]

    def apply(self, host: Host) -> None:
        check_virtual_function(parse_pci_address(self.address))

    def undo(self, host: Host) -> None:
        return None


class HostdevDriver(Driver):
    name: ClassVar[str] = "hostdev"
    family: ClassVar[NetworkFamily] = NetworkFamily.HOSTDEV

    def topology(self, net: Network) -> NetworkTopology:
        return NetworkTopology(label="hostdev", title="hostdev")

    def plug(self, net: Network, port: PortDef, usage: PoolUsage, pool: Pool) -> None:
        """The first VF of the pool nobody uses (a VF is never shared)."""
        port.plug_type = PlugType.HOSTDEV_PCI
        addresses = [a for a in (pool or []) if isinstance(a, PciAddress)]
        free = [a for a in addresses if usage.by_address.get(str(a), 0) == 0]
        if not free:
            raise PortError(f"network '{net.name}' requires exclusive access to interfaces, "
                            "but none are available")
        port.address = free[0]
        assert net.forward is not None
        port.driver = net.forward.driver
        port.managed = net.forward.managed
        refuse_virtualport(net, port, (VirtualPortType.QBG, VirtualPortType.QBH),
                           "an SR-IOV Virtual Function via PCI passthrough")

    def preflight(self, net: Network, facts: HostFacts) -> list[Problem]:
        forward = net.forward
        if forward is None or not (forward.pfs or forward.addresses):
            return [Problem("/network/forward", "a hostdev network needs a <pf dev='...'/> or "
                            "<address type='pci' .../> pool of SR-IOV virtual functions")]
        problems = []
        for index, pf in enumerate(forward.pfs, start=1):
            if not facts.has_link(pf.dev):
                problems.append(Problem(f"/network/forward/pf[{index}]",
                                        f"physical function {pf.dev} does not exist", pf.dev))
        return problems

    def plan_start(self, net: Network, facts: HostFacts, paths: StatePaths) -> Plan:
        forward = net.forward
        assert forward is not None
        action = UseVfPool(
            network=net.name,
            pf=forward.pfs[0].dev if forward.pfs else None,
            addresses=[str(address) for address in forward.addresses] or None,
        )
        return Plan(net.name, [action])

    def pool(self, net: Network) -> list[PciAddress]:
        """The VFs a port may get, in the order libvirt tries them."""
        forward = net.forward
        assert forward is not None
        if forward.addresses:
            return list(forward.addresses)
        if forward.pfs:
            return [vf.address for vf in virtual_functions(forward.pfs[0].dev)]
        return []


DRIVER = HostdevDriver()

__all__ = ["DRIVER", "HostdevDriver", "ReserveVf", "UseVfPool", "VirtualFunction",
           "check_virtual_function", "virtual_functions"]
