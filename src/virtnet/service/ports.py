"""Guest ports, made real: the ports a VM manager asks an active network for, created on the
host, recorded, listed and deleted. What a port gets is decided in :mod:`virtnet.plan.ports`
(pure); the records and the memory of them are :mod:`virtnet.store.ports`.

Creating a port applies a small :class:`~virtnet.plan.actions.Plan` (the device with its MAC,
up, on its bridge; shaping; floor) with undo on failure, then writes its record atomically;
port-delete undoes exactly the actions recorded, net-destroy removes every port of the network
first.

Crash safety: while the plan applies, each step is appended to ``UUID.journal`` next to where
the record will be, once before its first host change and once applied. A port-create killed
before its record was written leaves that journal; the next privileged command that loads the
network's ports (port-*, net-destroy) undoes the journalled steps, the one killed inside
included, and removes it, so no device is left without a record. A port-delete sets the
record aside (``UUID.deleting``) before the device goes, and the same recovery finishes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtnet.errors import (
    HostError,
    InvalidOperationError,
    NotFoundError,
    PortError,
    PortNotFound,
    StorageError,
    VirtnetError,
    storage_errors,
)
from virtnet.execute.journal import Journal
from virtnet.execute.journal import parse as parse_journal
from virtnet.facts import TcFeatures
from virtnet.host import Host
from virtnet.ids import check_portgroup_name, check_uuid, port_file
from virtnet.plan.actions import Action
from virtnet.plan.plans import Plan, PlanError
from virtnet.plan.drivers import driver_for
from virtnet.plan.ports import (
    DEVICE_PREFIX,
    PortRequest,
    allocate,
    next_device_name,
    plan_port,
)
from virtnet.plan.shaping import ApplyShaping, floor_commands
from virtnet.render.attach import fragments
from virtnet.service.privilege import has_net_admin, require_net_admin
from virtnet.spec.model import Network, PciAddress
from virtnet.spec.portdef import PortDef
from virtnet.store.ports import (
    DELETING_SUFFIX,
    JOURNAL_SUFFIX,
    NetworkPorts,
    PortCache,
    PortRecord,
    ports_dir,
    read_records,
    record_path,
    record_uuid,
)
from virtnet.store.store import atomic_write, list_dir, path_exists, read_file, remove_file
from virtnet.spec.xml.portxml import format_port

if TYPE_CHECKING:
    from virtnet.service.engine import Engine

NAME_RETRIES = 16  # a name taken by someone else between our check and our create


def port_summary(record: PortRecord) -> dict[str, Any]:
    """What a VM manager needs to know of a port, as plain JSON, with the fragments that
    plug a guest into it (``attach``: QEMU, libvirt, Firecracker, cloud-hypervisor)."""
    summary = record.facts()
    summary["attach"] = fragments(summary)
    return summary


def recover_interrupted_creates(engine: Engine, directory: Path) -> list[str]:
    """Undo what port-creates killed before writing their record left behind (their
    journals: the steps applied and the one killed inside), finish the port-deletes killed
    after setting their record aside, and remove the temp files of record writes killed
    halfway. Call with the state lock held. Returns the uuids of the ports undone.

    Without CAP_NET_ADMIN nothing is done (the undo would fail at its first netlink call):
    a read such as port-list by an unprivileged user leaves the journals to the next
    privileged command, and the records it lists are unaffected."""
    entries = list_dir(directory)
    leftovers = [entry for entry in entries if record_uuid(entry, JOURNAL_SUFFIX)
                 or record_uuid(entry, DELETING_SUFFIX)
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
            raw = read_file(path) or b""
            if suffix == DELETING_SUFFIX:
                steps = PortRecord.from_dict(json.loads(raw), str(path)).actions
            else:
                # a line without its newline was cut by the kill: an "applied" line cut so
                # still has its step's "begun" line before it
                journal = parse_journal(raw, header=False)
                steps = journal.actions_to_undo() if journal is not None else []
            actions = [Action.from_dict(data) for data in steps]
            with engine.host() as host:
                Plan(directory.name, actions).recover(host)
            undone.append(port_uuid)
        remove_file(path, durable=False)
    return undone



class PortManager:
    """Create, list, find and delete the ports of active networks (state under the engine's
    paths, host changes inside the namespace the process is in).

    Every operation holds the state lock. Inside ``with manager.session():`` the lock is held
    throughout and the networks and records read are kept in memory, so a VM manager (or the
    benchmark) creating many ports pays for reading the state once.
    """

    def __init__(self, engine: Engine, *, new_uuid: Callable[[], str] | None = None,
                 features: TcFeatures | None = None, cache: PortCache | None = None) -> None:
        self.engine = engine
        self.paths = engine.paths
        self._new_uuid = new_uuid or (lambda: str(engine.sources.new_uuid()))
        self._features = features
        # what the sessions read (the daemon's outlives them: store.ports.ResidentPortCache)
        self.cache = cache if cache is not None else PortCache(engine.paths.status_dir)

    # --- sessions and state --------------------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[PortManager]:
        with self.engine.store.lock:
            outermost = self.cache.begin()
            try:
                yield self
            finally:
                if outermost:
                    self.cache.end()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self.session():
            yield

    def _state(self, network: str) -> NetworkPorts:
        return self.cache.state(network, self._load)

    def _load(self, network: str) -> NetworkPorts:
        """NETWORK's ports from the disk (the interrupted changes recovered first)."""
        record = self.engine.lookup(network)
        if not record.active or record.live is None:
            raise InvalidOperationError(
                f"Requested operation is not valid: network '{record.name}' is not active"
            )
        recover_interrupted_creates(self.engine, self._dir(record.name))
        return NetworkPorts(record.live, read_records(self._dir(record.name)))

    def _dir(self, network: str) -> Path:
        return ports_dir(self.paths.status_dir, network)

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

    def _find(self, state: NetworkPorts, network: str, ref: str) -> PortRecord:
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
                            pool=self._pool(net), new_uuid=self._new_uuid,
                            kernel_has=Host.kernel_has)
            journal = Journal(port_file(self._dir(net.name), port_uuid, JOURNAL_SUFFIX))
            try:
                record = self._realize(state, port, journal)
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
                self.cache.device_added(record.device, self._load)
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
                            pool=self._pool(state.net), new_uuid=self._new_uuid,
                            kernel_has=Host.kernel_has)

    def _pool(self, net: Network) -> list[str] | list[PciAddress] | None:
        with self.engine.host() as host:  # the VFs a PF has now (the other pools: the XML)
            return driver_for(net).pool(net, host)

    def _realize(self, state: NetworkPorts, port: PortDef,
                 journal: Journal | None = None) -> PortRecord:
        """Plan and apply the port's host changes, picking a free device name (retrying the
        next one if another program takes a name between our check and our create)."""
        net = state.net
        with self.engine.host() as host:  # the names' checks, the plan, the index
            features = self.features() if port.bandwidth is not None else None
            taken = self.cache.taken_names(self._load)
            prefix = DEVICE_PREFIX.get(port.plug_type)
            start = self.cache.start_number(prefix or "")
            for _ in range(NAME_RETRIES):
                device = None
                if prefix is not None:
                    device = next_device_name(prefix, taken, host.link_exists, start)
                    self.cache.device_planned(prefix, device)
                plan = plan_port(net, port, device, usage=state.usage, features=features)
                try:
                    plan.apply(host, on_step=journal)
                except PlanError as exc:
                    if journal is not None and not exc.undo_errors:
                        journal.discard()  # rolled back: nothing to recover
                    if device is not None and name_taken(exc, device):
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

    # --- delete ----------------------------------------------------------------------------

    def delete(self, network: str, ref: str) -> PortRecord:
        require_net_admin("port-delete")
        with self._locked():
            state = self._state(network)
            record = self._find(state, network, ref)
            self._remove(state, record)
            return record

    def _remove(self, state: NetworkPorts, record: PortRecord, *,
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
        if record.device:
            self.cache.device_removed(record.device, self._load)
    # --- devices that went away ------------------------------------------------------------

    def gone_ports(self, network: str) -> list[PortRecord]:
        """The ports of NETWORK whose device is no longer in the namespace (one ioctl per
        port). A device moved into another namespace looks gone from here too."""
        with self._locked():
            state = self._state(network)
            return [record for record in state.records.values() if device_gone(record)]

    def release_gone(self, network: str, port_uuid: str) -> PortRecord | None:
        """Release the port PORT_UUID of NETWORK if its device went away without a
        port-delete (a tap whose holder made it non-persistent and exited, a device someone
        deleted, a macvtap whose uplink went): what outlives the device is undone (its node,
        its floor on the bridge, an IFB, a passthrough uplink's MAC) and its record removed.
        None if there is no such port or its device is still there."""
        with self._locked():
            if not record_path(self._dir(network), port_uuid).exists():
                return None  # deleted meanwhile (so are most devices that go: port-delete)
            try:
                state = self._state(network)
            except (NotFoundError, InvalidOperationError):
                return None
            record = state.records.get(port_uuid)
            if record is None or not device_gone(record):
                return None
            self._remove(state, record, device_gone=True)
            return record

    def _refresh_floor(self, state: NetworkPorts, record: PortRecord) -> None:
        """Give the default class back what this port's floor took, as of now: other floors
        may have come and gone since the port was plugged."""
        if not record.port.class_id:
            return
        port = record.port
        assert port.bandwidth is not None and port.bandwidth.inbound is not None
        _, teardown = floor_commands(state.net, port.class_id, port.mac, record.floor,
                                     port.bandwidth.inbound.average, state.usage.floor_sum,
                                     self.features())
        for data in record.actions:
            if data.get("kind") == "plug-floor":
                data["teardown"] = [list(a) for a in teardown]

    def _undo(self, record: PortRecord, *, device_gone: bool = False) -> None:
        actions = [Action.from_dict(data) for data in record.actions]
        if device_gone:
            # the device's qdiscs went with it; a device of that name now is someone else's
            actions = [replace(action, teardown=[])
                       if isinstance(action, ApplyShaping) and action.device == record.device
                       else action for action in actions]
        with self.engine.host() as host:
            Plan(record.network, actions).undo(host)

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
            self.cache.forget(network)
        return errors


def device_gone(record: PortRecord) -> bool:
    """Whether the port's device (its name with its ifindex) has left the namespace."""
    if not record.device or record.ifindex is None:
        return False
    try:
        return socket.if_nametoindex(record.device) != record.ifindex
    except OSError:
        return True


def name_taken(exc: Exception, device: str) -> bool:
    text = str(exc)
    return device in text and "already exists" in text


def remove_network_ports(engine: Engine, network: str) -> None:
    """Engine hook for net-destroy: remove the ports first; HostError if some remain
    (PortManager loads the port action kinds when it undoes a port)."""
    if not path_exists(ports_dir(engine.paths.status_dir, network)):
        return
    errors = PortManager(engine).remove_all(network)
    if errors:
        raise HostError("some ports could not be removed:\n  " + "\n  ".join(errors))


__all__ = [
    "PortManager",
    "device_gone",
    "name_taken",
    "port_summary",
    "recover_interrupted_creates",
    "remove_network_ports",
]
