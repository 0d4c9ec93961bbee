"""The host handle: one network namespace's links, addresses, routes, sysctl, nftables, tc,
guest devices, files and processes, every effect virtnet has on them (see virtnet.host).
Each helper does one thing; deletes treat "not found" as success so an undo can run twice.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtnet.errors import HostError, NotInstalled, StorageError, storage_errors
from virtnet.host import dnsmasq as dnsmasq_process
from virtnet.host import rtnl as rtnl_mod
from virtnet.host import sriov
from virtnet.host import sysctl as sysctl_mod
from virtnet.host.facts import read_facts as read_host_facts
from virtnet.host.kernel import require
from virtnet.host.netlink import Netlink, NetlinkFailure
from virtnet.host.nft import OUTPUT_ECHO, OUTPUT_HANDLE, OUTPUT_JSON, shared_nft
from virtnet.host.nft import iptables_delete as nft_iptables_delete
from virtnet.host.process import Elsewhere, HostProcess
from virtnet.host.rtnl import shared_rtnl

if TYPE_CHECKING:
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


class Host(HostProcess):
    """The handle on one network namespace: links, addresses, routes, sysctl, nft, tc,
    guest devices, files and processes there."""

    def __init__(self) -> None:
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
        return read_host_facts(self, networks)

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
    create_tap = Elsewhere("rtnl", "create_persistent_tap")
    tap_node_path = Elsewhere("devices")
    make_tap_node = Elsewhere("devices")
    remove_tap_node = Elsewhere("devices")
    open_tap_node = Elsewhere("devices")  # by device number: the daemon's fd hand-over
    check_virtual_function = Elsewhere("sriov")  # HostError unless it is a VF present here

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
                require("macvtap", what=f"create macvtap {name}")
            raise

    def virtual_functions(self, pf: str) -> list[VirtualFunction]:
        """The SR-IOV virtual functions of PF, in VF order (HostError if none)."""
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
        flags = (OUTPUT_HANDLE if handles else 0) | (OUTPUT_ECHO if echo else 0)
        return self.nftables.run(script, what=what, output_flags=flags)

    def nft_json(self, script: str, *, what: str) -> dict[str, Any]:
        """What the listing SCRIPT shows, as nft's JSON (``-j``), parsed; {} for no output.
        NotInstalled (a HostError) without libnftables and nft."""
        out = self.nftables.run(script, what=what, output_flags=OUTPUT_JSON)
        return json.loads(out) if out.strip() else {}

    def iptables_delete(self, argv: list[str], *, what: str) -> None:
        """Run an ``iptables -D`` ARGV; HostObjectMissing when the rule is not there."""
        nft_iptables_delete(self.run, argv, what=what)

    def nft_chains(self, family: str, table: str) -> list[str] | None:
        return self.nftables.list_chains(family, table)

    # --- traffic control ----------------------------------------------------------------

    tc_batch = Elsewhere("tc", "run")  # (commands, *, what, missing_ok): one `tc -batch`
    create_ifb = Elsewhere("tc")

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


__all__ = ["Host", "RUN_TIMEOUT_S"]
