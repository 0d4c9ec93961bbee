"""The one recovery: read what a journal says of a killed run and undo it, newest first.

Every step's ``recover`` holds whether the step ran wholly, partly or not at all (a begun
step is not known to have done anything; a done one may have been reversed already when the
kill came during a rollback), so the journal only has to say which steps got as far as
beginning. A failed step left nothing behind and is skipped (unless its kind says a failure
may have taken something away, ``recover_failed``), as is one a rollback reversed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from virtnet.execute.executor import undoing
from virtnet.execute.journal import DONE, FAILED, REVERTED, StepRecord

if TYPE_CHECKING:
    from virtnet.host import Host


def to_recover(steps: Sequence[Any], records: Sequence[StepRecord]) -> list[Any]:
    """The steps (given in apply order; numbered from 1 in RECORDS) that a recovery must
    undo, in the order for :func:`recover`: those with ``recover_last`` (dnsmasq, which
    reads its files only at start) come first, so that they are recovered after the rest.
    What a done step's action recorded (a new dnsmasq's pid) is set on it."""
    late: list[Any] = []
    others: list[Any] = []
    for record in records:
        step = steps[record.number - 1]
        if record.state == REVERTED or record.state == FAILED \
                and not getattr(step, "recover_failed", False):
            continue
        if record.state == DONE and record.recorded:
            new = getattr(step, "new", None)
            for name, value in record.recorded.items():
                if new is not None:
                    setattr(new, name, value)
        (late if getattr(step, "recover_last", False) else others).append(step)
    return late + others


def recover(steps: Sequence[Any], host: Host, *,
            catch: type[BaseException] | tuple[type[BaseException], ...] = Exception
            ) -> list[tuple[int, Any, BaseException]]:
    """Recover STEPS (apply order) newest first, going on past the errors CATCH names;
    returns (position, step, error) of those that failed."""
    return [(position, step, error)
            for position, step, error in undoing(steps, host, catch=catch, recover=True)
            if error is not None]
