"""Port records on disk, and the memory of them a process keeps while it works.

Each port of an active network has a record, ``NAME.ports/UUID.json`` under the status
directory: the port as libvirt's networkport XML, its device, and the actions applied to
make it, written once and removed, never rewritten. Beside it, while a change is under way,
``UUID.journal`` (a port-create's applied steps) or ``UUID.deleting`` (a port-delete's record,
set aside). Connection counts (per network and per pool interface) come from the records'
JSON alone (virtnet.store.port_files, which reading a network's status needs without this
module's port model).

:class:`PortCache` keeps, for one session (the state lock held), the networks and records
read and the device names every record holds. :class:`ResidentPortCache`, the daemon's,
keeps them from one session to the next and checks them against the disk at the start of
each, so changes made by other processes (``virtnet --direct``, an older virtnet) are never
missed:
- the network's status record is the same file (inode, mtime, size): a restart or a live
  update writes a new one;
- the network's port directory holds exactly the records kept. Listing a directory of a
  thousand records costs more than creating a port, so the directory's own stamp, taken when
  the last session that used it ended (the lock still held: nobody else had written since),
  stands for the listing while it is unchanged; when it changed, the listing decides.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtnet.errors import HostError, StorageError, VirtnetError
from virtnet.ids import (
    network_name_problem,
    port_file,
    read_state_file,
)
from virtnet.spec.model import Network
from virtnet.spec.portdef import PlugType, PoolUsage, PortDef, granted_floor, tap_mac
from virtnet.spec.xml.portxml import format_port, parse_port
from virtnet.store.port_files import (
    PORTS_DIR_SUFFIX,
    RECORD_SUFFIX,
    apply_connection_counts,
    connection_counts,
    ports_dir,
    record_uuid,
)
from virtnet.store.store import list_dir

RECORD_VERSION = 1
JOURNAL_SUFFIX = ".journal"  # the applied steps of a port-create in progress
DELETING_SUFFIX = ".deleting"  # the record of a port-delete in progress, set aside


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
        return granted_floor(self.port)

    def to_dict(self) -> dict[str, Any]:
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


def usage_of(records: list[PortRecord]) -> PoolUsage:
    usage = PoolUsage()
    for record in records:
        usage.count(record.port, 1)
    return usage


def record_path(directory: Path, port_uuid: str) -> Path:
    """Where the record of port PORT_UUID (canonical) lives in a ports directory."""
    return port_file(directory, port_uuid, RECORD_SUFFIX)


def read_records(directory: Path) -> dict[str, PortRecord]:
    """Every port record in DIRECTORY, by uuid (a missing directory has none). Only files
    named after a canonical uuid are records; each is read without following a symlink and
    must be the record of the port its name says."""
    records = {}
    for entry in sorted(list_dir(directory)):
        port_uuid = record_uuid(entry, RECORD_SUFFIX)
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


# --- what a process keeps in memory ----------------------------------------------------------


@dataclass
class NetworkPorts:
    """An active network and its ports as a session holds them; ``usage`` follows every
    change."""

    net: Network
    records: dict[str, PortRecord]
    usage: PoolUsage = field(default_factory=PoolUsage)

    def __post_init__(self) -> None:
        self.usage = usage_of(list(self.records.values()))

    def add(self, record: PortRecord) -> None:
        self.records[record.uuid] = record
        self.usage.count(record.port, 1)

    def remove(self, record: PortRecord) -> None:
        del self.records[record.uuid]
        self.usage.count(record.port, -1)


Loader = Callable[[str], NetworkPorts]  # an active network's ports, read from the disk


def device_number(device: str) -> tuple[str, int | None]:
    """('vnet', 12) for vnet12; (device, None) for a name without a number."""
    prefix = device.rstrip("0123456789")
    number = device[len(prefix):]
    return prefix, int(number) if number else None


class PortCache:
    """What one session (the state lock held throughout) has read: the networks' ports, by
    the name asked and the network's own, and the device names every record holds, with,
    per name prefix, a number below which every name is known to be taken."""

    def __init__(self, status_dir: Path) -> None:
        self.status_dir = status_dir
        self.states: dict[str, NetworkPorts] | None = None
        self.names: set[str] | None = None
        self.name_floor: dict[str, int] = {}

    @property
    def open(self) -> bool:
        return self.states is not None

    def begin(self) -> bool:
        """Start a session; False when one is already open (a nested one joins it)."""
        if self.states is not None:
            return False
        self.states = {}
        return True

    def end(self) -> None:
        """End the outermost session (the lock still held)."""
        self.states = None
        self.names = None
        self.name_floor = {}

    def state(self, network: str, load: Loader) -> NetworkPorts:
        assert self.states is not None, "only inside a session"
        found = self.states.get(network)
        if found is not None:
            return found
        state = load(network)
        self.states[state.net.name] = state
        self.states[network] = state
        return state

    def taken_names(self, load: Loader) -> set[str]:
        """Device names every port record of every network holds."""
        if self.names is None:
            names: set[str] = set()
            for entry in list_dir(self.status_dir):
                if entry.endswith(PORTS_DIR_SUFFIX):
                    network = entry[: -len(PORTS_DIR_SUFFIX)]
                    if network_name_problem(network) is not None:
                        continue  # not a directory of ours
                    if self.states is not None and network in self.states:
                        records = self.states[network].records
                    else:
                        records = read_records(self.status_dir / entry)
                    names.update(r.device for r in records.values() if r.device)
            self.names = names
        return self.names

    def start_number(self, prefix: str) -> int:
        return self.name_floor.get(prefix, 0)

    def device_planned(self, prefix: str, device: str) -> None:
        """DEVICE is the lowest free name of PREFIX this session has found."""
        if self.states is not None:
            number = device_number(device)[1]
            assert number is not None
            self.name_floor[prefix] = number

    def device_added(self, device: str, load: Loader) -> None:
        self.taken_names(load).add(device)

    def device_removed(self, device: str, load: Loader) -> None:
        if self.names is None:
            return
        self.names.discard(device)
        prefix, number = device_number(device)
        if number is not None and prefix in self.name_floor:
            self.name_floor[prefix] = min(self.name_floor[prefix], number)

    def forget(self, network: str) -> None:
        """NETWORK's ports were all removed (net-destroy)."""
        if self.states is not None:
            self.states.pop(network, None)
        self.names = None


Stamp = tuple[int, int, int]


def file_stamp(path: Path) -> Stamp | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class KeptState:
    name: str
    state: NetworkPorts
    status_stamp: Stamp | None
    dir_stamp: Stamp | None = None  # the port directory as this process last left it
    generation: int = 0  # grows with each fresh read of the network's state


class ResidentPortCache(PortCache):
    """A PortCache whose networks' ports and device names outlive a session (see the
    module's doc). STATUS_PATH gives a network's status record."""

    def __init__(self, status_dir: Path, status_path: Callable[[str], Path]) -> None:
        super().__init__(status_dir)
        self.status_path = status_path
        self.kept: dict[str, KeptState] = {}
        self.generation = 0
        # The device names every record holds, and the lowest free vnetN/macvtapN, as the
        # last session left them; valid while the states they came from are (names_key).
        self.kept_names: set[str] | None = None
        self.kept_floor: dict[str, int] = {}
        self.names_key: tuple[tuple[str, int], ...] | None = None

    def end(self) -> None:
        """At the end of a session, the lock still held: the port directories as we leave
        them (later changes by others will show in their stamps), and the names."""
        assert self.states is not None
        for state in {id(state): state for state in self.states.values()}.values():
            kept = self.kept.get(state.net.name)
            if kept is not None and kept.state is state:
                kept.dir_stamp = file_stamp(ports_dir(self.status_dir, kept.name))
        if self.names is not None and self.names_key is not None:
            self.kept_names = self.names
            self.kept_floor = dict(self.name_floor)
        super().end()

    def still_valid(self, kept: KeptState) -> bool:
        if kept.status_stamp is None \
                or file_stamp(self.status_path(kept.name)) != kept.status_stamp:
            return False
        directory = ports_dir(self.status_dir, kept.name)
        now = file_stamp(directory)
        if kept.dir_stamp is not None and now == kept.dir_stamp:
            return True
        on_disk = {uuid for uuid in (record_uuid(e, RECORD_SUFFIX) for e in list_dir(directory))
                   if uuid is not None}
        if on_disk != set(kept.state.records):
            return False
        kept.dir_stamp = now
        return True

    def state(self, network: str, load: Loader) -> NetworkPorts:
        assert self.states is not None, "only inside a session"
        found = self.states.get(network)
        if found is not None:
            return found
        kept = self.kept.get(network)
        if kept is not None:
            if self.still_valid(kept):
                self.states[network] = self.states[kept.name] = kept.state
                return kept.state
            self.forget_kept(kept.name)
        state = super().state(network, load)
        name = state.net.name
        self.generation += 1
        kept = KeptState(name, state, file_stamp(self.status_path(name)),
                         generation=self.generation)
        self.kept[name] = kept
        self.kept[network] = kept
        return state

    def forget_kept(self, name: str) -> None:
        for key in [k for k, kept in self.kept.items() if kept.name == name]:
            del self.kept[key]

    def taken_names(self, load: Loader) -> set[str]:
        """Device names held by the port records of every network: kept from the last
        session while every network's state it came from is still the one kept."""
        if self.names is not None:
            return self.names
        sources: list[dict[str, PortRecord]] = []
        key: list[tuple[str, int]] | None = []
        for entry in sorted(list_dir(self.status_dir)):
            if not entry.endswith(PORTS_DIR_SUFFIX):
                continue
            network = entry[: -len(PORTS_DIR_SUFFIX)]
            if network_name_problem(network) is not None:
                continue  # not a directory of ours
            try:
                state = self.state(network, load)
            except VirtnetError:
                # Records of a network that is not active (left by a failed destroy).
                sources.append(read_records(self.status_dir / entry))
                key = None
                continue
            sources.append(state.records)
            if key is not None:
                key.append((network, self.kept[state.net.name].generation))
        names_key = tuple(key) if key is not None else None
        if names_key is not None and names_key == self.names_key \
                and self.kept_names is not None:
            self.names = self.kept_names
            self.name_floor = dict(self.kept_floor)
            return self.names
        names: set[str] = set()
        for records in sources:
            names.update(r.device for r in records.values() if r.device)
        self.names = names
        self.names_key = names_key
        self.kept_names = None
        return self.names

    def device_removed(self, device: str, load: Loader) -> None:
        if self.names is None and self.kept_names is not None:
            # The names kept from the last session come into this one, so that the delete
            # frees the port's device name (and lowers the floor) in them too; otherwise
            # every deleted name would stay taken for the process's life.
            self.taken_names(load)
        super().device_removed(device, load)

    def forget(self, network: str) -> None:
        self.forget_kept(network)
        self.names_key = None
        self.kept_names = None
        super().forget(network)


__all__ = [
    "DELETING_SUFFIX",
    "JOURNAL_SUFFIX",
    "NetworkPorts",
    "PORTS_DIR_SUFFIX",
    "PortCache",
    "PortRecord",
    "ResidentPortCache",
    "apply_connection_counts",
    "connection_counts",
    "ports_dir",
    "read_records",
    "record_path",
    "record_uuid",
    "usage_of",
]
