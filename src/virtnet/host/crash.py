"""How a process dies on purpose for the crash tests: at once, with no cleanup.

The fault and crash hooks (virtnet.execute.faults) decide *when*; these two calls are the
effect itself, kept with the other process effects in host/.
"""

from __future__ import annotations

import os
import signal

CRASH_EXIT_STATUS = 137  # what a shell reports for a process killed by SIGKILL


def exit_now(status: int = CRASH_EXIT_STATUS) -> None:
    """End this process with STATUS without unwinding: no finally blocks, no atexit, no
    buffered output flushed, exactly as if it had been killed between two statements."""
    os._exit(status)


def kill_self() -> None:
    """SIGKILL this process: it stops where it is, in the middle of whatever it was doing."""
    os.kill(os.getpid(), signal.SIGKILL)
