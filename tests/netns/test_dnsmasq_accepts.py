"""The real dnsmasq accepts what virtnet.render.dnsmasq writes, and reads back what we meant.

1. ``dnsmasq --test`` on the conf of every case of libvirt's networkxml2confdata (the list read
   from networkxml2conftest.c at collection time), with our three files in a temp directory and
   the conf's paths pointing there. --test checks only the conf, so the hostsfile lines are
   also fed to it as ``dhcp-host=`` lines, which dnsmasq parses with the very same code. --test
   binds nothing: no namespace is needed for it.
2. (netns) every case is then started for real, inside a namespace of our own on a bridge of
   the case's name and addresses, and its log must show both hosts files read, without a
   single complaint (dnsmasq only logs bad lines of those files, it does not fail on them).
3. (netns) a network full of hostile-but-accepted values (quotes, commas, '#', backslashes,
   padding, non-ASCII in TXT values and in the network name, hence in the file paths) is
   started and queried over DNS: each TXT record holds exactly its one string, byte for byte,
   and the addn-hosts names resolve.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from virtnet.paths import DnsmasqPaths
from virtnet.render.dnsmasq import render_all
from virtnet.spec.model import (
    Bridge,
    DhcpHost,
    DhcpRange,
    Dns,
    DnsHost,
    DnsTxt,
    Forward,
    ForwardMode,
    IpDef,
    Network,
)
from tests.kit.corpus import corpus_root
from virtnet.spec.xml.parse import parse_network

v4 = ipaddress.IPv4Address
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
needs_dnsmasq = pytest.mark.skipif(not Path(DNSMASQ).exists(), reason="dnsmasq is not installed")
START_TIMEOUT = 10.0  # seconds for a dnsmasq to have read its files


def _corpus_cases() -> list[Path]:
    root = corpus_root(fetch=True)
    assert root is not None
    driver = (root / "tests/networkxml2conftest.c").read_text()
    names = re.findall(r'\bDO_TEST\s*\(\s*"([^"]+)"', driver)
    return [root / "tests/networkxml2confdata" / f"{name}.xml" for name in names]


try:
    CASES, COLLECT_ERROR = _corpus_cases(), None
except Exception as exc:  # noqa: BLE001 - reported by the test below
    CASES, COLLECT_ERROR = [], f"cannot read libvirt's conf test list: {exc}"


def test_cases_were_read() -> None:
    assert COLLECT_ERROR is None, COLLECT_ERROR
    assert len(CASES) > 0 and all(case.exists() for case in CASES)


@dataclass
class Written:
    conf: Path
    hostsfile: Path
    addnhosts: Path
    conf_text: str


def write_files(net: Network, directory: Path) -> Written:
    """Render into ``directory`` the way the host layer will: files named by DnsmasqPaths."""
    paths = DnsmasqPaths(directory=directory, pid_dir=directory)
    files = render_all(net, paths)
    written = Written(paths.conf(net.name), paths.hostsfile(net.name),
                      paths.addnhosts(net.name), files.conf)
    written.conf.write_text(files.conf, encoding="utf-8")
    written.hostsfile.write_text(files.hostsfile, encoding="utf-8")
    written.addnhosts.write_text(files.addnhosts, encoding="utf-8")
    # dnsmasq drops root before it rereads the hosts files: let its user read them
    for path in (directory, written.conf, written.hostsfile, written.addnhosts):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return written


def dnsmasq_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DNSMASQ, "--test", f"--conf-file={conf}"], capture_output=True,
                          text=True, timeout=20, check=False)


def dnsmasq_option_names() -> set[str]:
    """The long option names the installed dnsmasq knows (from its --help)."""
    result = subprocess.run([DNSMASQ, "--help"], capture_output=True, text=True, timeout=20,
                            check=False)
    return set(re.findall(r"--([a-z0-9-]+)", result.stdout))


def without_unknown_options(net: Network) -> tuple[Network, list[str]]:
    """The network minus the pass-through options this dnsmasq does not know (libvirt's test
    data has a placeholder 'foo=bar'), and those options."""
    known = dnsmasq_option_names()
    unknown = [opt for opt in net.dnsmasq_options if opt.split("=", 1)[0].strip() not in known]
    trimmed = copy.deepcopy(net)
    trimmed.dnsmasq_options = [opt for opt in net.dnsmasq_options if opt not in unknown]
    return trimmed, unknown


def runnable(net: Network, scratch: Path) -> Network:
    """The case as it can run here: its TFTP roots (dnsmasq insists they exist) moved to a
    directory of ours, and without pass-through options this dnsmasq does not know."""
    net, _ = without_unknown_options(net)
    for ip in net.ips:
        if ip.tftp_root is not None:
            ip.tftp_root = str(scratch)
    return net


# --- 1. dnsmasq --test ----------------------------------------------------------------------


@needs_dnsmasq
@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_dnsmasq_test_accepts_corpus_case(case: Path, tmp_path: Path) -> None:
    net = parse_network(case.read_bytes(), source=str(case))
    written = write_files(net, tmp_path)
    result = dnsmasq_test(written.conf)
    trimmed, unknown = without_unknown_options(net)
    if unknown:
        # dnsmasq must stop at the first unknown pass-through option, on its own line (which
        # shows it was passed through verbatim, as one option), and take the rest
        line = written.conf_text.splitlines().index(unknown[0]) + 1
        assert result.returncode != 0
        assert f"bad option at line {line} of {written.conf}" in result.stderr, result.stderr
        written = write_files(trimmed, tmp_path)
        result = dnsmasq_test(written.conf)
    assert result.returncode == 0, result.stderr
    assert "syntax check OK" in result.stderr

    lines = written.hostsfile.read_text().splitlines()
    as_options = tmp_path / "hostsfile-as-options.conf"
    as_options.write_text("".join(f"dhcp-host={line}\n" for line in lines))
    result = dnsmasq_test(as_options)
    assert result.returncode == 0, result.stderr


# --- a namespace of our own ------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if not Path(DNSMASQ).exists():
        pytest.skip("dnsmasq is not installed")
    name = f"vnt-dm-{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20, check=False)


class Bridged:
    """A bridge named and addressed as the network says, inside the namespace."""

    def __init__(self, netns: str, net: Network) -> None:
        self.netns = netns
        self.name = net.bridge_name or "vnt-br"
        self.addresses = [f"{ip.address}/{ip.effective_prefix}" for ip in net.ips
                          if ip.address is not None]

    def __enter__(self) -> Bridged:
        _ip("-n", self.netns, "link", "add", self.name, "type", "bridge")
        for address in self.addresses:
            extra = ["nodad"] if ":" in address else []
            _ip("-n", self.netns, "addr", "add", address, "dev", self.name, *extra)
        _ip("-n", self.netns, "link", "set", self.name, "up")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "-n", self.netns, "link", "del", self.name], capture_output=True,
                       timeout=20, check=False)


class RunningDnsmasq:
    """dnsmasq in the foreground inside the namespace, logging to a file; killed on exit."""

    def __init__(self, netns: str, conf: Path, log: Path) -> None:
        self.netns, self.conf, self.log = netns, conf, log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RunningDnsmasq:
        with self.log.open("wb") as out:
            # `ip netns exec` execs dnsmasq, so this pid is dnsmasq's own
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, DNSMASQ, "--keep-in-foreground",
                 "--log-facility=-", f"--conf-file={self.conf}"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "LC_ALL": "C"})
        return self

    def wait_for(self, needles: list[str]) -> str:
        """The log once it holds every needle (or dnsmasq died, or time ran out)."""
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = self.log.read_text(errors="replace")
            if all(needle in text for needle in needles) or self.proc.poll() is not None:
                return text
            if time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory dnsmasq can still read after dropping root (pytest's tmp_path sits under a
    0700 directory)."""
    with tempfile.TemporaryDirectory(prefix="vnt-dnsmasq-") as name:
        path = Path(name)
        path.chmod(0o755)
        yield path


COMPLAINTS = re.compile(r"bad |error|failed|missing|illegal|cannot|at line \d+", re.IGNORECASE)


# --- 2. every corpus case, running --------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_dnsmasq_runs_corpus_case(case: Path, netns: str, scratch: Path) -> None:
    net = runnable(parse_network(case.read_bytes(), source=str(case)), scratch)
    written = write_files(net, scratch)
    needles = []
    if "\naddn-hosts=" in written.conf_text:
        needles.append(f"read {written.addnhosts} - ")
    if "\ndhcp-hostsfile=" in written.conf_text:
        needles.append(f"read {written.hostsfile}")
    assert needles or "port=0" in written.conf_text
    with Bridged(netns, net), RunningDnsmasq(netns, written.conf, scratch / "log") as running:
        log = running.wait_for(needles or ["started, version"])
        assert running.proc is not None and running.proc.poll() is None, log
    for needle in needles:
        assert needle in log, log
    complaints = [line for line in log.splitlines()
                  if COMPLAINTS.search(line) and "/etc/resolv.conf" not in line]
    assert complaints == []


# --- 3. hostile values, queried -------------------------------------------------------------------

TXT_VALUES = ['say "hi", #not a comment', "a,b,c", "  padded  ", "back\\slash \\n", "naïve ✓",
              "tag:x", "key=value", ""]

DNS_CLIENT = r"""
import json, socket, struct, sys

def name_bytes(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"

def skip_name(data, pos):
    while data[pos]:
        if data[pos] >= 0xC0:
            return pos + 2
        pos += data[pos] + 1
    return pos + 1

def query(server, name, qtype):
    request = struct.pack(">HHHHHH", 0x5151, 0x0100, 1, 0, 0, 0) + name_bytes(name)
    request += struct.pack(">HH", qtype, 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(3)
    sock.sendto(request, (server, 53))
    data = sock.recv(65535)
    answers = struct.unpack(">H", data[6:8])[0]
    pos = skip_name(data, 12) + 4
    found = []
    for _ in range(answers):
        pos = skip_name(data, pos)
        rtype, _, _, length = struct.unpack(">HHIH", data[pos:pos + 10])
        rdata = data[pos + 10:pos + 10 + length]
        pos += 10 + length
        if rtype == 16:
            strings, i = [], 0
            while i < len(rdata):
                strings.append(rdata[i + 1:i + 1 + rdata[i]].hex())
                i += 1 + rdata[i]
            found.append(strings)
        elif rtype == 1:
            found.append(socket.inet_ntoa(rdata))
    return found

server, questions = sys.argv[1], json.loads(sys.argv[2])
print(json.dumps([query(server, name, qtype) for name, qtype in questions]))
"""


def ask(netns: str, server: str, questions: list[tuple[str, int]]) -> list[list[object]]:
    result = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", DNS_CLIENT, server,
         json.dumps(questions)],
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.netns
def test_hostile_values_reach_dnsmasq_intact(netns: str, scratch: Path) -> None:
    net = Network(
        name='we"ird, #name é',
        forward=Forward(mode=ForwardMode.NAT),
        bridge=Bridge(name="vnt-brq"),
        dns=Dns(
            txts=[DnsTxt(f"t{i}.test", value) for i, value in enumerate(TXT_VALUES)],
            hosts=[DnsHost(v4("10.77.0.5"), ["gw", "gw-2.test"])],
        ),
        ips=[IpDef(address=v4("10.77.0.1"), prefix=24,
                   ranges=[DhcpRange(v4("10.77.0.10"), v4("10.77.0.20"))],
                   hosts=[DhcpHost(mac="52:54:00:00:00:01", name="vm1", ip=v4("10.77.0.11"))])],
    )
    written = write_files(net, scratch)
    with Bridged(netns, net), RunningDnsmasq(netns, written.conf, scratch / "log") as running:
        log = running.wait_for([f"read {written.addnhosts} - 2 names",
                                f"read {written.hostsfile}"])
        assert f"read {written.addnhosts} - 2 names" in log, log
        assert f"read {written.hostsfile}" in log, log
        questions = [(f"t{i}.test", 16) for i in range(len(TXT_VALUES))]
        questions += [("gw", 1), ("gw-2.test", 1)]
        answers = ask(netns, "10.77.0.1", questions)
    for value, answer in zip(TXT_VALUES, answers):
        # one TXT record holding one string: the value, byte for byte
        assert answer == [[value.encode("utf-8").hex()]], value
    assert answers[-2:] == [["10.77.0.5"], ["10.77.0.5"]]
