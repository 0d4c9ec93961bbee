"""Typed model of a network port (libvirt's <networkport>): what a guest interface got from a
network. Data only, like :mod:`virtnet.spec.model`, with the arithmetic of what a network's
ports hold (:class:`PoolUsage`); the XML codec is :mod:`virtnet.spec.xml.portxml`, allocation
:mod:`virtnet.plan.ports`, the records :mod:`virtnet.store.ports`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from virtnet.spec.model import (
    Bandwidth,
    ForwardDriverName,
    MacTableManager,
    PciAddress,
    VirtualPort,
    Vlan,
)


class PlugType(enum.Enum):
    """How the guest interface is plugged: values are libvirt's XML strings."""

    NONE = "none"
    NETWORK = "network"  # a tap on a bridge of the network's own (nat, route, open, isolated)
    BRIDGE = "bridge"  # a tap on a host bridge (forward mode bridge with a bridge name)
    DIRECT = "direct"  # a macvtap on an interface of the network's pool
    HOSTDEV_PCI = "hostdev-pci"  # an SR-IOV virtual function given to the guest


class MacvtapMode(enum.Enum):
    """libvirt's macvtap modes (virNetDevMacVLanMode), in libvirt's table order."""

    VEPA = "vepa"
    PRIVATE = "private"
    BRIDGE = "bridge"
    PASSTHROUGH = "passthrough"


TAP_NAMESPACE = "http://virtnet.dev/schemas/port/1.0"
TAP_PREFIX = "virtnet"
MAX_QUEUES = 256  # the kernel's MAX_TAP_QUEUES (drivers/net/tun.c)
ROOT_UID = 0


@dataclass(frozen=True)
class TapOptions:
    """virtnet's own options of a port's tap or macvtap (``<virtnet:tap>`` in the port XML):
    who may attach to a persistent tap by name (OWNER uid, GROUP gid; a tap virtnet makes
    without an owner is root's, never anybody's) and how many queues it has."""

    owner: int | None = None
    group: int | None = None
    queues: int = 1

    def __post_init__(self) -> None:
        problem = tap_options_problem(self.owner, self.group, self.queues)
        if problem is not None:
            raise ValueError(problem)

    @property
    def is_default(self) -> bool:
        return self.owner is None and self.group is None and self.queues == 1


def tap_options_problem(owner: int | None, group: int | None, queues: int) -> str | None:
    """What is wrong with these tap options, or None."""
    for name, value in (("owner", owner), ("group", group)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value < 2**32 - 1):
            return f"invalid tap {name} '{value}': expected a uid/gid from 0 to 4294967294"
    if isinstance(queues, bool) or not isinstance(queues, int) or not 1 <= queues <= MAX_QUEUES:
        return f"invalid tap queues '{queues}': expected 1 to {MAX_QUEUES}"
    return None


@dataclass
class PortDef:
    uuid: str
    mac: str
    owner_name: str | None = None
    owner_uuid: str | None = None
    group: str | None = None
    virtualport: VirtualPort | None = None
    bandwidth: Bandwidth | None = None
    class_id: int | None = None  # the tc class of the port's floor on the network's bridge
    vlan: Vlan | None = None
    isolated: bool | None = None  # <port isolated='yes|no'/>
    trust_guest_rx_filters: bool | None = None
    plug_type: PlugType = PlugType.NONE
    # plug type network / bridge
    bridge: str | None = None
    mac_table_manager: MacTableManager | None = None
    # plug type direct
    dev: str | None = None
    mode: MacvtapMode | None = None
    # plug type hostdev-pci
    managed: bool | None = None
    driver: ForwardDriverName | None = None
    address: PciAddress | None = None
    # virtnet's own: the tap's owner, group and queues (None: root's, one queue)
    tap: TapOptions | None = None


TAP_MAC_FIRST_OCTET = "fe"  # as libvirt: a bridge never takes a tap's MAC for its own


def tap_mac(mac: str) -> str:
    """The MAC of the tap behind a guest's MAC: the same with its first octet fe."""
    return TAP_MAC_FIRST_OCTET + mac[2:]


def granted_floor(port: PortDef) -> int:
    """The inbound floor PORT holds on its bridge (0 without a tc class of its own)."""
    bandwidth = port.bandwidth
    if port.class_id and bandwidth is not None and bandwidth.inbound is not None:
        return int(bandwidth.inbound.floor or 0)
    return 0


@dataclass
class PoolUsage:
    """What the ports already on a network hold, summed over their records."""

    total: int = 0
    by_dev: dict[str, int] = field(default_factory=dict)  # macvtap uplink → connections
    by_address: dict[str, int] = field(default_factory=dict)  # VF PCI address → connections
    floor_sum: int = 0
    class_ids: set[int] = field(default_factory=set)
    macs: dict[str, str] = field(default_factory=dict)  # MAC → port uuid

    def count(self, port: PortDef, sign: int) -> None:
        """Add PORT (SIGN 1) or take it away (SIGN -1)."""
        self.total += sign
        if port.plug_type is PlugType.DIRECT and port.dev:
            self.by_dev[port.dev] = self.by_dev.get(port.dev, 0) + sign
        if port.plug_type is PlugType.HOSTDEV_PCI and port.address is not None:
            key = str(port.address)
            self.by_address[key] = self.by_address.get(key, 0) + sign
        if port.class_id:
            if sign > 0:
                self.class_ids.add(port.class_id)
            else:
                self.class_ids.discard(port.class_id)
            self.floor_sum += sign * granted_floor(port)
        if sign > 0:
            self.macs[port.mac] = port.uuid
        elif self.macs.get(port.mac) == port.uuid:
            del self.macs[port.mac]


__all__ = ["MAX_QUEUES", "ROOT_UID", "TAP_NAMESPACE", "TAP_PREFIX", "MacvtapMode", "PlugType",
           "PoolUsage", "PortDef", "TapOptions", "granted_floor", "tap_mac",
           "tap_options_problem"]
