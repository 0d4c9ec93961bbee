"""Differential test: libvirt 9.0's `virsh net-define` / `net-dumpxml --inactive` against
`virtnet validate` / `virtnet format`, on the same definitions.

One libvirtd, inside a namespace of its own, serves the whole module. For every definition:
- both must agree on acceptance (libvirt: net-define succeeds; us: `virtnet validate` exits 0);
- when both accept, libvirt's inactive dump must equal `virtnet format`, after removing what
  libvirt invents at define time when the input lacks it: the uuid, the bridge name (also when
  the input gave a 'virbr%d'-style template) and the bridge MAC.

Where we differ from libvirt on purpose, the case says so with its reason (``Case.libvirt``).
The definitions are ~35 written here plus ~45 from the hypothesis strategies in
tests.kit.strategies (derandomized, so every run checks the same ones).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from virtnet.face.cli import main as virtnet_cli
from tests.kit.libvirtd import (
    NETWORK_CONFIG_DIR,
    NETWORK_RUN_DIR,
    LibvirtdInNetns,
    libvirtd_unavailable_reason,
)
from tests.kit.strategies import BrokenNetwork, broken_network_xml, network_xml

_UNAVAILABLE = libvirtd_unavailable_reason()

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.netns,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"differential test: {_UNAVAILABLE}"),
]

DEFINED_RE = re.compile(r"^Network (.+) defined from ", re.MULTILINE)


# Every network name libvirt accepted in this module, to check the helper's cleanup.
DEFINED: set[str] = set()


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[LibvirtdInNetns]:
    default_config = NETWORK_CONFIG_DIR / "default.xml"
    default_before = default_config.read_bytes() if default_config.exists() else None
    with LibvirtdInNetns() as lv:
        netns, pid = lv.netns, lv.pid
        yield lv
    # The helper must leave nothing behind: namespace, daemon, definitions, runtime files.
    assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                       text=True, check=True).stdout.split()
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    leftovers = [p for name in DEFINED for p in (NETWORK_CONFIG_DIR / f"{name}.xml",
                                                  NETWORK_RUN_DIR / f"{name}.xml") if p.exists()]
    assert not leftovers, leftovers
    default_after = default_config.read_bytes() if default_config.exists() else None
    assert default_after == default_before, "the package's default network was not restored"


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    detail: str  # libvirt's error or our problems; the dump or our format when accepted


def libvirt_verdict(lv: LibvirtdInNetns, path: Path) -> Verdict:
    """Define with libvirt; if accepted, return the inactive dump and undefine again."""
    proc = lv.virsh("net-define", str(path))
    if proc.returncode != 0:
        return Verdict(False, proc.stderr.strip())
    match = DEFINED_RE.search(proc.stdout)
    assert match, f"unexpected virsh output: {proc.stdout!r}"
    name = match.group(1)
    DEFINED.add(name)
    try:
        dump = lv.virsh("net-dumpxml", "--inactive", name)
        assert dump.returncode == 0, dump.stderr
    finally:
        lv.forget(name)
    return Verdict(True, dump.stdout)


def our_verdict(path: Path) -> Verdict:
    """`virtnet validate FILE`, then `virtnet format FILE` if valid (through the real CLI)."""
    runner = CliRunner()
    result = runner.invoke(virtnet_cli, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    if result.exit_code != 0:
        return Verdict(False, result.output)
    formatted = runner.invoke(virtnet_cli, ["format", str(path)])
    assert formatted.exit_code == 0, formatted.output
    return Verdict(True, formatted.output)


def normalize(dump: str, source: str) -> str:
    """Drop what libvirt generates at define time and ``source`` did not give; trim blanks."""
    lines = dump.strip().splitlines()
    if "<uuid>" not in source:
        lines = [line for line in lines if not line.strip().startswith("<uuid>")]
    if not re.search(r"<mac\s+address=", source):
        lines = [line for line in lines if not line.strip().startswith("<mac address=")]
    given = re.search(r"<bridge\b[^>]*\bname=(['\"])(.*?)\1", source)
    if given is None or "%d" in given.group(2):
        lines = [re.sub(r"^(\s*<bridge) name='[^']*'", r"\1", line) for line in lines]
    return "\n".join(line.rstrip() for line in lines)


def compare(lv: LibvirtdInNetns, tmp_path: Path, xml: str, expect_libvirt: bool,
            expect_ours: bool) -> None:
    """Run both sides on ``xml``, check each side's verdict, and the formats when both
    accept."""
    path = tmp_path / "net.xml"
    path.write_text(xml)
    theirs = libvirt_verdict(lv, path)
    ours = our_verdict(path)
    context = f"\n--- input ---\n{xml}\n--- libvirt ---\n{theirs.detail}\n--- virtnet ---\n{ours.detail}"
    assert theirs.accepted == expect_libvirt, "libvirt's verdict is not the expected one" + context
    assert ours.accepted == expect_ours, "our verdict is not the expected one" + context
    if ours.accepted and theirs.accepted:
        assert normalize(ours.detail, xml) == normalize(theirs.detail, xml), (
            "formats differ" + context)


# --- definitions written here -----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    xml: str
    valid: bool
    # A deliberate difference: libvirt 9.0's verdict, and why we differ. None: we agree.
    libvirt: bool | None = None
    why: str = ""


def net(name: str, body: str, attrs: str = "") -> str:
    return f"<network{attrs}>\n  <name>vnt-d-{name}</name>\n{body}\n</network>\n"


CASES = [
    # --- accepted by both ---
    Case("isolated-minimal", net("iso", ""), True),
    Case("nat-dhcp", net("nat", """
  <forward/>
  <ip address='192.168.150.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.150.2' end='192.168.150.254'>
        <lease expiry='1' unit='hours'/>
      </range>
      <host mac='00:16:3E:77:E2:ED' name='a.example.com' ip='192.168.150.10'/>
      <host name='b' ip='192.168.150.11'><lease expiry='0'/></host>
    </dhcp>
  </ip>"""), True),
    Case("route-static-routes", net("route", """
  <forward mode='route' dev='eth1'/>
  <bridge name='vntroute0' stp='off' delay='2'/>
  <ip address='10.20.0.1' prefix='16'/>
  <ip family='ipv6' address='2001:db8:20::1' prefix='64'/>
  <route address='172.20.0.0' prefix='16' gateway='10.20.0.254' metric='10'/>
  <route address='172.21.0.0' netmask='255.255.0.0' gateway='10.20.1.1'/>
  <route family='ipv6' address='2001:db9::' prefix='48' gateway='2001:db8:20::2'/>"""), True),
    Case("open", net("open", """
  <forward mode='open'/>
  <ip address='192.168.151.1' prefix='24'/>"""), True),
    Case("nat-address-port-ipv6", net("natx", """
  <forward mode='nat'>
    <nat ipv6='yes'>
      <address start='203.0.113.10' end='203.0.113.20'/>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <ip address='192.168.152.1' prefix='24'/>
  <ip family='ipv6' address='2001:db8:152::1' prefix='64'>
    <dhcp><range start='2001:db8:152::100' end='2001:db8:152::1ff'/>
      <host id='0:1:0:1:18:aa:62:fe:0:16:3e:44:55:66' ip='2001:db8:152::10'/>
      <host name='paul' ip='2001:db8:152::11'/></dhcp>
  </ip>"""), True),
    Case("dns-everything", net("dns", """
  <domain name='example.com' localOnly='yes'/>
  <dns forwardPlainNames='no'>
    <forwarder addr='8.8.8.8'/>
    <forwarder domain='example.org' addr='192.0.2.53'/>
    <forwarder domain='internal.example.com'/>
    <txt name='example' value='I am a "txt" record, with commas'/>
    <host ip='192.168.153.2'><hostname>gw</hostname><hostname>router.example.com</hostname></host>
    <srv service='name' protocol='tcp' domain='test-domain-name' target='.' port='1024'
         priority='10' weight='10'/>
    <srv service='ldap' protocol='udp'/>
  </dns>
  <ip address='192.168.153.1' prefix='24'/>"""), True),
    Case("bridge-options", net("bropt", """
  <bridge name='vntbropt' stp='off' delay='3' macTableManager='libvirt'/>
  <mtu size='9000'/>
  <mac address='52:54:00:AB:CD:EF'/>
  <ip address='192.168.154.1' prefix='24'/>"""), True),
    Case("host-bridge-bandwidth", net("hbr", """
  <forward mode='bridge'/>
  <bridge name='br0' macTableManager='kernel'/>
  <bandwidth><inbound average='1000' peak='5000' burst='1024'/><outbound average='1000'/></bandwidth>
  <portgroup name='slow' default='yes'><bandwidth><outbound average='100'/></bandwidth></portgroup>
  <portgroup name='fast' trustGuestRxFilters='yes'/>"""), True),
    Case("openvswitch-vlan-portgroups", net("ovs", """
  <forward mode='bridge'/>
  <bridge name='ovsbr0'/>
  <virtualport type='openvswitch'/>
  <vlan trunk='yes'><tag id='42' nativeMode='untagged'/><tag id='47'/></vlan>
  <portgroup name='dmz' default='yes'>
    <vlan><tag id='666'/></vlan>
    <virtualport type='openvswitch'><parameters profileid='dmz-profile'/></virtualport>
  </portgroup>
  <portgroup name='plain'/>"""), True),
    Case("macvtap-bridge-pool", net("mvbr", """
  <forward mode='bridge' dev='eth1'>
    <interface dev='eth1'/><interface dev='eth2'/><interface dev='eth3'/>
  </forward>"""), True),
    Case("private-pf", net("priv", """
  <forward mode='private'><pf dev='enp3s0'/></forward>"""), True),
    Case("vepa-8021qbg", net("vepa", """
  <forward mode='vepa'><interface dev='eth1'/><interface dev='eth2'/></forward>
  <virtualport type='802.1Qbg'>
    <parameters managerid='11' typeid='1193047' typeidversion='2'
                instanceid='09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f'/>
  </virtualport>
  <portgroup name='bob' default='yes'>
    <virtualport type='802.1Qbg'><parameters typeid='2193047' typeidversion='3'/></virtualport>
  </portgroup>""", attrs=" trustGuestRxFilters='no'"), True),
    Case("passthrough-vlan", net("pass", """
  <forward mode='passthrough' dev='eth5'/>
  <vlan trunk='yes'><tag id='100' nativeMode='tagged'/><tag id='200'/></vlan>
  <virtualport type='802.1Qbh'><parameters profileid='spongebob24'/></virtualport>"""), True),
    Case("hostdev-pf", net("hdev", """
  <forward mode='hostdev' managed='yes'><driver name='vfio'/><pf dev='enp4s0'/></forward>
  <vlan><tag id='10'/></vlan>
  <portgroup name='users'><vlan><tag id='20'/></vlan></portgroup>"""), True),
    Case("netboot-dnsmasq-options", net("boot", """
  <ip address='192.168.155.1' prefix='24'>
    <tftp root='/var/lib/tftproot'/>
    <dhcp>
      <range start='192.168.155.2' end='192.168.155.254'/>
      <bootp file='pxeboot.img' server='192.168.155.3'/>
    </dhcp>
  </ip>
  <dnsmasq:options>
    <dnsmasq:option value='cname=*.foo.example.com,master.example.com'/>
    <dnsmasq:option value='no-negcache'/>
  </dnsmasq:options>""", attrs=" xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'"),
         True),
    Case("metadata", net("meta", """
  <metadata>
    <app1:foo xmlns:app1="http://app1.org/app1/">fooish</app1:foo>
    <app2:bar xmlns:app2="http://app1.org/app2/"><x>1</x></app2:bar>
  </metadata>
  <ip address='192.168.156.1' prefix='24'/>"""), True),
    Case("isolated-ports-ipv6-trust", net("ports", """
  <port isolated='yes'/>
  <ip family='ipv6' address='2001:db8:157::1' prefix='64'/>""",
         attrs=" ipv6='yes' trustGuestRxFilters='yes'"), True),
    Case("bridge-name-template", net("tmpl", """
  <bridge name='vntbr%d'/>
  <ip address='192.168.158.1' prefix='24'/>"""), True),
    Case("classful-no-prefix", net("classful", """
  <ip address='10.159.0.1'><dhcp><range start='10.159.0.2' end='10.159.255.254'/></dhcp></ip>"""),
         True),
    # --- refused by both ---
    Case("range-outside-subnet", net("r-out", """
  <ip address='192.168.160.1' prefix='24'><dhcp><range start='192.168.161.2' end='192.168.161.9'/>
  </dhcp></ip>"""), False),
    Case("range-at-broadcast", net("r-bc", """
  <ip address='192.168.160.1' prefix='24'><dhcp><range start='192.168.160.2' end='192.168.160.255'/>
  </dhcp></ip>"""), False),
    Case("two-default-portgroups", net("pg2", """
  <portgroup name='a' default='yes'/><portgroup name='b' default='yes'/>"""), False),
    Case("ip-on-vepa", net("ipvepa", """
  <forward mode='vepa' dev='eth0'/>
  <ip address='192.168.161.1' prefix='24'/>"""), False),
    Case("two-ipv6-dhcp", net("dhcp6x2", """
  <ip family='ipv6' address='2001:db8:162::1' prefix='64'><dhcp>
    <range start='2001:db8:162::100' end='2001:db8:162::1ff'/></dhcp></ip>
  <ip family='ipv6' address='2001:db8:163::1' prefix='64'><dhcp>
    <range start='2001:db8:163::100' end='2001:db8:163::1ff'/></dhcp></ip>"""), False),
    Case("unreachable-gateway", net("gw", """
  <forward mode='route'/>
  <ip address='192.168.164.1' prefix='24'/>
  <route address='172.30.0.0' prefix='16' gateway='192.168.99.1'/>"""), False),
    Case("nat-two-interfaces", net("nat2if", """
  <forward mode='nat'><interface dev='eth0'/><interface dev='eth1'/></forward>
  <ip address='192.168.165.1' prefix='24'/>"""), False),
    Case("vlan-on-nat", net("vlannat", """
  <vlan><tag id='5'/></vlan>
  <ip address='192.168.166.1' prefix='24'/>"""), False),
    Case("bandwidth-on-macvtap", net("bwmv", """
  <forward mode='bridge' dev='eth0'/>
  <bandwidth><inbound average='100'/></bandwidth>"""), False),
    Case("interface-twice", net("if2", """
  <forward mode='passthrough'><interface dev='eth1'/><interface dev='eth1'/></forward>"""), False),
    Case("lease-too-short", net("lease", """
  <ip address='192.168.167.1' prefix='24'><dhcp><range start='192.168.167.2'
    end='192.168.167.9'><lease expiry='60' unit='seconds'/></range></dhcp></ip>"""), False),
    # --- deliberate differences ---
    Case("bridge-name-too-long", net("brlong", """
  <bridge name='vntbridgenamexyz'/>"""), False, libvirt=True,
         why="the kernel refuses names over 15 bytes; libvirt only fails at net-start"),
    Case("dhcp-host-outside-subnet", net("hostout", """
  <ip address='192.168.168.1' prefix='24'><dhcp>
    <host mac='52:54:00:00:00:01' ip='10.0.0.5'/></dhcp></ip>"""), False, libvirt=True,
         why="dnsmasq would never hand out an address outside the subnet it serves"),
    Case("interface-and-pf", net("ifpf", """
  <forward mode='passthrough'><interface dev='eth1'/><pf dev='eth2'/></forward>"""),
         False, libvirt=True,
         why="libvirt silently drops the <pf>; we refuse the ambiguous pool"),
    Case("domain-with-slash", net("domslash", """
  <domain name='a/b'/>
  <ip address='192.168.169.1' prefix='24'/>"""), False, libvirt=True,
         why="'/' would split dnsmasq's local=/DOMAIN/ into two domains"),
    Case("open-without-ip", net("openip", """
  <forward mode='open'/>"""), True, libvirt=False,
         why="newer libvirt accepts an open network without an address (our superset)"),
    Case("vlan-on-host-bridge", net("vlanbr", """
  <forward mode='bridge'/><bridge name='br0'/><vlan><tag id='7'/></vlan>"""), True,
         libvirt=False, why="newer libvirt tags vlans on Linux host bridges (our superset)"),
    Case("ip-without-classful-prefix", net("classd", """
  <ip address='224.0.0.1'/>"""), False, libvirt=True,
         why="a class D address has no default prefix: libvirt fails only at net-start"),
    Case("stp-on-host-bridge", net("stpon", """
  <forward mode='bridge'/><bridge name='br0' stp='on'/>"""), True, libvirt=False,
         why="our model keeps stp as on/off, so an explicit stp='on' (the default, meaningless "
             "on a host bridge and dropped by both formatters) cannot be told from no stp"),
    Case("hostdev-pci-pool", net("hdpci", """
  <forward mode='hostdev' managed='yes'>
    <address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x1'/>
  </forward>"""), True, libvirt=False,
         why="libvirt checks the host's sysfs for SR-IOV VFs at define; we check at start"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_written_case(libvirtd: LibvirtdInNetns, tmp_path: Path, case: Case) -> None:
    if case.libvirt is None:
        compare(libvirtd, tmp_path, case.xml, expect_libvirt=case.valid, expect_ours=case.valid)
    else:
        assert case.why, "a deliberate difference must say why"
        compare(libvirtd, tmp_path, case.xml, expect_libvirt=case.libvirt,
                expect_ours=case.valid)


# --- generated definitions --------------------------------------------------------------

# The fixture's tmp_path is shared by all examples of a test: each example overwrites net.xml.
_SETTINGS = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(_SETTINGS, max_examples=32)
@given(xml=network_xml())
def test_generated_valid_definitions(libvirtd: LibvirtdInNetns, tmp_path: Path,
                                     xml: str) -> None:
    # valid by construction: both sides must accept, and format alike
    compare(libvirtd, tmp_path, xml, expect_libvirt=True, expect_ours=True)


@settings(_SETTINGS, max_examples=14)
@given(broken=broken_network_xml())
def test_generated_broken_definitions(libvirtd: LibvirtdInNetns, tmp_path: Path,
                                      broken: BrokenNetwork) -> None:
    compare(libvirtd, tmp_path, broken.xml, expect_libvirt=False, expect_ours=False)


# --- unknown elements and attributes: `net-define --validate` -------------------------------


@dataclass(frozen=True)
class SchemaCase:
    id: str
    xml: str
    unknown: tuple[str, ...]  # the paths virtnet names; () when it finds nothing unknown
    libvirt_refuses: bool | None = None  # a deliberate difference (None: as virtnet)
    why: str = ""


SCHEMA_CASES = [
    SchemaCase("misspelt-forward", net("s-fwd", "  <forwrd mode='nat'/>"), ("/network/forwrd",)),
    SchemaCase("misspelt-attribute", net("s-attr", "  <forward mdoe='nat'/>"),
               ("/network/forward/@mdoe",)),
    SchemaCase("dhcp-outside-ip", net("s-dhcp", "  <dhcp/>\n  <ip address='192.168.175.1' "
                                                 "prefix='24'/>"), ("/network/dhcp",)),
    SchemaCase("misspelt-range", net("s-range", """
  <ip address='192.168.176.1' prefix='24'><dhcp>
    <rnage start='192.168.176.2' end='192.168.176.9'/></dhcp></ip>"""),
               ("/network/ip[1]/dhcp/rnage",)),
    SchemaCase("host-attribute-of-the-other-host", net("s-host", """
  <dns><host ip='192.168.177.2' mac='52:54:00:00:00:01'><hostname>a</hostname></host></dns>
  <ip address='192.168.177.1' prefix='24'/>"""), ("/network/dns/host[1]/@mac",)),
    SchemaCase("foreign-element-outside-metadata", net("s-ns", """
  <o:extra xmlns:o='urn:other'/>
  <ip address='192.168.178.1' prefix='24'/>"""), ("/network/o:extra",)),
    SchemaCase("metadata-contents-are-foreign", net("s-meta", """
  <metadata><app:x xmlns:app='urn:app' any='1'><deep/></app:x></metadata>
  <ip address='192.168.179.1' prefix='24'/>"""), ()),
    SchemaCase("everything-known", net("s-all", """
  <forward mode='nat'><nat><address start='203.0.113.1' end='203.0.113.9'/>
    <port start='1024' end='65535'/></nat></forward>
  <bridge name='vntsall' stp='off' delay='0'/>
  <port isolated='yes'/>
  <dns><forwarder addr='192.0.2.53'/><txt name='t' value='v'/>
    <host ip='192.168.180.2'><hostname>a</hostname></host></dns>
  <ip address='192.168.180.1' prefix='24'><tftp root='/srv/tftp'/><dhcp>
    <range start='192.168.180.10' end='192.168.180.20'><lease expiry='1' unit='hours'/></range>
    <host mac='52:54:00:00:00:02' ip='192.168.180.5'/><bootp file='pxe.img'/></dhcp></ip>
  <route address='172.31.0.0' prefix='16' gateway='192.168.180.254'/>"""), ()),
    SchemaCase("title-and-description", net("s-title", """
  <title>lab</title>
  <description>the lab network</description>
  <ip address='192.168.181.1' prefix='24'/>"""), (), libvirt_refuses=True,
               why="newer libvirt has <title> and <description> (our superset)"),
]


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=[c.id for c in SCHEMA_CASES])
def test_define_validate_refuses_what_libvirt_refuses(libvirtd: LibvirtdInNetns,
                                                      tmp_path: Path, case: SchemaCase) -> None:
    path = tmp_path / "net.xml"
    path.write_text(case.xml)
    proc = libvirtd.virsh("net-define", "--validate", str(path))
    if proc.returncode == 0:
        match = DEFINED_RE.search(proc.stdout)
        assert match, proc.stdout
        DEFINED.add(match.group(1))
        libvirtd.forget(match.group(1))
    else:
        assert "failed to validate against schema" in proc.stderr, proc.stderr
    expected = bool(case.unknown) if case.libvirt_refuses is None else case.libvirt_refuses
    assert case.libvirt_refuses is None or case.why, "a deliberate difference must say why"
    assert (proc.returncode != 0) == expected, proc.stderr
    state = tmp_path / "state"
    ours = CliRunner().invoke(virtnet_cli, ["--state-dir", str(state), "net-define",
                                            "--validate", str(path)])
    assert ours.exit_code == (1 if case.unknown else 0), ours.output
    if case.unknown:
        assert "failed to validate against the network schema" in ours.stderr
        named = [line.split(": ")[1] for line in ours.stderr.splitlines()[2:]]
        assert named == list(case.unknown)
        assert not (state / "etc").exists() or not list((state / "etc").rglob("*.xml"))
