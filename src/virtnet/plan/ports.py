"""Ports, the pure part: what a network gives a guest interface that asks for a port, and the
actions that would make it real. Nothing here reads or changes the host (the pool, the tc
features and the kernel's features come in as data); :mod:`virtnet.service.ports` runs it.

A port is allocated the way libvirt 9.0 does it (networkAllocatePort):
- the portgroup is the requested one, or the network's default group, or none;
- bandwidth is taken from the port, failing that from its portgroup (the network's own
  <bandwidth> is for the bridge, not for ports); vlan from the port, the portgroup, then the
  network; trustGuestRxFilters the same way; ``<port isolated>`` from the port or the network;
  the port's, network's and portgroup's virtualports are merged and a conflict is refused;
- the forward mode's driver decides the plug: a tap on the network's bridge (nat, route,
  open, isolated give plug type 'network'; a host bridge 'bridge'), a macvtap on the pool
  interface with the fewest connections (bridge, private, vepa; passthrough and
  private+802.1Qbh want an unused interface), or an unused VF (hostdev);
- a floor is granted only where libvirt grants one (the network's own bridge, with an
  inbound rate) and never above that rate.

Where we differ on purpose: asking for a portgroup the network lacks is an error (libvirt
drops the request quietly, and a typo would lose the group's bandwidth); a MAC already used
by another port of the network is refused (libvirt accepts it); MACs are stored lower-case.
"""

from __future__ import annotations

import copy
import os
import uuid as uuid_module
from collections.abc import Callable, Container
from dataclasses import dataclass

from virtnet.errors import HostError, PortError
from virtnet.facts import TcFeatures
from virtnet.plan.actions import Action
from virtnet.plan.plans import Plan
from virtnet.plan.drivers import driver_for
from virtnet.plan.drivers.direct import DRIVER as DIRECT
from virtnet.plan.drivers.hostdev import ReserveVf
from virtnet.plan.drivers.tap import CreateTap
from virtnet.plan.shaping import (
    ApplyShaping,
    PlugFloor,
    check_floor,
    floor_commands,
    next_class_id,
    port_shaping,
)
from virtnet.spec.model import (
    Bandwidth,
    BandwidthRate,
    Network,
    PciAddress,
    PortGroup,
    VirtualPort,
    VirtualPortType,
    Vlan,
)
from virtnet.spec.portdef import (
    ROOT_UID,
    MacvtapMode,
    PlugType,
    PoolUsage,
    PortDef,
    TapOptions,
    tap_mac,
)

TAP_PREFIX = "vnet"
MACVTAP_PREFIX = "macvtap"
MAX_DEVICE_NUMBER = 65535
DEVICE_PREFIX = {PlugType.DIRECT: MACVTAP_PREFIX, PlugType.NETWORK: TAP_PREFIX,
                 PlugType.BRIDGE: TAP_PREFIX}  # the plugs that get a device of their own

GENERATED_MAC_PREFIX = "52:54:00"  # QEMU's, which libvirt gives the MACs it makes up
GENERATED_MAC_TRIES = 64


def generated_mac(taken: Container[str], random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A MAC for a port whose request names none, as libvirt makes one up (52:54:00 and three
    random octets), and not one TAKEN holds."""
    for _ in range(GENERATED_MAC_TRIES):
        mac = GENERATED_MAC_PREFIX + "".join(f":{octet:02x}" for octet in random_bytes(3))
        if mac not in taken:
            return mac
    raise PortError(f"cannot make up a MAC address not in use after {GENERATED_MAC_TRIES} "
                    "attempts; give one")


def normalize_mac(mac: str) -> str:
    """A unicast MAC in canonical lowercase form; PortError otherwise."""
    parts = mac.strip().split(":")
    try:
        octets = [int(part, 16) for part in parts]
    except ValueError:
        octets = []
    if len(parts) != 6 or len(octets) != 6 or any(not 0 <= o <= 255 or len(p) > 2
                                                  for o, p in zip(octets, parts)):
        raise PortError(f"invalid MAC address '{mac}': expected six hex octets like "
                        "'52:54:00:12:34:56'")
    if octets[0] & 1:
        raise PortError(f"MAC address '{mac}' is multicast: a guest needs a unicast address")
    return ":".join(f"{o:02x}" for o in octets)


def parse_rate_option(option: str, text: str, *, floor: bool) -> BandwidthRate:
    """virsh's 'average[,peak[,burst[,floor]]]' (kB/s, kB/s, KiB, kB/s); empty fields unset."""
    names = ["average", "peak", "burst"] + (["floor"] if floor else [])
    parts = text.split(",")
    if len(parts) > len(names):
        raise PortError(f"{option} takes at most {len(names)} values ({','.join(names)})")
    values: dict[str, int] = {}
    for name, part in zip(names, parts):
        if not part.strip():
            continue
        if not part.strip().isdigit() or int(part) == 0:
            raise PortError(f"{option}: {name} '{part}' must be a positive integer")
        values[name] = int(part)
    if "average" not in values and "floor" not in values:
        raise PortError(f"{option} needs an average (or a floor)")
    return BandwidthRate(**values)


# --- the request and the allocation (pure) -------------------------------------------------


@dataclass
class PortRequest:
    """What the VM manager asks for; all optional (a MAC is made up when none is given)."""

    mac: str | None = None
    portgroup: str | None = None
    owner_name: str | None = None
    owner_uuid: str | None = None
    uuid: str | None = None
    bandwidth: Bandwidth | None = None
    vlan: Vlan | None = None
    virtualport: VirtualPort | None = None
    trust_guest_rx_filters: bool | None = None
    isolated: bool | None = None
    tap: TapOptions | None = None  # virtnet's own: the tap's owner, group, queues

    @classmethod
    def from_port(cls, port: PortDef) -> PortRequest:
        """A request from a <networkport> document (its plug, if any, is decided anew)."""
        return cls(mac=port.mac, portgroup=port.group, owner_name=port.owner_name,
                   owner_uuid=port.owner_uuid, uuid=port.uuid, bandwidth=port.bandwidth,
                   vlan=port.vlan, virtualport=port.virtualport,
                   trust_guest_rx_filters=port.trust_guest_rx_filters, isolated=port.isolated,
                   tap=port.tap)


def resolve_portgroup(net: Network, name: str | None) -> PortGroup | None:
    if name is None:
        return net.default_portgroup()
    group = net.portgroup(name)
    if group is None:
        known = ", ".join(f"'{g.name}'" for g in net.portgroups) or "none"
        raise PortError(f"network '{net.name}' has no portgroup '{name}' (portgroups: {known})")
    return group


_VPORT_FIELDS = (
    # field, XML name, the types it belongs to (None: the untyped profile)
    ("manager_id", "managerid", (VirtualPortType.QBG,)),
    ("type_id", "typeid", (VirtualPortType.QBG,)),
    ("type_id_version", "typeidversion", (VirtualPortType.QBG,)),
    ("instance_id", "instanceid", (VirtualPortType.QBG,)),
    ("interface_id", "interfaceid", (VirtualPortType.OPENVSWITCH,)),
    ("profile_id", "profileid", (VirtualPortType.OPENVSWITCH, VirtualPortType.QBH)),
)


def _is_none_type(port: VirtualPort | None) -> bool:
    return port is None or port.type in (None, VirtualPortType.NONE)


def merge_virtualports(
    from_port: VirtualPort | None,
    from_network: VirtualPort | None,
    from_group: VirtualPort | None,
) -> VirtualPort | None:
    """libvirt's three-way merge: the port's values win; a lower-priority profile may fill in
    what is unset, but disagreeing with a value already set is an error."""
    if _is_none_type(from_port) and _is_none_type(from_network) and _is_none_type(from_group):
        return None
    result = copy.deepcopy(from_port) if from_port is not None else VirtualPort()
    for mods in (from_network, from_group):
        if mods is None:
            continue
        if not _is_none_type(mods):
            if not _is_none_type(result) and result.type is not mods.type:
                assert result.type is not None and mods.type is not None
                raise PortError(f"attempt to merge virtualports with mismatched types "
                                f"({result.type.value} and {mods.type.value})")
            result.type = mods.type
        kind = None if _is_none_type(result) else result.type
        for name, xml_name, types in _VPORT_FIELDS:
            value = getattr(mods, name)
            if value is None or (kind is not None and kind not in types):
                continue
            current = getattr(result, name)
            if current is not None and current != value:
                raise PortError(f"attempt to merge virtualports with mismatched {xml_name}s "
                                f"({current} and {value})")
            setattr(result, name, value)
    return result


def _check_virtualport_complete(port: VirtualPort | None,
                                new_uuid: Callable[[], str]) -> None:
    """libvirt's completeness check, generating the ids it may generate."""
    if _is_none_type(port):
        return
    assert port is not None
    missing = None
    if port.type is VirtualPortType.QBG:
        for name, xml_name in (("manager_id", "managerid"), ("type_id", "typeid"),
                               ("type_id_version", "typeidversion")):
            if getattr(port, name) is None:
                missing = xml_name
                break
        if missing is None and port.instance_id is None:
            port.instance_id = new_uuid()
    elif port.type is VirtualPortType.QBH:
        if not port.profile_id:
            missing = "profileid"
    elif port.type is VirtualPortType.OPENVSWITCH:
        if port.interface_id is None:
            port.interface_id = new_uuid()
    elif port.type is VirtualPortType.MIDONET and port.interface_id is None:
        missing = "interfaceid"
    if missing is not None:
        assert port.type is not None
        raise PortError(f"missing {missing} in <virtualport type='{port.type.value}'>")


def allocate(
    net: Network,
    request: PortRequest,
    usage: PoolUsage,
    *,
    port_uuid: str,
    pool: list[str] | list[PciAddress] | None = None,
    new_uuid: Callable[[], str] = lambda: str(uuid_module.uuid4()),
    kernel_has: Callable[[str], bool] = lambda feature: True,
) -> PortDef:
    """The port libvirt would allocate for REQUEST on NET, given what USAGE says is in use.

    ``pool`` is the network's interface (or VF) pool, as the driver found it on the host;
    ``kernel_has`` says which kernel features the host has (for the reason a port is refused).
    Pure: the host is not touched; errors are PortError (the request cannot be met) or
    HostError (the host lacks what the port needs).
    """
    mac = normalize_mac(request.mac) if request.mac is not None else generated_mac(usage.macs)
    holder = usage.macs.get(mac)
    if holder is not None:
        raise PortError(f"network '{net.name}' already has a port with MAC address {mac} "
                        f"(port {holder}): two guests with one MAC would take each other's "
                        "frames")
    group = resolve_portgroup(net, request.portgroup)
    port = PortDef(
        uuid=port_uuid,
        mac=mac,
        owner_name=request.owner_name,
        owner_uuid=request.owner_uuid,
        group=group.name if group is not None else request.portgroup,
        isolated=request.isolated if request.isolated is not None else net.port_isolated,
        tap=request.tap if request.tap is not None and not request.tap.is_default else None,
    )
    port.bandwidth = copy.deepcopy(request.bandwidth if request.bandwidth is not None
                                   else group.bandwidth if group is not None else None)
    vlan = request.vlan if request.vlan is not None and request.vlan.tags else None
    if vlan is None and group is not None and group.vlan is not None and group.vlan.tags:
        vlan = group.vlan
    if vlan is None and net.vlan is not None and net.vlan.tags:
        vlan = net.vlan
    port.vlan = copy.deepcopy(vlan)
    trust = request.trust_guest_rx_filters
    if trust is None:
        trust = (group.trust_guest_rx_filters
                 if group is not None and group.trust_guest_rx_filters is not None
                 else net.trust_guest_rx_filters)
    port.trust_guest_rx_filters = trust
    port.virtualport = merge_virtualports(request.virtualport, net.virtualport,
                                          group.virtualport if group is not None else None)
    driver_for(net).plug(net, port, usage, pool)
    _check_connection_type(net, port, kernel_has)
    _check_virtualport_complete(port.virtualport, new_uuid)
    _check_owner_name(port.owner_name)
    if port.plug_type in (PlugType.NETWORK, PlugType.BRIDGE, PlugType.DIRECT):
        if check_floor(net, port.bandwidth, mac, usage.floor_sum):
            port.class_id = next_class_id(usage.class_ids)
    return port


def _check_owner_name(name: str | None) -> None:
    """The owner's name is written into the port's XML (its record, port-dumpxml): it must be
    text XML holds, on one line (found by the API fuzzer: a lone surrogate made every later
    GET of the port's XML fail)."""
    if name is None:
        return
    for char in name:
        code = ord(char)
        if code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF \
                or code in (0xFFFE, 0xFFFF):
            raise PortError(f"invalid owner name {name[:60]!r}: character U+{code:04X} "
                            "cannot be written in a port's XML")


def _check_connection_type(net: Network, port: PortDef,
                           kernel_has: Callable[[str], bool]) -> None:
    """What libvirt refuses for the port's actual connection type, and what this host lacks
    for what libvirt would do."""
    if port.bandwidth is not None and port.plug_type is PlugType.HOSTDEV_PCI:
        raise PortError(f"interface {port.mac} - bandwidth settings are not supported for "
                        "hostdev interfaces")
    if port.vlan is None or not port.vlan.tags:
        return
    ovs = port.virtualport is not None and port.virtualport.type is VirtualPortType.OPENVSWITCH
    if port.plug_type is PlugType.HOSTDEV_PCI:
        return  # the VF's vlan is set through its PF by the hypervisor
    if port.plug_type is PlugType.DIRECT and port.mode is MacvtapMode.PASSTHROUGH:
        raise HostError(
            f"interface {port.mac} - a vlan tag on a passthrough port is set on the SR-IOV "
            f"virtual function through its PF; {port.dev} is not a virtual function (this "
            "host has no SR-IOV)"
        )
    if port.plug_type is PlugType.BRIDGE and ovs:
        raise HostError(f"interface {port.mac} - the vlan tag needs Open vSwitch, which this "
                        "host lacks (the kernel has no openvswitch module)")
    if port.plug_type is PlugType.BRIDGE:
        if not kernel_has("vlan"):
            raise HostError(
                f"interface {port.mac} - a vlan tag on a host bridge port needs bridge VLAN "
                "filtering (CONFIG_BRIDGE_VLAN_FILTERING), which needs 802.1Q VLAN support "
                "(CONFIG_VLAN_8021Q); the kernel lacks 802.1Q VLAN devices"
            )
        raise HostError(f"interface {port.mac} - vlan tags on host bridge ports are not "
                        "supported by virtnet yet (libvirt 9.0 refuses them too)")
    raise PortError(f"interface {port.mac} - vlan tag not supported for this connection type")


def next_device_name(prefix: str, taken: set[str], exists: Callable[[str], bool],
                     start: int = 0) -> str:
    """The lowest PREFIXn at or above START that no record holds and the host does not have."""
    for number in range(start, MAX_DEVICE_NUMBER + 1):
        name = f"{prefix}{number}"
        if name not in taken and not exists(name):
            return name
    raise HostError(f"no free {prefix}N interface name left")


def plan_port(net: Network, port: PortDef, device: str | None, *, usage: PoolUsage,
              features: TcFeatures | None) -> Plan:
    """The actions that make PORT real on DEVICE, given what the network's other ports use
    (USAGE) and what tc can do (FEATURES, needed when the port has bandwidth)."""
    actions: list[Action] = []
    tap = port.plug_type in (PlugType.NETWORK, PlugType.BRIDGE)
    if tap:
        assert device is not None and port.bridge is not None
        options = port.tap or TapOptions()
        actions.append(CreateTap(name=device, mac=tap_mac(port.mac), bridge=port.bridge,
                                 mtu=net.mtu, isolated=bool(port.isolated),
                                 owner=options.owner if options.owner is not None else ROOT_UID,
                                 group=options.group, queues=options.queues))
    elif port.plug_type is PlugType.DIRECT:
        assert device is not None and port.dev is not None and port.mode is not None
        actions += DIRECT.port_actions(device, port.dev, port.mode.value, port.mac)
    elif port.plug_type is PlugType.HOSTDEV_PCI:
        assert port.address is not None
        actions.append(ReserveVf(network=net.name, address=str(port.address), mac=port.mac))
    if port.bandwidth is not None and (device is not None or port.class_id):
        if features is None:
            raise ValueError("a port with bandwidth is planned with the host's tc features")
    if device is not None and port.bandwidth is not None:
        assert features is not None
        shaping = port_shaping(device, port.bandwidth, tap=tap, features=features)
        if shaping is not None:
            actions.append(ApplyShaping.of(shaping, f"the bandwidth of port {port.mac}"))
    if port.class_id:
        assert port.bandwidth is not None and port.bandwidth.inbound is not None
        assert features is not None
        floor = int(port.bandwidth.inbound.floor or 0)
        setup, teardown = floor_commands(
            net, port.class_id, port.mac, floor, port.bandwidth.inbound.average,
            usage.floor_sum + floor, features)
        assert port.bridge is not None
        actions.append(PlugFloor(bridge=port.bridge, class_id=port.class_id, mac=port.mac,
                                 floor=floor, setup=[list(a) for a in setup],
                                 teardown=[list(a) for a in teardown]))
    return Plan(net.name, actions)


__all__ = [
    "DEVICE_PREFIX",
    "PortRequest",
    "allocate",
    "generated_mac",
    "merge_virtualports",
    "next_device_name",
    "normalize_mac",
    "parse_rate_option",
    "plan_port",
    "resolve_portgroup",
]
