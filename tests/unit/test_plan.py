"""virtnet.plan.actions: Action serialization and commands, and Plan's apply/rollback machinery.

The machinery is exercised with a small recording Action (the real Plan code runs; only the
host is left out). The real actions against a kernel are in tests/netns/test_apply.py.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from dataclasses import dataclass, field
from typing import Any

import pytest

from virtnet.errors import HostError, StorageError
from virtnet.plan.actions import (
    Action,
    AddAddress,
    AddRoute,
    AttachHostBridge,
    CreateBridge,
    LinkUp,
    LoadFirewall,
    SetSysctl,
    StartDnsmasq,
    WriteFile,
)
from virtnet.plan.plans import Plan, PlanError

EXAMPLES: list[Action] = [
    CreateBridge("virbr0", stp=True, delay=2, mac="52:54:00:01:02:03", mtu=9000),
    AddAddress("virbr0", "192.168.122.1/24"),
    AddAddress("virbr0", "2001:db8::1/64"),
    AddRoute("virbr0", "10.0.0.0/8", gateway="192.168.122.2", metric=10),
    LinkUp("virbr0", down_on_undo=False),
    SetSysctl("net/ipv6/conf/virbr0/accept_ra", "0", missing_ok=True),
    SetSysctl("net/ipv4/ip_forward", "1", restore=False),
    LoadFirewall("default", "inet", "virtnet", "add table inet virtnet\n", "delete table inet virtnet\n"),
    WriteFile("/var/lib/virtnet/dnsmasq/default.conf", "strict-order\n", 0o600),
    StartDnsmasq("default", "/x/default.conf", "/x/default.pid", "/x/default.leases", "/usr/sbin/dnsmasq"),
    AttachHostBridge("lan", "br0"),
]


@dataclass
class Step(Action):
    """Records apply/undo in a shared journal; may fail on apply or undo. Unregistered."""

    label: str
    journal: list[str] = field(default_factory=list)
    fail_apply: bool = False
    fail_undo: bool = False

    def describe(self) -> str:
        return f"step {self.label}"

    def commands(self) -> list[str]:
        return [f"echo {self.label}"]

    def apply(self, host: Any) -> None:
        if self.fail_apply:
            raise HostError(f"{self.label} refused")
        self.journal.append(f"apply {self.label}")

    def undo(self, host: Any) -> None:
        self.journal.append(f"undo {self.label}")
        if self.fail_undo:
            raise HostError(f"{self.label} cannot be undone")


def steps(n: int, journal: list[str], **flags: dict[int, bool]) -> list[Step]:
    result = []
    for i in range(1, n + 1):
        result.append(
            Step(
                str(i),
                journal,
                fail_apply=i in flags.get("fail_apply", {}),
                fail_undo=i in flags.get("fail_undo", {}),
            )
        )
    return result


@pytest.fixture(autouse=True)
def _no_fault_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIRTNET_FAULT_STEP", raising=False)
    monkeypatch.delenv("VIRTNET_CRASH_AFTER_STEP", raising=False)
    monkeypatch.delenv("VIRTNET_CRASH_IN_STEP", raising=False)


# --- serialization -----------------------------------------------------------------------------


def test_every_action_kind_has_an_example() -> None:
    # Other modules (ports, tc) register kinds of their own; their tests cover those.
    plan_kinds = sorted(
        kind for kind, cls in Action._registry.items() if cls.__module__ == "virtnet.plan.actions"
    )
    assert plan_kinds, "no action kind registered by virtnet.plan.actions"
    assert sorted({a.kind for a in EXAMPLES}) == plan_kinds
    assert "" not in Action.registered_kinds()  # the test's Step stays out of the registry


@pytest.mark.parametrize("action", EXAMPLES, ids=lambda a: a.kind)
def test_to_dict_round_trips(action: Action) -> None:
    data = action.to_dict()
    assert data["kind"] == action.kind
    rebuilt = Action.from_dict(data)
    assert type(rebuilt) is type(action) and rebuilt == action
    import json

    assert Action.from_dict(json.loads(json.dumps(data))) == action  # JSON-safe


def test_spec_leaves_out_what_apply_records() -> None:
    fresh = SetSysctl("net/ipv4/ip_forward", "1")
    applied = dataclasses.replace(fresh, old="0")
    assert fresh.spec() == applied.spec()
    assert fresh.to_dict() != applied.to_dict()
    started = dataclasses.replace(EXAMPLES[9], pid=4242, created_lease_file=True)
    assert started.spec() == EXAMPLES[9].spec()
    assert "pid" not in started.spec() and started.to_dict()["pid"] == 4242


@pytest.mark.parametrize("action", EXAMPLES, ids=lambda a: a.kind)
def test_recorded_is_what_to_dict_adds_to_spec(action: Action) -> None:
    applied = action
    if isinstance(action, StartDnsmasq):
        applied = dataclasses.replace(action, pid=4242, created_lease_file=True)
    elif isinstance(action, SetSysctl):
        applied = dataclasses.replace(action, old="0")
    assert {**applied.spec(), **applied.recorded()} == applied.to_dict()
    assert not set(applied.spec()) & set(applied.recorded())


def test_from_dict_refuses_unknown_kinds_and_fields() -> None:
    with pytest.raises(ValueError, match="unknown action kind 'teleport'"):
        Action.from_dict({"kind": "teleport"})
    with pytest.raises(ValueError, match="unknown fields"):
        Action.from_dict({"kind": "link-up", "link": "x", "colour": "red"})


def test_plan_round_trips() -> None:
    plan = Plan("default", list(EXAMPLES))
    assert Plan.from_dict(plan.to_dict()) == plan


# --- commands a person could run -------------------------------------------------------------


def test_commands() -> None:
    assert EXAMPLES[0].commands() == [
        "ip link add virbr0 address 52:54:00:01:02:03 mtu 9000 type bridge forward_delay 200 stp_state 1"
    ]
    assert EXAMPLES[1].commands() == ["ip address add 192.168.122.1/24 broadcast 192.168.122.255 dev virbr0"]
    assert EXAMPLES[2].commands() == ["ip address add 2001:db8::1/64 dev virbr0 nodad"]
    assert EXAMPLES[3].commands() == ["ip route add 10.0.0.0/8 via 192.168.122.2 dev virbr0 proto boot metric 10"]
    assert EXAMPLES[4].commands() == ["ip link set dev virbr0 up"]
    assert EXAMPLES[5].commands() == ["sysctl -w net.ipv6.conf.virbr0.accept_ra=0"]
    # an interface name with a dot keeps the slash form, which sysctl also reads
    assert SetSysctl("net/ipv6/conf/eth0.7/accept_ra", "0").commands() == [
        "sysctl -w net/ipv6/conf/eth0.7/accept_ra=0"
    ]
    assert EXAMPLES[7].commands() == ["nft -f - <<'EOF'\nadd table inet virtnet\nEOF"]
    assert EXAMPLES[8].commands() == [
        "install -D -m 600 /dev/stdin /var/lib/virtnet/dnsmasq/default.conf <<'EOF'\nstrict-order\nEOF"
    ]
    assert WriteFile("/x/empty", "", 0o644).commands() == ["install -D -m 644 /dev/null /x/empty"]
    assert EXAMPLES[9].commands() == [
        "install -d -m 755 /x && "  # apply() makes the lease and pid directories first
        "/usr/sbin/dnsmasq --conf-file=/x/default.conf --dhcp-leasefile=/x/default.leases "
        "--pid-file=/x/default.pid"
    ]
    assert CreateBridge("we ird").commands()[0].startswith("ip link add 'we ird' ")


def test_describe_says_what_and_where() -> None:
    assert EXAMPLES[6].describe() == "set net.ipv4.ip_forward = 1 (left as is when stopped)"
    assert EXAMPLES[10].describe() == "use the existing host bridge br0 (nothing is created)"
    plan = Plan("default", list(EXAMPLES))
    assert len(plan.describe()) == len(EXAMPLES)
    assert len(plan.commands()) == len(EXAMPLES)


# --- apply, rollback, undo -------------------------------------------------------------------


def test_apply_runs_in_order_and_reports_each_step() -> None:
    journal: list[str] = []
    seen: list[tuple[int, str]] = []
    plan = Plan("n", steps(3, journal))
    plan.apply(None, on_step=lambda k, a: seen.append((k, a.describe())))  # type: ignore[arg-type]
    assert journal == ["apply 1", "apply 2", "apply 3"]
    assert seen == [(1, "step 1"), (2, "step 2"), (3, "step 3")]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_failure_at_step_k_undoes_the_earlier_steps_in_reverse(k: int) -> None:
    journal: list[str] = []
    plan = Plan("n", steps(4, journal, fail_apply={k: True}))
    with pytest.raises(PlanError) as info:
        plan.apply(None)  # type: ignore[arg-type]
    assert info.value.step == k
    assert isinstance(info.value.__cause__, HostError)
    assert str(info.value).startswith(f"step {k} (step {k}) failed: {k} refused")
    applied = [f"apply {i}" for i in range(1, k)]
    undone = [f"undo {i}" for i in range(k - 1, 0, -1)]
    assert journal == applied + undone  # the failing step itself is not undone


@dataclass
class SlowStep(Step):
    """An overlapping step (like dnsmasq starting): launch() sets it going, finish() waits."""

    overlaps = True
    fail_finish: bool = False

    def launch(self, host: Any) -> None:
        self.journal.append(f"launch {self.label}")

    def finish(self, host: Any) -> None:
        if self.fail_finish:
            self.journal.append(f"finish {self.label} failed")
            raise HostError(f"{self.label} did not come up")
        self.journal.append(f"finish {self.label}")


def test_an_overlapping_step_finishes_after_the_last_step() -> None:
    journal: list[str] = []
    seen: list[int] = []
    first, third = steps(3, journal)[0], steps(3, journal)[2]
    plan = Plan("n", [first, SlowStep("2", journal), third])
    plan.apply(None, on_step=lambda k, a: seen.append(k))  # type: ignore[arg-type]
    assert journal == ["apply 1", "launch 2", "apply 3", "finish 2"]
    assert seen == [1, 2, 3]  # reported applied once launched (its undo copes with either)


def test_an_overlapping_step_that_does_not_come_up_undoes_the_whole_plan() -> None:
    journal: list[str] = []
    first, third = steps(3, journal)[0], steps(3, journal)[2]
    plan = Plan("n", [first, SlowStep("2", journal, fail_finish=True), third])
    with pytest.raises(PlanError) as info:
        plan.apply(None)  # type: ignore[arg-type]
    assert info.value.step == 2 and "2 did not come up" in str(info.value)
    assert journal == ["apply 1", "launch 2", "apply 3", "finish 2 failed",
                       "undo 3", "undo 2", "undo 1"]


def test_a_later_failure_undoes_a_launched_step_that_never_finished() -> None:
    journal: list[str] = []
    first, _, third = steps(3, journal, fail_apply={3: True})
    plan = Plan("n", [first, SlowStep("2", journal), third])
    with pytest.raises(PlanError) as info:
        plan.apply(None)  # type: ignore[arg-type]
    assert info.value.step == 3
    assert journal == ["apply 1", "launch 2", "undo 2", "undo 1"]  # never finished


def test_an_overlapping_step_applied_alone_does_both_halves() -> None:
    journal: list[str] = []

    @dataclass
    class Whole(SlowStep):
        def apply(self, host: Any) -> None:
            self.launch(host)
            self.finish(host)

    Whole("x", journal).apply(None)
    assert journal == ["launch x", "finish x"]


def test_undo_errors_are_collected_not_masking_the_cause() -> None:
    journal: list[str] = []
    plan = Plan("n", steps(4, journal, fail_apply={4: True}, fail_undo={2: True}))
    with pytest.raises(PlanError) as info:
        plan.apply(None)  # type: ignore[arg-type]
    assert "4 refused" in str(info.value.cause)
    assert info.value.undo_errors == ["undo of step 2: 2 cannot be undone"]
    assert journal[-3:] == ["undo 3", "undo 2", "undo 1"]  # went on past the failing undo


def test_fault_injection_env(monkeypatch: pytest.MonkeyPatch) -> None:
    journal: list[str] = []
    monkeypatch.setenv("VIRTNET_FAULT_STEP", "2")
    with pytest.raises(PlanError, match="injected fault at step 2"):
        Plan("n", steps(3, journal)).apply(None)  # type: ignore[arg-type]
    assert journal == ["apply 1", "undo 1"]
    monkeypatch.setenv("VIRTNET_FAULT_STEP", "two")
    with pytest.raises(HostError, match="must be a step number"):
        Plan("n", steps(3, [])).apply(None)  # type: ignore[arg-type]


def test_crash_after_step_exits_137() -> None:
    journal: list[str] = []
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(read_fd)
            os.environ["VIRTNET_CRASH_AFTER_STEP"] = "2"

            def record(k: int, action: Action) -> None:
                os.write(write_fd, f"{k}".encode())

            Plan("n", steps(4, journal)).apply(None, on_step=record)  # type: ignore[arg-type]
        finally:
            os._exit(0)  # reached only if the crash did not happen
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    recorded = b""
    while chunk := os.read(read_fd, 100):
        recorded += chunk
    os.close(read_fd)
    assert os.waitstatus_to_exitcode(status) == 137
    assert recorded == b"12"  # on_step recorded step 2 before the crash


def test_on_step_failure_undoes_everything_applied() -> None:
    journal: list[str] = []

    def refuse_second(k: int, action: Action) -> None:
        if k == 2:
            raise OSError("disk full")

    with pytest.raises(PlanError) as info:
        Plan("n", steps(3, journal)).apply(None, on_step=refuse_second)  # type: ignore[arg-type]
    assert info.value.step == 2
    assert journal == ["apply 1", "apply 2", "undo 2", "undo 1"]


def test_interrupt_rolls_back_and_propagates_unwrapped() -> None:
    journal: list[str] = []

    def interrupt(k: int, action: Action) -> None:
        if k == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Plan("n", steps(3, journal)).apply(None, on_step=interrupt)  # type: ignore[arg-type]
    assert journal == ["apply 1", "apply 2", "undo 2", "undo 1"]


class RecordingJournal:
    """A StepJournal (virtnet.plan.actions) that notes what Plan.apply tells it."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def begin(self, step: int, action: Action) -> None:
        self.events.append(f"begin {step}")

    def append(self, step: int, action: Action) -> None:
        self.events.append(f"done {step}")

    def failed(self, step: int, action: Action) -> None:
        self.events.append(f"failed {step}")


@pytest.mark.parametrize("bound", [False, True], ids=["journal", "journal.append"])
def test_a_step_journal_hears_of_each_step_before_after_and_on_failure(bound: bool) -> None:
    events: list[str] = []
    journal = RecordingJournal(events)
    with pytest.raises(PlanError):
        Plan("n", steps(4, events, fail_apply={3: True})).apply(
            None, on_step=journal.append if bound else journal)  # type: ignore[arg-type]
    # the failure is journalled before the rollback: a kill during it must not make the
    # next command undo step 3, which may have failed on something someone else owns
    assert events == ["begin 1", "apply 1", "done 1", "begin 2", "apply 2", "done 2",
                      "begin 3", "failed 3", "undo 2", "undo 1"]


class FullJournal(RecordingJournal):
    """A journal on a disk that fills up before step FULL_AT begins."""

    def __init__(self, events: list[str], full_at: int) -> None:
        super().__init__(events)
        self.full_at = full_at

    def begin(self, step: int, action: Action) -> None:
        if step >= self.full_at:
            raise StorageError("write", "/x/run/network/n.journal", errno.ENOSPC)
        super().begin(step, action)

    def failed(self, step: int, action: Action) -> None:
        if step >= self.full_at:
            raise StorageError("write", "/x/run/network/n.journal", errno.ENOSPC)
        super().failed(step, action)


def test_a_journal_that_cannot_be_written_stops_the_plan_before_its_step() -> None:
    """The step that could not be journalled is not tried; the earlier ones are undone, and
    the error is the journal's own: nothing happened but that."""
    events: list[str] = []
    with pytest.raises(StorageError, match=r"n\.journal: No space left on device \(ENOSPC\)"):
        Plan("n", steps(3, events)).apply(None, on_step=FullJournal(events, 2))  # type: ignore[arg-type]
    assert events == ["begin 1", "apply 1", "done 1", "undo 1"]


def test_a_journal_that_cannot_be_written_with_an_undo_that_fails_is_a_plan_error() -> None:
    events: list[str] = []
    with pytest.raises(PlanError) as info:
        Plan("n", steps(3, events, fail_undo={1: True})).apply(
            None, on_step=FullJournal(events, 2))  # type: ignore[arg-type]
    assert not info.value.begun and "step 2 (step 2) not done: cannot write" in str(info.value)
    assert info.value.undo_errors == ["undo of step 1: 1 cannot be undone"]


def test_a_failure_the_journal_cannot_record_is_reported_only_if_the_rollback_failed() -> None:
    """Recording "failed" matters only for a journal kept for the next command; a complete
    rollback's journal is removed by the caller."""
    class FillsWithTheFailure(FullJournal):
        def failed(self, step: int, action: Action) -> None:
            raise StorageError("write", "/x/run/network/n.journal", errno.ENOSPC)

    events: list[str] = []
    with pytest.raises(PlanError) as info:
        Plan("n", steps(2, events, fail_apply={2: True})).apply(
            None, on_step=FillsWithTheFailure(events, 3))  # type: ignore[arg-type]
    assert str(info.value) == "step 2 (step 2) failed: 2 refused"
    assert info.value.undo_errors == []
    events.clear()
    with pytest.raises(PlanError) as info:
        Plan("n", steps(2, events, fail_apply={2: True}, fail_undo={1: True})).apply(
            None, on_step=FillsWithTheFailure(events, 3))  # type: ignore[arg-type]
    assert info.value.undo_errors == [
        "undo of step 1: 1 cannot be undone",
        "cannot record that step 2 failed: cannot write /x/run/network/n.journal: No space "
        "left on device (ENOSPC)"]


def test_a_plain_callback_is_not_taken_for_a_journal() -> None:
    events: list[str] = []

    def append(step: int, action: Action) -> None:  # named like a journal's method
        events.append(f"done {step}")

    Plan("n", steps(2, events)).apply(None, on_step=append)  # type: ignore[arg-type]
    assert events == ["apply 1", "done 1", "apply 2", "done 2"]


@dataclass
class HalfStep(Step):
    """Two host changes, with the crash tests' hook between them."""

    write_fd: int = -1

    def apply(self, host: Any) -> None:
        from virtnet.plan.actions import crash_in_step

        os.write(self.write_fd, f"first {self.label};".encode())
        crash_in_step()
        os.write(self.write_fd, f"second {self.label};".encode())


def _run_killed_inside(step: int, actions: Any, journal_fd: int) -> int:
    """Fork, apply ACTIONS with VIRTNET_CRASH_IN_STEP=STEP; the child's wait status."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.environ["VIRTNET_CRASH_IN_STEP"] = str(step)

            class PipeJournal(RecordingJournal):
                def __init__(self) -> None:
                    super().__init__([])

                def begin(self, k: int, action: Action) -> None:
                    os.write(journal_fd, f"begin {k};".encode())

                def append(self, k: int, action: Action) -> None:
                    os.write(journal_fd, f"done {k};".encode())

            Plan("n", actions).apply(None, on_step=PipeJournal())  # type: ignore[arg-type]
        finally:
            os._exit(0)  # reached only if the kill did not happen
    _, status = os.waitpid(pid, 0)
    return status


def _read_all(fd: int) -> str:
    text = b""
    while chunk := os.read(fd, 1000):
        text += chunk
    os.close(fd)
    return text.decode()


def test_crash_in_step_kills_right_after_the_steps_first_change() -> None:
    import signal

    read_fd, write_fd = os.pipe()
    actions = [HalfStep(str(i), [], write_fd=write_fd) for i in (1, 2, 3)]
    status = _run_killed_inside(2, actions, write_fd)
    os.close(write_fd)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    # step 2 was journalled as begun and made its first change, nothing after
    assert _read_all(read_fd) == "begin 1;first 1;second 1;done 1;begin 2;first 2;"


def test_crash_in_step_without_a_hook_kills_once_the_step_applied_unrecorded() -> None:
    import signal

    read_fd, write_fd = os.pipe()
    journal: list[str] = []
    status = _run_killed_inside(2, steps(3, journal), write_fd)
    os.close(write_fd)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert _read_all(read_fd) == "begin 1;done 1;begin 2;"


def test_crash_in_step_is_disarmed_when_the_step_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from virtnet.execute import faults as plan_module

    monkeypatch.setenv("VIRTNET_CRASH_IN_STEP", "2")
    journal: list[str] = []
    with pytest.raises(PlanError):
        Plan("n", steps(3, journal, fail_apply={2: True})).apply(None)  # type: ignore[arg-type]
    assert plan_module._crash_in_step_armed is False
    plan_module.crash_in_step()  # not armed: returns
    assert journal == ["apply 1", "undo 1"]


def test_plan_undo_goes_on_past_failures_and_reports_them() -> None:
    journal: list[str] = []
    undone: list[int] = []
    plan = Plan("n", steps(3, journal, fail_undo={2: True}))
    with pytest.raises(HostError) as info:
        plan.undo(None, on_step=lambda k, a: undone.append(k))  # type: ignore[arg-type]
    assert journal == ["undo 3", "undo 2", "undo 1"]
    assert undone == [3, 1]
    assert str(info.value) == "undo of step 2 (step 2): 2 cannot be undone"


def test_plan_error_pickles() -> None:
    import pickle

    error = PlanError(3, EXAMPLES[1], HostError("boom"), ["undo of x: y"])
    again = pickle.loads(pickle.dumps(error))
    assert (again.step, again.action, str(again.cause), again.undo_errors) == (
        3, EXAMPLES[1], "boom", ["undo of x: y"]
    )
    assert str(again) == str(error)


def test_action_modules_define_every_recorded_kind() -> None:
    # Every Action subclass outside virtnet.plan.actions lives in a module from_dict knows to import.
    import importlib
    import pkgutil

    import virtnet
    from virtnet.plan.actions import KIND_MODULES

    for info in pkgutil.walk_packages(virtnet.__path__, "virtnet."):
        if info.name.startswith(("virtnet.daemon",)):
            continue
        importlib.import_module(info.name)
    outside = {kind: cls.__module__ for kind, cls in Action._registry.items()
               if cls.__module__ != "virtnet.plan.actions"}
    assert outside == KIND_MODULES
