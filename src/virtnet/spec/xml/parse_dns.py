"""Reading a network's <dns> element: its forwarders and its host, SRV and TXT records.

The record readers are public because net-update reads a single record with them (the
``partial`` form finds an existing entry).
"""

from __future__ import annotations

from virtnet.spec.model import Dns, DnsForwarder, DnsHost, DnsSrv, DnsTxt
from virtnet.spec.xml.document import Element
from virtnet.spec.xml.parse_common import (
    Kids,
    element_text,
    fail,
    parse_address,
    uint_attr,
    yes_no,
)

SRV_SERVICE_MAX = 512 - 30  # DNS record limit minus SRV overhead (RFC 2782)
SRV_SERVICE_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+/*"
)
SRV_PROTOCOL_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-+/"
)


def parse_dns_host(el: Element, path: str, partial: bool = False) -> DnsHost:
    """<host ip><hostname>...</hostname></host> inside <dns>."""
    ip_value = el.get("ip")
    if ip_value is None and not partial:
        fail(el, path, "missing required attribute 'ip' in DNS <host>")
    ip = parse_address(el, f"{path}/@ip", "ip", ip_value) if ip_value is not None else None
    kids = Kids(el, path)
    names: list[str] = []
    for child, child_path in kids.many("hostname"):
        if len(child) == 0 and child.text is None:
            continue  # an empty <hostname/> is skipped, as libvirt does
        name = element_text(child)
        if not name:
            fail(child, child_path, "empty <hostname> in DNS <host>")
        names.append(name)
    if not names and not partial:
        fail(el, path, "DNS <host> needs at least one <hostname>")
    if ip is None and not names:
        fail(el, path, "DNS <host> needs an 'ip' or a <hostname>")
    # Only a partial host (net-update's search form) may lack the ip: it is None then.
    return DnsHost(ip=ip, hostnames=names)  # type: ignore[arg-type]


def parse_dns_txt(el: Element, path: str, partial: bool = False) -> DnsTxt:
    name = el.get("name")
    if name is None:
        fail(el, path, "missing required attribute 'name' in DNS <txt>")
    bad = next((c for c in name if c in " ,"), None)
    if bad is not None:
        fail(el, f"{path}/@name", f"DNS TXT record name '{name}' contains the prohibited "
             f"character '{bad}'")
    value = el.get("value")
    if value is None:
        if not partial:
            fail(el, path, f"missing required attribute 'value' in DNS <txt> '{name}'")
        value = ""
    return DnsTxt(name=name, value=value)


def parse_dns_srv(el: Element, path: str, partial: bool = False) -> DnsSrv:
    srv = DnsSrv()
    service = el.get("service")
    if service is None and not partial:
        fail(el, path, "missing required attribute 'service' in DNS <srv>")
    if service is not None:
        if len(service.encode()) > SRV_SERVICE_MAX:
            fail(el, f"{path}/@service", f"service '{service[:40]}...' is too long (at most "
                 f"{SRV_SERVICE_MAX} bytes)")
        bad = next((c for c in service if c not in SRV_SERVICE_CHARS), None)
        if bad is not None:
            fail(el, f"{path}/@service", f"invalid character '{bad}' in SRV service "
                 f"'{service}'")
    srv.service = service
    protocol = el.get("protocol")
    if protocol is None and not partial:
        fail(el, path, "missing required attribute 'protocol' in DNS <srv>")
    if protocol is not None:
        bad = next((c for c in protocol if c not in SRV_PROTOCOL_CHARS), None)
        if bad is not None:
            fail(el, f"{path}/@protocol", f"invalid character '{bad}' in SRV protocol "
                 f"'{protocol}'")
    srv.protocol = protocol
    srv.domain = el.get("domain")
    srv.target = el.get("target")
    for name, minimum in (("port", 1), ("priority", 0), ("weight", 0)):
        value = uint_attr(el, path, name, minimum=minimum, maximum=65535, empty_is_absent=True)
        if value is not None and srv.target is None:
            fail(el, f"{path}/@{name}", f"SRV '{name}' is not allowed without 'target'")
        setattr(srv, name, value)
    return srv


def _parse_forwarder(el: Element, path: str) -> DnsForwarder:
    forwarder = DnsForwarder()
    addr = el.get("addr")
    if addr is not None:
        forwarder.addr = parse_address(el, f"{path}/@addr", "addr", addr)
    forwarder.domain = el.get("domain")
    forwarder.port = uint_attr(el, path, "port", minimum=1, maximum=65535)
    if forwarder.addr is None and forwarder.domain is None:
        fail(el, path, "a DNS <forwarder> needs an 'addr' or a 'domain'")
    if forwarder.port is not None and forwarder.addr is None:
        fail(el, f"{path}/@port", "a forwarder 'port' needs an 'addr'")
    return forwarder


def parse_dns(el: Element, path: str) -> Dns:
    kids = Kids(el, path)
    dns = Dns(
        enable=yes_no(el, path, "enable"),
        forward_plain_names=yes_no(el, path, "forwardPlainNames"),
    )
    dns.forwarders = [_parse_forwarder(c, p) for c, p in kids.many("forwarder")]
    dns.hosts = [parse_dns_host(c, p) for c, p in kids.many("host")]
    dns.srvs = [parse_dns_srv(c, p) for c, p in kids.many("srv")]
    dns.txts = [parse_dns_txt(c, p) for c, p in kids.many("txt")]
    if dns.enable is False and (dns.forwarders or dns.hosts or dns.srvs or dns.txts):
        # libvirt refuses records in a disabled DNS: nothing would serve them
        fail(el, f"{path}/@enable", "enable='no' but <dns> also has forwarders or records; "
             "remove them or enable DNS")
    return dns
