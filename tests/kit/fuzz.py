"""A fuzzing harness for what virtnet reads from users: definitions, net-update snippets and
command lines (used by bench/fuzz.py and tests/unit/test_fuzz_short.py).

Inputs: definitions drawn by the hypothesis strategies of :mod:`tests.kit.strategies`
(valid and broken ones) form a seed corpus; each input is a seed mutated by a seeded random
generator: an attribute or text replaced by a hostile value (quotes, newlines, control
characters, very long, '/', spaces, non-ASCII, numbers at their limits), an element dropped
or duplicated, or the bytes cut, flipped or spliced. Each input goes through

    parse -> validate -> (if valid) format, dnsmasq conf/hostsfile/addnhosts, nft ruleset
          -> net-update with a hostile snippet -> validate -> renderers again

and command lines through the client's splitter (virtnet.face.fastcli.split_command_line) and the
click CLI for verbs that read only (never one that changes the host).

Findings are: an exception that is not a VirtnetError (or click's usage errors for the CLI),
an input that takes longer than ``SLOW_INPUT_S``, and a rendered output that breaks a safety
oracle (a control character, a line a reader would cut differently, an interface name longer
than 15 bytes or with '/' or spaces reaching the nft ruleset). ``dnsmasq:options`` are passed
through on purpose (documented as root-equivalent) and are left out of the oracles.
"""

from __future__ import annotations

import copy
import os
import random
import re
import signal
import time
import traceback
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from virtnet.errors import VirtnetError

SLOW_INPUT_S = 2.0
MAX_IFNAME_BYTES = 15
HOSTILE_VALUES = (
    "", " ", "a b", "a/b", "../../etc/passwd", "a\nb", "a\rb", "a\tb", "a\x00b", "a\x1bb",
    "a\x7fb", "'", '"', "a'b", 'a"b', "`id`", "$(id)", ";reboot", "a;b", "a,b", "a#b", "a=b",
    "a\\b", "{}", "}", "a}b", "*", "x" * 16, "x" * 15, "x" * 256, "x" * 5000, "é", "\u202e",
    "\ufeff", "\ud800", "-1", "0", "4294967296", "99999999999999999999", "1e9", "nan",
    "0x10", "::", "::1", "255.255.255.255", "0.0.0.0", "fe80::1%eth0", "10.0.0.1/33",
    "52:54:00:00:00:00", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "yes", "no", "on", "off",
    "vnet0", "lo", "eth0.5", "br-x", "-x", "--help", "\\n", "%s%n", "\u0085", "\u2028",
)
CLI_READ_ONLY_VERBS = ("validate", "format", "dnsmasq-conf", "update", "net-list", "net-info",
                       "net-dumpxml", "net-uuid", "net-name", "net-dhcp-leases", "port-list")
UPDATE_COMMANDS = ("add", "add-first", "add-last", "delete", "modify", "bogus")
UPDATE_SECTIONS = ("ip-dhcp-host", "ip-dhcp-range", "dns-host", "dns-txt", "dns-srv",
                   "portgroup", "forward-interface", "bridge", "nosuch")
UPDATE_SNIPPETS = (
    "<host mac='52:54:00:00:00:{n:02x}' name='{v}' ip='{ip}'/>",
    "<host ip='{ip}'><hostname>{v}</hostname></host>",
    "<txt name='{v}' value='{v}'/>",
    "<srv service='{v}' protocol='tcp' target='{v}' port='1'/>",
    "<range start='{ip}' end='{v}'/>",
    "<portgroup name='{v}'/>",
    "<interface dev='{v}'/>",
    "<host mac='{v}' ip='{ip}'/>",
    "{v}",
)
# dnsmasq and nft end a line at "\n" only (not at U+2028 and the like, as str.splitlines
# would): these are what must never be inside one of their lines.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Hang(Exception):
    """An input took longer than SLOW_INPUT_S."""


@dataclass
class Finding:
    stage: str
    error: str
    input: str

    def short(self) -> str:
        return f"[{self.stage}] {self.error.splitlines()[-1][:200]}"


@dataclass
class Report:
    inputs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        kinds = Counter(f.short() for f in self.findings)
        lines = [f"{self.inputs} inputs in {self.seconds:.1f} s "
                 f"({self.inputs / max(self.seconds, 1e-9):.0f}/s), "
                 f"{len(self.findings)} findings"]
        lines += [f"  {name}: {count}" for name, count in sorted(self.outcomes.items())]
        lines += [f"  finding x{count}: {text}" for text, count in kinds.most_common()]
        return "\n".join(lines)


# --- seeds and mutations -------------------------------------------------------------------


def seed_corpus(count: int, seed: int) -> list[str]:
    """COUNT definitions from the strategies (valid and broken ones), reproducibly."""
    from hypothesis import strategies as st

    from tests.kit.strategies import broken_network_xml, network_xml

    rng = random.Random(seed)
    valid = network_xml(newer_features=True)
    broken = broken_network_xml()
    seeds: list[str] = []
    for index in range(count):
        strategy: st.SearchStrategy[Any] = broken if index % 4 == 3 else valid
        drawn = _draw(strategy, rng.randrange(2**32))
        seeds.append(drawn if isinstance(drawn, str) else drawn.xml)
    return seeds


def _draw(strategy: Any, seed: int) -> Any:
    """One example of STRATEGY, chosen by SEED (hypothesis's find with a seeded random)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed

    found: list[Any] = []

    @hypothesis_seed(seed)
    @settings(max_examples=1, database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def take(value: Any) -> None:
        found.append(value)

    take()
    return found[0]


def hostile(rng: random.Random) -> str:
    value = rng.choice(HOSTILE_VALUES)
    if rng.random() < 0.3:
        value = value + rng.choice(HOSTILE_VALUES)
    if rng.random() < 0.1:
        value = "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(1, 20)))
    return value


def mutate(text: str, rng: random.Random) -> str | bytes:
    """One hostile variant of a definition."""
    choice = rng.random()
    if choice < 0.75:
        try:
            root = ET.fromstring(text)
        except ET.ParseError:
            return text
        elements = list(root.iter())
        for _ in range(rng.randrange(1, 4)):
            element = rng.choice(elements)
            action = rng.random()
            if action < 0.55 and element.attrib:
                name = rng.choice(sorted(element.attrib))
                element.set(name, hostile(rng))
            elif action < 0.75:
                element.text = hostile(rng)
            elif action < 0.85 and element is not root:
                parent = next((p for p in elements if element in list(p)), None)
                if parent is not None:
                    parent.remove(element)
            elif action < 0.95:
                element.append(copy.deepcopy(element) if len(element) < 3 else ET.Element("x"))
            else:
                element.set(hostile(rng).strip() or "attr", hostile(rng))
        try:
            return ET.tostring(root, encoding="unicode")
        except (ValueError, TypeError):
            return text
    data = bytearray(text.encode())
    if choice < 0.85 and data:
        del data[rng.randrange(len(data)):]  # cut
    elif choice < 0.95 and data:
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)  # flip
    else:
        data[rng.randrange(len(data) + 1):0] = b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>&e;"
    return bytes(data)


# --- oracles ------------------------------------------------------------------------------


def _without_passthrough(net: Any) -> bool:
    return not getattr(net, "dnsmasq_options", None)


def check_dnsmasq(net: Any) -> None:
    """Every line of dnsmasq's files is one line as dnsmasq reads it: no control character
    (a newline inside a value would start a new directive), and each conf line is a
    directive (``key`` or ``key=value``) or a comment."""
    from virtnet.render.dnsmasq import render_addnhosts, render_conf, render_hostsfile, needs_dnsmasq

    if not needs_dnsmasq(net):
        return
    conf = render_conf(net)
    for line in conf.split("\n"):
        assert not CONTROL.search(line), f"control character in dnsmasq conf line {line!r}"
        if _without_passthrough(net):
            assert not line or line.startswith("#") \
                or re.fullmatch(r"[a-z][a-z0-9-]*(=.*)?", line), \
                f"not a dnsmasq directive: {line!r}"
    for text in (render_hostsfile(net), render_addnhosts(net)):
        for line in text.split("\n"):
            assert not CONTROL.search(line), f"control character in dnsmasq hosts line {line!r}"


IFNAME_IN_RULE = re.compile(r'[io]ifname "([^"]*)"')


def check_nft(net: Any) -> None:
    """The ruleset has no control character, balanced quotes on every line, and every
    interface name in it is one the kernel could have."""
    from virtnet.render.nft import firewall_needed, render_ruleset

    if not firewall_needed(net):
        return
    ruleset = render_ruleset(net)
    for line in ruleset.split("\n"):
        assert not CONTROL.search(line), f"control character in nft line {line!r}"
        if line.lstrip().startswith("#"):
            continue  # a comment ends at the line's end, whatever it holds
        assert line.count('"') % 2 == 0, f"unbalanced quote in nft line {line!r}"
        for name in IFNAME_IN_RULE.findall(line):
            assert 0 < len(name.encode()) <= MAX_IFNAME_BYTES and "/" not in name \
                and not any(c.isspace() for c in name), f"bad interface name {name!r} in nft"


def check_renderers(net: Any) -> None:
    from virtnet.spec.xml.format import format_network

    format_network(net, inactive=True)
    format_network(net, inactive=False)
    check_dnsmasq(net)
    check_nft(net)


# --- one input ------------------------------------------------------------------------------


def _alarm(signum: int, frame: Any) -> None:
    raise Hang(f"input took longer than {SLOW_INPUT_S} s")


def run_definition(data: str | bytes, rng: random.Random) -> str:
    """One definition through every stage; returns the outcome. Raises on a finding."""
    from virtnet.spec.update import apply_update
    from virtnet.spec.validate import validate
    from virtnet.spec.xml.parse import parse_network

    from virtnet.spec.defaults import DefaultSources, assign_defaults

    try:
        net = parse_network(data, source="fuzz")
    except VirtnetError:
        return "refused at parse"
    if validate(net):
        return "refused at validate"
    sources = DefaultSources(new_uuid=lambda: uuid.UUID(int=rng.getrandbits(128)),
                             random_bytes=rng.randbytes)
    try:
        # what net-define adds (bridge name, MAC, uuid) before anything is rendered
        assign_defaults(net, other_bridges=(), link_in_use=lambda name: False,
                        sources=sources)
        check_renderers(net)
    except VirtnetError:
        return "refused at render"
    snippet = rng.choice(UPDATE_SNIPPETS).format(
        n=rng.randrange(256), v=_xml_attr(hostile(rng)), ip=f"10.0.0.{rng.randrange(256)}")
    try:
        updated = apply_update(net, rng.choice(UPDATE_COMMANDS), rng.choice(UPDATE_SECTIONS),
                               snippet, rng.choice((-1, 0, 1, 7)))
    except VirtnetError:
        return "accepted; update refused"
    if validate(updated):
        return "accepted; update invalid"
    try:
        check_renderers(updated)
    except VirtnetError:
        return "accepted; update refused at render"
    return "accepted; update accepted"


def _xml_attr(text: str) -> str:
    # half the time escaped (the value reaches the model), half raw (the parser must cope)
    if len(text) % 2:
        return text
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")


def run_command_line(argv: list[str], state_dir: str) -> str:
    """A command line through the client's splitter, then click (read-only verbs only)."""
    import click

    from virtnet.face.cli import main
    from virtnet.face.fastcli import split_command_line

    split_command_line(argv)
    if not argv or argv[0] not in CLI_READ_ONLY_VERBS:
        return "split only"
    try:
        main.main(["--state-dir", state_dir, *argv], standalone_mode=False,
                  prog_name="virtnet")
    except click.exceptions.ClickException:
        return "usage error"
    except click.exceptions.Exit:
        return "exit"
    except SystemExit as exc:
        return f"exit {exc.code}"
    except VirtnetError:
        return "refused"
    return "ok"


def hostile_argv(rng: random.Random, files: list[str]) -> list[str]:
    verb = rng.choice(CLI_READ_ONLY_VERBS + ("net-start", "--netns", "--help", "", "-"))
    argv = [verb]
    for _ in range(rng.randrange(0, 5)):
        argv.append(rng.choice((hostile(rng), rng.choice(files), "--json", "--inactive",
                                "--all", "--mac", "--parent-index", "-1", "--live")))
    # as the kernel hands them over: bytes, decoded like Python decodes sys.argv (a lone
    # surrogate such as U+D800 cannot come from a command line)
    argv = [os.fsdecode(token.encode("utf-8", "surrogatepass")) for token in argv]
    if verb in ("net-start", "--netns"):
        return ["--direct", *argv]  # the splitter sees it; click never runs it
    return argv


# --- the loop -----------------------------------------------------------------------------


def fuzz(count: int, seed: int = 1, seeds: int = 200,
         progress: Callable[[Report], None] | None = None) -> Report:
    """Run COUNT inputs (nine definitions to one command line); return the report."""
    import contextlib
    import io
    import os
    import tempfile

    rng = random.Random(seed)
    corpus = seed_corpus(seeds, seed)
    report = Report()
    begin = time.monotonic()
    previous = signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory(prefix="virtnet-fuzz-") as work:
        files = []
        for index, text in enumerate(corpus[:20]):
            path = os.path.join(work, f"seed{index}.xml")
            with open(path, "w") as handle:
                handle.write(text)
            files.append(path)
        state_dir = os.path.join(work, "state")
        try:
            for number in range(count):
                cli = number % 10 == 9
                if cli:
                    argv = hostile_argv(rng, files)
                    shown = repr(argv)
                else:
                    data = mutate(rng.choice(corpus), rng)
                    shown = data if isinstance(data, str) else repr(data)
                signal.setitimer(signal.ITIMER_REAL, SLOW_INPUT_S)
                try:
                    if cli:
                        with contextlib.redirect_stdout(io.StringIO()), \
                                contextlib.redirect_stderr(io.StringIO()):
                            outcome = "cli: " + run_command_line(argv, state_dir)
                    else:
                        outcome = run_definition(data, rng)
                    report.outcomes[outcome] += 1
                except Hang as exc:
                    report.findings.append(Finding("hang", str(exc), shown))
                except AssertionError as exc:
                    report.findings.append(Finding("oracle", str(exc), shown))
                except Exception:  # noqa: BLE001 - every other exception is a finding
                    report.findings.append(Finding("cli" if cli else "definition",
                                                   traceback.format_exc(), shown))
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                report.inputs += 1
                if progress is not None and report.inputs % 10000 == 0:
                    report.seconds = time.monotonic() - begin
                    progress(report)
        finally:
            signal.signal(signal.SIGALRM, previous)
    report.seconds = time.monotonic() - begin
    return report
