"""This process's capabilities, read from /proc/self/status (virtnet.service.privilege says which
commands need which)."""

from __future__ import annotations

import os
from pathlib import Path

from virtnet.errors import HostError

CAP_NET_ADMIN = 12  # linux/capability.h
PROC_STATUS = Path("/proc/self/status")


def effective_capabilities(status_text: str | None = None) -> int:
    """The effective capability set (CapEff of /proc/self/status) as a bit mask."""
    text = status_text if status_text is not None else PROC_STATUS.read_text()
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    raise HostError(f"{PROC_STATUS} has no CapEff line")


# The pid that was last seen holding CAP_NET_ADMIN. virtnet never gives up capabilities, so
# once seen the answer stays; keyed by pid because a forked child may drop them (tests do),
# and only the positive answer is kept so a process that gains the capability is not refused.
_net_admin_seen_in: int | None = None


def has_net_admin(status_text: str | None = None) -> bool:
    global _net_admin_seen_in
    if status_text is None and _net_admin_seen_in == os.getpid():
        return True
    held = bool(effective_capabilities(status_text) >> CAP_NET_ADMIN & 1)
    if held and status_text is None:
        _net_admin_seen_in = os.getpid()
    return held
