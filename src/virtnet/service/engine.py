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
:func:`virtnet.service.teardown.salvage`).
"""

from __future__ import annotations

import contextlib
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

from virtnet.spec.defaults import DefaultSources, assign_defaults, libvirt_bridges_here, link_exists
from virtnet.errors import (
    NotFoundError,
    StorageError,
    ValidationError,
    XMLParseError,
)
from virtnet.ids import network_name_problem
from virtnet.spec.model import Network
from virtnet.host import HostProcess
from virtnet.paths import DnsmasqPaths, StatePaths
from virtnet.service import definitions, queries
from virtnet.store.records import (
    PARSED,
    PARSED_CACHE_MAX_TEXT,
    ActiveBridges,
    NetworkRecord,
    readable_state,
    reporter,
)
from virtnet.store.store import (
    DEFAULT_LOCK_TIMEOUT,
    RecordError,
    StateError,
    StateStore,
    Warn,
    path_exists,
    remove_file,
)
from virtnet.host import Host
from virtnet.spec.validate import validate
from virtnet.spec.xml.format import format_network
from virtnet.spec.xml.parse import parse_network
from virtnet.store.leases import lease_file
from virtnet.store.port_files import apply_connection_counts

# For type hints only.
if TYPE_CHECKING:
    from virtnet.facts import HostFacts
    from virtnet.store.leases import LeaseRow
    from virtnet.plan.plans import Plan

UUID_LENGTH = 36


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
        kept = PARSED.get(key) if cacheable else None
        if kept is not None:
            return pickle.loads(kept)

        net = parse_network(data, source=source)
        problems = validate(net)
        if problems:
            raise ValidationError(problems, source=source)
        if cacheable:
            PARSED.put(key, pickle.dumps(net, protocol=pickle.HIGHEST_PROTOCOL))
        return net

    @staticmethod
    def format(net: Network, inactive: bool = True) -> str:
        return format_network(net, inactive=inactive)

    def load(self, name: str) -> NetworkRecord | None:
        """NAME's record from the state; None if it has neither definition nor status."""
        with readable_state():
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
        live_changes().recover_interrupted_apply(self, name)

    def records(self, warn: Warn | None = None) -> list[NetworkRecord]:
        """Every known network, sorted by name as virsh sorts. A network one of whose files
        cannot be read is left out, with a warning naming the file (logged, and given to
        WARN); so is a file whose name cannot be a network's."""
        report = reporter(warn)
        with readable_state():
            names = self.store.all_names(report)
        records = []
        for name in names:
            try:
                record = self.load(name)
            except (StateError, StorageError, XMLParseError, ValidationError) as exc:
                report(f"network '{name}' is left out: {exc}")
                continue
            if record is not None:
                records.append(record)
        return records

    def get(self, name: str) -> NetworkRecord:
        record = self.load(name) if network_name_problem(name) is None else None
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
        Redefining an active network changes only what its next start uses."""
        return definitions.define(self, data, source)

    def undefine(self, name: str) -> None:
        """Forget the persistent definition; an active network keeps running, as transient."""
        definitions.undefine(self, name)

    def assign_defaults(self, net: Network, records: Iterable[NetworkRecord]) -> Network:
        """Give NET the defaults a define gives (bridge name, MAC, uuid...), avoiding the
        bridges of the RECORDS of other networks."""
        others: set[str] = set()
        for record in records:
            if record.name == net.name:
                continue
            for definition in (record.config, record.live):
                if definition is not None and definition.bridge_name:
                    others.add(definition.bridge_name)
        return assign_defaults(
            net, other_bridges=others, link_in_use=self.link_in_use, sources=self.sources,
            reserved=lambda: libvirt_bridges_here(HostProcess),  # skipped where libvirtd's
            # bridges are (the initial namespace)
        )

    # --- start / create / destroy ---------------------------------------------------------

    def start(self, name: str) -> Network:
        """Start a defined network; for an active one, restart a dnsmasq that died."""
        return lifecycle().start(self, name)

    def create(self, data: bytes | str, source: str | None = None) -> Network:
        """Start a network from a definition without keeping it (libvirt's transient network)."""
        return lifecycle().create(self, data, source)

    def destroy(self, name: str, warn: Warn | None = None) -> str:
        """Stop an active network (see :func:`virtnet.service.teardown.destroy`); returns
        its name (NAME may be its uuid)."""
        return teardown().destroy(self, name, warn)

    def replan(self, net: Network, report: Warn) -> list[dict[str, Any]]:
        """The recorded form of the actions a start of NET applies, for a salvage (see
        :func:`virtnet.service.lifecycle.replan`)."""
        return lifecycle().replan(self, net, report)

    def plan(self, target: str | Network) -> Plan:
        """The plan ``start`` would apply now, for a network's name or a parsed definition
        (see :func:`virtnet.service.lifecycle.plan`)."""
        return lifecycle().plan(self, target)

    def read_facts(self, host: Host, net: Network | None = None) -> HostFacts:
        """The host's facts, read before planning; with the tc features when NET (the network
        to plan) shapes traffic, so that the planner never probes the host itself."""
        facts = host.read_facts(networks=self.active_bridges())
        if net is not None and net.bandwidth is not None:
            facts = replace(facts, tc=host.tc_features(self.paths.run_dir))
        return facts

    def active_bridges(self) -> Mapping[str, str]:
        """The bridges of the active networks that have one of their own -> network name,
        read from the status records when first looked up (HostFacts.networks)."""
        return ActiveBridges(self.store)

    def remove_leases(self, name: str) -> None:
        """Forget network NAME's leases (kept across its restarts, not beyond it)."""
        remove_file(lease_file(self.paths, name), durable=False)

    # --- queries (virtnet.service.queries) -------------------------------------------------

    def health(self, record: NetworkRecord) -> queries.Health:
        """Compare what the status record claims with what the kernel shows now."""
        return queries.health(self, record)

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
        return queries.list_networks(self, all=all, autostart=autostart, inactive=inactive,
                                     persistent=persistent, transient=transient,
                                     no_autostart=no_autostart, warn=warn)

    def info(self, name: str) -> dict[str, Any]:
        return queries.info(self, name)

    def dhcp_leases(self, name: str, mac: str | None = None) -> list[LeaseRow]:
        return queries.dhcp_leases(self, name, mac)

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
        """Replace NAME's definition with an edited one; False when nothing changed."""
        return definitions.edit(self, name, data, source)

    def update(self, name: str, command: str, section: str, xml: str, parent_index: int = -1,
               live: bool = False, config: bool = False) -> tuple[bool, bool]:
        """One net-update; returns (live changed, config changed) (see
        virtnet.service.live.update)."""
        return live_changes().update(self, name, command, section, xml, parent_index, live, config)

    def set_autostart(self, name: str, enable: bool) -> None:
        definitions.set_autostart(self, name, enable)


# The two parts of the engine that load the planner, the drivers and every action kind: a
# command that only reads or defines networks never pays for them.


def lifecycle() -> ModuleType:
    """virtnet.service.lifecycle (start, create, plan), loaded on first use."""
    from virtnet.service import lifecycle as module

    return module


def teardown() -> ModuleType:
    """virtnet.service.teardown (destroy and its salvage), loaded on first use: a destroy
    loads no planner."""
    from virtnet.service import teardown as module

    return module


def live_changes() -> ModuleType:
    """virtnet.service.live (net-apply, net-update and their recovery), loaded on first use."""
    from virtnet.service import live as module

    return module
