"""Bandwidth: libvirt's <bandwidth> rates turned into tc commands (pure), and the actions that
apply them.

Meaning, as in libvirt 9.0:
- ``inbound`` and ``outbound`` are seen from the guest. On a tap (bridge-backed networks) the
  guest's inbound traffic is what the host transmits on the tap, so inbound shapes the tap's
  egress and outbound its ingress ("swapped"). On a macvtap the host and the guest see the
  device the same way: inbound is the device's ingress, outbound its egress. On a network's
  bridge, inbound is what the bridge sends towards the guests (egress) and outbound what the
  guests send to the host (ingress).
- Rates are written to tc as ``Nkbps`` (tc reads that as N*1000 bytes/s), bursts as ``Nkb``
  (N*1024 bytes), exactly as libvirt writes them, so a definition shapes the same here and there.
- ``floor`` (a guaranteed inbound share) needs a network with an inbound rate on a bridge of
  its own: the bridge's egress HTB has class 1:1 for the whole network, 1:2 for everyone
  without a floor (its rate is the network rate minus the sum of the floors), and one class per
  port with a floor, fed by a u32 filter on the port's MAC.

Where libvirt needs kernel features this kernel lacks, virtnet uses what it has:
- egress: an HTB tree as libvirt builds it; libvirt hangs an ``sfq`` under each leaf class,
  virtnet does so only if the kernel has sfq (otherwise HTB's default fifo stays);
- ingress: libvirt polices (``police`` action, drops above the rate). virtnet redirects the
  device's ingress to an IFB device (ingress qdisc + u32 + mirred) and shapes that IFB's
  egress with HTB, which queues instead of dropping; it polices like libvirt only when the
  kernel has police but no IFB/mirred, and refuses with the missing features named otherwise.

libvirt's XML takes rates up to 2^64 - 1, more than tc can set: a rate above TC_MAX_RATE kB/s
or a burst above TC_MAX_BURST KiB is refused (BandwidthError) before anything is shaped.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from virtnet.errors import HostError, InvalidOperationError, PortError, VirtnetError
from virtnet.facts import TcFeatures
from virtnet.spec.model import Bandwidth, BandwidthRate, Network, family_of
from virtnet.plan.actions import RECORDED, Action

if TYPE_CHECKING:
    from virtnet.host import Host

MTU_FOR_QUANTUM = 1500
IFNAMSIZ = 16
FLOOR_FILTER_PRIO = "2"
# The class of traffic without a floor (1:2) must keep a positive rate for HTB.
MIN_RATE_KBPS = 1
HTB_MAJOR = "1:"
INGRESS_HANDLE = "ffff:"
# The first class id a port with a floor may use: 1:1 and 1:2 are the network's own.
FIRST_FLOOR_CLASS = 3
MAX_FLOOR_CLASS = 0xFFF  # u32 filter node ids are 12 bits; we use the class id as node id
# What tc can set: rates (kB/s; about 34 Tbit/s) and bursts (KiB; tc keeps bytes in 32 bits).
TC_MAX_RATE = 2**32 - 1
TC_MAX_BURST = (2**32 - 1) // 1024


class BandwidthError(VirtnetError):
    """A bandwidth that tc cannot set (a rate or burst beyond its range): the definition or
    the port request is refused, nothing is shaped."""


# --- pure planning ----------------------------------------------------------------------


def rate(kbytes: int) -> str:
    return f"{kbytes}kbps"


def burst(kib: int) -> str:
    return f"{kib}kb"


def quantum(kbytes: int) -> str:
    """libvirt's HTB quantum for a class of this rate (at least 1 byte)."""
    return str(max(1, kbytes * 1024 // 8 // MTU_FOR_QUANTUM))


def has_floor(bandwidth: Bandwidth | None) -> bool:
    return bool(bandwidth and bandwidth.inbound and bandwidth.inbound.floor)


def ifb_name(device: str) -> str:
    """The IFB device that carries DEVICE's ingress: readable when it fits, hashed if not."""
    name = f"ifb-{device}"
    if len(name.encode()) < IFNAMSIZ:
        return name
    return f"ifb{zlib.crc32(device.encode()):08x}"


def check_tc_range(value: BandwidthRate | None, what: str) -> None:
    """Refuse a rate or burst tc cannot set (BandwidthError), naming WHAT it belongs to."""
    if value is None:
        return
    for name, maximum, unit in (("average", TC_MAX_RATE, "kB/s"), ("peak", TC_MAX_RATE, "kB/s"),
                                ("floor", TC_MAX_RATE, "kB/s"), ("burst", TC_MAX_BURST, "KiB")):
        number = getattr(value, name)
        if number is not None and number > maximum:
            raise BandwidthError(f"{what}: {name} {number} {unit} is more than tc can set "
                                 f"(at most {maximum} {unit})")


def _rate_active(value: BandwidthRate | None) -> bool:
    return value is not None and bool(value.average)


@dataclass(frozen=True)
class Shaping:
    """tc commands (argv without the leading ``tc``) that shape one device, the IFB device
    they need, and the commands that remove them again."""

    device: str
    setup: tuple[tuple[str, ...], ...]
    teardown: tuple[tuple[str, ...], ...]
    ifb: str | None = None


def _missing_ingress(features: TcFeatures) -> str:
    missing = [name for name, present in (
        ("the ingress qdisc (CONFIG_NET_SCH_INGRESS)", features.ingress),
        ("the u32 classifier (CONFIG_NET_CLS_U32)", features.u32),
        ("the mirred action (CONFIG_NET_ACT_MIRRED)", features.mirred),
        ("IFB devices (CONFIG_IFB)", features.ifb),
    ) if not present]
    return ", ".join(missing)


def device_shaping(
    device: str,
    bandwidth: Bandwidth | None,
    *,
    swapped: bool,
    hierarchical: bool,
    features: TcFeatures,
) -> Shaping | None:
    """The tc commands libvirt's virNetDevBandwidthSet stands for, with what this kernel has.

    ``swapped``: the guest's inbound is the device's egress (taps, bridges). ``hierarchical``:
    the HTB tree with room for floors (1:1 network, 1:2 default class), used on bridges.
    """
    if bandwidth is None:
        return None
    check_tc_range(bandwidth.inbound, f"the inbound bandwidth of {device}")
    check_tc_range(bandwidth.outbound, f"the outbound bandwidth of {device}")
    device_rx = bandwidth.outbound if swapped else bandwidth.inbound
    device_tx = bandwidth.inbound if swapped else bandwidth.outbound
    setup: list[tuple[str, ...]] = []
    teardown: list[tuple[str, ...]] = []
    ifb: str | None = None
    if _rate_active(device_tx):
        assert device_tx is not None and device_tx.average is not None
        if not features.htb:
            raise HostError(
                f"cannot shape the traffic {device} sends: the kernel lacks the HTB qdisc "
                "(CONFIG_NET_SCH_HTB)"
            )
        setup += _htb_tree(device, device_tx, hierarchical, features)
        teardown.append(("qdisc", "del", "dev", device, "root"))
    if _rate_active(device_rx):
        assert device_rx is not None and device_rx.average is not None
        if features.can_redirect and features.htb:
            ifb = ifb_name(device)
            setup += [
                ("qdisc", "add", "dev", device, "handle", INGRESS_HANDLE, "ingress"),
                ("filter", "add", "dev", device, "parent", INGRESS_HANDLE, "protocol", "all",
                 "prio", "1", "u32", "match", "u32", "0", "0",
                 "action", "mirred", "egress", "redirect", "dev", ifb),
            ]
            setup += _htb_tree(ifb, device_rx, False, features)
            teardown.append(("qdisc", "del", "dev", device, "ingress"))
        elif features.police and features.ingress and features.u32:
            # libvirt's own way: drop what exceeds the rate
            police_burst = device_rx.burst or min(device_rx.average, 0xFFFFFFFF // 1024)
            setup += [
                ("qdisc", "add", "dev", device, "handle", INGRESS_HANDLE, "ingress"),
                ("filter", "add", "dev", device, "parent", INGRESS_HANDLE, "protocol", "all",
                 "u32", "match", "u32", "0", "0", "police", "rate", rate(device_rx.average),
                 "burst", burst(police_burst), "mtu", "64kb", "drop", "flowid", ":1"),
            ]
            teardown.append(("qdisc", "del", "dev", device, "ingress"))
        else:
            raise HostError(
                f"cannot shape the traffic {device} receives: the kernel has neither "
                f"{_missing_ingress(features)} nor the police action (CONFIG_NET_ACT_POLICE)"
            )
    if not setup:
        return None
    return Shaping(device, tuple(setup), tuple(teardown), ifb)


def _htb_tree(
    device: str, tx: BandwidthRate, hierarchical: bool, features: TcFeatures
) -> list[tuple[str, ...]]:
    assert tx.average is not None
    average = rate(tx.average)
    peak = rate(tx.peak) if tx.peak else None
    commands: list[tuple[str, ...]] = [
        ("qdisc", "add", "dev", device, "root", "handle", HTB_MAJOR, "htb",
         "default", "2" if hierarchical else "1"),
    ]
    if hierarchical:
        commands.append(("class", "add", "dev", device, "parent", HTB_MAJOR, "classid", "1:1",
                         "htb", "rate", average, "ceil", peak or average,
                         "quantum", quantum(tx.average)))
    leaf = ["class", "add", "dev", device, "parent", "1:1" if hierarchical else HTB_MAJOR,
            "classid", "1:2" if hierarchical else "1:1", "htb", "rate", average]
    if peak:
        leaf += ["ceil", peak]
    if tx.burst:
        leaf += ["burst", burst(tx.burst)]
    leaf += ["quantum", quantum(tx.average)]
    commands.append(tuple(leaf))
    if features.sfq:
        commands.append(("qdisc", "add", "dev", device, "parent",
                         "1:2" if hierarchical else "1:1", "handle", "2:", "sfq",
                         "perturb", "10"))
    return commands


def network_shaping(net: Network, features: TcFeatures) -> Shaping | None:
    """A network's own <bandwidth>, on its bridge (own or host bridge), as libvirt sets it at
    start; None for networks without a bridge or without bandwidth."""
    # the family's capability, as the definition rules read it (this module sits below the
    # drivers: the engine, the planner and host/tc import it)
    if net.bandwidth is None or not net.bridge_name or not family_of(net).shapes_bridge:
        return None
    return device_shaping(net.bridge_name, net.bandwidth, swapped=True, hierarchical=True,
                          features=features)


def port_shaping(device: str, bandwidth: Bandwidth | None, *, tap: bool,
                 features: TcFeatures) -> Shaping | None:
    """A guest port's bandwidth on its own device: a tap (swapped) or a macvtap."""
    return device_shaping(device, bandwidth, swapped=tap, hierarchical=False, features=features)


def network_floor_rate(net: Network) -> int:
    """What the network guarantees in total: its inbound peak, else its inbound average."""
    assert net.bandwidth is not None and net.bandwidth.inbound is not None
    inbound = net.bandwidth.inbound
    return int(inbound.peak or inbound.average or 0)


def check_floor(net: Network, bandwidth: Bandwidth | None, mac: str, floor_sum: int) -> bool:
    """libvirt's networkCheckBandwidth for a new port; True when a floor class is needed.

    ``floor_sum`` is the sum of the floors of the ports already plugged. With libvirt's
    reasons, a floor this network cannot give is refused (PortError), one the ports already
    plugged leave no room for does not apply now (InvalidOperationError).
    """
    if not has_floor(bandwidth):
        return False
    assert bandwidth is not None and bandwidth.inbound is not None
    check_tc_range(bandwidth.inbound, f"the inbound bandwidth of port {mac}")
    if not family_of(net).floor:
        raise PortError(
            f"Invalid use of 'floor' on interface with MAC address {mac} - 'floor' is only "
            "supported for interface type 'network' with forward type 'nat', 'route', "
            "'open' or none"
        )
    if net.bandwidth is None or net.bandwidth.inbound is None:
        raise PortError(
            f"Invalid use of 'floor' on interface with MAC address {mac} - network "
            f"'{net.name}' has no inbound QoS set"
        )
    inbound = net.bandwidth.inbound
    new_sum = floor_sum + int(bandwidth.inbound.floor or 0)
    if inbound.peak:
        if new_sum > inbound.peak:
            raise InvalidOperationError(
                f"Cannot plug '{mac}' interface into '{net.bridge_name}' because new combined "
                f"inbound floor={new_sum} would overcommit peak={inbound.peak} on network "
                f"'{net.name}'"
            )
    elif new_sum > (inbound.average or 0):
        raise InvalidOperationError(
            f"Cannot plug '{mac}' interface into '{net.bridge_name}' because new combined "
            f"inbound floor={new_sum} would overcommit average={inbound.average} on network "
            f"'{net.name}'"
        )
    return True


def next_class_id(used: set[int]) -> int:
    """The lowest free floor class id (libvirt's class-id bitmap; 0-2 are reserved)."""
    for candidate in range(FIRST_FLOOR_CLASS, MAX_FLOOR_CLASS + 1):
        if candidate not in used:
            return candidate
    raise HostError(f"no free tc class id left (at most {MAX_FLOOR_CLASS - 2} ports with a floor)")


def _mac_matches(mac: str) -> tuple[str, ...]:
    octets = mac.lower().split(":")
    low = "0x" + "".join(octets[2:6])
    high = "0x" + "".join(octets[0:2])
    # the destination MAC, addressed backwards from the IP header as libvirt does
    return ("match", "u16", "0x0800", "0xffff", "at", "-2",
            "match", "u32", low, "0xffffffff", "at", "-12",
            "match", "u16", high, "0xffff", "at", "-14")


def floor_commands(
    net: Network, class_id: int, mac: str, floor: int, port_inbound_average: int | None,
    floor_sum_after: int, features: TcFeatures,
) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Setup and teardown for one port's guaranteed share on the network's bridge.

    The setup adds the port's class (rate = floor, ceil = the network's rate) and its filter,
    then lowers the default class 1:2 to what is left; the teardown does the reverse and
    gives 1:2 back what the port took.
    """
    bridge = net.bridge_name
    assert bridge is not None
    total = network_floor_rate(net)
    ceil = rate(total)
    class_name = f"1:{class_id:x}"
    handle = f"800::{class_id:x}"
    quantum_rate = port_inbound_average if port_inbound_average else floor
    setup: list[tuple[str, ...]] = [
        ("class", "add", "dev", bridge, "parent", "1:1", "classid", class_name, "htb",
         "rate", rate(floor), "ceil", ceil, "quantum", quantum(quantum_rate)),
    ]
    if features.sfq:
        setup.append(("qdisc", "add", "dev", bridge, "parent", class_name, "handle",
                      f"{class_id:x}:", "sfq", "perturb", "10"))
    setup.append(("filter", "add", "dev", bridge, "parent", HTB_MAJOR, "protocol", "ip",
                  "prio", FLOOR_FILTER_PRIO, "handle", handle, "u32", *_mac_matches(mac),
                  "flowid", class_name))
    setup.append(_default_class_rate(bridge, net, total - floor_sum_after))
    teardown: list[tuple[str, ...]] = [
        ("filter", "del", "dev", bridge, "parent", HTB_MAJOR, "protocol", "ip",
         "prio", FLOOR_FILTER_PRIO, "handle", handle, "u32"),
    ]
    if features.sfq:
        teardown.append(("qdisc", "del", "dev", bridge, "parent", class_name,
                         "handle", f"{class_id:x}:"))
    teardown.append(("class", "del", "dev", bridge, "classid", class_name))
    teardown.append(_default_class_rate(bridge, net, total - (floor_sum_after - floor)))
    return setup, teardown


def _default_class_rate(bridge: str, net: Network, kbytes: int) -> tuple[str, ...]:
    assert net.bandwidth is not None and net.bandwidth.inbound is not None
    total = network_floor_rate(net)
    return ("class", "change", "dev", bridge, "parent", "1:1", "classid", "1:2", "htb",
            "rate", rate(max(kbytes, MIN_RATE_KBPS)), "ceil", rate(total),
            "quantum", quantum(net.bandwidth.inbound.average or total))


def render(commands: tuple[tuple[str, ...], ...] | list[tuple[str, ...]]) -> list[str]:
    return ["tc " + " ".join(argv) for argv in commands]


# --- actions ----------------------------------------------------------------------------


def _tc_lists(commands: Any) -> list[list[str]]:
    return [list(argv) for argv in commands]


@dataclass
class ApplyShaping(Action):
    """Shape one device with tc; undo removes the qdiscs and the IFB device it created."""

    kind: ClassVar[str] = "apply-shaping"
    device: str
    setup: list[list[str]]
    teardown: list[list[str]]
    ifb: str | None = None
    what: str = "bandwidth"

    @classmethod
    def of(cls, shaping: Shaping, what: str) -> ApplyShaping:
        return cls(shaping.device, _tc_lists(shaping.setup), _tc_lists(shaping.teardown),
                   shaping.ifb, what)

    def describe(self) -> str:
        via = f" (inbound to the host through {self.ifb})" if self.ifb else ""
        return f"shape {self.what} on {self.device} with tc{via}"

    def commands(self) -> list[str]:
        lines = []
        if self.ifb:
            lines += [f"ip link add {self.ifb} type ifb", f"ip link set dev {self.ifb} up"]
        return lines + render([tuple(argv) for argv in self.setup])

    def apply(self, host: Host) -> None:
        if self.ifb:
            host.create_ifb(self.ifb)
        try:
            host.tc_batch(self.setup, what=f"shape {self.what} on {self.device}")
        except BaseException:
            self.undo(host)
            raise

    def undo(self, host: Host) -> None:
        host.tc_batch(self.teardown, what=f"remove the shaping of {self.device}",
                      missing_ok=True)
        if self.ifb:
            host.delete_link(self.ifb)


@dataclass
class PlugFloor(Action):
    """A port's guaranteed inbound share on its network's bridge (libvirt's 'floor')."""

    kind: ClassVar[str] = "plug-floor"
    bridge: str
    class_id: int
    mac: str
    floor: int
    setup: list[list[str]] = field(default_factory=list)
    teardown: list[list[str]] = field(default_factory=list)
    applied: bool = field(default=False, metadata={RECORDED: True})

    def describe(self) -> str:
        return (f"guarantee {self.floor} kB/s inbound to {self.mac} on {self.bridge} "
                f"(class 1:{self.class_id:x})")

    def commands(self) -> list[str]:
        return render([tuple(argv) for argv in self.setup])

    def apply(self, host: Host) -> None:
        try:
            host.tc_batch(self.setup, what=f"plug the floor of {self.mac} into {self.bridge}")
        except BaseException:
            self.undo(host)
            raise
        self.applied = True

    def undo(self, host: Host) -> None:
        host.tc_batch(self.teardown, what=f"unplug the floor of {self.mac} from {self.bridge}",
                      missing_ok=True)


__all__ = [
    "ApplyShaping",
    "BandwidthError",
    "PlugFloor",
    "Shaping",
    "TcFeatures",
    "check_floor",
    "device_shaping",
    "floor_commands",
    "ifb_name",
    "network_shaping",
    "next_class_id",
    "port_shaping",
]
