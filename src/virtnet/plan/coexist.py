"""Living beside other firewalls: let a network's traffic through their drop rules.

In nftables every base chain on a hook sees the packet: an accept in virtnet's table ends
only that table's chain, and a drop in another table's chain on the same hook still drops.
Docker (iptables-nft: ``ip filter`` FORWARD with policy drop, and its DOCKER-USER chain),
firewalld (``inet firewalld``, rejecting at the end of its chains) and ufw (iptables, policy
drop) do exactly that, and NAT guests lose the outside world when they start.

At network start, ``AllowThroughOtherFirewalls`` looks at the ruleset: every base chain of
another table on the forward or input hook that drops (by policy, or with a drop or reject
rule of its own) gets the narrowest accept rules for this network's traffic, inserted at the
top of the place where they take effect:
- Docker: its DOCKER-USER chain when present (FORWARD jumps there first; Docker leaves it to
  the administrator), else the iptables FORWARD chain itself;
- tables managed by iptables-nft (``ip``/``ip6`` ``filter``) are changed with iptables
  itself, so that iptables-save, Docker and ufw keep understanding them;
- other nftables tables with ``nft insert rule``, each rule's handle recorded.
Every rule carries the comment ``virtnet:<network>``; the action records each rule (with why
it was added) and its undo deletes exactly those rules, nothing else. No rule of anyone else is
ever flushed, moved or changed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from virtnet.errors import HostError, HostObjectMissing, NotInstalled
from virtnet.execute.executor import undoing
from virtnet.spec.model import Bridge, Forward, ForwardMode, IpDef, Network
from virtnet.plan.actions import RECORDED, Action
import ipaddress

if TYPE_CHECKING:
    from virtnet.host import Host

OUR_TABLE = ("inet", "virtnet")
IPTABLES_TABLE = "filter"
DOCKER_USER = "DOCKER-USER"
COMMENT_PREFIX = "virtnet:"
HOOKS = ("forward", "input")
PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")  # a table name nft reads unquoted


# --- what the network needs let through (pure) -------------------------------------------


@dataclass(frozen=True)
class Allowance:
    """One accept rule, in both dialects: iptables arguments and nft rule text."""

    hook: str  # forward / input
    version: int  # 4 or 6
    iptables: tuple[str, ...]
    nft: str


def _allowances(net: Network, dev: str | None,
                forwards: list[tuple[str, str, int, str]]) -> list[Allowance]:
    """The accept rules NET needs (FORWARDS: protocol, guest, IP version, target ports)."""
    bridge = net.bridge_name or ""
    out: list[Allowance] = []
    quoted = f'"{bridge}"'
    out.append(Allowance("forward", 4, ("-i", bridge, "-o", bridge, "-j", "ACCEPT"),
                         f"iifname {quoted} oifname {quoted} accept"))
    versions = sorted({ip.network.version for ip in net.ips if ip.network is not None})
    out_dev = ("-o", dev) if dev else ()
    in_dev = ("-i", dev) if dev else ()
    nft_out_dev = f' oifname "{dev}"' if dev else ""
    nft_in_dev = f' iifname "{dev}"' if dev else ""
    for ipdef in net.ips:
        subnet = ipdef.network
        if subnet is None or net.forward_mode is ForwardMode.NONE:
            continue
        v, proto = subnet.version, ("ip6" if subnet.version == 6 else "ip")
        out.append(Allowance(
            "forward", v, ("-i", bridge, "-s", str(subnet), *out_dev, "-j", "ACCEPT"),
            f"iifname {quoted} {proto} saddr {subnet}{nft_out_dev} accept"))
        if net.forward_mode is ForwardMode.ROUTE:
            out.append(Allowance(
                "forward", v, ("-o", bridge, "-d", str(subnet), *in_dev, "-j", "ACCEPT"),
                f"oifname {quoted} {proto} daddr {subnet}{nft_in_dev} accept"))
        else:
            out.append(Allowance(
                "forward", v,
                ("-o", bridge, "-d", str(subnet), *in_dev, "-m", "conntrack",
                 "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
                f"oifname {quoted} {proto} daddr {subnet}{nft_in_dev} "
                "ct state established,related accept"))
    for l4, guest, version, ports in forwards:
        proto = "ip6" if version == 6 else "ip"
        out.append(Allowance(
            "forward", version,
            ("-o", bridge, "-d", guest, "-p", l4, "--dport", ports.replace("-", ":"),
             "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"),
            f"oifname {quoted} {proto} daddr {guest} {l4} dport {ports} ct status dnat accept"))
    # what dnsmasq serves to the guests (DHCP, DNS), as virtnet's own input rules allow
    for l4, port in (("udp", 67), ("udp", 53), ("tcp", 53)):
        out.append(Allowance("input", 4, ("-i", bridge, "-p", l4, "--dport", str(port),
                                          "-j", "ACCEPT"),
                             f"iifname {quoted} meta nfproto ipv4 {l4} dport {port} accept"))
    if 6 in versions:
        for l4, port in (("udp", 547), ("udp", 53), ("tcp", 53)):
            out.append(Allowance("input", 6, ("-i", bridge, "-p", l4, "--dport", str(port),
                                              "-j", "ACCEPT"),
                                 f"iifname {quoted} meta nfproto ipv6 {l4} dport {port} accept"))
    return out


# --- what the host's ruleset holds ----------------------------------------------------------


@dataclass(frozen=True)
class DropChain:
    """A base chain of another table that drops packets on a hook we need."""

    family: str
    table: str
    chain: str
    hook: str
    reason: str


def find_drop_chains(ruleset: dict[str, Any]) -> tuple[list[DropChain], set[tuple[str, str, str]]]:
    """Base chains on the forward/input hooks of tables other than ours that drop by policy or
    by a rule of their own; and every (family, table, chain) that exists (pure: takes the
    output of ``nft -j list ruleset``)."""
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    dropping_rules: dict[tuple[str, str, str], int] = {}
    for item in ruleset.get("nftables", []):
        if "chain" in item:
            c = item["chain"]
            chains[(c["family"], c["table"], c["name"])] = c
        elif "rule" in item:
            r = item["rule"]
            verdicts = [e for e in r.get("expr", []) if "drop" in e or "reject" in e]
            if verdicts:
                key = (r["family"], r["table"], r["chain"])
                dropping_rules[key] = dropping_rules.get(key, 0) + 1
    found = []
    for key, c in chains.items():
        if (key[0], key[1]) == OUR_TABLE or c.get("hook") not in HOOKS:
            continue
        if c.get("type", "filter") != "filter":
            continue
        reasons = []
        if c.get("policy") == "drop":
            reasons.append("its policy is drop")
        if dropping_rules.get(key):
            reasons.append(f"{dropping_rules[key]} rule(s) drop or reject")
        if reasons:
            found.append(DropChain(key[0], key[1], key[2], c["hook"],
                                   f"{key[0]} {key[1]} chain {key[2]} on the {c['hook']} hook: "
                                   + " and ".join(reasons)))
    return found, set(chains)


def other_tables_ruleset(host: Host) -> dict[str, Any]:
    """What ``nft -j list ruleset`` shows of every table but ours.

    Our own table holds most of the rules on a virtnet host and none of them matter here, so
    the tables are listed first and only the others are read (in the usual case there are
    none, or a few small ones): a start or an apply then does not pay for rendering our own
    ruleset as JSON."""
    listing = host.nft_json("list tables\n", what="list the nftables tables")
    others = [(t["family"], t["name"]) for item in listing.get("nftables", [])
              if (t := item.get("table")) is not None and (t["family"], t["name"]) != OUR_TABLE]
    if not all(PLAIN_NAME.fullmatch(name) for _, name in others):
        # a table name nft's grammar would need quoted: read everything instead
        return host.nft_json("list ruleset\n", what="list the ruleset")
    items: list[Any] = []
    for family, name in others:
        items += host.nft_json(f"list table {family} {name}\n",
                               what=f"list table {family} {name}").get("nftables", [])
    return {"nftables": items}


def is_iptables_table(family: str, table: str) -> bool:
    """Tables iptables-nft manages: changing them with nft would make them unreadable to
    iptables (and so to Docker and ufw)."""
    return family in ("ip", "ip6") and table == IPTABLES_TABLE


def _versions_of(family: str) -> tuple[int, ...]:
    return {"ip": (4,), "ip6": (6,), "inet": (4, 6), "bridge": ()}.get(family, ())


# --- the action ------------------------------------------------------------------------------


def _iptables_binary(version: int) -> str | None:
    names = ("iptables-nft", "iptables") if version == 4 else ("ip6tables-nft", "ip6tables")
    for name in names:
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
        if path:
            return path
    return None


@dataclass
class AllowThroughOtherFirewalls(Action):
    """Add accept rules for one network to other tables' dropping chains (found at apply)."""

    kind: ClassVar[str] = "allow-through-other-firewalls"
    network: str
    bridge: str
    forward_mode: str
    dev: str | None = None
    ips: list[str] = field(default_factory=list)  # the network's subnets, CIDR
    forwards: list[list[Any]] = field(default_factory=list)  # [proto, guest, version, port]
    added: list[dict[str, Any]] = field(default_factory=list, metadata={RECORDED: True})

    @property
    def comment(self) -> str:
        return COMMENT_PREFIX + self.network

    def _net(self) -> Network:
        net = Network(name=self.network, bridge=Bridge(name=self.bridge))
        mode = ForwardMode(self.forward_mode)
        if mode is not ForwardMode.NONE:
            net.forward = Forward(mode=mode)
        for cidr in self.ips:
            iface = ipaddress.ip_interface(cidr)
            net.ips.append(IpDef(address=iface.ip, prefix=iface.network.prefixlen))
        return net

    def allowances(self) -> list[Allowance]:
        return _allowances(self._net(), self.dev,
                           [(p, g, int(v), str(ports)) for p, g, v, ports in self.forwards])

    def describe(self) -> str:
        return (f"let network {self.network}'s traffic through other firewalls' dropping "
                "forward/input chains (found when applied)")

    def commands(self) -> list[str]:
        # What apply decides from the live ruleset, as shell conditions on that ruleset, so
        # the lines stay runnable: they add nothing where no other firewall drops traffic.
        lines = ["# open other firewalls' dropping chains for this network's traffic, if any"]
        for allowance in self.allowances():
            binary = "iptables" if allowance.version == 4 else "ip6tables"
            family = "ip" if allowance.version == 4 else "ip6"
            spec = " ".join([*allowance.iptables[:-2], "-m", "comment", "--comment",
                             self.comment, *allowance.iptables[-2:]])
            chain = "INPUT" if allowance.hook == "input" else "FORWARD"
            drops = (f"nft list chain {family} filter {chain} 2>/dev/null "
                     "| grep -q 'policy drop'")
            if chain == "FORWARD":
                has_user = f"nft list chain {family} filter {DOCKER_USER} >/dev/null 2>&1"
                lines.append(f"if {has_user}; then {binary} -w 5 -t filter -I {DOCKER_USER} 1 "
                             f"{spec}; elif {drops}; then {binary} -w 5 -t filter -I FORWARD 1 "
                             f"{spec}; fi")
            else:
                lines.append(f"if {drops}; then {binary} -w 5 -t filter -I INPUT 1 {spec}; fi")
            lines.append(f"# other nftables tables dropping on the {allowance.hook} hook get: "
                         f"insert rule ... {allowance.nft} comment \"{self.comment}\"")
        return lines

    def apply(self, host: Host) -> None:
        self.added = []
        # in-process through libnftables when it is installed: no process on the start path
        try:
            ruleset = other_tables_ruleset(host)
        except NotInstalled:
            return  # without nftables no other nftables table can be seen
        drop_chains, existing = find_drop_chains(ruleset)
        try:
            for chain in drop_chains:
                self._open(host, chain, existing)
        except BaseException:
            self.undo(host)  # Plan.apply does not undo the failing step itself
            raise

    def _open(self, host: Host, chain: DropChain, existing: set[tuple[str, str, str]]) -> None:
        wanted = [a for a in self.allowances()
                  if a.hook == chain.hook and a.version in _versions_of(chain.family)]
        if not wanted:
            return
        if is_iptables_table(chain.family, chain.table):
            target = chain.chain
            if chain.hook == "forward" and (chain.family, chain.table, DOCKER_USER) in existing:
                target = DOCKER_USER
            binary = _iptables_binary(wanted[0].version)
            if binary is None:
                raise HostError(f"{chain.reason}, but iptables is not installed to open it")
            # inserted newest-first at position 1, so they read in our order
            for allowance in reversed(wanted):
                spec = [*allowance.iptables[:-2], "-m", "comment", "--comment", self.comment,
                        *allowance.iptables[-2:]]
                host.run([binary, "-w", "5", "-t", chain.table, "-I", target, "1", *spec])
                self.added.append({
                    "tool": "iptables", "binary": binary, "family": chain.family,
                    "table": chain.table, "chain": target, "spec": spec,
                    "rule": " ".join(allowance.iptables), "why": chain.reason,
                })
            return
        for allowance in reversed(wanted):
            rule = f"{allowance.nft} comment \"{self.comment}\""
            out = host.nft(f"insert rule {chain.family} {chain.table} {chain.chain} {rule}\n",
                           what=f"open {chain.family} {chain.table} {chain.chain}",
                           handles=True, echo=True)
            match = re.search(r"# handle (\d+)", out)
            if match is None:
                raise HostError(f"nft did not report the handle of the rule added to "
                                f"{chain.family} {chain.table} {chain.chain}")
            self.added.append({
                "tool": "nft", "family": chain.family, "table": chain.table,
                "chain": chain.chain, "handle": int(match.group(1)), "rule": allowance.nft,
                "why": chain.reason,
            })

    def undo(self, host: Host) -> None:
        rules = [_AddedRule(record, self.comment) for record in self.added]
        errors = [str(exc) for _, _, exc in undoing(rules, host, catch=HostError)
                  if exc is not None]
        self.added = []
        if errors:
            raise HostError("; ".join(errors))


@dataclass
class _AddedRule:
    """One rule an AllowThroughOtherFirewalls added, as a step the executor undoes."""

    record: dict[str, Any]
    comment: str

    def undo(self, host: Host) -> None:
        _remove(host, self.record, self.comment)


def _remove(host: Host, record: dict[str, Any], comment: str) -> None:
    """Delete one recorded rule; a rule already gone is fine (undo may run twice)."""
    if record["tool"] == "iptables":
        try:
            host.iptables_delete([record["binary"], "-w", "5", "-t", record["table"], "-D",
                                  record["chain"], *record["spec"]],
                                 what=f"remove {record['rule']} from {record['chain']}")
        except HostObjectMissing:
            pass  # removed before (or its chain went)
        return
    family, table, chain = record["family"], record["table"], record["chain"]
    try:
        listing = host.nft(f"list chain {family} {table} {chain}\n",
                           what=f"list {family} {table} {chain}", handles=True)
    except HostError:
        return  # the chain (or its table) is gone, and our rule with it
    # the handle must still be ours: a table recreated since could reuse it
    ours = re.search(rf'comment "{re.escape(comment)}" # handle {record["handle"]}\b', listing)
    if ours is None:
        return
    host.nft(f"delete rule {family} {table} {chain} handle {record['handle']}\n",
             what=f"remove {record['rule']} from {family} {table} {chain}")


def recorded_rules(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a status record says was added to other firewalls, for net-info and doctor."""
    rules: list[dict[str, Any]] = []
    for data in actions:
        if data.get("kind") == AllowThroughOtherFirewalls.kind:
            for record in data.get("added", []):
                rules.append({
                    "table": f"{record['family']} {record['table']}",
                    "chain": record["chain"],
                    "rule": record["rule"],
                    "why": record["why"],
                    "tool": record["tool"],
                })
    return rules
