"""Conformance with libvirt 9.0's tests/networkxml2xmltest.c: parse, then format byte for byte.

The case list is read at collection time from the cached corpus's C test driver: every
``DO_TEST*("name"...)`` call in it, with its flags (VIR_NETWORK_XML_INACTIVE) and its expected
result. Nothing of the table is written down here.

Stages, as in the C driver:
- parse: libvirt's virNetworkDefParse. Ours is ``parse_network`` followed by ``validate``
  (libvirt's parser also applies the rules our validator holds). A case expected to fail at
  parse must be refused there, and the refusal must point at an element of the input
  (so it cannot pass because, say, the file is missing);
- format: ``format_network`` with ``inactive`` from the case's flags;
- compare: the text must equal networkxml2xmlout/NAME.xml byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from virtnet.errors import XMLParseError
from virtnet.spec.model import DNSMASQ_NAMESPACE
from tests.kit.corpus import corpus_root
from virtnet.spec.xml.format import format_network
from virtnet.spec.xml.parse import parse_network

TEST_DRIVER = "tests/networkxml2xmltest.c"
IN_DIR = "tests/networkxml2xmlin"
OUT_DIR = "tests/networkxml2xmlout"

# The stage names of the C driver's testCompareNetXML2XMLResult, by enumerator suffix.
STAGES = {"SUCCESS": "success", "FAIL_PARSE": "parse", "FAIL_FORMAT": "format",
          "FAIL_COMPARE": "compare"}


@dataclass(frozen=True)
class XmlCase:
    name: str
    inactive: bool
    fails_at: str  # "success" or the stage that must fail
    root: Path

    @property
    def input(self) -> Path:
        return self.root / IN_DIR / f"{self.name}.xml"

    @property
    def output(self) -> Path:
        return self.root / OUT_DIR / f"{self.name}.xml"


def _macro_table(source: str) -> dict[str, tuple[str, str]]:
    """DO_TEST* macro name -> (flags expression, result suffix), from the #defines that
    expand to DO_TEST_FULL."""
    table: dict[str, tuple[str, str]] = {}
    for match in re.finditer(
        r"#define\s+(DO_TEST\w*)\(([^)]*)\)\s*\\\s*DO_TEST_FULL\(\s*name\s*,\s*([^,]+?)\s*,\s*"
        r"TEST_COMPARE_NET_XML2XML_RESULT_(\w+)\s*\)",
        source,
    ):
        macro, params, flags, result = match.groups()
        table[macro] = ("flags" if "flags" in params else flags, result)
    return table


def _read_cases() -> list[XmlCase]:
    root = corpus_root(fetch=True)
    assert root is not None
    source = (root / TEST_DRIVER).read_text()
    body = source[source.index("mymain(void)"):]
    table = _macro_table(source)
    cases = []
    for match in re.finditer(r"\b(DO_TEST\w*)\(\s*\"([^\"]+)\"\s*(?:,\s*([^)]*?))?\s*\)\s*;",
                             body):
        macro, name, args = match.groups()
        if macro == "DO_TEST_FULL":
            flags, result = (a.strip() for a in args.split(","))
            result = result.removeprefix("TEST_COMPARE_NET_XML2XML_RESULT_")
        else:
            flags, result = table[macro]
            if flags == "flags":
                flags = args or "0"
        cases.append(XmlCase(name=name, inactive="VIR_NETWORK_XML_INACTIVE" in flags,
                             fails_at=STAGES[result], root=root))
    return cases


def _params() -> list:
    try:
        cases = _read_cases()
    except Exception as exc:  # noqa: BLE001 - one clear failing case instead of an error
        return [pytest.param(exc, id="corpus-unavailable")]
    return [
        pytest.param(case, id=f"{case.name}-{'inactive-' if case.inactive else ''}"
                     f"{'ok' if case.fails_at == 'success' else 'fails-at-' + case.fails_at}")
        for case in cases
    ]


CASES = _params()


def _read(path: Path) -> bytes:
    if not path.exists():
        pytest.fail(f"corpus file missing: {path} (libvirt ships some of these as symlinks; "
                    "the corpus cache must contain them)")
    return path.read_bytes()


def _resolves(document: bytes, path: str) -> bool:
    """Whether an error path (an XPath of elements and attributes) selects something in the
    document: the refusal then points into the input, not somewhere else."""
    tree = etree.fromstring(document)
    return bool(tree.getroottree().xpath(path, namespaces={"dnsmasq": DNSMASQ_NAMESPACE}))


def test_case_list_is_complete() -> None:
    """The driver lists cases of every kind we honour; an empty or one-sided table means the
    case extraction broke."""
    cases = [p.values[0] for p in CASES]
    assert all(isinstance(c, XmlCase) for c in cases), cases
    kinds = {c.fails_at for c in cases}
    assert {"success", "parse"} <= kinds
    assert any(c.inactive for c in cases)


@pytest.mark.parametrize("case", CASES)
def test_networkxml2xml(case: XmlCase | Exception) -> None:
    from virtnet.spec.validate import validate

    if isinstance(case, Exception):
        pytest.fail(f"cannot read libvirt's test corpus: {case}")
    document = _read(case.input)

    # stage: parse (parse_network, then the cross-element rules libvirt's parser also has)
    try:
        net = parse_network(document, source=case.input.name)
    except XMLParseError as exc:
        if case.fails_at != "parse":
            pytest.fail(f"stage parse: unexpected refusal: {exc}")
        assert exc.line is not None and exc.path, f"refusal does not say where: {exc}"
        assert _resolves(document, exc.path), f"refusal points outside the input: {exc}"
        return
    problems = validate(net, stage="parse")
    if case.fails_at == "parse":
        assert problems, "stage parse: expected a refusal by parse_network or validate, got none"
        for problem in problems:
            assert _resolves(document, problem.path), f"problem points outside input: {problem}"
        return
    assert not problems, "stage parse (validate): " + "; ".join(map(str, problems))

    # stage: format
    actual = format_network(net, inactive=case.inactive)
    if case.fails_at == "format":
        pytest.fail("stage format: libvirt fails to format this case, we formatted it")

    # stage: compare
    expected = _read(case.output).decode("utf-8")
    if case.fails_at == "compare":
        assert actual != expected, "stage compare: expected a difference"
        return
    assert actual == expected


def _output_files() -> list:
    try:
        root = corpus_root(fetch=True)
    except Exception as exc:  # noqa: BLE001
        return [pytest.param(exc, id="corpus-unavailable")]
    assert root is not None
    return [pytest.param(path, id=path.stem) for path in sorted((root / OUT_DIR).glob("*.xml"))]


@pytest.mark.parametrize("inactive", [True, False], ids=["inactive", "live"])
@pytest.mark.parametrize("path", _output_files())
def test_format_is_idempotent(path: Path | Exception, inactive: bool) -> None:
    """format(parse(format(x))) == format(x) for every expected output of the corpus."""
    if isinstance(path, Exception):
        pytest.fail(f"cannot read libvirt's test corpus: {path}")
    once = format_network(parse_network(path.read_bytes(), source=path.name), inactive=inactive)
    twice = format_network(parse_network(once, source=f"{path.name} (formatted)"),
                           inactive=inactive)
    assert twice == once
