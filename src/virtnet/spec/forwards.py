"""Port forwards into NAT (and routed) networks, as data: the model and its place in the definition.

A forward sends connections that reach the host on PROTO port P (or P-Q), optionally only on
one host address, to a guest address (and port). It is kept inside the definition's
``<metadata>`` under an XML namespace of virtnet's own, so the very same file still defines
in libvirt (which keeps metadata verbatim and ignores what it does not know)::

    <metadata>
      <virtnet:forwards xmlns:virtnet="http://virtnet.dev/schemas/forward/1.0">
        <virtnet:port proto="tcp" port="8080" to="192.168.122.10" to-port="80"/>
      </virtnet:forwards>
    </metadata>

Their rules are rendered by virtnet.render.nft, planned by virtnet.plan.forwards and changed
on a running network by virtnet.service.forwards.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Any

from virtnet.errors import Problem, ValidationError
from virtnet.spec.model import Network
from lxml import etree
from virtnet.spec.xml.document import parse_fragment
from virtnet.spec.xml.document import dump_metadata

NAMESPACE = "http://virtnet.dev/schemas/forward/1.0"
PREFIX = "virtnet"
CONTAINER = "forwards"
ITEM = "port"
PROTOCOLS = ("tcp", "udp")
METADATA_PATH = f"/network/metadata/{PREFIX}:{CONTAINER}"
# nftables priorities of the NAT hooks (dstnat = -100, srcnat = 100)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# One start reads a network's forwards in several places (the coexistence checks, the plan,
# the nft renderer): the metadata text is parsed once and its result kept, for texts up to
# this size (a larger one is parsed each time rather than kept).
CACHED_METADATA_MAX = 64 * 1024


@dataclass(frozen=True)
class PortForward:
    """One forward: PROTO port_start..port_end on ADDRESS (any host address if None) →
    to_address, on to_port (the same port(s) if None)."""

    proto: str
    port_start: int
    port_end: int
    to_address: IPAddress
    to_port: int | None = None
    address: IPAddress | None = None

    @property
    def ports(self) -> str:
        if self.port_start == self.port_end:
            return str(self.port_start)
        return f"{self.port_start}-{self.port_end}"

    @property
    def target_ports(self) -> str:
        if self.to_port is None:
            return self.ports
        return str(self.to_port)

    @property
    def version(self) -> int:
        return self.to_address.version

    def key(self) -> tuple[str, int, int, str | None]:
        """What identifies a forward for net-forward-del: protocol, ports, host address."""
        return (self.proto, self.port_start, self.port_end,
                str(self.address) if self.address else None)

    def target(self) -> str:
        addr = f"[{self.to_address}]" if self.version == 6 else str(self.to_address)
        if self.to_port is None:
            return str(self.to_address)
        return f"{addr}:{self.to_port}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "proto": self.proto,
            "port": self.ports,
            "to": str(self.to_address),
            "to_port": self.to_port,
            "address": str(self.address) if self.address else None,
        }


# --- parsing user input -------------------------------------------------------------------


def parse_port_range(text: str) -> tuple[int, int]:
    """"8080" or "8080-8090" → (start, end); ValueError with a readable reason."""
    parts = text.strip().split("-")
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise ValueError(f"invalid port {text!r}: expected P or P-Q")
    start, end = int(parts[0]), int(parts[-1])
    if not (1 <= start <= end <= 65535):
        raise ValueError(f"invalid port range {text!r}: 1 <= P <= Q <= 65535")
    return start, end


def parse_target(text: str) -> tuple[IPAddress, int | None]:
    """"ADDR", "ADDR:PORT", "[V6ADDR]:PORT" or a bare IPv6 address."""
    text = text.strip()
    port: str | None = None
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"invalid target {text!r}")
            port = rest[1:]
    elif text.count(":") == 1:
        address, port = text.split(":")
    else:
        address = text
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"invalid target address {address!r}") from None
    if port is None:
        return parsed, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid target port {port!r}")
    return parsed, int(port)


def make_forward(proto: str, port: str, to: str, address: str | None = None) -> PortForward:
    """A forward from the CLI's flags; ValueError with a readable reason."""
    if proto not in PROTOCOLS:
        raise ValueError(f"invalid protocol {proto!r}: tcp or udp")
    start, end = parse_port_range(port)
    to_address, to_port = parse_target(to)
    host_address = ipaddress.ip_address(address) if address else None
    return PortForward(proto, start, end, to_address, to_port, host_address)


# --- metadata ------------------------------------------------------------------------------


def _metadata_element(net: Network) -> Any:
    if net.metadata is None:
        return etree.Element("metadata")
    return parse_fragment(net.metadata, "<metadata>")


def _our_child(metadata: Any) -> Any | None:
    for child in metadata:
        if isinstance(child.tag, str) and child.tag == f"{{{NAMESPACE}}}{CONTAINER}":
            return child
    return None


def read_forwards(net: Network) -> list[PortForward]:
    """The forwards kept in NET's metadata (none if it has none); XML errors are reported as
    a ValidationError naming the attribute."""
    if net.metadata is None or NAMESPACE not in net.metadata:
        return []
    if len(net.metadata) > CACHED_METADATA_MAX:
        return list(_forwards_in(net.metadata))
    return list(_kept_forwards_in(net.metadata))


def _forwards_in(metadata: str) -> tuple[PortForward, ...]:
    """The forwards of a <metadata> text (frozen values, so one result serves every caller)."""
    container = _our_child(parse_fragment(metadata, "<metadata>"))
    if container is None:
        return ()
    forwards = []
    for index, item in enumerate(container, start=1):
        if not isinstance(item.tag, str):
            continue
        path = f"{METADATA_PATH}/{PREFIX}:{ITEM}[{index}]"
        if item.tag != f"{{{NAMESPACE}}}{ITEM}":
            raise ValidationError([Problem(path, f"unknown element {item.tag!r}")])
        to = item.get("to") or ""
        if item.get("to-port"):
            to = (f"[{to}]" if ":" in to else to) + f":{item.get('to-port')}"
        try:
            forwards.append(
                make_forward(item.get("proto") or "", item.get("port") or "", to,
                             item.get("address"))
            )
        except ValueError as exc:
            raise ValidationError([Problem(path, str(exc))]) from None
    return tuple(forwards)


_kept_forwards_in = functools.lru_cache(maxsize=64)(_forwards_in)


def write_forwards(net: Network, forwards: list[PortForward]) -> None:
    """Replace NET's forwards in its metadata, keeping every other namespace's element."""
    metadata = _metadata_element(net)
    old = _our_child(metadata)
    if old is not None:
        metadata.remove(old)
    if forwards:
        container = etree.SubElement(
            metadata, f"{{{NAMESPACE}}}{CONTAINER}", nsmap={PREFIX: NAMESPACE}
        )
        for fwd in forwards:
            attrs = {"proto": fwd.proto, "port": fwd.ports, "to": str(fwd.to_address)}
            if fwd.to_port is not None:
                attrs["to-port"] = str(fwd.to_port)
            if fwd.address is not None:
                attrs["address"] = str(fwd.address)
            etree.SubElement(container, f"{{{NAMESPACE}}}{ITEM}", attrs)
    if len(metadata) == 0:
        net.metadata = None
    else:
        net.metadata = dump_metadata(metadata, level=0)
