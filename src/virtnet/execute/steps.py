"""The steps of a live apply (net-apply, net-update --live, net-forward-add/del --live), one
class per kind. Each concerns the running network's recorded action (``old``) and/or the new
plan's (``new``) and knows how to ``apply`` itself, ``undo`` itself after it applied (an
in-process rollback) and ``recover`` (put back what it changed, whether it ran wholly,
partly or not at all: a process was killed inside or after it).

``op`` is the kind's name in the apply journal (:meth:`Step.to_dict`), read back by
:meth:`Step.from_dict`. The steps see their actions only through the actions' own methods
(this package never imports the plan: the plan runs through the executor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from virtnet.errors import HostError

if TYPE_CHECKING:
    from virtnet.host import Host
    from virtnet.plan.actions import Action, CreateBridge

# The kernel checks a bridge's forward delay against STP's range only while STP is on, and
# reads the delay before the STP state within one request.
STP_DELAY_RANGE = range(2, 31)  # seconds
DEFAULT_BRIDGE_MTU = 1500  # what a bridge created without an MTU has (ETH_DATA_LEN)


@dataclass
class Step:
    """One change of a live apply; subclasses are the kinds."""

    old: Action | None = None
    new: Action | None = None

    op: ClassVar[str] = ""
    # whether what the new action recorded (a new dnsmasq's pid) is journalled with "done",
    # so that a recovery undoes exactly it
    applies_new: ClassVar[bool] = False
    # recovered after every other step (dnsmasq reads its files only at start)
    recover_last: ClassVar[bool] = False
    # recovered even when it failed (a failed restart may have stopped the old daemon)
    recover_failed: ClassVar[bool] = False
    _kinds: ClassVar[dict[str, type[Step]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.op:
            Step._kinds[cls.op] = cls

    def describe(self) -> str:
        raise NotImplementedError

    def apply(self, host: Host) -> None:
        raise NotImplementedError

    def undo(self, host: Host) -> None:
        raise NotImplementedError

    def recover(self, host: Host) -> None:
        """Undo, whether the step ran wholly, partly or not at all: every kind's undo holds
        in the three cases unless it says otherwise."""
        self.undo(host)

    def recorded(self) -> dict[str, Any]:
        """What the journal's "done" line keeps of this step."""
        return self.new.recorded() if self.applies_new and self.new is not None else {}

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON-able data (its actions with what they recorded), as the apply
        journal keeps it; :meth:`from_dict` reads it back."""
        return {
            "op": self.op,
            "describe": self.describe(),
            "old": self.old.to_dict() if self.old is not None else None,
            "new": self.new.to_dict() if self.new is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any],
                  read_action: Callable[[dict[str, Any]], Action]) -> Step:
        """The step :meth:`to_dict` wrote; READ_ACTION reads its actions back
        (virtnet.plan.actions.Action.from_dict)."""
        kind = Step._kinds.get(data.get("op"))  # type: ignore[arg-type]
        if kind is None:
            raise ValueError(f"unknown apply step {data.get('op')!r}")
        old, new = data.get("old"), data.get("new")
        return kind(read_action(old) if old is not None else None,
                    read_action(new) if new is not None else None)

    def _old(self) -> Action:
        assert self.old is not None
        return self.old

    def _new(self) -> Action:
        assert self.new is not None
        return self.new


class ApplyAction(Step):
    """An action only the new plan has: applied."""

    op: ClassVar[str] = "apply"
    applies_new: ClassVar[bool] = True

    def describe(self) -> str:
        return self._new().describe()

    def apply(self, host: Host) -> None:
        self._new().apply(host)

    def undo(self, host: Host) -> None:
        self._new().undo(host)


class UndoAction(Step):
    """An action only the running network has: undone."""

    op: ClassVar[str] = "undo"

    def describe(self) -> str:
        return f"undo: {self._old().describe()}"

    def apply(self, host: Host) -> None:
        self._old().undo(host)

    def undo(self, host: Host) -> None:
        self._old().apply(host)  # records afresh (e.g. a new pid) on the recorded action

    def recover(self, host: Host) -> None:
        self._old().undo(host)  # finishes a partial undo (undos tolerate what is gone)
        self._old().apply(host)


class TuneBridge(Step):
    """The bridge's MTU, STP or forward delay, set in place (it is never recreated)."""

    op: ClassVar[str] = "tune-bridge"

    def _bridges(self) -> tuple[CreateBridge, CreateBridge]:
        return self._old(), self._new()  # type: ignore[return-value]

    def describe(self) -> str:
        old, new = self._bridges()
        return f"set {bridge_changes(old, new)} on bridge {new.name} in place"

    def apply(self, host: Host) -> None:
        old, new = self._bridges()
        tune_bridge(host, new, old)

    def undo(self, host: Host) -> None:
        old, new = self._bridges()
        tune_bridge(host, old, new)


class Replace(Step):
    """An action replaced in place by its new version (Action.replace): a file rewritten,
    a firewall swapped in ONE nft transaction (old teardown + new ruleset, so no packet sees
    a half-loaded ruleset; a teardown of rules never committed is a no-op)."""

    op: ClassVar[str] = "replace"
    applies_new: ClassVar[bool] = True

    def describe(self) -> str:
        return self._new().describe_replacing()

    def apply(self, host: Host) -> None:
        self._new().replace(host, self._old())

    def undo(self, host: Host) -> None:
        self._old().replace(host, self._new(), restoring=True)


class RestartDnsmasq(Step):
    """dnsmasq restarted with its new configuration (it reads it only at start; its lease
    file stays, so guests keep their addresses)."""

    op: ClassVar[str] = "restart-dnsmasq"
    applies_new: ClassVar[bool] = True
    recover_last: ClassVar[bool] = True
    recover_failed: ClassVar[bool] = True

    def describe(self) -> str:
        return f"restart dnsmasq of network {getattr(self.new, 'network', '?')} " \
               "(its configuration changed; leases are kept)"

    def apply(self, host: Host) -> None:
        self._old().undo(host)
        self._new().apply(host)

    def undo(self, host: Host) -> None:
        self._new().undo(host)
        self._old().apply(host)

    def recover(self, host: Host) -> None:
        """Stop whichever of the two daemons runs (each undo finds its process by pid, pid
        file or command line and tolerates none), then start the old one (which records its
        new pid). Run once the configuration files are back to their old content."""
        self._new().undo(host)
        self._old().undo(host)
        self._old().apply(host)

    def restore_after_failure(self, host: Host) -> None:
        """After a failed apply and the rollback of the earlier steps: it may have stopped
        the old daemon before failing, which runs again, now that its configuration file is
        the old one again."""
        try:
            self.recover(host)
        except Exception as exc:  # noqa: BLE001 - named for the report
            raise HostError(f"restarting the old dnsmasq: {exc}") from exc


class ReloadDnsmasq(Step):
    """dnsmasq signalled (SIGHUP) to re-read its hosts files."""

    op: ClassVar[str] = "reload-dnsmasq"
    recover_last: ClassVar[bool] = True

    def describe(self) -> str:
        return f"signal dnsmasq of network {getattr(self.new, 'network', '?')} " \
               "to re-read its hosts files (SIGHUP)"

    def apply(self, host: Host) -> None:
        _reload(host, self._new())

    def undo(self, host: Host) -> None:
        _reload(host, self._old())  # re-read the old hosts files


def _reload(host: Host, action: Action) -> None:
    pid = getattr(action, "pid", None)
    conf = getattr(action, "conf_file", None)
    if pid is not None and conf is not None:
        host.reload_dnsmasq(pid, Path(conf))


def bridge_changes(old: CreateBridge, new: CreateBridge) -> str:
    parts = []
    if old.mtu != new.mtu:
        parts.append(f"MTU {new.mtu or 'default'}")
    if old.stp != new.stp:
        parts.append(f"STP {'on' if new.stp else 'off'}")
    if old.delay != new.delay:
        parts.append(f"forward delay {new.delay} s")
    return ", ".join(parts)


def tune_bridge(host: Host, target: CreateBridge, current: CreateBridge) -> None:
    """Set on the bridge what TARGET has and CURRENT (what it should have now) lacks. Also
    right when the bridge is already partly or wholly at TARGET (a recovery does not know
    how far a killed step got): STP goes off in a request of its own before a delay that
    needs it off, and comes on after the delay."""
    base = ["ip", "link", "set", "dev", target.name]
    delay_changes = target.delay != current.delay
    if not target.stp or delay_changes and target.delay not in STP_DELAY_RANGE:
        host.run([*base, "type", "bridge", "stp_state", "0"])
    argv = list(base)
    if target.mtu != current.mtu:
        argv += ["mtu", str(target.mtu or DEFAULT_BRIDGE_MTU)]
    settings = ["forward_delay", str(target.delay * 100)] if delay_changes else []
    if target.stp:
        settings += ["stp_state", "1"]
    if settings:
        argv += ["type", "bridge", *settings]
    if len(argv) > len(base):
        host.run(argv)
