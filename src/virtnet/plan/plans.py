"""Plans: the ordered actions of one network, applied and undone as one.

``virtnet plan`` prints a Plan; ``net-start`` applies the very same Plan. If step k fails,
steps k-1..1 are undone in reverse and the host ends as it began. Applying and undoing go
through the one executor (:mod:`virtnet.execute.executor`); the actions themselves are in
:mod:`virtnet.plan.actions`.

Crash safety: a :class:`StepJournal` given to :meth:`Plan.apply` is told that step k begins
before its first host change, so a process killed inside step k leaves a record of it; the
cleanup then undoes step k too, and every undo tolerates a step that was applied partly or
not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from virtnet.errors import HostError, StorageError
from virtnet.execute.executor import RunFailed, run, undoing
from virtnet.execute.recover import recover
from virtnet.plan.actions import Action

if TYPE_CHECKING:
    from virtnet.host import Host


class PlanError(HostError):
    """Applying a plan failed at one step; the earlier steps were undone.

    ``undo_errors`` lists the undo steps that failed in turn (the host may then not be
    exactly as it began; each message names what was left). ``begun`` is False when the
    step itself was never tried: the journal could not record that it was about to begin.
    """

    def __init__(self, step: int, action: Action, cause: Exception, undo_errors: list[str],
                 begun: bool = True):
        self.step = step
        self.action = action
        self.cause = cause
        self.undo_errors = undo_errors
        self.begun = begun
        message = f"step {step} ({action.describe()}) {'failed' if begun else 'not done'}: " \
                  f"{cause}"
        if undo_errors:
            message += "\nundoing the earlier steps also failed:\n" + "\n".join(
                f"  {err}" for err in undo_errors
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (PlanError, (self.step, self.action, self.cause, self.undo_errors, self.begun))


class StepJournal(Protocol):
    """Where :meth:`Plan.apply` records its progress, so that whatever a killed process
    leaves behind can be undone by the next one."""

    def begin(self, step: int, action: Action) -> None:
        """Step ``step`` is about to make its first host change."""

    def append(self, step: int, action: Action) -> None:
        """Step ``step`` applied (``action`` now holds what it recorded: pids, old values)."""

    def failed(self, step: int, action: Action) -> None:
        """Step ``step`` raised: it left nothing behind (see :meth:`Plan.apply`), so it must not
        be undone later; what a thing found already there would be undone otherwise."""


StepCallback = Callable[[int, "Action"], None]


def _journal_of(on_step: StepCallback | StepJournal | None) -> StepJournal | None:
    """The journal behind ``on_step``: the journal itself, or the journal whose bound
    ``append`` (or ``done``) it is. Checked on the type, by
    name: isinstance() against the Protocol costs 13-44 us, more than a port's whole plan."""
    if on_step is None:
        return None
    candidate: Any = on_step
    if getattr(on_step, "__name__", None) in ("append", "done"):
        candidate = getattr(on_step, "__self__", on_step)
    kind = type(candidate)
    if hasattr(kind, "begin") and hasattr(kind, "append") and hasattr(kind, "failed"):
        return cast(StepJournal, candidate)
    return None


@dataclass
class Plan:
    network: str
    actions: list[Action] = field(default_factory=list)

    def describe(self) -> list[str]:
        return [action.describe() for action in self.actions]

    def commands(self) -> list[str]:
        return [line for action in self.actions for line in action.commands()]

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "actions": [a.to_dict() for a in self.actions]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(data["network"], [Action.from_dict(a) for a in data.get("actions", [])])

    def apply(
        self, host: Host, on_step: StepCallback | StepJournal | None = None
    ) -> None:
        """Apply every action in order; on failure undo the applied ones and raise PlanError.
        When what failed is the journal (``on_step``: a StorageError, it cannot be written)
        and the undo went through, that StorageError is raised instead: nothing happened.

        ``on_step(k, action)`` runs after step k (1-based) succeeded, e.g. to record it. A
        :class:`StepJournal` (or its bound ``append``) is also told before each step begins and
        when one fails, so that a kill inside a step leaves a record of that step too.
        """
        journal = _journal_of(on_step)
        recorder: Any = None
        if journal is not None:  # a virtnet.execute.journal.Journal is the executor's own
            recorder = journal if hasattr(type(journal), "done") else \
                _Recorder(journal.begin, journal.append, journal.failed)
        elif on_step is not None:
            recorder = _Recorder(None, on_step, None)  # type: ignore[arg-type]
        try:
            run(self.actions, host, recorder)
        except RunFailed as failure:
            undo_errors = [f"undo of {action.describe()}: {error}"
                           for _, action, error in failure.undo_failures]
            if failure.journal_error is not None and undo_errors:
                # only a journal kept for the next command (a rollback that failed) needs
                # the line; a complete rollback's journal is removed
                undo_errors.append(failure.journal_error)
            if failure.journal_failed and isinstance(failure.cause, StorageError) \
                    and not undo_errors:
                # what failed is the journal, and the rollback went through: nothing happened
                raise failure.cause from failure.cause.__cause__
            raise PlanError(failure.number, failure.step, failure.cause, undo_errors,
                            begun=failure.begun) from failure.cause

    def undo(self, host: Host, on_step: Callable[[int, Action], None] | None = None) -> None:
        """Undo every action in reverse order, going on past failures; raise them at the end.

        ``on_step(k, action)`` runs after step k's undo succeeded (k is the action's 1-based
        position in the plan).
        """
        errors: list[str] = []
        for step, action, error in undoing(self.actions, host):
            if error is not None:
                errors.append(f"undo of step {step} ({action.describe()}): {error}")
            elif on_step is not None:
                on_step(step, action)
        if errors:
            raise HostError("\n".join(errors))


    def recover(self, host: Host) -> None:
        """Undo what a killed process left of this plan (every action's ``recover``), newest
        first, going on past failures; raise them at the end."""
        errors = [f"undo of step {step} ({action.describe()}): {error}"
                  for step, action, error in recover(self.actions, host)]
        if errors:
            raise HostError("\n".join(errors))


class _Recorder:
    """What :func:`virtnet.execute.executor.run` tells a plan's StepJournal or ``on_step``
    callback (each call optional)."""

    __slots__ = ("_begin", "_done", "_failed")

    def __init__(self, begin: StepCallback | None, done: StepCallback | None,
                 failed: StepCallback | None) -> None:
        self._begin, self._done, self._failed = begin, done, failed

    def begin(self, step: int, action: Action) -> None:
        if self._begin is not None:
            self._begin(step, action)

    def done(self, step: int, action: Action) -> None:
        if self._done is not None:
            self._done(step, action)

    def failed(self, step: int, action: Action) -> None:
        if self._failed is not None:
            self._failed(step, action)
