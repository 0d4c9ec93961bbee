"""net-apply: change a running network to a new definition, touching only what differs.

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
"""

from __future__ import annotations

import copy
import os
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from virtnet.errors import HostError, ValidationError, VirtnetError
from virtnet.model import Network
from virtnet.plan import (
    Action,
    CreateBridge,
    LoadFirewall,
    StartDnsmasq,
    WriteFile,
)

if TYPE_CHECKING:
    from virtnet.engine import Engine, NetworkRecord
    from virtnet.host import Host

DNSMASQ_CONF_SUFFIX = ".conf"
OPERATION = "net-apply"  # the verb named when it is refused for lack of privilege


class ApplyError(VirtnetError):
    """The new definition cannot be applied live (and --restart was not given)."""


@dataclass
class Step:
    """One change of a live apply: ``op`` is apply, undo, replace, tune-bridge, restart-dnsmasq
    or reload-dnsmasq; ``old``/``new`` the recorded and planned actions it concerns."""

    op: str
    old: Action | None = None
    new: Action | None = None

    def describe(self) -> str:
        if self.op == "apply":
            assert self.new is not None
            return self.new.describe()
        if self.op == "undo":
            assert self.old is not None
            return f"undo: {self.old.describe()}"
        if self.op == "tune-bridge":
            assert isinstance(self.old, CreateBridge) and isinstance(self.new, CreateBridge)
            return f"set {_bridge_changes(self.old, self.new)} on bridge {self.new.name} in place"
        if self.op == "restart-dnsmasq":
            assert self.new is not None
            return f"restart dnsmasq of network {getattr(self.new, 'network', '?')} " \
                   "(its configuration changed; leases are kept)"
        if self.op == "reload-dnsmasq":
            assert self.new is not None
            return f"signal dnsmasq of network {getattr(self.new, 'network', '?')} " \
                   "to re-read its hosts files (SIGHUP)"
        assert self.new is not None
        if isinstance(self.new, LoadFirewall):
            return f"replace in one nft transaction: {self.new.describe()}"
        return f"rewrite: {self.new.describe()}"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "describe": self.describe()}


@dataclass
class ApplyDiff:
    network: str
    steps: list[Step] = field(default_factory=list)
    not_live: list[str] = field(default_factory=list)  # what only a restart can change
    merged: list[Action] = field(default_factory=list)  # the new plan, old records reused
    old: list[Action] = field(default_factory=list)  # the recorded actions

    @property
    def unchanged(self) -> bool:
        return not self.steps and not self.not_live


def _bridge_changes(old: CreateBridge, new: CreateBridge) -> str:
    parts = []
    if old.mtu != new.mtu:
        parts.append(f"MTU {new.mtu or 'default'}")
    if old.stp != new.stp:
        parts.append(f"STP {'on' if new.stp else 'off'}")
    if old.delay != new.delay:
        parts.append(f"forward delay {new.delay} s")
    return ", ".join(parts)


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
                if _bridge_changes(old[index], action):  # type: ignore[arg-type]
                    pending.append(Step("tune-bridge", old[index], action))
                merged.append(action)
                continue
        if isinstance(action, LoadFirewall):
            index = find_old(lambda a: type(a) is type(action)
                             and a.network == action.network)  # type: ignore[attr-defined]
            if index is not None:
                matched_old.add(index)
                pending.append(Step("replace", old[index], action))
                merged.append(action)
                continue
        if isinstance(action, WriteFile):
            index = find_old(lambda a: isinstance(a, WriteFile) and a.path == action.path)
            if index is not None:
                matched_old.add(index)
                pending.append(Step("replace", old[index], action))
                if action.path.endswith(DNSMASQ_CONF_SUFFIX):
                    dnsmasq_conf_changed = True
                else:
                    dnsmasq_hosts_changed = True
                merged.append(action)
                continue
        pending.append(Step("apply", None, action))
        merged.append(action)

    # what disappeared goes first, newest first (as a destroy would remove it)
    undo_steps = [Step("undo", action, None) for index, action in enumerate(old)
                  if index not in matched_old]
    undo_steps.reverse()
    steps = undo_steps + pending
    dnsmasq_index = next((i for i, a in enumerate(merged) if isinstance(a, StartDnsmasq)), None)
    if dnsmasq_index is not None and merged[dnsmasq_index] in old:
        running = merged[dnsmasq_index]
        if dnsmasq_conf_changed:
            fresh = Action.from_dict(running.spec())
            steps.append(Step("restart-dnsmasq", running, fresh))
            merged[dnsmasq_index] = fresh
        elif dnsmasq_hosts_changed:
            steps.append(Step("reload-dnsmasq", running, running))
    diff.steps = steps
    diff.merged = merged
    diff.old = list(old)
    return diff


# --- executing steps ---------------------------------------------------------------------


def _tune_bridge(host: Host, link: str, bridge: CreateBridge) -> None:
    argv = ["ip", "link", "set", "dev", link]
    if bridge.mtu:
        argv += ["mtu", str(bridge.mtu)]
    argv += ["type", "bridge", "stp_state", str(int(bridge.stp)),
             "forward_delay", str(bridge.delay * 100)]
    host.run(argv)


def _signal_dnsmasq(action: Action) -> None:
    from pathlib import Path

    from virtnet.host.dnsmasq import is_our_dnsmasq

    pid = getattr(action, "pid", None)
    conf = getattr(action, "conf_file", None)
    if pid is not None and conf is not None and is_our_dnsmasq(pid, Path(conf)):
        os.kill(pid, signal.SIGHUP)


def _run_step(host: Host, step: Step) -> None:
    if step.op == "apply":
        assert step.new is not None
        step.new.apply(host)
    elif step.op == "undo":
        assert step.old is not None
        step.old.undo(host)
    elif step.op == "tune-bridge":
        assert isinstance(step.new, CreateBridge)
        _tune_bridge(host, step.new.name, step.new)
    elif step.op == "replace":
        if isinstance(step.new, LoadFirewall):
            assert isinstance(step.old, LoadFirewall)
            host.nft(step.old.teardown + step.new.ruleset,
                     what=f"replace the rules of network {step.new.network}")
        else:
            assert step.new is not None
            step.new.apply(host)
    elif step.op == "restart-dnsmasq":
        assert step.old is not None and step.new is not None
        step.old.undo(host)
        step.new.apply(host)
    elif step.op == "reload-dnsmasq":
        assert step.new is not None
        _signal_dnsmasq(step.new)


def _revert_step(host: Host, step: Step) -> None:
    if step.op == "apply":
        assert step.new is not None
        step.new.undo(host)
    elif step.op == "undo":
        assert step.old is not None
        step.old.apply(host)  # records afresh (e.g. a new pid) on the recorded action
    elif step.op == "tune-bridge":
        assert isinstance(step.old, CreateBridge)
        _tune_bridge(host, step.old.name, step.old)
    elif step.op == "replace":
        if isinstance(step.new, LoadFirewall):
            assert isinstance(step.old, LoadFirewall)
            host.nft(step.new.teardown + step.old.ruleset,
                     what=f"restore the rules of network {step.new.network}")
        else:
            assert step.old is not None
            step.old.apply(host)
    elif step.op == "restart-dnsmasq":
        assert step.old is not None and step.new is not None
        step.new.undo(host)
        step.old.apply(host)
    elif step.op == "reload-dnsmasq":
        assert step.old is not None
        _signal_dnsmasq(step.old)


def run_steps(host: Host, steps: list[Step]) -> None:
    """Run STEPS in order; if one fails, reverse the done ones newest first and raise."""
    done: list[Step] = []
    for number, step in enumerate(steps, start=1):
        try:
            if os.environ.get("VIRTNET_APPLY_FAULT_STEP") == str(number):
                raise HostError(f"injected fault at apply step {number}")
            _run_step(host, step)
        except BaseException as exc:
            errors = []
            for earlier in reversed(done):
                try:
                    _revert_step(host, earlier)
                except Exception as revert_exc:  # noqa: BLE001 - report all, go on
                    errors.append(f"  reverting '{earlier.describe()}': {revert_exc}")
            if not isinstance(exc, Exception):
                raise
            message = f"step {number} ({step.describe()}) failed: {exc}"
            if errors:
                message += "\nrolling back also failed:\n" + "\n".join(errors)
            else:
                message += "\nthe network runs as before"
            raise HostError(message) from exc
        done.append(step)


# --- the engine side ------------------------------------------------------------------------


def plan_diff(engine: Engine, record: NetworkRecord, net: Network) -> ApplyDiff:
    """The diff between RECORD (active) and NET, with the host's current facts."""
    assert record.status is not None and record.live is not None
    old = [Action.from_dict(data) for data in record.status.actions]
    with engine.host() as host:
        facts = engine._facts(host)
    new_plan = engine._plan_start(net, facts)
    diff = diff_actions(record.name, old, new_plan.actions)
    diff.not_live = not_live_changes(record.live, net)
    return diff


def apply_live(engine: Engine, record: NetworkRecord, net: Network) -> ApplyDiff:
    """Bring the active RECORD to NET in place (caller holds the state lock); the status
    record is written only after every step succeeded."""
    diff = plan_diff(engine, record, net)
    if diff.not_live:
        raise ApplyError(
            f"network '{record.name}': cannot change while running: "
            + "; ".join(diff.not_live) + " (use --restart)"
        )
    status = record.status
    assert status is not None
    with engine.host() as host:
        try:
            run_steps(host, diff.steps)
        except BaseException:
            # a rolled-back step may have re-recorded (a restarted dnsmasq's new pid)
            status.actions = [action.to_dict() for action in diff.old]
            status.dnsmasq_pid = next((getattr(a, "pid", None) for a in diff.old
                                       if isinstance(a, StartDnsmasq)), status.dnsmasq_pid)
            engine.store.write_status(status)
            raise
    status.actions = [action.to_dict() for action in diff.merged]
    status.live_xml = engine.format(net, inactive=True)
    pid = next((getattr(a, "pid", None) for a in diff.merged if isinstance(a, StartDnsmasq)),
               None)
    status.dnsmasq_pid = pid
    engine.store.write_status(status)
    return diff


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
    from virtnet.forwards import check_forwards, read_forwards
    from virtnet.privilege import require_net_admin, require_net_admin_if

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
        engine._assign_defaults(net, engine.records())
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
    engine._stop(record.status, keep_leases=True)
    try:
        engine._start(net)
    except BaseException:
        engine._start(old_live)
        raise
