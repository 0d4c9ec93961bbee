"""Hardened parsing of libvirt Network XML into the model (``virtnet.spec.model``).

What the reader refuses, and why:
- Anything that could make the XML library do work the document did not ask for: the reader
  (``virtnet.spec.xml.document``) refuses it before a single element is looked at.
- Every value that does not convert to its type or lies outside its range, and every rule
  libvirt 9.0's parser applies within one element (required attributes, cardinality, attribute
  combinations). Rules spanning several elements (a DHCP range inside its subnet, one default
  portgroup, duplicate pool entries, mode-dependent elements...) are checked by
  ``virtnet.spec.validate``.

Unknown elements are ignored, as libvirt's parser ignores them; this keeps definitions written
for newer libvirt versions readable. ``virtnet.spec.xml.schema`` names them, in a pass of its own
over the same tree (``validate`` and ``net-define`` run it; a start does not).

Every error is an ``XMLParseError`` naming the source, the line, the element path
(``/network/ip[2]/dhcp/host[1]/@mac``) and the offending value. Elements that may repeat carry
their 1-based position among same-named siblings in the path; singletons do not.

This module assembles the <network> element (name, uuid, title, description, domain, mac, mtu,
metadata, dnsmasq options) and calls the section readers: ``parse_forward`` (forward, bridge,
portgroup, bandwidth, vlan, virtualport), ``parse_ip`` (ip, dhcp, routes) and ``parse_dns``,
all built on ``parse_common``.
"""

from __future__ import annotations

from virtnet.errors import XMLParseError
from virtnet.ids import control_char, network_name_problem, show_char
from virtnet.spec.model import DNSMASQ_NAMESPACE, Domain, Network
from virtnet.spec.xml.document import (
    MAX_DOCUMENT_BYTES,
    Element,
    dump_metadata,
    parse_document,
    parse_fragment,
)
from virtnet.spec.xml.parse_common import (
    Kids,
    element_text,
    fail,
    parse_mac,
    parse_uint,
    parse_uuid,
    yes_no,
)
from virtnet.spec.xml.parse_dns import parse_dns
from virtnet.spec.xml.parse_forward import (
    parse_bandwidth,
    parse_bridge,
    parse_forward,
    parse_portgroup,
    parse_virtualport,
    parse_vlan,
)
from virtnet.spec.xml.parse_ip import parse_ip, parse_route


def _parse_domain(el: Element, path: str) -> Domain:
    name = el.get("name")
    if not name:
        fail(el, path, "missing required attribute 'name' in <domain>")
    return Domain(
        name=name,
        local_only=yes_no(el, path, "localOnly"),
        register=yes_no(el, path, "register"),
    )


def _simple_text(kids: Kids, name: str) -> tuple[str, Element] | None:
    found = kids.one(name)
    if found is None:
        return None
    el = found[0]
    if any(isinstance(child.tag, str) for child in el):
        fail(el, found[1], f"<{name}> must contain only text")
    return element_text(el), el


def _parse_metadata(el: Element) -> str:
    """The <metadata> element as libvirt keeps it: only namespaced element children, the first
    of each namespace; serialized self-contained (namespace declarations included)."""
    return dump_metadata(el, level=0)


def _parse_dnsmasq_options(kids: Kids) -> list[str]:
    options: list[str] = []
    ns = "{" + DNSMASQ_NAMESPACE + "}"
    for group_index, group in enumerate(kids.by_tag.get(ns + "options", ()), start=1):
        for index, option in enumerate(group.iterchildren(ns + "option"), start=1):
            value = option.get("value")
            if value is None:
                fail(option, f"/network/dnsmasq:options[{group_index}]/dnsmasq:option[{index}]",
                     "missing required attribute 'value' in <dnsmasq:option>")
            options.append(value)
    return options


def parse_network(data: bytes | str, source: str | None = None) -> Network:
    """Parse a whole <network> definition. Raises XMLParseError for anything libvirt's parser
    would refuse on its own (cross-element rules are left to virtnet.spec.validate)."""
    return network_from_tree(parse_document(data, source), source)


def network_from_tree(root: Element, source: str | None = None) -> Network:
    """parse_network for a document already parsed by parse_document."""
    try:
        return _parse_network_element(root)
    except XMLParseError as exc:
        if exc.source is not None:
            raise
        raise XMLParseError(exc.message, source=source, line=exc.line, path=exc.path) from None


def _parse_network_element(root: Element) -> Network:
    path = "/network"
    if root.tag != "network":
        fail(root, "/" + str(root.tag), f"root element must be <network>, not <{root.tag}>")
    kids = Kids(root, path)
    found = _simple_text(kids, "name")
    if found is None or not found[0]:
        fail(found[1] if found else root, f"{path}/name", "missing network <name>")
    name, name_el = found
    problem = network_name_problem(name)  # it becomes file names (virtnet.ids)
    if problem is not None:
        fail(name_el, f"{path}/name", problem)
    net = Network(name=name)
    found = _simple_text(kids, "uuid")
    if found is not None and found[0]:
        net.uuid = parse_uuid(found[1], f"{path}/uuid", found[0])
    found = _simple_text(kids, "title")
    if found is not None:
        # a carriage return is read back as a newline (XML's end-of-line handling)
        if "\n" in found[0] or "\r" in found[0]:
            fail(found[1], f"{path}/title", "Network title can't contain newlines")
        net.title = found[0]
    found = _simple_text(kids, "description")
    if found is not None:
        # lines are fine; a carriage return would be read back as a newline
        bad = control_char(found[0], allowed="\n\t")
        if bad is not None:
            fail(found[1], f"{path}/description",
                 f"invalid char in description: {show_char(bad)}")
        net.description = found[0]
    ipv6 = root.get("ipv6") or None
    if ipv6 is not None:
        if ipv6 not in ("yes", "no"):
            fail(root, f"{path}/@ipv6", f"invalid ipv6 '{ipv6}': expected 'yes' or 'no'")
        net.ipv6 = ipv6 == "yes"
    net.trust_guest_rx_filters = yes_no(root, path, "trustGuestRxFilters")

    found = kids.one("domain")
    if found is not None:
        net.domain = _parse_domain(*found)
    found = kids.one("bandwidth")
    if found is not None:
        net.bandwidth = parse_bandwidth(*found, allow_floor=False)
    found = kids.one("vlan")
    if found is not None:
        net.vlan = parse_vlan(*found)
    found = kids.one("port")
    if found is not None:
        net.port_isolated = yes_no(found[0], found[1], "isolated")
    found = kids.one("bridge")
    if found is not None:
        net.bridge = parse_bridge(*found)
    found = kids.one("mac")
    if found is not None:
        mac = found[0].get("address") or None
        if mac is not None:
            net.mac = parse_mac(found[0], f"{found[1]}/@address", mac)
    found = kids.one("mtu")
    if found is not None:
        size = found[0].get("size") or None
        if size is not None:
            net.mtu = parse_uint(found[0], f"{found[1]}/@size", "size", size, what="mtu size")
    found = kids.one("dns")
    if found is not None:
        net.dns = parse_dns(*found)
    found = kids.one("virtualport")
    if found is not None:
        net.virtualport = parse_virtualport(*found, require_type=True)
    net.portgroups = [parse_portgroup(c, p) for c, p in kids.many("portgroup")]
    net.ips = [parse_ip(c, p) for c, p in kids.many("ip")]
    net.routes = [parse_route(c, p) for c, p in kids.many("route")]
    found = kids.one("forward")
    if found is not None:
        net.forward = parse_forward(*found)
    found = kids.one("metadata")
    if found is not None:
        net.metadata = _parse_metadata(found[0])
    net.dnsmasq_options = _parse_dnsmasq_options(kids)
    return net


__all__ = [
    "MAX_DOCUMENT_BYTES",
    "parse_network",
    "network_from_tree",
    "parse_document",
    "parse_fragment",
]
