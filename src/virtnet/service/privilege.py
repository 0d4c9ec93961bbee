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
from virtnet.host import Host
from virtnet.host.privilege import (  # noqa: F401 - the reads, for callers of this module
    CAP_NET_ADMIN,
    effective_capabilities,
    has_net_admin,
)
from virtnet.errors import Busy
from virtnet.store.store import StateError

class PrivilegeError(HostError):
    """The operation needs a capability this process does not have."""


def require_net_admin(operation: str) -> None:
    """Refuse ``operation`` (a verb, e.g. "net-start") unless CAP_NET_ADMIN is effective."""
    if not Host.has_net_admin():
        raise PrivilegeError(
            f"permission denied: {operation} changes the host's network and needs "
            "CAP_NET_ADMIN (run it as root); nothing was changed"
        )


def require_net_admin_if(operation: str, changes_host: Callable[[], bool]) -> None:
    """Refuse ``operation`` without CAP_NET_ADMIN when ``changes_host()`` says that this run
    would change the host's network (for verbs that change it only sometimes: ``--live``, or
    an active network). ``changes_host`` is asked only of an unprivileged process, before any
    lock is taken; a state it may not read (root's state directory) counts as a change."""
    if Host.has_net_admin():
        return

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
