"""The host: the only object in virtnet with effects on the kernel, files and processes.

Everything is done in the network namespace the process is in (see
:func:`virtnet.host.netns.enter_netns`). Each helper does one thing; deletes treat "not
found" as success so an undo can run twice. Heavy dependencies (libnftables) load on first
use.

What needs no handle is Host's static surface: the process's unix sockets and descriptors
(host/ipc.py, host/fastipc.py), its namespace, pid file and watches (host/procs.py). The
faces and the daemon reach every effect through Host that way; importing this package stays
as cheap as the thin client needs (its modules load on first use).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

    from virtnet.facts import HostFacts, NeighbourInfo
    from virtnet.host.netlink import (
        AddressInfo,
        IPAddress,
        IPInterface,
        IPNetwork,
        LinkInfo,
        RouteInfo,
    )
    from virtnet.host.sriov import VirtualFunction

RUN_TIMEOUT_S = 60.0


def _load_handle_modules() -> None:
    """Bind what the handle's methods use, when the first Host is made: the thin client
    imports this package (for virtnet.host.fastipc) and must not pay for pyroute2's rtnl,
    subprocess or virtnet.errors."""
    global subprocess, tempfile, Path, HostError, StorageError, storage_errors  # noqa: PLW0603
    global dnsmasq_process, sysctl_mod, Netlink, json, NotInstalled  # noqa: PLW0603
    global errno, rtnl_mod, NetlinkFailure  # noqa: PLW0603 - the guest devices' section
    import errno, json, subprocess, tempfile  # noqa: E401 - one deferred load
    from pathlib import Path

    from virtnet.errors import HostError, NotInstalled, StorageError, storage_errors
    from virtnet.host import dnsmasq as dnsmasq_process, rtnl as rtnl_mod, sysctl as sysctl_mod
    from virtnet.host.netlink import Netlink, NetlinkFailure


class _Elsewhere:
    """A function of another host/ module offered as a static method of Host, its module
    imported on first use (so that importing this package stays cheap: see
    _load_handle_modules). They need no handle: the process's sockets, descriptors and
    namespace, the daemon's pid file and watches."""

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
    connect_stream = _Elsewhere("fastipc")  # the thin client's two
    netns_identity = _Elsewhere("fastipc")
    connect_unix = _Elsewhere("ipc")
    recv_fds = _Elsewhere("ipc")
    send_fd = _Elsewhere("ipc")
    listen_unix = _Elsewhere("ipc")
    activation_socket = _Elsewhere("ipc")
    notifier = _Elsewhere("ipc", "Notifier")
    reload_dnsmasq = _Elsewhere("dnsmasq")  # SIGHUP: our dnsmasq re-reads its hosts files
    step_hook = staticmethod(lambda: None)  # the crash tests' (execute/faults.inject)
    open_tun = _Elsewhere("ipc")
    attach_tap = _Elsewhere("ipc")
    enter_netns = _Elsewhere("netns")
    watch_links = _Elsewhere("rtnl", "LinkWatch")
    lock_pidfile = _Elsewhere("procs")
    pidfd_open = _Elsewhere("procs")
    vmrss_kb = _Elsewhere("procs")
    mallinfo2 = _Elsewhere("procs")
    set_mmap_threshold = _Elsewhere("procs")
    getsockopt = _Elsewhere("procs")
    run_attached = _Elsewhere("procs")  # the user's editor, on the terminal
    run_filter = _Elsewhere("procs")  # bytes through a tool (Graphviz's dot)
    files = _Elsewhere("fs", "Files")  # the state store's files: atomic writes, the lock
    exit_now = _Elsewhere("crash")  # the crash tests' deaths (execute/faults decides when)
    kill_self = _Elsewhere("crash")

    # --- what the host is like, read without a handle: the planners and the doctor get
    # these as data (virtnet.facts), never the host itself
    kernel_has = _Elsewhere("kernel")
    kernel_features = _Elsewhere("kernel", "probe_kernel")
    tc_features = _Elsewhere("tc", "probe_features")  # a scratch IFB, once per boot
    nft_ruleset = _Elsewhere("nft", "read_ruleset")  # `nft -j list ruleset`, or None
    legacy_forward_rules = _Elsewhere("nft", "read_legacy_forward")
    processes = _Elsewhere("procs", "processes_in_netns")  # by name, in this namespace
    has_netns = _Elsewhere("procs", "netns_supported")
    has_net_admin = _Elsewhere("privilege")  # CAP_NET_ADMIN in this process's effective set
    is_our_dnsmasq = _Elsewhere("dnsmasq")  # by its command line: a recycled pid never is
    find_our_dnsmasqs = _Elsewhere("dnsmasq")
    read_pid_file = _Elsewhere("dnsmasq")
    libvirt_network_files = _Elsewhere("libvirt", "read_network_files")
    in_libvirt_netns = _Elsewhere("libvirt", "shares_init_netns")  # where libvirtd runs

    @staticmethod
    def peer_links() -> list[LinkInfo]:
        """Links of other namespaces whose peers are here (veths moved away)."""
        from virtnet.host.rtnl import shared_rtnl

        return shared_rtnl().peer_links()


class Host(HostProcess):
    """The handle on one network namespace: links, addresses, routes, sysctl, nft, tc,
    guest devices, files and processes there."""

    def __init__(self) -> None:
        _load_handle_modules()
        from virtnet.host.nft import shared_nft
        from virtnet.host.rtnl import shared_rtnl

        # The thread's netlink socket and the process's libnftables context for this
        # namespace, kept between operations (opening them is most of a small operation's
        # cost in a long-lived virtnetd).
        self._rtnl = shared_rtnl()  # also for the reads Netlink does not wrap (neighbours)
        self.netlink = Netlink(self._rtnl)
        self.nftables = shared_nft()

    def close(self) -> None:
        """Nothing to release: the socket and the context are shared (see __init__)."""
        self.netlink.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- facts: read before planning, so the planners get data, never the host ----------

    def read_facts(self, networks: Mapping[str, str] | None = None) -> HostFacts:
        """Links, addresses, routes and features of this namespace (virtnet.host.facts)."""
        from virtnet.host.facts import read_facts

        return read_facts(self, networks)

    # --- links --------------------------------------------------------------------------

    def link(self, name: str) -> LinkInfo | None:
        return self.netlink.link(name)

    def link_exists(self, name: str) -> bool:
        return self.netlink.exists(name)

    def links(self) -> list[LinkInfo]:
        return self.netlink.links()

    def neighbours(self, link: str) -> list[NeighbourInfo]:
        """LINK's neighbour table (a bridge's: the guests it has heard from)."""
        return self._rtnl.neighbours(link)

    def create_bridge(
        self,
        name: str,
        *,
        stp: bool = True,
        forward_delay: int = 0,
        mac: str | None = None,
        mtu: int | None = None,
        vlan_filtering: bool = False,
    ) -> None:
        self.netlink.create_bridge(
            name,
            stp=stp,
            forward_delay=forward_delay,
            mac=mac,
            mtu=mtu,
            vlan_filtering=vlan_filtering,
        )

    def delete_link(self, name: str) -> bool:
        return self.netlink.delete_link(name)

    def set_link_up(self, name: str) -> None:
        self.netlink.set_up(name, True)

    def set_link_down(self, name: str) -> bool:
        """Set NAME down; False if it does not exist (nothing to do)."""
        if not self.link_exists(name):
            return False
        self.netlink.set_up(name, False)
        return True

    # --- guest devices: taps, macvtaps and their nodes, SR-IOV VFs ------------------------

    # Loaded by the networks that use them: a persistent tap owned by root (as libvirt makes
    # vnetN for a guest), macvtap nodes (path; make: (path, device number); remove), a VF check.
    create_tap = _Elsewhere("rtnl", "create_persistent_tap")
    tap_node_path = _Elsewhere("devices")
    make_tap_node = _Elsewhere("devices")
    remove_tap_node = _Elsewhere("devices")
    check_virtual_function = _Elsewhere("sriov")  # HostError unless it is a VF present here

    # On the thread's shared socket for this namespace (the one self.netlink holds), as the
    # drivers' actions used it before they went through the handle.

    def link_index(self, name: str) -> int | None:
        """NAME's ifindex (an ioctl); None if there is no such link."""
        try:
            return rtnl_mod.shared_rtnl().index(name)
        except HostError:
            return None

    def set_link(self, name: str, *, mac: str | None = None, master: str | None = None,
                 mtu: int | None = None, up: bool | None = None) -> None:
        """Change NAME's MAC, bridge, MTU and up/down state in one request."""
        rtnl_mod.shared_rtnl().set_link(name, mac=mac, master=master, mtu=mtu, up=up)

    def set_bridge_port_isolated(self, name: str, isolated: bool) -> None:
        rtnl_mod.shared_rtnl().set_bridge_port_isolated(name, isolated)

    def create_macvtap(self, name: str, lower: str, mode: str, mac: str) -> int:
        """Macvtap NAME on LOWER in MODE (libvirt's name), with MAC, up; its ifindex. A
        kernel without macvtap is named as such, not as a bare EOPNOTSUPP."""
        try:
            return rtnl_mod.shared_rtnl().create_macvtap(name, lower, mode, mac)
        except NetlinkFailure as exc:
            if exc.code == errno.EOPNOTSUPP:
                from virtnet.host.kernel import require  # only to name what is missing

                require("macvtap", what=f"create macvtap {name}")
            raise

    def virtual_functions(self, pf: str) -> list[VirtualFunction]:
        """The SR-IOV virtual functions of PF, in VF order (HostError if none)."""
        from virtnet.host import sriov  # loaded by the networks that use it

        return sriov.virtual_functions(rtnl_mod.shared_rtnl(), pf)

    # --- addresses and routes -----------------------------------------------------------

    def addresses(self, names: dict[int, str] | None = None) -> list[AddressInfo]:
        return self.netlink.addresses(names)

    def add_address(self, link: str, interface: IPInterface, *, nodad: bool = True) -> None:
        self.netlink.add_address(link, interface, nodad=nodad)

    def delete_address(self, link: str, interface: IPInterface) -> bool:
        return self.netlink.delete_address(link, interface)

    def routes(self, names: dict[int, str] | None = None) -> list[RouteInfo]:
        return self.netlink.routes(names=names)

    def add_route(
        self,
        link: str,
        destination: IPNetwork,
        gateway: IPAddress | None = None,
        metric: int | None = None,
    ) -> None:
        self.netlink.add_route(link, destination, gateway, metric)

    def delete_route(
        self,
        link: str,
        destination: IPNetwork,
        gateway: IPAddress | None = None,
        metric: int | None = None,
    ) -> bool:
        return self.netlink.delete_route(link, destination, gateway, metric)

    # --- sysctl -------------------------------------------------------------------------

    def sysctl_get(self, key: str) -> str | None:
        return sysctl_mod.sysctl_get(key)

    def sysctl_set(self, key: str, value: str) -> None:
        sysctl_mod.sysctl_set(key, value)

    # --- nftables -----------------------------------------------------------------------

    def nft(self, script: str, *, what: str = "load firewall rules", handles: bool = False,
            echo: bool = False) -> str:
        """Run SCRIPT as one nft transaction; its output, with rule handles (``-a``) and the
        rules added echoed back (``-e``) when asked. HostObjectMissing (a HostError) when
        what it names is not there."""
        from virtnet.host.nft import OUTPUT_ECHO, OUTPUT_HANDLE

        flags = (OUTPUT_HANDLE if handles else 0) | (OUTPUT_ECHO if echo else 0)
        return self.nftables.run(script, what=what, output_flags=flags)

    def nft_json(self, script: str, *, what: str) -> dict[str, Any]:
        """What the listing SCRIPT shows, as nft's JSON (``-j``), parsed; {} for no output.
        NotInstalled (a HostError) without libnftables and nft."""
        from virtnet.host.nft import OUTPUT_JSON

        out = self.nftables.run(script, what=what, output_flags=OUTPUT_JSON)
        return json.loads(out) if out.strip() else {}

    def iptables_delete(self, argv: list[str], *, what: str) -> None:
        """Run an ``iptables -D`` ARGV; HostObjectMissing when the rule is not there."""
        from virtnet.host.nft import iptables_delete

        iptables_delete(self.run, argv, what=what)

    def nft_chains(self, family: str, table: str) -> list[str] | None:
        return self.nftables.list_chains(family, table)

    # --- traffic control ----------------------------------------------------------------

    tc_batch = _Elsewhere("tc", "run")  # (commands, *, what, missing_ok): one `tc -batch`
    create_ifb = _Elsewhere("tc")

    # --- files --------------------------------------------------------------------------

    # Files (dnsmasq's configuration and hosts files, its pid and lease files) fail with a
    # StorageError naming the file and the errno, as virtnet.store.store's do.

    def write_file(self, path: Path, content: str, mode: int = 0o600) -> None:
        """Write PATH atomically (temp file + rename), creating its directory."""
        path = Path(path)
        self.ensure_dir(path.parent)
        with storage_errors("write", path):
            # named like virtnet.store.store's temp files, which a command holding the lock
            # sweeps away when a kill left one (StateStore.remove_stale_temp_files)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(content)
                os.chmod(tmp, mode)
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise

    def ensure_dir(self, path: Path, mode: int = 0o755) -> None:
        with storage_errors("create directory", path):
            Path(path).mkdir(mode=mode, parents=True, exist_ok=True)

    def file_size(self, path: Path) -> int | None:
        """PATH's size, None if there is no such file."""
        try:
            return os.lstat(path).st_size
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError.of(exc, "read", path) from exc

    def remove_file(self, path: Path) -> bool:
        try:
            Path(path).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            if self.file_size(path) is None:  # EROFS comes before ENOENT
                return False
            raise StorageError.of(exc, "remove", path) from exc
        return True

    # --- processes ----------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        *,
        input: str | None = None,
        timeout: float = RUN_TIMEOUT_S,
        check: bool = True,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[str]:
        """Run ARGV (never through a shell) and capture its output."""
        try:
            proc = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                **kwargs,
            )
        except FileNotFoundError:
            raise NotInstalled(f"cannot run {argv[0]}: not installed") from None
        except subprocess.TimeoutExpired:
            raise HostError(f"{argv[0]} did not finish within {timeout:.0f} s") from None
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
            raise HostError(f"{' '.join(argv)} failed: {detail}")
        return proc

    def spawn_dnsmasq(self, argv: list[str], pid_file: Path) -> subprocess.Popen[str]:
        return dnsmasq_process.spawn_dnsmasq(argv, pid_file)

    def await_dnsmasq(self, proc: subprocess.Popen[str], conf_file: Path,
                      pid_file: Path) -> int:
        return dnsmasq_process.await_dnsmasq(proc, conf_file, pid_file, self.step_hook)

    def settle_dnsmasq(self, proc: subprocess.Popen[str]) -> None:
        dnsmasq_process.settle_dnsmasq(proc)

    def stop_dnsmasq(self, pid: int, conf_file: Path) -> bool:
        return dnsmasq_process.stop_dnsmasq(pid, conf_file)


__all__ = ["Host"]
