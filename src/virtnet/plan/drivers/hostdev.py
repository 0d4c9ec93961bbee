"""Forward mode 'hostdev': a pool of SR-IOV virtual functions handed to guests by PCI
passthrough.

libvirt's network driver creates nothing at start for such a network; it keeps the pool (the
VFs listed as <address>, or every VF of <pf dev='...'/>) and gives each port a VF nobody
else uses. The guest's hypervisor then detaches the VF (vfio) and sets its MAC and vlan
through the PF. virtnet does the same bookkeeping; its start plan checks, per pool entry,
that the VF is really there, so on a host without SR-IOV the network is planned (``virtnet
plan`` shows it) and its start is refused with the reason.

The host lists a PF's VFs through sysfs (:mod:`virtnet.host.sriov`, which says how it
makes sure /sys shows virtnet's own namespace).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from virtnet.plan.drivers.base import Driver, NetworkTopology, Pool, refuse_virtualport
from virtnet.errors import HostError, PortError, Problem
from virtnet.spec.model import Network, NetworkFamily, PciAddress, VirtualPortType
from virtnet.plan.actions import Action
from virtnet.plan.plans import Plan
from virtnet.spec.portdef import PlugType

if TYPE_CHECKING:
    from virtnet.host import Host
    from virtnet.host.facts import HostFacts
    from virtnet.paths import StatePaths
    from virtnet.spec.portdef import PortDef
    from virtnet.spec.portdef import PoolUsage


def parse_pci_address(text: str) -> PciAddress:
    """'0000:01:10.2' → PciAddress."""
    try:
        domain, bus, rest = text.split(":")
        slot, function = rest.split(".")
        return PciAddress(int(domain, 16), int(bus, 16), int(slot, 16), int(function, 16))
    except ValueError:
        raise HostError(f"malformed PCI address {text!r}") from None


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
            for vf in host.virtual_functions(self.pf):
                parse_pci_address(vf.address)
        for text in self.addresses or []:
            host.check_virtual_function(str(parse_pci_address(text)))

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
        host.check_virtual_function(str(parse_pci_address(self.address)))

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

    def pool(self, net: Network, host: Host) -> list[PciAddress]:
        """The VFs a port may get, in the order libvirt tries them."""
        forward = net.forward
        assert forward is not None
        if forward.addresses:
            return list(forward.addresses)
        if forward.pfs:
            # the VFs are what the host lists now
            return [parse_pci_address(vf.address)
                    for vf in host.virtual_functions(forward.pfs[0].dev)]
        return []


DRIVER = HostdevDriver()

__all__ = ["DRIVER", "HostdevDriver", "ReserveVf", "UseVfPool", "parse_pci_address"]
