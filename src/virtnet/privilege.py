"""What virtnet needs to be allowed to do, checked before it does anything.

Commands that only read (validate, format, plan, dnsmasq-conf, net-list/net-info/net-dumpxml of
a state directory the user can read) need no privilege, nor do those that only write the
state directory (net-define, net-undefine, net-autostart, net-edit, net-new, net-update
--config, net-forward-add/del --config, net-apply of an inactive network, net-apply
--dry-run). Commands that change the host's network (net-start, net-create, net-destroy,
net-update --live, net-forward-add/del --live, net-apply of an active network, port-create,
port-delete, autostart at boot) need CAP_NET_ADMIN in the effective set; without it they
refuse with one message before taking the lock or touching a file, instead of failing at the
first netlink call with half a plan to undo. ("Current", neither --live nor --config, is live
for an active network.)

dnsmasq drops root after start (to ``nobody``) and re-reads its DHCP hosts file and addn-hosts
file on SIGHUP as that user: a directory on their path that other users cannot traverse makes
it silently keep the old reservations. A start or live update that has reservations to serve
from such a directory is refused with the reason (see :func:`check_dnsmasq_dir`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from virtnet.errors import HostError, StorageError

CAP_NET_ADMIN = 12  # linux/capability.h
PROC_STATUS = Path("/proc/self/status")


class PrivilegeError(HostError):
    """The operation needs a capability this process does not have."""


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


def require_net_admin(operation: str) -> None:
    """Refuse ``operation`` (a verb, e.g. "net-start") unless CAP_NET_ADMIN is effective."""
    if not has_net_admin():
        raise PrivilegeError(
            f"permission denied: {operation} changes the host's network and needs "
            "CAP_NET_ADMIN (run it as root); nothing was changed"
        )


def require_net_admin_if(operation: str, changes_host: Callable[[], bool]) -> None:
    """Refuse ``operation`` without CAP_NET_ADMIN when ``changes_host()`` says that this run
    would change the host's network (for verbs that change it only sometimes: ``--live``, or
    an active network). ``changes_host`` is asked only of an unprivileged process, before any
    lock is taken; a state it may not read (root's state directory) counts as a change."""
    if has_net_admin():
        return
    from virtnet.errors import Busy
    from virtnet.state import StateError

    try:
        changes = changes_host()
    except (PermissionError, StateError, StorageError, Busy):  # cannot tell: refusing is safe
        changes = True
    if changes:
        require_net_admin(operation)


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
