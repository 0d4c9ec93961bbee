"""Who can reach whom on a network, why, and the commands that turn a "no" into a "yes".

Pure: a function of the network definition and a :class:`Topology` (what surrounds the host),
never of the host itself. ``virtnet doctor`` fills the topology from host facts, ``virtnet lab``
from the sandbox it builds, and the lab then measures what is predicted here, cell by cell.
The terms (endpoints, :class:`Topology`, cells and fixes) are in
:mod:`virtnet.insight.reach_terms`; here are the models that decide each cell.

Endpoints are ``guest1``..``guestN``, ``host`` (this host), ``lan`` (a machine on the LAN of the
host's uplink, also its router) and ``upstream`` (a machine beyond that router: "the outside").
Reachability is IPv4 unicast, a round trip: an ICMP echo from the source, answered. So a cell
needs both ways to work: the source resolves the destination's MAC (ARP), and the destination
knows the source's for the reply (from the source's ARP request, or by asking itself); src→dst
and dst→src differ where only one of the two ARP exchanges gets through. What decides each cell:

- networks on a bridge of virtnet's own (isolated, nat, route, open): guests share the bridge
  (unless its ports are isolated); the host is the bridge's address; NAT lets guests out and
  only replies in; route and open need the LAN router to route the subnet back to the host;
  isolated forwards nothing.
- a host bridge (forward mode bridge with a bridge name): guests are LAN machines.
- macvtap (bridge, private, vepa): the kernel's macvlan semantics as measured on the lab's
  switch. bridge: guests on one uplink switch between themselves in the kernel, but frames to
  the host's own address on that uplink leave by the wire and come back only if the switch
  port hairpins; private: guests on one uplink never reach each other (even with hairpin), and a
  reflected broadcast goes back to its sender alone, so a guest's ARP never reaches the host
  on that uplink while the host's does reach the guest; vepa: everything goes to the switch, so
  guests on one uplink (and the host on it) meet only through a hairpinning port. Guests on
  different uplinks meet through the switch like any two LAN machines. The pool's uplinks are
  one LAN, so the switch floods a guest's broadcast to the host's other uplinks too, and Linux
  answers ARP there for an address it holds on any interface ("ARP flux", unless arp_ignore,
  arp_filter or rp_filter forbid it): that is how a private guest still finds the host.
- passthrough: each guest has an uplink of its own; the host reaches it through the switch from
  another interface.
"""

from __future__ import annotations

import abc
import ipaddress

from virtnet.spec.model import ForwardMode, Network, NetworkFamily, family_of
from virtnet.insight.reach_terms import (
    HOST,
    LAN,
    ON_HOST,
    ON_LAN_ROUTER,
    ON_SWITCH,
    UPSTREAM,
    Cell,
    Fix,
    Topology,
    bridge_address,
    default_guest_uplinks,
    endpoint_names,
    guest_index,
    guest_name,
    ipv4_network,
    is_guest,
    pool,
    shim_name,
)

Verdict = tuple[bool, str, tuple[Fix, ...]]


def _yes(reason: str) -> Verdict:
    return True, reason, ()


def _no(reason: str, *fixes: Fix) -> Verdict:
    return False, reason, tuple(fixes)


def _blocker_fixes(chains: tuple[str, ...], bridge: str, replies_only: bool) -> list[Fix]:
    """Accept rules for BRIDGE at the top of each blocking chain: what leaves it, and what
    comes back to it (only replies, for NAT)."""
    back = "ct state established,related " if replies_only else ""
    fixes = []
    for chain in chains:
        fixes.append(Fix(ON_HOST, f'nft insert rule {chain} iifname "{bridge}" accept'))
        fixes.append(Fix(ON_HOST, f'nft insert rule {chain} oifname "{bridge}" {back}accept'))
    return fixes


def _bridged_blocked(topo: Topology, bridge: str) -> Verdict | None:
    """Bridged frames dropped by another firewall (br_netfilter passes them to it)."""
    if topo.br_netfilter and topo.forward_blockers:
        return _no(f"br_netfilter hands frames bridged by {bridge} to the IP forward hook, "
                   f"where another firewall drops them ({', '.join(topo.forward_blockers)})",
                   *_blocker_fixes(topo.forward_blockers, bridge, replies_only=False))
    return None


def answers_arp_for_others(arp_ignore: int, arp_filter: bool, rp_filter: int,
                           addressed: bool) -> bool:
    """Whether an interface with these effective settings (the larger of conf/all and the
    interface's own, for arp_filter either) answers an ARP request for an address the host has
    on another interface, and accepts the traffic then sent to it: Linux's weak host model.
    arp_ignore 1, 2 and 8 want the address on the receiving interface (or answer nothing);
    arp_filter answers only where the reply would be routed; rp_filter drops what arrives where
    the route back does not lead: strict always, loose on an interface without an IPv4 address
    of its own (ADDRESSED), as the kernel's source validation does for the request itself."""
    if arp_ignore in (1, 2, 8) or arp_filter:
        return False
    return rp_filter == 0 or (rp_filter == 2 and addressed)



# --- the models ------------------------------------------------------------------------------


class _Model(abc.ABC):
    def __init__(self, net: Network, topo: Topology) -> None:
        self.net = net
        self.topo = topo

    def verdict(self, src: str, dst: str) -> Verdict:
        if not is_guest(src) and not is_guest(dst):
            return self.between_others(src, dst)
        if is_guest(src) and is_guest(dst):
            return self.guest_guest(guest_index(src), guest_index(dst))
        if is_guest(src):
            return self.guest_to(guest_index(src), dst)
        return self.to_guest(src, guest_index(dst))

    def between_others(self, src: str, dst: str) -> Verdict:
        if {src, dst} == {LAN, UPSTREAM}:
            return _yes("the LAN router routes between the LAN and the outside")
        if LAN in (src, dst):
            return _yes("the host's own LAN connection")
        return _yes("the host's own route through the LAN router")

    @abc.abstractmethod
    def guest_guest(self, a: int, b: int) -> Verdict:
        """guest A → guest B."""

    @abc.abstractmethod
    def guest_to(self, guest: int, dst: str) -> Verdict:
        """A guest → the host, the LAN or upstream."""

    @abc.abstractmethod
    def to_guest(self, src: str, guest: int) -> Verdict:
        """The host, the LAN or upstream → a guest."""

    def hairpin_fix(self, uplink: str) -> Fix:
        port = self.topo.switch_ports.get(uplink) or f"PORT-OF-{uplink}"
        return Fix(ON_SWITCH, f"bridge link set dev {port} hairpin on")


class _OwnBridge(_Model):
    """isolated, nat, route, open: a bridge of virtnet's own with the host's address on it."""

    def __init__(self, net: Network, topo: Topology) -> None:
        super().__init__(net, topo)
        self.mode = net.forward_mode
        self.subnet = ipv4_network(net)
        self.gateway = bridge_address(net)
        self.bridge = net.bridge_name or "the bridge"
        self.dev = net.forward.dev if net.forward is not None else None
        if self.dev is None and net.forward is not None and net.forward.interfaces:
            self.dev = net.forward.interfaces[0].dev

    def guest_guest(self, a: int, b: int) -> Verdict:
        if self.net.port_isolated:
            return _no(f"the ports of {self.bridge} are isolated (<port isolated='yes'/>)")
        return _bridged_blocked(self.topo, self.bridge) or _yes(f"both on {self.bridge}")

    # -- towards the LAN and the outside

    def _host_host_address(self) -> str:
        if self.topo.host_address:
            return str(ipaddress.ip_interface(self.topo.host_address).ip)
        return "HOST-LAN-ADDRESS"

    def _route_back_fix(self) -> Fix:
        return Fix(ON_LAN_ROUTER, f"ip route add {self.subnet} via {self._host_host_address()}")

    def _forwarding_problems(self, outward: bool) -> Verdict | None:
        """What on the host stops forwarding for this network (beyond its own rules)."""
        if self.topo.ip_forward is False:
            return _no("IPv4 forwarding is off on the host (net.ipv4.ip_forward=0)",
                       Fix(ON_HOST, "sysctl -w net.ipv4.ip_forward=1"))
        if self.topo.forward_blockers:
            fixes = _blocker_fixes(self.topo.forward_blockers, self.bridge,
                                   replies_only=self.mode is ForwardMode.NAT)
            blockers = ", ".join(self.topo.forward_blockers)
            return _no(f"another firewall drops forwarded traffic ({blockers})", *fixes)
        return None

    def _dev_mismatch(self, dst: str) -> Verdict | None:
        if self.dev is None:
            return None
        way = self.topo.outside_dev if dst == UPSTREAM else self.topo.host_uplink
        if way is not None and way != self.dev:
            return _no(f"forwarding is allowed only through {self.dev}, but the {dst} is "
                       f"reached through {way}")
        return None

    def guest_to(self, guest: int, dst: str) -> Verdict:
        if dst == HOST:
            if self.gateway is None:
                return _no(f"{self.bridge} has no IPv4 address: the host is not on the network")
            return _yes(f"the host's address {self.gateway.ip} on {self.bridge}")
        if self.mode is ForwardMode.NONE:
            return _no("an isolated network forwards nothing beyond the host")
        if self.gateway is None or self.subnet is None:
            return _no("guests have no IPv4 gateway: the network has no IPv4 address")
        if dst == UPSTREAM and not self.topo.has_default_route:
            return _no("the host has no default route")
        blocked = self._dev_mismatch(dst) or self._forwarding_problems(outward=True)
        if blocked is not None:
            return blocked
        if self.mode is ForwardMode.NAT:
            return _yes("NAT: guests leave with the host's address")
        if self.topo.lan_route:
            return _yes(f"routed: the LAN router sends replies for {self.subnet} to the host")
        return _no(f"routed: replies to {self.subnet} need a route on the LAN router",
                   self._route_back_fix())

    def to_guest(self, src: str, guest: int) -> Verdict:
        if src == HOST:
            if self.gateway is None:
                return _no(f"{self.bridge} has no IPv4 address: the host is not on the network")
            return _yes(f"the host is on {self.bridge} ({self.gateway})")
        if self.mode is ForwardMode.NONE:
            return _no("an isolated network forwards nothing from beyond the host")
        if self.mode is ForwardMode.NAT:
            return _no("NAT: only replies come in; for inbound connections use forward mode "
                       "'route' (or a port forward)")
        if self.subnet is None:
            return _no("the network has no IPv4 subnet to route to")
        blocked = self._dev_mismatch(src) or self._forwarding_problems(outward=False)
        if blocked is not None:
            return blocked
        if self.topo.lan_route:
            return _yes(f"routed: the LAN router sends {self.subnet} to the host")
        return _no(f"the {src} has no route to {self.subnet}: the LAN router needs one "
                   "via the host", self._route_back_fix())


class _HostBridge(_Model):
    """forward mode bridge on a bridge the host has: guests are machines of the LAN."""

    def __init__(self, net: Network, topo: Topology) -> None:
        super().__init__(net, topo)
        self.bridge = net.bridge_name or "the bridge"

    def guest_guest(self, a: int, b: int) -> Verdict:
        if self.net.port_isolated:
            return _no(f"the guests' ports on {self.bridge} are isolated")
        return _bridged_blocked(self.topo, self.bridge) or _yes(
            f"both on the host bridge {self.bridge}")

    def _lan_side(self, other: str, from_guest: bool) -> Verdict:
        if not self.topo.bridge_has_uplink:
            return _no(f"{self.bridge} has no LAN interface among its ports")
        blocked = _bridged_blocked(self.topo, self.bridge)
        if blocked is not None:
            return blocked
        uplink = self.topo.host_uplink_port
        if from_guest and self.topo.hairpin:
            # The guest's ARP broadcast comes back through the reflecting switch port: the
            # bridge then learns the guest's MAC on its uplink and drops the answer arriving
            # there (its destination "is" where it came from). Answers from the LAN come by
            # more hops than the reflection, so they always lose that race.
            port = self.topo.switch_ports.get(uplink or "", f"PORT-OF-{uplink or 'UPLINK'}")
            return _no(f"the switch port of {self.bridge}'s uplink reflects the guests' "
                       f"broadcasts (hairpin): {self.bridge} learns their MACs on the uplink "
                       "and drops the LAN's answers",
                       Fix(ON_SWITCH, f"bridge link set dev {port} hairpin off"))
        if other == LAN:
            return _yes(f"{self.bridge} bridges the guests onto the LAN")
        return _yes("guests are LAN machines; the LAN router routes them")

    def guest_to(self, guest: int, dst: str) -> Verdict:
        if dst == HOST:
            return _yes(f"the host's address on {self.bridge}")
        return self._lan_side(dst, from_guest=True)

    def to_guest(self, src: str, guest: int) -> Verdict:
        if src == HOST:
            return _yes(f"the host's address on {self.bridge}")
        return self._lan_side(src, from_guest=False)


class _Macvtap(_Model):
    """bridge, private, vepa and passthrough: macvtap devices on the host's uplinks."""

    def __init__(self, net: Network, topo: Topology) -> None:
        super().__init__(net, topo)
        self.mode = net.forward_mode
        uplinks = topo.guest_uplinks
        if uplinks is None:
            uplinks = default_guest_uplinks(net, topo.guests)
        self.uplinks = list(uplinks) + [None] * max(0, topo.guests - len(uplinks))
        host_uplink = topo.host_uplink
        if host_uplink is None and self.mode is not ForwardMode.PASSTHROUGH and pool(net):
            host_uplink = pool(net)[0]
        self.host_uplink = host_uplink
        flux = topo.flux_uplinks
        if flux is None:
            flux = tuple(dev for dev in pool(net) if dev != host_uplink)
        self.flux_uplinks = flux

    def uplink(self, guest: int) -> str | None:
        return self.uplinks[guest - 1]

    def _no_port(self, guest: int) -> Verdict | None:
        if self.uplink(guest) is None:
            if self.mode is ForwardMode.PASSTHROUGH:
                return _no(f"guest{guest} gets no port: passthrough gives each guest an "
                           "interface of its own, and none is left")
            return _no(f"guest{guest} gets no port: the network has no interface")
        return None

    def _host_taken(self) -> str | None:
        """The guest a passthrough network gave the host's own LAN interface to."""
        if self.mode is not ForwardMode.PASSTHROUGH or self.host_uplink is None:
            return None
        for index, uplink in enumerate(self.uplinks, start=1):
            if uplink == self.host_uplink:
                return guest_name(index)
        return None

    def between_others(self, src: str, dst: str) -> Verdict:
        taken = self._host_taken()
        if taken is not None and HOST in (src, dst):
            return _no(f"the host's LAN interface {self.host_uplink} is given to {taken}")
        return super().between_others(src, dst)

    def guest_guest(self, a: int, b: int) -> Verdict:
        missing = self._no_port(a) or self._no_port(b)
        if missing is not None:
            return missing
        ua, ub = self.uplink(a), self.uplink(b)
        if ua != ub:
            return _yes(f"different uplinks ({ua}, {ub}): through the external switch")
        assert ua is not None
        if self.mode is ForwardMode.BRIDGE:
            return _yes(f"macvtap bridge mode: switched inside the kernel on {ua}")
        if self.mode is ForwardMode.PRIVATE:
            return _no("macvtap private mode: guests on one uplink never meet, even through "
                       "a hairpinning switch")
        # vepa (passthrough never shares an uplink)
        if self.topo.hairpin:
            return _yes(f"vepa: the switch port of {ua} reflects the frames (hairpin)")
        return _no(f"vepa: frames go to the external switch, which does not send them back "
                   f"out of the port of {ua} (no hairpin)", self.hairpin_fix(ua))

    def _shim_fixes(self, uplink: str) -> tuple[Fix, ...]:
        shim = shim_name(uplink)
        address = self.topo.host_address or "HOST-ADDRESS/PREFIX"
        fixes = [
            Fix(ON_HOST, f"ip link add {shim} link {uplink} type macvlan mode bridge"),
            Fix(ON_HOST, f"ip link set dev {shim} up"),
            Fix(ON_HOST, f"ip address del {address} dev {uplink}"),
            Fix(ON_HOST, f"ip address add {address} dev {shim}"),
        ]
        fixes += [Fix(ON_HOST, f"ip route add {route} dev {shim}")
                  for route in self.topo.uplink_routes]
        return tuple(fixes)

    def _host_pair(self, guest: int, to_host: bool) -> Verdict:
        missing = self._no_port(guest)
        if missing is not None:
            return missing
        uplink = self.uplink(guest)
        assert uplink is not None
        taken = self._host_taken()
        if taken is not None:
            return _no(f"the host's LAN interface {self.host_uplink} is given to {taken}")
        if self.host_uplink is None:
            if self.mode is ForwardMode.PASSTHROUGH:
                return _yes(f"the host's LAN address is on another interface; through the "
                            f"switch to {uplink}")
            return _no("the host has no LAN address")
        if self.host_uplink != uplink:
            return _yes(f"the host's address is on {self.host_uplink}, the guest on {uplink}: "
                        "through the external switch")
        if self.mode is ForwardMode.BRIDGE:
            if self.topo.host_shim:
                return _yes(f"through the host's macvlan shim {shim_name(uplink)} (bridge mode)")
            if self.topo.hairpin:
                return _yes(f"the switch port of {uplink} reflects frames (hairpin)")
            return _no(f"macvtap bridge mode: frames to the host's own address on {uplink} "
                       "leave by the wire and do not come back",
                       *self._shim_fixes(uplink))
        if self.mode is ForwardMode.PRIVATE:
            if not self.topo.hairpin:
                return _no(f"macvtap private mode: frames leave by {uplink} and the switch "
                           "does not send them back (no hairpin)")
            if to_host:
                # A broadcast arriving on the uplink from a private macvlan's own MAC goes back
                # to that macvlan alone; the host's stack on the uplink never sees the guest's
                # ARP. The switch floods it to the host's other uplinks as well, though, and
                # the host answers there for its address on this one; the echo then comes in
                # there, and the host's reply (and its own ARP for the guest) leave by this
                # uplink and come back through the reflecting port.
                others = [dev for dev in self.flux_uplinks if dev != uplink]
                if others:
                    return _yes(f"macvtap private mode: the switch floods the guest's ARP to "
                                f"the host's {others[0]} too, which answers for the host's "
                                f"address (ARP flux); replies come back through the "
                                f"reflecting port of {uplink}")
                return _no("macvtap private mode: the guest's ARP broadcast reflected by the "
                           "switch goes back to the guest alone, never to the host (which has "
                           "no other uplink on the LAN that would answer it)")
            return _yes(f"the switch port of {uplink} reflects the host's frames (hairpin)")
        # vepa
        if self.topo.hairpin:
            return _yes(f"vepa: the switch port of {uplink} reflects frames (hairpin)")
        return _no(f"vepa: frames go to the external switch, which does not send them back "
                   f"out of the port of {uplink} (no hairpin)", self.hairpin_fix(uplink))

    def guest_to(self, guest: int, dst: str) -> Verdict:
        if dst == HOST:
            return self._host_pair(guest, to_host=True)
        missing = self._no_port(guest)
        if missing is not None:
            return missing
        if dst == LAN:
            return _yes(f"out of {self.uplink(guest)} onto the LAN")
        return _yes("through the LAN router")

    def to_guest(self, src: str, guest: int) -> Verdict:
        if src == HOST:
            return self._host_pair(guest, to_host=False)
        missing = self._no_port(guest)
        if missing is not None:
            return missing
        if src == LAN:
            return _yes(f"over the LAN into {self.uplink(guest)}")
        return _yes("through the LAN router")


class _Hostdev(_Model):
    """SR-IOV virtual functions: the NIC's embedded switch connects VFs, PF and the wire."""

    def guest_guest(self, a: int, b: int) -> Verdict:
        return _yes("VFs of one PF meet in the NIC's embedded switch (VEB)")

    def guest_to(self, guest: int, dst: str) -> Verdict:
        if dst == HOST:
            return _yes("the NIC's embedded switch connects the VF and the PF")
        return _yes("the VF is a LAN machine")

    def to_guest(self, src: str, guest: int) -> Verdict:
        return self.guest_to(guest, src)


# One model per family. The family is the registry's decision (model.family_of, which
# driver_for keys its drivers by); reach reads it there rather than from a driver because it
# stays pure and below the drivers, which import host-facing code.
_MODELS: dict[NetworkFamily, type[_Model]] = {
    NetworkFamily.OWN_BRIDGE: _OwnBridge,
    NetworkFamily.HOST_BRIDGE: _HostBridge,
    NetworkFamily.DIRECT: _Macvtap,
    NetworkFamily.HOSTDEV: _Hostdev,
}


def _model(net: Network, topo: Topology) -> _Model:
    return _MODELS[family_of(net)](net, topo)


def predict(net: Network, topo: Topology | None = None) -> list[Cell]:
    """One cell per ordered pair of distinct endpoints, guests first."""
    topo = topo or Topology()
    model = _model(net, topo)
    names = endpoint_names(topo.guests)
    cells = []
    for src in names:
        for dst in names:
            if src != dst:
                cells.append(Cell(src, dst, *model.verdict(src, dst)))
    return cells


__all__ = [
    "answers_arp_for_others",
    "predict",
]
