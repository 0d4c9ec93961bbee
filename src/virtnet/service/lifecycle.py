"""Networks brought up and down on the host: a start (preflight, plan, apply, the status
record following each step), a stop (the recorded actions undone newest first, the ports
first), the clean-up of a start that was killed, the repair of an active network whose
dnsmasq died, and the salvage of a network whose files cannot be read (what it made found
from what can still be known). The engine calls these with the state lock held.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtnet.errors import (
    HostError,
    InvalidOperationError,
    NotFoundError,
    StorageError,
    ValidationError,
    VirtnetError,
    XMLParseError,
)
from virtnet.execute.executor import undoing
from virtnet.execute.faults import CRASH_AFTER_UNDO_STEP_ENV, crash_point
from virtnet.host import Host
from virtnet.ids import network_name_problem
from virtnet.plan.actions import Action, CreateBridge, StartDnsmasq, WriteFile
from virtnet.plan.plans import Plan, PlanError
from virtnet.plan.planner import plan_start, preflight
from virtnet.service import queries
from virtnet.service.ports import remove_network_ports
from virtnet.service.definitions import check_identity, text_reading_back
from virtnet.service.privilege import check_dnsmasq_dir, require_net_admin
from virtnet.spec.model import Network
from virtnet.store.records import NetworkRecord, created_links, reporter
from virtnet.store.store import (
    NetworkStatus,
    RecordError,
    StateError,
    Warn,
    read_journal,
    read_record_file,
)

if TYPE_CHECKING:
    from virtnet.service.engine import Engine


def salvage(engine: Engine, name: str, cause: VirtnetError, report: Warn) -> NetworkStatus:
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
    if network_name_problem(name) is not None or not engine.store.has_status(name):
        raise cause
    try:
        status = engine.store.read_status(name)
    except RecordError as exc:
        status, broken = None, exc
    if status is not None:
        report(f"network '{name}': {cause}; destroying it from its status record")
        return status
    path = engine.paths.status(name)
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
            return salvaged(name, data.get("live_xml"), actions)
    try:
        journal = read_journal(engine.store.journal_path(name), name)
    except (StateError, StorageError):
        journal = None
    if journal is not None:
        report(f"network '{name}': {broken}; destroying what its start journal says")
        return salvaged(name, journal.live_xml, journal.actions)
    sources = []
    live_xml = data.get("live_xml")
    if isinstance(live_xml, str):
        sources.append(("the live definition in its status record", live_xml, str(path)))
    with contextlib.suppress(StateError, StorageError):
        config = engine.store.read_definition(name)
        if config is not None:
            sources.append(("its persistent definition", config,
                            str(engine.paths.definition(name))))
    for what, text, source in sources:
        try:
            net = engine.parse(text, source)
            if net.name != name:
                continue
            actions = replan(engine, net, report)
        except VirtnetError:
            continue
        report(f"network '{name}': {broken}; destroying what a start of {what} makes")
        return salvaged(name, engine.format(net), actions)
    raise HostError(
        f"network '{name}': {broken}; neither a start journal nor a readable definition "
        "says what it made, so nothing was removed")


def salvaged(name: str, live_xml: Any, actions: list[dict[str, Any]]) -> NetworkStatus:
    return NetworkStatus(name=name, uuid="", bridge=None,
                         live_xml=live_xml if isinstance(live_xml, str) else "",
                         actions=list(actions), active=False)


def replan(engine: Engine, net: Network, report: Warn) -> list[dict[str, Any]]:
    """The actions a start of NET applies, as planned, less the bridge (and what is done
    to it) when the kernel does not show a bridge of NET's MAC under that name."""
    with engine.host() as host:
        plan = plan_start(net, engine.read_facts(host, net), engine.paths)
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


def start_network(engine: Engine, net: Network) -> NetworkStatus:
    """Preflight, plan and apply; the status record follows every applied step, so even a
    crash halfway leaves a record of what to undo (an "interrupted" start)."""
    status = NetworkStatus(
        name=net.name,
        uuid=net.uuid or "",
        bridge=net.bridge_name,
        live_xml=engine.format(net, inactive=True),
        started_at=engine.store.now(),
        active=False,
    )
    with engine.host() as host:
        facts = engine.read_facts(host, net)
        preflight(net, facts)
        plan = plan_start(net, facts, engine.paths)
        check_dnsmasq_reach(net.name, plan.actions)

        # appended lines per step (a whole record per step cost more than most steps)
        journal = engine.store.begin_status(status)
        try:
            with journal:
                plan.apply(host, on_step=journal)
        except PlanError as exc:
            if not exc.undo_errors:
                engine.store.delete_status(net.name)  # the host is as it was
            raise
        except StorageError:  # the journal could not be written; the host is as it was
            engine.store.delete_status(net.name)
            raise
        status.actions = [action.to_dict() for action in plan.actions]
        status.dnsmasq_pid = dnsmasq_pid(plan.actions)
        status.active = True
        try:
            engine.store.write_status(status)
        except BaseException:
            undo_all(host, plan.actions)
            engine.store.delete_status(net.name)
            raise
    return status


def stop_network(engine: Engine, status: NetworkStatus, keep_leases: bool) -> None:
    if status.active:
        # Recorded inactive before the first undo: a destroy killed halfway leaves an
        # interrupted record (the next net-start or net-destroy undoes the rest; every
        # undo is safe to run twice), never an "active" network without its bridge.
        status.active = False
        engine.store.write_status(status)
    remove_network_ports(engine, status.name)  # guests' ports go before their network
    actions = [Action.from_dict(data) for data in status.actions]
    with engine.host() as host:
        failed = undo_all(
            host, actions,
            on_undone=lambda count: crash_point(CRASH_AFTER_UNDO_STEP_ENV, count))
    if failed:
        # Keep only what could not be undone, so a second destroy retries exactly that.
        status.actions = [action.to_dict() for action, _ in failed]
        engine.store.write_status(status)
        details = "\n".join(f"  {action.describe()}: {error}" for action, error in failed)
        raise HostError(f"some steps could not be undone:\n{details}")
    engine.store.delete_status(status.name)
    if not keep_leases:
        engine.remove_leases(status.name)


def clean_interrupted(engine: Engine, record: NetworkRecord) -> None:
    """Undo what an interrupted start left behind: the steps it applied and the one it
    was killed inside, if any (virtnet.store.store.journal_steps)."""
    if record.status is not None and not record.status.active:
        stop_network(engine, record.status, keep_leases=record.persistent)
        record.status = None
        record.live = None


def undo_all(host: Host, actions: list[Action],
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


def repair(engine: Engine, record: NetworkRecord) -> None:
    """Restart the dead dnsmasq of the active RECORD; refuse what a restart cannot mend."""
    status = record.status
    assert status is not None
    health = queries.health(engine, record)
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
        restart_dnsmasq(engine, status)


def restart_dnsmasq(engine: Engine, status: NetworkStatus) -> None:
    """Start the recorded dnsmasq of STATUS afresh (its dead pid forgotten)."""
    for index, data in enumerate(status.actions):
        action = Action.from_dict(data)
        if isinstance(action, StartDnsmasq):
            break
    else:
        raise HostError(f"network '{status.name}' has no recorded dnsmasq to restart")
    with engine.host() as host:
        # Undo first: it forgets the dead pid and its pid file; then start afresh.
        action.undo(host)
        fresh = Action.from_dict(action.spec())
        fresh.apply(host)
    status.actions[index] = fresh.to_dict()
    status.dnsmasq_pid = dnsmasq_pid([fresh])
    engine.store.write_status(status)


def start(engine: Engine, name: str) -> Network:
    """Start a defined network; for an active one, restart a dnsmasq that died."""
    require_net_admin("net-start")
    with engine.store.lock:
        engine.store.remove_stale_temp_files()  # of a start or destroy killed mid-write
        record = engine.lookup(name)
        if record.active:
            repair(engine, record)
            return record.current
        if record.config is None:
            # Only an interrupted transient start looks like this: clean it, it is gone.
            clean_interrupted(engine, record)
            raise NotFoundError(
                f"Network not found: no network with matching name '{record.name}'"
            )
        clean_interrupted(engine, record)
        start_network(engine, record.config)
        return record.config


def create(engine: Engine, data: bytes | str, source: str | None = None) -> Network:
    """Start a network from a definition without keeping it (libvirt's transient network)."""
    require_net_admin("net-create")
    net = engine.parse(data, source)
    with engine.store.lock:
        records = engine.records()
        if engine.store.has_status(net.name) and all(r.name != net.name for r in records):
            engine.load(net.name)  # its status is unreadable: say which file, start nothing
        check_identity(net, records, creating=True)
        for record in records:
            if record.name == net.name:
                clean_interrupted(engine, record)
        engine.assign_defaults(net, records)
        text_reading_back(engine, net, engine.paths.status(net.name), status=True)
        start_network(engine, net)
    return net


def destroy(engine: Engine, name: str, warn: Warn | None = None) -> str:
    """Stop an active network: undo what its start applied, newest first.

    The leases of a persistent network are kept for its next start (as libvirt keeps
    them); a transient network leaves nothing behind. If one of the network's files
    cannot be read, what it made is found from what can still be known
    (:func:`salvage`), and WARN is told where that came from. Returns the
    network's name (NAME may be its uuid).
    """
    require_net_admin("net-destroy")
    with engine.store.lock:
        engine.store.remove_stale_temp_files()  # of a start or destroy killed mid-write
        try:
            record = engine.lookup(name)
        except (StateError, XMLParseError, ValidationError) as exc:
            status = salvage(engine, name, exc, reporter(warn))
            stop_network(engine, status, keep_leases=engine.store.is_defined(name))
            return name
        if record.status is None:
            raise InvalidOperationError(
                f"Requested operation is not valid: network '{record.name}' is not active"
            )
        stop_network(engine, record.status, keep_leases=record.persistent)
        return record.name


def plan(engine: Engine, target: str | Network) -> Plan:
    """The plan ``start`` would apply now: for a network's name, or a parsed definition
    (which gets the defaults a define would give it, without being saved). For an active
    network, the plan of its start, read against the host without what its running start
    made (its own bridge is no clash with itself)."""
    own_links: list[str] = []
    if isinstance(target, Network):
        net = copy.deepcopy(target)
        engine.assign_defaults(net, engine.records())
    else:
        record = engine.lookup(target)
        net = record.config if record.config is not None else record.current
        if record.status is not None:
            own_links = created_links(record.status.actions)
    with engine.host() as host:
        facts = engine.read_facts(host, net)
    if own_links:
        facts = facts.without_links(own_links)
    preflight(net, facts)
    return plan_start(net, facts, engine.paths)


def check_dnsmasq_reach(name: str, actions: list[Action]) -> None:
    """Refuse hosts files (reservations, DNS hosts) that dnsmasq could not re-read."""
    hosts_files = [a for a in actions if isinstance(a, WriteFile)
                   and a.path.endswith((".hostsfile", ".addnhosts"))]
    if hosts_files and any(isinstance(a, StartDnsmasq) for a in actions):
        check_dnsmasq_dir(name, Path(hosts_files[0].path).parent,
                          any(a.content.strip() for a in hosts_files))


def dnsmasq_pid(actions: Iterable[Action]) -> int | None:
    """The pid the (applied) dnsmasq action recorded, if the network runs one."""
    for action in actions:
        if isinstance(action, StartDnsmasq):
            pid = getattr(action, "pid", None)
            return int(pid) if pid is not None else None
    return None


__all__ = [
    "check_dnsmasq_reach",
    "create",
    "destroy",
    "plan",
    "start",
    "clean_interrupted",
    "dnsmasq_pid",
    "repair",
    "replan",
    "restart_dnsmasq",
    "salvage",
    "start_network",
    "stop_network",
    "undo_all",
]
