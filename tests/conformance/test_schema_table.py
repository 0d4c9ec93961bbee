"""virtnet's table of Network XML elements and attributes (virtnet.spec.xml.schema) against libvirt
9.0's own schema, read at test time from the fetched source (src/conf/schemas/network.rng and
the networkcommon.rng and basictypes.rng it includes).

The schema is a RELAX NG grammar. Walking it from its start pattern, through every ref,
choice, group and interleave, gives what the table states: for each element path from
<network>, the attributes and child elements it may have. Both must be the same set of facts,
apart from the newer libvirt additions virtnet accepts (virtnet.spec.xml.schema.NEWER). And none of
libvirt's own test definitions may have an element or attribute the table does not know.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from tests.kit.corpus import corpus_root
from virtnet.spec.xml.parse import parse_document
from virtnet.spec.xml.schema import NEWER, known_names, unknown_items

RNG = "{http://relaxng.org/ns/structure/1.0}"
SCHEMA_DIR = "src/conf/schemas"
# patterns that name no element or attribute and hold none
LEAVES = {"data", "value", "text", "empty", "param", "notAllowed", "except", "name",
          "anyName", "nsName"}
# patterns that only combine others
COMBINATORS = {"group", "interleave", "choice", "optional", "zeroOrMore", "oneOrMore", "mixed",
               "list", "define", "start"}


class Grammar:
    """The defines of a schema file and the files it includes."""

    def __init__(self, path: Path) -> None:
        self.defines: dict[str, list[etree._Element]] = {}
        self.start: etree._Element | None = None
        self._load(path, set())

    def _load(self, path: Path, loaded: set[Path]) -> None:
        loaded.add(path)
        root = etree.parse(str(path)).getroot()
        assert root.tag == RNG + "grammar", path
        for node in root:
            if node.tag == RNG + "include":
                included = path.parent / node.get("href")
                if included not in loaded:
                    self._load(included, loaded)
            elif node.tag == RNG + "define":
                self.defines.setdefault(node.get("name"), []).append(node)
            elif node.tag == RNG + "start" and self.start is None:
                self.start = node

    def facts(self) -> set[str]:
        """'network/forward/@mode', 'network/forward/nat' ...; 'PATH/*' where any element
        may appear (foreign contents)."""
        found: set[str] = set()
        assert self.start is not None
        self._walk(self.start, "", "", found, frozenset())
        return found

    def _walk(self, pattern: etree._Element, path: str, ns: str, found: set[str],
              active: frozenset[tuple[str, str]]) -> None:
        for node in pattern:
            if not isinstance(node.tag, str) or not node.tag.startswith(RNG):
                continue  # a comment, or an annotation from another vocabulary
            kind = node.tag[len(RNG):]
            inner_ns = node.get("ns", ns)
            if kind == "element":
                name = _name_of(node, inner_ns)
                if name is None:  # anyName / nsName: another application's elements
                    found.add(f"{path}/*")
                    continue
                inner = f"{path}/{name}" if path else name
                found.add(inner)
                self._walk(node, inner, inner_ns, found, active)
            elif kind == "attribute":
                # attributes take no namespace unless the pattern gives one itself
                name = _name_of(node, node.get("ns", ""))
                found.add(f"{path}/@{name if name is not None else '*'}")
            elif kind == "ref":
                key = (path, node.get("name"))
                if key in active:
                    continue  # a recursive define, already being walked at this path
                for define in self.defines[node.get("name")]:
                    self._walk(define, path, ns, found, active | {key})
            elif kind in COMBINATORS:
                self._walk(node, path, inner_ns, found, active)
            elif kind not in LEAVES:
                raise AssertionError(f"RELAX NG pattern <{kind}> is not handled by this test")


def _name_of(node: etree._Element, ns: str) -> str | None:
    """The qualified name an element or attribute pattern gives, None for a wildcard."""
    name = node.get("name")
    if name is None:
        child = node.find(RNG + "name")
        if child is None:
            return None
        name = (child.text or "").strip()
        ns = child.get("ns", ns)
    if ":" in name:
        raise AssertionError(f"prefixed name {name!r} is not handled by this test")
    return f"{{{ns}}}{name}" if ns else name


@pytest.fixture(scope="module")
def libvirt_facts(libvirt_corpus: Path) -> set[str]:
    schema = libvirt_corpus / SCHEMA_DIR / "network.rng"
    assert schema.exists(), f"{schema} is missing from the corpus cache"
    return Grammar(schema).facts()


def test_the_table_states_exactly_libvirts_schema(libvirt_facts: set[str]) -> None:
    ours = known_names() - NEWER
    missing = sorted(libvirt_facts - ours)
    extra = sorted(ours - libvirt_facts)
    assert not missing, f"in libvirt's schema, not in virtnet's table: {missing}"
    assert not extra, f"in virtnet's table, not in libvirt 9.0's schema (nor NEWER): {extra}"


def test_the_newer_additions_are_new(libvirt_facts: set[str]) -> None:
    assert NEWER <= known_names()
    assert not NEWER & libvirt_facts, "libvirt 9.0 has these already: not newer"


def test_metadata_contents_are_foreign_in_both(libvirt_facts: set[str]) -> None:
    assert "network/metadata/*" in libvirt_facts
    assert "network/metadata/*" in known_names()


def _corpus_definitions() -> Iterator[Path]:
    root = corpus_root(fetch=True)
    assert root is not None
    for folder in ("networkxml2xmlin", "networkxml2xmlout", "networkxml2confdata"):
        yield from sorted((root / "tests" / folder).glob("*.xml"))


def _corpus_ids() -> list[str]:
    try:
        return [f"{path.parent.name}/{path.name}" for path in _corpus_definitions()]
    except Exception:  # noqa: BLE001 - no corpus: the fixture test below reports why
        return []


@pytest.mark.parametrize("case", _corpus_ids())
def test_libvirts_own_definitions_have_nothing_unknown(libvirt_corpus: Path, case: str) -> None:
    path = libvirt_corpus / "tests" / case
    items = unknown_items(parse_document(path.read_bytes(), str(path)), str(path))
    assert [str(item) for item in items] == []


def test_the_corpus_was_found(libvirt_corpus: Path) -> None:
    assert len(list((libvirt_corpus / "tests" / "networkxml2xmlin").glob("*.xml"))) > 40
