"""net-update handlers of the DNS sections: dns-host, dns-txt and dns-srv.

Each handler changes the network copy of one ``PendingUpdate``; ``virtnet.spec.update`` picks
the handler by section.
"""

from __future__ import annotations

from virtnet.spec.model import DnsHost, DnsSrv, DnsTxt, IPAddress
from virtnet.spec.update_request import PendingUpdate
from virtnet.spec.xml.parse_dns import parse_dns_host, parse_dns_srv, parse_dns_txt


# --- dns-host --------------------------------------------------------------------------


def _dns_host_text(ip: IPAddress | None, names: list[str]) -> str:
    attrs = f" ip='{ip}'" if ip is not None else ""
    return f"<host{attrs}>" + "".join(f"<hostname>{n}</hostname>" for n in names) + "</host>"


def update_dns_host(update: PendingUpdate, parent_index: int) -> None:
    update.refuse_modify("DNS host records")
    update.check_element_name()
    hosts = update.net.dns.hosts
    if update.command.is_add:
        new = update.parse(parse_dns_host, "/network/dns/host")
        assert isinstance(new, DnsHost)
        # Several records may share a hostname; only the address must be new.
        existing = next((h for h in hosts if h.ip == new.ip), None)
        if existing is not None:
            raise update.error(
                f"{_dns_host_text(new.ip, new.hostnames)} duplicates the existing record "
                f"{_dns_host_text(existing.ip, existing.hostnames)}"
            )
        hosts.insert(update.insert_position(hosts), new)
        return

    # A delete's snippet is a search pattern: an ip, hostnames, or both.
    pattern = update.parse(parse_dns_host, "/network/dns/host", True)
    assert isinstance(pattern, DnsHost)
    ip, names = pattern.ip, pattern.hostnames
    matching = [
        i
        for i, host in enumerate(hosts)
        if (ip is not None and host.ip == ip) or any(n in host.hostnames for n in names)
    ]
    described = _dns_host_text(ip, names)
    if not matching:
        raise update.error(f"no DNS host record matches {described}")
    if len(matching) > 1:
        raise update.error(
            f"{len(matching)} DNS host records match {described}; give enough to pick one"
        )
    del hosts[matching[0]]


# --- dns-txt ---------------------------------------------------------------------------


def update_dns_txt(update: PendingUpdate, parent_index: int) -> None:
    update.refuse_modify("DNS TXT records")
    update.check_element_name()
    txts = update.net.dns.txts
    # A delete's snippet needs only the name.
    new = update.parse(parse_dns_txt, "/network/dns/txt", not update.command.is_add)
    assert isinstance(new, DnsTxt)
    name = new.name
    found = next((i for i, txt in enumerate(txts) if txt.name == name), None)
    if update.command.is_add:
        if found is not None:
            raise update.error(f"a DNS TXT record named '{name}' already exists")
        txts.insert(update.insert_position(txts), new)
        return
    if found is None:
        raise update.error(f"no DNS TXT record is named '{name}'")
    del txts[found]


# --- dns-srv ---------------------------------------------------------------------------


def _srv_text(srv: DnsSrv) -> str:
    attrs = "".join(
        f" {attr}='{getattr(srv, attr)}'"
        for attr in ("service", "protocol", "domain", "target", "port", "priority", "weight")
        if getattr(srv, attr) is not None
    )
    return f"<srv{attrs}/>"


def update_dns_srv(update: PendingUpdate, parent_index: int) -> None:
    update.refuse_modify("DNS SRV records")
    update.check_element_name()
    srvs = update.net.dns.srvs
    # A delete's snippet is a search pattern: any of its attributes.
    srv = update.parse(parse_dns_srv, "/network/dns/srv", not update.command.is_add)
    assert isinstance(srv, DnsSrv)

    # Only domain, service, protocol and target take part; each one given must be equal.
    def matches(existing: DnsSrv) -> bool:
        return all(
            getattr(srv, attr) is None or getattr(srv, attr) == getattr(existing, attr)
            for attr in ("domain", "service", "protocol", "target")
        )

    matching = [i for i, existing in enumerate(srvs) if matches(existing)]
    described = _srv_text(srv)
    if update.command.is_add:
        if matching:
            raise update.error(
                f"{described} duplicates the existing record {_srv_text(srvs[matching[0]])}"
            )
        srvs.insert(update.insert_position(srvs), srv)
        return
    if not matching:
        raise update.error(f"no DNS SRV record matches {described}")
    if len(matching) > 1:
        raise update.error(
            f"{len(matching)} DNS SRV records match {described}; give enough fields to pick one"
        )
    del srvs[matching[0]]
