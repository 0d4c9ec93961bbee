"""Direct networks: guests on macvtap devices over the host's interfaces (forward mode bridge
without a bridge name, private, vepa, passthrough).

Nothing is created when such a network starts (libvirt creates nothing either): the start
plan checks that every interface of the pool is there. Each guest port is one macvtap device
on an interface chosen from the pool (see :mod:`virtnet.plan.ports`), in the network's mode:

- bridge: guests on the same interface reach each other inside the kernel, the LAN through
  the interface, but not the host's own addresses on that interface;
- private: guests never reach each other, even through an external switch that hairpins;
- vepa: every frame goes out to the external switch; guests reach each other only when that
  switch port reflects frames (hairpin, 802.1Qbg);
- passthrough: the guest gets the interface alone (one port per interface) and the
  interface takes the guest's MAC, as libvirt sets it (restored when the port goes).

Each macvtap gets a character device node of virtnet's own, not the kernel's /dev/tapN
(:mod:`virtnet.host.devices` says why); the node goes with the port.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from virtnet.plan.drivers.base import Driver, NetworkTopology, Pool, refuse_virtualport
from virtnet.errors import HostError, NetlinkFailure, PortError, Problem
from virtnet.facts import FEATURE_TEXT
from virtnet.paths import NODE_DIR
from virtnet.spec.model import ForwardMode, Network, NetworkFamily, VirtualPortType
from virtnet.plan.actions import RECORDED, Action, crash_in_step
from virtnet.plan.plans import Plan
from virtnet.spec.portdef import MacvtapMode, PlugType
from virtnet.plan.drivers.hostdev import UseVfPool

if TYPE_CHECKING:
    from virtnet.host import Host
    from virtnet.host.facts import HostFacts
    from virtnet.paths import StatePaths
    from virtnet.spec.portdef import PortDef
    from virtnet.spec.portdef import PoolUsage

# iproute2 spells the passthrough mode 'passthru'
IP_MODE_NAMES = {"passthrough": "passthru"}


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
        if not host.link_exists(self.dev):
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
        self.old_mac = info.mac
        host.set_link(self.dev, mac=self.mac)

    def undo(self, host: Host) -> None:
        if self.old_mac is None:
            return
        if host.link_exists(self.dev):
            host.set_link(self.dev, mac=self.old_mac)


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
        try:
            self.ifindex = host.create_macvtap(self.name, self.lower, self.mode, self.mac)
        except NetlinkFailure as exc:
            if exc.code == errno.EBUSY and self.mode == "passthrough":
                raise HostError(f"cannot create macvtap {self.name}: {self.lower} is already "
                                "given to another guest (passthrough)") from None
            raise
        crash_in_step()  # crash tests: the macvtap exists, its node not yet made
        try:
            path, self.rdev = host.make_tap_node(self.name, self.ifindex)
        except BaseException:
            host.delete_link(self.name)
            raise
        self.char_device = str(path)

    def undo(self, host: Host) -> None:
        index = host.link_index(self.name)
        # never a device that took the name of ours after ours went
        if index is not None and self.ifindex in (None, index):
            host.delete_link(self.name)
        if self.rdev is not None or self.char_device is None:
            # our node (found by its name when a kill cut the step short)
            host.remove_tap_node(self.char_device or str(host.tap_node_path(self.name)),
                                 self.rdev)
        elif self.made_node:
            host.remove_tap_node(self.char_device, None)  # the /dev/tapN an older virtnet made


# --- the driver --------------------------------------------------------------------------


class DirectDriver(Driver):
    name: ClassVar[str] = "direct"
    family: ClassVar[NetworkFamily] = NetworkFamily.DIRECT

    def preflight(self, net: Network, facts: HostFacts) -> list[Problem]:
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
        if facts.kernel.missing("macvtap"):
            problems.append(Problem("/network/forward",
                                    f"the kernel lacks {FEATURE_TEXT['macvtap']}"))
        return problems

    def plan_start(self, net: Network, facts: HostFacts, paths: StatePaths) -> Plan:
        forward = net.forward
        assert forward is not None
        actions: list[Action] = [UseUplink(net.name, i.dev) for i in forward.interfaces]
        if forward.pfs:
            actions.append(UseVfPool(network=net.name, pf=forward.pfs[0].dev))
        return Plan(net.name, actions)

    def pool(self, net: Network, host: Host) -> list[str]:
        """The interfaces a port may use, in the network's order."""
        forward = net.forward
        if forward is None:
            return []
        if forward.interfaces:
            return [interface.dev for interface in forward.interfaces]
        if forward.pfs:
            # the VFs are what the host lists now
            names = [vf.netdev for vf in host.virtual_functions(forward.pfs[0].dev)]
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
]
