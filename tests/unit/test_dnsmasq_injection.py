"""No value of a definition can add a dnsmasq option or split a field (virtnet.render.dnsmasq).

Each hostile value either round-trips (dnsmasq reads back exactly the value, in exactly the one
field of the one option it belongs to) or is refused with a DnsmasqConfigError naming the element
and the value.

"Reads back" is checked two ways: by ``read_dnsmasq_lines`` below, a transcription of how
dnsmasq 2.90 reads a conf/hostsfile line (option.c read_file: fgets into a 1025-byte buffer,
quotes with their backslash escapes and hidden metacharacters, '#' comments after whitespace,
the first '=' splitting the key; split() for fields), and by the real ``dnsmasq --test`` where
it is installed. tests/netns/test_dnsmasq_accepts.py also queries a running dnsmasq for the
tricky values, which is what keeps this transcription honest.
"""

from __future__ import annotations

import copy
import ipaddress
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtnet.paths import DnsmasqPaths
from virtnet.render.dnsmasq_values import DnsmasqConfigError
from virtnet.render.dnsmasq import (
    MAX_LINE_BYTES,
    render_addnhosts,
    render_conf,
    render_hostsfile,
)
from virtnet.errors import VirtnetError
from virtnet.spec.model import (
    Bootp,
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
    Network,
)

ip = ipaddress.ip_address
DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists()
                                      else None)

# --- a transcription of dnsmasq's line reader ------------------------------------------------

_META = "\x00123456 \b\t\n78\r90abcdefABCDE\x1bF:,."  # option.c: meta[]
_ESCAPES = {'"': '"', "t": "\t", "n": "\n", "e": "\x1b", "b": "\b", "r": "\r", "\\": "\\"}
_FGETS_SIZE = 1025  # MAXDNAME


class ReadError(Exception):
    pass


def _hide(ch: str) -> str:
    index = _META.find(ch)
    return chr(index) if index >= 0 and ch != "" else ch


def _unhide(text: str) -> str:
    return "".join(_META[ord(ch)] if ord(ch) < len(_META) else ch for ch in text)


def _fgets_records(data: bytes) -> list[bytes]:
    """What successive fgets(buf, 1025, f) calls return."""
    records = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos, pos + _FGETS_SIZE - 1)
        stop = end + 1 if end >= 0 else min(pos + _FGETS_SIZE - 1, len(data))
        records.append(data[pos:stop])
        pos = stop
    return records


def read_dnsmasq_lines(text: str) -> list[tuple[str, str | None]]:
    """(key, raw argument) of each option line, metacharacters of quoted parts still hidden."""
    options = []
    for record in _fgets_records(text.encode("utf-8")):
        buf = list(record.decode("latin-1"))  # byte by byte, as C does
        i, white = 0, True
        while i < len(buf):
            if buf[i] == '"':
                del buf[i]
                while i < len(buf) and buf[i] != '"':
                    if buf[i] == "\\" and i + 1 < len(buf) and buf[i + 1] in _ESCAPES:
                        buf[i + 1] = _ESCAPES[buf[i + 1]]
                        del buf[i]
                    buf[i] = _hide(buf[i])
                    i += 1
                if i >= len(buf):
                    raise ReadError('missing "')
                del buf[i]
                if i >= len(buf):
                    break
            if buf[i] in " \t\n\v\f\r":
                buf[i] = " "
                white = True
            else:
                if white and buf[i] == "#":
                    del buf[i:]
                    break
                white = False
            i += 1
        line = "".join(buf).strip(" ")
        if not line:
            continue
        if "=" in line:
            key, arg = line.split("=", 1)
            options.append((key.rstrip(" ="), arg.lstrip(" ")))
        else:
            options.append((line, None))
    return options


def split_fields(arg: str) -> list[str]:
    """dnsmasq's split(): unquoted commas separate fields, spaces around them are dropped;
    each field then has its hidden metacharacters restored."""
    return [_unhide(field.strip(" ")) for field in arg.split(",")]


def to_text(field: str) -> str:
    return field.encode("latin-1").decode("utf-8")


def option_keys(conf: str) -> Counter[str]:
    return Counter(key for key, _ in read_dnsmasq_lines(conf))


def args_of(conf: str, key: str) -> list[str]:
    return [arg for k, arg in read_dnsmasq_lines(conf) if k == key and arg is not None]


def dnsmasq_test(tmp_path: Path, conf: str) -> subprocess.CompletedProcess[str]:
    assert DNSMASQ is not None
    path = tmp_path / "test.conf"
    path.write_text(conf, encoding="utf-8")
    return subprocess.run([DNSMASQ, "--test", f"--conf-file={path}"], capture_output=True,
                          text=True, timeout=20, check=False)


needs_dnsmasq = pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq is not installed")


def test_reader_matches_known_dnsmasq_reading() -> None:
    # the transcription itself, on lines whose reading the dnsmasq manual spells out
    ((key, arg),) = read_dnsmasq_lines('a=b,"c,d" # comment\n')
    assert key == "a" and arg is not None and split_fields(arg) == ["b", "c,d"]
    assert read_dnsmasq_lines("server=/x/#\n") == [("server", "/x/#")]
    assert read_dnsmasq_lines("  # only a comment\n") == []
    assert split_fields('x, y ,z') == ["x", "y", "z"]
    # fgets hands over 1024 bytes at most: the rest of a long line is read as a line of its own
    assert read_dnsmasq_lines("k=" + "a" * 1100 + "\n")[1] == ("a" * (1100 - 1022), None)
    with pytest.raises(ReadError):
        read_dnsmasq_lines('k="open\n')


# --- networks ---------------------------------------------------------------------------------


def rich_network(name: str = "net1") -> Network:
    """A network that uses every value-carrying part of the conf and the hosts files."""
    return Network(
        name=name,
        forward=Forward(mode=ForwardMode.NAT),
        bridge=Bridge(name="virbr9"),
        domain=Domain(name="example.com", local_only=True),
        dns=Dns(
            forwarders=[DnsForwarder(domain="corp.example", addr=ip("192.0.2.53"))],
            txts=[DnsTxt(name="txt.example.com", value="plain value")],
            srvs=[DnsSrv(service="ldap", protocol="tcp", domain="example.com",
                         target="ldap.example.com", port=389, priority=1, weight=2)],
            hosts=[DnsHost(ip=ip("192.168.10.5"), hostnames=["gw", "gw.example.com"])],
        ),
        ips=[
            IpDef(address=ip("192.168.10.1"), prefix=24, tftp_root="/srv/tftp",
                  ranges=[DhcpRange(ip("192.168.10.100"), ip("192.168.10.200"))],
                  hosts=[DhcpHost(mac="52:54:00:00:00:01", name="vm1", ip=ip("192.168.10.11"))],
                  bootp=Bootp(file="pxelinux.0")),
            IpDef(family="ipv6", address=ip("2001:db8:10::1"), prefix=64,
                  ranges=[DhcpRange(ip("2001:db8:10::100"), ip("2001:db8:10::1ff"))],
                  hosts=[DhcpHost(id="0:1:2:3", name="vm6", ip=ip("2001:db8:10::11"))]),
        ],
    )


PATHS = DnsmasqPaths(directory=Path("/var/lib/virtnet/dnsmasq"))
BASELINE = render_conf(rich_network(), PATHS)


# options whose whole argument is one path: dnsmasq does not split them at commas
WHOLE_ARGUMENT = {"dhcp-hostsfile", "addn-hosts", "pid-file"}


def _shape(conf: str) -> list[tuple[str, int]]:
    return [(key, 1 if key in WHOLE_ARGUMENT else len(split_fields(arg)) if arg else 0)
            for key, arg in read_dnsmasq_lines(conf)]


def assert_same_shape(conf: str) -> None:
    """Same option keys, same field count per option, as the benign baseline."""
    assert option_keys(conf) == option_keys(BASELINE)
    assert _shape(conf) == _shape(BASELINE)


def test_baseline_is_accepted_and_has_the_expected_options() -> None:
    keys = option_keys(BASELINE)
    assert keys["txt-record"] == keys["srv-host"] == keys["server"] == 1
    assert keys["dhcp-range"] == 2 and keys["interface"] == 1
    assert not any(key.startswith("#") for key in keys)


# --- free text round-trips -------------------------------------------------------------------

HOSTILE_TEXT = [
    'say "hi"',
    "a,b,c",
    "key=value",
    "x #not a comment",
    "#leading hash",
    "  padded  ",
    "back\\slash and \\n literally",
    'end with backslash\\',
    "tag:looks-like-a-tag",
    "naïve – ünïcödé ✓",
    '"',
    "",
    "dhcp-script=/bin/sh",
]


@pytest.mark.parametrize("value", HOSTILE_TEXT)
def test_txt_value_round_trips(value: str) -> None:
    net = rich_network()
    net.dns.txts[0].value = value
    conf = render_conf(net, PATHS)
    assert_same_shape(conf)
    (arg,) = args_of(conf, "txt-record")
    # the name, then exactly one text string holding the whole value
    assert [to_text(f) for f in split_fields(arg)] == ["txt.example.com", value]


@pytest.mark.parametrize("value", ["/srv/tftp,eth0", '/srv/"q"', "/srv/a #b", "/srv/é"])
def test_tftp_root_round_trips(value: str) -> None:
    net = rich_network()
    net.ips[0].tftp_root = value
    conf = render_conf(net, PATHS)
    assert_same_shape(conf)
    (arg,) = args_of(conf, "tftp-root")
    assert [to_text(f) for f in split_fields(arg)] == [value]


@pytest.mark.parametrize("value", ["tag:evil,x.img", "boot,,1.2.3.4", 'a"b.img', "net:x"])
def test_boot_file_round_trips(value: str) -> None:
    net = rich_network()
    assert net.ips[0].bootp is not None
    net.ips[0].bootp.file = value
    conf = render_conf(net, PATHS)
    assert_same_shape(conf)
    (arg,) = args_of(conf, "dhcp-boot")
    fields = split_fields(arg)
    assert [to_text(f) for f in fields] == [value]
    assert not arg.startswith(("tag:", "net:"))  # dnsmasq would take it as a tag filter


@pytest.mark.parametrize("name", ['q"uote', "comma,name", "hash #name", "sp ace ", "ünï", "a=b"])
def test_network_name_round_trips_in_paths(name: str) -> None:
    net = rich_network(name)
    conf = render_conf(net, PATHS)
    assert_same_shape(conf)
    (hosts_arg,) = args_of(conf, "dhcp-hostsfile")
    (addn_arg,) = args_of(conf, "addn-hosts")
    # these options take the whole argument as one path (no comma split)
    assert to_text(_unhide(hosts_arg)) == str(PATHS.hostsfile(name))
    assert to_text(_unhide(addn_arg)) == str(PATHS.addnhosts(name))


def test_pid_file_with_a_quote_in_the_name_round_trips() -> None:
    # libvirt itself would write pid-file=.../a"b.pid, which dnsmasq refuses ('missing "')
    paths = DnsmasqPaths(directory=PATHS.directory, pid_dir=Path("/run/virtnet/network"))
    conf = render_conf(rich_network('a"b'), paths)
    (arg,) = args_of(conf, "pid-file")
    assert _unhide(arg) == '/run/virtnet/network/a"b.pid'


# --- names are refused unless plainly safe ----------------------------------------------------

HOSTILE_NAMES = [
    "with space", 'q"uote', "new\nline", "nul\0byte", "tab\there", "eq=ual", "com,ma",
    "ha#sh", "sl/ash", "back\\slash", "ünïcode", "a..b", "x" * 64, "", "cr\r",
]


def _set_dhcp_host_name(net: Network, value: str) -> str:
    net.ips[0].hosts[0].name = value
    return "/network/ip[1]/dhcp/host[1]/@name"


def _set_dhcp6_host_name(net: Network, value: str) -> str:
    net.ips[1].hosts[0].name = value
    return "/network/ip[2]/dhcp/host[1]/@name"


def _set_dns_hostname(net: Network, value: str) -> str:
    net.dns.hosts[0].hostnames[1] = value
    return "/network/dns/host[1]/hostname[2]"


def _set_txt_name(net: Network, value: str) -> str:
    net.dns.txts[0].name = value
    return "/network/dns/txt[1]/@name"


def _set_srv_domain(net: Network, value: str) -> str:
    net.dns.srvs[0].domain = value
    return "/network/dns/srv[1]/@domain"


def _set_srv_target(net: Network, value: str) -> str:
    net.dns.srvs[0].target = value
    return "/network/dns/srv[1]/@target"


def _set_domain(net: Network, value: str) -> str:
    assert net.domain is not None
    net.domain.name = value
    return "/network/domain/@name"


def _set_forwarder_domain(net: Network, value: str) -> str:
    net.dns.forwarders[0].domain = value
    return "/network/dns/forwarder[1]/@domain"


NameSetter = Callable[[Network, str], str]
NAME_SETTERS: list[NameSetter] = [
    _set_dhcp_host_name, _set_dhcp6_host_name, _set_dns_hostname, _set_txt_name,
    _set_srv_domain, _set_srv_target, _set_domain, _set_forwarder_domain,
]


def _render_everything(net: Network) -> tuple[str, str, str]:
    return render_conf(net, PATHS), render_hostsfile(net), render_addnhosts(net)


def _conf(net: Network) -> str:
    return render_conf(net, PATHS)


# Which files carry each value: the conf refuses every bad value (it is rendered first, so a
# network never half-starts); the hosts files refuse those they hold.
RENDERERS_OF = {
    _set_dhcp_host_name: [_conf, render_hostsfile],
    _set_dhcp6_host_name: [_conf, render_hostsfile],
    _set_dns_hostname: [_conf, render_addnhosts],
}


@pytest.mark.parametrize("setter", NAME_SETTERS, ids=lambda f: f.__name__[5:])
@pytest.mark.parametrize("value", [v for v in HOSTILE_NAMES if v != ""], ids=repr)
def test_hostile_names_are_refused(setter: NameSetter, value: str) -> None:
    net = rich_network()
    path = setter(net, value)
    for render in RENDERERS_OF.get(setter, [_conf]):
        with pytest.raises(DnsmasqConfigError) as info:
            render(net)
        message = str(info.value)
        assert message.startswith(path + ":")
        assert repr(value) in message


@pytest.mark.parametrize("setter", NAME_SETTERS, ids=lambda f: f.__name__[5:])
def test_empty_names_are_refused(setter: NameSetter) -> None:
    net = rich_network()
    setter(net, "")
    if setter in (_set_srv_domain, _set_srv_target, _set_forwarder_domain):
        # an empty optional attribute is the same as an absent one (as in libvirt)
        render_conf(net, PATHS)
        return
    with pytest.raises(DnsmasqConfigError, match="is empty"):
        _render_everything(net)


@pytest.mark.parametrize("value", ["ignore", "infinite", "12", "12h", "3d", "10.0.0.1"])
def test_dhcp_host_names_dnsmasq_would_misread_are_refused(value: str) -> None:
    net = rich_network()
    net.ips[0].hosts[0].name = value
    with pytest.raises(DnsmasqConfigError, match="dhcp-host|lease time|IPv4 address"):
        render_hostsfile(net)


@pytest.mark.parametrize("value", ["vm-1", "VM_2.example.org", "1host", "a.b.c.d.e", "x" * 63])
def test_plain_names_round_trip(value: str) -> None:
    net = rich_network()
    net.ips[0].hosts[0].name = value
    net.dns.hosts[0].hostnames[0] = value
    net.dns.txts[0].name = value
    conf, hostsfile, addnhosts = _render_everything(net)
    assert_same_shape(conf)
    (txt_arg,) = args_of(conf, "txt-record")
    assert split_fields(txt_arg)[0] == value
    first = read_dnsmasq_lines("dhcp-host=" + hostsfile.splitlines()[0] + "\n")
    assert split_fields(first[0][1] or "") == ["52:54:00:00:00:01", "192.168.10.11", value]
    assert addnhosts.splitlines()[0].split() == ["192.168.10.5", value, "gw.example.com"]


@pytest.mark.parametrize("value", ["vir br", "br,0", "br#", 'b"r', "b\nr", "bridge-name-too-long"])
def test_hostile_bridge_names_are_refused(value: str) -> None:
    net = rich_network()
    assert net.bridge is not None
    net.bridge.name = value
    with pytest.raises(DnsmasqConfigError) as info:
        render_conf(net, PATHS)
    assert repr(value) in str(info.value) and "/network/bridge/@name" in str(info.value)


@pytest.mark.parametrize("field,value", [
    ("service", "ld,ap"), ("service", "ld ap"), ("protocol", "t.cp"), ("protocol", "tcp\n"),
])
def test_hostile_srv_service_and_protocol_are_refused(field: str, value: str) -> None:
    net = rich_network()
    setattr(net.dns.srvs[0], field, value)
    with pytest.raises(DnsmasqConfigError, match=f"/network/dns/srv\\[1\\]/@{field}"):
        render_conf(net, PATHS)


def test_dhcp_host_mac_and_id_are_checked() -> None:
    net = rich_network()
    net.ips[0].hosts[0].mac = "52:54:00:00:00:01,ignore"
    with pytest.raises(DnsmasqConfigError, match="MAC address"):
        render_hostsfile(net)
    net = rich_network()
    net.ips[1].hosts[0].id = "0:1,set:x"
    with pytest.raises(DnsmasqConfigError, match="client id"):
        render_hostsfile(net)


# --- control characters and over-long lines ---------------------------------------------------

CONTROL = ["\n", "\r", "\0", "\t", "\x0b", "\x0c", "\x1b", "\x7f", "\x85"]


@pytest.mark.parametrize("char", CONTROL, ids=repr)
def test_control_characters_in_free_text_are_refused(char: str) -> None:
    for mutate, path in [
        (lambda n: setattr(n.dns.txts[0], "value", f"a{char}b"), "/network/dns/txt[1]/@value"),
        (lambda n: setattr(n.ips[0], "tftp_root", f"/srv{char}x"), "/network/ip[1]/tftp/@root"),
        (lambda n: setattr(n, "name", f"n{char}x"), "/network/name"),
        (lambda n: n.dnsmasq_options.append(f"log-queries{char}dhcp-script=/bin/sh"),
         "/network/dnsmasq:options/dnsmasq:option[1]/@value"),
    ]:
        net = rich_network()
        mutate(net)
        with pytest.raises(DnsmasqConfigError) as info:
            render_conf(net, PATHS)
        assert str(info.value).startswith(path + ":")
        assert repr(char)[1:-1] in str(info.value)  # the value is shown escaped, visibly


def test_a_line_dnsmasq_would_cut_in_two_is_refused() -> None:
    net = rich_network()
    # the tail of an over-long line would become a line of its own: an option of our choosing
    net.dns.txts[0].value = "x" * (MAX_LINE_BYTES - 20) + "\ndhcp-script=/bin/sh"
    with pytest.raises(VirtnetError):
        render_conf(net, PATHS)
    net.dns.txts[0].value = "x" * 1000 + "dhcp-script=/bin/sh"
    with pytest.raises(VirtnetError, match="at most 1023 bytes"):
        render_conf(net, PATHS)
    net.dns.txts[0].value = "x" * (MAX_LINE_BYTES - len("txt-record=txt.example.com,"))
    conf = render_conf(net, PATHS)
    assert option_keys(conf) == option_keys(BASELINE)


def test_dnsmasq_options_pass_through_one_line_each() -> None:
    net = rich_network()
    net.dnsmasq_options = ["log-queries", "cname=a.example.com,b.example.com"]
    conf = render_conf(net, PATHS)
    assert conf.splitlines()[-2:] == net.dnsmasq_options
    assert option_keys(conf) - option_keys(BASELINE) == Counter(["log-queries", "cname"])


# --- properties -------------------------------------------------------------------------------

_ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=60)


@settings(max_examples=300, deadline=None)
@given(_ANY_TEXT)
def test_any_txt_value_round_trips_or_is_refused(value: str) -> None:
    net = rich_network()
    net.dns.txts[0].value = value
    try:
        conf = render_conf(net, PATHS)
    except DnsmasqConfigError:
        assert any(ch in value for ch in map(chr, [*range(32), *range(127, 160)]))
        return
    assert option_keys(conf) == option_keys(BASELINE)
    (arg,) = args_of(conf, "txt-record")
    fields = split_fields(arg)
    assert fields[0] == "txt.example.com"
    assert to_text(",".join(fields[1:])) == value and len(fields) == 2


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from('aZ09-_.,#="\\ \n\t/é:*[]'), min_size=1, max_size=20),
       st.sampled_from(NAME_SETTERS))
def test_any_name_round_trips_or_is_refused(value: str, setter: NameSetter) -> None:
    if setter is _set_srv_target and value == ".":
        return  # "." is the SRV way to say "no such service": the target is dropped on purpose
    net = rich_network()
    setter(net, value)
    try:
        conf, hostsfile, addnhosts = _render_everything(net)
    except DnsmasqConfigError as exc:
        assert repr(value) in str(exc)
        return
    assert_same_shape(conf)
    assert len(read_dnsmasq_lines(hostsfile)) == len(hostsfile.splitlines())
    for line in addnhosts.splitlines():
        assert "#" not in line and len(line.split()) == len(line.rstrip("\t").split("\t"))


# --- the real dnsmasq agrees --------------------------------------------------------------------


@needs_dnsmasq
def test_dnsmasq_accepts_every_round_tripping_value(tmp_path: Path) -> None:
    net = rich_network('q"u,o #te')
    net.dns.txts[0].value = HOSTILE_TEXT[0]
    extra = []
    for index, value in enumerate(HOSTILE_TEXT[1:], start=1):
        extra.append(DnsTxt(name=f"t{index}.example.com", value=value))
    net.dns.txts += extra
    net.ips[0].tftp_root = "/srv/tftp,eth0"
    assert net.ips[0].bootp is not None
    net.ips[0].bootp.file = "tag:evil,x.img"
    paths = DnsmasqPaths(directory=tmp_path, pid_dir=tmp_path)
    conf = render_conf(net, paths)
    result = dnsmasq_test(tmp_path, conf)
    assert result.returncode == 0, result.stderr
    assert "syntax check OK" in result.stderr
    # the hostsfile lines go through the very parser of dhcp-host lines
    hosts_conf = "".join(f"dhcp-host={line}\n" for line in render_hostsfile(net).splitlines())
    result = dnsmasq_test(tmp_path, hosts_conf)
    assert result.returncode == 0, result.stderr


@needs_dnsmasq
def test_dnsmasq_refuses_what_a_naive_renderer_would_write(tmp_path: Path) -> None:
    # guard against a vacuous --test: the raw (unquoted) forms of these values break dnsmasq
    for raw in ['txt-record=a,say "hi\n', "dhcp-host=52:54:00:00:00:01,10.0.0.2,with space\n"]:
        result = dnsmasq_test(tmp_path, raw)
        assert result.returncode != 0, raw


def test_models_are_not_mutated_by_rendering() -> None:
    net = rich_network()
    before = copy.deepcopy(net)
    _render_everything(net)
    assert net == before
