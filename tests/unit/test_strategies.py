"""Unit tests of virtnet.testing.strategies, against our own parser and validator (the
differential test checks the same strategies against a live libvirtd).

A valid definition must parse and validate cleanly; a broken one must be refused at parse or
validate time. Derandomized, so every run checks the same examples.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings

from virtnet.errors import XMLParseError
from virtnet.testing.strategies import (
    DEFECT_NAMES,
    BrokenNetwork,
    broken_network_xml,
    network_trees,
    network_xml,
)
from virtnet.validate import validate
from virtnet.xml.parse import parse_network

_SETTINGS = settings(derandomize=True, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow])


@settings(_SETTINGS, max_examples=150)
@given(xml=network_xml())
def test_valid_definitions_parse_and_validate(xml: str) -> None:
    problems = validate(parse_network(xml, source="generated.xml"))
    assert problems == [], f"{[str(p) for p in problems]}\n{xml}"


@settings(_SETTINGS, max_examples=60)
@given(xml=network_xml(newer_features=True, pci_pools=True))
def test_newer_feature_definitions_are_valid_for_us(xml: str) -> None:
    problems = validate(parse_network(xml, source="generated.xml"))
    assert problems == [], f"{[str(p) for p in problems]}\n{xml}"


@settings(_SETTINGS, max_examples=150)
@given(broken=broken_network_xml())
def test_broken_definitions_are_refused(broken: BrokenNetwork) -> None:
    assert broken.defect in DEFECT_NAMES
    try:
        net = parse_network(broken.xml, source="broken.xml")
    except XMLParseError:
        return  # refused at parse time
    assert validate(net), f"defect '{broken.defect}' was accepted:\n{broken.xml}"


def test_valid_strategy_covers_every_forward_mode_and_the_main_elements() -> None:
    modes: Counter[str] = Counter()
    elements: Counter[str] = Counter()

    @settings(_SETTINGS, max_examples=200)
    @given(root=network_trees())
    def collect(root) -> None:  # type: ignore[no-untyped-def]
        forward = root.find("forward")
        modes["none" if forward is None else forward.get("mode") or "nat"] += 1
        for path in ("ip/dhcp/range", "ip/dhcp/host", "route", "dns", "portgroup", "bandwidth",
                     "vlan", "virtualport", "mtu", "domain", "mac", "bridge"):
            if root.find(path) is not None:
                elements[path] += 1

    collect()
    assert set(modes) == {"none", "nat", "route", "open", "bridge", "private", "vepa",
                          "passthrough", "hostdev"}, modes
    missing = {"ip/dhcp/range", "ip/dhcp/host", "route", "dns", "portgroup", "bandwidth",
               "vlan", "virtualport", "mtu", "domain", "mac", "bridge"} - set(elements)
    assert not missing, elements


def test_broken_strategy_uses_many_defects() -> None:
    seen: set[str] = set()

    @settings(_SETTINGS, max_examples=200)
    @given(broken=broken_network_xml())
    def collect(broken: BrokenNetwork) -> None:
        seen.add(broken.defect)

    collect()
    assert len(seen) >= len(DEFECT_NAMES) * 2 // 3, sorted(set(DEFECT_NAMES) - seen)

