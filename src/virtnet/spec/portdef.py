"""Typed model of a network port (libvirt's <networkport>): what a guest interface got from a
network. Data only, like :mod:`virtnet.spec.model`; the XML codec is :mod:`virtnet.spec.xml.portxml`,
allocation is :mod:`virtnet.service.ports`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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


__all__ = ["MacvtapMode", "PlugType", "PortDef"]
