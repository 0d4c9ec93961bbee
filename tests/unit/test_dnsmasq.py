"""Unit tests of virtnet.render.dnsmasq beyond libvirt's own cases (those are in
tests/conformance/test_networkxml2conf.py): paths, capabilities, helpers, the newer-libvirt
additions, and every refusal."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from virtnet.paths import DEFAULT_DNSMASQ_DIR, DnsmasqPaths
from virtnet.render.dnsmasq_values import (
    DnsmasqConfigError,
    format_ip,
    lease_time,
    libvirt_prefix,
    ptr_domain,
)
from virtnet.render.dnsmasq import (
    HEADER,
    DnsmasqCaps,
    needs_dnsmasq,
    render_addnhosts,
    render_all,
    render_conf,
    render_hostsfile,
)
from tests.kit.dnsmasqcaps import caps_from_version_output
from virtnet.errors import VirtnetError
from virtnet.spec.model import (
    Bridge,
    DhcpHost,
    DhcpRange,
    Dns,
    DnsForwarder,
    DnsHost,
    DnsSrv,
    DnsTxt,
    Domain,
    Forward,
    ForwardMode,
    IpDef,
    Lease,
    LeaseUnit,
    Network,
)
from virtnet.paths import StatePaths

if TYPE_CHECKING:
    from click.testing import Result

ip = ipaddress.ip_address


def nat(name: str = "n1", **kwargs: object) -> Network:
    kwargs.setdefault("ips", [IpDef(address=ip("10.1.0.1"), prefix=24)])
    return Network(name=name, forward=Forward(mode=ForwardMode.NAT), bridge=Bridge(name="vbr1"),
                   **kwargs)  # type: ignore[arg-type]


def body(conf: str) -> list[str]:
    """The option lines (our header comment aside)."""
    return [line for line in conf.splitlines() if not line.startswith("#")]


# --- paths and capabilities --------------------------------------------------------------------


def test_paths_follow_libvirts_naming() -> None:
    paths = DnsmasqPaths()
    assert paths.directory == DEFAULT_DNSMASQ_DIR == Path("/var/lib/virtnet/dnsmasq")
    assert paths.conf("a'b") == DEFAULT_DNSMASQ_DIR / "a'b.conf"
    # only the two hosts files escape the name, like libvirt's dnsmasq context does
    escaped = "a&apos;b&lt;&amp;&gt;&quot;.hostsfile"
    assert paths.hostsfile("a'b<&>\"") == DEFAULT_DNSMASQ_DIR / escaped
    assert paths.addnhosts("x&y") == DEFAULT_DNSMASQ_DIR / "x&amp;y.addnhosts"
    assert paths.leases("x&y") == DEFAULT_DNSMASQ_DIR / "x&y.leases"
    assert paths.status("virbr0") == DEFAULT_DNSMASQ_DIR / "virbr0.status"
    assert paths.pid_file("x") is None
    assert DnsmasqPaths.libvirt().pid_file("x") == Path("/run/libvirt/network/x.pid")


def test_paths_for_a_state_directory() -> None:
    state = StatePaths.under(Path("/tmp/st"))
    paths = DnsmasqPaths.for_state(state)
    assert paths.conf("n") == state.dnsmasq_dir / "n.conf"
    assert paths.pid_file("n") == state.dnsmasq_pidfile("n")


def test_pid_file_line_sits_before_the_interface_binding() -> None:
    paths = DnsmasqPaths(directory=Path("/d"), pid_dir=Path("/run/p"))
    lines = body(render_conf(nat(dns=Dns(forward_plain_names=False)), paths))
    assert lines.index("local=//") < lines.index("pid-file=/run/p/n1.pid")
    assert lines.index("pid-file=/run/p/n1.pid") + 1 == lines.index("except-interface=lo")


def test_caps_from_version_output() -> None:
    caps = caps_from_version_output("Dnsmasq version 2.90  Copyright (c) 2000-2024\n")
    assert caps.version == (2, 90)
    caps.check()
    with pytest.raises(VirtnetError, match="cannot read the version"):
        caps_from_version_output("something else\n")


def test_old_dnsmasq_is_refused() -> None:
    old = DnsmasqCaps(version=(2, 66))
    with pytest.raises(VirtnetError, match="2.67 or newer"):
        render_conf(nat(), caps=old)


# --- helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lease,text", [
    (None, None),
    (Lease(0), "infinite"),
    (Lease(0, LeaseUnit.HOURS), "infinite"),
    (Lease(30), "30m"),  # no unit: minutes, libvirt's default
    (Lease(200, LeaseUnit.SECONDS), "200s"),
    (Lease(10, LeaseUnit.MINUTES), "10m"),
    (Lease(2, LeaseUnit.HOURS), "2h"),
])
def test_lease_time(lease: Lease | None, text: str | None) -> None:
    assert lease_time(lease) == text


@pytest.mark.parametrize("address,text", [
    ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),  # Python < 3.13 says ::ffff:c000:201
    ("::192.0.2.1", "::192.0.2.1"),
    ("::ffff:0:0", "::ffff:0.0.0.0"),
    ("::0:1:0:0", "::1:0:0"),
    ("::1", "::1"),
    ("::", "::"),
    ("2001:db8::1", "2001:db8::1"),
    ("2001:db8:0:1::", "2001:db8:0:1::"),
    ("10.0.0.1", "10.0.0.1"),
])
def test_format_ip_is_the_c_librarys(address: str, text: str) -> None:
    assert format_ip(ip(address)) == text


@pytest.mark.parametrize("ipdef,prefix", [
    (IpDef(address=ip("10.0.0.1")), 8),
    (IpDef(address=ip("172.16.0.1")), 16),
    (IpDef(address=ip("192.168.1.1")), 24),
    (IpDef(address=ip("224.0.0.1")), None),
    (IpDef(address=ip("10.0.0.1"), netmask=ipaddress.IPv4Address("255.255.240.0")), 20),
    (IpDef(address=ip("10.0.0.1"), prefix=30, netmask=ipaddress.IPv4Address("255.0.0.0")), 30),
    (IpDef(address=ip("2001:db8::1")), 64),
    (IpDef(address=ip("2001:db8::1"), prefix=56), 56),
])
def test_libvirt_prefix(ipdef: IpDef, prefix: int | None) -> None:
    assert libvirt_prefix(ipdef) == prefix


def test_ptr_domains() -> None:
    assert ptr_domain(IpDef(address=ip("10.20.30.1"), prefix=16), "/p") == "20.10.in-addr.arpa"
    assert ptr_domain(IpDef(address=ip("2001:db8::1"), prefix=48), "/p") == \
        "0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    with pytest.raises(DnsmasqConfigError, match="/p: localPtr with prefix 20"):
        ptr_domain(IpDef(address=ip("10.0.0.1"), prefix=20), "/p")
    with pytest.raises(DnsmasqConfigError, match="multiple of 4"):
        ptr_domain(IpDef(address=ip("2001:db8::1"), prefix=62), "/p")


def test_local_ptr_refusal_names_the_ip() -> None:
    net = nat(ips=[IpDef(address=ip("10.1.0.1"), prefix=20, local_ptr=True)])
    with pytest.raises(DnsmasqConfigError, match=r"^/network/ip\[1\]/@localPtr"):
        render_conf(net)


# --- conf content ------------------------------------------------------------------------------


def test_header_is_our_own_comment_without_the_network_name() -> None:
    conf = render_conf(nat(name="secret-name"))
    assert conf.startswith(HEADER)
    assert all(line.startswith("##") for line in HEADER.splitlines())
    assert "secret-name" not in HEADER and "libvirt" not in HEADER


def test_dns_disabled() -> None:
    net = nat(domain=Domain(name="lan"),
              dns=Dns(enable=False, forwarders=[DnsForwarder(addr=ip("1.1.1.1"))],
                      txts=[DnsTxt("t", "v")], srvs=[DnsSrv(service="s", protocol="tcp")],
                      forward_plain_names=False))
    lines = body(render_conf(net))
    assert lines[:2] == ["strict-order", "port=0"]
    # the domain is still handed out by DHCP; nothing that only DNS uses is written
    assert "domain=lan" in lines
    dns_only = ("server=", "txt-record=", "srv-host=", "addn-hosts=", "domain-needed", "local=//")
    for prefix in dns_only:
        assert not any(line.startswith(prefix) for line in lines), prefix


def test_forwarders_with_port_and_ipv6() -> None:
    net = nat(dns=Dns(forwarders=[
        DnsForwarder(addr=ip("192.0.2.1"), port=5353),
        DnsForwarder(domain="corp", addr=ip("2001:db8::53")),
        DnsForwarder(domain="blocked"),
    ]))
    lines = body(render_conf(net))
    assert lines[1:5] == ["server=192.0.2.1#5353", "server=/corp/2001:db8::53", "server=/blocked/#",
                          "no-resolv"]


def test_domain_only_forwarders_keep_the_hosts_resolv_conf() -> None:
    net = nat(dns=Dns(forwarders=[DnsForwarder(domain="corp", addr=ip("192.0.2.1"))]))
    assert "no-resolv" not in body(render_conf(net))


def test_static_only_dhcp_and_ipv6_ra() -> None:
    net = nat(ips=[
        IpDef(address=ip("10.1.0.1"), prefix=24,
              hosts=[DhcpHost(mac="52:54:00:aa:bb:cc", ip=ip("10.1.0.5"))]),
        IpDef(family="ipv6", address=ip("2001:db8:1::1"), prefix=64,
              hosts=[DhcpHost(name="h6", ip=ip("2001:db8:1::5"),
                              lease=Lease(1, LeaseUnit.HOURS))]),
        IpDef(family="ipv6", address=ip("2001:db8:2::1"), prefix=64),
    ])
    lines = body(render_conf(net))
    assert "dhcp-range=10.1.0.1,static" in lines
    assert "dhcp-range=2001:db8:1::1,static,64" in lines
    assert not any(line.startswith("dhcp-lease-max") for line in lines)
    # with DHCPv6 somewhere, RA is enabled and the DHCP-less IPv6 subnet gets no ra-only range
    assert lines[-1] == "enable-ra" and not any("ra-only" in line for line in lines)
    assert render_hostsfile(net) == "52:54:00:aa:bb:cc,10.1.0.5\nh6,[2001:db8:1::5],1h\n"


def test_isolated_network_lines() -> None:
    net = Network(name="iso", bridge=Bridge(name="vbr2"),
                  ips=[IpDef(family="ipv6", address=ip("fd00::1"), prefix=64)])
    lines = body(render_conf(net))
    assert lines[lines.index("interface=vbr2") + 1:] == [
        "dhcp-option=3", "no-resolv", "ra-param=*,0,0",
        "addn-hosts=/var/lib/virtnet/dnsmasq/iso.addnhosts", "dhcp-range=fd00::1,ra-only"]


def test_tftp_on_two_addresses_enables_tftp_once() -> None:
    net = nat(ips=[IpDef(address=ip("10.1.0.1"), prefix=24, tftp_root="/a"),
                   IpDef(address=ip("10.2.0.1"), prefix=24, tftp_root="/b"),
                   IpDef(family="ipv6", address=ip("fd00::1"), tftp_root="/ignored")])
    lines = body(render_conf(net))
    assert [line for line in lines if "tftp" in line] == ["enable-tftp", "tftp-root=/a",
                                                           "tftp-root=/b"]


def test_lease_max_sums_ranges_of_both_families() -> None:
    net = nat(ips=[
        IpDef(address=ip("10.1.0.1"), prefix=16,
              ranges=[DhcpRange(ip("10.1.0.10"), ip("10.1.1.9")),
                      DhcpRange(ip("10.1.2.1"), ip("10.1.2.1"))]),
        IpDef(family="ipv6", address=ip("fd00::1"), prefix=64,
              ranges=[DhcpRange(ip("fd00::1:0"), ip("fd00::1:ffff"))]),
    ])
    assert f"dhcp-lease-max={256 + 1 + 65536}" in body(render_conf(net))


@pytest.mark.parametrize("start,end,message", [
    ("10.1.0.0", "10.1.0.9", "network address"),
    ("10.1.0.10", "10.1.0.255", "broadcast address"),
    ("10.1.0.10", "10.2.0.10", "not entirely within"),
    ("10.1.0.20", "10.1.0.10", "reversed"),
])
def test_bad_ipv4_ranges(start: str, end: str, message: str) -> None:
    net = nat(ips=[IpDef(address=ip("10.1.0.1"), prefix=24,
                         ranges=[DhcpRange(ip(start), ip(end))])])
    with pytest.raises(DnsmasqConfigError, match=r"/network/ip\[1\]/dhcp/range\[1\]: .*" + message):
        render_conf(net)


def test_too_large_ranges() -> None:
    net = nat(ips=[IpDef(address=ip("10.0.0.1"), prefix=8,
                         ranges=[DhcpRange(ip("10.0.0.2"), ip("10.1.0.1"))])])
    with pytest.raises(DnsmasqConfigError, match="too large"):
        render_conf(net)
    net6 = nat(ips=[IpDef(address=ip("fd00::1"), prefix=64,
                          ranges=[DhcpRange(ip("fd00::1:0"), ip("fd00::2:0"))])])
    with pytest.raises(DnsmasqConfigError, match="too large"):
        render_conf(net6)


def test_one_dhcp_definition_per_family() -> None:
    def dhcp_ip(address: str) -> IpDef:
        first = ipaddress.ip_interface(f"{address}/64" if ":" in address else f"{address}/24")
        return IpDef(address=ip(address), prefix=first.network.prefixlen,
                     ranges=[DhcpRange(first.ip + 9, first.ip + 19)])

    for pair in (("10.1.0.1", "10.2.0.1"), ("fd00:1::1", "fd00:2::1")):
        net = nat(ips=[dhcp_ip(pair[0]), dhcp_ip(pair[1])])
        with pytest.raises(DnsmasqConfigError, match=r"^/network/ip\[2\]/dhcp: .*ip\[1\]"):
            render_conf(net)
        with pytest.raises(DnsmasqConfigError):
            render_hostsfile(net)
    # one of each family is fine
    render_conf(nat(ips=[dhcp_ip("10.1.0.1"), dhcp_ip("fd00:1::1")]))


def test_srv_positional_defaults() -> None:
    net = nat(dns=Dns(srvs=[
        DnsSrv(service="a", protocol="udp", target="t.example", weight=5),
        DnsSrv(service="b", protocol="tcp", target=".", port=80),
        DnsSrv(service="c", protocol="tcp", domain="d.example"),
    ]))
    srv = [line for line in body(render_conf(net)) if line.startswith("srv-host=")]
    assert srv == ["srv-host=_a._udp,t.example,1,0,5", "srv-host=_b._tcp",
                   "srv-host=_c._tcp.d.example"]


def test_mtu_option() -> None:
    assert "dhcp-option=option:mtu,9000" in body(render_conf(nat(mtu=9000)))


# --- hosts files -------------------------------------------------------------------------------


def test_hostsfile_forms() -> None:
    net = nat(ips=[
        IpDef(address=ip("10.1.0.1"), prefix=24, hosts=[
            DhcpHost(mac="52:54:00:00:00:01", name="a", ip=ip("10.1.0.2")),
            DhcpHost(name="b", ip=ip("10.1.0.3"), lease=Lease(0)),
            DhcpHost(mac="52:54:00:00:00:03", ip=ip("10.1.0.4")),
            DhcpHost(mac="52:54:00:00:00:04", name="no-ip"),  # skipped, as libvirt does
            DhcpHost(mac="52:54:00:00:00:05", id="01:02", name="id-ignored", ip=ip("10.1.0.6")),
        ]),
        IpDef(address=ip("fd00::1"), prefix=64, hosts=[
            DhcpHost(id="0:1:2", ip=ip("fd00::2")),
            DhcpHost(id="0:1:3", name="c", ip=ip("fd00::3"), lease=Lease(90, LeaseUnit.SECONDS)),
        ]),
    ])
    assert render_hostsfile(net).splitlines() == [
        "52:54:00:00:00:01,10.1.0.2,a",
        "b,10.1.0.3,infinite",
        "52:54:00:00:00:03,10.1.0.4",
        "52:54:00:00:00:05,10.1.0.6,id-ignored",
        "id:0:1:2,[fd00::2]",
        "id:0:1:3,c,[fd00::3],90s",
    ]


def test_hosts_without_identity_are_refused() -> None:
    net = nat(ips=[IpDef(address=ip("10.1.0.1"), prefix=24, hosts=[DhcpHost(ip=ip("10.1.0.2"))])])
    with pytest.raises(DnsmasqConfigError, match="needs a mac or a name"):
        render_hostsfile(net)
    net6 = nat(ips=[IpDef(address=ip("fd00::1"), hosts=[DhcpHost(ip=ip("fd00::2"))])])
    with pytest.raises(DnsmasqConfigError, match="needs an id or a name"):
        render_conf(net6)


def test_addnhosts_groups_names_by_address() -> None:
    net = nat(dns=Dns(hosts=[
        DnsHost(ip=ip("10.1.0.1"), hostnames=["gw", "router"]),
        DnsHost(ip=ip("fd00::1"), hostnames=["gw6"]),
        DnsHost(ip=ip("10.1.0.1"), hostnames=["third"]),
    ]))
    assert render_addnhosts(net) == "10.1.0.1\tgw\trouter\tthird\t\nfd00::1\tgw6\t\n"
    assert render_addnhosts(nat()) == ""


def test_render_all() -> None:
    net = nat(dns=Dns(hosts=[DnsHost(ip=ip("10.1.0.1"), hostnames=["gw"])]))
    files = render_all(net)
    assert (files.conf, files.hostsfile, files.addnhosts) == (
        render_conf(net), render_hostsfile(net), render_addnhosts(net))


# --- which networks have a dnsmasq ---------------------------------------------------------------


def test_needs_dnsmasq() -> None:
    assert needs_dnsmasq(nat())  # DNS on by default
    assert not needs_dnsmasq(nat(ips=[]))
    assert not needs_dnsmasq(nat(dns=Dns(enable=False)))
    tftp_only = nat(dns=Dns(enable=False),
                    ips=[IpDef(address=ip("10.1.0.1"), prefix=24, tftp_root="/t")])
    assert needs_dnsmasq(tftp_only)
    bridged = Network(name="b", forward=Forward(mode=ForwardMode.BRIDGE),
                      bridge=Bridge(name="br0"))
    assert not needs_dnsmasq(bridged)


def test_networks_without_our_bridge_have_no_conf() -> None:
    bridged = Network(name="b", forward=Forward(mode=ForwardMode.BRIDGE, dev="eth0"))
    with pytest.raises(VirtnetError, match="forward mode bridge"):
        render_conf(bridged)
    unnamed = Network(name="u", forward=Forward(mode=ForwardMode.NAT))
    with pytest.raises(VirtnetError, match="no bridge name"):
        render_conf(unnamed)


# --- the dnsmasq-conf command ------------------------------------------------------------------

DEFINITION = """<network>
  <name>cli1</name>
  <forward mode='nat'/>
  <bridge name='vbr7'/>
  <dns><host ip='10.7.0.1'><hostname>gw</hostname></host></dns>
  <ip address='10.7.0.1' prefix='24'>
    <dhcp>
      <range start='10.7.0.10' end='10.7.0.20'/>
      <host mac='52:54:00:07:00:01' name='vm' ip='10.7.0.11'/>
    </dhcp>
  </ip>
</network>
"""


def run_cli(tmp_path: Path, *args: str, definition: str = DEFINITION) -> Result:
    from click.testing import CliRunner

    from virtnet.face.cli import main

    path = tmp_path / "net.xml"
    path.write_text(definition)
    return CliRunner().invoke(main, ["--state-dir", str(tmp_path / "state"), "dnsmasq-conf",
                                     str(path), *args])


def test_cli_prints_the_conf_net_start_would_write(tmp_path: Path) -> None:
    from virtnet.spec.xml.parse import parse_network

    result = run_cli(tmp_path)
    assert result.exit_code == 0, result.output
    paths = DnsmasqPaths.for_state(StatePaths.under(tmp_path / "state"))
    assert result.output == render_conf(parse_network(DEFINITION), paths)
    assert f"dhcp-hostsfile={paths.hostsfile('cli1')}" in result.output.splitlines()


def test_cli_dnsmasq_dir_and_other_files(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--dnsmasq-dir", "/elsewhere")
    assert "addn-hosts=/elsewhere/cli1.addnhosts" in result.output.splitlines()
    assert run_cli(tmp_path, "--hostsfile").output == "52:54:00:07:00:01,10.7.0.11,vm\n"
    assert run_cli(tmp_path, "--addnhosts").output == "10.7.0.1\tgw\t\n"
    both = run_cli(tmp_path, "--hostsfile", "--addnhosts")
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_cli_refuses_an_invalid_definition(tmp_path: Path) -> None:
    # the range lies outside the subnet: validation refuses before anything is rendered
    bad = DEFINITION.replace("start='10.7.0.10'", "start='10.8.0.10'")
    result = run_cli(tmp_path, definition=bad)
    assert result.exit_code == 1
    assert "net.xml" in result.output and "range" in result.output
