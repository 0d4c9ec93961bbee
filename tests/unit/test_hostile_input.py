"""Values that reach a command line, a dnsmasq file or an nftables ruleset are proven safe or
refused; and no code in src/ ever runs a shell.

- Interface names (bridge, forward dev, pool interfaces, PFs) longer than 15 bytes, or with
  '/', whitespace, control characters or quotes, are refused at validate: the name is then
  never passed to ``ip``, ``tc`` or an ``iifname "..."`` match.
- Host names and TXT/SRV values with quotes, newlines or control characters are refused or
  round-trip as one line (tests/unit/test_dnsmasq_injection.py has the dnsmasq reader; here
  the values go through the whole define path, parse to renderers).
- The shell lines ``virtnet plan --commands`` prints quote every name: split back with
  shlex, each gives the name as it is.
- No ``shell=True``, ``os.system``, ``os.popen``, ``subprocess.getoutput`` in src/ (an AST
  walk, so a comment or a string does not count and an alias does not escape).
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest

from virtnet.errors import VirtnetError
from tests.kit.fuzz import check_dnsmasq, check_nft
from virtnet.spec.validate import validate
from virtnet.spec.xml.parse import parse_network

SRC = Path(__file__).resolve().parents[2] / "src" / "virtnet"

BAD_IFNAMES = [
    "x" * 16,  # IFNAMSIZ - 1 is the most the kernel takes
    "é" * 8,  # 16 bytes in 8 characters
    "a/b", "a b", "a\tb", " ab", "ab ", "a\x01b", "a\x7fb", ".", "..", "a\nb",
]
SAFE_IFNAMES = ["br0", "x" * 15, "vbr-1_a", "virbr9"]


def escape(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")
            .replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;"))


def accepted(xml: str) -> bool:
    """Whether the definition gets through parse and validate."""
    try:
        net = parse_network(xml, source="test")
    except VirtnetError:
        return False
    return not validate(net)


def bridge_xml(name: str) -> str:
    return (f"<network><name>n</name><forward mode='nat'/><bridge name='{escape(name)}'/>"
            "<ip address='10.5.0.1' prefix='24'/></network>")


def forward_dev_xml(name: str) -> str:
    return (f"<network><name>n</name><forward mode='nat' dev='{escape(name)}'/>"
            "<bridge name='br0'/><ip address='10.5.0.1' prefix='24'/></network>")


def pool_xml(name: str) -> str:
    return (f"<network><name>n</name><forward mode='bridge'>"
            f"<interface dev='{escape(name)}'/></forward></network>")


def pf_xml(name: str) -> str:
    return (f"<network><name>n</name><forward mode='hostdev'>"
            f"<pf dev='{escape(name)}'/></forward></network>")


PLACES = [bridge_xml, forward_dev_xml, pool_xml, pf_xml]


@pytest.mark.parametrize("place", PLACES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name", BAD_IFNAMES, ids=repr)
def test_hostile_interface_names_are_refused(place, name: str) -> None:  # type: ignore[no-untyped-def]
    assert not accepted(place(name))


@pytest.mark.parametrize("place", PLACES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name", SAFE_IFNAMES)
def test_plain_interface_names_are_accepted(place, name: str) -> None:  # type: ignore[no-untyped-def]
    assert accepted(place(name))


QUOTED = ["a'b", 'a"b', "a\nb", "a\rb", "a\x00b", "a\x1bb", "a;b", "a b", "a,b", "a#b",
          "a\\b", "a=b", "$(id)", "`id`"]


def dns_network(host_name: str, txt_name: str, txt_value: str, dhcp_name: str) -> str:
    return f"""<network><name>n</name><forward mode='nat'/><bridge name='br0'/>
  <dns>
    <txt name='{escape(txt_name)}' value='{escape(txt_value)}'/>
    <host ip='10.5.0.7'><hostname>{escape(host_name)}</hostname></host>
  </dns>
  <ip address='10.5.0.1' prefix='24'><dhcp><range start='10.5.0.10' end='10.5.0.20'/>
    <host mac='52:54:00:00:00:01' name='{escape(dhcp_name)}' ip='10.5.0.11'/></dhcp></ip>
</network>"""


@pytest.mark.parametrize("value", QUOTED, ids=repr)
@pytest.mark.parametrize("where", ["dns host", "txt name", "txt value", "dhcp host name"])
def test_names_and_txt_with_quotes_and_newlines_are_safe_or_refused(where: str,
                                                                    value: str) -> None:
    fields = {"dns host": "h", "txt name": "t", "txt value": "v", "dhcp host name": "d"}
    fields[where] = value
    xml = dns_network(fields["dns host"], fields["txt name"], fields["txt value"],
                      fields["dhcp host name"])
    try:
        net = parse_network(xml, source="test")
        problems = validate(net)
    except VirtnetError:
        return  # refused at parse
    if problems:
        return  # refused at validate
    try:
        check_dnsmasq(net)  # accepted: every line stays one line, no control character
        check_nft(net)
    except VirtnetError:
        return  # refused by the renderer itself
    assert "\n" not in value and "\r" not in value and "\x00" not in value, \
        f"{where} {value!r} was accepted with a line break or NUL"


def test_command_lines_quote_every_name() -> None:
    """plan --commands: each name comes back whole from shlex.split."""
    from virtnet.spec.defaults import DefaultSources, assign_defaults
    from virtnet.plan.drivers import driver_for
    from virtnet.facts import HostFacts
    from virtnet.paths import StatePaths

    net = parse_network(bridge_xml("br-x_1"), source="test")
    assert not validate(net)
    assign_defaults(net, other_bridges=(), link_in_use=lambda name: False,
                    sources=DefaultSources())
    state = StatePaths.under(Path("/nonexistent/it's a dir"))
    plan = driver_for(net).plan_start(net, HostFacts(), state)
    lines = plan.commands()
    assert lines
    for line in lines:
        words = shlex.split(line.split("<<")[0])  # heredoc bodies are data, not words
        if "/nonexistent/it's a dir" in line:
            assert any("/nonexistent/it's a dir" in word for word in words), line


# --- no shell -----------------------------------------------------------------------------


# No function may use a shell; net-edit splits $EDITOR with shlex and runs it without one.
ALLOWED_SHELL: set[tuple[str, str]] = set()
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
               ("subprocess", "getstatusoutput"), ("os", "execlp"), ("os", "spawnlp")}


def shell_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                found.append(f"line {node.lineno}: shell={ast.unparse(keyword.value)}")
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if (func.value.id, func.attr) in SHELL_CALLS:
                found.append(f"line {node.lineno}: {func.value.id}.{func.attr}")
    for node in ast.walk(tree):  # from os import system as run
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "subprocess"):
            for alias in node.names:
                if (node.module, alias.name) in SHELL_CALLS:
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
    return found


def test_the_checker_sees_shell_uses() -> None:
    sample = ("import os, subprocess\nsubprocess.run('x', shell=True)\nos.system('x')\n"
              "from os import popen\nsubprocess.run(['x'], shell=False)\n")
    assert len(shell_uses(ast.parse(sample))) == 3


def functions_with_shell(path: Path) -> dict[str, list[str]]:
    """Shell uses of PATH by the outermost function holding them ("<module>" outside any)."""
    tree = ast.parse(path.read_text(), str(path))
    found: dict[str, list[str]] = {}
    for node in tree.body:
        name = node.name if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef |
                                       ast.ClassDef) else "<module>"
        if isinstance(node, ast.ClassDef):  # methods count as functions of their own
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    uses = shell_uses(item)
                    if uses:
                        found.setdefault(item.name, []).extend(uses)
            continue
        uses = shell_uses(node)
        if uses:
            found.setdefault(name, []).extend(uses)
    return found


def test_no_shell_in_src() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30
    offenders = {}
    for path in files:
        for function, uses in functions_with_shell(path).items():
            if (str(path.relative_to(SRC)), function) not in ALLOWED_SHELL:
                offenders[f"{path.relative_to(SRC)}:{function}"] = uses
    assert offenders == {}

