"""Port forwards into NAT (and routed) networks: model, persistence, nftables rules, verbs.

A forward sends connections that reach the host on PROTO port P (or P-Q), optionally only on
one host address, to a guest address (and port). It is kept inside the definition's
``<metadata>`` under an XML namespace of virtnet's own, so the very same file still defines
in libvirt (which keeps metadata verbatim and ignores what it does not know)::

    <metadata>
      <virtnet:forwards xmlns:virtnet="http://virtnet.dev/schemas/forward/1.0">
        <virtnet:port proto="tcp" port="8080" to="192.168.122.10" to-port="80"/>
      </virtnet:forwards>
    </metadata>

Rules live in virtnet's own table, in three NAT chains per network:
- ``net-<id>-fwd-pre`` (prerouting): DNAT of connections arriving from outside and from
  guests of any network (a guest reaching the host's public address: hairpin);
- ``net-<id>-fwd-out`` (output): DNAT of connections the host itself makes to its own
  addresses (locally generated packets never traverse prerouting);
- ``net-<id>-fwd-post`` (postrouting): hairpin NAT. A guest of the same network that reached
  a forward would get the answer straight from its neighbour, with the wrong source address;
  masquerading such connections to the bridge address makes the answer come back through
  the host, where conntrack undoes both translations.
The network's own forward chain (virtnet.firewall) accepts exactly the DNATed connections to
each forward's guest and port (``filter_accepts``), ahead of its catch-all reject.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from virtnet import firewall
from virtnet.errors import Problem, ValidationError, VirtnetError
from virtnet.model import ForwardMode, Network
from virtnet.plan import LoadFirewall, crash_in_step

if TYPE_CHECKING:
    from virtnet.engine import Engine

NAMESPACE = "http://virtnet.dev/schemas/forward/1.0"
PREFIX = "virtnet"
CONTAINER = "forwards"
ITEM = "port"
PROTOCOLS = ("tcp", "udp")
FORWARD_MODES = (ForwardMode.NAT, ForwardMode.ROUTE)
METADATA_PATH = f"/network/metadata/{PREFIX}:{CONTAINER}"
# nftables priorities of the NAT hooks (dstnat = -100, srcnat = 100)
OUTPUT_NAT_PRIORITY = -100

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    from lxml import etree

    from virtnet.xml.document import parse_fragment

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
    container = _our_child(_metadata_element(net))
    if container is None:
        return []
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
    return forwards


def write_forwards(net: Network, forwards: list[PortForward]) -> None:
    """Replace NET's forwards in its metadata, keeping every other namespace's element."""
    from lxml import etree

    from virtnet.xml.document import dump_metadata

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


# --- validation ----------------------------------------------------------------------------


def check_forwards(net: Network, forwards: list[PortForward]) -> list[Problem]:
    """Definition-only rules: the mode forwards, each target lies in one of the network's
    subnets, a port range keeps its ports, no two forwards claim the same port."""
    problems: list[Problem] = []
    if forwards and net.forward_mode not in FORWARD_MODES:
        problems.append(Problem(
            METADATA_PATH,
            f"port forwards need forward mode nat or route, not {net.forward_mode.value}",
        ))
    subnets = [ip.network for ip in net.ips if ip.network is not None]
    seen: list[PortForward] = []
    for index, fwd in enumerate(forwards, start=1):
        path = f"{METADATA_PATH}/{PREFIX}:{ITEM}[{index}]"
        if not any(fwd.to_address in subnet for subnet in subnets
                   if subnet.version == fwd.version):
            problems.append(Problem(
                path, f"target {fwd.to_address} is in none of the network's subnets",
                str(fwd.to_address)))
        if fwd.address is not None and fwd.address.version != fwd.version:
            problems.append(Problem(
                path, f"host address {fwd.address} and target {fwd.to_address} differ in family"))
        if fwd.to_port is not None and fwd.port_end != fwd.port_start \
                and fwd.to_port != fwd.port_start:
            problems.append(Problem(
                path, f"a port range ({fwd.ports}) is forwarded to the same ports; "
                "give no target port", fwd.ports))
        for other in seen:
            clash = (other.proto == fwd.proto and other.version == fwd.version
                     and other.port_start <= fwd.port_end and fwd.port_start <= other.port_end
                     and (other.address is None or fwd.address is None
                          or other.address == fwd.address))
            if clash:
                problems.append(Problem(
                    path, f"{fwd.proto} port {fwd.ports} is already forwarded to "
                    f"{other.target()}", fwd.ports))
        seen.append(fwd)
    return problems


# --- nftables ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardChains:
    pre: str
    out: str
    post: str

    def all(self) -> list[str]:
        return [self.pre, self.out, self.post]


def forward_chains(network_name: str) -> ForwardChains:
    base = firewall.CHAIN_PREFIX + firewall.chain_id(network_name)
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


def render_ruleset(net: Network, forwards: list[PortForward],
                   *, table: str = firewall.TABLE) -> str:
    t = f"{firewall.FAMILY} {table}"
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


def render_teardown(net: Network, *, table: str = firewall.TABLE) -> str:
    """Remove exactly the forward chains of NET (safe when they are gone already)."""
    t = f"{firewall.FAMILY} {table}"
    lines = [f"# virtnet network {net.name}: remove its port forwards", f"add table {t}"]
    for chain in forward_chains(net.name).all():
        lines.append(f"add chain {t} {chain}")
        lines.append(f"delete chain {t} {chain}")
    return "\n".join(lines) + "\n"


@dataclass
class LoadForwards(LoadFirewall):
    """Load a network's port forwards (DNAT + hairpin NAT) into virtnet's table."""

    kind: ClassVar[str] = "load-forwards"

    def describe(self) -> str:
        count = self.ruleset.count(" dnat ") // 2
        return f"load {count} port forward(s) of network {self.network} into " \
               f"{self.family} {self.table}"

    def apply(self, host: Any) -> None:
        host.nft(self.ruleset, what=f"load port forwards of network {self.network}")
        crash_in_step()


def plan_actions(net: Network) -> list[LoadForwards]:
    """The start-plan step of NET's forwards (nothing when it has none)."""
    forwards = read_forwards(net)
    if not forwards:
        return []
    problems = check_forwards(net, forwards)
    if problems:
        raise ValidationError(problems, source=f"network '{net.name}'")
    if not net.bridge_name:
        return []
    return [LoadForwards(
        network=net.name,
        family=firewall.FAMILY,
        table=firewall.TABLE,
        ruleset=render_ruleset(net, forwards),
        teardown=render_teardown(net),
        chain_prefix=firewall.CHAIN_PREFIX,
    )]


# --- the verbs -----------------------------------------------------------------------------


def _targets(engine: Engine, name: str, live: bool, config: bool) -> tuple[Any, bool, bool]:
    from virtnet.engine import InvalidOperationError

    record = engine.lookup(name)
    if not live and not config:  # virsh's "current"
        live, config = record.active, not record.active
    if live and not record.active:
        raise InvalidOperationError("Requested operation is not valid: network is not running")
    if config and record.config is None:
        raise InvalidOperationError(
            "Requested operation is not valid: cannot change persistent config of a "
            "transient network")
    return record, live, config


def _change(engine: Engine, operation: str, name: str, live: bool, config: bool,
            edit: Any) -> tuple[bool, bool]:
    """Apply EDIT (forwards → forwards) to the live and/or persistent definitions; both new
    definitions are checked before anything changes. A live change (``live``, or "current"
    of an active network) needs CAP_NET_ADMIN: without it OPERATION is refused before the
    lock is taken."""
    import copy

    from virtnet.privilege import require_net_admin, require_net_admin_if
    from virtnet.validate import validate

    require_net_admin_if(f"{operation} --live",
                         lambda: live or (not config and engine.lookup(name).active))
    with engine.store.lock:
        record, live, config = _targets(engine, name, live, config)
        if live:
            require_net_admin(f"{operation} --live")  # started since the check above
        updated: dict[str, Network] = {}
        for which, enabled in (("live", live), ("config", config)):
            if not enabled:
                continue
            net = copy.deepcopy(record.live if which == "live" else record.config)
            forwards = edit(read_forwards(net))
            write_forwards(net, forwards)
            problems = validate(net) + check_forwards(net, forwards)
            if problems:
                raise ValidationError(problems, source=f"network '{record.name}' ({which})")
            updated[which] = net
        if "live" in updated:
            from virtnet.apply import apply_live

            apply_live(engine, record, updated["live"])
        if "config" in updated:
            engine.store.write_definition(record.name, engine.format(updated["config"]))
    return live, config


def add_forward(engine: Engine, name: str, fwd: PortForward,
                live: bool = False, config: bool = False) -> tuple[bool, bool]:
    """net-forward-add; returns (live changed, config changed)."""
    return _change(engine, "net-forward-add", name, live, config, lambda old: [*old, fwd])


def delete_forward(engine: Engine, name: str, proto: str, port: str,
                   address: str | None = None, live: bool = False,
                   config: bool = False) -> tuple[bool, bool]:
    """net-forward-del by protocol and port(s) (and host address when given)."""
    start, end = parse_port_range(port)
    host = str(ipaddress.ip_address(address)) if address else None

    def edit(old: list[PortForward]) -> list[PortForward]:
        kept = [f for f in old if f.key() != (proto, start, end, host)
                and not (host is None and f.key()[:3] == (proto, start, end))]
        if len(kept) == len(old):
            raise VirtnetError(f"no {proto} forward of port {port} on network '{name}'")
        return kept

    return _change(engine, "net-forward-del", name, live, config, edit)


def list_forwards(engine: Engine, name: str, inactive: bool = False) -> list[dict[str, Any]]:
    """The forwards of the live definition (the persistent one with ``inactive``)."""
    record = engine.lookup(name)
    net = record.config if inactive and record.config is not None else record.current
    return [fwd.to_dict() for fwd in read_forwards(net)]
