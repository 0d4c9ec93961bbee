"""net-apply: change a running network to a new definition, touching only what differs.

Every live change goes through here: net-apply, net-update --live (the definition the
update produced) and net-forward-add/del --live.

The running network's recorded start actions are compared with the start plan of the new
definition (by spec: what an action does, not what it recorded), and the difference becomes
a list of steps:

- an action only in the old plan is undone, one only in the new plan is applied;
- the bridge is never recreated: a different MTU, STP or forward delay is set on it in place;
- firewall and forward rules are swapped in ONE nft transaction (old teardown + new ruleset),
  so no packet sees a half-loaded ruleset;
- a dnsmasq file is rewritten in place; dnsmasq is restarted when its configuration changed
  (it reads that only at start; its lease file stays, so guests keep their addresses) and
  signalled (SIGHUP) when only its hosts files changed.

What cannot change on a running network (bridge name or MAC, forward mode, the bridge's own
addresses) is named; with ``restart`` the network is stopped and started with the new
definition instead. Every step records how to reverse itself: if step k fails, steps k-1..1
are reversed and the network runs exactly as before. The new definition is saved (persistent
config and live record) only when everything succeeded.

Killed midway (SIGKILL, power cut of the process, not of the host): before its first step an
apply writes ``NAME.apply-journal`` next to the status record, holding what the network ran
with and the steps, then one appended line as each step begins and one when it is done. A
kill therefore leaves the network partly changed, its status record still describing the old
state, and that journal. The next command that loads the network with CAP_NET_ADMIN (net-list,
net-info, net-start, net-destroy, net-apply...) reverses it before going on: the done steps
newest first and the begun one in a way that holds whether it ran wholly, partly or not at
all (an undone action is undone again, then applied; a firewall swap loads the old rules
after a teardown of the new, which is a no-op when the new ones never got committed; a
dnsmasq restart stops either daemon and starts the old one once its files are back), then
rewrites the status record (with the pid of a dnsmasq it restarted) and removes the journal.
An unprivileged read leaves the journal alone and reports the network as half-changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtnet.errors import HostError, InvalidOperationError, Problem, ValidationError, VirtnetError
from virtnet.execute import journal as journals
from virtnet.execute.executor import RunFailed, run
from virtnet.execute.faults import LIVE
from virtnet.execute.recover import recover, to_recover
from virtnet.execute.steps import (
    ApplyAction,
    Replace,
    ReloadDnsmasq,
    RestartDnsmasq,
    Step,
    TuneBridge,
    UndoAction,
    bridge_changes,
)
from virtnet.spec.model import Network
from virtnet.plan.actions import (
    Action,
    CreateBridge,
    LoadFirewall,
    StartDnsmasq,
    WriteFile,
)
from virtnet.plan.forwards import check_forwards
from virtnet.plan.planner import plan_start
from virtnet.service.definitions import text_reading_back
from virtnet.service.lifecycle import check_dnsmasq_reach, start_network
from virtnet.service.teardown import stop_network
from virtnet.service.privilege import has_net_admin, require_net_admin, require_net_admin_if
from virtnet.spec.forwards import read_forwards
from virtnet.spec.update import apply_update
from virtnet.spec.validate import validate
from virtnet.store.records import NetworkRecord
from virtnet.store.store import StateError, path_exists, read_file, remove_file

if TYPE_CHECKING:
    from virtnet.service.engine import Engine
    from virtnet.host import Host

DNSMASQ_CONF_SUFFIX = ".conf"
OPERATION = "net-apply"  # the verb named when it is refused for lack of privilege


class ApplyError(VirtnetError):
    """The new definition cannot be applied live (and --restart was not given)."""


class StepError(HostError):
    """A step of a live apply failed; the done ones were reversed, except those named in
    ``rollback_errors``."""

    def __init__(self, message: str, rollback_errors: list[str]) -> None:
        super().__init__(message)
        self.rollback_errors = rollback_errors


def step_from_dict(data: dict[str, Any]) -> Step:
    """A step as the apply journal keeps it (Step.to_dict), its actions read back."""
    return Step.from_dict(data, Action.from_dict)


@dataclass
class ApplyDiff:
    network: str
    steps: list[Step] = field(default_factory=list)
    not_live: list[str] = field(default_factory=list)  # what only a restart can change
    merged: list[Action] = field(default_factory=list)  # the new plan, old records reused
    old: list[Action] = field(default_factory=list)  # the recorded actions


def not_live_changes(old: Network, new: Network) -> list[str]:
    """What differs between OLD and NEW that a running network cannot take (pure)."""
    found = []
    if old.bridge_name != new.bridge_name:
        found.append(f"bridge name ({old.bridge_name} → {new.bridge_name})")
    if old.forward_mode is not new.forward_mode:
        found.append(f"forward mode ({old.forward_mode.value} → {new.forward_mode.value})")
    if (old.mac or None) != (new.mac or None):
        found.append(f"bridge MAC ({old.mac} → {new.mac})")
    old_addrs = sorted(str(ip.interface) for ip in old.ips if ip.interface is not None)
    new_addrs = sorted(str(ip.interface) for ip in new.ips if ip.interface is not None)
    if old_addrs != new_addrs:
        found.append(f"bridge addresses ({', '.join(old_addrs)} → {', '.join(new_addrs)})")
    return found


def diff_actions(network: str, old: list[Action], new: list[Action]) -> ApplyDiff:
    """The steps that turn a network running OLD (recorded actions) into one running NEW
    (a fresh start plan). Pure: nothing is applied."""
    diff = ApplyDiff(network)
    matched_old: set[int] = set()
    merged: list[Action] = []
    pending: list[Step] = []
    dnsmasq_conf_changed = False
    dnsmasq_hosts_changed = False

    def find_old(predicate: Any) -> int | None:
        for index, action in enumerate(old):
            if index not in matched_old and predicate(action):
                return index
        return None

    for action in new:
        spec = action.spec()
        index = find_old(lambda a, spec=spec: a.spec() == spec)
        if index is not None:
            matched_old.add(index)
            merged.append(old[index])
            continue
        if isinstance(action, CreateBridge):
            index = find_old(lambda a: isinstance(a, CreateBridge) and a.name == action.name)
            if index is not None:
                matched_old.add(index)
                if bridge_changes(old[index], action):  # type: ignore[arg-type]
                    pending.append(TuneBridge(old[index], action))
                merged.append(action)
                continue
        if isinstance(action, LoadFirewall):
            index = find_old(lambda a: type(a) is type(action)
                             and a.network == action.network)  # type: ignore[attr-defined]
            if index is not None:
                matched_old.add(index)
                pending.append(Replace(old[index], action))
                merged.append(action)
                continue
        if isinstance(action, WriteFile):
            index = find_old(lambda a: isinstance(a, WriteFile) and a.path == action.path)
            if index is not None:
                matched_old.add(index)
                pending.append(Replace(old[index], action))
                if action.path.endswith(DNSMASQ_CONF_SUFFIX):
                    dnsmasq_conf_changed = True
                else:
                    dnsmasq_hosts_changed = True
                merged.append(action)
                continue
        pending.append(ApplyAction(None, action))
        merged.append(action)

    # what disappeared goes first, newest first (as a destroy would remove it)
    undo_steps: list[Step] = [UndoAction(action, None) for index, action in enumerate(old)
                  if index not in matched_old]
    undo_steps.reverse()
    steps = undo_steps + pending
    dnsmasq_index = next((i for i, a in enumerate(merged) if isinstance(a, StartDnsmasq)), None)
    if dnsmasq_index is not None and merged[dnsmasq_index] in old:
        running = merged[dnsmasq_index]
        if dnsmasq_conf_changed:
            fresh = Action.from_dict(running.spec())
            steps.append(RestartDnsmasq(running, fresh))
            merged[dnsmasq_index] = fresh
        elif dnsmasq_hosts_changed:
            steps.append(ReloadDnsmasq(running, running))
    diff.steps = steps
    diff.merged = merged
    diff.old = list(old)
    return diff


# --- executing steps ---------------------------------------------------------------------


def run_steps(host: Host, steps: list[Step], journal: journals.Journal | None = None) -> None:
    """Run STEPS in order through the executor; if one fails, the done ones are reversed
    newest first and StepError says what happened. ``journal`` hears of each step before
    and after it ran, and of each one the rollback reversed."""
    try:
        run(steps, host, journal, faults=LIVE)
    except RunFailed as failure:
        errors = [f"  reverting '{step.describe()}': {error}"
                  for _, step, error in failure.undo_failures]
        if failure.settle_error is not None:
            errors.append(f"  {failure.settle_error}")
        message = f"step {failure.number} ({failure.step.describe()}) " \
                  f"{'failed' if failure.begun else 'not done'}: {failure.cause}"
        if errors:
            message += "\nrolling back also failed:\n" + "\n".join(errors)
        else:
            message += "\nthe network runs as before"
        raise StepError(message, errors) from failure.cause


# --- the engine side ------------------------------------------------------------------------


def plan_diff(engine: Engine, record: NetworkRecord, net: Network) -> ApplyDiff:
    """The diff between RECORD (active) and NET, with the host's current facts."""
    assert record.status is not None and record.live is not None
    old = [Action.from_dict(data) for data in record.status.actions]
    with engine.host() as host:
        facts = engine.read_facts(host, net)
    # the one collision judge of start and doctor; what lies on the network's own bridge is
    # its own, so only a new or changed subnet or route can collide
    collisions = facts.subnet_collisions(net, active=True)
    if collisions:
        details = "\n".join(f"  {problem}" for problem in collisions)
        raise ApplyError(f"network '{record.name}' cannot take this change on this host:\n"
                         f"{details}")
    new_plan = plan_start(net, facts, engine.paths)
    diff = diff_actions(record.name, old, new_plan.actions)
    diff.not_live = not_live_changes(record.live, net)
    return diff


# journals this process is writing: the engine's recovery leaves them alone
_journals_in_use: set[Path] = set()


def apply_live(engine: Engine, record: NetworkRecord, net: Network) -> ApplyDiff:
    """Bring the active RECORD to NET in place (caller holds the state lock); the status
    record is written only after every step succeeded. The steps are journalled (see
    :class:`ApplyJournal`) so that a kill midway is reverted by the next privileged command
    (:func:`recover_interrupted_apply`)."""
    diff = plan_diff(engine, record, net)
    check_dnsmasq_reach(record.name, diff.merged)
    if diff.not_live:
        raise ApplyError(
            f"network '{record.name}': cannot change while running: "
            + "; ".join(diff.not_live) + " (use --restart)"
        )
    status = record.status
    assert status is not None
    path = engine.paths.apply_journal(record.name)
    journal = None
    _journals_in_use.add(path)
    try:
        if diff.steps:
            # the header lists the steps; then a line as each begins, ends or is reverted
            journal = journals.Journal(path, {
                "network": record.name,
                "live_xml": status.live_xml,
                "actions": status.actions,
                "steps": [step.to_dict() for step in diff.steps],
            }, numbered=True, eager=True)
        with engine.host() as host:
            try:
                run_steps(host, diff.steps, journal)
            except BaseException as exc:
                # a rolled-back step may have re-recorded (a restarted dnsmasq's new pid);
                # a record that did not change is not rewritten (the disk may be full)
                actions = [action.to_dict() for action in diff.old]
                pid = next((getattr(a, "pid", None) for a in diff.old
                            if isinstance(a, StartDnsmasq)), status.dnsmasq_pid)
                if (actions, pid) != (status.actions, status.dnsmasq_pid):
                    status.actions, status.dnsmasq_pid = actions, pid
                    engine.store.write_status(status)
                # a rollback that failed somewhere keeps the journal, for the next command
                # to try again; one that went through leaves nothing to recover
                if journal is not None and isinstance(exc, StepError) \
                        and not exc.rollback_errors:
                    journal.discard()
                raise
        status.actions = [action.to_dict() for action in diff.merged]
        status.live_xml = engine.format(net, inactive=True)
        pid = next((getattr(a, "pid", None) for a in diff.merged
                    if isinstance(a, StartDnsmasq)), None)
        status.dnsmasq_pid = pid
        engine.store.write_status(status)
        if journal is not None:
            journal.discard()
    finally:
        if journal is not None:
            journal.close()
        _journals_in_use.discard(path)
    return diff


# --- recovery of a killed apply -------------------------------------------------------------


def _share_old_actions(steps: list[Step], old_actions: list[Action]) -> None:
    """Make each step's old action the very object of the running network's list, so what a
    recovery re-applies (a restarted dnsmasq's pid) lands in the status record."""
    used: set[int] = set()
    for step in steps:
        if step.old is None:
            continue
        wanted = step.old.to_dict()
        for index, action in enumerate(old_actions):
            if index not in used and action.to_dict() == wanted:
                used.add(index)
                step.old = action
                break


def recover_interrupted_apply(engine: Engine, name: str) -> bool:
    """Revert what a net-apply of NAME killed midway left: the steps it journalled done,
    newest first, and the one it was killed inside. Then the status record says again what
    the network had before (its actions, with pids of what was restarted, and live
    definition) and the journal is removed. Returns whether there was something to recover.

    Without CAP_NET_ADMIN nothing is done (the reverts need it): a read by an unprivileged
    user leaves the journal to the next privileged command."""
    path = engine.paths.apply_journal(name)
    if path in _journals_in_use or not path_exists(path) or not has_net_admin():
        return False
    with engine.store.lock:
        raw = read_file(path)
        if raw is None:  # the apply we waited for finished
            return False
        try:
            journal = journals.parse(raw, header=True)
            if journal is None:  # killed before its first line was whole: nothing began
                remove_file(path, durable=False)
                return True
            header = journal.header
            assert header is not None
            old_actions = [Action.from_dict(data) for data in header["actions"]]
            steps = [step_from_dict(data) for data in header["steps"]]
            wanted = to_recover(steps, journal.steps)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise StateError(f"{path}: unreadable apply journal: {exc}") from exc
        _share_old_actions(steps, old_actions)
        with engine.host() as host:
            failures = recover(wanted, host, catch=(VirtnetError, OSError))
        errors = [f"  reverting '{step.describe()}': {error}" for _, step, error in failures]
        status = engine.store.read_status(name)
        if status is not None and status.active:
            status.actions = [action.to_dict() for action in old_actions]
            status.live_xml = str(header["live_xml"])
            status.dnsmasq_pid = next((getattr(a, "pid", None) for a in old_actions
                                       if isinstance(a, StartDnsmasq)), None)
            engine.store.write_status(status)
        remove_file(path, durable=False)
    if errors:
        raise HostError(f"network '{name}': reverting an interrupted net-apply left some "
                        "changes in place:\n" + "\n".join(errors))
    return True


def _carry_identity(new: Network, running: Network) -> None:
    """A definition file usually omits what define assigned (uuid, bridge name, MAC): take
    them from the running network rather than inventing new ones."""
    if new.uuid is None:
        new.uuid = running.uuid
    if new.bridge is None and running.bridge is not None:
        new.bridge = copy.deepcopy(running.bridge)
    elif new.bridge is not None and new.bridge.name is None and running.bridge is not None:
        new.bridge.name = running.bridge.name
    if new.mac is None:
        new.mac = running.mac


@dataclass
class ApplyResult:
    network: str
    steps: list[str]
    not_live: list[str]
    restarted: bool = False
    applied: bool = False  # False for --dry-run
    saved: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def apply_definition(engine: Engine, data: bytes | str, source: str | None = None,
                     *, dry_run: bool = False, restart: bool = False) -> ApplyResult:
    """net-apply FILE: change the running network (named in FILE) to FILE's definition and
    save it; an inactive network is only (re)defined."""

    net = engine.parse(data, source)
    problems = check_forwards(net, read_forwards(net))
    if problems:
        raise ValidationError(problems, source=source)
    # An active network's host side changes: refused without CAP_NET_ADMIN before the lock
    # is taken (an inactive one is only redefined, which needs no privilege, like net-define).
    if not dry_run:
        require_net_admin_if(OPERATION, lambda: engine.lookup(net.name).active)
    with engine.store.lock:
        record = engine.lookup(net.name)
        if record.active and not dry_run:
            require_net_admin(OPERATION)  # started since the check above
        if not record.active:
            result = ApplyResult(net.name, [f"define network {net.name} (it is not running)"], [])
            if not dry_run:
                engine.define(data, source)
                result.applied = result.saved = True
            return result
        assert record.live is not None and record.status is not None
        _carry_identity(net, record.live)
        engine.assign_defaults(net, engine.records())
        diff = plan_diff(engine, record, net)
        result = ApplyResult(net.name, [s.describe() for s in diff.steps], diff.not_live)
        if diff.not_live:
            if not restart:
                raise ApplyError(
                    f"network '{net.name}': cannot change while running: "
                    + "; ".join(diff.not_live) + " (net-apply --restart stops and starts it)"
                )
            result.steps = [f"stop network {net.name}", f"start network {net.name} anew"]
            result.restarted = True
            if dry_run:
                return result
            _restart_with(engine, record, net)
        elif dry_run:
            return result
        else:
            apply_live(engine, record, net)
        result.applied = True
        if record.persistent:
            engine.store.write_definition(net.name, engine.format(net, inactive=True))
            result.saved = True
        return result


def _restart_with(engine: Engine, record: NetworkRecord, net: Network) -> None:
    """Stop RECORD and start NET; if NET does not start, start the old definition again."""
    assert record.status is not None and record.live is not None
    old_live = record.live
    stop_network(engine, record.status, keep_leases=True)
    try:
        start_network(engine, net)
    except BaseException:
        start_network(engine, old_live)
        raise


def update(engine: Engine, name: str, command: str, section: str, xml: str,
           parent_index: int = -1, live: bool = False, config: bool = False
           ) -> tuple[bool, bool]:
    """One net-update; returns (live changed, config changed).

    Neither ``live`` nor ``config`` means libvirt's "current": the live state of an active
    network, the persistent config of an inactive one.
    """
    # "current" of an active network is live too; read without the lock, checked before it
    require_net_admin_if("net-update --live",
                         lambda: live or (not config and engine.lookup(name).active))
    with engine.store.lock:
        record = engine.lookup(name)
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
            config_text = text_reading_back(engine, new_config,
                                                  engine.paths.definition(record.name))
        if live:
            assert record.live is not None
            new_live = apply_update(record.live, command, section, xml, parent_index)
            _raise_problems(validate(new_live), record.name)
        if new_live is not None:
            # the same diff, steps, rollback and crash journal as net-apply: what
            # disappeared is undone, what is new applied, a file rewritten in place;
            # dnsmasq restarted when its configuration changed (ranges, TXT, SRV), sent
            # SIGHUP when only its hosts files did (reservations, DNS hosts)
            apply_live(engine, record, new_live)
        if new_config is not None:
            engine.store.write_definition(record.name, config_text)
    return live, config


def _raise_problems(problems: list[Problem], name: str) -> None:
    if problems:
        raise ValidationError(problems, source=f"network '{name}' after update")
