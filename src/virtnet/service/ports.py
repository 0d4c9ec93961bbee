"""Guest ports: what a VM manager asks a network for when it plugs in a guest interface.

A port is allocated as libvirt 9.0 allocates one (networkAllocatePort):
- its portgroup is the one asked for, else the network's default one, else none;
- bandwidth comes from the port itself, else from the portgroup (a network's own <bandwidth>
  shapes its bridge, never a port); vlan from the port, else the portgroup, else the network;
  trustGuestRxFilters likewise; ``<port isolated>`` from the port, else the network;
  virtualports of port, network and portgroup are merged, a conflict being an error;
- the plug follows the forward mode: a tap on the network's bridge (nat, route, open,
  isolated: plug type 'network'; a host bridge: 'bridge'), a macvtap on the pool interface
  with the fewest connections (bridge, private, vepa; passthrough and private+802.1Qbh need an
  interface nobody uses), or a VF nobody uses (hostdev);
- a floor is granted only where libvirt grants it (bridges of the network's own, with an
  inbound rate) and never beyond that rate.

Deliberate differences: a portgroup that the network does not have is an error (libvirt
silently ignores it, so a typo loses the group's bandwidth); a MAC address another port of
the network has is refused (libvirt takes it); MAC addresses are lower-cased.

The port is then made real by a small :class:`~virtnet.plan.actions.Plan` (create the device with its
MAC, up, on its bridge; shaping; floor), applied with undo on failure. Its record (the port
in libvirt's networkport XML, the device, the actions applied) is written atomically under
the network's status directory, ``NAME.ports/UUID.json``; port-delete undoes exactly those
actions, net-destroy removes every port of the network first, and the connection counts
(per network and per pool interface) are computed from these records.

Crash safety: while the plan applies, each step is appended to ``UUID.journal`` next to where
the record will be, once before its first host change and once applied. A port-create killed
before its record was written leaves that journal; the next privileged command that loads the
network's ports (port-*, net-destroy) undoes the journalled steps, the one killed inside
included, and removes it, so no device is left without a record.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import uuid as uuid_module
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtnet.plan.drivers import driver_for
from virtnet.render.attach import fragments
from virtnet.errors import (  # PortError: also from here
    HostError,
    PortError,
    PortNotFound,
    StorageError,
    VirtnetError,
    storage_errors,
)
from virtnet.ids import (
    check_portgroup_name,
    check_uuid,
    is_canonical_uuid,
    network_file,
    network_name_problem,
    port_file,
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
from virtnet.spec.portdef import MacvtapMode, PlugType, PortDef
from virtnet.execute.journal import Journal
from virtnet.execute.journal import parse as parse_journal
from virtnet.store.store import (
    list_dir,
    path_exists,
    read_file,
    remove_file,
)

if TYPE_CHECKING:
    from virtnet.facts import TcFeatures
    from virtnet.service.engine import Engine
    from virtnet.plan.actions import Action
    from virtnet.plan.plans import Plan

PORTS_DIR_SUFFIX = ".ports"
RECORD_VERSION = 1
TAP_PREFIX = "vnet"
MACVTAP_PREFIX = "macvtap"
MAX_DEVICE_NUMBER = 65535
TAP_MAC_FIRST_OCTET = "fe"  # libvirt: keeps the bridge from adopting a tap's MAC as its own
NAME_RETRIES = 16  # a name taken by someone else between our check and our create
JOURNAL_SUFFIX = ".journal"  # the applied steps of a port-create in progress
DELETING_SUFFIX = ".deleting"  # the record of a port-delete in progress, set aside


# --- small value helpers -------------------------------------------------------------------


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


def tap_mac(mac: str) -> str:
    """The host side of a guest's tap: the guest's MAC with its first octet set to fe."""
    return TAP_MAC_FIRST_OCTET + mac[2:]


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

    @classmethod
    def from_port(cls, port: PortDef) -> PortRequest:
        """A request from a <networkport> document (its plug, if any, is decided anew)."""
        return cls(mac=port.mac, portgroup=port.group, owner_name=port.owner_name,
                   owner_uuid=port.owner_uuid, uuid=port.uuid, bandwidth=port.bandwidth,
                   vlan=port.vlan, virtualport=port.virtualport,
                   trust_guest_rx_filters=port.trust_guest_rx_filters, isolated=port.isolated)


@dataclass
class PoolUsage:
    """What the ports already on a network use (computed from their records)."""

    total: int = 0
    by_dev: dict[str, int] = field(default_factory=dict)  # macvtap uplink → connections
    by_address: dict[str, int] = field(default_factory=dict)  # VF PCI address → connections
    floor_sum: int = 0
    class_ids: set[int] = field(default_factory=set)
    macs: dict[str, str] = field(default_factory=dict)  # MAC → port uuid


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
) -> PortDef:
    """The port libvirt would allocate for REQUEST on NET, given what USAGE says is in use.

    ``pool`` is the network's interface (or VF) pool, as the driver found it on the host.
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
    _check_connection_type(net, port)
    _check_virtualport_complete(port.virtualport, new_uuid)
    _check_owner_name(port.owner_name)
    from virtnet.plan.shaping import check_floor, next_class_id

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


def _check_connection_type(net: Network, port: PortDef) -> None:
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
        from virtnet.host import Host

        if not Host.kernel_has("vlan"):
            raise HostError(
                f"interface {port.mac} - a vlan tag on a host bridge port needs bridge VLAN "
                "filtering (CONFIG_BRIDGE_VLAN_FILTERING), which needs 802.1Q VLAN support "
                "(CONFIG_VLAN_8021Q); the kernel lacks 802.1Q VLAN devices"
            )
        raise HostError(f"interface {port.mac} - vlan tags on host bridge ports are not "
                        "supported by virtnet yet (libvirt 9.0 refuses them too)")
    raise PortError(f"interface {port.mac} - vlan tag not supported for this connection type")


# --- records -------------------------------------------------------------------------------


@dataclass
class PortRecord:
    """One allocated port as the state keeps it."""

    network: str
    port: PortDef
    device: str | None = None  # vnetN / macvtapN; None for a VF
    ifindex: int | None = None
    char_device: str | None = None  # the node virtnet made for a macvtap (drivers.direct)
    actions: list[dict[str, Any]] = field(default_factory=list)  # applied, in order
    created_at: float = 0.0

    @property
    def uuid(self) -> str:
        return self.port.uuid

    @property
    def device_mac(self) -> str:
        """The MAC of the port's device: a tap's is the guest's with its first octet fe."""
        if self.port.plug_type in (PlugType.NETWORK, PlugType.BRIDGE):
            return tap_mac(self.port.mac)
        return self.port.mac

    @property
    def floor(self) -> int:
        bandwidth = self.port.bandwidth
        if self.port.class_id and bandwidth is not None and bandwidth.inbound is not None:
            return int(bandwidth.inbound.floor or 0)
        return 0

    def to_dict(self) -> dict[str, Any]:
        from virtnet.spec.xml.portxml import format_port

        return {
            "version": RECORD_VERSION,
            "network": self.network,
            "xml": format_port(self.port),
            "device": self.device,
            "ifindex": self.ifindex,
            "char_device": self.char_device,
            # read by connection_counts without parsing the XML
            "uplink": self.port.dev,
            "pci_address": str(self.port.address) if self.port.address is not None else None,
            "actions": self.actions,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> PortRecord:
        from virtnet.spec.xml.portxml import parse_port

        if data.get("version") != RECORD_VERSION:
            raise HostError(f"{source}: port record format {data.get('version')} is not "
                            "understood")
        return cls(
            network=str(data["network"]),
            port=parse_port(str(data["xml"]), source, require_owner=False),
            device=data.get("device"),
            ifindex=data.get("ifindex"),
            char_device=data.get("char_device"),
            actions=list(data.get("actions", [])),
            created_at=float(data.get("created_at", 0.0)),
        )

    def facts(self) -> dict[str, Any]:
        """The port as plain JSON."""
        port = self.port
        bandwidth = None
        if port.bandwidth is not None:
            bandwidth = {
                direction: {k: v for k, v in vars(rate).items() if v is not None}
                for direction, rate in (("inbound", port.bandwidth.inbound),
                                        ("outbound", port.bandwidth.outbound))
                if rate is not None
            }
        return {
            "uuid": port.uuid,
            "network": self.network,
            "plug": port.plug_type.value,
            "device": self.device,
            "ifindex": self.ifindex,
            "char_device": self.char_device,
            "mac": port.mac,
            "mode": port.mode.value if port.mode is not None else None,
            "uplink": port.dev,
            "bridge": port.bridge,
            "pci_address": str(port.address) if port.address is not None else None,
            "portgroup": port.group,
            "owner": port.owner_name,
            "owner_uuid": port.owner_uuid,
            "bandwidth": bandwidth,
            "class_id": port.class_id,
            "vlan": [tag.id for tag in port.vlan.tags] if port.vlan is not None else [],
            "isolated": port.isolated,
            "trust_guest_rx_filters": port.trust_guest_rx_filters,
        }

    def summary(self) -> dict[str, Any]:
        """What a VM manager needs to know, as plain JSON, with the fragments that plug a
        guest into the port (``attach``: QEMU, libvirt, Firecracker, cloud-hypervisor)."""
        summary = self.facts()
        summary["attach"] = fragments(summary)
        return summary


def _count(usage: PoolUsage, record: PortRecord, sign: int) -> None:
    port = record.port
    usage.total += sign
    if port.plug_type is PlugType.DIRECT and port.dev:
        usage.by_dev[port.dev] = usage.by_dev.get(port.dev, 0) + sign
    if port.plug_type is PlugType.HOSTDEV_PCI and port.address is not None:
        key = str(port.address)
        usage.by_address[key] = usage.by_address.get(key, 0) + sign
    if port.class_id:
        if sign > 0:
            usage.class_ids.add(port.class_id)
        else:
            usage.class_ids.discard(port.class_id)
        usage.floor_sum += sign * record.floor
    if sign > 0:
        usage.macs[port.mac] = port.uuid
    elif usage.macs.get(port.mac) == port.uuid:
        del usage.macs[port.mac]


def usage_of(records: list[PortRecord]) -> PoolUsage:
    usage = PoolUsage()
    for record in records:
        _count(usage, record, 1)
    return usage


def ports_dir(status_dir: Path, network: str) -> Path:
    return network_file(status_dir, network, PORTS_DIR_SUFFIX)


def record_path(directory: Path, port_uuid: str) -> Path:
    """Where the record of port PORT_UUID (canonical) lives in a ports directory."""
    return port_file(directory, port_uuid, ".json")


def _record_uuid(entry: str, suffix: str) -> str | None:
    """The port uuid a ports directory's entry ENTRY (UUID + SUFFIX) is named after; None
    for any other file (temp files, a name that is no canonical uuid: never ours)."""
    if not entry.endswith(suffix) or entry.startswith("."):
        return None
    stem = entry[: -len(suffix)]
    return stem if is_canonical_uuid(stem) else None


def read_records(directory: Path) -> dict[str, PortRecord]:
    """Every port record in DIRECTORY, by uuid (a missing directory has none). Only files
    named after a canonical uuid are records; each is read without following a symlink and
    must be the record of the port its name says."""
    from virtnet.ids import read_state_file

    records = {}
    for entry in sorted(list_dir(directory)):
        port_uuid = _record_uuid(entry, ".json")
        if port_uuid is None:
            continue
        path = directory / entry
        try:
            data = json.loads(read_state_file(path))
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise StorageError.of(exc, "read", path) from exc
            raise HostError(f"{path}: unreadable port record: a symlink (records are never "
                            "read through one)") from None
        except (ValueError, VirtnetError) as exc:
            raise HostError(f"{path}: unreadable port record: {exc}") from None
        if not isinstance(data, dict):
            raise HostError(f"{path}: unreadable port record: not a JSON object")
        record = PortRecord.from_dict(data, str(path))
        if record.uuid != port_uuid:
            raise HostError(f"{path}: records port {record.uuid}, not {port_uuid} (its file "
                            "name)")
        records[record.uuid] = record
    return records


def recover_interrupted_creates(engine: Engine, directory: Path) -> list[str]:
    """Undo what port-creates killed before writing their record left behind (their
    journals: the steps applied and the one killed inside), finish the port-deletes killed
    after setting their record aside, and remove the temp files of record writes killed
    halfway. Call with the state lock held. Returns the uuids of the ports undone.

    Without CAP_NET_ADMIN nothing is done (the undo would fail at its first netlink call):
    a read such as port-list by an unprivileged user leaves the journals to the next
    privileged command, and the records it lists are unaffected."""
    from virtnet.service.privilege import has_net_admin

    entries = list_dir(directory)
    leftovers = [entry for entry in entries if _record_uuid(entry, JOURNAL_SUFFIX)
                 or _record_uuid(entry, DELETING_SUFFIX)
                 or entry.startswith(".") and entry.endswith(".tmp")]
    # the capability is read (from /proc) only when there is something to recover
    if not leftovers or not has_net_admin():
        return []
    undone = []
    for entry in leftovers:
        path = directory / entry
        if entry.startswith(".") and entry.endswith(".tmp"):
            remove_file(path, durable=False)
            continue
        port_uuid, suffix = os.path.splitext(entry)
        if not path_exists(record_path(directory, port_uuid)):
            from virtnet.plan.plans import Plan

            raw = read_file(path) or b""
            if suffix == DELETING_SUFFIX:
                steps = PortRecord.from_dict(json.loads(raw), str(path)).actions
            else:
                # a line without its newline was cut by the kill: an "applied" line cut so
                # still has its step's "begun" line before it
                journal = parse_journal(raw, header=False)
                steps = journal.actions_to_undo() if journal is not None else []
            plan = Plan.from_dict({"network": directory.name, "actions": steps})
            with engine.host() as host:
                plan.recover(host)
            undone.append(port_uuid)
        remove_file(path, durable=False)
    return undone


def connection_counts(status_dir: Path, network: str, *,
                      per_device: bool = True) -> tuple[int, dict[str, int]]:
    """(connections, connections per pool interface or VF) of NETWORK, from its records
    (their JSON only: cheap enough for every net-list). Without ``per_device`` only the
    records are counted, none is read: a network without a pool has a thousand ports as
    cheaply as one."""
    directory = ports_dir(status_dir, network)
    entries = list_dir(directory)
    if not per_device:
        return sum(1 for e in entries if _record_uuid(e, ".json")), {}
    total = 0
    devices: dict[str, int] = {}
    for entry in entries:
        if not _record_uuid(entry, ".json"):
            continue
        try:
            data = json.loads((directory / entry).read_text())
        except (OSError, ValueError):
            continue
        total += 1
        key = data.get("uplink") or data.get("pci_address")
        if key:
            devices[key] = devices.get(key, 0) + 1
    return total, devices


def apply_connection_counts(status_dir: Path, net: Network) -> int:
    """Set NET's live connection counts (network and pool interfaces) from its port records;
    returns the network's count."""
    pool = net.forward is not None and bool(net.forward.interfaces)
    total, per_device = connection_counts(status_dir, net.name, per_device=pool)
    net.connections = total
    if net.forward is not None:
        for interface in net.forward.interfaces:
            interface.connections = per_device.get(interface.dev, 0)
        for pf in net.forward.pfs:
            pf.connections = total
    return total


def next_device_name(prefix: str, taken: set[str], exists: Callable[[str], bool],
                     start: int = 0) -> str:
    """The lowest PREFIXn at or above START that no record holds and the host does not have."""
    for number in range(start, MAX_DEVICE_NUMBER + 1):
        name = f"{prefix}{number}"
        if name not in taken and not exists(name):
            return name
    raise HostError(f"no free {prefix}N interface name left")


# --- the manager ---------------------------------------------------------------------------


@dataclass
class _NetworkState:
    """A network and its ports as a session keeps them; ``usage`` follows every change."""

    net: Network
    records: dict[str, PortRecord]
    usage: PoolUsage = field(default_factory=PoolUsage)

    def __post_init__(self) -> None:
        self.usage = usage_of(list(self.records.values()))

    def add(self, record: PortRecord) -> None:
        self.records[record.uuid] = record
        _count(self.usage, record, 1)

    def remove(self, record: PortRecord) -> None:
        del self.records[record.uuid]
        _count(self.usage, record, -1)


class PortManager:
    """Create, list, find and delete the ports of active networks (state under the engine's
    paths, host changes inside the namespace the process is in).

    Every operation holds the state lock. Inside ``with manager.session():`` the lock is held
    throughout and the networks and records read are kept in memory, so a VM manager (or the
    benchmark) creating many ports pays for reading the state once.
    """

    def __init__(self, engine: Engine, *, new_uuid: Callable[[], str] | None = None,
                 features: TcFeatures | None = None) -> None:
        self.engine = engine
        self.paths = engine.paths
        self._new_uuid = new_uuid or (lambda: str(engine.sources.new_uuid()))
        self._features = features
        self._session: dict[str, _NetworkState] | None = None
        self._names: set[str] | None = None
        # per name prefix, a number below which every name is known to be taken
        self._name_floor: dict[str, int] = {}

    # --- sessions and state --------------------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[PortManager]:
        with self.engine.store.lock:
            outer = self._session
            if outer is None:
                self._session = {}
            try:
                yield self
            finally:
                if outer is None:
                    self._session = None
                    self._names = None
                    self._name_floor = {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self.session():
            yield

    def _state(self, network: str) -> _NetworkState:
        assert self._session is not None
        found = self._session.get(network)
        if found is not None:
            return found
        from virtnet.service.engine import InvalidOperationError

        record = self.engine.lookup(network)
        if not record.active or record.live is None:
            raise InvalidOperationError(
                f"Requested operation is not valid: network '{record.name}' is not active"
            )
        recover_interrupted_creates(self.engine, self._dir(record.name))
        state = _NetworkState(record.live, read_records(self._dir(record.name)))
        self._session[record.name] = state
        if record.name != network:
            self._session[network] = state
        return state

    def _dir(self, network: str) -> Path:
        return ports_dir(self.paths.status_dir, network)

    def _taken_names(self) -> set[str]:
        """Device names every port record of every network holds."""
        if self._names is None:
            names: set[str] = set()
            for entry in list_dir(self.paths.status_dir):
                if entry.endswith(PORTS_DIR_SUFFIX):
                    network = entry[: -len(PORTS_DIR_SUFFIX)]
                    if network_name_problem(network) is not None:
                        continue  # not a directory of ours
                    if self._session is not None and network in self._session:
                        records = self._session[network].records
                    else:
                        records = read_records(self.paths.status_dir / entry)
                    names.update(r.device for r in records.values() if r.device)
            self._names = names
        return self._names

    def features(self) -> TcFeatures:
        """What tc can use, read through the host handle once (before a port is planned)."""
        if self._features is None:
            with self.engine.host() as host:
                self._features = host.tc_features(self.paths.run_dir)
        return self._features

    # --- queries ---------------------------------------------------------------------------

    def list(self, network: str) -> list[PortRecord]:
        with self._locked():
            state = self._state(network)
            return sorted(state.records.values(), key=lambda r: (r.created_at, r.uuid))

    def get(self, network: str, ref: str) -> PortRecord:
        """The port of NETWORK named by REF: its uuid, its device name or its MAC."""
        with self._locked():
            return self._find(self._state(network), network, ref)

    def _find(self, state: _NetworkState, network: str, ref: str) -> PortRecord:
        records = state.records
        wanted = ref.strip().lower()
        if wanted in records:
            return records[wanted]
        matches = [r for r in records.values()
                   if r.device == ref or r.port.mac == wanted]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise PortError(f"'{ref}' names {len(matches)} ports of network '{network}'; "
                            "use the port's UUID")
        raise PortNotFound(f"Network port not found: no network port with matching uuid "
                        f"'{ref}' in network '{network}'")

    def dumpxml(self, network: str, ref: str) -> str:
        from virtnet.spec.xml.portxml import format_port

        return format_port(self.get(network, ref).port)

    def counts(self, network: str) -> tuple[int, dict[str, int]]:
        with self._locked():
            usage = self._state(network).usage
        per_device = dict(usage.by_dev)
        per_device.update(usage.by_address)
        return usage.total, per_device

    # --- create ----------------------------------------------------------------------------

    def create(self, network: str, request: PortRequest) -> PortRecord:
        """Allocate a port on NETWORK, make it real, record it."""
        from virtnet.service.privilege import require_net_admin

        require_net_admin("port-create")
        # the port's uuid names its files: one canonical uuid, whoever asks (API, CLI, XML)
        port_uuid = check_uuid(request.uuid or self._new_uuid(), "port UUID")
        if request.portgroup is not None:
            check_portgroup_name(request.portgroup)
        if request.owner_uuid is not None:
            request.owner_uuid = check_uuid(request.owner_uuid, "owner UUID")
        with self._locked():
            state = self._state(network)
            net = state.net
            if port_uuid in state.records:
                raise PortError(f"network '{net.name}' already has a port with uuid "
                                f"'{port_uuid}'")
            port = allocate(net, request, state.usage, port_uuid=port_uuid,
                            pool=self._pool(net), new_uuid=self._new_uuid)
            journal = Journal(port_file(self._dir(net.name), port_uuid, JOURNAL_SUFFIX))
            try:
                record = self._realize(net, port, journal)
                from virtnet.store.store import atomic_write

                try:
                    # a runtime record: atomic, not fsynced (see virtnet.store.store)
                    atomic_write(record_path(self._dir(net.name), port_uuid),
                                 json.dumps(record.to_dict()) + "\n", durable=False)
                except BaseException:
                    self._undo(record)
                    journal.discard()
                    raise
                journal.discard()  # the record supersedes it
            finally:
                journal.close()  # a journal kept (a rollback that failed) is recovered later
            state.add(record)
            if record.device:
                self._taken_names().add(record.device)
            return record

    def preview(self, network: str, request: PortRequest) -> PortDef:
        """The port create would allocate for REQUEST on NETWORK now (the driver's choice of
        device, pool member and settings), made nowhere and recorded nowhere; PortError when
        create would refuse it."""
        if request.portgroup is not None:
            check_portgroup_name(request.portgroup)
        with self._locked():
            state = self._state(network)
            return allocate(state.net, request, state.usage, port_uuid=self._new_uuid(),
                            pool=self._pool(state.net), new_uuid=self._new_uuid)

    def _pool(self, net: Network) -> list[str] | list[PciAddress] | None:
        with self.engine.host() as host:  # the VFs a PF has now (the other pools: the XML)
            return driver_for(net).pool(net, host)

    def _realize(self, net: Network, port: PortDef,
                 journal: Journal | None = None) -> PortRecord:
        """Plan and apply the port's host changes, picking a free device name (retrying the
        next one if another program takes a name between our check and our create)."""
        from virtnet.plan.plans import PlanError

        with self.engine.host() as host:  # the names' checks, the plan, the index
            if port.bandwidth is not None:
                self.features()  # read before planning: the plan gets them as data
            taken = self._taken_names()
            prefix = {PlugType.DIRECT: MACVTAP_PREFIX, PlugType.NETWORK: TAP_PREFIX,
                      PlugType.BRIDGE: TAP_PREFIX}.get(port.plug_type)
            start = self._name_floor.get(prefix or "", 0)
            for _ in range(NAME_RETRIES):
                device = None
                if prefix is not None:
                    device = next_device_name(prefix, taken, host.link_exists, start)
                    if self._session is not None:
                        self._name_floor[prefix] = int(device[len(prefix):])
                plan = self.plan(net, port, device)
                try:
                    plan.apply(host, on_step=journal)
                except PlanError as exc:
                    if journal is not None and not exc.undo_errors:
                        journal.discard()  # rolled back: nothing to recover
                    if device is not None and _name_taken(exc, device):
                        start = int(device[len(prefix or ""):]) + 1
                        continue
                    raise
                except StorageError:  # the journal could not be written: rolled back
                    if journal is not None:
                        journal.discard()
                    raise
                record = PortRecord(network=net.name, port=port, device=device,
                                    actions=[a.to_dict() for a in plan.actions],
                                    created_at=self.engine.store.now())
                for action in plan.actions:
                    ifindex = getattr(action, "ifindex", None)
                    if ifindex is not None:
                        record.ifindex = ifindex
                        record.char_device = getattr(action, "char_device", None)
                if record.ifindex is None and device is not None:
                    record.ifindex = host.link_index(device)
                return record
        raise HostError(f"cannot find a free interface name for a port of network "
                        f"'{net.name}' after {NAME_RETRIES} attempts")

    def plan(self, net: Network, port: PortDef, device: str | None) -> Plan:
        """The actions that make PORT real on DEVICE (pure, given the tc features)."""
        from virtnet.plan.shaping import (
            ApplyShaping,
            PlugFloor,
            floor_commands,
            port_shaping,
        )
        from virtnet.plan.drivers.tap import CreateTap
        from virtnet.plan.plans import Plan

        actions: list[Action] = []
        tap = port.plug_type in (PlugType.NETWORK, PlugType.BRIDGE)
        if tap:
            assert device is not None and port.bridge is not None
            actions.append(CreateTap(name=device, mac=tap_mac(port.mac), bridge=port.bridge,
                                     mtu=net.mtu, isolated=bool(port.isolated)))
        elif port.plug_type is PlugType.DIRECT:
            from virtnet.plan.drivers.direct import DRIVER as DIRECT

            assert device is not None and port.dev is not None and port.mode is not None
            actions += DIRECT.port_actions(device, port.dev, port.mode.value, port.mac)
        elif port.plug_type is PlugType.HOSTDEV_PCI:
            from virtnet.plan.drivers.hostdev import ReserveVf

            assert port.address is not None
            actions.append(ReserveVf(network=net.name, address=str(port.address), mac=port.mac))
        if device is not None and port.bandwidth is not None:
            shaping = port_shaping(device, port.bandwidth, tap=tap, features=self.features())
            if shaping is not None:
                actions.append(ApplyShaping.of(shaping, f"the bandwidth of port {port.mac}"))
        if port.class_id:
            assert port.bandwidth is not None and port.bandwidth.inbound is not None
            floor = int(port.bandwidth.inbound.floor or 0)
            state = self._session.get(net.name) if self._session is not None else None
            usage = state.usage if state is not None else PoolUsage()
            setup, teardown = floor_commands(
                net, port.class_id, port.mac, floor, port.bandwidth.inbound.average,
                usage.floor_sum + floor, self.features())
            assert port.bridge is not None
            actions.append(PlugFloor(bridge=port.bridge, class_id=port.class_id, mac=port.mac,
                                     floor=floor, setup=[list(a) for a in setup],
                                     teardown=[list(a) for a in teardown]))
        return Plan(net.name, actions)

    # --- delete ----------------------------------------------------------------------------

    def delete(self, network: str, ref: str) -> PortRecord:
        from virtnet.service.privilege import require_net_admin

        require_net_admin("port-delete")
        with self._locked():
            state = self._state(network)
            record = self._find(state, network, ref)
            self._remove(state, record)
            return record

    def _remove(self, state: _NetworkState, record: PortRecord, *,
                device_gone: bool = False) -> None:
        self._refresh_floor(state, record)
        # The record is set aside before the device goes, so that a state directory that
        # cannot be changed refuses the delete while the port still works; a kill after that
        # leaves it aside, for recover_interrupted_creates to finish.
        path = record_path(self._dir(state.net.name), record.uuid)
        aside = path.with_suffix(DELETING_SUFFIX)
        with storage_errors("remove", path):
            os.rename(path, aside)
        try:
            self._undo(record, device_gone=device_gone)
        except BaseException:
            with storage_errors("put back", path):
                os.rename(aside, path)
            raise
        remove_file(aside, durable=False)
        state.remove(record)
        if record.device and self._names is not None:
            self._names.discard(record.device)
            prefix = record.device.rstrip("0123456789")
            number = record.device[len(prefix):]
            if number.isdigit() and prefix in self._name_floor:
                self._name_floor[prefix] = min(self._name_floor[prefix], int(number))
    # --- devices that went away ------------------------------------------------------------

    def gone_ports(self, network: str) -> list[PortRecord]:
        """The ports of NETWORK whose device is no longer in the namespace (one ioctl per
        port). A device moved into another namespace looks gone from here too."""
        with self._locked():
            state = self._state(network)
            return [record for record in state.records.values() if _device_gone(record)]

    def release_gone(self, network: str, port_uuid: str) -> PortRecord | None:
        """Release the port PORT_UUID of NETWORK if its device went away without a
        port-delete (a tap whose holder made it non-persistent and exited, a device someone
        deleted, a macvtap whose uplink went): what outlives the device is undone (its node,
        its floor on the bridge, an IFB, a passthrough uplink's MAC) and its record removed.
        None if there is no such port or its device is still there."""
        from virtnet.service.engine import InvalidOperationError, NotFoundError

        with self._locked():
            if not record_path(self._dir(network), port_uuid).exists():
                return None  # deleted meanwhile (so are most devices that go: port-delete)
            try:
                state = self._state(network)
            except (NotFoundError, InvalidOperationError):
                return None
            record = state.records.get(port_uuid)
            if record is None or not _device_gone(record):
                return None
            self._remove(state, record, device_gone=True)
            return record

    def _refresh_floor(self, state: _NetworkState, record: PortRecord) -> None:
        """Give the default class back what this port's floor took, as of now: other floors
        may have come and gone since the port was plugged."""
        if not record.port.class_id:
            return
        from virtnet.plan.shaping import floor_commands

        port = record.port
        assert port.bandwidth is not None and port.bandwidth.inbound is not None
        _, teardown = floor_commands(state.net, port.class_id, port.mac, record.floor,
                                     port.bandwidth.inbound.average, state.usage.floor_sum,
                                     self.features())
        for data in record.actions:
            if data.get("kind") == "plug-floor":
                data["teardown"] = [list(a) for a in teardown]

    def _undo(self, record: PortRecord, *, device_gone: bool = False) -> None:
        from virtnet.plan.plans import Plan

        plan = Plan.from_dict({"network": record.network, "actions": record.actions})
        if device_gone:
            from virtnet.plan.shaping import ApplyShaping

            # the device's qdiscs went with it; a device of that name now is someone else's
            plan.actions = [replace(action, teardown=[])
                            if isinstance(action, ApplyShaping) and action.device == record.device
                            else action for action in plan.actions]
        with self.engine.host() as host:
            plan.undo(host)

    def remove_all(self, network: str) -> list[str]:
        """Delete every port of NETWORK (net-destroy does this first); returns the errors of
        the ports that could not be removed (their records stay, for a retry)."""
        directory = self._dir(network)
        errors = []
        with self.engine.store.lock:
            recover_interrupted_creates(self.engine, directory)
            records = read_records(directory)
            for record in records.values():
                try:
                    self._undo(record)
                except VirtnetError as exc:
                    errors.append(f"port {record.uuid} ({record.device or record.port.mac}): "
                                  f"{exc}")
                    continue
                remove_file(record_path(directory, record.uuid), durable=False)
            if not errors:
                with contextlib.suppress(FileNotFoundError, OSError):
                    os.rmdir(directory)
            if self._session is not None:
                self._session.pop(network, None)
            self._names = None
        return errors


def _device_gone(record: PortRecord) -> bool:
    """Whether the port's device (its name with its ifindex) has left the namespace."""
    if not record.device or record.ifindex is None:
        return False
    import socket

    try:
        return socket.if_nametoindex(record.device) != record.ifindex
    except OSError:
        return True


def _name_taken(exc: Exception, device: str) -> bool:
    text = str(exc)
    return device in text and "already exists" in text


def remove_network_ports(engine: Engine, network: str) -> None:
    """Engine hook for net-destroy: remove the ports first; HostError if some remain.
    A network without ports costs one stat (PortManager loads the port action kinds when it
    undoes a port)."""
    if not path_exists(ports_dir(engine.paths.status_dir, network)):
        return
    errors = PortManager(engine).remove_all(network)
    if errors:
        raise HostError("some ports could not be removed:\n  " + "\n  ".join(errors))


__all__ = [
    "PoolUsage",
    "PortError",
    "PortManager",
    "PortRecord",
    "PortRequest",
    "allocate",
    "apply_connection_counts",
    "connection_counts",
    "merge_virtualports",
    "next_device_name",
    "normalize_mac",
    "parse_rate_option",
    "recover_interrupted_creates",
    "remove_network_ports",
    "resolve_portgroup",
    "tap_mac",
    "usage_of",
]
