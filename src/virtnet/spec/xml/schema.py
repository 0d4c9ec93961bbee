"""Which elements and attributes libvirt's Network XML has: a table of facts, and the scan
that names everything a document has beyond it.

libvirt's parser ignores what it does not know, so a misspelt ``<forwrd mode='nat'/>`` quietly
gives an isolated network; ``virsh net-define --validate`` checks the document against
libvirt's schema first. virtnet does the same with :data:`NETWORK`, its own table of the
schema's elements and attributes per element path, without needing libvirt's files.
tests/conformance/test_schema_table.py keeps the table equal to libvirt 9.0's schema
(network.rng with the parts of networkcommon.rng and basictypes.rng it uses), apart from
:data:`NEWER`: what newer libvirt added and virtnet accepts.

The table says which names may appear where, not which values or combinations are valid:
the parser and ``virtnet.spec.validate`` decide that. Where the schema offers alternatives of one
element (the kinds of ``<virtualport>``), the table holds their union. The contents of
``<metadata>`` belong to other applications and are never looked at.

The scan is a separate pass over the parsed tree, run by ``validate`` and ``net-define`` only:
parsing for a start never pays for it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from virtnet.errors import VirtnetError
from virtnet.spec.model import DNSMASQ_NAMESPACE
from virtnet.spec.xml.document import Element, parse_document
from virtnet.spec.xml.parse_common import REPEATED_ELEMENTS

_DNSMASQ = "{" + DNSMASQ_NAMESPACE + "}"


@dataclass(frozen=True)
class Spec:
    """What one element may carry: attribute names, child elements by (namespaced) tag; a
    foreign element's contents are another application's and are not checked."""

    attributes: frozenset[str] = frozenset()
    children: Mapping[str, Spec] = field(default_factory=dict)
    foreign: bool = False


def _spec(attributes: str = "", children: Mapping[str, Spec] | None = None) -> Spec:
    return Spec(frozenset(attributes.split()), dict(children or {}))


_TEXT = _spec()  # an element holding only text
_RATE = _spec("average peak floor burst")
_BANDWIDTH = _spec("classID", {"inbound": _RATE, "outbound": _RATE})
_VLAN = _spec("trunk", {"tag": _spec("id nativeMode")})
# the union of the schema's kinds of virtualport (802.1Qbg, 802.1Qbh, openvswitch, midonet,
# and the one without a type)
_VIRTUALPORT = _spec("type", {"parameters": _spec(
    "managerid typeid typeidversion instanceid profileid interfaceid")})
_LEASE = _spec("expiry unit")

NETWORK = _spec("connections ipv6 trustGuestRxFilters", {
    "name": _TEXT,
    "uuid": _TEXT,
    "title": _TEXT,
    "description": _TEXT,
    "metadata": Spec(foreign=True),
    "bridge": _spec("name zone stp delay macTableManager"),
    "mtu": _spec("size"),
    "mac": _spec("address"),
    "forward": _spec("dev mode managed", {
        "interface": _spec("dev connections"),
        "address": _spec("type domain bus slot function multifunction connections"),
        "pf": _spec("dev"),
        "driver": _spec("name"),
        "nat": _spec("ipv6", {
            "address": _spec("start end"),
            "port": _spec("start end"),
        }),
    }),
    "virtualport": _VIRTUALPORT,
    "portgroup": _spec("name default trustGuestRxFilters", {
        "virtualport": _VIRTUALPORT,
        "bandwidth": _BANDWIDTH,
        "vlan": _VLAN,
    }),
    "domain": _spec("name localOnly register"),
    "dns": _spec("enable forwardPlainNames", {
        "forwarder": _spec("addr domain port"),
        "txt": _spec("name value"),
        "srv": _spec("service protocol domain target port priority weight"),
        "host": _spec("ip", {"hostname": _TEXT}),
    }),
    "bandwidth": _BANDWIDTH,
    "vlan": _VLAN,
    "port": _spec("isolated"),
    "ip": _spec("address netmask prefix family localPtr", {
        "tftp": _spec("root"),
        "dhcp": _spec("", {
            "range": _spec("start end", {"lease": _LEASE}),
            "host": _spec("mac id name ip", {"lease": _LEASE}),
            "bootp": _spec("file server"),
        }),
    }),
    "route": _spec("family address netmask prefix gateway metric"),
    _DNSMASQ + "options": _spec("", {_DNSMASQ + "option": _spec("value")}),
})

# In the table but not in libvirt 9.0's schema: newer libvirt's, accepted by virtnet (see the
# README's feature table). Element paths from <network>; '@' marks an attribute.
NEWER = frozenset({
    "network/title",
    "network/description",
    "network/domain/@register",
    "network/dns/forwarder/@port",
})


def known_names() -> set[str]:
    """Every fact of the table as 'network/forward/nat/port' (an element) or
    'network/forward/@mode' (an attribute); 'network/metadata/*' for foreign contents."""
    facts: set[str] = set()

    def walk(spec: Spec, path: str) -> None:
        facts.update(f"{path}/@{name}" for name in spec.attributes)
        if spec.foreign:
            facts.add(f"{path}/*")
        for tag, child in spec.children.items():
            facts.add(f"{path}/{tag}")
            walk(child, f"{path}/{tag}")

    facts.add("network")
    walk(NETWORK, "network")
    return facts


# --- the scan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnknownItem:
    """An element or attribute the schema does not know where it stands."""

    source: str | None
    line: int | None
    path: str  # /network/ip[1]/dhcp/rnage, /network/forward/@mdoe
    kind: str  # "element" or "attribute"
    name: str  # as written, with its namespace prefix
    parent: str  # the enclosing element, as written
    hint: str = ""  # "did you mean <range>?" and the like

    def __str__(self) -> str:
        return self.describe()

    def describe(self, outcome: str = "") -> str:
        """One line: file:line: path: what, then OUTCOME (", ignored") and the hint."""
        where = self.source or "<input>"
        if self.line is not None:
            where += f":{self.line}"
        shown = f"<{self.name}>" if self.kind == "element" else f"'{self.name}'"
        text = f"{where}: {self.path}: unknown {self.kind} {shown} in <{self.parent}>{outcome}"
        return f"{text} ({self.hint})" if self.hint else text


class SchemaError(VirtnetError):
    """A document has elements or attributes libvirt's schema does not know (net-define
    --validate)."""

    def __init__(self, items: list[UnknownItem]) -> None:
        self.items = items
        super().__init__(self.__str__())

    def __str__(self) -> str:
        lines = "".join(f"\n  {item}" for item in self.items)
        return "XML document failed to validate against the network schema " \
               f"({len(self.items)} unknown element(s) or attribute(s)):{lines}"


def _written(node: Element, qualified: str) -> str:
    """A tag or attribute name as the document spells it (prefix:local)."""
    if not qualified.startswith("{"):
        return qualified
    uri, local = qualified[1:].split("}", 1)
    prefix = next((p for p, u in (node.nsmap or {}).items() if u == uri and p), None)
    return f"{prefix}:{local}" if prefix else local


def _hint(name: str, kind: str, here: list[str], elsewhere: list[str]) -> str:
    close = difflib.get_close_matches(name, here, n=1, cutoff=0.6)
    if close:
        return f"did you mean <{close[0]}>?" if kind == "element" else \
            f"did you mean '{close[0]}'?"
    if elsewhere:
        return f"<{name}> belongs in " + " or ".join(elsewhere[:3])
    return ""


def _places() -> dict[str, list[str]]:
    """For each element tag, the paths of the elements it is known inside (/network/ip)."""
    places: dict[str, list[str]] = {}

    def walk(spec: Spec, path: str) -> None:
        for tag, child in spec.children.items():
            places.setdefault(tag, []).append(path)
            walk(child, f"{path}/{tag}")

    walk(NETWORK, "/network")
    return places


def _scan(node: Element, spec: Spec, path: str, plain: str, source: str | None,
          places: dict[str, list[str]]) -> Iterator[UnknownItem]:
    """The unknown items under NODE, whose path is PATH (PLAIN: without indices)."""
    parent = _written(node, node.tag)
    for qualified in node.attrib:
        if qualified not in spec.attributes:
            name = _written(node, qualified)
            yield UnknownItem(source, node.sourceline, f"{path}/@{name}", "attribute", name,
                              parent, _hint(name, "attribute", sorted(spec.attributes), []))
    seen: dict[str, int] = {}
    counts: dict[str, int] = {}
    for child in node:
        if isinstance(child.tag, str):
            counts[child.tag] = counts.get(child.tag, 0) + 1
    for child in node:
        tag = child.tag
        if not isinstance(tag, str):
            continue  # a comment or processing instruction
        seen[tag] = seen.get(tag, 0) + 1
        name = _written(child, tag)
        child_spec = spec.children.get(tag)
        local = tag.rsplit("}", 1)[-1]
        indexed = local in REPEATED_ELEMENTS or counts[tag] > 1
        child_path = f"{path}/{name}[{seen[tag]}]" if indexed else f"{path}/{name}"
        if child_spec is None:
            here = [_written(node, known) for known in spec.children]
            elsewhere = [p for p in places.get(tag, []) if p != plain]
            yield UnknownItem(source, child.sourceline, child_path, "element", name, parent,
                              _hint(name, "element", here, elsewhere))
        elif not child_spec.foreign:
            yield from _scan(child, child_spec, child_path, f"{plain}/{tag}", source, places)


def unknown_items(root: Element, source: str | None = None) -> list[UnknownItem]:
    """Every element and attribute of the document under ``root`` that libvirt's schema does
    not know, in document order. A root that is not <network> gives none: the parser refuses
    it on its own."""
    if root.tag != "network":
        return []
    return list(_scan(root, NETWORK, "/network", "/network", source, _places()))


def check_document(data: bytes | str, source: str | None, *, refuse: bool) -> list[UnknownItem]:
    """The unknown items of a definition's text (malformed XML raises the parser's error);
    with ``refuse``, raise SchemaError when there is any."""
    items = unknown_items(parse_document(data, source), source)
    if refuse and items:
        raise SchemaError(items)
    return items


__all__ = ["NETWORK", "NEWER", "SchemaError", "Spec", "UnknownItem", "check_document",
           "known_names", "unknown_items"]
