"""virtnet.service.engine without touching the host: definitions, lookups, listing, reconciliation of
status records with the kernel, net-update of the persistent config, edit and DHCP leases.

Starting and stopping networks needs a namespace: see tests/netns/test_cli_network.py.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import stat
import time
import uuid
from pathlib import Path

import pytest

from virtnet.spec.defaults import DefaultSources
from virtnet.errors import InvalidOperationError, NotFoundError
from virtnet.service.engine import Engine
from virtnet.errors import ValidationError, VirtnetError
from virtnet.store.leases import lease_file
from virtnet.paths import StatePaths
from virtnet.store.store import NetworkStatus
from virtnet.spec.xml.parse import parse_network

NOW = 1_800_000_000.0


def isolated_xml(name: str, subnet: int = 50, extra: str = "", bridge: str = "") -> str:
    bridge_el = f"<bridge name='{bridge}'/>" if bridge else ""
    return (
        f"<network><name>{name}</name>{extra}{bridge_el}"
        f"<ip address='192.168.{subnet}.1' netmask='255.255.255.0'><dhcp>"
        f"<range start='192.168.{subnet}.10' end='192.168.{subnet}.20'/>"
        f"<host mac='52:54:00:11:22:33' name='g1' ip='192.168.{subnet}.5'/>"
        "</dhcp></ip>"
        "<ip family='ipv6' address='fd00:50::1' prefix='64'><dhcp>"
        "<range start='fd00:50::10' end='fd00:50::20'/></dhcp></ip>"
        "</network>"
    )


def make_engine(root: Path, links: frozenset[str] = frozenset()) -> Engine:
    counter = itertools.count(1)
    sources = DefaultSources(
        new_uuid=lambda: uuid.UUID(int=next(counter)),
        random_bytes=lambda n: bytes(range(1, n + 1)),
    )
    return Engine(
        StatePaths.under(root), clock=lambda: NOW, sources=sources,
        link_in_use=links.__contains__, lock_timeout=5,
    )


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return make_engine(tmp_path)


def mark_active(engine: Engine, name: str, xml: str | None = None, **kw: object) -> NetworkStatus:
    """A status record as a successful start writes it (without touching the host)."""
    if xml is None:
        xml = engine.dumpxml(name, inactive=True)
    net = parse_network(xml)
    status = NetworkStatus(name=name, uuid=net.uuid or "", bridge=net.bridge_name,
                           live_xml=xml, started_at=NOW, **kw)  # type: ignore[arg-type]
    engine.store.write_status(status)
    return status


# --- define -----------------------------------------------------------------------------


def test_define_assigns_libvirts_defaults_and_saves_the_inactive_xml(engine: Engine) -> None:
    net = engine.define(isolated_xml("n1"), "n1.xml")
    assert net.uuid == str(uuid.UUID(int=1))
    assert net.bridge_name == "virbr0" and net.mac == "52:54:00:01:02:03"
    path = engine.paths.definition("n1")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = parse_network(path.read_bytes())
    assert (saved.uuid, saved.bridge_name, saved.mac) == (net.uuid, "virbr0", net.mac)
    assert engine.dumpxml("n1", inactive=True) == path.read_text()


def test_second_network_gets_the_next_free_bridge(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, links=frozenset({"virbr1"}))
    engine.define(isolated_xml("a", 50), "a.xml")
    assert engine.define(isolated_xml("b", 51), "b.xml").bridge_name == "virbr2"


def test_invalid_definition_is_refused_and_nothing_saved(engine: Engine) -> None:
    bad = isolated_xml("n1").replace("192.168.50.20", "192.168.51.20")  # range outside subnet
    with pytest.raises(ValidationError):
        engine.define(bad, "bad.xml")
    assert engine.store.defined_names() == []


def test_same_name_new_uuid_is_refused_like_libvirt(engine: Engine) -> None:
    first = engine.define(isolated_xml("n1"), "n1.xml")
    with pytest.raises(VirtnetError, match=rf"network 'n1' already exists with uuid {first.uuid}"):
        engine.define(isolated_xml("n1"), "again.xml")


def test_same_uuid_other_name_is_refused_like_libvirt(engine: Engine) -> None:
    first = engine.define(isolated_xml("n1"), "n1.xml")
    clash = isolated_xml("n2", 51, extra=f"<uuid>{first.uuid}</uuid>")
    with pytest.raises(VirtnetError,
                       match=rf"network 'n1' is already defined with uuid {first.uuid}"):
        engine.define(clash, "n2.xml")


def test_redefine_with_same_name_and_uuid_replaces_and_keeps_bridge(engine: Engine) -> None:
    first = engine.define(isolated_xml("n1"), "n1.xml")
    changed = isolated_xml("n1", 60, extra=f"<uuid>{first.uuid}</uuid>")
    second = engine.define(changed, "n1.xml")
    assert second.bridge_name == first.bridge_name == "virbr0"
    assert "192.168.60.1" in engine.dumpxml("n1", inactive=True)


def test_explicit_bridge_of_another_network_is_refused(engine: Engine) -> None:
    engine.define(isolated_xml("n1"), "n1.xml")
    with pytest.raises(VirtnetError, match=r"bridge name 'virbr0' already in use"):
        engine.define(isolated_xml("n2", 51, bridge="virbr0"), "n2.xml")


def test_live_bridge_of_a_transient_network_counts_as_used(engine: Engine) -> None:
    xml = isolated_xml("t", extra=f"<uuid>{uuid.UUID(int=99)}</uuid>", bridge="virbr0")
    mark_active(engine, "t", xml)
    assert engine.define(isolated_xml("n1", 51), "n1.xml").bridge_name == "virbr1"


def test_concurrent_defines_get_distinct_bridges(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_define_one, args=(str(tmp_path), i)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    engine = Engine(StatePaths.under(tmp_path))
    bridges = [row["bridge"] for row in engine.list_networks(all=True)]
    assert len(bridges) == 4 and len(set(bridges)) == 4


def _define_one(root: str, index: int) -> None:
    engine = Engine(StatePaths.under(Path(root)), link_in_use=lambda name: False)
    engine.define(isolated_xml(f"c{index}", 50 + index), f"c{index}.xml")


# --- undefine, lookups ------------------------------------------------------------------


def test_undefine_removes_definition_and_autostart(engine: Engine) -> None:
    engine.define(isolated_xml("n1"), "n1.xml")
    engine.set_autostart("n1", True)
    engine.undefine("n1")
    assert engine.store.defined_names() == []
    assert not engine.paths.autostart_link("n1").is_symlink()
    with pytest.raises(NotFoundError, match="no network with matching name 'n1'"):
        engine.info("n1")


def test_undefine_of_an_active_network_leaves_it_running_as_transient(engine: Engine) -> None:
    engine.define(isolated_xml("n1"), "n1.xml")
    mark_active(engine, "n1")
    engine.undefine("n1")
    info = engine.info("n1")
    assert info["active"] and not info["persistent"]
    with pytest.raises(InvalidOperationError, match="can't undefine transient network"):
        engine.undefine("n1")
    with pytest.raises(InvalidOperationError, match="autostart for transient network"):
        engine.set_autostart("n1", True)


def test_lookup_by_uuid_and_name(engine: Engine) -> None:
    net = engine.define(isolated_xml("n1"), "n1.xml")
    assert net.uuid is not None
    assert engine.lookup("n1").uuid == net.uuid
    assert engine.name_of(net.uuid.upper()) == "n1"
    assert engine.lookup(net.uuid).name == "n1"
    with pytest.raises(NotFoundError, match="no network with matching uuid"):
        engine.name_of(str(uuid.UUID(int=12345)))


def test_destroy_and_start_refusals_need_no_host(engine: Engine) -> None:
    engine.define(isolated_xml("n1"), "n1.xml")
    with pytest.raises(InvalidOperationError, match="network 'n1' is not active"):
        engine.destroy("n1")


# --- listing and reconciliation ------------------------------------------------------


def test_list_filters_like_virsh(engine: Engine) -> None:
    for index, name in enumerate(["b", "A", "c"]):
        engine.define(isolated_xml(name, 50 + index), f"{name}.xml")
    engine.set_autostart("c", True)
    mark_active(engine, "b")
    xml = isolated_xml("t", 60, extra=f"<uuid>{uuid.UUID(int=77)}</uuid>", bridge="virbr9")
    mark_active(engine, "t", xml)

    def names(**kw: bool) -> list[str]:
        return [row["name"] for row in engine.list_networks(**kw)]

    assert names() == ["b", "t"]
    assert names(all=True) == ["A", "b", "c", "t"]  # case-insensitive order, as virsh
    assert names(inactive=True) == ["A", "c"]
    assert names(all=True, autostart=True) == ["c"]
    assert names(all=True, no_autostart=True) == ["A", "b", "t"]
    assert names(all=True, transient=True) == ["t"]
    assert names(all=True, persistent=True) == ["A", "b", "c"]
    row = engine.list_networks(all=True)[2]
    assert row == {"name": "c", "uuid": row["uuid"], "state": "inactive", "autostart": True,
                   "persistent": True, "bridge": "virbr2", "problems": []}


def test_active_network_whose_bridge_and_dnsmasq_vanished_is_reported(engine: Engine) -> None:
    engine.define(isolated_xml("n1"), "n1.xml")
    # Our own pid is alive but is no dnsmasq: a recycled pid must not pass for one.
    mark_active(engine, "n1", dnsmasq_pid=os.getpid())
    info = engine.info("n1")
    assert info["active"] and info["bridge_present"] is False
    assert info["dnsmasq_running"] is False
    assert info["problems"] == [
        "bridge virbr0 is missing", f"dnsmasq (pid {os.getpid()}) is not running"]
    assert engine.list_networks()[0]["problems"] == info["problems"]


def test_healthy_record_has_no_problems(engine: Engine) -> None:
    engine.define(isolated_xml("n1"), "n1.xml")
    mark_active(engine, "n1")
    engine.link_in_use = {"virbr0"}.__contains__  # the kernel now shows the bridge
    info = engine.info("n1")
    assert info["bridge_present"] is True and info["problems"] == []
    with pytest.raises(InvalidOperationError, match="network is already active"):
        engine.start("n1")


def test_dumpxml_live_and_inactive_differ_after_redefine(engine: Engine) -> None:
    first = engine.define(isolated_xml("n1"), "n1.xml")
    mark_active(engine, "n1")
    engine.define(isolated_xml("n1", 60, extra=f"<uuid>{first.uuid}</uuid>"), "n1.xml")
    assert "192.168.50.1" in engine.dumpxml("n1")
    assert "192.168.60.1" in engine.dumpxml("n1", inactive=True)


# --- update and edit ------------------------------------------------------------------

HOST2 = "<host mac='52:54:00:11:22:44' name='g2' ip='192.168.50.6'/>"


def test_update_of_an_inactive_network_changes_its_config(engine: Engine) -> None:
    engine.define(isolated_xml("n1"), "n1.xml")
    assert engine.update("n1", "add", "ip-dhcp-host", HOST2) == (False, True)
    assert "name='g2'" in engine.dumpxml("n1", inactive=True)
    with pytest.raises(InvalidOperationError, match="network is not running"):
        engine.update("n1", "delete", "ip-dhcp-host", HOST2, live=True)
    assert "name='g2'" in engine.dumpxml("n1", inactive=True)


def test_update_config_of_a_transient_network_is_refused(engine: Engine) -> None:
    xml = isolated_xml("t", extra=f"<uuid>{uuid.UUID(int=5)}</uuid>", bridge="virbr3")
    mark_active(engine, "t", xml)
    with pytest.raises(InvalidOperationError, match="persistent config of a transient network"):
        engine.update("t", "add", "ip-dhcp-host", HOST2, config=True)


def test_update_result_must_stay_valid(engine: Engine) -> None:
    engine.define(isolated_xml("n1"), "n1.xml")
    before = engine.dumpxml("n1", inactive=True)
    outside = "<host mac='52:54:00:11:22:55' name='g9' ip='10.9.9.9'/>"
    with pytest.raises(VirtnetError):
        engine.update("n1", "add", "ip-dhcp-host", outside)
    assert engine.dumpxml("n1", inactive=True) == before


def test_edit_validates_before_saving(engine: Engine) -> None:
    engine.define(isolated_xml("n1"), "n1.xml")
    original = engine.definition_xml("n1")
    assert engine.edit("n1", original) is False
    broken = original.replace("192.168.50.20", "192.168.51.20")
    with pytest.raises(ValidationError):
        engine.edit("n1", broken)
    assert engine.definition_xml("n1") == original
    assert engine.edit("n1", original.replace("name='g1'", "name='g7'")) is True
    assert "name='g7'" in engine.definition_xml("n1")


# --- DHCP leases ------------------------------------------------------------------------


def test_leases_are_read_filtered_and_sorted_like_virsh(engine: Engine) -> None:
    engine.define(isolated_xml("n1"), "n1.xml")
    later, earlier = int(NOW) + 3600, int(NOW) - 10
    path = lease_file(engine.paths, "n1")
    path.parent.mkdir(parents=True)
    path.write_text(
        f"{later} 52:54:00:bb:00:02 192.168.50.12 guest-b 01:52:54:00:bb:00:02\n"
        f"{earlier} 52:54:00:cc:00:03 192.168.50.13 expired *\n"
        f"0 52:54:00:AA:00:01 192.168.50.11 * *\n"
        "duid 00:01:00:01:2c:5f:1a:2b:52:54:00:00:00:01\n"
        f"{later} 12345 fd00:50::11 guest6 00:01:00:01:2c:5f:1a:2b:52:54:00:dd:00:04\n"
        f"{later} 777 fd00:50::12 * 00:02:00:00:ab:11:01:02\n"
    )
    rows = engine.dhcp_leases("n1")
    assert [(r.mac, r.ip, r.protocol) for r in rows] == [
        (None, "fd00:50::12", "ipv6"),
        ("52:54:00:aa:00:01", "192.168.50.11", "ipv4"),
        ("52:54:00:bb:00:02", "192.168.50.12", "ipv4"),
        ("52:54:00:dd:00:04", "fd00:50::11", "ipv6"),
    ]
    by_ip = {row.ip: row for row in rows}
    assert by_ip["192.168.50.12"].address == "192.168.50.12/24"
    assert by_ip["192.168.50.12"].hostname == "guest-b"
    assert by_ip["192.168.50.12"].client_id == "01:52:54:00:bb:00:02"
    assert by_ip["192.168.50.11"].cells()[0] == "never"
    assert by_ip["192.168.50.11"].hostname is None and by_ip["192.168.50.11"].cells()[4] == "-"
    assert by_ip["fd00:50::11"].address == "fd00:50::11/64" and by_ip["fd00:50::11"].iaid == "12345"
    assert by_ip["192.168.50.12"].cells()[0] == time.strftime(
        "%Y-%m-%d %H:%M:%S", time.localtime(later))
    assert [r.ip for r in engine.dhcp_leases("n1", mac="52:54:00:BB:00:02")] == ["192.168.50.12"]
    with pytest.raises(VirtnetError, match="invalid MAC address: nonsense"):
        engine.dhcp_leases("n1", mac="nonsense")


def test_undefine_of_an_inactive_network_drops_its_leases(engine: Engine) -> None:
    engine.define(isolated_xml("n1"), "n1.xml")
    path = lease_file(engine.paths, "n1")
    path.parent.mkdir(parents=True)
    path.write_text(f"{int(NOW) + 60} 52:54:00:bb:00:02 192.168.50.12 * *\n")
    engine.undefine("n1")
    assert not path.exists()


def test_no_lease_file_means_no_leases(engine: Engine) -> None:
    engine.define(isolated_xml("n1"), "n1.xml")
    assert engine.dhcp_leases("n1") == []


# --- the parsed-definition cache (Engine.parse, store.records) -----------------------------------------------


CACHED_XML = """<network><name>cached</name><bridge name='vncache0'/>
<ip address='10.77.0.1' netmask='255.255.255.0'><dhcp><range start='10.77.0.10'
end='10.77.0.20'/></dhcp></ip></network>"""


def test_a_parsed_definition_is_kept_but_each_caller_gets_its_own_copy() -> None:
    import virtnet.store.records as records_module

    first = Engine.parse(CACHED_XML, "cached.xml")
    key = (CACHED_XML, "cached.xml")
    assert records_module.PARSED.get(key) is not None
    second = Engine.parse(CACHED_XML, "cached.xml")
    assert second == first and second is not first
    first.ips[0].ranges.clear()  # a caller changing its copy...
    first.name = "changed"
    third = Engine.parse(CACHED_XML, "cached.xml")
    assert third == second and third.name == "cached"  # ...changes nobody else's
    assert len(third.ips[0].ranges) == 1


def test_refused_and_huge_definitions_are_not_kept() -> None:
    import virtnet.store.records as records_module

    bad = CACHED_XML.replace("10.77.0.20", "10.78.0.20")  # a range outside the subnet
    for _ in range(2):  # refused each time, with the same message
        with pytest.raises(ValidationError, match="range"):
            Engine.parse(bad, "bad.xml")
    assert records_module.PARSED.get((bad, "bad.xml")) is None
    padding = "<!--" + "x" * records_module.PARSED_CACHE_MAX_TEXT + "-->"
    huge = CACHED_XML.replace("</network>", padding + "</network>")
    assert Engine.parse(huge, "huge.xml").name == "cached"
    assert records_module.PARSED.get((huge, "huge.xml")) is None


def test_the_cache_keeps_the_most_recently_used() -> None:
    import virtnet.store.records as records_module

    cache = records_module.ParsedCache(2)
    cache.put(("a", None), b"1")
    cache.put(("b", None), b"2")
    assert cache.get(("a", None)) == b"1"  # a is now the most recent
    cache.put(("c", None), b"3")
    assert cache.get(("b", None)) is None
    assert cache.get(("a", None)) == b"1" and cache.get(("c", None)) == b"3"


def test_the_records_know_the_kind_of_the_action_that_makes_a_bridge() -> None:
    """store.records tells the bridges a start made from the recorded actions' kinds alone,
    without loading the action classes: its constant must be CreateBridge's kind."""
    from virtnet.plan.actions import CreateBridge
    from virtnet.store.records import CREATE_BRIDGE_KIND, created_links

    assert CREATE_BRIDGE_KIND == CreateBridge.kind
    assert created_links([CreateBridge(name="virbr7").to_dict(), {"kind": "x", "name": "y"}]) \
        == ["virbr7"]
