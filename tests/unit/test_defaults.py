"""virtnet.spec.defaults: what define assigns (uuid, bridge name, bridge MAC), as libvirt does."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtnet.spec.defaults import (
    MAX_BRIDGE_ID,
    DefaultSources,
    assign_defaults,
    bridge_template,
    find_free_bridge,
    generate_mac,
    link_exists,
)
from virtnet.errors import VirtnetError
from virtnet.spec.model import Bridge, Forward, ForwardMode, Network


def fixed_sources(seed: int = 7) -> DefaultSources:
    counter = itertools.count(seed)
    return DefaultSources(
        new_uuid=lambda: uuid.UUID(int=next(counter)),
        random_bytes=lambda n: bytes([0xAB, 0xCD, 0xEF][:n]),
    )


def network(mode: ForwardMode | None, bridge: str | None = None, **kw: object) -> Network:
    forward = Forward(mode=mode) if mode is not None else None
    return Network(
        name="n", forward=forward, bridge=Bridge(name=bridge) if bridge else None, **kw
    )


def no_links(_name: str) -> bool:
    return False


@pytest.mark.parametrize("mode", [None, ForwardMode.NAT, ForwardMode.ROUTE, ForwardMode.OPEN])
def test_own_bridge_modes_get_uuid_bridge_and_mac(mode: ForwardMode | None) -> None:
    net = assign_defaults(
        network(mode), other_bridges=[], link_in_use=no_links, sources=fixed_sources()
    )
    assert net.uuid == str(uuid.UUID(int=7))
    assert net.bridge is not None and net.bridge.name == "virbr0"
    assert (net.bridge.stp, net.bridge.delay) == (True, 0)
    assert net.mac == "52:54:00:ab:cd:ef"


@pytest.mark.parametrize(
    "mode", [ForwardMode.BRIDGE, ForwardMode.PRIVATE, ForwardMode.VEPA, ForwardMode.HOSTDEV]
)
def test_other_modes_get_only_a_uuid(mode: ForwardMode) -> None:
    net = assign_defaults(
        network(mode, bridge="br0" if mode is ForwardMode.BRIDGE else None),
        other_bridges=["br0"],  # a host bridge may be shared by several networks
        link_in_use=no_links,
        sources=fixed_sources(),
    )
    assert net.uuid is not None and net.mac is None
    assert net.bridge_name == ("br0" if mode is ForwardMode.BRIDGE else None)


def test_given_values_are_kept() -> None:
    net = network(None, bridge="mybr", uuid="11111111-2222-3333-4444-555555555555",
                  mac="52:54:00:01:02:03")
    assign_defaults(net, other_bridges=["virbr0"], link_in_use=no_links, sources=fixed_sources())
    assert (net.uuid, net.bridge_name, net.mac) == (
        "11111111-2222-3333-4444-555555555555", "mybr", "52:54:00:01:02:03")


def test_allocation_skips_other_networks_and_host_links() -> None:
    host = {"virbr1", "virbr3"}
    net = assign_defaults(
        network(ForwardMode.NAT), other_bridges=["virbr0", "virbr2"],
        link_in_use=host.__contains__, sources=fixed_sources(),
    )
    assert net.bridge_name == "virbr4"


def test_template_with_one_percent_d_is_allocated_from() -> None:
    net = assign_defaults(
        network(None, bridge="lab%d"), other_bridges=["lab0"], link_in_use=no_links,
        sources=fixed_sources(),
    )
    assert net.bridge_name == "lab1"


@pytest.mark.parametrize(
    ("name", "template"),
    [(None, "virbr%d"), ("br%d", "br%d"), ("br%dx", "br%dx"), ("br0", None),
     ("br%s", None), ("br%d%d", None), ("br%%d", None), ("br%", None)],
)
def test_bridge_template_rule(name: str | None, template: str | None) -> None:
    assert bridge_template(name) == template


def test_explicit_bridge_used_by_another_network_is_refused() -> None:
    with pytest.raises(VirtnetError, match=r"bridge name 'virbr0' already in use\."):
        assign_defaults(network(None, bridge="virbr0"), other_bridges=["virbr0"],
                        link_in_use=no_links, sources=fixed_sources())


def test_allocation_gives_up_after_the_last_id() -> None:
    assert find_free_bridge("b%d", lambda n: n != f"b{MAX_BRIDGE_ID}") == f"b{MAX_BRIDGE_ID}"
    with pytest.raises(VirtnetError, match=f"max id {MAX_BRIDGE_ID}"):
        find_free_bridge("b%d", lambda n: True)


def test_random_macs_have_the_prefix_and_vary() -> None:
    macs = {generate_mac() for _ in range(20)}
    assert all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac) for mac in macs)
    assert len(macs) > 1


def test_random_uuids_are_version_4() -> None:
    net = assign_defaults(network(ForwardMode.BRIDGE, bridge="br0"), other_bridges=[])
    assert net.uuid is not None and uuid.UUID(net.uuid).version == 4


def test_link_exists_sees_loopback_only() -> None:
    assert link_exists("lo")
    assert not link_exists("vnt-no-such-link")


# --- against libvirt: what define adds ---------------------------------------------------

DEFINE_CASES = {
    "isolated": "<network><name>d-iso</name>"
                "<ip address='10.70.1.1' netmask='255.255.255.0'/></network>",
    "nat-template": "<network><name>d-nat</name><forward mode='nat'/><bridge name='vt%dx'/>"
                    "<ip address='10.70.2.1' prefix='24'/></network>",
    "open-stp-off": "<network><name>d-open</name><forward mode='open'/>"
                    "<bridge stp='off' delay='5'/><ip address='10.70.3.1' prefix='24'/></network>",
    "host-bridge": "<network><name>d-hb</name><forward mode='bridge'/><bridge name='br0'/>"
                   "</network>",
}


def _placeholders(xml: str) -> str:
    """The dump with the generated values replaced (they are random on both sides)."""
    xml = re.sub(r"<uuid>[0-9a-f-]{36}</uuid>", "<uuid>UUID</uuid>", xml)
    return re.sub(r"<mac address='52:54:00(:[0-9a-f]{2}){3}'/>", "<mac address='MAC'/>", xml)


@pytest.fixture(scope="module")
def libvirt() -> Iterator[Any]:
    from tests.kit.libvirtd import LibvirtdInNetns, libvirtd_unavailable_reason

    reason = libvirtd_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with LibvirtdInNetns() as lv:
        yield lv


@pytest.mark.libvirt
@pytest.mark.netns
@pytest.mark.parametrize("case", list(DEFINE_CASES))
def test_define_adds_what_libvirt_adds(libvirt: Any, tmp_path: Path, case: str) -> None:
    from virtnet.service.engine import Engine
    from virtnet.paths import StatePaths

    xml = DEFINE_CASES[case]
    path = tmp_path / f"{case}.xml"
    path.write_text(xml)
    name = re.search(r"<name>(.*?)</name>", xml).group(1)  # type: ignore[union-attr]
    try:
        defined = libvirt.virsh("net-define", str(path))
        assert defined.returncode == 0, defined.stderr
        theirs = libvirt.virsh("net-dumpxml", "--inactive", name).stdout
    finally:
        libvirt.forget(name)
    # No other network and no links in libvirt's fresh namespace: ours sees none either.
    engine = Engine(StatePaths.under(tmp_path / "state"), link_in_use=lambda _name: False)
    engine.define(xml, str(path))
    mine = engine.dumpxml(name, inactive=True)
    assert _placeholders(mine) + "\n" == _placeholders(theirs)
