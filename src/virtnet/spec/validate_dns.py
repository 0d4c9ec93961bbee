"""The definition rules of names: the network's <domain> and its <dns> (forwarders, TXT, host
and SRV records)."""

from __future__ import annotations

from virtnet.spec.model import DnsSrv
from virtnet.spec.validate_base import Scan, control_char, describe, unsafe_char

SRV_SERVICE_MAX = 512 - 30  # RFC 2782 record limit minus the SRV overhead, as libvirt
SRV_SERVICE_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+/*"
)
SRV_PROTOCOL_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-+/"
)


# --- domain, dns ------------------------------------------------------------------------


def check_domain(scan: Scan) -> None:
    domain = scan.net.domain
    if domain is None:
        return
    path = "/network/domain"
    if not scan.own_bridge:
        scan.add(path, domain.name,
                 f"<domain name='{domain.name}'> is not allowed with forward "
                 f"mode='{scan.mode.value}': there is no DNS server of ours", at_define=True)
    if not domain.name:
        scan.add(path, domain.name, "the domain name is empty")
    else:
        # dnsmasq gets 'domain=NAME' and 'local=/NAME/'
        scan.dns_name(path, "domain name", domain.name, forbidden=",/")


def check_dns(scan: Scan) -> None:
    dns = scan.net.dns
    records = bool(dns.txts or dns.hosts or dns.srvs)
    if dns.enable is False and (records or dns.forwarders):
        scan.add("/network/dns", "no",
                 "DNS is disabled (enable='no') but <dns> has forwarders or records: "
                 "nothing would serve them")
    if records and not scan.own_bridge:
        scan.add("/network/dns", scan.mode.value,
                 f"DNS records (<host>, <txt>, <srv>) are not allowed with forward "
                 f"mode='{scan.mode.value}': there is no DNS server of ours",
                 at_define=True)
    for index, forwarder in enumerate(dns.forwarders, start=1):
        path = f"/network/dns/forwarder[{index}]"
        if forwarder.addr is None and forwarder.domain is None:
            scan.add(path, None, "a DNS forwarder needs an 'addr' or a 'domain'")
        if forwarder.domain is not None:
            # dnsmasq gets 'server=/DOMAIN/ADDR'
            scan.dns_name(path, "forwarder domain", forwarder.domain, forbidden="/")
        if forwarder.port is not None:
            if not 1 <= forwarder.port <= 65535:
                scan.add(path, forwarder.port,
                         f"forwarder port '{forwarder.port}' is outside 1..65535")
            if forwarder.addr is None:
                scan.add(path, forwarder.port,
                         f"forwarder port '{forwarder.port}' needs an 'addr'")
    for index, txt in enumerate(dns.txts, start=1):
        path = f"/network/dns/txt[{index}]"
        bad = unsafe_char(txt.name, forbidden=" ,")
        if bad is not None:
            scan.add(path, txt.name,
                     f"DNS TXT record name {txt.name!r} contains {describe(bad)}")
        bad = control_char(txt.value)
        if bad is not None:
            scan.add(path, txt.value,
                     f"DNS TXT record value {txt.value!r} contains {describe(bad)}")
    for index, host in enumerate(dns.hosts, start=1):
        path = f"/network/dns/host[{index}]"
        if host.ip is None:
            scan.add(path, None, "a DNS host needs an 'ip'")
        if not host.hostnames:
            scan.add(path, host.ip, f"DNS host '{host.ip}' has no <hostname>")
        for name_index, hostname in enumerate(host.hostnames, start=1):
            name_path = f"{path}/hostname[{name_index}]"
            if not hostname:
                scan.add(name_path, hostname, f"empty hostname for DNS host '{host.ip}'")
            else:
                # the addn-hosts file separates names by whitespace
                scan.dns_name(name_path, "DNS hostname", hostname, forbidden="")
    for index, srv in enumerate(dns.srvs, start=1):
        check_srv(scan, index, srv)


def check_srv(scan: Scan, index: int, srv: DnsSrv) -> None:
    path = f"/network/dns/srv[{index}]"
    if srv.service is None:
        scan.add(path, None, "a DNS SRV record needs a 'service'")
    else:
        if len(srv.service.encode()) > SRV_SERVICE_MAX:
            scan.add(path, srv.service, f"SRV service '{srv.service[:40]}...' is longer "
                     f"than {SRV_SERVICE_MAX} bytes")
        bad = next((c for c in srv.service if c not in SRV_SERVICE_CHARS), None)
        if bad is not None:
            scan.add(path, srv.service,
                     f"SRV service {srv.service!r} contains the invalid character {bad!r}")
    if srv.protocol is None:
        scan.add(path, None, "a DNS SRV record needs a 'protocol'")
    else:
        bad = next((c for c in srv.protocol if c not in SRV_PROTOCOL_CHARS), None)
        if bad is not None:
            scan.add(path, srv.protocol, f"SRV protocol {srv.protocol!r} contains the "
                     f"invalid character {bad!r}")
    for name, minimum in (("port", 1), ("priority", 0), ("weight", 0)):
        value = getattr(srv, name)
        if value is None:
            continue
        if srv.target is None:
            scan.add(path, value, f"SRV {name} '{value}' is not allowed without a target")
        if not minimum <= value <= 65535:
            scan.add(path, value, f"SRV {name} '{value}' is outside {minimum}..65535")
    for name in ("domain", "target"):
        value = getattr(srv, name)
        if value:
            scan.dns_name(path, f"SRV {name}", value)
