"""Network definition → nftables ruleset text (pure; nothing here touches the host).

virtnet keeps every rule in one table of its own, ``table inet virtnet``; no other table is
ever read or changed. The table holds a small shared skeleton and, per network, chains
named ``net-<id>-...``:

    chain forward (hook forward)      oifname vmap @to_bridge      → net-<id>-to
                                      iifname vmap @from_bridge    → net-<id>-from
    chain input   (hook input)        iifname vmap @input_bridge   → net-<id>-input
    chain output  (hook output)       oifname vmap @output_bridge  → net-<id>-output
    chain net-<id>-nat (hook postrouting, type nat), NAT networks only

This reproduces the order of libvirt 9.0's iptables chains (LIBVIRT_FWX, then LIBVIRT_FWI,
then LIBVIRT_FWO, each shared by all networks): a packet going *to* a virtnet bridge is
decided by that bridge's network (guest-to-guest on the same bridge first), a packet coming
*from* one and going elsewhere by the source network. Dispatching through verdict maps keyed
by interface name means a network's load and teardown add and delete exactly its own map
elements and chains: no rule handles to remember, and re-loading is idempotent ("add chain;
flush chain" plus "add element; delete element; add element").

Semantics per forward mode, as libvirt installs them:
- nat: guests may go out (to the forward dev only, if one is given); only replies
  (ct state established,related) come back in; outgoing IPv4 is masqueraded (or SNATed to
  <nat><address>) except to 224.0.0.0/24 and 255.255.255.255, with source ports of TCP and
  UDP mapped into 1024-65535 (or <nat><port>). IPv6 is routed, or masqueraded with
  <nat ipv6='yes'> (then never to ff02::/16).
- route: both directions, no NAT.
- none (isolated): nothing forwarded in or out; guest↔guest on the bridge is allowed.
- open: no rules at all (no firewall action is planned).
In every firewalled mode DHCP, DNS (and TFTP when configured) from the guests to the host
are accepted, like libvirt's INPUT/OUTPUT rules. Note that in nftables an accept only ends
evaluation of this table's base chain; a drop in another table still applies, so these
rules document intent and cover an accept-by-default host, as libvirt's do.
IPv6 rules exist only if the network has an IPv6 address or ipv6='yes'; otherwise IPv6
traffic of the bridge is left alone, as libvirt leaves ip6tables alone.

Port forwards (virtnet.spec.forwards) get three NAT chains per network in the same table:
- ``net-<id>-fwd-pre`` (prerouting): DNAT of connections arriving from outside and from
  guests of any network (a guest reaching the host's public address: hairpin);
- ``net-<id>-fwd-out`` (output): DNAT of connections the host itself makes to its own
  addresses (locally generated packets never traverse prerouting);
- ``net-<id>-fwd-post`` (postrouting): hairpin NAT. A guest of the same network that reached
  a forward would get the answer straight from its neighbour, with the wrong source address;
  masquerading such connections to the bridge address makes the answer come back through
  the host, where conntrack undoes both translations.
The network's own forward chain accepts exactly the DNATed connections to each forward's
guest and port (``filter_accepts``), ahead of its catch-all reject.
"""

from __future__ import annotations

import json

import hashlib
import re
from dataclasses import dataclass

from virtnet.errors import Problem, ValidationError
from virtnet.spec.forwards import PortForward, read_forwards
from virtnet.spec.model import ForwardMode, IpDef, Network

OUTPUT_NAT_PRIORITY = -100  # the forwards' DNAT of the host's own connections

FAMILY = "inet"
TABLE = "virtnet"
CHAIN_PREFIX = "net-"

MAP_TO_BRIDGE = "to_bridge"
MAP_FROM_BRIDGE = "from_bridge"
MAP_INPUT = "input_bridge"
MAP_OUTPUT = "output_bridge"

LOCAL_MULTICAST_V4 = "224.0.0.0/24"
LOCAL_BROADCAST_V4 = "255.255.255.255"
LOCAL_MULTICAST_V6 = "ff02::/16"
DEFAULT_NAT_PORTS = (1024, 65535)

FIREWALLED_MODES = (ForwardMode.NONE, ForwardMode.NAT, ForwardMode.ROUTE)

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_IFNAME_OK = re.compile(r"[^\s\"\\/:\x00-\x1f\x7f]{1,15}")


@dataclass(frozen=True)
class ChainNames:
    to_bridge: str
    from_bridge: str
    input: str
    output: str
    nat: str

    def all(self) -> list[str]:
        return [self.to_bridge, self.from_bridge, self.input, self.output, self.nat]


def firewall_needed(net: Network) -> bool:
    """Whether the network gets firewall rules (libvirt: none, nat and route; not open)."""
    return net.forward_mode in FIREWALLED_MODES


def chain_id(network_name: str) -> str:
    """A chain-name-safe id for a network: the name itself when it is made of letters,
    digits, '_' and '-', else a cleaned name plus a short hash so ids never collide."""
    if _SAFE_ID.fullmatch(network_name):
        return network_name
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", network_name)[:48]
    digest = hashlib.sha256(network_name.encode()).hexdigest()[:8]
    return f"{cleaned}-{digest}"


def chain_names(network_name: str) -> ChainNames:
    base = CHAIN_PREFIX + chain_id(network_name)
    return ChainNames(
        to_bridge=f"{base}-to",
        from_bridge=f"{base}-from",
        input=f"{base}-input",
        output=f"{base}-output",
        nat=f"{base}-nat",
    )


# --- helpers ---------------------------------------------------------------------------


def _quoted_ifname(name: str, path: str) -> str:
    if not _IFNAME_OK.fullmatch(name):
        raise ValidationError(
            [Problem(path, f"interface name {name!r} cannot be used in firewall rules", name)]
        )
    return f'"{name}"'


def forward_dev(net: Network) -> str | None:
    """libvirt's "forward interface": the dev attribute, else the first pool interface."""
    forward = net.forward
    if forward is None:
        return None
    if forward.dev:
        return forward.dev
    if forward.interfaces:
        return forward.interfaces[0].dev
    return None


def _has_ipv6_rules(net: Network) -> bool:
    return bool(net.ipv6_defs()) or net.ipv6


def _dhcp_ipv4_def(net: Network) -> IpDef | None:
    """The IPv4 definition dnsmasq serves DHCP/TFTP on: the first with ranges, hosts or tftp."""
    for ipdef in net.ipv4_defs():
        if ipdef.ranges or ipdef.hosts or ipdef.tftp_root:
            return ipdef
    return None


def _nat_ports(net: Network) -> tuple[int, int]:
    nat = net.forward.nat if net.forward is not None else None
    start = (nat.port_start if nat else None) or 0
    end = (nat.port_end if nat else None) or 0
    if start == 0 and end == 0:
        return DEFAULT_NAT_PORTS
    if not (0 < start < end <= 65535):
        raise ValidationError(
            [
                Problem(
                    "/network/forward/nat/port",
                    f"invalid NAT port range {start}-{end}: start must be below end, "
                    "end at most 65535",
                    f"{start}-{end}",
                )
            ]
        )
    return start, end


def _masquerades(net: Network, ipdef: IpDef) -> bool:
    """libvirt NATs IPv4 always in nat mode, IPv6 only with <nat ipv6='yes'>."""
    if net.forward_mode is not ForwardMode.NAT:
        return False
    if not ipdef.is_ipv6:
        return True
    nat = net.forward.nat if net.forward is not None else None
    return bool(nat and nat.ipv6)


# --- rule bodies -----------------------------------------------------------------------


def _to_bridge_rules(net: Network, bridge: str, dev: str | None) -> list[str]:
    rules = []
    if not _has_ipv6_rules(net):
        rules.append("meta nfproto ipv6 return")
    rules.append(f"iifname {bridge} accept")  # guest to guest on this bridge
    in_dev = f" iifname {dev}" if dev else ""
    for ipdef in net.ips:
        network = ipdef.network
        if network is None:
            continue
        proto = "ip6" if network.version == 6 else "ip"
        if _masquerades(net, ipdef):
            rules.append(
                f"{proto} daddr {network}{in_dev} ct state established,related accept"
            )
        elif net.forward_mode in (ForwardMode.NAT, ForwardMode.ROUTE):
            rules.append(f"{proto} daddr {network}{in_dev} accept")
    if net.forward_mode is ForwardMode.NAT and net.metadata is not None:
        rules += filter_accepts(net)  # port forwards: exactly their DNATed connections
    rules.append("reject")
    return rules


def _from_bridge_rules(net: Network, dev: str | None) -> list[str]:
    rules = []
    if not _has_ipv6_rules(net):
        rules.append("meta nfproto ipv6 return")
    out_dev = f" oifname {dev}" if dev else ""
    if net.forward_mode in (ForwardMode.NAT, ForwardMode.ROUTE):
        for ipdef in net.ips:
            network = ipdef.network
            if network is None:
                continue
            proto = "ip6" if network.version == 6 else "ip"
            rules.append(f"{proto} saddr {network}{out_dev} accept")
    rules.append("reject")
    return rules


def _input_rules(net: Network) -> list[str]:
    rules = ["meta nfproto ipv4 meta l4proto { tcp, udp } th dport { 53, 67 } accept"]
    dhcp4 = _dhcp_ipv4_def(net)
    if dhcp4 is not None and dhcp4.tftp_root:
        rules.append("meta nfproto ipv4 udp dport 69 accept")
    if net.ipv6_defs():
        rules.append("meta nfproto ipv6 meta l4proto { tcp, udp } th dport 53 accept")
        rules.append("meta nfproto ipv6 udp dport 547 accept")
    return rules


def _output_rules(net: Network) -> list[str]:
    rules = ["meta nfproto ipv4 meta l4proto { tcp, udp } th dport { 53, 68 } accept"]
    dhcp4 = _dhcp_ipv4_def(net)
    if dhcp4 is not None and dhcp4.tftp_root:
        rules.append("meta nfproto ipv4 udp dport 69 accept")
    if net.ipv6_defs():
        rules.append("meta nfproto ipv6 meta l4proto { tcp, udp } th dport 53 accept")
        rules.append("meta nfproto ipv6 udp dport 546 accept")
    return rules


def _nat_rules(net: Network, dev: str | None) -> list[str]:
    nat = net.forward.nat if net.forward is not None else None
    out_dev = f" oifname {dev}" if dev else ""
    rules = []
    for ipdef in net.ips:
        network = ipdef.network
        if network is None or not _masquerades(net, ipdef):
            continue
        port_start, port_end = _nat_ports(net)
        ports = f":{port_start}-{port_end}"
        if network.version == 4:
            match = f"ip saddr {network}"
            rules.append(f"{match} ip daddr {LOCAL_MULTICAST_V4}{out_dev} return")
            rules.append(f"{match} ip daddr {LOCAL_BROADCAST_V4}{out_dev} return")
            translate_to = None
            if nat is not None and nat.address_start is not None:
                translate_to = str(nat.address_start)
                if nat.address_end is not None:
                    translate_to += f"-{nat.address_end}"
            outside = f"{match} ip daddr != {network}{out_dev}"
            for l4 in ("tcp", "udp"):
                if translate_to is not None:
                    rules.append(f"{outside} meta l4proto {l4} snat ip to {translate_to}{ports}")
                else:
                    rules.append(f"{outside} meta l4proto {l4} masquerade to {ports}")
            if translate_to is not None:
                rules.append(f"{outside} snat ip to {translate_to}")
            else:
                rules.append(f"{outside} masquerade")
        else:
            # <nat><address> is IPv4 only; IPv6 is always masqueraded, as libvirt does.
            match = f"ip6 saddr {network}"
            rules.append(f"{match} ip6 daddr {LOCAL_MULTICAST_V6}{out_dev} return")
            outside = f"{match} ip6 daddr != {network}{out_dev}"
            for l4 in ("tcp", "udp"):
                rules.append(f"{outside} meta l4proto {l4} masquerade to {ports}")
            rules.append(f"{outside} masquerade")
    return rules


# --- scripts ---------------------------------------------------------------------------


def _skeleton(table: str) -> list[str]:
    t = f"{FAMILY} {table}"
    return [
        f"add table {t}",
        f"add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}",
        f"add chain {t} input {{ type filter hook input priority filter; policy accept; }}",
        f"add chain {t} output {{ type filter hook output priority filter; policy accept; }}",
        *(
            f"add map {t} {name} {{ type ifname : verdict; }}"
            for name in (MAP_TO_BRIDGE, MAP_FROM_BRIDGE, MAP_INPUT, MAP_OUTPUT)
        ),
        f"flush chain {t} forward",
        f"add rule {t} forward oifname vmap @{MAP_TO_BRIDGE}",
        f"add rule {t} forward iifname vmap @{MAP_FROM_BRIDGE}",
        f"flush chain {t} input",
        f"add rule {t} input iifname vmap @{MAP_INPUT}",
        f"flush chain {t} output",
        f"add rule {t} output oifname vmap @{MAP_OUTPUT}",
    ]


def _bridge(net: Network) -> str:
    if not net.bridge_name:
        raise ValidationError(
            [Problem("/network/bridge/@name", "the network has no bridge name (assigned at define)")]
        )
    return _quoted_ifname(net.bridge_name, "/network/bridge/@name")


def _elements(net: Network, names: ChainNames, bridge: str) -> list[tuple[str, str]]:
    return [
        (MAP_TO_BRIDGE, f"{bridge} : jump {names.to_bridge}"),
        (MAP_FROM_BRIDGE, f"{bridge} : jump {names.from_bridge}"),
        (MAP_INPUT, f"{bridge} : jump {names.input}"),
        (MAP_OUTPUT, f"{bridge} : jump {names.output}"),
    ]


def _comment_name(name: str) -> str:
    """The network's name for a comment line: as it is when plain, else quoted with escapes
    (a name may hold quotes and control characters; found by fuzzing)."""
    if name.isprintable() and '"' not in name and "\\" not in name:
        return name
    return json.dumps(name)


def render_ruleset(net: Network, *, table: str = TABLE) -> str:
    """The nft script that loads NET's rules (one atomic, idempotent transaction)."""
    if not firewall_needed(net):
        raise ValueError(f"network {net.name}: forward mode {net.forward_mode.value} has no firewall")
    t = f"{FAMILY} {table}"
    bridge = _bridge(net)
    dev_name = forward_dev(net)
    dev = _quoted_ifname(dev_name, "/network/forward/@dev") if dev_name else None
    names = chain_names(net.name)
    nat_rules = _nat_rules(net, dev)
    lines = [
        f"# virtnet network {_comment_name(net.name)}: forward mode {net.forward_mode.value}, "
        f"bridge {net.bridge_name}",
        *_skeleton(table),
    ]
    bodies = [
        (names.to_bridge, _to_bridge_rules(net, bridge, dev)),
        (names.from_bridge, _from_bridge_rules(net, dev)),
        (names.input, _input_rules(net)),
        (names.output, _output_rules(net)),
    ]
    for chain, rules in bodies:
        lines.append(f"add chain {t} {chain}")
        lines.append(f"flush chain {t} {chain}")
        lines.extend(f"add rule {t} {chain} {rule}" for rule in rules)
    if nat_rules:
        lines.append(
            f"add chain {t} {names.nat} "
            "{ type nat hook postrouting priority srcnat; policy accept; }"
        )
        lines.append(f"flush chain {t} {names.nat}")
        lines.extend(f"add rule {t} {names.nat} {rule}" for rule in nat_rules)
    for map_name, element in _elements(net, names, bridge):
        key = element.split(" : ")[0]
        # add (no-op if identical), delete, add: replaces a stale element of the same key
        lines.append(f"add element {t} {map_name} {{ {element} }}")
        lines.append(f"delete element {t} {map_name} {{ {key} }}")
        lines.append(f"add element {t} {map_name} {{ {element} }}")
    return "\n".join(lines) + "\n"


def render_teardown(net: Network, *, table: str = TABLE) -> str:
    """The nft script that removes exactly NET's map elements and chains.

    Safe to run twice and when nothing is loaded: every object is first ensured (added if
    missing), then deleted, in the same transaction.
    """
    t = f"{FAMILY} {table}"
    bridge = _bridge(net)
    names = chain_names(net.name)
    has_nat = bool(_nat_rules(net, None))
    chains = [names.to_bridge, names.from_bridge, names.input, names.output]
    if has_nat:
        chains.append(names.nat)
    lines = [f"# virtnet network {_comment_name(net.name)}: remove its rules", f"add table {t}"]
    lines.extend(
        f"add map {t} {name} {{ type ifname : verdict; }}"
        for name in (MAP_TO_BRIDGE, MAP_FROM_BRIDGE, MAP_INPUT, MAP_OUTPUT)
    )
    lines.extend(f"add chain {t} {chain}" for chain in chains)
    for map_name, element in _elements(net, names, bridge):
        key = element.split(" : ")[0]
        lines.append(f"add element {t} {map_name} {{ {element} }}")
        lines.append(f"delete element {t} {map_name} {{ {key} }}")
    for chain in chains:
        lines.append(f"flush chain {t} {chain}")
        lines.append(f"delete chain {t} {chain}")
    return "\n".join(lines) + "\n"


# --- nftables ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardChains:
    pre: str
    out: str
    post: str

    def all(self) -> list[str]:
        return [self.pre, self.out, self.post]


def forward_chains(network_name: str) -> ForwardChains:
    base = CHAIN_PREFIX + chain_id(network_name)
    return ForwardChains(pre=f"{base}-fwd-pre", out=f"{base}-fwd-out", post=f"{base}-fwd-post")


def _proto(fwd: PortForward) -> str:
    return "ip6" if fwd.version == 6 else "ip"


def _dnat_rule(fwd: PortForward, *, local_output: bool) -> str:
    proto = _proto(fwd)
    family = "ipv6" if fwd.version == 6 else "ipv4"
    if fwd.address is not None:
        match = f"{proto} daddr {fwd.address}"
    else:
        # any address of the host; the loopback ones are excluded because DNAT from them to
        # a guest would need route_localnet (and answers could not come back)
        loopback = "::1" if fwd.version == 6 else "127.0.0.0/8"
        match = f"meta nfproto {family} fib daddr type local"
        if local_output:
            match += f" {proto} daddr != {loopback}"
    return f"{match} {fwd.proto} dport {fwd.ports} dnat {proto} to {fwd.target()}"


def _hairpin_rule(fwd: PortForward, bridge: str, net: Network) -> list[str]:
    proto = _proto(fwd)
    rules = []
    for ipdef in net.ips:
        subnet = ipdef.network
        if subnet is None or subnet.version != fwd.version or fwd.to_address not in subnet:
            continue
        rules.append(
            f"oifname {bridge} {proto} saddr {subnet} {proto} daddr {fwd.to_address} "
            f"{fwd.proto} dport {fwd.target_ports} ct status dnat masquerade"
        )
    return rules


def filter_accepts(net: Network) -> list[str]:
    """Rules for the network's to-bridge chain: accept the DNATed connections of its
    forwards (only those: the right guest, protocol and port)."""
    try:
        forwards = read_forwards(net)
    except ValidationError:
        return []  # reported by validation; the firewall renders without them
    return [
        f"{_proto(fwd)} daddr {fwd.to_address} {fwd.proto} dport {fwd.target_ports} "
        "ct status dnat accept"
        for fwd in forwards
    ]


def render_forwards(net: Network, forwards: list[PortForward],
                   *, table: str = TABLE) -> str:
    t = f"{FAMILY} {table}"
    bridge = f'"{net.bridge_name}"'
    chains = forward_chains(net.name)
    hooks = {
        chains.pre: "type nat hook prerouting priority dstnat; policy accept;",
        chains.out: f"type nat hook output priority {OUTPUT_NAT_PRIORITY}; policy accept;",
        chains.post: "type nat hook postrouting priority srcnat; policy accept;",
    }
    bodies = {
        chains.pre: [_dnat_rule(f, local_output=False) for f in forwards],
        chains.out: [_dnat_rule(f, local_output=True) for f in forwards],
        chains.post: [r for f in forwards for r in _hairpin_rule(f, bridge, net)],
    }
    lines = [f"# virtnet network {net.name}: {len(forwards)} port forward(s)", f"add table {t}"]
    for chain in chains.all():
        lines.append(f"add chain {t} {chain} {{ {hooks[chain]} }}")
        lines.append(f"flush chain {t} {chain}")
        lines.extend(f"add rule {t} {chain} {rule}" for rule in bodies[chain])
    return "\n".join(lines) + "\n"


def render_forwards_teardown(net: Network, *, table: str = TABLE) -> str:
    """Remove exactly the forward chains of NET (safe when they are gone already)."""
    t = f"{FAMILY} {table}"
    lines = [f"# virtnet network {net.name}: remove its port forwards", f"add table {t}"]
    for chain in forward_chains(net.name).all():
        lines.append(f"add chain {t} {chain}")
        lines.append(f"delete chain {t} {chain}")
    return "\n".join(lines) + "\n"
