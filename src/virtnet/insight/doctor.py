"""``virtnet doctor``: what on this host stands between a network and working guests.

Two parts:
- host preflight: the kernel features virtnet builds on, dnsmasq and nftables, IPv4
  forwarding, subnets that collide with host routes, other firewalls whose forward chains drop
  traffic (any nftables table, iptables-nft included, and legacy iptables), a second DHCP server
  on a network's bridge (another dnsmasq/dhcpd process serving that interface);
- per network: the reachability table of :func:`virtnet.insight.reach_summary.summary` with the
  host's facts filled in (where the host's address and default route are, forwarding, blocking
  firewalls), each "no" with its reason and, where one exists, the commands that fix it; and
  the guest-side DHCP configuration for common guests.

Reading the host (:func:`read_host_view`) is separate from judging it (:func:`diagnose`),
which is pure, so every rule is testable with hand-made facts.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtnet.plan.drivers import driver_for
from virtnet.facts import ProcessInfo  # also named here: HostView's processes
from virtnet.host import Host
from virtnet.host.libvirt import LIBVIRT_NETWORK_DIRS
from virtnet.spec.model import ForwardMode, Network
from virtnet.spec.libvirtnets import LibvirtNetwork, libvirt_networks
from virtnet.insight.guest_dhcp import guest_dhcp_config
from virtnet.insight.reach import answers_arp_for_others
from virtnet.insight.reach_summary import Row, summary
from virtnet.insight.reach_terms import Topology, pool
from dataclasses import replace
from virtnet.errors import HostError
from virtnet.facts import FEATURE_TEXT

if TYPE_CHECKING:
    from virtnet.service.engine import Engine
    from virtnet.store.records import NetworkRecord
    from virtnet.facts import HostFacts, KernelFeatures
OUR_TABLE = ("inet", "virtnet")
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")
DHCP_SERVER_PROGRAMS = ("dnsmasq", "dhcpd", "udhcpd", "kea-dhcp4")
ALWAYS_NEEDED = ("bridge", "tun", "nftables")


# --- what the host shows ---------------------------------------------------------------------


@dataclass
class HostView:
    """Everything the doctor reads from the host, once."""

    facts: HostFacts
    kernel: KernelFeatures
    netns: bool = True
    nft_binary: bool = True
    ruleset: dict[str, Any] | None = None  # `nft -j list ruleset`, None if unreadable
    legacy_forward: list[str] = field(default_factory=list)  # `iptables-legacy -S FORWARD`
    processes: list[ProcessInfo] = field(default_factory=list)  # DHCP servers in this netns
    ip_forward: bool | None = None
    br_netfilter: bool = False
    # the links that answer ARP for the host's addresses on other links (arp_flux_links);
    # None: not read (the kernel's defaults are assumed)
    arp_flux: tuple[str, ...] | None = None
    # the networks a packaged libvirt defines or runs (its files in /etc and /run)
    libvirt: list[LibvirtNetwork] = field(default_factory=list)


# --- findings ------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    problem: bool = False  # a failed check that keeps networks from working (exit status 1)
    fix: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "problem": self.problem,
                "detail": self.detail, "fix": self.fix}


@dataclass
class NetworkDiagnosis:
    name: str
    mode: str
    active: bool
    rows: list[Row]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    guest_config: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # worth knowing, not a problem (yet)

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.name, "mode": self.mode, "active": self.active,
                "problems": self.problems, "warnings": self.warnings, "notes": self.notes,
                "reachability": [row.to_dict() for row in self.rows],
                "guest_dhcp_config": self.guest_config}


@dataclass
class DoctorReport:
    checks: list[Check]
    networks: list[NetworkDiagnosis]

    @property
    def healthy(self) -> bool:
        return not any(c.problem for c in self.checks) and not any(
            n.problems for n in self.networks)

    def to_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "host": [c.to_dict() for c in self.checks],
                "networks": [n.to_dict() for n in self.networks]}


# --- firewalls -----------------------------------------------------------------------------------

_TERMINAL_DROPS = {"drop", "reject"}
_HARMLESS = {"counter", "log", "limit", "comment"}


def _is_unconditional_drop(expr: list[dict[str, Any]]) -> bool:
    """A rule made only of counters/logs and a drop or reject verdict (iptables-nft writes
    ``-j REJECT`` as an xt target)."""
    verdict = False
    for statement in expr:
        if len(statement) != 1:
            return False
        key, value = next(iter(statement.items()))
        if key in _TERMINAL_DROPS:
            verdict = True
        elif key == "xt" and isinstance(value, dict) and value.get("type") == "target" \
                and str(value.get("name", "")).upper() in ("DROP", "REJECT"):
            verdict = True
        elif key not in _HARMLESS:
            return False
    return verdict


def _table_label(family: str, table: str, chains: list[str]) -> str:
    label = f"{family} {table}"
    if family in ("ip", "ip6") and table in IPTABLES_TABLES and any(c.isupper() for c in chains):
        label += " (iptables-nft)"
    return label


def _is_address(left: dict[str, Any]) -> bool:
    payload = left.get("payload")
    return isinstance(payload, dict) and payload.get("field") in ("saddr", "daddr")


def _accepts_bridge(rules: list[list[dict[str, Any]]], key: str, bridge: str) -> bool:
    """Whether one of RULES accepts what the meta KEY (iifname/oifname) says is BRIDGE,
    with nothing else than connection-state matches and counters beside it."""
    for expr in rules:
        if not expr or "accept" not in expr[-1]:
            continue
        names_bridge = False
        other = False
        for statement in expr[:-1]:
            match = statement.get("match")
            if isinstance(match, dict):
                left = match.get("left", {})
                if left == {"meta": {"key": key}} and match.get("right") == bridge \
                        and match.get("op") in ("==", "in"):
                    names_bridge = True
                    continue
                if isinstance(left, dict) and ("ct" in left or _is_address(left)):
                    continue  # connection state, or the network's own subnet
                other = True
            elif not set(statement) <= _HARMLESS:
                other = True
        if names_bridge and not other:
            return True
    return False


def forward_blockers(ruleset: dict[str, Any] | None, hook: str = "forward",
                     bridge: str | None = None) -> list[tuple[str, str]]:
    """Base chains of other tables on HOOK that drop what they do not accept: (chain as
    "FAMILY TABLE CHAIN", why). virtnet's own table is never counted. With BRIDGE, a chain
    that accepts that bridge's traffic both ways (in by iifname, out by oifname) does not
    block it."""
    if not ruleset:
        return []
    items = ruleset.get("nftables", [])
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    names: dict[tuple[str, str], list[str]] = {}
    rules: dict[tuple[str, str, str], list[list[dict[str, Any]]]] = {}
    for item in items:
        if "chain" in item:
            chain = item["chain"]
            key = (chain["family"], chain["table"], chain["name"])
            chains[key] = chain
            names.setdefault(key[:2], []).append(chain["name"])
        elif "rule" in item:
            rule = item["rule"]
            key = (rule["family"], rule["table"], rule["chain"])
            rules.setdefault(key, []).append(rule.get("expr", []))
    found = []
    for key, chain in chains.items():
        family, table, name = key
        if (family, table) == OUR_TABLE or chain.get("hook") != hook:
            continue
        if family not in ("ip", "ip6", "inet"):
            continue
        label = f"{_table_label(family, table, names[(family, table)])} chain {name}"
        chain_rules = rules.get(key, [])
        if bridge is not None and _accepts_bridge(chain_rules, "iifname", bridge) \
                and _accepts_bridge(chain_rules, "oifname", bridge):
            continue
        if chain.get("policy") == "drop":
            found.append((f"{family} {table} {name}", f"{label}: policy drop"))
        elif any(_is_unconditional_drop(expr) for expr in chain_rules):
            found.append((f"{family} {table} {name}", f"{label}: a rule drops or rejects "
                                                      "everything not accepted before it"))
    return found


def network_forward_blockers(net: Network, ruleset: dict[str, Any] | None) -> tuple[str, ...]:
    """The chains of other firewalls that drop NET's forwarded traffic. net-start opens them
    for isolated, nat and route networks itself (:mod:`virtnet.plan.coexist`); an open network
    is, by definition, left to the administrator's firewall."""
    driver = driver_for(net)
    if not net.bridge_name or driver.topology(net).macvtap \
            or driver.capabilities(net).coexistence:  # opened at start
        return ()
    return tuple(chain for chain, _ in forward_blockers(ruleset, bridge=net.bridge_name))


def legacy_blockers(forward_rules: list[str]) -> list[str]:
    """From `iptables-legacy -S FORWARD`: the policy or rules that drop everything."""
    found = []
    for line in forward_rules:
        words = line.split()
        if words[:3] == ["-P", "FORWARD", "DROP"]:
            found.append("legacy iptables FORWARD: policy DROP")
        elif words[:2] == ["-A", "FORWARD"] and words[2:] in (["-j", "DROP"], ["-j", "REJECT"]):
            found.append(f"legacy iptables FORWARD: {' '.join(words[2:])} for everything")
    return found


# --- DHCP servers --------------------------------------------------------------------------------


def _dnsmasq_interfaces(proc: ProcessInfo) -> tuple[list[str], bool]:
    """(interfaces it serves, whether it serves DHCP at all)."""
    interfaces: list[str] = []
    dhcp = False
    args = list(proc.argv[1:])
    lines = [f"--{line.strip()}" for line in proc.conf_text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    for index, arg in enumerate(args + lines):
        if arg.startswith("--interface="):
            interfaces += arg.split("=", 1)[1].split(",")
        elif arg in ("-i", "--interface") and index + 1 < len(args):
            interfaces += args[index + 1].split(",")
        elif arg.startswith("-i") and len(arg) > 2 and not arg.startswith("--"):
            interfaces += arg[2:].split(",")
        if arg.startswith(("--dhcp-range", "-F")):
            dhcp = True
    return interfaces, dhcp


def other_dhcp_servers(processes: list[ProcessInfo], bridge: str,
                       ours: int | None) -> list[str]:
    """The DHCP servers besides ours (pid OURS) that serve BRIDGE."""
    found = []
    for proc in processes:
        if proc.pid == ours:
            continue
        if proc.comm == "dnsmasq":
            interfaces, dhcp = _dnsmasq_interfaces(proc)
            if dhcp and (bridge in interfaces or not interfaces):
                scope = "on every interface" if not interfaces else f"on {bridge}"
                found.append(f"dnsmasq (pid {proc.pid}) serves DHCP {scope}")
        elif proc.comm in DHCP_SERVER_PROGRAMS:
            words = [w for w in proc.argv[1:] if not w.startswith("-")]
            if bridge in words or not any(not w.startswith("/") for w in words):
                found.append(f"{proc.comm} (pid {proc.pid}) may answer DHCP on {bridge}")
    return found


# --- per network ---------------------------------------------------------------------------------


def _default_route(facts: HostFacts) -> Any:
    for route in facts.routes:
        if route.destination.prefixlen == 0 and route.destination.version == 4:
            return route
    return None


def _address_on(facts: HostFacts, link: str | None) -> str | None:
    for addr in facts.addresses:
        if addr.link == link and addr.interface.version == 4:
            return str(addr.interface)
    return None


def _routes_via(facts: HostFacts, link: str | None) -> tuple[str, ...]:
    kept = []
    for route in facts.routes:
        if route.link == link and route.gateway is not None and route.destination.version == 4:
            dest = "default" if route.destination.prefixlen == 0 else str(route.destination)
            kept.append(f"{dest} via {route.gateway}")
    return tuple(kept)


def host_topology(net: Network, view: HostView, active: bool) -> tuple[Topology, list[str]]:
    """The topology reach needs, from the host's facts; and notes on what was assumed."""
    facts = view.facts
    notes = []
    default = _default_route(facts)
    outside = default.link if default is not None else None
    blockers = network_forward_blockers(net, view.ruleset)
    shape = driver_for(net).topology(net)
    topo = Topology(
        outside_dev=outside,
        has_default_route=default is not None,
        host_uplink=outside,
        host_address=_address_on(facts, outside),
        uplink_routes=_routes_via(facts, outside),
        ip_forward=view.ip_forward if active else None,
        forward_blockers=blockers,
        br_netfilter=view.br_netfilter,
    )
    if shape.routed:
        notes.append("assumed: the LAN router has no route to the network's subnet via this host")
    if shape.macvtap:
        notes.append("assumed: the external switch ports do not hairpin (no reflective relay)")
        devs = pool(net)
        shim = next((l for l in facts.links.values()
                     if l.kind == "macvlan" and _address_on(facts, l.name)), None)
        host_link = None
        for dev in devs:
            if _address_on(facts, dev):
                host_link = dev
                break
        if view.arp_flux is not None:
            topo = _replace(topo, flux_uplinks=tuple(d for d in devs if d in view.arp_flux))
        if shim is not None:
            topo = _replace(topo, host_shim=True, host_uplink=host_link or (devs[0] if devs
                                                                              else None))
        elif host_link is not None:
            topo = _replace(topo, host_uplink=host_link, host_address=_address_on(facts, host_link),
                            uplink_routes=_routes_via(facts, host_link))
        elif net.forward_mode is not ForwardMode.PASSTHROUGH and outside is not None:
            notes.append(f"the host's address is on {outside}, not on the network's uplinks: "
                         "assumed on the same LAN")
    if shape.host_bridge is not None:
        bridge = facts.link(shape.host_bridge)
        ports = [l for l in facts.links.values()
                 if bridge is not None and l.master == bridge.index
                 and l.kind not in ("tun", "tap") and not l.name.startswith("vnet")]
        topo = _replace(topo, bridge_has_uplink=bool(ports) or bridge is None,
                        host_uplink_port=ports[0].name if ports else None)
    return topo, notes


def _replace(topo: Topology, **changes: Any) -> Topology:
    return replace(topo, **changes)


def diagnose_network(net: Network, view: HostView, record: NetworkRecord | None = None,
                     health_problems: list[str] | None = None) -> NetworkDiagnosis:
    """One network's problems and reachability table (pure, given the view)."""
    active = record is not None and record.active
    topo, notes = host_topology(net, view, active)
    problems = list(health_problems or [])
    if active:  # an inactive network's collisions are among its preflight's, as start says
        problems += [p.message for p in view.facts.subnet_collisions(net, active=True)]
    else:
        try:
            problems += [f"cannot start: {p.message}"
                         for p in driver_for(net).preflight(net, view.facts)]
        except HostError as exc:
            problems.append(str(exc))
    if active and net.forward_mode in (ForwardMode.NAT, ForwardMode.ROUTE, ForwardMode.OPEN) \
            and view.ip_forward is False and net.ipv4_defs():
        problems.append("IPv4 forwarding was switched off after the network started")
    if net.forward_mode.has_own_bridge and net.bridge_name and any(ip.has_dhcp for ip in net.ips):
        ours = record.status.dnsmasq_pid if record is not None and record.status else None
        problems += [f"a second DHCP server on {net.bridge_name}: {found}"
                     for found in other_dhcp_servers(view.processes, net.bridge_name, ours)]
    if topo.forward_blockers:
        problems.append("another firewall drops forwarded traffic: "
                        + ", ".join(topo.forward_blockers) + " (see the fixes below)")
    return NetworkDiagnosis(net.name, driver_for(net).topology(net).label, active,
                            summary(net, topo), problems, notes, guest_dhcp_config(net),
                            libvirt_overlaps(net, view.libvirt))


def libvirt_overlaps(net: Network, libvirt: Iterable[LibvirtNetwork]) -> list[str]:
    """Warnings for each of libvirt's networks whose subnet overlaps one of NET's, naming
    that network and the files that show it (its definition, its status when running)."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for other in libvirt:
        for ip in net.ips:
            if ip.interface is None:
                continue
            ours = ip.interface.network
            for theirs in other.subnets:
                if theirs.version == ours.version and theirs.overlaps(ours):
                    found.setdefault((str(ours), other.name, str(theirs)), []).append(
                        other.source)
    return [f"{ours} overlaps libvirt's network '{name or '?'}' ({theirs}, "
            f"{' and '.join(sources)}): where both run, their routes and DHCP collide"
            for (ours, name, theirs), sources in found.items()]


def host_checks(view: HostView, networks: list[Network]) -> list[Check]:
    """The host preflight (pure, given the view)."""
    checks = []
    needed = set(ALWAYS_NEEDED)
    shapes = [(n, driver_for(n).topology(n)) for n in networks]
    if any(shape.macvtap for _, shape in shapes):
        needed |= {"macvlan", "macvtap"}
    for feature, present in view.kernel.to_dict().items():
        if feature in ("vlan", "ifb"):
            continue

        checks.append(Check(f"kernel: {feature}", present,
                            "present" if present else f"missing: {FEATURE_TEXT[feature]}",
                            problem=not present and feature in needed))
    checks.append(Check("kernel: netns", view.netns, "present" if view.netns else
                        "missing: network namespaces (CONFIG_NET_NS)", problem=not view.netns))
    wants_dnsmasq = any(shape.own_bridge and n.ips for n, shape in shapes)
    checks.append(Check("dnsmasq", bool(view.facts.dnsmasq),
                        view.facts.dnsmasq or "not installed (apt-get install dnsmasq-base)",
                        problem=not view.facts.dnsmasq and wants_dnsmasq,
                        fix=[] if view.facts.dnsmasq else ["apt-get install dnsmasq-base"]))
    checks.append(Check("nftables", view.facts.nftables and view.nft_binary,
                        "libnftables and nft present" if view.nft_binary and view.facts.nftables
                        else "nft not installed (apt-get install nftables)",
                        problem=not view.facts.nftables,
                        fix=[] if view.nft_binary else ["apt-get install nftables"]))
    if view.ip_forward is not None:
        checks.append(Check("IPv4 forwarding", view.ip_forward,
                            "on" if view.ip_forward else
                            "off (net-start of a nat/route/open network switches it on)"))
    for chain, why in forward_blockers(view.ruleset):
        checks.append(Check("firewall", False, f"{why}: forwarded guest traffic is dropped "
                            "unless that table accepts it (net-start lets isolated, nat and "
                            "route networks through; open networks need the fix)",
                            fix=[f"nft insert rule {chain} iifname BRIDGE accept",
                                 f"nft insert rule {chain} oifname BRIDGE accept"]))
    for why in legacy_blockers(view.legacy_forward):
        checks.append(Check("firewall", False, f"{why}: forwarded guest traffic is dropped",
                            problem=True, fix=["iptables-legacy -I FORWARD -i BRIDGE -j ACCEPT",
                                               "iptables-legacy -I FORWARD -o BRIDGE -j ACCEPT"]))
    for chain, why in forward_blockers(view.ruleset, hook="input"):
        checks.append(Check("firewall (input)", False, f"{why}: guests' DHCP and DNS requests "
                            "to the host are dropped unless accepted there",
                            fix=[f"nft insert rule {chain} iifname BRIDGE udp dport "
                                 "{ 53, 67 } accept"]))
    if view.ruleset is None:
        checks.append(Check("firewall", False, "could not read the nftables ruleset "
                            "(nft -j list ruleset)"))
    if view.br_netfilter:
        checks.append(Check("br_netfilter", False, "bridged frames pass the IP firewall "
                            "(net.bridge.bridge-nf-call-iptables=1): forward chains that drop "
                            "also cut guests of host bridges off",
                            fix=["sysctl -w net.bridge.bridge-nf-call-iptables=0"]))
    return checks


def diagnose(view: HostView, networks: list[tuple[Network, NetworkRecord | None, list[str]]]
             ) -> DoctorReport:
    """Judge the host and the networks (each with its record and health problems)."""
    checks = host_checks(view, [n for n, _, _ in networks])
    return DoctorReport(checks, [diagnose_network(net, view, record, health)
                                 for net, record, health in networks])


# --- reading the host ----------------------------------------------------------------------------


def arp_flux_links(links: list[str], addressed: set[str],
                   host: Host | None = None) -> tuple[str, ...]:
    """Those of LINKS (up) on which this namespace answers ARP for an address it holds on
    another link, by their arp_ignore, arp_filter and rp_filter (conf/all and the link's);
    ADDRESSED: the links with an IPv4 address of their own. HOST: the handle to read the
    sysctls through (one of its own if none)."""
    if host is None:
        with Host() as own:
            return arp_flux_links(links, addressed, own)

    def value(scope: str, key: str) -> int:
        text = host.sysctl_get(f"net/ipv4/conf/{scope}/{key}")
        try:
            return int(text) if text is not None else 0
        except ValueError:
            return 0

    found = []
    for link in links:
        if host.sysctl_get(f"net/ipv4/conf/{link}/arp_ignore") is None:
            continue  # no IPv4 on it (or no such link)
        ignore, filter_, rp = (max(value("all", k), value(link, k))
                               for k in ("arp_ignore", "arp_filter", "rp_filter"))
        if answers_arp_for_others(ignore, bool(filter_), rp, link in addressed):
            found.append(link)
    return tuple(found)


def read_ruleset() -> dict[str, Any] | None:
    """`nft -j list ruleset` of this namespace, parsed; None when it cannot be read."""
    return Host.nft_ruleset()


def read_host_view(networks: Mapping[str, str] | None = None,
                   libvirt_dirs: Iterable[Path] = LIBVIRT_NETWORK_DIRS) -> HostView:
    """Read what the doctor judges, in the namespace this process is in; NETWORKS: the
    bridges of the active virtnet networks (Engine.active_bridges); LIBVIRT_DIRS: where a
    packaged libvirt keeps its network definitions and status files."""
    with Host() as host:
        facts = host.read_facts(networks)
        forward = host.sysctl_get("net/ipv4/ip_forward")
        nf_call = host.sysctl_get("net/bridge/bridge-nf-call-iptables")
        return HostView(
            facts=facts,
            kernel=host.kernel_features(),
            netns=host.has_netns(),
            nft_binary=shutil.which("nft", path="/usr/sbin:/usr/bin:/sbin:/bin") is not None,
            ruleset=host.nft_ruleset(),
            legacy_forward=host.legacy_forward_rules(),
            processes=host.processes(DHCP_SERVER_PROGRAMS),
            ip_forward=None if forward is None else forward.strip() == "1",
            br_netfilter=nf_call is not None and nf_call.strip() == "1",
            arp_flux=arp_flux_links([link.name for link in facts.links.values() if link.up],
                                    {a.link for a in facts.addresses if a.interface.version == 4},
                                    host),
            libvirt=libvirt_networks(host.libvirt_network_files(libvirt_dirs)),
        )


def run_doctor(engine: Engine, targets: list[Network | str],
               libvirt_dirs: Iterable[Path] = LIBVIRT_NETWORK_DIRS) -> DoctorReport:
    """Doctor the networks named (by name, or parsed from files); all defined ones if none.
    LIBVIRT_DIRS: where libvirt's network files are (its own directories by default)."""
    view = read_host_view(engine.active_bridges(), libvirt_dirs)
    items: list[tuple[Network, NetworkRecord | None, list[str]]] = []
    if not targets:
        targets = [record.name for record in engine.records()]
    for target in targets:
        if isinstance(target, Network):
            items.append((target, None, []))
            continue
        record = engine.lookup(target)
        items.append((record.current, record, engine.health(record).problems))
    return diagnose(view, items)


__all__ = [
    "Check",
    "DoctorReport",
    "HostView",
    "NetworkDiagnosis",
    "ProcessInfo",
    "diagnose",
    "diagnose_network",
    "forward_blockers",
    "host_checks",
    "host_topology",
    "legacy_blockers",
    "libvirt_overlaps",
    "network_forward_blockers",
    "other_dhcp_servers",
    "read_host_view",
    "read_ruleset",
    "run_doctor",
]
