"""The interface every forward-mode driver implements, with the defaults a driver may keep
(as Incus's common driver gives its network types).

A driver turns (network, host facts) into start-time problems and a start Plan, plugs a
guest port into the network, names the pool ports are taken from, says what its networks can
do (:class:`Capabilities`) and how they look (:class:`NetworkTopology`, for the doctor, the
graph and the lab); it never touches the host itself. Drivers are stateless singletons, one
per :class:`~virtnet.spec.model.NetworkFamily`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from virtnet.errors import PortError
from virtnet.spec.model import (
    Network,
    NetworkFamily,
    PciAddress,
    VirtualPortType,
    family_of,
)

if TYPE_CHECKING:
    from virtnet.errors import Problem
    from virtnet.host import Host
    from virtnet.host.facts import HostFacts
    from virtnet.paths import StatePaths
    from virtnet.plan.plans import Plan
    from virtnet.spec.portdef import PortDef
    from virtnet.spec.portdef import PoolUsage

Pool = list[str] | list[PciAddress] | None  # interfaces (direct) or VFs (hostdev)


@dataclass(frozen=True)
class Capabilities:
    """What a network of a driver supports beyond guests on a link."""

    forwards: bool = False  # port forwards (<metadata>): DNAT to guests
    coexistence: bool = False  # net-start opens other firewalls' drop chains for it
    shaping: bool = False  # the network's own <bandwidth> shapes its bridge
    floor: bool = False  # ports may be guaranteed an inbound floor


@dataclass(frozen=True)
class NetworkTopology:
    """How a network's guests meet the host, as the doctor, the graph and the lab show it."""

    label: str  # the doctor's and the lab's name of the mode: "isolated", "bridge (macvtap)"
    title: str  # the graph's: "isolated (no forwarding)", "private: macvtap"
    own_bridge: bool = False  # guests' taps join a bridge virtnet made and addresses
    host_bridge: str | None = None  # ... or a bridge the host already has
    macvtap: bool = False  # guests sit on macvtaps over the pool's interfaces
    routed: bool = False  # replies reach guests only if the LAN router routes the subnet back
    uplink_via: str | None = None  # how the own bridge reaches its uplink, None: not at all


def refuse_virtualport(net: Network, port: PortDef,
                       allowed: Sequence[VirtualPortType], uses: str) -> None:
    """PortError for a typed virtualport the network's connection (USES) cannot carry."""
    vport = port.virtualport
    if vport is None or vport.type in (None, VirtualPortType.NONE) or vport.type in allowed:
        return
    assert vport.type is not None
    raise PortError(f"<virtualport type='{vport.type.value}'> not supported for network "
                    f"'{net.name}' which uses {uses}")


class Driver(abc.ABC):
    name: ClassVar[str]
    family: ClassVar[NetworkFamily]

    def handles(self, net: Network) -> bool:
        return family_of(net) is self.family

    @abc.abstractmethod
    def preflight(self, net: Network, facts: HostFacts) -> list[Problem]:
        """What on this host keeps NET from starting (libvirt's start-time checks)."""

    @abc.abstractmethod
    def plan_start(self, net: Network, facts: HostFacts, paths: StatePaths) -> Plan:
        """The ordered actions that make NET real."""

    @abc.abstractmethod
    def plug(self, net: Network, port: PortDef, usage: PoolUsage, pool: Pool) -> None:
        """Fill in how PORT connects to NET (libvirt's networkAllocatePort switch): its plug
        type and device, from POOL and what USAGE says is taken; PortError if it cannot."""

    def pool(self, net: Network, host: Host) -> Pool:
        """The devices ports are given from, as HOST lists them now; None: ports need none."""
        return None

    def capabilities(self, net: Network) -> Capabilities:
        # shaping and floor follow the family, as the definition rules read them
        return Capabilities(shaping=self.family.shapes_bridge, floor=self.family.floor)

    def topology(self, net: Network) -> NetworkTopology:
        return NetworkTopology(label=net.forward_mode.value, title=net.forward_mode.value)


__all__ = ["Capabilities", "Driver", "NetworkTopology", "Pool", "refuse_virtualport"]
