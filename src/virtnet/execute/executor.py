"""The one executor: every change virtnet makes to a host is a list of steps run here.

A step is anything with ``describe()``, ``apply(host)``, ``undo(host)`` and ``recover(host)``
(an undo that holds whether the step ran wholly, partly or not at all): a plan's actions
(start, port create), their undos (stop, port delete) and a live apply's steps
(:mod:`virtnet.execute.steps`). :func:`run` applies them in order and, when one fails,
undoes the applied ones newest first (Incus's reverter, pyroute2's commit/rollback);
:func:`undoing` is that undo, the only loop in virtnet that goes backwards over steps.

A journal given to :func:`run` hears of each step before its first host change, once it
applied and when it failed, and of each step a rollback reversed, so that a process killed
anywhere leaves a record of what to undo (:mod:`virtnet.execute.journal`,
:mod:`virtnet.execute.recover`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from virtnet.errors import HostError, StorageError
from virtnet.execute import faults as fault_hooks
from virtnet.execute.faults import CRASH_EXIT_STATUS, PLAN, Profile
from virtnet.host import HostProcess

if TYPE_CHECKING:
    from virtnet.host import Host


class Step(Protocol):
    def describe(self) -> str: ...

    def apply(self, host: Host) -> None: ...

    def undo(self, host: Host) -> None: ...


class Progress(Protocol):
    """Where :func:`run` records how far it got (a :class:`~virtnet.execute.journal.Journal`;
    ``reverted`` is optional)."""

    def begin(self, step: int, action: Any) -> None: ...

    def done(self, step: int, action: Any) -> None: ...

    def failed(self, step: int, action: Any) -> None: ...


class RunFailed(Exception):
    """Step ``number`` of a run failed (or was not even begun: ``begun`` False, the journal
    could not record it); the applied ones were undone, except those in ``undo_failures``
    (step number, step, error). ``journal_failed``: what failed is the journal, not a step.
    The callers turn this into their own error (PlanError, a live apply's StepError)."""

    def __init__(self, number: int, step: Any, cause: Exception, *, begun: bool = True,
                 journal_failed: bool = False) -> None:
        super().__init__(f"step {number}: {cause}")
        self.number = number
        self.step = step
        self.cause = cause
        self.begun = begun
        self.journal_failed = journal_failed
        self.undo_failures: list[tuple[int, Any, Exception]] = []
        self.journal_error: str | None = None  # the "failed" line could not be written
        self.settle_error: Exception | None = None  # see _fail


def undoing(steps: Sequence[Any], host: Host, *,
            catch: type[BaseException] | tuple[type[BaseException], ...] = Exception,
            recover: bool = False) -> Iterator[tuple[int, Any, BaseException | None]]:
    """Undo STEPS (given in apply order) newest first, going on past the errors CATCH names;
    yields (1-based position, step, the error or None) after each. ``recover``: call each
    step's ``recover`` (the undo of a step that may have run partly) instead of ``undo``."""
    for number in range(len(steps), 0, -1):
        step = steps[number - 1]
        try:
            if recover:
                step.recover(host)
            else:
                step.undo(host)
        except catch as exc:
            yield number, step, exc
            continue
        yield number, step, None


def run(steps: Sequence[Any], host: Host, journal: Progress | None = None, *,
        faults: Profile = PLAN) -> None:
    """Apply STEPS in order; if one fails, undo the applied ones newest first and raise
    :class:`RunFailed` (a KeyboardInterrupt or SystemExit is rolled back too, and propagated
    as it is). The failing step itself is not undone: it may have failed because the thing
    already existed (someone else's bridge or address); every apply leaves nothing behind
    when it fails.

    A step with ``overlaps`` (a daemon initialising in a process of its own) is launched in
    its turn and finished after the last step, so the steps after it run meanwhile.
    """
    fault = faults.fault()
    crash_after = faults.crash_after()
    crash_in = faults.crash_in()
    if crash_in is not None:
        fault_hooks.inject(host)
    applied: list[Any] = []
    launched: list[tuple[int, Any]] = []
    for number, step in enumerate(steps, start=1):
        if journal is not None:
            try:
                journal.begin(number, step)
            except BaseException as exc:
                _fail(host, journal, applied, number, step, exc, begun=False,
                      journal_failed=True)
        try:
            if fault == number:
                raise HostError(faults.fault_message.format(number))
            if crash_in == number:
                fault_hooks.run_crashing_in_step(lambda step=step: step.apply(host))
            elif getattr(step, "overlaps", False):
                step.launch(host)
                launched.append((number, step))
            else:
                step.apply(host)
        except BaseException as exc:
            # The journal hears of it before the rollback, so that a kill during the
            # rollback does not make the next command undo it. (Ctrl-C and SystemExit may
            # cut a step halfway: the journal keeps it begun.)
            journal_error = None
            if journal is not None and isinstance(exc, Exception):
                try:
                    journal.failed(number, step)
                except Exception as journal_exc:  # noqa: BLE001 - reported with the cause
                    journal_error = f"cannot record that step {number} failed: {journal_exc}"
            _fail(host, journal, applied, number, step, exc, journal_error=journal_error,
                  settle=True)
        applied.append(step)
        if journal is not None:
            try:
                journal.done(number, step)
            except BaseException as exc:  # not recorded: undone with the others
                _fail(host, journal, applied, number, step, exc, journal_failed=True)
        if crash_after == number:
            HostProcess.exit_now(CRASH_EXIT_STATUS)
    # The overlapping steps ran alongside the ones after them; the run is done once they
    # are too. Their journal line already says "done" (their undo copes with a launch that
    # never finished); what they record now is on the steps, for the caller's record.
    for number, step in launched:
        try:
            step.finish(host)
        except BaseException as exc:
            _fail(host, journal, applied, number, step, exc)


def _fail(host: Host, journal: Progress | None, applied: list[Any], number: int, step: Any,
          exc: BaseException, *, begun: bool = True, journal_failed: bool = False,
          journal_error: str | None = None, settle: bool = False) -> None:
    """Roll back APPLIED (newest first), then raise: EXC itself unless it is an Exception,
    else RunFailed. ``settle``: STEP failed inside its apply, and one that may have taken
    something away before failing (a dnsmasq restart) puts it back once the earlier steps
    are reversed (``restore_after_failure``)."""
    failure = RunFailed(number, step, exc if isinstance(exc, Exception) else HostError(str(exc)),
                        begun=begun, journal_failed=journal_failed)
    failure.journal_error = journal_error
    reverted = getattr(journal, "reverted", None)
    for position, undone, error in undoing(applied, host):
        if error is not None:
            failure.undo_failures.append((position, undone, error))  # type: ignore[arg-type]
        elif reverted is not None:
            # unrecorded, it is reversed again by a recovery (every undo is idempotent)
            with contextlib.suppress(StorageError):
                reverted(position, undone)
    restore = getattr(step, "restore_after_failure", None) if settle else None
    if restore is not None:
        try:
            restore(host)
        except Exception as restore_exc:  # noqa: BLE001 - reported with the cause
            failure.settle_error = restore_exc
    if not isinstance(exc, Exception):
        raise exc
    raise failure from exc
