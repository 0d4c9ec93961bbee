"""Forward mode 'bridge' with <bridge name='...'/>: guests join a bridge the host already has.

Nothing is created or removed: the plan only records the attachment, and preflight checks
that the bridge exists and is a bridge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from virtnet.plan.drivers.base import Driver, NetworkTopology, Pool, refuse_virtualport
from virtnet.errors import Problem
from virtnet.spec.model import MacTableManager, Network, NetworkFamily, VirtualPortType
from virtnet.plan.actions import AttachHostBridge
from virtnet.plan.plans import Plan
from virtnet.spec.portdef import PlugType

if TYPE_CHECKING:
    from virtnet.host.facts import HostFacts
    from virtnet.paths import StatePaths
    from virtnet.spec.portdef import PortDef
    from virtnet.spec.portdef import PoolUsage


class HostBridgeDriver(Driver):
    name: ClassVar[str] = "hostbridge"
    # forward mode 'bridge' with a bridge name; without one it means macvtap (direct)
    family: ClassVar[NetworkFamily] = NetworkFamily.HOST_BRIDGE

    def topology(self, net: Network) -> NetworkTopology:
        return NetworkTopology(label="bridge (host bridge)", title="bridge: host bridge",
                               host_bridge=net.bridge_name)

    def plug(self, net: Network, port: PortDef, usage: PoolUsage, pool: Pool) -> None:
        # a tap on the host's bridge: libvirt's plug type 'bridge'
        port.plug_type = PlugType.BRIDGE
        port.bridge = net.bridge_name
        port.mac_table_manager = net.bridge.mac_table_manager if net.bridge else None
        refuse_virtualport(net, port, (VirtualPortType.OPENVSWITCH,), "a bridge device")

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
