"""Conformance with libvirt 9.0's tests/networkxml2conftest.c: the dnsmasq files.

The case list and each case's dnsmasq capabilities are read, at collection time, from the cached
corpus's C test driver: every ``DO_TEST("name", caps)`` in ``mymain``, and the version string
the fake ``dnsmasq --version`` prints in ``buildCapsCallback`` (the capabilities variable of each
case must be one built by ``buildCaps``). Nothing of the table is written down here.

Like the C driver, the conf is rendered for the directory /var/lib/libvirt/dnsmasq and without a
pid file. Stages: the XML must parse, the files must render, the .conf must equal
networkxml2confdata/NAME.conf line for line (comment lines aside, ours are our own words), and
the hostsfile must equal NAME.hostsfile where that exists and be empty where it does not (the C
driver fails a case whose hostsfile is missing but which has hosts, and the other way round).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from virtnet.paths import LIBVIRT_DNSMASQ_DIR, DnsmasqPaths
from virtnet.render.dnsmasq import DnsmasqCaps, render_conf, render_hostsfile
from tests.kit.corpus import corpus_root
from tests.kit.dnsmasqcaps import caps_from_version_output
from virtnet.spec.xml.parse import parse_network

TEST_DRIVER = "tests/networkxml2conftest.c"
DATA_DIR = "tests/networkxml2confdata"


@dataclass(frozen=True)
class ConfCase:
    name: str
    xml: Path
    conf: Path
    hostsfile: Path  # may not exist: then no hosts are expected
    caps: DnsmasqCaps


def _strip_c_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def read_conf_cases(root: Path) -> list[ConfCase]:
    """The cases of networkxml2conftest.c, in its order, with their capabilities."""
    text = _strip_c_comments((root / TEST_DRIVER).read_text())
    # The fake binary's answer to --version, from which buildCaps() makes the capabilities.
    version = re.search(r'"(Dnsmasq version [^"\\]*)(?:\\n)?"', text)
    if version is None:
        raise ValueError("no fake 'Dnsmasq version' string in the test driver")
    built = caps_from_version_output(version.group(1))
    main_body = text[text.index("mymain"):]
    caps_vars = set(re.findall(r"\b(\w+)\s*=\s*buildCaps\s*\(\s*\)", main_body))
    if not caps_vars:
        raise ValueError("no capabilities built with buildCaps() in mymain")
    cases = []
    data = root / DATA_DIR
    for name, caps_var in re.findall(r'\bDO_TEST\s*\(\s*"([^"]+)"\s*,\s*(\w+)\s*\)', main_body):
        if caps_var not in caps_vars:
            raise ValueError(f"case {name} uses capabilities {caps_var!r} we do not know")
        cases.append(ConfCase(name, data / f"{name}.xml", data / f"{name}.conf",
                              data / f"{name}.hostsfile", built))
    return cases


def _collect() -> tuple[list[ConfCase], str | None]:
    try:
        root = corpus_root(fetch=True)
        assert root is not None
        return read_conf_cases(root), None
    except Exception as exc:  # noqa: BLE001 - any failure becomes one failing test below
        return [], f"cannot read libvirt's dnsmasq conf test table: {exc}"


CASES, COLLECT_ERROR = _collect()


def _without_comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_conf_table_was_read() -> None:
    assert COLLECT_ERROR is None, COLLECT_ERROR
    text = _strip_c_comments((corpus_root() / TEST_DRIVER).read_text())  # type: ignore[operator]
    # every call site (the macro's own #define takes no string literal)
    calls = re.findall(r'\bDO_TEST\s*\(\s*"', text[text.index("mymain"):])
    assert len(CASES) == len(calls) > 0
    assert len({case.name for case in CASES}) == len(CASES)
    assert all(case.xml.exists() and case.conf.exists() for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_conf_case(case: ConfCase) -> None:
    net = parse_network(case.xml.read_bytes(), source=str(case.xml))
    paths = DnsmasqPaths(directory=LIBVIRT_DNSMASQ_DIR)
    conf = render_conf(net, paths, case.caps)
    assert _without_comments(conf) == _without_comments(case.conf.read_text())
    # the file ends with a newline, like libvirt's, so no line is left unterminated
    assert conf.endswith("\n")

    hostsfile = render_hostsfile(net)
    if case.hostsfile.exists():
        assert hostsfile == case.hostsfile.read_text()
    else:
        assert hostsfile == ""
