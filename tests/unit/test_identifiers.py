"""Identifiers that become paths (virtnet.ids), control characters refused at parse, and a
state directory with one bad file (issue #16, holes 1, 4 and 5), without touching the host.

- Every name and uuid is checked by one validator wherever it enters (the parser, the port
  request, the names found in the state directory), and paths are joined so that they cannot
  leave their directory even when handed something the validator would refuse.
- A name, title, description or portgroup name holding a control character is refused when
  parsed, with libvirt's wording where libvirt has one; a refused define writes nothing, and
  a definition that would not read back as itself is never saved.
- One unreadable, corrupt, misnamed or symlinked file leaves its network out of lists, with a
  warning naming the file; the others are listed.

Real-kernel counterparts (ports through the API, destroy of a network whose status record is
corrupt): tests/netns/test_identifiers.py.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from virtnet.spec.defaults import DefaultSources
from virtnet.errors import NotFoundError
from virtnet.service.engine import Engine
from virtnet.errors import HostError, VirtnetError, XMLParseError
from virtnet.ids import (
    IdentifierError,
    check_uuid,
    join_state,
    port_file,
    read_state_file,
)
from virtnet.paths import StatePaths
from virtnet.plan.ports import PortRequest
from virtnet.service.ports import PortManager
from virtnet.store.ports import read_records
from virtnet.store.store import NetworkStatus
from virtnet.spec.xml.parse import parse_network
from virtnet.spec.xml.portxml import parse_port

MAC = "52:54:00:16:00:01"
PORT_UUID = "5d744f21-ba4a-4d6e-bdb2-30a35ff3207d"
TRAVERSALS = ["../../x", "../other", "../../../../../tmp/vnt-escape", "/etc/passwd", "..",
              ".", "", "a/b", "x\0y"]


def make_engine(root: Path) -> Engine:
    counter = itertools.count(1)
    sources = DefaultSources(new_uuid=lambda: uuid.UUID(int=next(counter)),
                             random_bytes=lambda n: bytes(range(1, n + 1)))
    return Engine(StatePaths.under(root), sources=sources, link_in_use=lambda name: False,
                  lock_timeout=5)


def xml(name: str, extra: str = "", subnet: int = 60) -> str:
    return (f"<network><name>{name}</name>{extra}"
            f"<ip address='192.168.{subnet}.1' netmask='255.255.255.0'/></network>")


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


# --- hole 1: one validator, paths that cannot leave their directory -------------------------


@pytest.mark.parametrize("name", TRAVERSALS + ["a\nb", "a\rb", "a\tb", ".hidden", "x" * 201])
def test_state_paths_refuse_names_that_are_not_one_plain_file_name(tmp_path: Path,
                                                                   name: str) -> None:
    paths = StatePaths.under(tmp_path)
    for build in (paths.definition, paths.autostart_link, paths.status, paths.apply_journal,
                  paths.dnsmasq_pidfile):
        with pytest.raises(IdentifierError):
            build(name)


@pytest.mark.parametrize("filename", ["../x.json", "..", ".", "", "a/b.json", "x\0.json",
                                      "/abs.json"])
def test_join_state_never_leaves_the_directory(tmp_path: Path, filename: str) -> None:
    with pytest.raises(IdentifierError):
        join_state(tmp_path, filename)
    assert join_state(tmp_path, "ok.json") == tmp_path / "ok.json"


@pytest.mark.parametrize("value", TRAVERSALS + ["5d744f21-ba4a-4d6e-bdb2-30a35ff3207"])
def test_port_uuids_must_be_uuids(tmp_path: Path, value: str) -> None:
    with pytest.raises(IdentifierError, match="malformed port UUID"):
        check_uuid(value, "port UUID")
    with pytest.raises(IdentifierError):
        port_file(tmp_path, value, ".json")


def test_uuids_are_read_as_libvirt_reads_them_and_made_canonical() -> None:
    assert check_uuid(" 5D744F21BA4A4D6EBDB230A35FF3207D ") == PORT_UUID
    assert check_uuid("5d744f21-ba4a-4d6e-bdb2-30a35ff3207d") == PORT_UUID
    assert check_uuid("5d 74 4f 21 ba 4a 4d 6e bd b2 30 a3 5f f3 20 7d") == PORT_UUID


def test_a_port_request_with_a_traversing_uuid_is_refused_before_anything(
        tmp_path: Path) -> None:
    manager = PortManager(make_engine(tmp_path))
    for value in ("../../x", "../other", "/tmp/x"):
        with pytest.raises(IdentifierError, match="malformed port UUID"):
            manager.create("n", PortRequest(mac=MAC, uuid=value))
    with pytest.raises(IdentifierError, match="invalid char in portgroup name"):
        manager.create("n", PortRequest(mac=MAC, portgroup="a\nb"))
    # the owner's uuid is written into the port's record as XML text, unescaped
    with pytest.raises(IdentifierError, match="malformed owner UUID"):
        manager.create("n", PortRequest(mac=MAC, owner_uuid="</uuid></owner><plug/><x>"))
    assert files_under(tmp_path) == set()


def test_port_records_are_read_only_from_files_named_after_their_uuid(tmp_path: Path) -> None:
    directory = tmp_path / "n.ports"
    directory.mkdir()
    port_xml = (f"<networkport><uuid>{PORT_UUID}</uuid><mac address='{MAC}'/>"
                "<plug type='network' bridge='virbr9'/></networkport>")
    record = {"version": 1, "network": "n", "xml": port_xml, "actions": []}
    (directory / "notes.json").write_text("not a record, not ours")
    (directory / f"{PORT_UUID}.json").write_text(json.dumps(record))
    assert list(read_records(directory)) == [PORT_UUID]
    other = "0f0e0d0c-0b0a-0908-0706-050403020100"
    (directory / f"{other}.json").write_text(json.dumps(record))
    with pytest.raises(HostError, match=f"records port {PORT_UUID}, not {other}"):
        read_records(directory)
    os.unlink(directory / f"{other}.json")
    os.symlink(tmp_path / "elsewhere.json", directory / f"{other}.json")
    (tmp_path / "elsewhere.json").write_text(json.dumps(record))
    with pytest.raises(HostError, match="unreadable port record"):
        read_records(directory)


def test_state_files_are_never_read_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_text("root's")
    os.symlink(target, tmp_path / "link")
    with pytest.raises(OSError):
        read_state_file(tmp_path / "link")
    assert read_state_file(target) == b"root's"


def test_an_autostart_link_counts_only_when_it_names_the_definition(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    engine.define(xml("n"))
    engine.set_autostart("n", True)
    assert engine.store.is_autostart("n")
    link = engine.paths.autostart_link("n")
    os.unlink(link)
    elsewhere = tmp_path / "elsewhere.xml"
    elsewhere.write_text(xml("n"))
    os.symlink(elsewhere, link)
    assert not engine.store.is_autostart("n")


# --- hole 4: control characters refused at parse; a refused define writes nothing ---------


@pytest.mark.parametrize(("fragment", "path", "message"), [
    ("<name>a&#13;b</name>", "/network/name", "invalid char in name: 0x0d"),
    ("<name>a&#10;b</name>", "/network/name", "invalid char in name: 0x0a"),
    ("<name>a&#9;b</name>", "/network/name", "invalid char in name: 0x09"),
    ("<name>a/b</name>", "/network/name", "invalid char in name: /"),
    ("<name>n</name><title>a&#13;b</title>", "/network/title",
     "Network title can't contain newlines"),
    ("<name>n</name><title>a&#10;b</title>", "/network/title",
     "Network title can't contain newlines"),
    ("<name>n</name><description>a&#13;b</description>", "/network/description",
     "invalid char in description: 0x0d"),
    ("<name>n</name><portgroup name='a&#10;b'/>", "/network/portgroup[1]/@name",
     "invalid char in portgroup name: 0x0a"),
    ("<name>n</name><portgroup name='a&#13;b'/>", "/network/portgroup[1]/@name",
     "invalid char in portgroup name: 0x0d"),
    ("<name>n</name><portgroup name='a&#9;b'/>", "/network/portgroup[1]/@name",
     "invalid char in portgroup name: 0x09"),
])
def test_control_characters_are_refused_at_parse_and_nothing_is_written(
        tmp_path: Path, fragment: str, path: str, message: str) -> None:
    document = f"<network>{fragment}<bridge name='virbr5'/></network>"
    with pytest.raises(XMLParseError) as info:
        parse_network(document, source="req.xml")
    assert info.value.path == path and message in info.value.message, str(info.value)
    assert "\n" not in str(info.value) and "\r" not in str(info.value)
    engine = make_engine(tmp_path)
    with pytest.raises(XMLParseError):
        engine.define(document, "req.xml")
    assert files_under(tmp_path) == set()
    assert engine.list_networks(all=True) == []


def test_only_what_would_not_read_back_is_refused(tmp_path: Path) -> None:
    """Lines in a description and tabs in a title survive a file; a carriage return becomes
    a newline when read back, so it is refused."""
    engine = make_engine(tmp_path)
    engine.define(xml("n", "<title>a\tb</title><description>one\ntwo</description>"))
    assert engine.get("n").current.description == "one\ntwo"
    assert engine.get("n").current.title == "a\tb"
    with pytest.raises(XMLParseError, match="invalid char in description: 0x0d"):
        engine.define(xml("n", "<description>one&#13;two</description>"))
    assert engine.get("n").current.description == "one\ntwo"


def test_a_portgroup_with_a_control_character_is_refused_in_a_port_record() -> None:
    with pytest.raises(XMLParseError, match="invalid char in portgroup name"):
        parse_port(f"<networkport><uuid>{PORT_UUID}</uuid><group>a&#13;b</group>"
                   f"<mac address='{MAC}'/></networkport>", require_owner=False)


def test_a_definition_that_would_not_read_back_is_not_saved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever lets a value through the parser, define checks that the file it writes reads
    back as the same network before it writes it."""
    engine = make_engine(tmp_path)
    real = Engine.format

    def carriage_return_in_title(net: object, inactive: bool = True) -> str:
        return real(net, inactive).replace("</name>", "</name>\n  <title>a\rb</title>", 1)

    monkeypatch.setattr(Engine, "format", staticmethod(carriage_return_in_title))
    with pytest.raises(VirtnetError, match="cannot be saved: it would not read back"):
        engine.define(xml("n"))
    assert files_under(tmp_path / "etc") == set()


# --- hole 5: one bad file hides nothing else -------------------------------------------------


@pytest.fixture
def two(tmp_path: Path) -> tuple[Engine, list[str]]:
    engine = make_engine(tmp_path)
    engine.define(xml("good", subnet=61))
    engine.define(xml("other", subnet=62))
    return engine, []


def names(engine: Engine, warnings: list[str]) -> list[str]:
    return [row["name"] for row in engine.list_networks(all=True, warn=warnings.append)]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "title-newline", "empty"])
def test_a_corrupt_definition_is_left_out_with_a_warning_naming_it(
        two: tuple[Engine, list[str]], damage: str) -> None:
    engine, warnings = two
    engine.define(xml("bad", subnet=63))
    path = engine.paths.definition("bad")
    text = path.read_text()
    path.write_text({"garbage": "\x00<<not xml", "truncated": text[: len(text) // 2],
                     "title-newline": text.replace("</name>", "</name><title>a\nb</title>"),
                     "empty": ""}[damage])
    assert names(engine, warnings) == ["good", "other"]
    assert len(warnings) == 1 and str(path) in warnings[0] and "'bad'" in warnings[0]
    with pytest.raises(VirtnetError, match=str(path)):
        engine.get("bad")  # asked for by name: the error names the file


def test_a_definition_naming_another_network_is_refused_at_load(
        two: tuple[Engine, list[str]]) -> None:
    engine, warnings = two
    impostor = engine.paths.definition("impostor")
    impostor.write_text(engine.paths.definition("good").read_text())  # <name>good</name>
    assert names(engine, warnings) == ["good", "other"]
    assert len(warnings) == 1 and str(impostor) in warnings[0]
    assert "defines network 'good', not 'impostor'" in warnings[0]


@pytest.mark.parametrize("damage", ["garbage", "not-an-object", "wrong-name", "bad-field"])
def test_a_corrupt_status_record_is_left_out_with_a_warning_naming_it(
        two: tuple[Engine, list[str]], damage: str) -> None:
    engine, warnings = two
    status = NetworkStatus(name="good", uuid="", bridge="virbr0",
                           live_xml=engine.dumpxml("good", inactive=True))
    engine.store.write_status(status)
    path = engine.paths.status("good")
    data = status.to_dict()
    path.write_text({"garbage": "{not json",
                     "not-an-object": "[1, 2]",
                     "wrong-name": json.dumps({**data, "name": "other"}),
                     "bad-field": json.dumps({**data, "connections": "many"})}[damage])
    assert names(engine, warnings) == ["other"]
    assert len(warnings) == 1 and str(path) in warnings[0]


def test_file_names_that_cannot_be_network_names_are_ignored_with_a_warning(
        two: tuple[Engine, list[str]]) -> None:
    engine, warnings = two
    directory = engine.paths.networks_dir
    (directory / "a\rb.xml").write_text(xml("a\rb"))  # left by a version that took it
    os.symlink(engine.paths.definition("good"), directory / "linked.xml")
    assert names(engine, warnings) == ["good", "other"]
    assert len(warnings) == 2
    assert any("'a\\rb'" in w or "0x0d" in w for w in warnings)
    assert any("linked.xml" in w and "symlink" in w for w in warnings)
    with pytest.raises(VirtnetError, match="linked.xml: is a symlink"):
        engine.get("linked")
    with pytest.raises(NotFoundError):
        engine.get("a\rb")


def test_a_symlinked_status_record_is_not_followed(two: tuple[Engine, list[str]],
                                                   tmp_path: Path) -> None:
    engine, warnings = two
    elsewhere = tmp_path / "elsewhere.json"
    status = NetworkStatus(name="good", uuid="", bridge="virbr0",
                           live_xml=engine.dumpxml("good", inactive=True))
    elsewhere.write_text(json.dumps(status.to_dict()))
    engine.paths.status_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(elsewhere, engine.paths.status("good"))
    assert names(engine, warnings) == ["other"]
    assert warnings and all("good.json" in w and "symlink" in w for w in warnings)
    with pytest.raises(VirtnetError, match="good.json: is a symlink"):
        engine.get("good")


# --- hole 5: destroy of a network whose status record is unreadable --------------------------


class RecordingHost:
    """Records every call an undo makes (nothing on the host is touched)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args))

        return call


def engine_on(root: Path, host: RecordingHost) -> Engine:
    engine = make_engine(root)
    engine._host_factory = lambda: host  # type: ignore[assignment, return-value]
    return engine


def started(engine: Engine, name: str) -> NetworkStatus:
    """The status record a start of NAME leaves, with two real actions (no host touched)."""
    from virtnet.plan.actions import AddAddress, CreateBridge

    engine.define(xml(name, "<bridge name='vnt16z'/>"))
    actions = [CreateBridge(name="vnt16z").to_dict(),
               AddAddress(link="vnt16z", address="192.168.60.1/24").to_dict()]
    status = NetworkStatus(name=name, uuid="", bridge="vnt16z",
                           live_xml=engine.dumpxml(name, inactive=True), actions=actions)
    engine.store.write_status(status)
    return status


def test_destroy_trusts_the_actions_of_a_record_whose_other_fields_are_broken(
        tmp_path: Path) -> None:
    host = RecordingHost()
    engine = engine_on(tmp_path, host)
    status = started(engine, "n")
    path = engine.paths.status("n")
    path.write_text(json.dumps({**status.to_dict(), "connections": "many"}))
    warnings: list[str] = []
    assert engine.destroy("n", warn=warnings.append) == "n"
    assert [call for call in host.calls if call[0].startswith("delete")][1:] == \
        [("delete_link", ("vnt16z",))]  # undone newest first: the address, then the bridge
    assert not path.exists()
    assert len(warnings) == 1 and str(path) in warnings[0] and "its actions" in warnings[0]


def test_destroy_follows_the_start_journal_when_the_record_is_garbage(tmp_path: Path) -> None:
    from virtnet.store.store import begun_line, done_line

    host = RecordingHost()
    engine = engine_on(tmp_path, host)
    status = started(engine, "n")
    header = {**status.to_dict(), "actions": [], "active": False}
    journal = engine.store.journal_path("n")
    journal.write_bytes(json.dumps(header).encode() + b"\n"
                        + begun_line(status.actions[0]) + done_line(0, {})
                        + begun_line(status.actions[1]))  # killed inside the second step
    engine.paths.status("n").write_text("\x00garbage")
    warnings: list[str] = []
    engine.destroy("n", warn=warnings.append)
    assert [name for name, _ in host.calls if name.startswith("delete")] == \
        ["delete_address", "delete_link"]
    assert not journal.exists() and not engine.paths.status("n").exists()
    assert "start journal" in warnings[0]


def test_destroy_uses_the_record_when_only_the_definition_is_unreadable(tmp_path: Path) -> None:
    host = RecordingHost()
    engine = engine_on(tmp_path, host)
    started(engine, "n")
    engine.paths.definition("n").write_text("<network><name>n</name")
    engine.destroy("n")
    assert ("delete_link", ("vnt16z",)) in host.calls
    assert not engine.paths.status("n").exists()
    with pytest.raises(XMLParseError, match="n.xml"):
        engine.destroy("n")  # inactive now: nothing to salvage, the load error is the answer


def test_destroy_with_nothing_readable_removes_nothing_and_says_why(tmp_path: Path) -> None:
    host = RecordingHost()
    engine = engine_on(tmp_path, host)
    started(engine, "n")
    engine.paths.status("n").write_text("\x00garbage")
    os.unlink(engine.paths.definition("n"))  # transient: the record was all there was
    with pytest.raises(HostError, match="neither a start journal nor a readable definition"):
        engine.destroy("n")
    assert host.calls == [] and engine.paths.status("n").exists()

