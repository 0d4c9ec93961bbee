"""Networks brought up on the host: a start (preflight, plan, apply, the status record
following each step), a plan of one, the repair of an active network whose dnsmasq died,
and the re-plan a salvage falls back on. Taking networks down is virtnet.service.teardown,
which a destroy loads without this module (and its planner). The engine calls these with
the state lock held.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtnet.errors import HostError, InvalidOperationError, NotFoundError, StorageError
from virtnet.plan.actions import Action, CreateBridge, StartDnsmasq, WriteFile
from virtnet.plan.plans import Plan, PlanError
from virtnet.plan.planner import plan_start, preflight
from virtnet.service import queries
from virtnet.service.definitions import check_identity, text_reading_back
from virtnet.service.privilege import check_dnsmasq_dir, require_net_admin
from virtnet.service.teardown import clean_interrupted, undo_all
from virtnet.spec.model import Network
from virtnet.store.records import NetworkRecord, created_links
from virtnet.store.store import NetworkStatus, Warn

if TYPE_CHECKING:
    from virtnet.service.engine import Engine


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
    "plan",
    "start",
    "dnsmasq_pid",
    "repair",
    "replan",
    "restart_dnsmasq",
    "start_network",
]
