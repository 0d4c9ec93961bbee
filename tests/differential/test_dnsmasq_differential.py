"""Our dnsmasq files against the ones a live libvirt 9.0 writes, for networks of our own.

Each network is defined and started by a real libvirtd confined to a namespace
(tests.kit.libvirtd.LibvirtdInNetns); libvirt then writes
/var/lib/libvirt/dnsmasq/NAME.conf, NAME.hostsfile and NAME.addnhosts. We render the same
definition with libvirt's paths (DnsmasqPaths.libvirt(), which also gives its pid-file line) and
compare: the conf line for line (comment lines aside: ours are our own words), the hosts files
byte for byte.

The networks are chosen to differ from libvirt's own conformance cases: every forward mode with
a bridge of its own, DHCP hosts of both families with lease times, static-only DHCP, IPv6 RA-only
subnets, DNS TXT/SRV/host records, forwarders, local-only domains, PTR zones, MTU, boot files,
disabled DNS and pass-through options. Values libvirt writes unquoted but we quote (free text
holding '"', ',', '#' or non-ASCII) are left out on purpose: there we differ to stay safe.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtnet.paths import DnsmasqPaths
from virtnet.render.dnsmasq import render_addnhosts, render_conf, render_hostsfile
from tests.kit.libvirtd import LibvirtdInNetns, libvirtd_unavailable_reason
from virtnet.spec.xml.parse import parse_network

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.netns,
    pytest.mark.skipif(libvirtd_unavailable_reason() is not None,
                       reason=libvirtd_unavailable_reason() or ""),
]

SUFFIX = secrets.token_hex(2)

# name -> definition body (without <name>); bridge names are given so both sides agree.
NETWORKS = {
    "nat-v4v6-hosts": """
  <forward mode='nat'/>
  <bridge name='vntd{s}a'/>
  <domain name='lab.example'/>
  <ip address='10.91.0.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.91.0.100' end='10.91.0.199'>
        <lease expiry='2' unit='hours'/>
      </range>
      <host mac='52:54:00:91:00:01' name='web' ip='10.91.0.11'/>
      <host mac='52:54:00:91:00:02' ip='10.91.0.12'>
        <lease expiry='0'/>
      </host>
      <host name='dbhost' ip='10.91.0.13'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='fd91::1' prefix='64'>
    <dhcp>
      <range start='fd91::100' end='fd91::1ff'>
        <lease expiry='45' unit='minutes'/>
      </range>
      <host id='0:3:0:1:52:54:0:91:0:1' name='web' ip='fd91::11'/>
      <host name='six' ip='fd91::12'>
        <lease expiry='600' unit='seconds'/>
      </host>
    </dhcp>
  </ip>""",
    "routed-dns-records": """
  <forward mode='route'/>
  <bridge name='vntd{s}b'/>
  <mtu size='1400'/>
  <dns forwardPlainNames='no'>
    <txt name='info.lab.example' value='routed network (managed)'/>
    <srv service='ldap' protocol='tcp' domain='lab.example' target='ldap.lab.example'
         port='389' priority='10' weight='5'/>
    <srv service='sip' protocol='udp' target='sip.lab.example' weight='3'/>
    <srv service='none' protocol='tcp'/>
    <host ip='10.92.0.5'>
      <hostname>files</hostname>
      <hostname>files.lab.example</hostname>
    </host>
    <host ip='fd92::5'>
      <hostname>files</hostname>
    </host>
    <host ip='10.92.0.5'>
      <hostname>nas</hostname>
    </host>
  </dns>
  <ip address='10.92.0.1' prefix='24'>
    <dhcp>
      <range start='10.92.0.50' end='10.92.0.60'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='fd92::1' prefix='64'/>""",
    "isolated-static": """
  <bridge name='vntd{s}c'/>
  <domain name='iso.example' localOnly='yes'/>
  <ip address='10.93.0.1' prefix='24' localPtr='yes'>
    <dhcp>
      <host mac='52:54:00:93:00:01' name='only' ip='10.93.0.2'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='fd93::1' prefix='64'>
    <dhcp>
      <host id='0:1:0:1:aa:bb' ip='fd93::2'/>
    </dhcp>
  </ip>""",
    "nat-forwarders": """
  <forward mode='nat'>
    <nat>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='vntd{s}d' stp='off'/>
  <dns>
    <forwarder addr='192.0.2.53'/>
    <forwarder domain='corp.example' addr='192.0.2.54'/>
    <forwarder domain='blocked.example'/>
    <forwarder addr='2001:db8::53'/>
  </dns>
  <ip address='10.94.0.1' prefix='16'>
    <dhcp>
      <range start='10.94.1.0' end='10.94.2.255'/>
      <bootp file='pxelinux.0' server='10.94.0.2'/>
    </dhcp>
  </ip>""",
    "routed-no-dns": """
  <forward mode='route'/>
  <bridge name='vntd{s}e'/>
  <domain name='nodns.example'/>
  <dns enable='no'/>
  <ip address='10.95.0.1' prefix='24'>
    <dhcp>
      <range start='10.95.0.10' end='10.95.0.20'/>
      <host mac='52:54:00:95:00:01' name='quiet' ip='10.95.0.11'/>
    </dhcp>
  </ip>""",
    "open-ra-only": """
  <forward mode='open'/>
  <bridge name='vntd{s}f'/>
  <ip address='10.96.0.1' prefix='24' localPtr='no'/>
  <ip family='ipv6' address='fd96:0:0:1::1' prefix='64' localPtr='yes'/>
  <ip family='ipv6' address='fd96:0:0:2::1' prefix='64'/>""",
    "nat-multi-ipv4": """
  <forward mode='nat'/>
  <bridge name='vntd{s}g'/>
  <dns forwardPlainNames='yes'>
    <txt name='multi' value='two subnets'/>
  </dns>
  <ip address='10.97.0.1' prefix='24'/>
  <ip address='10.98.0.1' prefix='24'>
    <dhcp>
      <range start='10.98.0.2' end='10.98.0.254'>
        <lease expiry='30'/>
      </range>
    </dhcp>
  </ip>""",
    "isolated-options": """
  <bridge name='vntd{s}h'/>
  <ip address='10.99.0.1' prefix='24'>
    <dhcp>
      <range start='10.99.0.10' end='10.99.0.99'/>
    </dhcp>
  </ip>
  <dnsmasq:options>
    <dnsmasq:option value='log-queries'/>
    <dnsmasq:option value='cname=alias.iso.example,only.iso.example'/>
  </dnsmasq:options>""",
}

DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"


def definition(key: str) -> tuple[str, str]:
    """(network name, XML) of one of our networks; names are unique per run."""
    name = f"vntd{SUFFIX}-{key}"
    body = NETWORKS[key].format(s=SUFFIX)
    return name, (f"<network xmlns:dnsmasq='{DNSMASQ_NS}'>\n  <name>{name}</name>{body}\n"
                  "</network>\n")


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[LibvirtdInNetns]:
    with LibvirtdInNetns() as lv:
        yield lv


def _without_comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("key", sorted(NETWORKS))
def test_dnsmasq_files_match_libvirt(key: str, libvirtd: LibvirtdInNetns,
                                     tmp_path: Path) -> None:
    name, xml = definition(key)
    xml_file = tmp_path / f"{name}.xml"
    xml_file.write_text(xml)
    ours_net = parse_network(xml, source=str(xml_file))
    paths = DnsmasqPaths.libvirt()
    try:
        defined = libvirtd.virsh("net-define", str(xml_file))
        assert defined.returncode == 0, defined.stderr
        started = libvirtd.virsh("net-start", name)
        assert started.returncode == 0, started.stderr
        # libvirtd writes these in its private /var/lib/libvirt; read them from outside
        theirs_conf = libvirtd.host_path(paths.conf(name)).read_text()
        theirs_hosts = libvirtd.host_path(paths.hostsfile(name)).read_text()
        theirs_addn = libvirtd.host_path(paths.addnhosts(name)).read_text()
    finally:
        libvirtd.forget(name)

    assert _without_comments(render_conf(ours_net, paths)) == _without_comments(theirs_conf)
    assert render_hostsfile(ours_net) == theirs_hosts
    assert render_addnhosts(ours_net) == theirs_addn
