"""Fuzz virtnetd's HTTP API with hostile requests (``make fuzz`` runs 100,000 through
bench/fuzz_api.py; tests/netns/test_fuzz_api_short.py runs a few thousand).

    python -m tests.kit.fuzz_api [--count N] [--seed S] [--max-seconds T] [--progress]
                                       [--json]

A real virtnetd serves a network namespace and a mount namespace that the run creates
(``unshare --net --mount``) and that vanish with it: the daemon, its dnsmasq and the fuzzer
live there, and nothing they do reaches the host's network. In the mount namespace the
host's filesystem (/ and /dev) is read-only and /tmp, /var/tmp, /run and /dev/shm are fresh
tmpfs mounts, so every file in them is the run's own: the state directory lives in /tmp. The
listing of those mounts (all of it but the state directory) and of the host's top
directories (/, /etc, /var, /var/lib, /usr, /root, /home), taken before the run and
after every request that may change something, shows any file the daemon created or
removed outside its state directory, even one it removed again.

Requests (seeded: the same seed sends the same requests; each finding names the request's
number and bytes): every endpoint, with hostile identifiers in every place one goes (network
names and UUIDs, port UUIDs, devices and MACs, portgroups, owners: ``..``, ``../x``,
absolute paths, NUL, CR/LF, very long, non-ASCII, lone surrogates, percent-encoded or
not), and bodies that are valid, mutated (wrong types, integers out of any range, unknown
or missing fields, hostile strings, definitions and snippets mutated as bench/fuzz.py
mutates them), malformed (truncated, not JSON, not an object, nested 100,000 deep, NaN,
not UTF-8). The daemon's own networks and ports (a running NAT network with ports, an
inactive isolated one with portgroups, what earlier requests defined) are named too, so
that requests reach the engine, not only the lookups.

Findings: an answer >= 500; an error answer that is not the documented JSON error body (or
whose status differs from the HTTP status); a CLI answer reporting an internal error; no
answer (closed connection, timeout); a traceback or an error line in the daemon's output;
the daemon gone; a file created or removed outside the state directory.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.kit.fuzz import hostile as hostile_text
from tests.kit.fuzz import mutate as mutate_definition

REPO_ROOT = Path(__file__).resolve().parents[2]
MARK = "vnfz"  # in every hostile path this run sends: a file named so is the run's doing
PRIVATE_MOUNTS = ("/tmp", "/var/tmp", "/run", "/dev/shm")
HOST_DIRS = ("/", "/etc", "/var", "/var/lib", "/usr", "/root", "/home")
# Bind-remounted read-only in the run's mount namespace. /dev is not listed: the kernel adds
# and removes device nodes there for every namespace's devices (macvtaps: /dev/tapN).
READ_ONLY_MOUNTS = ("/", "/dev")
TMPFS_SIZE = "size=512m"
REQUEST_TIMEOUT_S = 30.0  # one answer; the daemon's own request timeout is shorter
DAEMON_REQUEST_TIMEOUT_S = 3.0
DEFAULT_MAX_SECONDS = 3600.0
MAX_FUZZ_NETWORKS = 12  # definitions the fuzz keeps; older ones are undefined
MAX_FUZZ_PORTS = 24  # ports the fuzz keeps on the running network; older ones are deleted
FIXTURE_CHECK_EVERY = 250  # requests between tidy-ups (bounded state, fixtures standing)
MAX_FIXTURE_XML = 16 * 1024  # the running fixture is defined afresh beyond this
ADMIN_GID = 4242

NAT = "fz-nat"
ISOLATED = "fz-iso"
NAT_XML = (f"<network><name>{NAT}</name><forward mode='nat'/>"
           "<bridge name='vfz0' stp='off'/><mac address='52:54:00:fa:00:01'/>"
           "<portgroup name='pg1' default='yes'/><portgroup name='pg2'/>"
           "<ip address='10.197.0.1' netmask='255.255.255.0'><dhcp>"
           "<range start='10.197.0.100' end='10.197.0.150'/>"
           "<host mac='52:54:00:fa:00:0b' name='guest' ip='10.197.0.11'/>"
           "</dhcp></ip></network>")
ISOLATED_XML = (f"<network><name>{ISOLATED}</name><bridge name='vfz1' stp='off'/>"
                "<portgroup name='web'/><portgroup name='db'/>"
                "<ip address='10.198.0.1' netmask='255.255.255.0'/></network>")
TEMPLATES = (
    "<network><name>{name}</name><forward mode='nat'/><bridge name='{bridge}'/>"
    "<ip address='10.{a}.{b}.1' netmask='255.255.255.0'><dhcp>"
    "<range start='10.{a}.{b}.10' end='10.{a}.{b}.20'/></dhcp></ip></network>",
    "<network><name>{name}</name><bridge name='{bridge}'/>"
    "<ip address='10.{a}.{b}.1' prefix='24'/></network>",
    "<network><name>{name}</name><forward mode='route'/><bridge name='{bridge}'/>"
    "<ip family='ipv6' address='fd{a:02x}:{b:x}::1' prefix='64'/></network>",
    "<network><name>{name}</name><forward mode='open'/><bridge name='{bridge}'/>"
    "<dns><host ip='10.{a}.{b}.5'><hostname>h</hostname></host></dns>"
    "<ip address='10.{a}.{b}.1' netmask='255.255.255.0'/></network>",
)
PORT_XML = ("<networkport><uuid>{uuid}</uuid><owner><name>{owner}</name>"
            "<uuid>{owner_uuid}</uuid></owner><group>{group}</group>"
            "<mac address='{mac}'/>{bandwidth}<plug type='network' bridge='vfz0'/>"
            "</networkport>")

HOSTILE_IDS = (
    "", ".", "..", "...", "../", "./", "/", "//", "../x", "../../x", "x/..", "x/../..",
    f"../{MARK}", f"../../{MARK}", f"../../../{MARK}", f"../../../../{MARK}",
    f"../../../../../../../../tmp/{MARK}", f"../../../../../../../../{MARK}",
    f"/tmp/{MARK}", f"/{MARK}", f"/run/{MARK}", f"/etc/{MARK}", f"/var/tmp/{MARK}",
    "/etc/passwd", "/dev/null", "/proc/self/environ", f"{MARK}\x00.xml", f"a\x00/../{MARK}",
    "\x00", "a\x00b", "a\rb", "a\nb", "\r\n", "a\r\nX-Injected: 1", "a\tb", "a b", " ",
    "a\x1bb", "a\x7fb", "\x85", "\u2028", "\u202e", "\ufeff", "é", "网络", "💥",
    "\ud800", "\udcff", "a\udc80b", "x" * 16, "x" * 200, "x" * 256, "x" * 5000,
    "%2e%2e", "%2F", "..%2F..%2Fx", "%00", "%", "?", "#", "&", "=", ";", "*", "~", "-",
    "--help", "-x", "$(id)", "`id`", "'", '"', "<", ">", "&amp;", "{}", "[]", "null",
    "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "00000000-0000-0000-0000-00000000000g", "0" * 36, "-" * 36,
    "52:54:00:00:00:00", "ff:ff:ff:ff:ff:ff", "vnet0", "vnet999999", "lo", "macvtap0",
)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                          "CONNECT"})
MAX_REQUEST_LINE = 8190 - len(" HTTP/1.1") - len("DELETE ")  # aiohttp's max_line_size
SAFE_PATH_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                            b"0123456789-._~!$&'()*+,;=:@")
JSON_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**31, 2**63, -2**63 - 1, 2**64, 10**30, -10**30, 1.5, -0.0,
    1e308, "", "x", "\x00", [], [1], {}, {"a": 1}, [[[]]], "x" * 70000,
)
UPDATE_COMMANDS = ("add", "add-first", "add-last", "delete", "modify", "bogus", "")
UPDATE_SECTIONS = ("ip-dhcp-host", "ip-dhcp-range", "dns-host", "dns-txt", "dns-srv",
                   "portgroup", "forward-interface", "bridge", "nosuch", "")
UPDATE_SNIPPETS = (
    "<host mac='52:54:00:fa:{n:02x}:{n:02x}' name='{v}' ip='10.197.0.{n}'/>",
    "<host ip='10.197.0.{n}'><hostname>{v}</hostname></host>",
    "<txt name='{v}' value='{v}'/>",
    "<srv service='{v}' protocol='tcp' target='{v}' port='{n}'/>",
    "<range start='10.197.0.{n}' end='{v}'/>",
    "<portgroup name='{v}'/>",
    "<interface dev='{v}'/>",
    "<host mac='{v}' ip='10.197.0.{n}'/>",
    "{v}",
)
CLI_VERBS = (
    "validate", "format", "update", "dnsmasq-conf", "plan", "net-define", "net-create",
    "net-undefine", "net-start", "net-destroy", "net-autostart", "net-list", "net-info",
    "net-dumpxml", "net-uuid", "net-name", "net-dhcp-leases", "net-update", "net-apply",
    "net-new", "net-addresses", "net-forward-add", "net-forward-del", "net-forward-list",
    "port-create", "port-delete", "port-list", "port-dumpxml",
    "net-edit", "doctor", "lab", "graph", "", "--help", "--state-dir",
)
CLI_OPTIONS = ("--json", "--inactive", "--all", "--live", "--config", "--mac", "--commands",
               "--parent-index", "--portgroup", "--owner", "--uuid", "--proto", "--port",
               "--to", "--subnet", "--mode", "--dry-run", "--disable", "-", "--", "--help")
# What in the daemon's output shows a bug: a traceback, or an error it logged (an
# unexpected exception in a handler, an invocation or a scan is logged at ERROR).
LOG_FINDING = re.compile(r"Traceback|^virtnetd: (ERROR|CRITICAL):")
INTERNAL_ERROR = "internal error"


# --- report -----------------------------------------------------------------------------------


@dataclass
class Finding:
    kind: str
    detail: str
    request: int | None = None  # its number in the run (the seed replays it)
    sent: str = ""  # the request as sent (method, target, body), cut to a readable size

    def short(self) -> str:
        return f"[{self.kind}] {self.detail.splitlines()[0][:200] if self.detail else ''}"


@dataclass
class Report:
    seed: int
    wanted: int
    requests: int = 0
    seconds: float = 0.0
    timed_out: bool = False  # stopped at --max-seconds before sending them all
    interrupted: bool = False  # stopped by SIGINT or SIGTERM (the report is of what ran)
    statuses: Counter[str] = field(default_factory=Counter)
    endpoints: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    fs_created: list[str] = field(default_factory=list)
    fs_removed: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    source: str = ""  # where the virtnet under test was imported from

    def summary(self) -> str:
        rate = self.requests / max(self.seconds, 1e-9)
        lines = [f"{self.requests} requests in {self.seconds:.1f} s ({rate:.0f}/s), seed "
                 f"{self.seed}, {len(self.findings)} findings, virtnet from {self.source}"
                 + (f" (stopped at the time limit, {self.wanted} wanted)"
                    if self.timed_out else "")
                 + (" (interrupted)" if self.interrupted else "")]
        lines.append("  statuses: " + ", ".join(f"{status} x{count}" for status, count
                                                in sorted(self.statuses.items())))
        lines += [f"  {endpoint}: {count}" for endpoint, count in sorted(self.endpoints.items())]
        kinds = Counter(finding.short() for finding in self.findings)
        lines += [f"  finding x{count}: {text}" for text, count in kinds.most_common()]
        return "\n".join(lines)

    def to_json(self) -> str:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["statuses"], data["endpoints"] = dict(self.statuses), dict(self.endpoints)
        data["findings"] = [asdict(finding) for finding in self.findings]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Report:
        data = json.loads(text)
        data["statuses"] = Counter(data["statuses"])
        data["endpoints"] = Counter(data["endpoints"])
        data["findings"] = [Finding(**item) for item in data["findings"]]
        return cls(**data)


# --- the filesystem around the state directory ----------------------------------------------


def listing(state_dir: Path) -> set[str]:
    """Every entry of the private mounts but the state directory, and the entries of the
    host's top directories: what a daemon must not change outside its state."""
    entries: set[str] = set()
    state = os.path.realpath(state_dir)
    for top in PRIVATE_MOUNTS:
        for dirpath, dirnames, filenames in os.walk(top):
            kept = []
            for name in dirnames:
                path = os.path.join(dirpath, name)
                if os.path.realpath(path) == state:
                    continue
                entries.add(path + "/")
                kept.append(name)
            dirnames[:] = kept
            entries.update(os.path.join(dirpath, name) for name in filenames)
    for top in HOST_DIRS:
        try:
            with os.scandir(top) as scan:
                entries.update(os.path.join(top, entry.name) for entry in scan)
        except OSError:
            continue
    return entries


# --- the namespaces ---------------------------------------------------------------------------


def enter_private_mounts() -> None:
    """In the run's own mount namespace: the host's filesystem read-only (a path the daemon
    should never have written fails instead of landing on the host), fresh tmpfs mounts over
    the private directories."""
    for top in READ_ONLY_MOUNTS:
        subprocess.run(["mount", "-o", "remount,bind,ro", top], check=True, timeout=20)
    for top in PRIVATE_MOUNTS:
        if os.path.isdir(top):
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"mode=1777,{TMPFS_SIZE}",
                            f"vnfz-{os.path.basename(top)}", top], check=True, timeout=20)


def own_netns_pids() -> list[int]:
    """Processes in this process's network namespace, but this one (the daemon's dnsmasq)."""
    mine = os.stat("/proc/self/ns/net").st_ino
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == mine:
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def kill_leftovers() -> None:
    for pid in own_netns_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- requests ---------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    target: str
    body: bytes | None = None
    endpoint: str = ""
    receive_fd: bool = False
    stream: bool = False  # an event stream: only the head is read
    cli: bool = False

    @property
    def malformed_http(self) -> bool:
        """Whether the HTTP layer refuses it before the API sees it (400, plain text): a
        method its parser does not know, a request line longer than it reads."""
        return self.method not in HTTP_METHODS or len(self.target) > MAX_REQUEST_LINE

    def shown(self, limit: int = 600) -> str:
        body = b"" if self.body is None else self.body
        more = f"... ({len(body)} bytes)" if len(body) > limit else ""
        target = self.target if len(self.target) <= limit \
            else f"{self.target[:limit]}... ({len(self.target)} characters)"
        return f"{self.method} {target} {body[:limit]!r}{more}"


def encode_segment(text: str, rng: random.Random) -> str:
    """One path segment, percent-encoded (lone surrogates as their WTF-8 bytes); now and then
    with '.' and '-' left bare and '/' encoded twice, as a sloppy client might."""
    data = text.encode("utf-8", "surrogatepass")
    quoted = "".join(chr(b) if b in SAFE_PATH_BYTES else f"%{b:02X}" for b in data)
    if rng.random() < 0.05:
        quoted = quoted.replace("%2F", "%252F")
    return quoted or ("%20" if rng.random() < 0.1 else "")


def json_bytes(value: Any, rng: random.Random) -> bytes:
    """VALUE as JSON; strings with lone surrogates as \\u escapes (json.dumps does that)."""
    return json.dumps(value, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")


def malformed_body(rng: random.Random, good: bytes) -> bytes:
    choice = rng.randrange(12)
    if choice == 0:
        return good[:rng.randrange(len(good) + 1)]  # truncated
    if choice == 1:
        depth = rng.choice((100, 1000, 5000, 100_000))
        return b'{"xml": ' + b"[" * depth + b"]" * depth + b"}"
    if choice == 2:
        depth = rng.choice((1000, 100_000))
        return b'{"a":' * depth + b"1" + b"}" * depth
    if choice == 3:
        return b'{"xml": ' + b"9" * rng.choice((20, 400, 5000, 100_000)) + b"}"
    if choice == 4:
        return rng.choice((b"NaN", b'{"xml": NaN}', b'{"xml": Infinity}', b'{"x": -Infinity}'))
    if choice == 5:
        position = rng.randrange(len(good) + 1)
        return good[:position] + rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80",
                                             b"\xf8\x88\x80\x80\x80")) + good[position:]
    if choice == 6:
        return rng.choice((b"[]", b"1", b'"x"', b"null", b"true", b"[{}]", b"{}" * 2))
    if choice == 7:
        return good.decode("utf-8", "replace").encode("utf-16")
    if choice == 8:
        return b"\x00" * rng.randrange(1, 64)
    if choice == 9:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if choice == 10:
        return good + b"garbage"
    return b'{"a": "\\ud800", "b": "\\udfff\\u0000"}'


class Generator:
    """The run's requests, from one seeded random generator, knowing what exists."""

    def __init__(self, seed: int, netns: dict[str, int], state_dir: str) -> None:
        self.rng = random.Random(seed)
        self.netns = netns
        self.state_dir = state_dir
        self.networks: dict[str, str] = {}  # name -> uuid: the fixtures and what was defined
        self.fuzz_networks: list[str] = []  # defined by this run, oldest first
        self.ports: list[dict[str, Any]] = []  # fixture ports and ports this run created
        self.fixture_ports: set[str] = set()
        self.defined = 0

    # --- identifiers ------------------------------------------------------------------------

    def hostile_id(self) -> str:
        rng = self.rng
        choice = rng.random()
        if choice < 0.55:
            value = rng.choice(HOSTILE_IDS)
        elif choice < 0.75:
            value = hostile_text(rng)
        elif choice < 0.85:
            value = rng.choice(HOSTILE_IDS) + rng.choice(HOSTILE_IDS)
        elif choice < 0.95:
            value = "".join(chr(rng.randrange(1, 0x11000)) for _ in range(rng.randrange(1, 12)))
        else:
            known = rng.choice(sorted(self.networks) or [NAT])
            value = rng.choice((known.upper(), known + "\x00", known + "/", " " + known,
                                known + "/../" + known, known[:-1]))
        return value

    def network_id(self, destructive: bool = False) -> str:
        """A network's name or UUID, or a hostile one. A destructive request never names the
        fixtures (their loss would end the run's reach)."""
        rng = self.rng
        if rng.random() < 0.45:
            return self.hostile_id()
        names = self.fuzz_networks if destructive else sorted(self.networks)
        if not names:
            return self.hostile_id()
        name = rng.choice(names)
        return self.networks.get(name, name) if rng.random() < 0.25 else name

    def port_id(self, network: str, destructive: bool = False) -> str:
        rng = self.rng
        ports = [p for p in self.ports if p["network"] == network
                 and (not destructive or p["uuid"] not in self.fixture_ports)]
        if rng.random() < 0.5 or not ports:
            return self.hostile_id()
        port = rng.choice(ports)
        return rng.choice((port["uuid"], port["uuid"].upper(), port.get("device") or "",
                           port.get("mac") or ""))

    def target(self, *segments: str, query: str = "") -> str:
        encoded = "/".join(encode_segment(segment, self.rng) for segment in segments)
        return "/v1/networks/" + encoded + query

    def query(self, allowed: tuple[str, ...]) -> str:
        rng = self.rng
        parts = []
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            key = rng.choice(allowed + ("bogus", "", "x" * 300)) if rng.random() < 0.9 \
                else self.hostile_id()
            value = rng.choice(("1", "0", "true", "no", "", "maybe", "2", "-1", "٣", "²",
                                "9" * 30, "9" * 5000)) if rng.random() < 0.6 \
                else self.hostile_id()
            parts.append(f"{encode_segment(key, rng)}={encode_segment(value, rng)}")
        return ("?" + "&".join(parts)) if parts else ""

    # --- values -----------------------------------------------------------------------------

    def json_value(self) -> Any:
        rng = self.rng
        if rng.random() < 0.5:
            return rng.choice(JSON_VALUES)
        return self.hostile_id()

    def mac(self) -> str:
        return self.hostile_id() if self.rng.random() < 0.2 else self.mac_valid()

    def mac_valid(self) -> str:
        rng = self.rng
        return "52:54:00:%02x:%02x:%02x" % (rng.randrange(256), rng.randrange(256),
                                            rng.randrange(256))

    def rate(self) -> Any:
        rng = self.rng
        numbers = (1, 100, 1000, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64, 0, -1, 10**30)
        if rng.random() < 0.3:
            return ",".join(str(rng.choice(numbers)) if rng.random() < 0.8 else ""
                            for _ in range(rng.randrange(1, 6)))
        rate: dict[str, Any] = {}
        for name in ("average", "peak", "burst", "floor"):
            if rng.random() < 0.5:
                rate[name] = rng.choice(numbers) if rng.random() < 0.85 else self.json_value()
        return rate

    def definition(self, name: str | None = None) -> str:
        rng = self.rng
        self.defined += 1
        if name is None:
            name = f"fz{self.defined}" if rng.random() < 0.7 else self.hostile_id()
        text = rng.choice(TEMPLATES).format(
            name=xml_escape(name), bridge=f"vfzd{self.defined % 1000}",
            a=100 + self.defined % 90, b=self.defined % 250)
        if rng.random() < 0.5:
            text = mutated(text, rng)
        return text

    def snippet(self) -> str:
        rng = self.rng
        value = self.hostile_id()
        if rng.random() < 0.5:
            value = xml_escape(value)
        return rng.choice(UPDATE_SNIPPETS).format(n=rng.randrange(2, 250), v=value)

    def port_xml(self) -> str:
        rng = self.rng
        pieces = {
            "uuid": str(uuid.UUID(int=rng.getrandbits(128))) if rng.random() < 0.5
            else self.hostile_id(),
            "owner": self.hostile_id(), "owner_uuid": self.hostile_id(),
            "group": rng.choice(("pg1", "pg2", "")) if rng.random() < 0.5 else self.hostile_id(),
            "mac": self.mac(),
            "bandwidth": rng.choice(("", "<bandwidth><inbound average='1000'/></bandwidth>",
                                     f"<bandwidth><inbound average='{2**64 - 1}'/></bandwidth>",
                                     "<bandwidth><inbound floor='10'/></bandwidth>")),
        }
        text = PORT_XML.format(**{key: xml_escape(value) if key not in ("bandwidth",)
                                  and rng.random() < 0.7 else value
                                  for key, value in pieces.items()})
        if rng.random() < 0.3:
            text = mutated(text, rng)
        return text

    # --- bodies -----------------------------------------------------------------------------

    def body(self, fields: dict[str, Any], required: tuple[str, ...] = ()) -> bytes:
        """FIELDS as a JSON body, most of the time with a hostile change."""
        rng = self.rng
        choice = rng.random()
        data = dict(fields)
        if choice < 0.5:
            pass  # the hostile values the fields hold already
        elif choice < 0.7 and data:
            for _ in range(rng.randrange(1, 3)):
                data[rng.choice(sorted(data))] = self.json_value()
        elif choice < 0.75:
            data[rng.choice(("bogus", "", "XML", self.hostile_id()))] = self.json_value()
        elif choice < 0.8 and required:
            data.pop(rng.choice(required), None)
        elif choice < 0.83:
            return b""
        else:
            return malformed_body(rng, json_bytes(data, rng))
        return json_bytes(data, rng)

    # --- one request ------------------------------------------------------------------------

    def next(self) -> Request:
        rng = self.rng
        kind = rng.choices(
            ("info", "list", "define", "plan-xml", "net-get", "net-xml", "net-plan",
             "net-leases", "net-ports", "start", "destroy", "undefine", "autostart", "update",
             "port-get", "port-xml", "port-create", "port-delete", "doctor", "events", "cli",
             "wrong-method", "unknown-path"),
            weights=(2, 3, 7, 4, 6, 4, 4, 3, 3, 3, 3, 3, 3, 9, 5, 4, 10, 5, 1, 2, 12, 2, 2))[0]
        return getattr(self, "_" + kind.replace("-", "_"))()

    def _info(self) -> Request:
        return Request("GET", self.rng.choice(("/v1", "/")), endpoint="GET /v1")

    def _list(self) -> Request:
        return Request("GET", "/v1/networks" + self.query(
            ("all", "inactive", "persistent", "transient", "autostart", "no_autostart")),
            endpoint="GET /v1/networks")

    def _define(self) -> Request:
        rng = self.rng
        fields: dict[str, Any] = {"xml": self.definition()}
        if rng.random() < 0.3:
            fields["transient"] = rng.random() < 0.2
        if rng.random() < 0.3:
            fields["autostart"] = rng.random() < 0.5
        return Request("POST", "/v1/networks", self.body(fields, ("xml",)),
                       endpoint="POST /v1/networks")

    def _plan_xml(self) -> Request:
        return Request("POST", "/v1/plan", self.body({"xml": self.definition()}, ("xml",)),
                       endpoint="POST /v1/plan")

    def _net_get(self) -> Request:
        return Request("GET", self.target(self.network_id(), query=self.query(())),
                       endpoint="GET /v1/networks/NAME")

    def _net_xml(self) -> Request:
        return Request("GET", self.target(self.network_id(), "xml",
                                          query=self.query(("inactive",))),
                       endpoint="GET /v1/networks/NAME/xml")

    def _net_plan(self) -> Request:
        return Request("GET", self.target(self.network_id(), "plan"),
                       endpoint="GET /v1/networks/NAME/plan")

    def _net_leases(self) -> Request:
        return Request("GET", self.target(self.network_id(), "leases",
                                          query=self.query(("mac",))),
                       endpoint="GET /v1/networks/NAME/leases")

    def _net_ports(self) -> Request:
        return Request("GET", self.target(self.network_id(), "ports"),
                       endpoint="GET /v1/networks/NAME/ports")

    def _start(self) -> Request:
        # starting what this run defined makes bridges in the run's namespace: fine
        return Request("POST", self.target(self.network_id(), "start"),
                       endpoint="POST /v1/networks/NAME/start")

    def _destroy(self) -> Request:
        return Request("POST", self.target(self.network_id(destructive=True), "destroy"),
                       endpoint="POST /v1/networks/NAME/destroy")

    def _undefine(self) -> Request:
        return Request("DELETE", self.target(self.network_id(destructive=True)),
                       endpoint="DELETE /v1/networks/NAME")

    def _autostart(self) -> Request:
        return Request("PUT", self.target(self.network_id(destructive=True), "autostart"),
                       self.body({"autostart": self.rng.random() < 0.5}, ("autostart",)),
                       endpoint="PUT /v1/networks/NAME/autostart")

    def _update(self) -> Request:
        rng = self.rng
        fields = {"command": rng.choice(UPDATE_COMMANDS), "section": rng.choice(UPDATE_SECTIONS),
                  "xml": self.snippet(), "parent_index": rng.choice((-1, 0, 1, 7, 2**40)),
                  "live": rng.random() < 0.5, "config": rng.random() < 0.5}
        network = NAT if rng.random() < 0.6 else self.network_id()
        return Request("POST", self.target(network, "update"),
                       self.body(fields, ("command", "section", "xml")),
                       endpoint="POST /v1/networks/NAME/update")

    def _port_get(self) -> Request:
        network = NAT if self.rng.random() < 0.7 else self.network_id()
        return Request("GET", self.target(network, "ports", self.port_id(network)),
                       endpoint="GET /v1/networks/NAME/ports/PORT")

    def _port_xml(self) -> Request:
        network = NAT if self.rng.random() < 0.7 else self.network_id()
        return Request("GET", self.target(network, "ports", self.port_id(network), "xml"),
                       endpoint="GET /v1/networks/NAME/ports/PORT/xml")

    def _port_delete(self) -> Request:
        network = NAT if self.rng.random() < 0.7 else self.network_id()
        return Request("DELETE", self.target(network, "ports",
                                             self.port_id(network, destructive=True)),
                       endpoint="DELETE /v1/networks/NAME/ports/PORT")

    def _port_create(self) -> Request:
        rng = self.rng
        if rng.random() < 0.4:
            # a request the port manager accepts but for one hostile identifier in it
            name = rng.choice(("uuid", "uuid", "uuid", "portgroup", "owner", "owner_uuid"))
            body = json_bytes({"mac": self.mac_valid(), name: self.hostile_id()}, rng)
            return Request("POST", self.target(NAT, "ports"), body,
                           endpoint="POST /v1/networks/NAME/ports")
        network = rng.choice((NAT, NAT, NAT, ISOLATED)) if rng.random() < 0.8 \
            else self.network_id()
        fields: dict[str, Any] = {"mac": self.mac()}
        for name, values in (("portgroup", ("pg1", "pg2", "web")), ("owner", ("vm1",)),
                             ("owner_uuid", (str(uuid.UUID(int=rng.getrandbits(128))),)),
                             ("uuid", (str(uuid.UUID(int=rng.getrandbits(128))),))):
            if rng.random() < (0.5 if name == "uuid" else 0.35):
                fields[name] = rng.choice(values) if rng.random() < 0.3 else self.hostile_id()
        for name in ("inbound", "outbound"):
            if rng.random() < 0.15:
                fields[name] = self.rate()
        if rng.random() < 0.12:
            fields["xml"] = self.port_xml()
            if rng.random() < 0.7:
                fields.pop("mac")
        if rng.random() < 0.1:
            fields["pass_fd"] = True
            fields["vnet_hdr"] = rng.random() < 0.5
        body = self.body(fields)
        try:
            passes_fd = json.loads(body).get("pass_fd") is True
        except (ValueError, AttributeError, RecursionError):
            passes_fd = False
        return Request("POST", self.target(network, "ports"), body, receive_fd=passes_fd,
                       endpoint="POST /v1/networks/NAME/ports")

    def _doctor(self) -> Request:
        rng = self.rng
        query = "&".join(f"network={encode_segment(self.network_id(), rng)}"
                         for _ in range(rng.randrange(0, 3)))
        if rng.random() < 0.2:
            query += "&" + self.query(())[1:]
        return Request("GET", "/v1/doctor" + ("?" + query if query else ""),
                       endpoint="GET /v1/doctor")

    def _events(self) -> Request:
        return Request("GET", "/v1/events" + self.query(("network", "since")), stream=True,
                       endpoint="GET /v1/events")

    def _cli(self) -> Request:
        rng = self.rng
        verb = rng.choice(CLI_VERBS)
        destructive = verb in ("net-undefine", "net-destroy", "port-delete", "net-autostart",
                               "net-update", "net-apply", "net-forward-add", "net-forward-del")
        argv = [verb]
        files: dict[str, Any] = {}
        for _ in range(rng.randrange(0, 5)):
            pick = rng.random()
            if pick < 0.3:
                argv.append(self.network_id(destructive=destructive))
            elif pick < 0.45:
                argv.append(rng.choice(CLI_OPTIONS))
            elif pick < 0.6:
                name = rng.choice(("net.xml", "-", self.hostile_id()))
                argv.append(name)
                if name != "-" and rng.random() < 0.8:
                    if rng.random() < 0.8:
                        data = self.definition().encode("utf-8", "surrogatepass")
                        files[name] = {"data": base64.b64encode(data).decode()}
                    else:
                        files[name] = {"errno": rng.choice((2, 13, 21, 0, -1, 4096, 2**40))}
            elif pick < 0.75 and self.ports:
                argv.append(self.port_id(NAT, destructive=destructive))
            else:
                argv.append(self.hostile_id())
        fields: dict[str, Any] = {"argv": argv, "netns": dict(self.netns)}
        if files:
            fields["files"] = files
        if rng.random() < 0.1:
            data = self.definition().encode("utf-8", "surrogatepass")
            fields["stdin"] = base64.b64encode(data).decode() if rng.random() < 0.8 \
                else self.hostile_id()
        if rng.random() < 0.3:
            fields["state_dir"] = self.state_dir if rng.random() < 0.5 else self.hostile_id()
        if rng.random() < 0.05:
            fields["netns"] = {"dev": self.json_value(), "ino": self.json_value()}
        return Request("POST", "/v1/cli", self.body(fields, ("argv",)), cli=True,
                       endpoint="POST /v1/cli")

    def _wrong_method(self) -> Request:
        rng = self.rng
        method = rng.choice(("PATCH", "PUT", "DELETE", "POST", "OPTIONS", "TRACE", "GETX"))
        path = rng.choice(("/v1", "/v1/networks", "/v1/plan", "/v1/cli", "/v1/events",
                           self.target(self.network_id(), "xml")))
        return Request(method, path, self.body({}) if rng.random() < 0.5 else None,
                       endpoint="wrong method")

    def _unknown_path(self) -> Request:
        rng = self.rng
        segments = [self.hostile_id() for _ in range(rng.randrange(1, 4))]
        prefix = rng.choice(("/v1/", "/v2/", "/", "/v1/networks/x/ports/y/", "//v1/"))
        return Request(rng.choice(("GET", "POST", "DELETE")),
                       prefix + "/".join(encode_segment(s, rng) for s in segments),
                       endpoint="unknown path")

    # --- what the answers tell -------------------------------------------------------------

    def learn(self, request: Request, status: int, answer: Any) -> list[Request]:
        """Remember what a successful request made; returns clean-up requests to send when
        the run keeps too many of its own networks or ports."""
        cleanup: list[Request] = []
        if not isinstance(answer, dict):
            return cleanup
        if request.endpoint == "POST /v1/networks" and status == 201:
            name = answer.get("name")
            if isinstance(name, str) and name not in self.networks:
                self.networks[name] = str(answer.get("uuid"))
                self.fuzz_networks.append(name)
                while len(self.fuzz_networks) > MAX_FUZZ_NETWORKS:
                    old = self.fuzz_networks.pop(0)
                    self.networks.pop(old, None)
                    cleanup.append(Request("POST", self.target(old, "destroy"),
                                           endpoint="cleanup"))
                    cleanup.append(Request("DELETE", self.target(old), endpoint="cleanup"))
        elif request.endpoint == "DELETE /v1/networks/NAME" and status == 200:
            name = answer.get("name")
            if name in self.fuzz_networks and not answer.get("active"):
                self.fuzz_networks.remove(name)
                self.networks.pop(name, None)
        elif request.endpoint == "POST /v1/networks/NAME/ports" and status == 201:
            self.ports.append(answer)
            owned = [p for p in self.ports if p["uuid"] not in self.fixture_ports]
            if len(owned) > MAX_FUZZ_PORTS:
                old = owned[0]
                self.ports.remove(old)
                cleanup.append(Request("DELETE", self.target(old["network"], "ports",
                                                             old["uuid"]), endpoint="cleanup"))
        elif request.endpoint == "DELETE /v1/networks/NAME/ports/PORT" and status == 200:
            self.ports = [p for p in self.ports if p["uuid"] != answer.get("uuid")]
        return cleanup


def mutated(text: str, rng: random.Random) -> str:
    """TEXT mutated as bench/fuzz.py mutates definitions (cut, flipped bytes as U+FFFD)."""
    if not text.isascii() and any("\ud800" <= c <= "\udfff" for c in text):
        return text  # the mutator works on UTF-8: a lone surrogate stays as it is
    result = mutate_definition(text, rng)
    return result if isinstance(result, str) else result.decode("utf-8", "replace")


def xml_escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


# --- the run ----------------------------------------------------------------------------------


def check_answer(request: Request, status: int, headers: dict[str, str],
                 body: bytes) -> tuple[str | None, Any]:
    """(what is wrong with the answer or None, its decoded JSON if any)."""
    decoded: Any = None
    content_type = headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            decoded = json.loads(body)
        except ValueError as exc:
            return f"{status}: a JSON answer that does not parse: {exc}", None
    if status >= 500:
        return f"{status}: {body[:300].decode('utf-8', 'replace')}", decoded
    if request.malformed_http:
        if status != 400:
            return f"malformed HTTP answered {status}: {body[:300]!r}", decoded
        return None, decoded
    if status >= 400:
        error = decoded.get("error") if isinstance(decoded, dict) else None
        if not isinstance(error, dict) or error.get("status") != status \
                or not isinstance(error.get("kind"), str) \
                or not isinstance(error.get("message"), str):
            return f"{status} without the JSON error body: {body[:300]!r}", decoded
        if INTERNAL_ERROR in error["message"] or "Traceback" in error["message"]:
            return f"{status}: {error['message'][:300]}", decoded
    elif request.cli and status == 200:
        output = decoded.get("output") if isinstance(decoded, dict) else None
        if not isinstance(output, list):
            return f"CLI answer without output: {body[:300]!r}", decoded
        text = "".join(str(chunk[1]) for chunk in output if isinstance(chunk, list)
                       and len(chunk) == 2)
        if f"{INTERNAL_ERROR} in virtnetd" in text or "Traceback" in text:
            return f"CLI: {text.strip()[:300]}", decoded
    return None, decoded


def exchange(connection: Any, request: Request) -> tuple[int, dict[str, str], bytes]:
    """Send REQUEST; (status, headers, body). A kept connection the daemon closed before
    the request reached it (after an error answer, or idle) is opened again, once."""
    from virtnet.client import ConnectionLost

    reused = connection._sock is not None
    try:
        return _exchange(connection, request)
    except (BrokenPipeError, ConnectionResetError, ConnectionLost):
        connection.close()
        if not reused:
            raise
    return _exchange(connection, request)


def _exchange(connection: Any, request: Request) -> tuple[int, dict[str, str], bytes]:
    if request.stream:
        connection.send(request.method, request.target, request.body)
        status, _, headers = connection.read_head()
        body = b""
        if status >= 400:
            body = connection.read_body(headers)
        connection.close()  # a stream never ends by itself
        return status, headers, body
    response = connection.request(request.method, request.target, request.body,
                                  receive_fd=request.receive_fd)
    if response.fd is not None:
        os.close(response.fd)
    return response.status, response.headers, response.body


def setup_fixtures(client: Any, generator: Generator) -> None:
    for xml, start in ((NAT_XML, True), (ISOLATED_XML, False)):
        info = client.define(xml, start=start)
        generator.networks[info["name"]] = info["uuid"]
    for index in range(2):
        port = client.create_port(NAT, f"52:54:00:fa:01:{index:02x}", owner=f"fixture{index}")
        generator.ports.append(port)
        generator.fixture_ports.add(port["uuid"])


def tidy(client: Any, generator: Generator) -> list[Finding]:
    """Keep the daemon's state bounded and the fixtures standing: undefine what the run made
    beyond what it remembers (CLI verbs make networks and ports the generator never saw),
    start the running fixture again if a request stopped it, define what was undefined, and
    start it afresh once its definition has grown large (accepted updates pile up). Returns
    the findings of these requests (an answer >= 500)."""
    from virtnet.client import ApiError

    findings: list[Finding] = []

    def call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except ApiError as exc:
            if exc.status >= 500:
                findings.append(Finding("answer", f"{exc.status}: {exc.message}",
                                        None, f"tidy: {what} {args!r}"[:600]))
            return None
        except UnicodeEncodeError:  # the daemon took an identifier no client can send
            findings.append(Finding("unusable identifier", f"{what}: {args!r}"[:600]))
            return None

    kept = {NAT, ISOLATED, *generator.fuzz_networks}
    for row in call("list", lambda: client.networks(all=True)) or []:
        name = row["name"]
        if name in kept:
            continue
        if row.get("state") == "active":
            call("destroy", client.destroy, name)
        if row.get("persistent"):
            call("undefine", client.undefine, name)
    known = {port["uuid"] for port in generator.ports}
    for port in call("ports", client.ports, NAT) or []:
        if port["uuid"] not in known:
            call("delete port", client.delete_port, NAT, port["uuid"])
    xml = call("dumpxml", client.dumpxml, NAT) or ""
    if len(xml) > MAX_FIXTURE_XML:
        call("destroy", client.destroy, NAT)
        call("undefine", client.undefine, NAT)
    for name, definition in ((NAT, NAT_XML), (ISOLATED, ISOLATED_XML)):
        info = call("info", client.network, name)
        if info is None:
            info = client.define(definition)
            generator.networks[name] = info["uuid"]
        if name == NAT and not info.get("active"):
            client.start(NAT)
            generator.ports = [p for p in generator.ports if p["network"] != NAT]
            generator.fixture_ports.clear()
    return findings


def log_records(log: str) -> list[str]:
    """The daemon's output as records: a 'virtnetd: LEVEL: ' line and the lines after it
    that do not start another (a traceback, a multi-line message)."""
    records: list[str] = []
    for line in log.splitlines():
        if line.startswith("virtnetd: ") or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return records


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _loop(report: Report, generator: Generator, client: Any, connection: Any, daemon: Any,
          state: Path, before: set[str], changed: dict[str, int], count: int, begin: float,
          max_seconds: float, progress: Callable[[Report], None] | None) -> None:
    """Send the requests (their count and findings go to REPORT as they are sent)."""
    from virtnet.client import ConnectionLost

    pending: list[Request] = []
    number = 0
    while number < count:
        if time.monotonic() - begin > max_seconds:
            report.timed_out = True
            break
        request = pending.pop(0) if pending else generator.next()
        if request.endpoint != "cleanup":
            number += 1
            report.requests = number
        report.endpoints[request.endpoint] += 1
        try:
            status, headers, body = exchange(connection, request)
        except (ConnectionLost, OSError) as exc:
            connection.close()
            if request.malformed_http and daemon.running and isinstance(
                    exc, (BrokenPipeError, ConnectionResetError, ConnectionLost)):
                # A request the HTTP layer cannot parse (an unknown method, broken framing) is
                # answered and the connection closed at once, as HTTP lets a server do: a
                # client still sending a large body then meets a closed socket. The daemon
                # serving the next request is what counts (the run goes on over a new one).
                report.statuses["closed"] += 1
                continue
            report.findings.append(Finding("no answer", f"{type(exc).__name__}: {exc}",
                                           number, request.shown()))
            report.statuses["none"] += 1
            if not daemon.running:
                report.findings.append(Finding("daemon died", daemon.log()[-2000:],
                                               number, request.shown()))
                break
            continue
        report.statuses[str(status)] += 1
        problem, answer = check_answer(request, status, headers, body)
        if problem is not None:
            report.findings.append(Finding("answer", problem, number, request.shown()))
        pending += generator.learn(request, status, answer)
        if request.method != "GET":  # a file made and removed again is seen too
            now = listing(state)
            for path in sorted((now - before) | (before - now)):
                if path not in changed:
                    changed[path] = number
                    what = "created" if path in now else "removed"
                    report.findings.append(Finding(
                        "file outside the state directory", f"{what}: {path!r}",
                        number, request.shown()))
        if number % FIXTURE_CHECK_EVERY == 0 and not pending:
            report.findings += tidy(client, generator)
        if progress is not None and number % 10000 == 0 and not pending:
            report.seconds = time.monotonic() - begin
            progress(report)


def inner(count: int, seed: int, max_seconds: float,
          progress: Callable[[Report], None] | None = None) -> Report:
    """The run itself, inside the namespaces (see the module's doc)."""
    import virtnet
    from virtnet.client import Client, Connection
    from tests.kit.daemon import VirtnetdProcess

    report = Report(seed=seed, wanted=count, source=os.path.dirname(virtnet.__file__))
    enter_private_mounts()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=20)
    root = Path(tempfile.mkdtemp(prefix="vnt-fuzz-api-"))
    root.chmod(0o755)  # dnsmasq drops root and must reach its files in the state
    state = root / "state"
    os.chdir(root)  # the daemon's working directory, watched with the rest
    daemon = VirtnetdProcess(None, state, log_path=root / "virtnetd.log",
                             args=("--group", str(ADMIN_GID), "--no-autostart",
                                   "--request-timeout", str(DAEMON_REQUEST_TIMEOUT_S)))
    begin = time.monotonic()
    try:
        daemon.start()
        st = os.stat(f"/proc/{daemon.pid}/ns/net")
        generator = Generator(seed, {"dev": st.st_dev, "ino": st.st_ino}, str(state))
        with Client(str(daemon.socket_path), timeout=REQUEST_TIMEOUT_S) as client:
            setup_fixtures(client, generator)
            before = listing(state)
            changed: dict[str, int] = {}  # path created or removed -> the request after which
            connection = Connection(str(daemon.socket_path), timeout=REQUEST_TIMEOUT_S)
            previous = signal.signal(signal.SIGTERM, _interrupt)
            try:
                _loop(report, generator, client, connection, daemon, state, before, changed,
                      count, begin, max_seconds, progress)
            except KeyboardInterrupt:
                report.interrupted = True
            finally:
                signal.signal(signal.SIGTERM, previous)
            connection.close()
            after = listing(state)
        report.fs_created = sorted(after - before)
        report.fs_removed = sorted(before - after)
        for path in report.fs_created + report.fs_removed:
            if path not in changed:
                what = "created" if path in report.fs_created else "removed"
                report.findings.append(Finding("file outside the state directory",
                                               f"{what}: {path!r}"))
        if not daemon.running:
            report.findings.append(Finding("daemon died", daemon.log()[-2000:]))
    finally:
        report.seconds = time.monotonic() - begin
        daemon.stop()
        kill_leftovers()
    for record in log_records(daemon.log()):
        if LOG_FINDING.search(record):
            report.log_lines.append(record[:3000])
            report.findings.append(Finding("daemon output", record[:3000]))
    os.chdir("/")
    shutil.rmtree(root, ignore_errors=True)
    return report


def run(count: int, seed: int = 1, max_seconds: float = DEFAULT_MAX_SECONDS,
        progress: bool = False, env: dict[str, str] | None = None) -> Report:
    """The whole run: a child process in new network and mount namespaces does it (root
    only); returns its report."""
    argv = ["unshare", "--net", "--mount", "--propagation", "private", "--",
            sys.executable, "-m", "tests.kit.fuzz_api", "--inner", "--count", str(count),
            "--seed", str(seed), "--max-seconds", str(max_seconds)]
    if progress:
        argv.append("--progress")
    # from the repo root, where ``-m tests.kit.fuzz_api`` is found whoever the caller is
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=None if progress else
                          subprocess.PIPE, timeout=max_seconds + 300,
                          env={**os.environ, **(env or {})}, cwd=REPO_ROOT)
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    if proc.returncode not in (0, 1) or not lines:
        raise RuntimeError(f"the API fuzz run failed ({proc.returncode}):\n"
                           f"{(proc.stderr or b'').decode(errors='replace')[-4000:]}")
    return Report.from_json(lines[-1])


def print_findings(report: Report, limit: int = 30, out: Any = sys.stdout) -> None:
    print(report.summary(), file=out)
    for finding in report.findings[:limit]:
        where = f" (request {finding.request})" if finding.request is not None else ""
        print(f"\n--- {finding.kind}{where}\n{finding.detail}", file=out)
        if finding.sent:
            print(f"sent: {finding.sent}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz virtnetd's API (root; namespaces of "
                                     "its own).")
    parser.add_argument("--count", type=int, default=100_000, help="requests to send")
    parser.add_argument("--seed", type=int, default=1, help="random seed (replayable)")
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                        help="stop sending after this long (the report says so)")
    parser.add_argument("--progress", action="store_true", help="report every 10,000")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.inner:
        def show(report: Report) -> None:
            print(f"... {report.requests} requests, {len(report.findings)} findings, "
                  f"{report.seconds:.0f} s", file=sys.stderr, flush=True)

        report = inner(options.count, options.seed, options.max_seconds,
                       show if options.progress else None)
        print(report.to_json())
        return 1 if report.findings else 0
    if os.geteuid() != 0:
        print("fuzz_api: needs root (network and mount namespaces)", file=sys.stderr)
        return 2
    report = run(options.count, options.seed, options.max_seconds, progress=options.progress)
    if options.json:
        print(report.to_json())
    else:
        print_findings(report)
    return 1 if report.findings or report.timed_out else 0


if __name__ == "__main__":
    sys.exit(main())
