"""The one journal: a file of JSON lines, appended one write(2) each, that says how far a run
of steps got, so that what a killed process leaves can be undone by the next one.

Format. An optional first line, the header (what the run's owner needs to recover: a start's
status record, a live apply's old actions and steps), then per step k:

  {"begun": ACTION} or {"begun": k}   before its first host change: the step's action as
                                      planned (a start, a port-create), or its number when
                                      the header lists the steps (a live apply)
  {"done": k}, {"done": k, "recorded": {...}}  once it applied, with what apply recorded
                                      (pids, old values: the fields Action.spec() leaves out)
  {"failed": k}                       it raised: it left nothing behind, and what it failed
                                      on may be someone else's, so it is never undone
  {"reverted": k}                     an in-process rollback reversed it (journals that
                                      list their steps in the header)

A plain action line (Action.to_dict()) is an applied step too. This is the grammar the
start journals (NAME.journal), port-create journals (UUID.journal) and apply journals
(NAME.apply-journal) of the previous release were written in, so :func:`read_steps` reads
those files as they are. A kill leaves at most the last line without its newline, which the
reader ignores: a cut "done" line leaves its step's "begun" line, so the step is undone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from virtnet.host.fs import AppendedLines

BEGUN_KEY = "begun"
DONE_KEY = "done"
RECORDED_KEY = "recorded"
FAILED_KEY = "failed"
REVERTED_KEY = "reverted"
BEGUN, DONE, FAILED, REVERTED = BEGUN_KEY, DONE_KEY, FAILED_KEY, REVERTED_KEY


class Journalled(Protocol):
    """What the journal needs of a step."""

    def to_dict(self) -> dict[str, Any]: ...

    def recorded(self) -> dict[str, Any]: ...


def json_line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


def begun_line(action: dict[str, Any] | int) -> bytes:
    if isinstance(action, int):
        return b'{"%s":%d}\n' % (BEGUN_KEY.encode(), action)
    return json_line({BEGUN_KEY: action})


def done_line(step: int, recorded: dict[str, Any]) -> bytes:
    if not recorded:
        return b'{"%s":%d}\n' % (DONE_KEY.encode(), step)
    return json_line({DONE_KEY: step, RECORDED_KEY: recorded})


def failed_line(step: int) -> bytes:
    return b'{"%s":%d}\n' % (FAILED_KEY.encode(), step)


def reverted_line(step: int) -> bytes:
    return b'{"%s":%d}\n' % (REVERTED_KEY.encode(), step)


class Journal(AppendedLines):
    """The journal of one run (see the module's docstring), created with its first line.

    ``header``: the first line, or None for none. ``numbered``: the header lists the steps,
    so a "begun" line names the step by number and rollbacks are journalled ("reverted");
    otherwise it carries the step's action, and a recovery undoes every step not failed.
    """

    def __init__(self, path: Path, header: dict[str, Any] | None = None, *,
                 numbered: bool = False, eager: bool = False) -> None:
        super().__init__(path, json_line(header) if header is not None and not eager else b"")
        self.numbered = numbered
        if eager and header is not None:  # written now, before any step begins
            self.write(json_line(header))

    def begin(self, step: int, action: Journalled) -> None:
        """Step ``step`` is about to make its first host change."""
        self.begun(step if self.numbered else action.to_dict())

    def done(self, step: int, action: Journalled) -> None:
        """Step ``step`` applied; ``action`` holds what it recorded (pids, old values)."""
        self.completed(step, action.recorded())

    def begun(self, what: dict[str, Any] | int) -> None:
        """The "begun" line of a step: its action as planned, or its number."""
        self.write(begun_line(what))

    def completed(self, step: int, recorded: dict[str, Any]) -> None:
        """The "done" line of step ``step``, with what its apply recorded."""
        self.write(done_line(step, recorded))

    append = done  # the name virtnet.plan.plans.StepJournal knows it by

    def failed(self, step: int, action: Journalled | None = None) -> None:
        """Step ``step`` raised: it left nothing behind, so it is never undone later."""
        self.write(failed_line(step))

    def reverted(self, step: int, action: Journalled | None = None) -> None:
        """An in-process rollback reversed step ``step`` (numbered journals only: the
        others are undone wholly again by a recovery, every undo being idempotent)."""
        if self.numbered:
            self.write(reverted_line(step))

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class StepRecord:
    """What a journal says of one step: its last word (begun, done, failed, reverted), its
    action as planned when the journal carries it, and what its apply recorded."""

    number: int
    state: str
    action: dict[str, Any] | None = None
    recorded: dict[str, Any] = field(default_factory=dict)

    @property
    def to_undo(self) -> bool:
        """Begun (applied partly, wholly or not at all) or done, and not reversed since."""
        return self.state in (BEGUN, DONE)


@dataclass
class RunLog:
    header: dict[str, Any] | None
    steps: list[StepRecord]

    def actions_to_undo(self) -> list[dict[str, Any]]:
        """The actions (with what they recorded) of the steps to undo, in apply order."""
        return [{**step.action, **step.recorded} for step in self.steps
                if step.action is not None and step.to_undo]


def complete_lines(raw: bytes) -> list[bytes]:
    """RAW's whole lines: what follows the last newline was cut by a kill, or is nothing."""
    return raw.split(b"\n")[:-1]


def read_steps(entries: list[dict[str, Any]]) -> list[StepRecord]:
    """The steps a journal's line entries (after the header) speak of, in apply order."""
    steps: dict[int, StepRecord] = {}
    pending: StepRecord | None = None  # the step begun last, which a "done" or "failed" ends
    for entry in entries:
        if BEGUN_KEY in entry:
            what = entry[BEGUN_KEY]
            if isinstance(what, dict):
                pending = StepRecord(len(steps) + 1, BEGUN, dict(what))
                steps[pending.number] = pending
            else:
                pending = steps[int(what)] = StepRecord(int(what), BEGUN)
        elif DONE_KEY in entry:
            step = pending if pending is not None else \
                steps.setdefault(int(entry[DONE_KEY]), StepRecord(int(entry[DONE_KEY]), DONE))
            step.state = DONE
            step.recorded.update(entry.get(RECORDED_KEY) or {})
            pending = None
        elif FAILED_KEY in entry:
            step = pending if pending is not None else \
                steps.setdefault(int(entry[FAILED_KEY]), StepRecord(int(entry[FAILED_KEY]), FAILED))
            step.state = FAILED
            pending = None
        elif REVERTED_KEY in entry:
            number = int(entry[REVERTED_KEY])
            steps.setdefault(number, StepRecord(number, REVERTED)).state = REVERTED
            pending = None
        else:  # a whole applied action on one line (the oldest start journals)
            number = len(steps) + 1
            steps[number] = StepRecord(number, DONE, dict(entry))
            pending = None
    return list(steps.values())


def parse(raw: bytes, *, header: bool) -> RunLog | None:
    """The journal RAW (its whole lines), with a header line when ``header``; None when not
    even that line is whole (killed before anything was recorded). ValueError, KeyError or
    TypeError when a line makes no sense."""
    lines = complete_lines(raw)
    if header and not lines:
        return None
    head = json.loads(lines[0]) if header else None
    entries = [json.loads(line) for line in lines[1 if header else 0:]]
    return RunLog(head, read_steps(entries))


def journal_steps(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The actions a journal's entries say to undo, in apply order: every applied one (with
    what it recorded), and the one begun last if it neither applied nor failed (the process
    was killed inside it: applied partly, wholly or not at all; every undo tolerates the
    three)."""
    return RunLog(None, read_steps(entries)).actions_to_undo()
