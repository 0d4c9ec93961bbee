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

The macvtap's character device is ``/dev/tapIFINDEX``; the kernel's devtmpfs creates it. On a
host whose /dev has no devtmpfs (some containers), virtnet creates the node itself from the
major:minor the kernel shows in sysfs, read through a private sysfs mount when /sys belongs
to another network namespace (see :func:`tap_device_numbers`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from virtnet.drivers.base import Driver
from virtnet.errors import HostError, Problem
from virtnet.host.netlink import NetlinkFailure
from virtnet.model import ForwardMode, Network
from virtnet.plan import RECORDED, Action, Plan, crash_in_step

if TYPE_CHECKING:
    from virtnet.host import Host
    from virtnet.host.facts import HostFacts
    from virtnet.paths import StatePaths

DEV_DIR = Path("/dev")
SYS_CLASS_NET = Path("/sys/class/net")
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
HELPER_TIMEOUT_S = 10.0
# iproute2 spells the passthrough mode 'passthru'
IP_MODE_NAMES = {"passthrough": "passthru"}


def tap_device_path(ifindex: int) -> Path:
    return DEV_DIR / f"tap{ifindex}"


def _read_numbers(sys_root: Path, name: str, ifindex: int) -> tuple[int, int] | None:
    try:
        text = (sys_root / "class/net" / name / "macvtap" / f"tap{ifindex}" / "dev").read_text()
        major, minor = text.strip().split(":")
        return int(major), int(minor)
    except (OSError, ValueError):
        return None


def _numbers_through_private_sysfs(name: str, ifindex: int) -> tuple[int, int] | None:
    """Fork a helper that mounts a sysfs of this network namespace in a mount namespace of
    its own (nothing is visible outside it) and reads the device numbers there."""
    # The mount point is made and removed here: the child's mount lives only in its own mount
    # namespace, which dies with it, so the parent can always remove the empty directory.
    where = tempfile.mkdtemp(prefix="virtnet-sysfs-")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNS) == 0 and libc.mount(
                None, b"/", None, MS_REC | MS_PRIVATE, None
            ) == 0:
                if libc.mount(b"sysfs", where.encode(), b"sysfs", 0, None) == 0:
                    found = _read_numbers(Path(where), name, ifindex)
                    if found is not None:
                        os.write(write_fd, f"{found[0]}:{found[1]}".encode())
                        status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], HELPER_TIMEOUT_S)
        data = os.read(read_fd, 64) if ready else b""
    finally:
        os.close(read_fd)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.rmdir(where)
    try:
        major, minor = data.decode().split(":")
        return int(major), int(minor)
    except ValueError:
        return None


def tap_device_numbers(name: str, ifindex: int) -> tuple[int, int]:
    """The (major, minor) of macvtap NAME's character device."""
    if _sysfs_shows(name, ifindex):
        found = _read_numbers(Path("/sys"), name, ifindex)
        if found is not None:
            return found
    found = _numbers_through_private_sysfs(name, ifindex)
    if found is None:
        raise HostError(f"cannot find the character device numbers of macvtap {name}")
    return found


def _sysfs_shows(name: str, ifindex: int) -> bool:
    try:
        return int((SYS_CLASS_NET / name / "ifindex").read_text()) == ifindex
    except (OSError, ValueError):
        return False


def ensure_tap_node(name: str, ifindex: int) -> bool:
    """Make sure /dev/tapIFINDEX exists; True if virtnet had to create it."""
    path = tap_device_path(ifindex)
    if path.exists():
        return False
    major, minor = tap_device_numbers(name, ifindex)
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(major, minor))
    except FileExistsError:
        return False
    except OSError as exc:
        raise HostError(f"cannot create {path} for macvtap {name}: {exc.strerror}") from None
    return True


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
    """A guest's macvtap device on an uplink: created with its MAC, in its mode, up."""

    kind: ClassVar[str] = "create-macvtap"
    name: str
    lower: str
    mode: str  # libvirt's name: bridge, private, vepa, passthrough
    mac: str
    ifindex: int | None = field(default=None, metadata={RECORDED: True})
    char_device: str | None = field(default=None, metadata={RECORDED: True})
    made_node: bool = field(default=False, metadata={RECORDED: True})

    def describe(self) -> str:
        return (f"create macvtap {self.name} on {self.lower} (mode {self.mode}, "
                f"MAC {self.mac}) and its /dev/tapN")

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
        crash_in_step()  # crash tests: the macvtap exists, its /dev/tapN not yet made
        try:
            self.made_node = ensure_tap_node(self.name, self.ifindex)
        except BaseException:
            rtnl.delete_link(self.name)
            raise
        self.char_device = str(tap_device_path(self.ifindex))

    def undo(self, host: Host) -> None:
        from virtnet.host.rtnl import shared_rtnl

        shared_rtnl().delete_link(self.name)
        if self.made_node and self.char_device:
            try:
                os.unlink(self.char_device)
            except FileNotFoundError:
                pass


# --- the driver --------------------------------------------------------------------------


class DirectDriver(Driver):
    name: ClassVar[str] = "direct"
    modes: ClassVar[tuple[ForwardMode, ...]] = (
        ForwardMode.BRIDGE,
        ForwardMode.PRIVATE,
        ForwardMode.VEPA,
        ForwardMode.PASSTHROUGH,
    )

    def handles(self, net: Network) -> bool:
        return net.uses_macvtap

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
    "ensure_tap_node",
    "tap_device_numbers",
]
