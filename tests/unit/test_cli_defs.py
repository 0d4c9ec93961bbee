"""The net-* verbs' output: virsh's messages, tables and error lines, byte for byte.

Two kinds of tests:
- in-process ones (click's runner, state in a temp directory, nothing started): options,
  JSON output, errors and net-edit;
- differential ones (marker ``libvirt``): the same definitions go to a real libvirtd (in a
  namespace of its own) through virsh and to virtnet; every output is captured from virsh in
  the test and compared with ours, nothing is hard-coded.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from virtnet.face.cli import main, virsh_fields, virsh_table

FIXED = [
    # name, uuid, bridge, mac, subnet: given in full so libvirt and virtnet assign nothing.
    ("default", "0b5a3a56-6bd4-4fbc-9ad3-7f4e47b9a001", "virbr7", "52:54:00:0a:00:01", "10.60.1"),
    ("a-much-longer-network-name", "0b5a3a56-6bd4-4fbc-9ad3-7f4e47b9a002", "virbr8",
     "52:54:00:0a:00:02", "10.60.2"),
    ("Zed", "0b5a3a56-6bd4-4fbc-9ad3-7f4e47b9a003", "virbr9", "52:54:00:0a:00:03", "10.60.3"),
]


def fixed_xml(name: str, uuid: str, bridge: str, mac: str, subnet: str) -> str:
    return (
        f"<network>\n  <name>{name}</name>\n  <uuid>{uuid}</uuid>\n  <forward mode='nat'/>\n"
        f"  <bridge name='{bridge}' stp='on' delay='0'/>\n  <mac address='{mac}'/>\n"
        f"  <ip address='{subnet}.1' netmask='255.255.255.0'>\n    <dhcp>\n"
        f"      <range start='{subnet}.10' end='{subnet}.99'/>\n"
        f"      <host mac='52:54:00:aa:00:01' name='web' ip='{subnet}.5'/>\n"
        "    </dhcp>\n  </ip>\n</network>\n"
    )


def cli(state: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, ["--state-dir", str(state), *args])


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for entry in FIXED:
        path = tmp_path / f"{entry[0]}.xml"
        path.write_text(fixed_xml(*entry))
        paths[entry[0]] = path
    return paths


# --- in-process -----------------------------------------------------------------------------


def test_table_helper_follows_virshs_padding_rule() -> None:
    text = virsh_table(["A", "Bee"], [["long-cell", "x"], ["y", "zz"]])
    lines = text.splitlines()
    # Every cell starts one space in; each column is as wide as its widest cell plus 2.
    assert lines[0].index("Bee") == lines[2].index("x") == lines[3].index("zz")
    assert set(lines[1]) == {"-"} and len(lines[1]) == (9 + 3) + (3 + 3)
    assert not lines[0].endswith(" ") and lines[0].startswith(" A")
    assert virsh_fields([("Name", "n")]) == "Name:" + " " * 11 + "n\n"


def test_define_list_info_and_json(tmp_path: Path, files: dict[str, Path]) -> None:
    state = tmp_path / "state"
    result = cli(state, "net-define", str(files["default"]))
    assert result.exit_code == 0
    assert result.stdout == f"Network default defined from {files['default']}\n\n"
    cli(state, "net-define", str(files["Zed"]))
    rows = json.loads(cli(state, "net-list", "--all", "--json").stdout)
    assert [(r["name"], r["state"], r["autostart"], r["persistent"]) for r in rows] == [
        ("default", "inactive", False, True), ("Zed", "inactive", False, True)]
    assert cli(state, "net-list", "--all", "--name").stdout == "default\nZed\n\n"
    uuids = cli(state, "net-list", "--all", "--uuid").stdout.split()
    assert uuids == [FIXED[0][1], FIXED[2][1]]
    info = json.loads(cli(state, "net-info", "Zed", "--json").stdout)
    assert info["uuid"] == FIXED[2][1] and info["bridge"] == "virbr9" and not info["active"]
    assert json.loads(cli(state, "net-uuid", "Zed", "--json").stdout)["uuid"] == FIXED[2][1]
    assert cli(state, "net-name", FIXED[2][1]).stdout == "Zed\n\n"
    # A UUID works wherever a name does, as in virsh.
    assert json.loads(cli(state, "net-info", FIXED[2][1], "--json").stdout)["name"] == "Zed"
    assert json.loads(cli(state, "net-dhcp-leases", "Zed", "--json").stdout) == []


def test_list_refuses_two_output_modes(tmp_path: Path) -> None:
    result = cli(tmp_path, "net-list", "--name", "--uuid")
    assert result.exit_code == 1
    assert "Only one argument from --table, --name and --uuid" in result.stderr


def test_missing_namespace_is_a_clear_error_before_any_command(tmp_path: Path) -> None:
    name = "vnt-absent-" + secrets.token_hex(4)
    result = CliRunner().invoke(main, ["--netns", name, "--state-dir", str(tmp_path), "net-list"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: network namespace '{name}' does not exist (/run/netns/{name})\n")
    assert not (tmp_path / "run").exists()  # the command itself never ran


def test_unknown_network_gives_virshs_two_error_lines(tmp_path: Path) -> None:
    result = cli(tmp_path, "net-info", "nosuch")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: failed to get network 'nosuch'\n"
        "error: Network not found: no network with matching name 'nosuch'\n"
    )


def test_update_current_excludes_live_and_config(tmp_path: Path, files: dict[str, Path]) -> None:
    cli(tmp_path, "net-define", str(files["default"]))
    result = cli(tmp_path, "net-update", "default", "add", "ip-dhcp-host",
                 "<host mac='52:54:00:aa:00:09' ip='10.60.1.9'/>", "--current", "--live")
    assert result.exit_code == 1 and "mutually exclusive" in result.stderr
    snippet = tmp_path / "host.xml"
    snippet.write_text("<host mac='52:54:00:aa:00:09' ip='10.60.1.9'/>")
    result = cli(tmp_path, "net-update", "default", "add", "ip-dhcp-host", str(snippet))
    assert result.stdout == "Updated network default persistent config\n"
    assert "10.60.1.9" in cli(tmp_path, "net-dumpxml", "default", "--inactive").stdout


def editor(tmp_path: Path, body: str) -> str:
    script = tmp_path / "editor.sh"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


def test_edit_saves_a_valid_change(tmp_path: Path, files: dict[str, Path]) -> None:
    state = tmp_path / "state"
    cli(state, "net-define", str(files["default"]))
    env = {"VISUAL": None, "EDITOR": editor(tmp_path, 'sed -i "s/web/www/" "$1"')}
    result = cli(state, "net-edit", "default", env=env)
    assert result.stdout == "Network default XML configuration edited.\n\n"
    assert "name='www'" in cli(state, "net-dumpxml", "default", "--inactive").stdout


def test_edit_without_change_says_so(tmp_path: Path, files: dict[str, Path]) -> None:
    state = tmp_path / "state"
    cli(state, "net-define", str(files["default"]))
    result = cli(state, "net-edit", "default", env={"VISUAL": None, "EDITOR": "true"})
    assert result.stdout == "Network default XML configuration not changed.\n\n"


def test_edit_into_an_invalid_definition_keeps_the_old_one(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    state = tmp_path / "state"
    cli(state, "net-define", str(files["default"]))
    before = cli(state, "net-dumpxml", "default", "--inactive").stdout
    bad = editor(tmp_path, "sed -i s/10.60.1.99/10.61.1.99/ \"$1\"")  # range leaves subnet
    result = cli(state, "net-edit", "default", env={"VISUAL": None, "EDITOR": bad})
    assert result.exit_code == 1
    assert "left unchanged" in result.stderr
    assert cli(state, "net-dumpxml", "default", "--inactive").stdout == before


# --- against a real virsh -----------------------------------------------------------------


def _libvirt_reason() -> str | None:
    from tests.kit.libvirtd import libvirtd_unavailable_reason

    return libvirtd_unavailable_reason()


@pytest.fixture(scope="module")
def libvirt() -> Iterator[Any]:
    reason = _libvirt_reason()
    if reason is not None:
        pytest.skip(reason)
    from tests.kit.libvirtd import LibvirtdInNetns

    with LibvirtdInNetns() as lv:
        yield lv


@pytest.fixture
def private_netns() -> Iterator[str]:
    """A namespace of our own for the networks virtnet starts (removed with what runs in it)."""
    name = "vnt-" + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=20)
    try:
        yield name
    finally:
        target = os.stat(f"/run/netns/{name}").st_ino
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.stat(entry / "ns" / "net").st_ino == target:
                        os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    continue
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=20)


HOST_CHANGING = {"net-start", "net-destroy", "net-create"}


def ours(state: Path, *args: str, netns: str | None = None) -> tuple[str, str, int]:
    """virtnet's (stdout, stderr, exit status). Verbs that change the host run as a real
    process inside ``netns``; the others run in-process (they only touch the state dir)."""
    if netns is None:
        assert args[0] not in HOST_CHANGING, "never start anything in pytest's namespace"
        result = cli(state, *args)
        return result.stdout, result.stderr, result.exit_code
    proc = subprocess.run(
        [sys.executable, "-m", "virtnet.face.cli", "--netns", netns, "--state-dir", str(state), *args],
        capture_output=True, text=True, timeout=60,
    )
    return proc.stdout, proc.stderr, proc.returncode


def same(lv: Any, state: Path, *args: str, netns: str | None = None) -> str:
    """Run ARGS through virsh and virtnet; both must print exactly the same (stdout, stderr,
    exit status). Returns the shared stdout."""
    theirs = lv.virsh(*args)
    assert ours(state, *args, netns=netns) == (
        theirs.stdout, theirs.stderr, theirs.returncode), args
    return theirs.stdout


@pytest.mark.libvirt
@pytest.mark.netns
def test_outputs_match_virsh(
    libvirt: Any, tmp_path: Path, files: dict[str, Path], private_netns: str
) -> None:
    lv = libvirt
    # dnsmasq drops root and reads its hosts files as nobody: a start refuses a state
    # directory under pytest's private tmp_path (virtnet.service.privilege.check_dnsmasq_dir)
    import shutil
    import tempfile

    state = Path(tempfile.mkdtemp(prefix="vnt-defs-")) / "state"
    state.parent.chmod(0o755)
    request_cleanup = lambda: shutil.rmtree(state.parent, ignore_errors=True)  # noqa: E731
    try:
        same(lv, state, "net-list", "--all")  # the empty table
        for name in ("default", "a-much-longer-network-name", "Zed"):
            same(lv, state, "net-define", str(files[name]))
        same(lv, state, "net-define", str(files["Zed"]))  # same name and uuid: replaced
        for args in (["net-list", "--all"], ["net-list"], ["net-list", "--inactive"],
                     ["net-list", "--all", "--name"], ["net-list", "--all", "--uuid"]):
            same(lv, state, *args)
        for name in ("default", "a-much-longer-network-name", "Zed"):
            same(lv, state, "net-info", name)
            same(lv, state, "net-dumpxml", "--inactive", name)
            same(lv, state, "net-uuid", name)
            same(lv, state, "net-dhcp-leases", name)
        same(lv, state, "net-name", FIXED[2][1])
        same(lv, state, "net-autostart", "Zed")
        same(lv, state, "net-list", "--all", "--autostart")
        same(lv, state, "net-list", "--all")
        same(lv, state, "net-autostart", "--disable", "Zed")
        same(lv, state, "net-update", "default", "add", "ip-dhcp-host",
             "<host mac='52:54:00:aa:00:02' name='db' ip='10.60.1.6'/>")
        same(lv, state, "net-dumpxml", "--inactive", "default")
        same(lv, state, "net-info", "nosuch")
        same(lv, state, "net-name", "nosuch")
        same(lv, state, "net-name", "0b5a3a56-6bd4-4fbc-9ad3-7f4e47b9a999")
        same(lv, state, "net-start", "nosuch", netns=private_netns)
        same(lv, state, "net-undefine", FIXED[0][1].replace("a001", "a999"))
        same(lv, state, "net-destroy", "Zed", netns=private_netns)  # not active

        # One active network: libvirt's in its namespace, ours in a namespace of our own.
        same(lv, state, "net-start", "Zed", netns=private_netns)
        same(lv, state, "net-list", "--all", netns=private_netns)
        same(lv, state, "net-info", "Zed", netns=private_netns)
        same(lv, state, "net-dhcp-leases", "Zed", netns=private_netns)
        same(lv, state, "net-destroy", "Zed", netns=private_netns)

        for name in ("default", "a-much-longer-network-name", "Zed"):
            same(lv, state, "net-undefine", name)
        same(lv, state, "net-list", "--all")
    finally:
        for name in ("default", "a-much-longer-network-name", "Zed"):
            lv.forget(name)
            ours(state, "net-destroy", name, netns=private_netns)
        request_cleanup()
