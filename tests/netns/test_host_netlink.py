"""virtnet.host (netlink, sysctl, nft, netns, facts) against the real kernel, in namespaces.

Each test body runs in a forked child that entered a fresh namespace; the parent checks the
result with iproute2, so the code under test never grades itself.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import pytest

from tests.kit.hostkit import addresses_in, routes_to
from virtnet.errors import HostError

pytestmark = pytest.mark.netns

ip4 = ipaddress.ip_interface
net = ipaddress.ip_network
addr = ipaddress.ip_address


# --- bodies run inside the namespace ---------------------------------------------------------


def _create_bridge(**kwargs):
    from virtnet.host import Host

    with Host() as host:
        host.create_bridge("vbr0", **kwargs)
        return host.link("vbr0")


def _bridge_twice():
    from virtnet.host import Host

    with Host() as host:
        host.create_bridge("vbr0", stp=False)
        try:
            host.create_bridge("vbr0", stp=False)
        except HostError as exc:
            return str(exc)
        return None


def _ensure_bridge_twice():
    from tests.kit.hostkit import ensure_bridge
    from virtnet.host import Host

    with Host() as host:
        first = ensure_bridge(host, "vbr0", stp=False)
        second = ensure_bridge(host, "vbr0", stp=False)
        try:
            ensure_bridge(host, "lo")
            refused = None
        except HostError as exc:
            refused = str(exc)
        return first, second, refused


def _delete_twice(name):
    from virtnet.host import Host

    with Host() as host:
        return host.delete_link(name), host.delete_link(name)


def _addresses():
    from virtnet.host import Host

    with Host() as host:
        host.create_bridge("vbr0", stp=False)
        host.add_address("vbr0", ip4("192.168.50.1/24"))
        host.add_address("vbr0", ip4("2001:db8:50::1/64"))
        try:
            host.add_address("vbr0", ip4("192.168.50.1/24"))
            duplicate = None
        except HostError as exc:
            duplicate = str(exc)
        dump = sorted(str(a.interface) for a in host.addresses() if a.link == "vbr0")
        return duplicate, dump


def _delete_address_twice(text):
    from virtnet.host import Host

    with Host() as host:
        return host.delete_address("vbr0", ip4(text)), host.delete_address("vbr0", ip4(text))


def _routes():
    from virtnet.host import Host

    with Host() as host:
        host.create_bridge("vbr0", stp=False)
        host.add_address("vbr0", ip4("192.168.50.1/24"))
        host.set_link_up("vbr0")
        host.add_route("vbr0", net("10.60.0.0/16"), addr("192.168.50.7"), 9)
        try:
            host.add_route("vbr0", net("10.61.0.0/16"), addr("172.31.0.1"))
            unreachable = None
        except HostError as exc:
            unreachable = str(exc)
        found = [
            (str(r.destination), r.link, str(r.gateway), r.metric)
            for r in host.routes()
            if str(r.destination) == "10.60.0.0/16"
        ]
        return unreachable, found


def _delete_route_twice():
    from virtnet.host import Host

    with Host() as host:
        args = ("vbr0", net("10.60.0.0/16"), addr("192.168.50.7"), 9)
        return host.delete_route(*args), host.delete_route(*args)


def _up_down():
    from virtnet.host import Host

    with Host() as host:
        host.create_bridge("vbr0", stp=False)
        host.set_link_up("vbr0")
        up = host.link("vbr0").up
        host.set_link_down("vbr0")
        return up, host.link("vbr0").up, host.set_link_down("nonexistent0")


def _sysctl_roundtrip():
    from virtnet.host import Host

    with Host() as host:
        before = host.sysctl_get("net/ipv4/ip_forward")
        host.sysctl_set("net/ipv4/ip_forward", "1")
        after = host.sysctl_get("net/ipv4/ip_forward")
        missing = host.sysctl_get("net/ipv6/conf/nonexistent0/accept_ra")
        try:
            host.sysctl_set("net/ipv6/conf/nonexistent0/accept_ra", "0")
            refused = None
        except HostError as exc:
            refused = str(exc)
        return before, after, missing, refused


def _nft(script):
    from virtnet.host import Host

    with Host() as host:
        return host.nft(script)


def _nft_error():
    from virtnet.host import Host

    with Host() as host:
        try:
            host.nft("add table inet virtnet_t\nadd rule inet virtnet_t nochain accept\n")
        except HostError as exc:
            return str(exc)
        return None


def _nft_chains(table):
    from virtnet.host import Host

    with Host() as host:
        return host.nft_chains("inet", table)


def _nft_binary_backend(script):
    from virtnet.host.nft import Nft

    nft = Nft(use_library=False)
    nft.run(script)
    return nft.list_chains("inet", "virtnet_b")


def _netns_inode():
    from tests.kit.hostkit import current_netns_inode

    return current_netns_inode()


def _facts():
    from virtnet.host import Host
    from virtnet.host.facts import read_facts

    with Host() as host:
        host.create_bridge("vbr0", stp=False, forward_delay=0)
        host.add_address("vbr0", ip4("192.168.50.1/24"))
        host.set_link_up("vbr0")
        return read_facts(host)


def _dumps():
    from virtnet.host import Host

    with Host() as host:
        links = [
            (link.name, link.index, link.kind, link.up, link.mac, link.mtu, link.master,
             link.stp, link.forward_delay)
            for link in host.links()
        ]
        addresses = sorted((a.link, str(a.interface)) for a in host.addresses())
        routes = sorted(
            (str(r.destination), r.link, str(r.gateway) if r.gateway else None, r.metric)
            for r in host.routes()
        )
        return links, addresses, routes


def _vlan_filtering_bridge():
    from virtnet.host import Host

    with Host() as host:
        try:
            host.create_bridge("vbr0", stp=False, vlan_filtering=True)
        except HostError as exc:
            return str(exc)
        return None


def _deletes_on_a_missing_link():
    from virtnet.host import Host

    with Host() as host:
        return (
            host.delete_address("nope0", ip4("192.168.50.1/24")),
            host.delete_route("nope0", net("10.60.0.0/16"), addr("192.168.50.7")),
            host.delete_link("nope0"),
            host.set_link_down("nope0"),
        )


# --- tests -----------------------------------------------------------------------------------


def test_create_bridge_sets_stp_delay_mac_mtu(netns_kit):
    ns = netns_kit.make_netns()
    info = netns_kit.run_in_netns(
        ns, _create_bridge, stp=False, forward_delay=3, mac="52:54:00:12:34:56", mtu=1400
    )
    assert (info.kind, info.stp, info.forward_delay, info.mac, info.mtu) == (
        "bridge", False, 3, "52:54:00:12:34:56", 1400
    )
    seen = netns_kit.ns_json(ns, ["-d", "link", "show", "vbr0"])[0]
    assert seen["address"] == "52:54:00:12:34:56"
    assert seen["mtu"] == 1400
    data = seen["linkinfo"]["info_data"]
    assert (data["stp_state"], data["forward_delay"]) == (0, 300)  # centiseconds


def test_kernel_stp_raises_a_zero_forward_delay_to_its_minimum(netns_kit):
    # libvirt's default (stp on, delay 0) gives the kernel's minimum of 2 s, as with libvirt
    ns = netns_kit.make_netns()
    info = netns_kit.run_in_netns(ns, _create_bridge, stp=True, forward_delay=0)
    assert (info.stp, info.forward_delay) == (True, 2)


def test_create_bridge_refuses_an_existing_name(netns_kit):
    ns = netns_kit.make_netns()
    message = netns_kit.run_in_netns(ns, _bridge_twice)
    assert message == "cannot create bridge vbr0: interface already exists"


def test_ensure_bridge_tolerates_a_bridge_but_not_another_kind(netns_kit):
    ns = netns_kit.make_netns()
    first, second, refused = netns_kit.run_in_netns(ns, _ensure_bridge_twice)
    assert (first, second) == (True, False)
    assert refused == "interface lo exists but is not a bridge"


def test_delete_link_is_safe_twice(netns_kit):
    ns = netns_kit.make_netns()
    netns_kit.run_in_netns(ns, _create_bridge, stp=False)
    assert netns_kit.run_in_netns(ns, _delete_twice, "vbr0") == (True, False)
    assert netns_kit.ns_links(ns) == ["lo"]


def test_addresses_v4_with_broadcast_and_v6_without_dad(netns_kit):
    ns = netns_kit.make_netns()
    duplicate, dump = netns_kit.run_in_netns(ns, _addresses)
    assert duplicate == "address 192.168.50.1/24 is already on vbr0"
    assert dump == ["192.168.50.1/24", "2001:db8:50::1/64"]
    infos = netns_kit.ns_json(ns, ["address", "show", "dev", "vbr0"])[0]["addr_info"]
    v4 = next(i for i in infos if i["family"] == "inet")
    v6 = next(i for i in infos if i["family"] == "inet6" and i["scope"] == "global")
    assert v4["broadcast"] == "192.168.50.255"
    assert v6.get("nodad") is True


def test_delete_address_is_safe_twice(netns_kit):
    ns = netns_kit.make_netns()
    netns_kit.run_in_netns(ns, _addresses)
    assert netns_kit.run_in_netns(ns, _delete_address_twice, "192.168.50.1/24") == (True, False)
    assert "192.168.50.1/24" not in netns_kit.ns_addresses(ns)
    assert "2001:db8:50::1/64" in netns_kit.ns_addresses(ns)


def test_routes_with_gateway_and_metric(netns_kit):
    ns = netns_kit.make_netns()
    unreachable, found = netns_kit.run_in_netns(ns, _routes)
    assert found == [("10.60.0.0/16", "vbr0", "192.168.50.7", 9)]
    assert unreachable is not None and "network unreachable" in unreachable
    shown = netns_kit.ns_json(ns, ["route", "show", "10.60.0.0/16"])
    # iproute2 leaves out "protocol" when it is boot, the protocol libvirt and `ip` use
    assert [(r["gateway"], r["metric"], r.get("protocol", "boot")) for r in shown] == [
        ("192.168.50.7", 9, "boot")
    ]
    assert netns_kit.run_in_netns(ns, _delete_route_twice) == (True, False)
    assert "10.60.0.0/16" not in netns_kit.ns_routes(ns)


def test_link_up_and_down(netns_kit):
    ns = netns_kit.make_netns()
    assert netns_kit.run_in_netns(ns, _up_down) == (True, False, False)


def test_sysctl_is_per_namespace(netns_kit):
    ns = netns_kit.make_netns()
    root_value = open("/proc/sys/net/ipv4/ip_forward").read().strip()
    before, after, missing, refused = netns_kit.run_in_netns(ns, _sysctl_roundtrip)
    assert (before, after, missing) == ("0", "1", None)
    assert refused == "cannot set sysctl net.ipv6.conf.nonexistent0.accept_ra: no such parameter"
    assert open("/proc/sys/net/ipv4/ip_forward").read().strip() == root_value


def test_nft_runs_one_transaction_and_reports_errors(netns_kit):
    ns = netns_kit.make_netns()
    netns_kit.require_tools("nft")
    netns_kit.run_in_netns(ns, _nft, "add table inet virtnet_t\nadd chain inet virtnet_t c1\n")
    assert netns_kit.run_in_netns(ns, _nft_chains, "virtnet_t") == ["c1"]
    assert netns_kit.run_in_netns(ns, _nft_chains, "absent_t") is None
    message = netns_kit.run_in_netns(ns, _nft_error)
    assert message is not None and "nft refused the ruleset" in message
    # the failed transaction left nothing: the table still has only c1
    assert netns_kit.run_in_netns(ns, _nft_chains, "virtnet_t") == ["c1"]


def test_nft_binary_backend(netns_kit):
    ns = netns_kit.make_netns()
    netns_kit.require_tools("nft")
    chains = netns_kit.run_in_netns(
        ns, _nft_binary_backend, "add table inet virtnet_b\nadd chain inet virtnet_b c2\n"
    )
    assert chains == ["c2"]


def test_enter_netns_switches_the_process(netns_kit):
    ns = netns_kit.make_netns()
    inode = netns_kit.run_in_netns(ns, _netns_inode)
    assert inode == os.stat(f"/run/netns/{ns}").st_ino
    assert inode != os.stat("/proc/self/ns/net").st_ino


def test_enter_netns_refuses_a_missing_namespace():
    from virtnet.host.netns import enter_netns

    missing = "vnt-missing-" + os.urandom(4).hex()
    with pytest.raises(HostError, match="does not exist"):
        enter_netns(missing)  # fails at open(), before any setns
    assert not os.path.exists(f"/run/netns/{missing}")
    with pytest.raises(HostError, match="invalid network namespace name"):
        enter_netns("../etc")


def test_read_facts(netns_kit):
    ns = netns_kit.make_netns()
    facts = netns_kit.run_in_netns(ns, _facts)
    assert set(facts.links) == {"lo", "vbr0"}
    assert facts.link("vbr0").kind == "bridge"
    assert [str(a.interface) for a in addresses_in(facts, net("192.168.50.0/24"))] == [
        "192.168.50.1/24"
    ]
    assert [r.link for r in routes_to(facts, net("192.168.50.0/24"))] == ["vbr0"]
    assert facts.ipv6 is True
    assert facts.ra_accept == {}


def test_light_pyroute2_import_keeps_the_full_package_usable():
    # In a fresh interpreter: the light import must not break a later plain pyroute2 use.
    code = (
        "import sys\n"
        "from tests.kit.pyroute2_light import load_pyroute2\n"
        "IPRoute, NetlinkError = load_pyroute2()\n"
        "assert 'pyroute2.ndb.main' not in sys.modules\n"
        "import pyroute2\n"
        "from pyroute2 import NDB, IPRoute as Full\n"
        "assert Full is IPRoute and pyroute2.NetlinkError is NetlinkError\n"
        "import pyroute2.iproute.linux as m\n"
        "assert m.IPRoute is IPRoute\n"
        "print('ok')\n"
    )
    proc = subprocess.run(  # from the repo root, where tests.kit is
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_run_never_uses_a_shell_and_reports_failures():
    from virtnet.host import Host

    host = Host()
    assert host.run(["cat"], input="a;b $(x)\n").stdout == "a;b $(x)\n"
    with pytest.raises(HostError, match=r"ls /nonexistent-vnt failed: .*No such file"):
        host.run(["ls", "/nonexistent-vnt"])
    assert host.run(["false"], check=False).returncode == 1
    with pytest.raises(HostError, match="cannot run vnt-no-such-tool: not installed"):
        host.run(["vnt-no-such-tool"])
    with pytest.raises(HostError, match="did not finish within 0 s"):
        host.run(["sleep", "5"], timeout=0.2)


# --- the raw rtnetlink layer against iproute2 ----------------------------------------------------


def _setup_for_dumps(kit, ns):
    steps = [
        ["link", "add", "br0", "address", "52:54:00:aa:bb:cc", "mtu", "1400", "type", "bridge",
         "stp_state", "1", "forward_delay", "500"],
        ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
        ["link", "set", "v0", "master", "br0"],
        ["link", "set", "br0", "up"], ["link", "set", "v0", "up"], ["link", "set", "v1", "up"],
        ["address", "add", "192.168.5.1/24", "dev", "br0"],
        ["address", "add", "10.9.9.1/32", "peer", "10.9.9.2", "dev", "v1"],
        ["address", "add", "2001:db8::1/64", "dev", "br0", "nodad"],
        ["route", "add", "10.1.0.0/16", "via", "192.168.5.7", "metric", "5"],
        ["route", "add", "default", "via", "192.168.5.254"],
        ["-6", "route", "add", "2001:db8:1::/48", "via", "2001:db8::9", "dev", "br0",
         "metric", "7"],
        ["route", "add", "10.2.0.0/16", "nexthop", "via", "192.168.5.8", "nexthop", "via",
         "192.168.5.9"],
        ["route", "add", "blackhole", "10.3.0.0/16"],
        ["route", "add", "10.4.0.0/16", "dev", "br0", "table", "300"],
    ]
    for argv in steps:
        kit.run(["ip", "-n", ns, *argv])


def _expected_dumps(kit, ns):
    """What iproute2 shows, in the shape of Host.links/addresses/routes (main table,
    unicast)."""
    shown = kit.ns_json(ns, ["-d", "link", "show"])
    index_of = {link["ifname"]: link["ifindex"] for link in shown}
    links = []
    for link in shown:
        info = link.get("linkinfo", {})
        data = info.get("info_data", {}) if info.get("info_kind") == "bridge" else {}
        links.append((
            link["ifname"], link["ifindex"], info.get("info_kind"), "UP" in link["flags"],
            link.get("address"), link["mtu"], index_of.get(link.get("master")),
            bool(data["stp_state"]) if data else None,
            data["forward_delay"] // 100 if data else None,
        ))
    addresses = sorted(
        (link["ifname"], f"{info['local']}/{info['prefixlen']}")
        for link in kit.ns_json(ns, ["address", "show"]) for info in link["addr_info"]
    )
    routes = []
    for family, default, host_prefix in (("-4", "0.0.0.0/0", 32), ("-6", "::/0", 128)):
        for route in kit.ns_json(ns, [family, "-d", "route", "show", "table", "main"]):
            if route.get("type", "unicast") != "unicast":
                continue
            dst = route["dst"]
            dst = default if dst == "default" else dst if "/" in dst else f"{dst}/{host_prefix}"
            routes.append((dst, route.get("dev"), route.get("gateway"), route.get("metric", 0)))
    return links, addresses, sorted(routes)


def test_dumps_of_links_addresses_and_routes_match_iproute2(netns_kit):
    # veth enslaved to a bridge, an IPv4 peer address, IPv6, routes with gateway and metric,
    # a default route, a multipath route (no single link), a blackhole and a route in
    # another table (both left out)
    ns = netns_kit.make_netns()
    _setup_for_dumps(netns_kit, ns)
    links, addresses, routes = netns_kit.run_in_netns(ns, _dumps)
    expected_links, expected_addresses, expected_routes = _expected_dumps(netns_kit, ns)
    assert links == expected_links
    assert addresses == expected_addresses
    assert routes == expected_routes
    # the cases are really there: not an empty comparison
    assert ("10.2.0.0/16", None, None, 0) in routes
    assert ("2001:db8:1::/48", "br0", "2001:db8::9", 7) in routes
    assert ("v1", "10.9.9.1/32") in addresses
    assert not any(dst in ("10.3.0.0/16", "10.4.0.0/16") for dst, *_ in routes)
    assert [link[2] for link in links if link[0] in ("br0", "v0")] == ["bridge", "veth"]


def test_bridge_vlan_filtering_is_set_or_its_absence_is_named(netns_kit):
    ns = netns_kit.make_netns()
    message = netns_kit.run_in_netns(ns, _vlan_filtering_bridge)
    if message is None:
        data = netns_kit.ns_json(ns, ["-d", "link", "show", "vbr0"])[0]["linkinfo"]["info_data"]
        assert data["vlan_filtering"] == 1
    else:
        assert "CONFIG_BRIDGE_VLAN_FILTERING" in message
        assert netns_kit.ns_links(ns) == ["lo"]


def test_deletes_on_a_missing_link_find_nothing(netns_kit):
    ns = netns_kit.make_netns()
    assert netns_kit.run_in_netns(ns, _deletes_on_a_missing_link) == (False, False, False, False)


HOST_PATHS_WITHOUT_PYROUTE2 = """
import ipaddress, sys
from virtnet.host.netns import enter_netns
enter_netns(sys.argv[1])
from virtnet.host import Host
from virtnet.host.facts import read_facts
with Host() as host:
    host.create_bridge("vbr0", stp=True, forward_delay=0, mac="52:54:00:00:00:01", mtu=1400)
    host.add_address("vbr0", ipaddress.ip_interface("192.168.50.1/24"))
    host.add_address("vbr0", ipaddress.ip_interface("2001:db8:50::1/64"))
    host.set_link_up("vbr0")
    host.add_route("vbr0", ipaddress.ip_network("10.60.0.0/16"),
                   ipaddress.ip_address("192.168.50.7"), 9)
    facts = read_facts(host)
    assert "vbr0" in facts.links and [r for r in facts.routes
                                      if r.destination == ipaddress.ip_network("10.60.0.0/16")]
    host.delete_route("vbr0", ipaddress.ip_network("10.60.0.0/16"),
                      ipaddress.ip_address("192.168.50.7"), 9)
    host.delete_address("vbr0", ipaddress.ip_interface("192.168.50.1/24"))
    host.delete_link("vbr0")
print(sorted(name for name in sys.modules if name.split(".")[0] == "pyroute2"))
"""


def test_host_netlink_paths_never_import_pyroute2(netns_kit):
    # a fresh interpreter: the pytest process (and so its forked children) may have it loaded
    ns = netns_kit.make_netns()
    proc = subprocess.run([sys.executable, "-c", HOST_PATHS_WITHOUT_PYROUTE2, ns],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert netns_kit.ns_links(ns) == ["lo"]


# --- the tc probe leaves the namespace it plans for alone --------------------------------------


def _probe_between_two_links():
    from virtnet.host import tc
    from virtnet.host.rtnl import shared_rtnl

    rtnl = shared_rtnl()
    before = rtnl.create_link("vnmark0", "ifb")
    tc._features_cache = None  # a fresh process would probe: no cache dir, no earlier result
    probed = tc.probe_features(None)
    after = rtnl.create_link("vnmark1", "ifb")
    here = tc._probe_on("vnhere0")  # the same pieces tried in this namespace itself
    links = sorted(link.name for link in rtnl.links())
    return before, after, probed, here, links


def test_tc_probe_creates_no_link_where_it_plans(netns_kit):
    """The probe's scratch IFB lives in a namespace of its own: in the planning namespace the
    next link made after the probe takes the very next ifindex (nothing was created between),
    and what it found equals the same pieces tried right here."""
    ns = netns_kit.make_netns()
    before, after, probed, here, links = netns_kit.run_in_netns(ns, _probe_between_two_links)
    assert after == before + 1
    assert probed == here
    assert probed.ifb and probed.htb
    assert links == ["lo", "vnmark0", "vnmark1"]
