"""The lab: a sandbox of network namespaces in which a network runs for real, so that the
reachability :mod:`virtnet.insight.reach` predicts is measured, cell by cell.

    guests ── a veth on the bridge, or a macvtap port moved in ──┐
                                                    host ns (virtnet runs here)
                           uplinks named by the definition (eth1..) │ veth pairs
    upstream ns ── lan ns (LAN host, router) ── switch ns: bridge 'lan', a port per
                                                uplink (hairpin on/off), one for lan

- The host namespace gets the uplinks the definition names (a nat/route/open network without a
  forward dev gets eth1), its LAN address on the first of them (on the host bridge for a host
  bridge network, which the lab creates with that uplink in it; on an extra interface for
  passthrough, whose uplinks belong to the guests), and a default route via the LAN router.
- The network is defined and started with virtnet's engine in a child process that entered the
  host namespace; macvtap guests get their ports with virtnet's port manager the same way.
- Guests on a bridge get a veth on it (what a VM's tap is), and take their address by real DHCP
  (udhcpc, dhcpcd or dhclient) when the network serves it; other guests get static addresses.
- Every ordered pair is probed with ICMP echo from inside the source namespace: a "yes" is a
  round trip, the request and its reply. Each probe starts from a clean state: the neighbour
  caches of every namespace flushed and seen empty, the bridges' learned MACs forgotten, so
  that no probe profits from (or suffers by) an earlier one's ARP. (A guest that learned the
  host's MAC from the host's own ARP request would reach it although its own ARP never could.)

Everything is removed at the end, even on failure or Ctrl-C (SIGINT and SIGTERM): the network
is destroyed, processes left in the lab's namespaces are killed by pid, the namespaces (named
``vnt-lab-<random>-<role>``) deleted, the state directory removed.

What is built (names, subnets, addresses) is decided in :mod:`virtnet.insight.lab_layout`; what
a run finds is in :mod:`virtnet.insight.lab_report`; here are the steps that build and probe.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from virtnet.paths import StatePaths
from virtnet.plan.drivers import driver_for
from virtnet.host import Host
from virtnet.host.sandbox import (  # the lab's effects; re-exported, as they were here
    DHCP_CLIENTS,
    LabError,
    Sandbox,
    call_in_netns,
    check_can_run,
    clean_namespaces,
    icmp_echo,
    ns_pids,
    run_dhcp_client,
    sigterm_as_interrupt,
)
from virtnet.service.engine import Engine
from virtnet.errors import PortError
from virtnet.plan.ports import PortRequest
from virtnet.service.ports import PortManager, port_summary
from virtnet.spec.model import ForwardMode, Network
from virtnet.spec.xml.parse import parse_network
from virtnet.insight.doctor import arp_flux_links, network_forward_blockers, read_ruleset
from virtnet.insight.guest_dhcp import serves_dhcp
from virtnet.insight.lab_layout import (
    FIRST_GUEST_HOST,
    PASSTHROUGH_HOST_LINK,
    SWITCH_BRIDGE,
    LabLayout,
    LabOptions,
    check_lab_definition,
    guest_macs,
    subnet_host,
)
from virtnet.insight.lab_report import LabCell, LabGuest, LabReport
from virtnet.insight.reach import predict
from virtnet.insight.reach_terms import (
    HOST,
    LAN,
    UPSTREAM,
    Cell,
    Fix,
    Topology,
    bridge_address,
    guest_name,
)

NS_PREFIX = "vnt-lab-"


# --- steps run inside the host namespace (forked children) -------------------------------------


def _engine(state: str) -> Engine:
    return Engine(StatePaths.under(Path(state)))


def _start_network(state: str, xml: str) -> str:
    """Define and start the network; returns its definition as started (defaults assigned)."""
    engine = _engine(state)
    net = engine.define(xml, source="lab")
    engine.start(net.name)
    return engine.dumpxml(net.name)


def _create_port(state: str, network: str, mac: str, owner: str) -> dict[str, Any]:
    return port_summary(PortManager(_engine(state)).create(
        network, PortRequest(mac=mac, owner_name=owner)))


def _host_kernel_settings(uplinks: list[str], addressed: str
                          ) -> tuple[bool, tuple[str, ...]]:
    """br_netfilter, and the UPLINKS that answer ARP for the host's address on ADDRESSED (the
    lab's namespaces take their IPv4 settings from the machine's initial namespace)."""
    with Host() as host:
        br_netfilter = (host.sysctl_get("net/bridge/bridge-nf-call-iptables") or "") \
            .strip() == "1"
    return br_netfilter, arp_flux_links(uplinks, {addressed})


def _destroy_network(state: str, network: str) -> None:
    engine = _engine(state)
    if engine.lookup(network).status is not None:
        engine.destroy(network)


class Lab:
    """One sandbox for one network definition. Use as a context manager: leaving it (however)
    tears everything down."""

    def __init__(self, net: Network, xml: str, options: LabOptions | None = None,
                 progress: Callable[[str], None] | None = None,
                 sandbox: Sandbox | None = None) -> None:
        self.options = options or LabOptions()
        check_lab_definition(net, self.options)
        self.net = net  # replaced by the started definition (defaults assigned)
        self.xml = xml
        self.progress = progress or (lambda message: None)
        self.sandbox = sandbox or Sandbox(NS_PREFIX)
        self.token = self.sandbox.token
        self.guests: list[LabGuest] = []
        self.timings: dict[str, float] = {}
        self.state: Path | None = None
        self.started = False
        self.layout = LabLayout.of(net)
        self.applied_fixes: list[Fix] = []
        self.shim = False
        self.lan_route = False

    @property
    def namespaces(self) -> dict[str, str]:
        """The lab's namespaces by role (host, switch, lan, upstream, guest1..)."""
        return self.sandbox.namespaces

    def ns(self, role: str) -> str:
        return self.sandbox.ns(role)

    # --- building ----------------------------------------------------------------------------

    def build(self) -> None:
        """The host, the switch, the LAN router and upstream, wired; no network yet."""
        box, lay = self.sandbox, self.layout
        box.require_iproute2()
        began = time.monotonic()
        self.progress("creating namespaces: host, switch, LAN router, upstream")
        host, switch = box.add_namespace("host"), box.add_namespace("switch")
        lan, upstream = box.add_namespace("lan"), box.add_namespace("upstream")
        self.progress(f"plugging uplinks {', '.join(lay.uplinks)} into the LAN switch "
                      f"(hairpin {'on' if self.options.hairpin else 'off'})")
        links = list(lay.uplinks)
        if lay.host_link == PASSTHROUGH_HOST_LINK:
            links.append(PASSTHROUGH_HOST_LINK)
            lay.switch_ports[PASSTHROUGH_HOST_LINK] = "swmgmt"
        # the switch, the LAN router on it, and upstream behind the router
        prefix, up_prefix = lay.lan_subnet.prefixlen, lay.upstream_subnet.prefixlen
        box.wire_lan(host, switch, lan, upstream, bridge=SWITCH_BRIDGE,
                     uplinks={link: lay.switch_ports[link] for link in links},
                     hairpin=self.options.hairpin, router=f"{lay.lan_ip}/{prefix}",
                     router_up=f"{subnet_host(lay.upstream_subnet, 1)}/{up_prefix}",
                     upstream_address=f"{lay.upstream_ip}/{up_prefix}")
        # the host's own LAN address and default route
        if self.net.forward_mode is ForwardMode.BRIDGE and self.net.bridge_name:
            bridge = self.net.bridge_name
            self.progress(f"creating the host bridge {bridge} with {lay.uplinks[0]} in it")
            box.add_bridge(host, bridge, ports=(lay.uplinks[0],))
        box.address(host, lay.host_link, f"{lay.host_lan_ip}/{prefix}", lay.lan_ip, up=True)
        self.timings["build"] = time.monotonic() - began

    def start_network(self) -> None:
        began = time.monotonic()
        self.state = self.sandbox.state_dir()
        self.progress(f"starting network {self.net.name} with virtnet in the host namespace")
        started_xml = self.sandbox.call(self.ns("host"), _start_network,
                                        str(self.state / "state"), self.xml)
        self.started = True
        self.net = parse_network(started_xml, source="lab")
        self.timings["start"] = time.monotonic() - began

    def add_guests(self) -> None:
        began = time.monotonic()
        net = self.net
        macs = guest_macs(net, self.options.guests, self.token)
        for index in range(1, self.options.guests + 1):
            name = guest_name(index)
            self.guests.append(LabGuest(name, self.sandbox.add_namespace(name), macs[index - 1]))
        if net.uses_macvtap:
            self._macvtap_guests()
        else:
            self._bridge_guests()
        self.timings["guests"] = time.monotonic() - began

    def _macvtap_guests(self) -> None:
        assert self.state is not None
        for guest in self.guests:
            self.progress(f"{guest.name}: port-create on {self.net.name}")
            try:
                port = self.sandbox.call(self.ns("host"), _create_port,
                                         str(self.state / "state"), self.net.name, guest.mac,
                                         guest.name)
            except PortError as exc:
                guest.how = f"no port: {exc}"
                continue
            guest.iface, guest.uplink = port["device"], port["uplink"]
            number = FIRST_GUEST_HOST + int(guest.name[5:])
            address = f"{subnet_host(self.layout.lan_subnet, number)}"
            guest.address = f"{address}/{self.layout.lan_subnet.prefixlen}"
            guest.how = f"static (macvtap {port['mode']} on {port['uplink']})"
            self.sandbox.move_link(self.ns("host"), guest.iface, guest.ns)
            self.sandbox.address(guest.ns, guest.iface, guest.address, self.layout.lan_ip, up=True)

    def _bridge_guests(self) -> None:
        net = self.net
        bridge = net.bridge_name
        assert bridge is not None
        host, box = self.ns("host"), self.sandbox
        for guest in self.guests:
            guest.host_end = f"vlab{guest.name[5:]}"
            guest.iface = "eth0"
            box.add_veth(host, guest.host_end, guest.ns, "eth0")
            # isolated: what a tap port of the network would get
            box.plug(host, guest.host_end, bridge, isolated=bool(net.port_isolated))
            box.ip_batch(guest.ns, [f"link set dev eth0 address {guest.mac}",
                                    "link set dev eth0 up"])
        self.progress(f"waiting for {bridge} to forward on the guests' ports")
        for guest in self.guests:
            assert guest.host_end is not None
            box.wait_forwarding(host, guest.host_end)
        dhcp = serves_dhcp(net)
        has_range = any(ip.ranges for ip in net.ipv4_defs())
        reserved = {h.mac.lower() for ip in net.ipv4_defs() for h in ip.hosts if h.mac}
        by_dhcp = []
        for index, guest in enumerate(self.guests, start=1):
            if dhcp and (has_range or guest.mac in reserved):
                by_dhcp.append(guest)
            else:
                self._static_bridge_guest(guest, index)
        if by_dhcp:
            client = self.options.dhcp_client
            names = ", ".join(g.name for g in by_dhcp)
            self.progress(f"{names}: DHCP with {client}")
            assert self.state is not None
            workdir = self.state / "guests"
            box.dhcp_all(client, [(g.ns, "eth0", workdir / g.name) for g in by_dhcp])
            for guest in by_dhcp:
                guest.address = box.address_of(guest.ns, "eth0")
                guest.how = f"dhcp ({client})"
                if guest.address is None:
                    raise LabError(f"{guest.name} got no address from {client}")

    def _static_bridge_guest(self, guest: LabGuest, index: int) -> None:
        guest.address, gateway = self.layout.static_address(self.net, index)
        guest.how = "static"
        self.sandbox.address(guest.ns, "eth0", guest.address, gateway)

    # --- prediction and measurement ----------------------------------------------------------

    def topology(self) -> Topology:
        """What the lab built, as reach sees it."""
        br_netfilter, flux = self.sandbox.call(self.ns("host"), _host_kernel_settings,
                                               list(self.layout.uplinks), self.layout.host_link)
        return Topology(
            guests=len(self.guests),
            hairpin=self.options.hairpin,
            guest_uplinks=tuple(g.uplink for g in self.guests) if self.net.uses_macvtap
            else None,
            host_uplink=self.layout.host_link,
            host_address=f"{self.layout.host_lan_ip}/{self.layout.lan_subnet.prefixlen}",
            uplink_routes=(f"default via {self.layout.lan_ip}",),
            lan_route=self.lan_route,
            host_shim=self.shim,
            switch_ports=dict(self.layout.switch_ports),
            outside_dev=self.layout.host_link,
            host_uplink_port=self.layout.uplinks[0],
            forward_blockers=self.forward_blockers(),
            br_netfilter=br_netfilter,
            flux_uplinks=flux,
        )

    def forward_blockers(self) -> tuple[str, ...]:
        """Other firewall tables in the host namespace whose forward chains drop (a test may
        add one, as Docker would on a real host)."""
        return network_forward_blockers(self.net, self.sandbox.call(self.ns("host"),
                                                                    read_ruleset))

    def predict(self) -> list[Cell]:
        return predict(self.net, self.topology())

    def target(self, src: str, dst: str) -> str | None:
        """The IPv4 address SRC aims at to reach DST (None: DST has none)."""
        if dst == LAN:
            return str(self.layout.lan_ip)
        if dst == UPSTREAM:
            return str(self.layout.upstream_ip)
        if dst == HOST:
            gateway = bridge_address(self.net)
            if src.startswith("guest") and self.net.forward_mode.has_own_bridge:
                # a guest of a bridge of our own knows the host by the bridge's address
                return str(gateway.ip) if gateway is not None else str(self.layout.host_lan_ip)
            return str(self.layout.host_lan_ip)
        guest = self.guest(dst)
        return guest.ip

    def guest(self, name: str) -> LabGuest:
        return next(g for g in self.guests if g.name == name)

    def source_ns(self, src: str) -> str:
        if src.startswith("guest"):
            return self.guest(src).ns
        return self.ns({HOST: "host", LAN: "lan", UPSTREAM: "upstream"}[src])

    def _bridges(self, role: str) -> list[str]:
        """The bridges in the namespace of ROLE whose learned MACs a probe may leave."""
        if role == "switch":
            return [SWITCH_BRIDGE]
        if role == "host" and self.started and self.net.bridge_name:
            return [self.net.bridge_name]
        return []

    def clean_state(self) -> None:
        """Forget what earlier probes taught (see :func:`clean_namespaces`)."""
        self.sandbox.forget({ns: self._bridges(role) for role, ns in self.namespaces.items()})

    def probe(self, src: str, dst: str) -> bool:
        if src.startswith("guest") and self.guest(src).ip is None:
            return False  # a guest without an address reaches nobody
        address = self.target(src, dst)
        if address is None:
            return False
        self.clean_state()
        return self.sandbox.ping(self.source_ns(src), address, self.options.probe_attempts,
                                 self.options.probe_timeout)

    def measure(self, cells: list[Cell] | None = None) -> list[LabCell]:
        """Probe every predicted cell; predicted and measured side by side."""
        began = time.monotonic()
        cells = cells if cells is not None else self.predict()
        out = []
        for number, cell in enumerate(cells, start=1):
            self.progress(f"probing {cell.src} → {cell.dst} ({number}/{len(cells)})")
            out.append(LabCell(cell.src, cell.dst, cell.predicted, self.probe(cell.src, cell.dst),
                               cell.reason, cell.fix))
        self.timings["probe"] = self.timings.get("probe", 0.0) + time.monotonic() - began
        return out

    def report(self, cells: list[LabCell]) -> LabReport:
        return LabReport(self.net.name, self.mode_label(), self.options.hairpin,
                         self.options.dhcp_client, list(self.guests), cells, dict(self.timings))

    def mode_label(self) -> str:
        return driver_for(self.net).topology(self.net).label

    # --- teardown ------------------------------------------------------------------------------

    def teardown(self) -> None:
        """Remove everything the lab made; goes on past failures (they are reported at the
        end as one LabError)."""
        errors = []
        if self.started and self.state is not None and "host" in self.namespaces:
            self.progress(f"destroying network {self.net.name}")
            try:
                self.sandbox.call(self.ns("host"), _destroy_network, str(self.state / "state"),
                                  self.net.name)
            except Exception as exc:  # noqa: BLE001 - the namespaces go anyway
                errors.append(f"net-destroy: {exc}")
            self.started = False
        self.progress("removing the lab's namespaces")
        errors += self.sandbox.delete_namespaces()  # with what runs there: dnsmasq, clients
        if self.state is not None:
            shutil.rmtree(self.state, ignore_errors=True)
            self.state = None
        if errors:
            raise LabError("the lab was not fully removed:\n  " + "\n  ".join(errors))

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.sandbox.signals_deferred():
            self.teardown()


def run_lab(xml: str, options: LabOptions | None = None,
            progress: Callable[[str], None] | None = None) -> LabReport:
    """Build the sandbox for the definition XML, start the network, measure every cell,
    tear down; the report puts predicted and measured side by side."""
    sandbox = Sandbox(NS_PREFIX)
    sandbox.check_can_run()
    net = Engine.parse(xml, source="lab")
    began = time.monotonic()
    with sandbox.sigterm_as_interrupt(), Lab(net, xml, options, progress, sandbox) as lab:
        lab.build()
        lab.start_network()
        lab.add_guests()
        cells = lab.measure()
        report = lab.report(cells)
    report.timings["total"] = time.monotonic() - began
    return report


__all__ = [
    "DHCP_CLIENTS",
    "Lab",
    "LabError",
    "call_in_netns",
    "check_can_run",
    "clean_namespaces",
    "icmp_echo",
    "ns_pids",
    "run_dhcp_client",
    "run_lab",
    "sigterm_as_interrupt",
]
