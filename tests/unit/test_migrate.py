"""virtnet import/export over real files and a real engine (tmp state): what is refused, with
which reason, and that a refused network changes nothing. The round trip through a live
libvirt is tests/differential/test_migrate_differential.py."""

from __future__ import annotations

import os
from pathlib import Path

from tests.unit.test_engine_defs import isolated_xml, make_engine
from virtnet.service.migrate import export_networks, import_networks, libvirt_network_files

UUID_A = "1d2c3b4a-0000-4000-8000-00000000000a"


def libvirt_dirs(tmp_path: Path, networks: dict[str, str], autostart=(), running=()):
    config, status = tmp_path / "etc", tmp_path / "run"
    (config / "autostart").mkdir(parents=True)
    status.mkdir()
    for file_name, xml in networks.items():
        (config / f"{file_name}.xml").write_text(xml)
    for name in autostart:
        os.symlink(f"../{name}.xml", config / "autostart" / f"{name}.xml")
    for name in running:
        (status / f"{name}.xml").write_text(f"<networkstatus>{networks[name]}</networkstatus>")
    return config, status


def test_what_import_refuses_and_why(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "state")
    engine.define(isolated_xml("mine", 60, extra=f"<uuid>{UUID_A}</uuid>"))
    config, status = libvirt_dirs(tmp_path, {
        "fine": isolated_xml("fine", 61),
        "mine": isolated_xml("mine", 62),
        "twin": isolated_xml("twin", 63, extra=f"<uuid>{UUID_A}</uuid>"),
        "running": isolated_xml("running", 64),
        "misnamed": isolated_xml("other", 65),
        "broken": "<network><name>broken</name><ip address='300.1.1.1'/></network>",
    }, autostart=["fine"], running=["running"])
    outcomes = {o.name: o for o in import_networks(engine, libvirt_network_files(config, status),
                                                   ["fine", "mine", "twin", "running",
                                                    "misnamed", "broken", "absent"])}
    assert outcomes["fine"].done and outcomes["fine"].autostart
    assert "virsh net-autostart --disable fine" in outcomes["fine"].next_steps
    assert "already has a network named 'mine'" in outcomes["mine"].reason
    assert f"same UUID {UUID_A}" in outcomes["twin"].reason
    assert "libvirt runs it now" in outcomes["running"].reason
    assert "named misnamed.xml but defines 'other'" in outcomes["misnamed"].reason
    assert "virtnet cannot take this definition" in outcomes["broken"].reason
    assert "300.1.1.1" in outcomes["broken"].reason
    assert "defines no network" in outcomes["absent"].reason
    # only 'fine' came in, with its autostart; 'mine' is untouched
    assert sorted(r.name for r in engine.records()) == ["fine", "mine"]
    assert engine.lookup("fine").autostart
    assert "192.168.60.1" in engine.dumpxml("mine")


def test_export_writes_libvirts_layout_and_never_overwrites(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "state")
    engine.define(isolated_xml("one", 70))
    engine.define(isolated_xml("two", 71))
    engine.set_autostart("two", True)
    target = tmp_path / "out"
    dry = export_networks(engine, [], target, dry_run=True)
    assert [o.name for o in dry] == ["one", "two"] and not target.exists()
    done = export_networks(engine, [], target)
    assert all(o.done for o in done)
    assert (target / "one.xml").read_text() == engine.dumpxml("one", inactive=True)
    assert os.readlink(target / "autostart" / "two.xml") == "../two.xml"
    assert not (target / "autostart" / "one.xml").exists()
    again = export_networks(engine, ["one", "nosuch"], target)
    assert "exists: nothing is overwritten" in again[0].reason
    assert not again[1].done and "nosuch" in again[1].reason
