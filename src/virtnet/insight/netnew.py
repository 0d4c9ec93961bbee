"""net-new: a network definition from a few virt-install-like flags, without writing XML.

:func:`build_network` turns :class:`NewNetworkOptions` into a model (pure); the model is
formatted and parsed back through the same parser and validator a hand-written file meets,
so what net-new defines is exactly what ``net-define`` of its printed XML would define.

``--subnet auto`` picks the first private /24 from :data:`IPV4_CANDIDATES` that overlaps no
address or route of the host and no subnet of another virtnet network; ``--ipv6 auto`` picks
a unique-local /64 (RFC 4193) whose global ID is derived from the network's name, so the
same name gets the same prefix on every host unless that one is taken.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from virtnet.errors import VirtnetError
from virtnet.host.libvirt import LIBVIRT_NETWORK_DIRS
from virtnet.spec.libvirtnets import libvirt_subnets
from virtnet.spec.model import (
    Bridge,
    DhcpRange,
    Domain,
    Forward,
    ForwardInterface,
    ForwardMode,
    IpDef,
    Network,
)

if TYPE_CHECKING:
    from virtnet.service.engine import Engine
    from virtnet.host.facts import HostFacts

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MODES = ("nat", "route", "isolated", "open", "bridge", "macvtap")
MACVTAP_MODES = ("bridge", "private", "vepa", "passthrough")
OWN_BRIDGE_MODES = ("nat", "route", "isolated", "open")
AUTO = "auto"
ULA_SUBNETS_TRIED = 256


def _ipv4_candidates() -> Iterator[ipaddress.IPv4Network]:
    # libvirt's default first, then the rest of 192.168/16, then 10/8's low /24s
    for third in [*range(122, 256), *range(0, 122)]:
        yield ipaddress.IPv4Network(f"192.168.{third}.0/24")
    for second in range(0, 256):
        for third in range(0, 256):
            yield ipaddress.IPv4Network(f"10.{second}.{third}.0/24")


IPV4_CANDIDATES = _ipv4_candidates


class NetNewError(VirtnetError):
    """The flags of net-new do not describe a network (or no free subnet was found)."""


@dataclass
class NewNetworkOptions:
    name: str
    mode: str = "nat"
    subnet: str | None = None  # CIDR, "auto", or None (auto for modes with their own bridge)
    ipv6: str | None = None  # CIDR, "auto", or None (no IPv6)
    dhcp: bool = True
    domain: str | None = None
    dev: str | None = None  # nat/route: the uplink; macvtap: the parent interface
    bridge: str | None = None  # own-bridge modes: its name; bridge mode: the host bridge
    macvtap_mode: str = "bridge"


def ula_candidates(name: str) -> Iterator[ipaddress.IPv6Network]:
    """/64s of one ULA /48 (fd + 40-bit global ID from NAME's hash), subnet 0 first."""
    global_id = hashlib.sha256(name.encode()).digest()[:5]
    prefix = bytes([0xFD]) + global_id
    for subnet in range(ULA_SUBNETS_TRIED):
        raw = prefix + subnet.to_bytes(2, "big") + bytes(8)
        yield ipaddress.IPv6Network((raw, 64))


def pick_free(candidates: Iterable[IPNetwork], taken: Iterable[IPNetwork]) -> IPNetwork:
    """The first of CANDIDATES that overlaps none of TAKEN (pure)."""
    taken = list(taken)
    for candidate in candidates:
        if not any(candidate.version == other.version and candidate.overlaps(other)
                   for other in taken):
            return candidate
    raise NetNewError("no free subnet found: every candidate overlaps a host address, a "
                      "route or another network (give --subnet CIDR)")


def taken_networks(facts: HostFacts, others: Iterable[Network]) -> list[IPNetwork]:
    """What a new subnet must not overlap: the host's addresses and (non-default) routes,
    and the subnets of other networks."""
    taken: list[IPNetwork] = [address.interface.network for address in facts.addresses]
    taken += [route.destination for route in facts.routes if route.destination.prefixlen > 0]
    for net in others:
        taken += [ip.interface.network for ip in net.ips if ip.interface is not None]
    return taken


def _parse_cidr(text: str, version: int, flag: str) -> ipaddress.IPv4Interface | \
        ipaddress.IPv6Interface:
    try:
        interface = ipaddress.ip_interface(text)
    except ValueError:
        raise NetNewError(f"{flag} {text!r} is not an address/prefix (CIDR)") from None
    if interface.version != version:
        raise NetNewError(f"{flag} {text!r} is not an IPv{version} CIDR")
    return interface


def _gateway(subnet: IPNetwork | ipaddress.IPv4Interface | ipaddress.IPv6Interface
             ) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """The bridge's address: as given when the CIDR names a host, else the first one."""
    if isinstance(subnet, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        if subnet.ip != subnet.network.network_address:
            return subnet
        subnet = subnet.network
    return ipaddress.ip_interface(f"{subnet.network_address + 1}/{subnet.prefixlen}")


def _ipv4_def(interface: ipaddress.IPv4Interface, dhcp: bool) -> IpDef:
    network = interface.network
    if network.num_addresses < 4:
        raise NetNewError(f"subnet {network} is too small for a network (at most /30)")
    ip = IpDef(address=interface.ip, netmask=network.netmask)
    if dhcp:
        # every host address except the bridge's own (and the network/broadcast addresses)
        first = network.network_address + 1
        last = network.broadcast_address - 1
        start = first + 1 if interface.ip == first else first
        end = last - 1 if interface.ip == last else last
        if start <= end:
            ip.ranges = [DhcpRange(start, end)]
    return ip


def build_network(options: NewNetworkOptions, ipv4: ipaddress.IPv4Interface | None,
                  ipv6: ipaddress.IPv6Interface | None) -> Network:
    """The model net-new defines, given the resolved addresses (pure)."""
    mode = options.mode
    net = Network(name=options.name)
    if mode in OWN_BRIDGE_MODES:
        if mode != "isolated":
            forward = Forward(mode=ForwardMode(mode))
            if options.dev is not None:
                if mode == "open":
                    raise NetNewError("--dev is not used in mode open")
                forward.dev = options.dev
                forward.interfaces = [ForwardInterface(dev=options.dev)]
            net.forward = forward
        elif options.dev is not None:
            raise NetNewError("--dev is not used in mode isolated")
        net.bridge = Bridge(name=options.bridge, stp=True, delay=0)
        if ipv4 is not None:
            net.ips.append(_ipv4_def(ipv4, options.dhcp))
        if ipv6 is not None:
            net.ips.append(IpDef(family="ipv6", address=ipv6.ip, prefix=ipv6.network.prefixlen))
        if options.domain is not None:
            net.domain = Domain(name=options.domain)
        return net
    if options.domain is not None:
        raise NetNewError(f"--domain needs a network with its own bridge, not mode {mode}")
    if mode == "bridge":
        if options.bridge is None:
            raise NetNewError("mode bridge needs --bridge BR (an existing host bridge)")
        if options.dev is not None:
            raise NetNewError("mode bridge takes --bridge, not --dev (use --mode macvtap)")
        net.forward = Forward(mode=ForwardMode.BRIDGE)
        net.bridge = Bridge(name=options.bridge)
        return net
    if mode == "macvtap":
        if options.dev is None:
            raise NetNewError("mode macvtap needs --dev IF (the parent interface)")
        if options.bridge is not None:
            raise NetNewError("mode macvtap takes --dev, not --bridge")
        if options.macvtap_mode not in MACVTAP_MODES:
            raise NetNewError(f"unknown --macvtap-mode {options.macvtap_mode!r}")
        net.forward = Forward(mode=ForwardMode(options.macvtap_mode), dev=options.dev,
                              interfaces=[ForwardInterface(dev=options.dev)])
        return net
    raise NetNewError(f"unknown --mode {mode!r} (one of {', '.join(MODES)})")


def resolve_addresses(options: NewNetworkOptions, taken: list[IPNetwork]
                      ) -> tuple[ipaddress.IPv4Interface | None, ipaddress.IPv6Interface | None]:
    """The bridge addresses from --subnet / --ipv6 (auto: the first free candidate)."""
    if options.mode not in OWN_BRIDGE_MODES:
        if options.subnet is not None or options.ipv6 is not None:
            raise NetNewError(f"mode {options.mode} uses the host's own addressing: "
                              "--subnet and --ipv6 do not apply")
        return None, None
    ipv4: ipaddress.IPv4Interface | None
    subnet = options.subnet if options.subnet is not None else AUTO
    if subnet == AUTO:
        ipv4 = _gateway(pick_free(IPV4_CANDIDATES(), taken))  # type: ignore[assignment]
    else:
        ipv4 = _gateway(_parse_cidr(subnet, 4, "--subnet"))  # type: ignore[assignment]
    ipv6: ipaddress.IPv6Interface | None = None
    if options.ipv6 == AUTO:
        ipv6 = _gateway(pick_free(ula_candidates(options.name), taken))  # type: ignore[assignment]
    elif options.ipv6 is not None:
        ipv6 = _gateway(_parse_cidr(options.ipv6, 6, "--ipv6"))  # type: ignore[assignment]
        if ipv6.network.prefixlen != 64:  # type: ignore[union-attr]
            raise NetNewError("--ipv6 needs a /64 (dnsmasq's router advertisements and "
                              "DHCPv6 work on /64 only)")
    return ipv4, ipv6


def new_network(engine: Engine, options: NewNetworkOptions, *, define: bool = True,
                libvirt_dirs: Iterable[Path] = LIBVIRT_NETWORK_DIRS) -> Network:
    """Build the definition of OPTIONS against this host, the known networks and libvirt's
    (from the files in LIBVIRT_DIRS, by default libvirt's own); define it unless DEFINE is
    false. Returns the network (as it was defined, when defined)."""
    with engine.store.lock:
        records = engine.records()
        if any(record.name == options.name for record in records):
            raise NetNewError(f"network '{options.name}' already exists")
        taken: list[IPNetwork] = []
        if options.mode in OWN_BRIDGE_MODES and AUTO in (options.subnet or AUTO,
                                                         options.ipv6):
            with engine.host() as host:
                facts = engine.read_facts(host)
                libvirt_files = host.libvirt_network_files(libvirt_dirs)
            taken = taken_networks(facts, [record.current for record in records])
            taken += libvirt_subnets(libvirt_files)
        ipv4, ipv6 = resolve_addresses(options, taken)
        xml = engine.format(build_network(options, ipv4, ipv6), inactive=True)
        built = engine.parse(xml, f"net-new {options.name}")  # the validator a file would meet
        if not define:
            return built
    return engine.define(xml, f"net-new {options.name}")


def summary(net: Network) -> dict[str, object]:
    """What net-new made, for people and for --json: name, uuid, mode, bridge, subnets."""
    ips = []
    for ip in net.ips:
        if ip.interface is None:
            continue
        entry: dict[str, object] = {"family": f"ipv{ip.interface.version}",
                                    "address": str(ip.interface)}
        if ip.ranges:
            entry["dhcp"] = [f"{r.start} - {r.end}" for r in ip.ranges]
        ips.append(entry)
    forward = net.forward
    mode = "isolated" if forward is None else forward.mode.value
    return {"name": net.name, "uuid": net.uuid, "mode": mode,
            "bridge": net.bridge.name if net.bridge is not None else None,
            "dev": forward.dev if forward is not None else None, "ips": ips}
