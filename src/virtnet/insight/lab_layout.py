"""What the lab builds around a network, decided from the definition alone: the lab's options
and what it refuses to build, the uplinks and their ports on the LAN switch, where the host's
LAN address goes, the LAN, upstream and scratch subnets (none overlapping the network's own),
the guests' MACs and their static addresses. No effects: :mod:`virtnet.insight.lab` builds it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from virtnet.host.sandbox import DHCP_CLIENTS, LabError
from virtnet.spec.model import ForwardMode, Network
from virtnet.insight.reach_terms import bridge_address, ipv4_network, pool

SWITCH_BRIDGE = "lan"
LAN_ROUTER_HOST = 100  # the LAN router's host number in the LAN subnet
HOST_HOST = 1  # the host's
FIRST_GUEST_HOST = 10  # guest i gets host number FIRST_GUEST_HOST + i when static
LAN_CANDIDATES = ("10.77.0.0/24", "10.78.0.0/24", "172.30.77.0/24")
UPSTREAM_CANDIDATES = ("198.51.100.0/24", "203.0.113.0/24")
SCRATCH_CANDIDATES = ("172.31.99.0/24", "10.79.0.0/24")  # guests of a bridge without IPv4
PASSTHROUGH_HOST_LINK = "lanmgmt"
GUEST_MAC_PREFIX = "52:54:00:77"


@dataclass
class LabOptions:
    guests: int = 2
    hairpin: bool = False
    dhcp_client: str = "udhcpc"
    probe_attempts: int = 2
    probe_timeout: float = 0.5  # seconds per attempt: a "no" costs attempts x timeout



def _pick_subnet(candidates: tuple[str, ...], taken: list[ipaddress.IPv4Network]
                 ) -> ipaddress.IPv4Network:
    for text in candidates:
        subnet = ipaddress.IPv4Network(text)
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise LabError("every lab subnet overlaps the network's own addresses")


def subnet_host(subnet: ipaddress.IPv4Network, number: int) -> ipaddress.IPv4Address:
    """The address with host number NUMBER in SUBNET."""
    return subnet.network_address + number


def check_lab_definition(net: Network, options: LabOptions) -> None:
    """LabError unless the lab can build NET with OPTIONS."""
    if options.guests < 1:
        raise LabError("a lab needs at least one guest")
    if options.dhcp_client not in DHCP_CLIENTS:
        raise LabError(f"unknown DHCP client {options.dhcp_client!r}")
    if net.forward_mode is ForwardMode.HOSTDEV:
        raise LabError("forward mode 'hostdev' needs SR-IOV hardware; the lab cannot "
                       "emulate virtual functions")
    if net.forward is not None and net.forward.pfs:
        raise LabError("a pool given by <pf dev=...> needs SR-IOV hardware; name the "
                       "interfaces with <interface dev=...> for the lab")


def guest_macs(net: Network, count: int, token: str) -> list[str]:
    """COUNT guest MACs: NET's reserved ones first (so reservations are exercised), then
    lab MACs (TOKEN tells labs apart)."""
    reserved = [h.mac for ip in net.ipv4_defs() for h in ip.hosts if h.mac]
    macs = [m.lower() for m in reserved]
    index = 1
    while len(macs) < count:
        mac = f"{GUEST_MAC_PREFIX}:{token[:2]}:{index:02x}"
        if mac not in macs:
            macs.append(mac)
        index += 1
    return macs[:count]


@dataclass
class LabLayout:
    """What the lab builds around a network, as names and addresses (from the definition
    alone): the uplinks and their ports on the LAN switch, where the host's LAN address
    goes, and LAN, upstream and scratch subnets that overlap none of the network's own."""

    uplinks: list[str]
    switch_ports: dict[str, str]  # uplink -> its port on the switch
    host_link: str
    lan_subnet: ipaddress.IPv4Network
    upstream_subnet: ipaddress.IPv4Network
    scratch_subnet: ipaddress.IPv4Network  # for guests of a bridge without IPv4

    @classmethod
    def of(cls, net: Network) -> LabLayout:
        taken = [n for n in (ipv4_network(net),) if n is not None]
        taken += [r.network for r in net.routes if isinstance(r.network, ipaddress.IPv4Network)]
        lan_subnet = _pick_subnet(LAN_CANDIDATES, taken)
        uplinks = cls._uplink_names(net)
        return cls(
            uplinks=uplinks,
            switch_ports={uplink: f"sw{i}" for i, uplink in enumerate(uplinks, 1)},
            host_link=cls._host_link_name(net, uplinks),
            lan_subnet=lan_subnet,
            upstream_subnet=_pick_subnet(UPSTREAM_CANDIDATES, taken + [lan_subnet]),
            scratch_subnet=_pick_subnet(SCRATCH_CANDIDATES, taken + [lan_subnet]),
        )

    @staticmethod
    def _uplink_names(net: Network) -> list[str]:
        names = list(pool(net))
        if net.forward is not None and net.forward.dev and net.forward.dev not in names:
            names.insert(0, net.forward.dev)
        if not names:
            names = ["eth1"]
        for name in names:
            if not 0 < len(name) <= 15 or "/" in name or name in ("lo", SWITCH_BRIDGE):
                raise LabError(f"the lab cannot create an uplink named {name!r}")
        return names

    @staticmethod
    def _host_link_name(net: Network, uplinks: list[str]) -> str:
        """Where the host's LAN address goes."""
        if net.forward_mode is ForwardMode.BRIDGE and net.bridge_name:
            return net.bridge_name
        if net.forward_mode is ForwardMode.PASSTHROUGH:
            return PASSTHROUGH_HOST_LINK
        return uplinks[0]

    def static_address(self, net: Network, index: int
                       ) -> tuple[str, ipaddress.IPv4Address | None]:
        """The address (with its prefix) and the gateway of guest INDEX on NET's bridge when
        it does not ask DHCP."""
        if net.forward_mode is ForwardMode.BRIDGE:  # a host bridge: a LAN machine
            subnet, gateway = self.lan_subnet, self.lan_ip
        else:
            gateway_if = bridge_address(net)
            if gateway_if is None:
                subnet, gateway = self.scratch_subnet, None
            else:
                subnet, gateway = gateway_if.network, gateway_if.ip
        number = FIRST_GUEST_HOST + index
        address = subnet_host(subnet, number)
        while gateway is not None and address == gateway:
            number += 1
            address = subnet_host(subnet, number)
        return f"{address}/{subnet.prefixlen}", gateway

    @property
    def host_lan_ip(self) -> ipaddress.IPv4Address:
        return subnet_host(self.lan_subnet, HOST_HOST)

    @property
    def lan_ip(self) -> ipaddress.IPv4Address:
        return subnet_host(self.lan_subnet, LAN_ROUTER_HOST)

    @property
    def upstream_ip(self) -> ipaddress.IPv4Address:
        return subnet_host(self.upstream_subnet, 2)


__all__ = [
    "FIRST_GUEST_HOST",
    "PASSTHROUGH_HOST_LINK",
    "SWITCH_BRIDGE",
    "LabLayout",
    "LabOptions",
    "check_lab_definition",
    "guest_macs",
    "subnet_host",
]
