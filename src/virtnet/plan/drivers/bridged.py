"""Networks on a bridge of virtnet's own: forward mode none (isolated), nat, route and open.

The start plan follows libvirt 9.0's order (networkStartNetworkVirtual): create and
configure the bridge, set its IPv6 knobs, load the firewall, add the addresses, bring the
bridge up, add the static routes, switch on forwarding, then write dnsmasq's files and start
it. Undo runs the other way round.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from virtnet.render import nft as firewall
from virtnet.plan.drivers.base import (
    Capabilities,
    Driver,
    NetworkTopology,
    Pool,
    refuse_virtualport,
)
from virtnet.errors import Problem
from virtnet.spec.model import ForwardMode, MacTableManager, Network, NetworkFamily
from virtnet.plan.actions import (
    Action,
    AddAddress,
    AddRoute,
    CreateBridge,
    LinkUp,
    LoadFirewall,
    SetSysctl,
    StartDnsmasq,
    WriteFile,
)
from virtnet.plan.plans import Plan
from virtnet.paths import DnsmasqPaths
from virtnet.spec.portdef import PlugType
from virtnet.render.dnsmasq import DnsmasqCaps, needs_dnsmasq, render_all

if TYPE_CHECKING:
    from virtnet.host.facts import HostFacts
    from virtnet.paths import StatePaths
    from virtnet.spec.portdef import PortDef
    from virtnet.spec.portdef import PoolUsage

# What dnsmasq's files are written with; the conf may hold secrets-adjacent options.
DNSMASQ_CONF_MODE = 0o600
DNSMASQ_HOSTS_MODE = 0o644
# The metric of a static <route> that gives none (libvirt's virNetDevIPRouteGetMetric).
DEFAULT_ROUTE_METRIC = 1
# Port forwards DNAT to guests the uplink can address; isolated has no uplink, and an open
# network's firewall is its administrator's.
FORWARDS_MODES = (ForwardMode.NAT, ForwardMode.ROUTE)
# How the bridge reaches its uplink, as the graph labels that edge (isolated: not at all).
UPLINK_VIA = {ForwardMode.NAT: "NAT (masquerade)", ForwardMode.ROUTE: "routed",
              ForwardMode.OPEN: "routed, no firewall"}


class BridgedDriver(Driver):
    name: ClassVar[str] = "bridged"
    family: ClassVar[NetworkFamily] = NetworkFamily.OWN_BRIDGE

    # --- what the network is ------------------------------------------------------------

    def capabilities(self, net: Network) -> Capabilities:
        mode = net.forward_mode
        # a network with a firewall of ours gets other firewalls opened for it at start; an
        # open network is, by definition, left to the administrator's firewall
        return replace(super().capabilities(net), forwards=mode in FORWARDS_MODES,
                       coexistence=firewall.firewall_needed(net))

    def topology(self, net: Network) -> NetworkTopology:
        mode = net.forward_mode
        isolated = mode is ForwardMode.NONE
        return NetworkTopology(
            label="isolated" if isolated else mode.value,
            title="isolated (no forwarding)" if isolated else mode.value,
            own_bridge=True,
            routed=mode in (ForwardMode.ROUTE, ForwardMode.OPEN),
            uplink_via=UPLINK_VIA.get(mode),
        )

    def plug(self, net: Network, port: PortDef, usage: PoolUsage, pool: Pool) -> None:
        # a tap on the network's bridge: libvirt's plug type 'network'
        port.plug_type = PlugType.NETWORK
        port.bridge = net.bridge_name
        port.mac_table_manager = net.bridge.mac_table_manager if net.bridge else None
        refuse_virtualport(net, port, (), "IP forwarding")

    # --- preflight ------------------------------------------------------------------------

    def preflight(self, net: Network, facts: HostFacts) -> list[Problem]:
        problems: list[Problem] = []
        bridge = net.bridge_name
        if not bridge:
            problems.append(
                Problem("/network/bridge/@name", "the network has no bridge name", None)
            )
        elif facts.has_link(bridge):
            problems.append(
                Problem(
                    "/network/bridge/@name",
                    f"interface {bridge} already exists on this host",
                    bridge,
                )
            )
        problems += facts.subnet_collisions(net)  # the one judge, shared with doctor
        problems += self._forward_problems(net, facts)
        if net.ipv6_defs() and not facts.ipv6:
            problems.append(
                Problem("/network/ip", "the network has IPv6 addresses but the kernel has IPv6 disabled")
            )
        if firewall.firewall_needed(net) and not facts.nftables:
            problems.append(
                Problem("/network/forward", "nftables is not installed (libnftables or nft)")
            )
        if _needs_dnsmasq(net) and not facts.dnsmasq:
            problems.append(
                Problem("/network/ip", "dnsmasq is not installed; it serves DHCP and DNS here")
            )
        return problems

    def _forward_problems(self, net: Network, facts: HostFacts) -> list[Problem]:
        problems = []
        mode = net.forward_mode
        dev = firewall.forward_dev(net)
        if dev and mode in (ForwardMode.NAT, ForwardMode.ROUTE, ForwardMode.OPEN):
            if not facts.has_link(dev):
                problems.append(
                    Problem("/network/forward/@dev", f"forward device {dev} does not exist", dev)
                )
        if mode is not ForwardMode.NONE and net.ipv6_defs():
            # Enabling IPv6 forwarding makes the kernel drop routes learned from router
            # advertisements on interfaces whose accept_ra is not 2.
            at_risk = sorted(link for link, value in facts.ra_accept.items() if value != 2)
            if at_risk:
                problems.append(
                    Problem(
                        "/network/ip",
                        "enabling IPv6 forwarding would flush the routes learned from router "
                        "advertisements on " + ", ".join(at_risk) + "; set "
                        "net.ipv6.conf.IFACE.accept_ra=2 on them first",
                    )
                )
        return problems

    # --- plan -----------------------------------------------------------------------------

    def plan_start(
        self,
        net: Network,
        facts: HostFacts,
        paths: StatePaths,
        *,
        caps: DnsmasqCaps | None = None,
    ) -> Plan:
        bridge = net.bridge_name
        if not bridge:
            raise ValueError(f"network {net.name} has no bridge name")
        bridge_def = net.bridge
        actions: list[Action] = [
            CreateBridge(
                name=bridge,
                stp=bridge_def.stp if bridge_def is not None else True,
                delay=bridge_def.delay if bridge_def is not None else 0,
                mac=net.mac,
                mtu=net.mtu,
                vlan_filtering=(
                    bridge_def is not None
                    and bridge_def.mac_table_manager is MacTableManager.LIBVIRT
                ),
            )
        ]
        actions += self._ipv6_knobs(net, bridge, facts)
        for ipdef in net.ips:
            interface = ipdef.interface
            if interface is not None:
                actions.append(AddAddress(link=bridge, address=str(interface)))
        if _needs_dnsmasq(net):
            # Once the bridge has its addresses: dnsmasq spends its start-up in a process of
            # its own while the steps below run (StartDnsmasq.overlaps); libvirt starts it
            # last, and the network is the same once the start is done. Not before the
            # addresses: with bind-dynamic, a port it cannot bind on an address that comes
            # later is only logged, and the network would run without DNS; on an address
            # that is there when it starts, dnsmasq fails, and so does the start.
            actions += self._dnsmasq_actions(net, facts, paths, caps)
        if firewall.firewall_needed(net):
            actions.append(
                LoadFirewall(
                    network=net.name,
                    family=firewall.FAMILY,
                    table=firewall.TABLE,
                    ruleset=firewall.render_ruleset(net),
                    teardown=firewall.render_teardown(net),
                    chain_prefix=firewall.CHAIN_PREFIX,
                )
            )
        actions.append(LinkUp(link=bridge, down_on_undo=False))  # CreateBridge's undo deletes it
        for route in net.routes:
            # libvirt adds only routes with a gateway (the schema requires one)
            if route.network is not None and route.gateway is not None:
                actions.append(
                    AddRoute(
                        link=bridge,
                        destination=str(route.network),
                        gateway=str(route.gateway),
                        # libvirt puts a route without a metric at metric 1 (not the
                        # kernel's default 0 / 1024), so it wins over host routes
                        metric=route.metric or DEFAULT_ROUTE_METRIC,
                    )
                )
        if net.forward_mode is not ForwardMode.NONE:
            # Global switches: never turned back off (other networks may rely on them).
            if net.ipv4_defs():
                actions.append(SetSysctl("net/ipv4/ip_forward", "1", restore=False))
            if net.ipv6_defs():
                actions.append(SetSysctl("net/ipv6/conf/all/forwarding", "1", restore=False))
        return Plan(net.name, actions)

    def _ipv6_knobs(self, net: Network, bridge: str, facts: HostFacts) -> list[Action]:
        """libvirt: disable IPv6 on a bridge without IPv6 addresses (enable it otherwise, as
        the default is unknown), and never let guests' router advertisements configure it."""
        if not facts.ipv6:
            return []
        conf = f"net/ipv6/conf/{bridge}"
        wants_v6 = bool(net.ipv6_defs())
        return [
            SetSysctl(f"{conf}/disable_ipv6", "0" if wants_v6 else "1", missing_ok=True),
            SetSysctl(f"{conf}/accept_ra", "0", missing_ok=True),
            SetSysctl(f"{conf}/autoconf", "0", missing_ok=True),
        ]

    def _dnsmasq_actions(
        self,
        net: Network,
        facts: HostFacts,
        paths: StatePaths,
        caps: DnsmasqCaps | None,
    ) -> list[Action]:
        binary = facts.dnsmasq or "dnsmasq"
        dnsmasq_paths = DnsmasqPaths.for_state(paths)
        files = render_all(net, dnsmasq_paths, caps or DnsmasqCaps(binary=binary))
        pid_file = dnsmasq_paths.pid_file(net.name) or paths.dnsmasq_pidfile(net.name)
        conf = dnsmasq_paths.conf(net.name)
        return [
            WriteFile(str(conf), files.conf, DNSMASQ_CONF_MODE),
            WriteFile(str(dnsmasq_paths.hostsfile(net.name)), files.hostsfile, DNSMASQ_HOSTS_MODE),
            WriteFile(str(dnsmasq_paths.addnhosts(net.name)), files.addnhosts, DNSMASQ_HOSTS_MODE),
            StartDnsmasq(
                network=net.name,
                conf_file=str(conf),
                pid_file=str(pid_file),
                lease_file=str(dnsmasq_paths.leases(net.name)),
                binary=binary,
            ),
        ]


def _needs_dnsmasq(net: Network) -> bool:
    return needs_dnsmasq(net)


DRIVER = BridgedDriver()

__all__ = ["DRIVER", "BridgedDriver"]
