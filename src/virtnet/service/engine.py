"""The engine: every network operation virtnet offers, as a library.

The CLI (and later the daemon) are thin shells over ``Engine``; they print what it returns and
turn its ``VirtnetError``s into messages. Each operation follows the one straight line:

    XML --parse--> model --validate--> defaults --> definition file            (define)
    definition --host facts--> preflight --> plan --> apply --> status record  (start)
    status record --> undo the recorded actions in reverse --> no status       (destroy)

Every operation that changes state holds the state lock for its whole duration, so concurrent
virtnet commands are serialised. Reads do not take it: every file is replaced atomically.

Status is reconciled with the kernel on every command: a network recorded active whose bridge
vanished or whose dnsmasq died is reported as such (``problems`` in ``info`` and ``list``), never
silently trusted; ``start`` of an active network restarts a dead dnsmasq.

Messages follow libvirt's wording (with its error-class prefixes such as "Requested operation is
not valid: ") so that scripts written against virsh keep matching.

One unreadable file never hides the others: a network whose definition or status cannot be
read (or whose definition names another network than its file does) is left out of every
list with a warning naming the file, as libvirt's daemon leaves such a file out when it loads
its configuration; asked for by name, it is an error naming the file. ``destroy`` of a network
whose status record is unreadable still removes what the network made (see
:meth:`Engine._salvage`).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import os
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtnet.spec.defaults import DefaultSources, assign_defaults, libvirt_bridges_here, link_exists
from virtnet.errors import (  # NotFoundError, InvalidOperationError: also importable from here
    HostConflict,
    HostError,
    InvalidOperationError,
    NotFoundError,
    Problem,
    StorageError,
    ValidationError,
    VirtnetError,
    XMLParseError,
)
from virtnet.execute.executor import undoing
from virtnet.host import HostProcess
from virtnet.ids import network_name_problem
from virtnet.spec.model import Network
from virtnet.paths import DnsmasqPaths, StatePaths
from virtnet.service.privilege import require_net_admin, require_net_admin_if
from virtnet.store.store import (
    DEFAULT_LOCK_TIMEOUT,
    NetworkStatus,
    RecordError,
    StateError,
    StateStore,
    Warn,
    path_exists,
    remove_file,
)

# Imported where used, not here: starting an inactive network needs neither ports (port
# records, action kinds of ports) nor leases, and every import is paid by each CLI command.
if TYPE_CHECKING:
    from virtnet.host import Host
    from virtnet.facts import HostFacts
    from virtnet.store.leases import LeaseRow
    from virtnet.plan.actions import Action
    from virtnet.plan.plans import Plan

UUID_LENGTH = 36


# --- network records -----------------------------------------------------------------------


@dataclass
class NetworkRecord:
    """One network as the state knows it: its persistent and live definitions, its status."""

    name: str
    config: Network | None  # persistent definition; None for a transient network
    status: NetworkStatus | None  # present while active
    live: Network | None  # the definition it runs with, while active
    autostart: bool

    @property
    def active(self) -> bool:
        return self.status is not None and self.status.active

    @property
    def interrupted(self) -> bool:
        """A start that crashed (between two steps or inside one) left a record of what
        it applied or began."""
        return self.status is not None and not self.status.active

    @property
    def persistent(self) -> bool:
        return self.config is not None

    @property
    def current(self) -> Network:
        """What virsh shows without --inactive: the live definition while active."""
        if self.active and self.live is not None:
            return self.live
        net = self.config if self.config is not None else self.live
        assert net is not None  # a record has at least one of the two
        return net

    @property
    def uuid(self) -> str:
        return self.current.uuid or ""

    @property
    def bridge(self) -> str | None:
        return self.current.bridge_name


@dataclass
class Health:
    """What the kernel says about a network recorded active."""

    bridge_present: bool | None = None  # None: the network has no bridge of ours to check
    dnsmasq_running: bool | None = None  # None: no dnsmasq was started
    problems: list[str] = field(default_factory=list)

    @property
    def degraded(self) -> bool:
        return bool(self.problems)


# --- the engine ----------------------------------------------------------------------------


class Engine:
    """Define, start, stop, inspect and update networks whose state lives under ``paths``."""

    def __init__(
        self,
        paths: StatePaths,
        host_factory: Callable[[], Host] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sources: DefaultSources | None = None,
        link_in_use: Callable[[str], bool] = link_exists,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self.paths = paths
        self.store = StateStore(paths, clock=clock, lock_timeout=lock_timeout)
        self._host_factory = host_factory
        self.sources = sources or DefaultSources()
        self.link_in_use = link_in_use

    # --- plumbing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def host(self) -> Iterator[Host]:
        """A host handle for one operation, closed (netlink, nftables) afterwards."""
        if self._host_factory is None:
            from virtnet.host import Host

            self._host_factory = Host
        host = self._host_factory()
        try:
            yield host
        finally:
            close = getattr(host, "close", None)
            if close is not None:
                close()

    def dnsmasq_alive(self, name: str, pid: int | None) -> bool:
        """Whether ``pid`` is the dnsmasq of network ``name`` (a recycled pid never counts)."""
        if pid is None or pid <= 0:
            return False
        with self.host() as host:
            return host.is_our_dnsmasq(pid, DnsmasqPaths.for_state(self.paths).conf(name))

    @staticmethod
    def parse(data: bytes | str, source: str | None) -> Network:
        """Parse and validate a definition; every problem is reported at once.

        A long-lived engine (virtnetd) reads the same definitions and status records over
        and over: the networks parsed from them are kept, pickled, in a small LRU cache
        keyed by the exact text (and the source named in error messages), and each caller
        gets its own copy, free to change. Refused input is never kept."""
        key = (data, source)
        cacheable = len(data) <= PARSED_CACHE_MAX_TEXT
        kept = _parsed.get(key) if cacheable else None
        if kept is not None:
            return pickle.loads(kept)
        from virtnet.spec.validate import validate
        from virtnet.spec.xml.parse import parse_network

        net = parse_network(data, source=source)
        problems = validate(net)
        if problems:
            raise ValidationError(problems, source=source)
        if cacheable:
            _parsed.put(key, pickle.dumps(net, protocol=pickle.HIGHEST_PROTOCOL))
        return net

    @staticmethod
    def format(net: Network, inactive: bool = True) -> str:
        from virtnet.spec.xml.format import format_network

        return format_network(net, inactive=inactive)

    def _load(self, name: str) -> NetworkRecord | None:
        with _readable_state():
            if path_exists(self.paths.apply_journal(name)):
                self._recover_apply(name)
            data = self.store.read_definition(name)
            status = self.store.read_status(name)
        if data is None and status is None:
            return None
        config = None
        if data is not None:
            path = self.paths.definition(name)
            config = self.parse(data, str(path))
            if config.name != name:
                raise RecordError(path, f"defines network '{config.name}', not '{name}' (its "
                                  "file name); ignored")
        live = None
        if status is not None:
            path = self.paths.status(name)
            live = self.parse(status.live_xml, str(path))
            if live.name != name:
                raise RecordError(path, f"records network '{live.name}', not '{name}' (its "
                                  "file name); ignored")
            live.connections = status.connections
            if status.active:  # ports' records count the connections (virtnet.service.ports)
                from virtnet.service.ports import apply_connection_counts

                status.connections = apply_connection_counts(self.paths.status_dir, live)
        return NetworkRecord(
            name=name,
            config=config,
            status=status,
            live=live,
            autostart=config is not None and self.store.is_autostart(name),
        )

    def _recover_apply(self, name: str) -> None:
        """Reverse what a net-apply killed midway left (virtnet.service.live), before the network's
        record is read: a privileged process only, with the state lock."""
        from virtnet.service.live import recover_interrupted_apply

        recover_interrupted_apply(self, name)

    def records(self, warn: Warn | None = None) -> list[NetworkRecord]:
        """Every known network, sorted by name as virsh sorts. A network one of whose files
        cannot be read is left out, with a warning naming the file (logged, and given to
        WARN); so is a file whose name cannot be a network's."""
        report = _reporter(warn)
        with _readable_state():
            names = self.store.all_names(report)
        records = []
        for name in names:
            try:
                record = self._load(name)
            except (StateError, StorageError, XMLParseError, ValidationError) as exc:
                report(f"network '{name}' is left out: {exc}")
                continue
            if record is not None:
                records.append(record)
        return records

    def get(self, name: str) -> NetworkRecord:
        record = self._load(name) if network_name_problem(name) is None else None
        if record is None:
            raise NotFoundError(f"Network not found: no network with matching name '{name}'")
        return record

    def get_by_uuid(self, uuid: str) -> NetworkRecord:
        wanted = uuid.lower()
        for record in self.records():
            if record.uuid.lower() == wanted:
                return record
        raise NotFoundError(f"Network not found: no network with matching uuid '{uuid}'")

    def lookup(self, name_or_uuid: str) -> NetworkRecord:
        """virsh's lookup: a string shaped like a UUID is tried as one first, then as a name."""
        if len(name_or_uuid) == UUID_LENGTH and name_or_uuid.count("-") == 4:
            try:
                return self.get_by_uuid(name_or_uuid)
            except NotFoundError:
                pass
        return self.get(name_or_uuid)

    # --- define / undefine ----------------------------------------------------------------

    def define(self, data: bytes | str, source: str | None = None) -> Network:
        """Make (or replace) a persistent definition; returns it with defaults assigned.

        Redefining an active network changes only what its next start uses.
        """
        net = self.parse(data, source)
        with self.store.lock:
            self.store.remove_stale_temp_files()  # of a define killed mid-write
            records = self.records()
            self._check_identity(net, records, creating=False)
            self._assign_defaults(net, records)
            text = self._text_reading_back(net, self.paths.definition(net.name))
            self.store.write_definition(net.name, text)
        return net

    def _text_reading_back(self, net: Network, path: Path, *, status: bool = False) -> str:
        """NET as it is saved in PATH, once checked to read back as the very same network, so
        that a definition which could not be loaded again is refused with nothing written.
        The parse is cached as :meth:`_load` will ask for it (a definition is read back as
        bytes, a status record's live definition as text): the next load costs nothing."""
        text = self.format(net, inactive=True)
        try:
            back = self.parse(text if status else text.encode(), str(path))
        except VirtnetError as exc:
            raise VirtnetError(f"network '{net.name}' cannot be saved: it would not read back "
                               f"({exc})") from None
        if back.name != net.name or self.format(back, inactive=True) != text:
            raise VirtnetError(f"network '{net.name}' cannot be saved: it would read back "
                               "as a different definition")
        return text

    def undefine(self, name: str) -> None:
        """Forget the persistent definition; an active network keeps running, as transient."""
        with self.store.lock:
            record = self.lookup(name)
            if not record.persistent:
                raise InvalidOperationError(
                    "Requested operation is not valid: can't undefine transient network"
                )
            self.store.delete_definition(record.name)
            if not record.active:
                self._remove_leases(record.name)  # kept across restarts, not beyond the network

    def _check_identity(
        self, net: Network, records: list[NetworkRecord], creating: bool
    ) -> None:
        """libvirt's rules for a definition arriving next to the existing ones."""
        for record in records:
            if net.uuid is not None and record.uuid.lower() == net.uuid.lower():
                if record.name != net.name:
                    raise VirtnetError(
                        f"operation failed: network '{record.name}' is already defined "
                        f"with uuid {record.uuid}"
                    )
                if creating and record.active:
                    raise InvalidOperationError(
                        "Requested operation is not valid: network is already active as "
                        f"'{record.name}'"
                    )
                return
        for record in records:
            if record.name == net.name:
                raise VirtnetError(
                    f"operation failed: network '{net.name}' already exists with uuid "
                    f"{record.uuid}"
                )

    def _assign_defaults(self, net: Network, records: Iterable[NetworkRecord]) -> Network:
        others: set[str] = set()
        for record in records:
            if record.name == net.name:
                continue
            for definition in (record.config, record.live):
                if definition is not None and definition.bridge_name:
                    others.add(definition.bridge_name)
        return assign_defaults(
            net, other_bridges=others, link_in_use=self.link_in_use, sources=self.sources,
            # skipped where libvirtd's bridges are (init netns)
            reserved=lambda: libvirt_bridges_here(HostProcess),
        )

    # --- start / create / destroy ---------------------------------------------------------

    def start(self, name: str) -> Network:
        """Start a defined network; for an active one, restart a dnsmasq that died."""
        require_net_admin("net-start")
        with self.store.lock:
            self.store.remove_stale_temp_files()  # of a start or destroy killed mid-write
            record = self.lookup(name)
            if record.active:
                self._repair(record)
                return record.current
            if record.config is None:
                # Only an interrupted transient start looks like this: clean it, it is gone.
                self._clean_interrupted(record)
                raise NotFoundError(
                    f"Network not found: no network with matching name '{record.name}'"
                )
            self._clean_interrupted(record)
            self._start(record.config)
            return record.config

    def create(self, data: bytes | str, source: str | None = None) -> Network:
        """Start a network from a definition without keeping it (libvirt's transient network)."""
        require_net_admin("net-create")
        net = self.parse(data, source)
        with self.store.lock:
            records = self.records()
            if self.store.has_status(net.name) and all(r.name != net.name for r in records):
                self._load(net.name)  # its status is unreadable: say which file, start nothing
            self._check_identity(net, records, creating=True)
            for record in records:
                if record.name == net.name:
                    self._clean_interrupted(record)
            self._assign_defaults(net, records)
            self._text_reading_back(net, self.paths.status(net.name), status=True)
            self._start(net)
        return net

    def destroy(self, name: str, warn: Warn | None = None) -> str:
        """Stop an active network: undo what its start applied, newest first.

        The leases of a persistent network are kept for its next start (as libvirt keeps
        them); a transient network leaves nothing behind. If one of the network's files
        cannot be read, what it made is found from what can still be known
        (:meth:`_salvage`), and WARN is told where that came from. Returns the network's
        name (NAME may be its uuid).
        """
        require_net_admin("net-destroy")
        with self.store.lock:
            self.store.remove_stale_temp_files()  # of a start or destroy killed mid-write
            try:
                record = self.lookup(name)
            except (StateError, XMLParseError, ValidationError) as exc:
                status = self._salvage(name, exc, _reporter(warn))
                self._stop(status, keep_leases=self.store.is_defined(name))
                return name
            if record.status is None:
                raise InvalidOperationError(
                    f"Requested operation is not valid: network '{record.name}' is not active"
                )
            self._stop(record.status, keep_leases=record.persistent)
            return record.name

    def _salvage(self, name: str, cause: VirtnetError, report: Warn) -> NetworkStatus:
        """What network NAME made, when one of its files cannot be read (CAUSE).

        Nothing is made up, and nothing is guessed from a name alone. In order:
        - the status record itself, if only the definition is unreadable;
        - the actions of the status record, if its JSON still holds a valid list of them
          (another field is what is broken);
        - the journal of its start, if still there: every step begun or applied;
        - the start plan of the live definition the record holds, failing that of the
          persistent definition: the steps a start of that definition applies, undone as
          planned (every undo is written to be safe for a step applied partly, wholly or
          not at all: the same guarantee a start killed inside a step relies on). A re-planned
          bridge is deleted only if the kernel shows it is a bridge with the definition's
          MAC (a bridge that is not provably ours is left, and said so); dnsmasq is found
          by its pid file or command line, both checked against its configuration file.
        Raises CAUSE if NAME has no status (the unreadable file is the definition of an
        inactive network: there is nothing to destroy), HostError if none of the above
        is readable.
        """
        if network_name_problem(name) is not None or not self.store.has_status(name):
            raise cause
        try:
            status = self.store.read_status(name)
        except RecordError as exc:
            status, broken = None, exc
        if status is not None:
            report(f"network '{name}': {cause}; destroying it from its status record")
            return status
        import json

        from virtnet.plan.actions import Action
        from virtnet.store.store import read_journal, read_record_file

        path = self.paths.status(name)
        data: Any = None
        with contextlib.suppress(ValueError, StateError, StorageError):
            raw = read_record_file(path)
            data = json.loads(raw) if raw is not None else None
        data = data if isinstance(data, dict) else {}
        actions = data.get("actions")
        if isinstance(actions, list) and actions:
            try:
                [Action.from_dict(a) for a in actions]  # all of them understood
            except (ValueError, TypeError, AttributeError):
                pass
            else:
                report(f"network '{name}': {broken}; destroying what its actions say")
                return self._salvaged(name, data.get("live_xml"), actions)
        try:
            journal = read_journal(self.store.journal_path(name), name)
        except (StateError, StorageError):
            journal = None
        if journal is not None:
            report(f"network '{name}': {broken}; destroying what its start journal says")
            return self._salvaged(name, journal.live_xml, journal.actions)
        sources = []
        live_xml = data.get("live_xml")
        if isinstance(live_xml, str):
            sources.append(("the live definition in its status record", live_xml, str(path)))
        with contextlib.suppress(StateError, StorageError):
            config = self.store.read_definition(name)
            if config is not None:
                sources.append(("its persistent definition", config,
                                str(self.paths.definition(name))))
        for what, text, source in sources:
            try:
                net = self.parse(text, source)
                if net.name != name:
                    continue
                actions = self._replan(net, report)
            except VirtnetError:
                continue
            report(f"network '{name}': {broken}; destroying what a start of {what} makes")
            return self._salvaged(name, self.format(net), actions)
        raise HostError(
            f"network '{name}': {broken}; neither a start journal nor a readable definition "
            "says what it made, so nothing was removed")

    def _salvaged(self, name: str, live_xml: Any, actions: list[dict[str, Any]]
                  ) -> NetworkStatus:
        return NetworkStatus(name=name, uuid="", bridge=None,
                             live_xml=live_xml if isinstance(live_xml, str) else "",
                             actions=list(actions), active=False)

    def _replan(self, net: Network, report: Warn) -> list[dict[str, Any]]:
        """The actions a start of NET applies, as planned, less the bridge (and what is done
        to it) when the kernel does not show a bridge of NET's MAC under that name."""
        from virtnet.plan.actions import CreateBridge

        with self.host() as host:
            plan = self._plan_start(net, self._facts(host, net))
            actions = plan.actions
            for action in plan.actions:
                if not isinstance(action, CreateBridge):
                    continue
                link = host.link(action.name)
                if link is None:
                    continue  # gone already: undoing what was on it is harmless
                ours = link.kind == "bridge" and (
                    action.mac is None or (link.mac or "").lower() == action.mac.lower())
                if not ours:
                    report(f"network '{net.name}': {action.name} is not a bridge with MAC "
                           f"{action.mac}: left as it is")
                    actions = [a for a in actions
                               if getattr(a, "link", None) != action.name and a is not action]
        return [action.to_dict() for action in actions]

    def plan(self, target: str | Network) -> Plan:
        """The plan ``start`` would apply now: for a network's name, or a parsed definition
        (which gets the defaults a define would give it, without being saved). For an active
        network, the plan of its start, read against the host without what its running start
        made (its own bridge is no clash with itself)."""
        own_links: list[str] = []
        if isinstance(target, Network):
            net = copy.deepcopy(target)
            self._assign_defaults(net, self.records())
        else:
            record = self.lookup(target)
            net = record.config if record.config is not None else record.current
            if record.status is not None:
                own_links = _created_links(record.status.actions)
        with self.host() as host:
            facts = self._facts(host, net)
        if own_links:
            facts = facts.without_links(own_links)
        self._preflight(net, facts)
        return self._plan_start(net, facts)

    def _facts(self, host: Host, net: Network | None = None) -> HostFacts:
        """The host's facts, read before planning; with the tc features when NET (the network
        to plan) shapes traffic, so that the planner never probes the host itself."""
        facts = host.read_facts(networks=self.active_bridges())
        if net is not None and net.bandwidth is not None:
            facts = replace(facts, tc=host.tc_features(self.paths.run_dir))
        return facts

    def active_bridges(self) -> Mapping[str, str]:
        """The bridges of the active networks that have one of their own -> network name,
        read from the status records when first looked up (HostFacts.networks)."""
        return _ActiveBridges(self.store)

    def _preflight(self, net: Network, facts: HostFacts) -> None:
        from virtnet.plan.drivers import driver_for

        problems: list[Problem] = driver_for(net).preflight(net, facts)
        if problems:
            details = "\n".join(f"  {problem}" for problem in problems)
            raise HostConflict(f"network '{net.name}' cannot start on this host:\n{details}")

    def _plan_start(self, net: Network, facts: HostFacts) -> Plan:
        from virtnet.plan.drivers import driver_for

        plan = driver_for(net).plan_start(net, facts, self.paths)
        plan.actions += _day_two_actions(net)  # port forwards, other firewalls' drop rules
        if net.bandwidth is not None:  # the network's own <bandwidth>, on its bridge
            from virtnet.plan.shaping import ApplyShaping, network_shaping

            if facts.tc is None:  # facts read without the network (net-apply's diff)
                with self.host() as host:
                    facts = replace(facts, tc=host.tc_features(self.paths.run_dir))
            assert facts.tc is not None
            shaping = network_shaping(net, facts.tc)
            if shaping is not None:
                plan.actions.append(ApplyShaping.of(shaping, f"network {net.name}'s bandwidth"))
        return plan

    def _start(self, net: Network) -> NetworkStatus:
        """Preflight, plan and apply; the status record follows every applied step, so even a
        crash halfway leaves a record of what to undo (an "interrupted" start)."""
        from virtnet.plan.plans import PlanError

        status = NetworkStatus(
            name=net.name,
            uuid=net.uuid or "",
            bridge=net.bridge_name,
            live_xml=self.format(net, inactive=True),
            started_at=self.store.now(),
            active=False,
        )
        with self.host() as host:
            facts = self._facts(host, net)
            self._preflight(net, facts)
            plan = self._plan_start(net, facts)
            _check_dnsmasq_reach(net.name, plan.actions)

            # appended lines per step (a whole record per step cost more than most steps)
            journal = self.store.begin_status(status)
            try:
                with journal:
                    plan.apply(host, on_step=journal)
            except PlanError as exc:
                if not exc.undo_errors:
                    self.store.delete_status(net.name)  # the host is as it was
                raise
            except StorageError:  # the journal could not be written; the host is as it was
                self.store.delete_status(net.name)
                raise
            status.actions = [action.to_dict() for action in plan.actions]
            status.dnsmasq_pid = _dnsmasq_pid(plan.actions)
            status.active = True
            try:
                self.store.write_status(status)
            except BaseException:
                self._undo_all(host, plan.actions)
                self.store.delete_status(net.name)
                raise
        return status

    def _stop(self, status: NetworkStatus, keep_leases: bool) -> None:
        from virtnet.execute.faults import CRASH_AFTER_UNDO_STEP_ENV, crash_point
        from virtnet.plan.actions import Action
        from virtnet.service.ports import remove_network_ports

        if status.active:
            # Recorded inactive before the first undo: a destroy killed halfway leaves an
            # interrupted record (the next net-start or net-destroy undoes the rest; every
            # undo is safe to run twice), never an "active" network without its bridge.
            status.active = False
            self.store.write_status(status)
        remove_network_ports(self, status.name)  # guests' ports go before their network
        actions = [Action.from_dict(data) for data in status.actions]
        with self.host() as host:
            failed = self._undo_all(
                host, actions,
                on_undone=lambda count: crash_point(CRASH_AFTER_UNDO_STEP_ENV, count))
        if failed:
            # Keep only what could not be undone, so a second destroy retries exactly that.
            status.actions = [action.to_dict() for action, _ in failed]
            self.store.write_status(status)
            details = "\n".join(f"  {action.describe()}: {error}" for action, error in failed)
            raise HostError(f"some steps could not be undone:\n{details}")
        self.store.delete_status(status.name)
        if not keep_leases:
            self._remove_leases(status.name)

    def _clean_interrupted(self, record: NetworkRecord) -> None:
        """Undo what an interrupted start left behind: the steps it applied and the one it
        was killed inside, if any (virtnet.store.store.journal_steps)."""
        if record.status is not None and not record.status.active:
            self._stop(record.status, keep_leases=record.persistent)
            record.status = None
            record.live = None

    @staticmethod
    def _undo_all(host: Host, actions: list[Action],
                  on_undone: Callable[[int], None] | None = None) -> list[tuple[Action, str]]:
        """Undo ``actions`` newest first (the executor's undo), going on past failures;
        return those that failed, in apply order. ``on_undone(k)`` runs after the k-th undo
        (1 = the newest action)."""
        failed: list[tuple[Action, str]] = []
        for count, (_, action, exc) in enumerate(
                undoing(actions, host, catch=(VirtnetError, OSError)), start=1):
            if isinstance(exc, VirtnetError):
                failed.insert(0, (action, str(exc)))
            elif isinstance(exc, OSError):
                failed.insert(0, (action, f"{exc.filename or ''} {exc.strerror or exc}".strip()))
            if on_undone is not None:
                on_undone(count)
        return failed

    def _remove_leases(self, name: str) -> None:
        from virtnet.store.leases import lease_file

        remove_file(lease_file(self.paths, name), durable=False)

    # --- reconciliation -------------------------------------------------------------------

    def health(self, record: NetworkRecord) -> Health:
        """Compare what the status record claims with what the kernel shows now."""
        health = Health()
        status = record.status
        if status is None:
            return health
        if not status.active:
            health.problems.append(
                f"an interrupted start left {len(status.actions)} step(s) to undo; "
                "net-start or net-destroy undoes them"
            )
            return health
        if path_exists(self.paths.apply_journal(record.name)):  # left for a privileged command
            health.problems.append(
                "an interrupted net-apply left the network partly changed; the next command "
                "run with CAP_NET_ADMIN reverts it"
            )
        if status.bridge:  # our own bridge, or the host's bridge a network attaches to
            health.bridge_present = self.link_in_use(status.bridge)
            if not health.bridge_present:
                health.problems.append(f"bridge {status.bridge} is missing")
        if status.dnsmasq_pid is not None:
            health.dnsmasq_running = self.dnsmasq_alive(status.name, status.dnsmasq_pid)
            if not health.dnsmasq_running:
                health.problems.append(f"dnsmasq (pid {status.dnsmasq_pid}) is not running")
        return health

    def _repair(self, record: NetworkRecord) -> None:
        status = record.status
        assert status is not None
        health = self.health(record)
        if not health.degraded:
            raise InvalidOperationError(
                "Requested operation is not valid: network is already active"
            )
        if health.bridge_present is False:
            raise HostError(
                f"network '{record.name}' is recorded active but its bridge {status.bridge} is "
                "gone; run net-destroy, then net-start"
            )
        if health.dnsmasq_running is False:
            self._restart_dnsmasq(status)

    def _restart_dnsmasq(self, status: NetworkStatus) -> None:
        from virtnet.plan.actions import Action
        for index, data in enumerate(status.actions):
            action = Action.from_dict(data)
            if _is_dnsmasq_process(action):
                break
        else:
            raise HostError(f"network '{status.name}' has no recorded dnsmasq to restart")
        with self.host() as host:
            # Undo first: it forgets the dead pid and its pid file; then start afresh.
            action.undo(host)
            fresh = Action.from_dict(action.spec())
            fresh.apply(host)
        status.actions[index] = fresh.to_dict()
        status.dnsmasq_pid = _dnsmasq_pid([fresh])
        self.store.write_status(status)

    # --- queries ---------------------------------------------------------------------------

    def list_networks(
        self,
        all: bool = False,  # noqa: A002 - virsh's option name
        autostart: bool = False,
        inactive: bool = False,
        persistent: bool = False,
        transient: bool = False,
        no_autostart: bool = False,
        warn: Warn | None = None,
    ) -> list[dict[str, Any]]:
        """Rows like ``virsh net-list``: active ones by default, inactive ones with
        ``inactive``, both with ``all``; the other flags filter further. A network whose
        files cannot be read is left out, and WARN told which file (see :meth:`records`)."""
        rows = []
        for record in self.records(warn):
            if not all and record.active == inactive:
                continue
            if persistent and not record.persistent or transient and record.persistent:
                continue
            if autostart and not record.autostart or no_autostart and record.autostart:
                continue
            health = self.health(record)
            rows.append({
                "name": record.name,
                "uuid": record.uuid,
                "state": "active" if record.active else "inactive",
                "autostart": record.autostart,
                "persistent": record.persistent,
                "bridge": record.bridge,
                "problems": health.problems,
            })
        return rows

    def info(self, name: str) -> dict[str, Any]:
        record = self.lookup(name)
        health = self.health(record)
        status = record.status
        return {
            "name": record.name,
            "uuid": record.uuid,
            "active": record.active,
            "persistent": record.persistent,
            "autostart": record.autostart,
            "bridge": record.bridge,
            "forward_mode": record.current.forward_mode.value,
            "bridge_present": health.bridge_present,
            "dnsmasq_pid": status.dnsmasq_pid if status else None,
            "dnsmasq_running": health.dnsmasq_running,
            "started_at": status.started_at if status else None,
            "connections": status.connections if status else 0,
            # per pool interface of a direct network (virtnet.service.ports keeps them)
            "interface_connections": {
                i.dev: i.connections
                for i in (record.current.forward.interfaces if record.current.forward else [])
            } if record.current.uses_macvtap else {},
            "problems": health.problems,
            # rules added to other firewalls' chains at start (virtnet.plan.coexist), and why
            "coexistence": _coexistence(status),
        }

    def dumpxml(self, name: str, inactive: bool = False) -> str:
        """The live definition while active, else (or with ``inactive``) the persistent one."""
        record = self.lookup(name)
        if inactive and record.config is not None:
            return self.format(record.config, inactive=True)
        return self.format(record.current, inactive=inactive)

    def name_of(self, uuid: str) -> str:
        return self.get_by_uuid(uuid).name

    def definition_xml(self, name: str) -> str:
        """What ``net-edit`` edits: the persistent definition (the live one if transient)."""
        return self.dumpxml(name, inactive=True)

    def edit(self, name: str, data: bytes | str, source: str | None = None) -> bool:
        """Replace ``name``'s definition with an edited one; False when nothing changed.

        The edited text is validated (and checked like a define) before anything is saved, so a
        refused edit leaves the old definition in place.
        """
        record = self.lookup(name)
        net = self.parse(data, source)
        if record.config is not None and self.format(net) == self.format(record.config):
            return False
        self.define(data, source)
        return True

    def dhcp_leases(self, name: str, mac: str | None = None) -> list[LeaseRow]:
        from virtnet.store.leases import lease_file, read_leases

        record = self.lookup(name)
        return read_leases(
            lease_file(self.paths, record.name), record.current, self.store.now(), mac
        )

    # --- net-update -----------------------------------------------------------------------

    def update(
        self,
        name: str,
        command: str,
        section: str,
        xml: str,
        parent_index: int = -1,
        live: bool = False,
        config: bool = False,
    ) -> tuple[bool, bool]:
        """One net-update; returns (live changed, config changed).

        Neither ``live`` nor ``config`` means libvirt's "current": the live state of an active
        network, the persistent config of an inactive one.
        """
        from virtnet.spec.update import apply_update
        from virtnet.spec.validate import validate

        # "current" of an active network is live too; read without the lock, checked before it
        require_net_admin_if("net-update --live",
                             lambda: live or (not config and self.lookup(name).active))
        with self.store.lock:
            record = self.lookup(name)
            if not live and not config:
                live, config = record.active, not record.active
            if live and not record.active:
                raise InvalidOperationError(
                    "Requested operation is not valid: network is not running"
                )
            if config and record.config is None:
                raise InvalidOperationError(
                    "Requested operation is not valid: cannot change persistent config of a "
                    "transient network"
                )
            # Both results are computed (and validated) before anything is changed.
            new_config = new_live = None
            config_text = ""
            if config:
                assert record.config is not None
                new_config = apply_update(record.config, command, section, xml, parent_index)
                _raise_problems(validate(new_config), record.name)
                config_text = self._text_reading_back(new_config,
                                                      self.paths.definition(record.name))
            if live:
                assert record.live is not None
                new_live = apply_update(record.live, command, section, xml, parent_index)
                _raise_problems(validate(new_live), record.name)
            if new_live is not None:
                # the same diff, steps, rollback and crash journal as net-apply: what
                # disappeared is undone, what is new applied, a file rewritten in place;
                # dnsmasq restarted when its configuration changed (ranges, TXT, SRV), sent
                # SIGHUP when only its hosts files did (reservations, DNS hosts)
                from virtnet.service.live import apply_live

                apply_live(self, record, new_live)
            if new_config is not None:
                self.store.write_definition(record.name, config_text)
        return live, config

    # --- autostart --------------------------------------------------------------------------

    def set_autostart(self, name: str, enable: bool) -> None:
        with self.store.lock:
            record = self.lookup(name)
            if not record.persistent:
                raise InvalidOperationError(
                    "Requested operation is not valid: cannot set autostart for transient network"
                )
            self.store.set_autostart(record.name, enable)


# --- helpers ---------------------------------------------------------------------------------


class _ActiveBridges(Mapping[str, str]):
    """Engine.active_bridges: read on first use, so a start whose subnets collide with
    nothing never reads the other networks' records."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._found: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._found is None:
            from virtnet.plan.actions import CreateBridge

            found: dict[str, str] = {}
            try:
                names = self._store.status_names()
            except OSError:
                names = []
            for name in names:
                try:
                    status = self._store.read_status(name)
                except (StateError, OSError):
                    continue  # a record that cannot be read names nothing
                if status is None or not status.active or not status.bridge:
                    continue
                if any(action.get("kind") == CreateBridge.kind for action in status.actions):
                    found[status.bridge] = status.name  # a host bridge is not the network's
            self._found = found
        return self._found

    def __getitem__(self, bridge: str) -> str:
        return self._load()[bridge]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


class _ParsedCache:
    """A bounded, thread-safe LRU of pickled networks by (text, source) (see Engine.parse)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[bytes | str, str | None], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[bytes | str, str | None]) -> bytes | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[bytes | str, str | None], value: bytes) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


PARSED_CACHE_SIZE = 128  # definitions and live records
# Larger texts (a definition may have 10 MiB) are parsed each time: the cache holds at most
# 128 x 64 KiB of text and as much pickled.
PARSED_CACHE_MAX_TEXT = 64 * 1024
_parsed = _ParsedCache(PARSED_CACHE_SIZE)


@contextlib.contextmanager
def _readable_state() -> Iterator[None]:
    """The state directory refused to an unprivileged user is most likely root's: say so."""
    try:
        yield
    except StorageError as exc:
        if exc.errno != errno.EACCES or exc.hint or os.geteuid() == 0:
            raise
        raise StorageError(exc.action, exc.path, exc.errno, exc.strerror,
                           hint="the state directory belongs to another user: run virtnet "
                                "as root, or give --state-dir") from None


def _reporter(warn: Warn | None) -> Warn:
    """A warning goes to the log (the daemon's, where libvirt's daemon reports a file it
    could not load) and to WARN, the caller's user, when there is one."""

    def report(message: str) -> None:
        import logging

        logger = logging.getLogger("virtnet")
        if not logger.handlers:  # a library's logger: no last-resort copy on stderr
            logger.addHandler(logging.NullHandler())
        logger.warning("%s", message)
        if warn is not None:
            warn(message)

    return report


def _raise_problems(problems: list[Problem], name: str) -> None:
    if problems:
        raise ValidationError(problems, source=f"network '{name}' after update")


def _day_two_actions(net: Network) -> list[Action]:
    from virtnet.plan import coexist, forwards

    return [*forwards.plan_actions(net), *coexist.plan_actions(net)]


def _coexistence(status: NetworkStatus | None) -> list[dict[str, Any]]:
    if status is None:
        return []
    from virtnet.plan.coexist import recorded_rules

    return recorded_rules(status.actions)


def _is_dnsmasq_process(action: Action) -> bool:
    from virtnet.plan.actions import StartDnsmasq

    return isinstance(action, StartDnsmasq)


def _file_path(action: Action) -> str | None:
    from virtnet.plan.actions import WriteFile

    return action.path if isinstance(action, WriteFile) else None


def _check_dnsmasq_reach(name: str, actions: list[Action]) -> None:
    """Refuse hosts files (reservations, DNS hosts) that dnsmasq could not re-read."""
    from virtnet.service.privilege import check_dnsmasq_dir

    hosts_files = [a for a in actions
                   if _file_path(a) is not None and _file_path(a).endswith(  # type: ignore[union-attr]
                       (".hostsfile", ".addnhosts"))]
    if hosts_files and any(_is_dnsmasq_process(a) for a in actions):
        check_dnsmasq_dir(name, Path(hosts_files[0].path).parent,  # type: ignore[attr-defined]
                          any(a.content.strip() for a in hosts_files))  # type: ignore[attr-defined]


def _created_links(recorded: Iterable[dict[str, Any]]) -> list[str]:
    """The links a start made, from its recorded actions (Action.to_dict): its bridge."""
    from virtnet.plan.actions import CreateBridge

    return [str(data["name"]) for data in recorded
            if data.get("kind") == CreateBridge.kind and data.get("name")]


def _dnsmasq_pid(actions: Iterable[Action]) -> int | None:
    """The pid the (applied) dnsmasq action recorded, if the network runs one."""
    for action in actions:
        if _is_dnsmasq_process(action):
            pid = getattr(action, "pid", None)
            return int(pid) if pid is not None else None
    return None
