"""What a process reaches without a host handle: its sockets, descriptors, children and
namespace, the daemon's pid file and watches, and the reads of what the host is like. Each is
a function of another host/ module, offered as a static method of :class:`HostProcess`
(which :class:`virtnet.host.handle.Host` inherits) and imported when first called, so that
importing virtnet.host stays as cheap as the thin client needs.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Elsewhere:
    """A function of another host/ module offered as a static method of Host, its module
    imported on first use (so that importing virtnet.host stays cheap). They need no
    handle: the process's sockets, descriptors and namespace, the daemon's pid file and
    watches."""

    def __init__(self, module: str, name: str | None = None) -> None:
        self.module = f"virtnet.host.{module}"
        self.name = name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = self.name or name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if self.module not in sys.modules:
            __import__(self.module)
        return getattr(sys.modules[self.module], self.name or "")


class HostProcess:
    """What the process reaches without a handle (Host inherits it all): its sockets,
    descriptors, children and namespace, the daemon's pid file and watches, and the reads of
    what the host is like that planners and the doctor get as data."""

    # --- the process: static, no handle needed -----------------------------------------
    connect_stream = Elsewhere("fastipc")  # the thin client's two
    netns_identity = Elsewhere("fastipc")
    connect_unix = Elsewhere("ipc")
    recv_fds = Elsewhere("ipc")
    send_fd = Elsewhere("ipc")
    send_fd_on = Elsewhere("ipc")  # the QEMU helper's answer on its inherited socket
    listen_unix = Elsewhere("ipc")
    activation_socket = Elsewhere("ipc")
    notifier = Elsewhere("ipc", "Notifier")
    reload_dnsmasq = Elsewhere("dnsmasq")  # SIGHUP: our dnsmasq re-reads its hosts files
    step_hook = staticmethod(lambda: None)  # the crash tests' (execute/faults.inject)
    open_tun = Elsewhere("ipc")
    attach_tap = Elsewhere("ipc")
    set_tap_persistent = Elsewhere("ipc")
    enter_netns = Elsewhere("netns")
    watch_links = Elsewhere("rtnl", "LinkWatch")
    lock_pidfile = Elsewhere("procs")
    pidfd_open = Elsewhere("procs")
    vmrss_kb = Elsewhere("procs")
    mallinfo2 = Elsewhere("procs")
    set_mmap_threshold = Elsewhere("procs")
    getsockopt = Elsewhere("procs")
    run_attached = Elsewhere("procs")  # the user's editor, on the terminal
    run_with_fds = Elsewhere("procs")  # port-exec's command, handed the port's descriptor
    run_filter = Elsewhere("procs")  # bytes through a tool (Graphviz's dot)
    files = Elsewhere("fs", "Files")  # the state store's files: atomic writes, the lock
    exit_now = Elsewhere("crash")  # the crash tests' deaths (execute/faults decides when)
    kill_self = Elsewhere("crash")

    # --- what the host is like, read without a handle: the planners and the doctor get
    # these as data (virtnet.facts), never the host itself
    kernel_has = Elsewhere("kernel")
    kernel_features = Elsewhere("kernel", "probe_kernel")
    tc_features = Elsewhere("tc", "probe_features")  # a scratch IFB, once per boot
    nft_ruleset = Elsewhere("nft", "read_ruleset")  # `nft -j list ruleset`, or None
    legacy_forward_rules = Elsewhere("nft", "read_legacy_forward")
    processes = Elsewhere("procs", "processes_in_netns")  # by name, in this namespace
    has_netns = Elsewhere("procs", "netns_supported")
    has_net_admin = Elsewhere("privilege")  # CAP_NET_ADMIN in this process's effective set
    is_our_dnsmasq = Elsewhere("dnsmasq")  # by its command line: a recycled pid never is
    find_our_dnsmasqs = Elsewhere("dnsmasq")
    read_pid_file = Elsewhere("dnsmasq")
    libvirt_network_files = Elsewhere("libvirt", "read_network_files")
    in_libvirt_netns = Elsewhere("libvirt", "shares_init_netns")  # where libvirtd runs

    peer_links = Elsewhere("rtnl")  # links of other namespaces whose peers are here


__all__ = ["Elsewhere", "HostProcess"]
