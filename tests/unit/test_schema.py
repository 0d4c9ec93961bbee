"""Elements and attributes libvirt's schema does not know (virtnet.spec.xml.schema): named with
file, line and path by `virtnet validate` (exit 1), refused by `net-define --validate` (nothing
written), warned about line by line by a plain `net-define`, which still defines the network
as libvirt's lenient parser would. The table itself is checked against libvirt's schema in
tests/conformance/test_schema_table.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from virtnet.face.cli import main
from virtnet.spec.xml.parse import parse_document
from virtnet.spec.xml.schema import SchemaError, check_document, unknown_items

MISSPELT = """<network>
  <name>typo</name>
  <forwrd mode='nat'/>
  <bridge name='vnt5' stp='off' colour='red'/>
  <ip address='192.168.171.1' netmask='255.255.255.0'>
    <dhcp>
      <rnage start='192.168.171.2' end='192.168.171.9'/>
    </dhcp>
  </ip>
</network>
"""


def cli(state: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--state-dir", str(state), *args])


def items_of(xml: str) -> list[str]:
    return [str(item) for item in unknown_items(parse_document(xml, "t.xml"), "t.xml")]


def test_every_unknown_element_and_attribute_is_named_with_its_line() -> None:
    assert items_of(MISSPELT) == [
        "t.xml:3: /network/forwrd: unknown element <forwrd> in <network> "
        "(did you mean <forward>?)",
        "t.xml:4: /network/bridge/@colour: unknown attribute 'colour' in <bridge>",
        "t.xml:7: /network/ip[1]/dhcp/rnage: unknown element <rnage> in <dhcp> "
        "(did you mean <range>?)",
    ]


def test_a_known_element_in_the_wrong_place_says_where_it_belongs() -> None:
    assert items_of("<network><name>n</name><dhcp/><forward mdoe='nat'/></network>") == [
        "t.xml:1: /network/dhcp: unknown element <dhcp> in <network> "
        "(<dhcp> belongs in /network/ip)",
        "t.xml:1: /network/forward/@mdoe: unknown attribute 'mdoe' in <forward> "
        "(did you mean 'mode'?)",
    ]


def test_same_named_elements_are_told_apart_by_context() -> None:
    # <host> of <dns> and of <dhcp>, <address> of <forward> and of <nat>, <port> of the
    # network and of <nat>: each has its own attributes
    xml = ("<network><name>n</name><forward mode='nat'><nat><address start='1.2.3.4' "
           "end='1.2.3.5'/><port start='1' end='2' isolated='yes'/></nat></forward>"
           "<port isolated='yes' start='1'/><dns><host ip='10.0.0.2' mac='52:54:00:00:00:01'>"
           "<hostname>a</hostname></host></dns><ip address='10.0.0.1' prefix='24'><dhcp>"
           "<host mac='52:54:00:00:00:01' ip='10.0.0.3'><hostname>x</hostname></host>"
           "</dhcp></ip></network>")
    assert items_of(xml) == [
        "t.xml:1: /network/forward/nat/port/@isolated: unknown attribute 'isolated' in <port>",
        "t.xml:1: /network/port/@start: unknown attribute 'start' in <port>",
        "t.xml:1: /network/dns/host[1]/@mac: unknown attribute 'mac' in <host>",
        "t.xml:1: /network/ip[1]/dhcp/host[1]/hostname[1]: unknown element <hostname> in "
        "<host> (<hostname> belongs in /network/dns/host)",
    ]


def test_metadata_contents_and_dnsmasq_options_are_not_flagged() -> None:
    xml = ("<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>"
           "<name>n</name><metadata><app:x xmlns:app='urn:app' any='thing'><deep/></app:x>"
           "</metadata><dnsmasq:options><dnsmasq:option value='no-negcache'/>"
           "</dnsmasq:options><!-- a comment --></network>")
    assert items_of(xml) == []


def test_foreign_elements_outside_metadata_are_flagged_as_written() -> None:
    xml = ("<network xmlns:o='urn:other' xmlns:dnsmasq='http://libvirt.org/schemas/network/"
           "dnsmasq/1.0'><name>n</name><o:thing/><dnsmasq:options><dnsmasq:opt value='x'/>"
           "</dnsmasq:options><ip address='10.0.0.1' o:attr='1'/></network>")
    assert items_of(xml) == [
        "t.xml:1: /network/o:thing: unknown element <o:thing> in <network>",
        "t.xml:1: /network/dnsmasq:options/dnsmasq:opt: unknown element <dnsmasq:opt> in "
        "<dnsmasq:options> (did you mean <dnsmasq:option>?)",
        "t.xml:1: /network/ip[1]/@o:attr: unknown attribute 'o:attr' in <ip>",
    ]


def test_newer_libvirt_additions_are_known() -> None:
    xml = ("<network><name>n</name><title>t</title><description>d</description>"
           "<domain name='example.com' register='yes'/><dns><forwarder addr='192.0.2.1' "
           "port='5353'/></dns></network>")
    assert items_of(xml) == []


def test_a_root_other_than_network_is_left_to_the_parser() -> None:
    assert items_of("<domain><name>x</name><foo/></domain>") == []


def test_refusal_lists_every_item() -> None:
    with pytest.raises(SchemaError) as caught:
        check_document(MISSPELT, "t.xml", refuse=True)
    message = str(caught.value)
    assert message.splitlines()[0] == ("XML document failed to validate against the network "
                                       "schema (3 unknown element(s) or attribute(s)):")
    assert len(message.splitlines()) == 4 and "t.xml:3: /network/forwrd" in message
    assert len(check_document(MISSPELT, "t.xml", refuse=False)) == 3


# --- through the CLI ---------------------------------------------------------------------------


def test_validate_names_each_unknown_item_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "typo.xml"
    path.write_text(MISSPELT)
    result = cli(tmp_path / "state", "validate", str(path))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines == [
        f"{path}:3: /network/forwrd: unknown element <forwrd> in <network> "
        "(did you mean <forward>?)",
        f"{path}:4: /network/bridge/@colour: unknown attribute 'colour' in <bridge>",
        f"{path}:7: /network/ip[1]/dhcp/rnage: unknown element <rnage> in <dhcp> "
        "(did you mean <range>?)",
    ]
    assert result.stdout == ""
    report = json.loads(cli(tmp_path / "state", "validate", "--json", str(path)).stdout)
    assert report[0]["valid"] is False and report[0]["problems"] == lines


def test_validate_lists_unknown_items_beside_other_problems(tmp_path: Path) -> None:
    # <nmae> instead of <name>: the parser misses the name; both are said
    path = tmp_path / "noname.xml"
    path.write_text("<network>\n  <nmae>x</nmae>\n</network>\n")
    result = cli(tmp_path / "state", "validate", str(path))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{path}:2: /network/nmae: unknown element <nmae> in <network> (did you mean <name>?)",
        f"{path}:1: /network/name: missing network <name>",
    ]


def test_net_define_validate_refuses_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "typo.xml"
    path.write_text(MISSPELT)
    state = tmp_path / "state"
    result = cli(state, "net-define", "--validate", str(path))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: Failed to define network from {path}"
    assert lines[1].startswith("error: XML document failed to validate against the network "
                               "schema")
    assert [line.strip() for line in lines[2:]] == [
        f"{path}:3: /network/forwrd: unknown element <forwrd> in <network> "
        "(did you mean <forward>?)",
        f"{path}:4: /network/bridge/@colour: unknown attribute 'colour' in <bridge>",
        f"{path}:7: /network/ip[1]/dhcp/rnage: unknown element <rnage> in <dhcp> "
        "(did you mean <range>?)",
    ]
    assert not state.exists() or not [p for p in state.rglob("*") if p.is_file()]
    assert cli(state, "net-list", "--all", "--name").stdout.strip() == ""


def test_plain_net_define_warns_once_per_item_and_defines(tmp_path: Path) -> None:
    path = tmp_path / "typo.xml"
    path.write_text(MISSPELT)
    state = tmp_path / "state"
    result = cli(state, "net-define", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Network typo defined from {path}\n\n"
    assert result.stderr.splitlines() == [
        f"warning: {path}:3: /network/forwrd: unknown element <forwrd> in <network>, ignored "
        "(did you mean <forward>?)",
        f"warning: {path}:4: /network/bridge/@colour: unknown attribute 'colour' in <bridge>, "
        "ignored",
        f"warning: {path}:7: /network/ip[1]/dhcp/rnage: unknown element <rnage> in <dhcp>, "
        "ignored (did you mean <range>?)",
    ]
    # as libvirt: the misspelt <forward> is dropped, the network is isolated
    dumped = cli(state, "net-dumpxml", "typo").stdout
    assert "<forward" not in dumped and "colour" not in dumped


def test_a_clean_definition_gets_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "clean.xml"
    path.write_text(MISSPELT.replace("forwrd", "forward").replace(" colour='red'", "")
                    .replace("rnage", "range"))
    state = tmp_path / "state"
    result = cli(state, "net-define", "--validate", str(path))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert cli(state, "validate", str(path)).stdout == f"{path}: valid\n"
