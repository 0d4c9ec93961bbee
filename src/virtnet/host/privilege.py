"""Capabilities and path permissions, read from the host: whether this process holds
CAP_NET_ADMIN (``/proc/self/status``) and whether dnsmasq, once it dropped root, can reach its
files. virtnet.privilege says which commands need what.
"""

from __future__ import annotations

import os
import stat
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


def untraversable_ancestor(path: Path) -> Path | None:
    """The first directory from ``/`` down to ``path`` that other users cannot enter
    (no o+x), or None when every one of them can be entered. Missing directories are
    created 0755 by virtnet, so they do not count."""
    current = Path("/")
    for part in Path(os.path.abspath(path)).parts[1:]:
        current = current / part
        try:
            mode = os.stat(current).st_mode
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return current
    return None


def check_dnsmasq_dir(network: str, directory: Path, has_hosts: bool) -> None:
    """Refuse a network whose dnsmasq would serve reservations (``has_hosts``) from files
    under ``directory`` that dnsmasq, once it dropped root, cannot reach."""
    if not has_hosts:
        return
    blocked = untraversable_ancestor(directory)
    if blocked is not None:
        mode = stat.S_IMODE(os.stat(blocked).st_mode)
        raise HostError(
            f"network '{network}': dnsmasq reads its DHCP hosts and addn-hosts files in "
            f"{directory} as user nobody after dropping root, but {blocked} (mode {mode:04o}) "
            "cannot be entered by other users, so reservation changes would be silently "
            f"ignored; use a --state-dir whose parents are traversable (chmod o+x {blocked})"
        )
