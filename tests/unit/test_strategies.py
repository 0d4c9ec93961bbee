"""Unit tests of tests.kit.strategies, against our own parser and validator (the
differential test checks the same strategies against a live libvirtd).

A valid definition must parse and validate cleanly, in every mode; a broken one must be refused
at parse or validate time, for every kind of defect. Derandomized, so a run is repeatable.
Hypothesis biases generation with constants found in the modules loaded in the session, so
coverage is asserted per mode and per defect (with the strategies' own restriction
parameters), never by counting what one unrestricted run happened to draw.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings

from virtnet.errors import XMLParseError
from tests.kit.strategies import (
    ALL_MODES,
    DEFECT_NAMES,
    BrokenNetwork,
    broken_network_xml,
    network_trees,
    network_xml,
)
from virtnet.spec.validate import validate
from virtnet.spec.xml.parse import parse_network

_SETTINGS = settings(derandomize=True, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow])
# find(): "some example has it", searched for within a bound, without shrinking
_FIND = settings(derandomize=True, database=None, max_examples=1000, deadline=None,
                 phases=[Phase.generate])


def _assert_valid(xml: str) -> None:
    problems = validate(parse_network(xml, source="generated.xml"))
    assert problems == [], f"{[str(p) for p in problems]}\n{xml}"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_valid_definitions_of_each_mode_parse_and_validate(mode: str) -> None:
    @settings(_SETTINGS, max_examples=25)
    @given(xml=network_xml(modes=(mode,)))
    def check(xml: str) -> None:
        _assert_valid(xml)

    check()


@settings(_SETTINGS, max_examples=60)
@given(xml=network_xml(newer_features=True, pci_pools=True))
def test_newer_feature_definitions_are_valid_for_us(xml: str) -> None:
    _assert_valid(xml)


@pytest.mark.parametrize("defect", DEFECT_NAMES)
def test_each_defect_is_refused(defect: str) -> None:
    @settings(_SETTINGS, max_examples=8)
    @given(broken=broken_network_xml(defects=(defect,)))
    def check(broken: BrokenNetwork) -> None:
        assert broken.defect == defect
        try:
            net = parse_network(broken.xml, source="broken.xml")
        except XMLParseError:
            return  # refused at parse time
        assert validate(net), f"defect '{defect}' was accepted:\n{broken.xml}"

    check()


@pytest.mark.parametrize(
    "mode, path",
    [("nat", "ip/dhcp/range"), ("nat", "ip/dhcp/host"), ("route", "ip/dhcp/range/lease"),
     ("nat", "ip/tftp"), ("nat", "ip/dhcp/bootp"), ("route", "route"), ("none", "dns/host"),
     ("open", "dns/srv"), ("nat", "dns/txt"), ("hostbridge", "dns/forwarder"),
     ("nat", "domain"), ("none", "portgroup/bandwidth"), ("hostbridge", "bandwidth"),
     ("hostbridge", "portgroup/vlan"), ("hostdev", "vlan"), ("passthrough", "vlan"),
     ("vepa", "virtualport"), ("hostbridge", "virtualport"), ("route", "mtu"), ("nat", "mac"),
     ("none", "bridge"), ("nat", "forward/nat"), ("private", "forward/interface"),
     ("vepa", "forward/pf"), ("hostdev", "forward/pf"), ("open", "port"),
     ("nat", "ip[@family='ipv6']/dhcp/host")],
)
def test_valid_strategy_produces_element(mode: str, path: str) -> None:
    found = find(network_trees(modes=(mode,)), lambda root: root.find(path) is not None,
                 settings=_FIND)
    assert found.find(path) is not None


def test_unrestricted_strategy_draws_several_modes() -> None:
    def mode_of(root: ET.Element) -> str:
        forward = root.find("forward")
        return "none" if forward is None else forward.get("mode") or "nat"

    for mode in ("none", "nat", "bridge", "hostdev"):
        found = find(network_trees(), lambda root, m=mode: mode_of(root) == m, settings=_FIND)
        assert mode_of(found) == mode


def test_unknown_mode_or_defect_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown tree modes"):
        find(network_trees(modes=("bogus",)), lambda root: True, settings=_FIND)
    with pytest.raises(ValueError, match="no known defect"):
        find(broken_network_xml(defects=("bogus",)), lambda broken: True, settings=_FIND)
