"""The networks a libvirt on this host defines or runs, read from its files (pure).

virtnet.host.libvirt reads the files; this reads what they say, for the choices and warnings
that must keep clear of libvirt: net-new's free subnet, the bridge names a define allocates,
doctor's overlap warning.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from virtnet.errors import XMLParseError
from virtnet.spec.xml.document import parse_document

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class LibvirtNetwork:
    """One network libvirt defines or runs, as its file shows it."""

    name: str  # "" when the file names none
    source: str  # the file
    bridge: str | None
    subnets: tuple[IPNetwork, ...]


def libvirt_networks(files: Iterable[tuple[str, bytes]]) -> list[LibvirtNetwork]:
    """libvirt's networks from their definition and status files (pure).

    Tolerant on purpose: a file that does not parse, or an <ip> without a usable address, is
    passed over — the result only informs choices and warnings, it never decides one."""
    found: list[LibvirtNetwork] = []
    for source, data in files:
        try:
            root = parse_document(data, source)
        except XMLParseError:
            continue
        # a status file wraps the definition: <networkstatus><network>...</network>...
        network = root if root.tag == "network" else root.find("network")
        if network is None:
            continue
        subnets: list[IPNetwork] = []
        for ip in network.findall("ip"):
            address = ip.get("address")
            prefix = ip.get("prefix") or ip.get("netmask")
            if address is None:
                continue
            if prefix is None:  # libvirt's default prefix: the address's classful one
                prefix = "64" if ":" in address else "24"
            try:
                subnets.append(ipaddress.ip_interface(f"{address}/{prefix}").network)
            except ValueError:
                continue
        bridge = network.find("bridge")
        name = bridge.get("name") if bridge is not None else None
        found.append(LibvirtNetwork((network.findtext("name") or "").strip(), source,
                                    name.strip() if name and name.strip() else None,
                                    tuple(subnets)))
    return found


def libvirt_subnets(files: Iterable[tuple[str, bytes]]) -> list[IPNetwork]:
    """The subnets of libvirt's networks, from their definition and status files (pure)."""
    return [subnet for net in libvirt_networks(files) for subnet in net.subnets]


def libvirt_bridges(files: Iterable[tuple[str, bytes]]) -> list[str]:
    """The bridge names libvirt's networks use or will use (pure), each once."""
    return list(dict.fromkeys(net.bridge for net in libvirt_networks(files) if net.bridge))
