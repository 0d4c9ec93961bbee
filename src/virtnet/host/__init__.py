"""The host: the only code in virtnet with effects on the kernel, files and processes.

Everything is done in the network namespace the process is in (see
:func:`virtnet.host.netns.enter_netns`). :class:`Host` (virtnet.host.handle) is the handle on
that namespace; what needs no handle is :class:`HostProcess` (virtnet.host.process), which
Host inherits: the process's unix sockets and descriptors, its namespace, pid file and
watches, and the reads of what the host is like. The faces and the daemon reach every effect
through one of the two. Heavy dependencies (libnftables) load on first use, and so does the
handle itself: the thin client imports this package for its sockets alone.
"""

from __future__ import annotations

from virtnet.host.process import HostProcess

TYPE_CHECKING = False
if TYPE_CHECKING:
    from virtnet.host.handle import Host


def __getattr__(name: str) -> type:
    """``Host``, its module (netlink, nftables, processes) loaded when first named."""
    if name == "Host":
        from virtnet.host.handle import Host

        return Host
    raise AttributeError(f"module 'virtnet.host' has no attribute {name!r}")


__all__ = ["Host", "HostProcess"]
