"""Direct networks: guests on macvtap devices over the host's interfaces (forward mode bridge
without a bridge name, private, vepa, passthrough).

Nothing is created when such a network starts (libvirt creates nothing either): the start
plan checks that every interface of the pool is there. Each guest port is one macvtap device
on an interface chosen from the pool (see :mod:`virtnet.ports`), in the network's mode:

- bridge: guests on the same interface reach each other inside the kernel, the LAN through
  the interface, but not the host's own addresses on that interface;
- private: guests never reach each other, even through an external switch that hairpins;
- vepa: every frame goes out to the external switch; guests reach each other only when that
  switch port reflects frames (hairpin, 802.1Qbg);
- passthrough: the guest gets the interface alone (one port per interface) and the
  interface takes the guest's MAC, as libvirt sets it (restored when the port goes).

The kernel names a macvtap's character device ``tapIFINDEX``, but an ifindex is only unique
inside one network namespace while /dev is shared by all: a macvtap of another namespace
with the same ifindex may own /dev/tapN (devtmpfs keeps the first node of a name), so that
node is never used. virtnet makes a node of its own for each port, under /dev/virtnet, named
by the network namespace and the macvtap's name (no two devices alive share both), from the
device numbers the kernel shows in sysfs, read through a sysfs of the macvtap's own namespace
(:mod:`virtnet.host.sysfs`); the node goes with the port. Whoever opens the node checks what
it opened: :func:`open_tap_node` compares the descriptor's device number with sysfs again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from virtnet.drivers.base import Driver, NetworkTopology, Pool, refuse_virtualport
from virtnet.errors import HostError, PortError, Problem
from virtnet.host.netlink import NetlinkFailure
from virtnet.model import ForwardMode, Network, NetworkFamily, VirtualPortType
from virtnet.plan import RECORDED, Action, Plan, crash_in_step
from virtnet.portdef import MacvtapMode, PlugType

if TYPE_CHECKING:
    from virtnet.host import Host
    from virtnet.host.facts import HostFacts
    from virtnet.paths import StatePaths
    from virtnet.portdef import PortDef
    from virtnet.ports import PoolUsage

NODE_DIR = Path("/dev/virtnet")  # under /dev: device nodes open there (/run is often nodev)
NODE_RETRIES = 3  # the directory removed by another port's removal between our mkdir and mknod
# iproute2 spells the passthrough mode 'passthru'
IP_MODE_NAMES = {"passthrough": "passthru"}


def _netns_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def _check_device_name(name: str) -> None:
    if not name or len(name) >= 16 or "/" in name or name in (".", ".."):
        raise HostError(f"invalid interface name {name!r}")


def tap_node_path(name: str) -> Path:
    """The node virtnet makes for its macvtap NAME in this network namespace."""
    _check_device_name(name)
    return NODE_DIR / f"net{_netns_inode()}-{name}"


def tap_device_numbers(name: str, ifindex: int) -> tuple[int, int]:
    """The (major, minor) of the character device of macvtap NAME with IFINDEX, as this
    network namespace's sysfs shows them; HostError if there is no such macvtap here."""
    from virtnet.host.sysfs import read_netns_sysfs

    _check_device_name(name)
    text = read_netns_sysfs(f"class/net/{name}/macvtap/tap{int(ifindex)}/dev")
    try:
        major, minor = (text or "").strip().split(":")
        return int(major), int(minor)
    except ValueError:
        raise HostError(f"macvtap {name} (ifindex {ifindex}) has no character device in this "
                        "network namespace") from None


def make_tap_node(name: str, ifindex: int) -> tuple[Path, int]:
    """Make the node of macvtap NAME (IFINDEX): (its path, its device number)."""
    major, minor = tap_device_numbers(name, ifindex)
    rdev = os.makedev(major, minor)
    path = tap_node_path(name)
    for _ in range(NODE_RETRIES):
        try:
            NODE_DIR.mkdir(mode=0o700, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by a port-create killed before its record was written
            os.mknod(path, stat.S_IFCHR | 0o600, rdev)
            return path, rdev
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise HostError(f"cannot create {path} for macvtap {name}: {exc.strerror}") from None
    raise HostError(f"cannot create {path} for macvtap {name}: {NODE_DIR} keeps vanishing")


def remove_tap_node(path: str, rdev: int | None) -> None:
    """Remove a node virtnet made, if it is still a character device (of RDEV, when known);
    then its directory, once empty."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISCHR(st.st_mode) or (rdev is not None and st.st_rdev != rdev):
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise HostError(f"cannot remove {path}: {exc.strerror}") from None
    if Path(path).parent == NODE_DIR:
        with contextlib.suppress(OSError):  # not empty: other ports' nodes
            NODE_DIR.rmdir()


def open_tap_node(path: str, name: str, ifindex: int, flags: int) -> int:
    """Open PATH, the node of macvtap NAME (IFINDEX), and check what was opened: a character
    device whose number is the one this namespace's sysfs gives that macvtap once it is
    open (a device number is unique among the devices alive, and the macvtap's never
    changes: read after the open, no other device can have passed for it in between)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    except OSError as exc:
        raise HostError(f"cannot open {path} for macvtap {name}: {exc.strerror}") from None
    try:
        expected = os.makedev(*tap_device_numbers(name, ifindex))
    except BaseException:
        os.close(fd)
        raise
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != expected:
        os.close(fd)
        found = (f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
                 if stat.S_ISCHR(st.st_mode) else "not a character device")
        raise HostError(f"{path} is not the character device of macvtap {name} (ifindex "
                        f"{ifindex}, {os.major(expected)}:{os.minor(expected)}): {found}")
    return fd


# --- actions ---------------------------------------------------------------------------------


@dataclass
class UseUplink(Action):
    """Check that a pool interface of a direct network exists; nothing is created."""

    kind: ClassVar[str] = "use-uplink"
    network: str
    dev: str

    def describe(self) -> str:
        return f"use {self.dev} for the guests' macvtap devices (nothing is created)"

    def commands(self) -> list[str]:
        return [f"ip link show dev {self.dev}"]

    def apply(self, host: Host) -> None:
        from virtnet.host.rtnl import shared_rtnl

        if shared_rtnl().link(self.dev) is None:
            raise HostError(f"interface {self.dev} of network {self.network} does not exist")

    def undo(self, host: Host) -> None:
        return None


@dataclass
class SetUplinkMac(Action):
    """Passthrough: the interface takes the guest's MAC; undo gives it back its own."""

    kind: ClassVar[str] = "set-uplink-mac"
    dev: str
    mac: str
    old_mac: str | None = field(default=None, metadata={RECORDED: True})

    def describe(self) -> str:
        return f"set the MAC of {self.dev} to the guest's {self.mac} (passthrough)"

    def commands(self) -> list[str]:
        return [f"ip link set dev {self.dev} address {self.mac}"]

    def apply(self, host: Host) -> None:
        info = host.link(self.dev)
        if info is None:
            raise HostError(f"interface {self.dev} does not exist")
        from virtnet.host.rtnl import shared_rtnl

        self.old_mac = info.mac
        shared_rtnl().set_link(self.dev, mac=self.mac)

    def undo(self, host: Host) -> None:
        if self.old_mac is None:
            return
        from virtnet.host.rtnl import shared_rtnl

        rtnl = shared_rtnl()
        if rtnl.link(self.dev) is not None:
            rtnl.set_link(self.dev, mac=self.old_mac)


@dataclass
class CreateMacvtap(Action):
    """A guest's macvtap device on an uplink: created with its MAC, in its mode, up, and its
    character device node (see the module's doc)."""

    kind: ClassVar[str] = "create-macvtap"
    name: str
    lower: str
    mode: str  # libvirt's name: bridge, private, vepa, passthrough
    mac: str
    ifindex: int | None = field(default=None, metadata={RECORDED: True})
    char_device: str | None = field(default=None, metadata={RECORDED: True})
    made_node: bool = field(default=False, metadata={RECORDED: True})  # older records' /dev/tapN
    rdev: int | None = field(default=None, metadata={RECORDED: True})  # the node's device number

    def describe(self) -> str:
        return (f"create macvtap {self.name} on {self.lower} (mode {self.mode}, "
                f"MAC {self.mac}) and its character device under {NODE_DIR}")

    def commands(self) -> list[str]:
        mode = IP_MODE_NAMES.get(self.mode, self.mode)
        return [
            f"ip link add link {self.lower} name {self.name} address {self.mac} "
            f"type macvtap mode {mode}",
            f"ip link set dev {self.name} up",
        ]

    def apply(self, host: Host) -> None:
        from virtnet.host.rtnl import shared_rtnl

        rtnl = shared_rtnl()
        try:
            self.ifindex = rtnl.create_macvtap(self.name, self.lower, self.mode, self.mac)
        except NetlinkFailure as exc:
            if exc.code == errno.EOPNOTSUPP:
                from virtnet.host.kernel import require

                require("macvtap", what=f"create macvtap {self.name}")
            if exc.code == errno.EBUSY and self.mode == "passthrough":
                raise HostError(f"cannot create macvtap {self.name}: {self.lower} is already "
                                "given to another guest (passthrough)") from None
            raise
        crash_in_step()  # crash tests: the macvtap exists, its node not yet made
        try:
            path, self.rdev = make_tap_node(self.name, self.ifindex)
        except BaseException:
            rtnl.delete_link(self.name)
            raise
        self.char_device = str(path)

    def undo(self, host: Host) -> None:
        from virtnet.host.rtnl import shared_rtnl

        rtnl = shared_rtnl()
        link = rtnl.link(self.name)
        # never a device that took the name of ours after ours went
        if link is not None and self.ifindex in (None, link.index):
            rtnl.delete_link(self.name)
        if self.rdev is not None or self.char_device is None:
            # our node (found by its name when a kill cut the step short)
            remove_tap_node(self.char_device or str(tap_node_path(self.name)), self.rdev)
        elif self.made_node:
            remove_tap_node(self.char_device, None)  # the /dev/tapN an older virtnet made


# --- the driver --------------------------------------------------------------------------


class DirectDriver(Driver):
    name: ClassVar[str] = "direct"
    family: ClassVar[NetworkFamily] = NetworkFamily.DIRECT

    def preflight(self, net: Network, facts: HostFacts) -> list[Problem]:
        from virtnet.host.kernel import FEATURE_TEXT, kernel_has

        forward = net.forward
        problems = []
        if forward is None or not (forward.interfaces or forward.pfs):
            problems.append(Problem(
                "/network/forward",
                f"network '{net.name}' uses a direct mode, but has no forward dev and no "
                "interface pool",
            ))
            return problems
        for index, interface in enumerate(forward.interfaces, start=1):
            if not facts.has_link(interface.dev):
                problems.append(Problem(f"/network/forward/interface[{index}]",
                                        f"interface {interface.dev} does not exist",
                                        interface.dev))
        for index, pf in enumerate(forward.pfs, start=1):
            if not facts.has_link(pf.dev):
                problems.append(Problem(f"/network/forward/pf[{index}]",
                                        f"physical function {pf.dev} does not exist", pf.dev))
        if not kernel_has("macvtap"):
            problems.append(Problem("/network/forward",
                                    f"the kernel lacks {FEATURE_TEXT['macvtap']}"))
        return problems

    def plan_start(self, net: Network, facts: HostFacts, paths: StatePaths) -> Plan:
        from virtnet.drivers.hostdev import UseVfPool

        forward = net.forward
        assert forward is not None
        actions: list[Action] = [UseUplink(net.name, i.dev) for i in forward.interfaces]
        if forward.pfs:
            actions.append(UseVfPool(network=net.name, pf=forward.pfs[0].dev))
        return Plan(net.name, actions)

    def pool(self, net: Network) -> list[str]:
        """The interfaces a port may use, in the network's order."""
        forward = net.forward
        if forward is None:
            return []
        if forward.interfaces:
            return [interface.dev for interface in forward.interfaces]
        if forward.pfs:
            from virtnet.drivers.hostdev import virtual_functions

            names = [vf.netdev for vf in virtual_functions(forward.pfs[0].dev)]
            if not all(names):
                raise HostError(f"some virtual functions of {forward.pfs[0].dev} have no "
                                "network interface (bound to vfio?)")
            return [name for name in names if name]
        return []

    def topology(self, net: Network) -> NetworkTopology:
        mode = net.forward_mode.value
        # 'bridge' alone would read as a host bridge
        label = "bridge (macvtap)" if net.forward_mode is ForwardMode.BRIDGE else mode
        return NetworkTopology(label=label, title=f"{mode}: macvtap", macvtap=True)

    def plug(self, net: Network, port: PortDef, usage: PoolUsage, pool: Pool) -> None:
        """A macvtap on the least used pool interface (the first of equals, in pool order);
        passthrough and private with 802.1Qbh need one nobody uses."""
        mode = net.forward_mode
        port.plug_type = PlugType.DIRECT
        port.mode = MacvtapMode(mode.value)
        refuse_virtualport(net, port, (VirtualPortType.QBG, VirtualPortType.QBH),
                           "a macvtap device")
        devices = [d for d in (pool or []) if isinstance(d, str)]
        if not devices:
            raise PortError(f"network '{net.name}' uses a direct mode, but has no forward dev "
                            "and no interface pool")
        exclusive = mode is ForwardMode.PASSTHROUGH or (
            mode is ForwardMode.PRIVATE and port.virtualport is not None
            and port.virtualport.type is VirtualPortType.QBH)
        if exclusive:
            free = [d for d in devices if usage.by_dev.get(d, 0) == 0]
            if not free:
                used = ", ".join(devices)
                raise PortError(f"network '{net.name}' requires exclusive access to "
                                f"interfaces, but none are available (every interface of its "
                                f"pool, {used}, already has a guest)")
            port.dev = free[0]
        else:
            port.dev = min(devices, key=lambda d: usage.by_dev.get(d, 0))

    def port_actions(self, name: str, dev: str, mode: str, mac: str) -> list[Action]:
        actions: list[Action] = []
        if mode == "passthrough":
            actions.append(SetUplinkMac(dev=dev, mac=mac))
        actions.append(CreateMacvtap(name=name, lower=dev, mode=mode, mac=mac))
        return actions


DRIVER = DirectDriver()

__all__ = [
    "DRIVER",
    "CreateMacvtap",
    "DirectDriver",
    "SetUplinkMac",
    "UseUplink",
    "make_tap_node",
    "open_tap_node",
    "remove_tap_node",
    "tap_device_numbers",
    "tap_node_path",
]
