"""Networks taken down: a stop (the ports first, then the recorded actions undone newest
first), the clean-up of a start that was killed, and the salvage of a network whose files
cannot be read (what it made found from what can still be known). A destroy loads neither
the planner nor the drivers: the recorded actions name their kinds, and each kind's module
is imported when one is read back (virtnet.plan.actions.KIND_MODULES). The engine calls
these with the state lock held.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from virtnet.errors import (
    HostError,
    InvalidOperationError,
    StorageError,
    ValidationError,
    VirtnetError,
    XMLParseError,
)
from virtnet.execute.executor import undoing
from virtnet.execute.faults import CRASH_AFTER_UNDO_STEP_ENV, crash_point
from virtnet.ids import network_name_problem
from virtnet.plan.actions import Action
from virtnet.service.privilege import require_net_admin
from virtnet.store.port_files import ports_dir
from virtnet.store.records import NetworkRecord, reporter
from virtnet.store.store import (
    NetworkStatus,
    RecordError,
    StateError,
    Warn,
    path_exists,
    read_journal,
    read_record_file,
)

if TYPE_CHECKING:
    from virtnet.host import Host
    from virtnet.service.engine import Engine


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


def stop_network(engine: Engine, status: NetworkStatus, keep_leases: bool) -> None:
    if status.active:
        # Recorded inactive before the first undo: a destroy killed halfway leaves an
        # interrupted record (the next net-start or net-destroy undoes the rest; every
        # undo is safe to run twice), never an "active" network without its bridge.
        status.active = False
        engine.store.write_status(status)
    remove_ports(engine, status.name)  # guests' ports go before their network
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


def remove_ports(engine: Engine, network: str) -> None:
    """Remove NETWORK's ports (HostError if some remain). A network without ports costs one
    stat, and the command never loads the port machinery (drivers, attach fragments)."""
    if not path_exists(ports_dir(engine.paths.status_dir, network)):
        return
    from virtnet.service.ports import remove_network_ports  # lazy: only where ports exist

    remove_network_ports(engine, network)


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
            actions = engine.replan(net, report)
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


__all__ = ["clean_interrupted", "destroy", "remove_ports", "salvage", "salvaged", "stop_network",
           "undo_all"]
