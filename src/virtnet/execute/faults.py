"""Fault and crash injection for the tests, read from the environment at run time.

Each profile below names the variables of one kind of run (a start, port create or plan of
actions: :data:`PLAN`; a live net-apply: :data:`LIVE`):

  VIRTNET_FAULT_STEP=k        step k (1-based) raises HostError instead of applying
  VIRTNET_CRASH_AFTER_STEP=k  the process exits with status 137 right after step k applied
                              and was journalled, as if killed
  VIRTNET_CRASH_IN_STEP=k     SIGKILL inside step k: right after the step's first host
                              change where its action calls :func:`crash_in_step` (a bridge
                              created, dnsmasq spawned, a tap created but not enslaved...),
                              else once its apply returned but before it was journalled
  VIRTNET_APPLY_FAULT_STEP, VIRTNET_CRASH_AFTER_APPLY_STEP, VIRTNET_CRASH_IN_APPLY_STEP
                              the same three for the steps of a live net-apply
  VIRTNET_CRASH_AFTER_UNDO_STEP=k  exit 137 after the k-th undo of a net-destroy (counted
                              newest first)
  VIRTNET_CRASH_IN_WRITE=stage  the first atomic file write of the process dies at that
                              stage (see virtnet.host.fs.atomic_write)

The host code never imports this module: the executor hands :func:`crash_in_step` to the
Host it runs on (:func:`inject`), and :mod:`virtnet.host.fs` asks the hook installed here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from virtnet.errors import HostError
from virtnet.host import fs
from virtnet.host import HostProcess
from virtnet.host.crash import CRASH_EXIT_STATUS

FAULT_STEP_ENV = "VIRTNET_FAULT_STEP"
CRASH_AFTER_STEP_ENV = "VIRTNET_CRASH_AFTER_STEP"
CRASH_AFTER_UNDO_STEP_ENV = "VIRTNET_CRASH_AFTER_UNDO_STEP"
CRASH_IN_STEP_ENV = "VIRTNET_CRASH_IN_STEP"
APPLY_FAULT_STEP_ENV = "VIRTNET_APPLY_FAULT_STEP"
CRASH_AFTER_APPLY_STEP_ENV = "VIRTNET_CRASH_AFTER_APPLY_STEP"
CRASH_IN_APPLY_STEP_ENV = "VIRTNET_CRASH_IN_APPLY_STEP"
CRASH_IN_WRITE_ENV = "VIRTNET_CRASH_IN_WRITE"
CRASH_IN_WRITE_STAGES = ("empty", "partial", "before-rename", "after-rename")


@dataclass(frozen=True)
class Profile:
    """The variables that inject a fault into, or kill, one kind of run, and how an
    injected fault names itself."""

    fault_env: str
    crash_after_env: str
    crash_in_env: str
    fault_message: str  # formatted with the step number

    def fault(self) -> int | None:
        return env_step(self.fault_env)

    def crash_after(self) -> int | None:
        return env_step(self.crash_after_env)

    def crash_in(self) -> int | None:
        return env_step(self.crash_in_env)


PLAN = Profile(FAULT_STEP_ENV, CRASH_AFTER_STEP_ENV, CRASH_IN_STEP_ENV,
               "injected fault at step {} (" + FAULT_STEP_ENV + ")")
LIVE = Profile(APPLY_FAULT_STEP_ENV, CRASH_AFTER_APPLY_STEP_ENV, CRASH_IN_APPLY_STEP_ENV,
               "injected fault at apply step {}")


def env_step(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise HostError(f"{name} must be a step number, not {value!r}") from None


def crash_point(env_name: str, step: int) -> None:
    """Die as if killed (status 137, no cleanup) when ``env_name`` names ``step``: the crash
    tests' way to stop a command between two of its steps."""
    if env_step(env_name) == step:
        HostProcess.exit_now(CRASH_EXIT_STATUS)


# True while the step a CRASH_IN variable names is applying. A plain flag: only crash tests
# set the variables, and then one command runs one plan at a time.
_crash_in_step_armed = False


def crash_in_step() -> None:
    """SIGKILL this process if it is applying the step a CRASH_IN variable names. Actions
    (and, through the hook :func:`inject` sets, the Host) call it right after their first
    host change, so the crash tests can leave a step half done."""
    if _crash_in_step_armed:
        HostProcess.kill_self()


def run_crashing_in_step(run: Callable[[], None]) -> None:
    """``run()`` (one step) and die inside it: SIGKILL at the first crash_in_step() it
    reaches, else once it returned, before the caller recorded that the step is done."""
    global _crash_in_step_armed
    _crash_in_step_armed = True
    try:
        run()
        crash_in_step()
    finally:
        _crash_in_step_armed = False  # a step that raised goes on to roll back, alive


def inject(host: Any) -> None:
    """Give HOST the crash hook, called by its effects right after a first change (dnsmasq
    running, its pid not yet known). Hosts without the hook (test doubles) go without."""
    if hasattr(type(host), "step_hook"):
        host.step_hook = crash_in_step


def crash_in_write_stage() -> str | None:
    """The stage at which the first atomic write is to die (VIRTNET_CRASH_IN_WRITE)."""
    stage = os.environ.get(CRASH_IN_WRITE_ENV)
    if not stage:
        return None
    if stage not in CRASH_IN_WRITE_STAGES:
        raise HostError(f"{CRASH_IN_WRITE_ENV} must be one of "
                           f"{', '.join(CRASH_IN_WRITE_STAGES)}")
    return stage


fs.write_crash_stage = crash_in_write_stage  # the hook of virtnet.host.fs.atomic_write
