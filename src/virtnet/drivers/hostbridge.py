"""Forward mode 'bridge' with <bridge name='...'/>: guests join a bridge the host already has.

Nothing is created or removed: the plan only records the attachment, and preflight checks
that the bridge exists and is a bridge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from virtnet.drivers.base import Driver
from virtnet.errors import Problem
from virtnet.model import ForwardMode, MacTableManager, Network
from virtnet.plan import AttachHostBridge, Plan

if TYPE_CHECKING:
    from virtnet.host.facts import HostFacts
    from virtnet.paths import StatePaths


class HostBridgeDriver(Driver):
    name: ClassVar[str] = "hostbridge"
    modes: ClassVar[tuple[ForwardMode, ...]] = (ForwardMode.BRIDGE,)

    def handles(self, net: Network) -> bool:
        # without a bridge name, forward mode 'bridge' means macvtap (the direct driver)
        return net.forward_mode is ForwardMode.BRIDGE and net.bridge_name is not None

    def preflight(self, net: Network, facts: HostFacts) -> list[Problem]:
        bridge = net.bridge_name
        path = "/network/bridge/@name"
        if not bridge:
            return [Problem(path, "a host bridge network needs <bridge name='...'/>")]
        link = facts.link(bridge)
        if link is None:
            return [Problem(path, f"bridge {bridge} does not exist on this host", bridge)]
        if link.kind != "bridge":
            kind = link.kind or "a device"
            return [Problem(path, f"{bridge} is {kind}, not a bridge", bridge)]
        if net.bridge is not None and net.bridge.mac_table_manager is MacTableManager.LIBVIRT:
            return [
                Problem(
                    "/network/bridge/@macTableManager",
                    "macTableManager='libvirt' would switch VLAN filtering on for the host's "
                    f"own bridge {bridge}; virtnet does not change a host bridge",
                    "libvirt",
                )
            ]
        return []

    def plan_start(self, net: Network, facts: HostFacts, paths: StatePaths) -> Plan:
        bridge = net.bridge_name
        if not bridge:
            raise ValueError(f"network {net.name} has no bridge name")
        return Plan(net.name, [AttachHostBridge(network=net.name, bridge=bridge)])


DRIVER = HostBridgeDriver()

__all__ = ["DRIVER", "HostBridgeDriver"]
