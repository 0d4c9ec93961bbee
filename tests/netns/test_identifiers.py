"""Issue #16 on the real kernel, inside namespaces of the test's own: identifiers that would
become paths, control characters, and a state directory with one bad file.

- An adversary with API access (a member of the daemon's group) asks for ports whose uuid
  climbs out of the state directory, names another network's status record, or is absolute:
  each request is refused (400, the uuid named), and no file anywhere under the test's root,
  inside the state directory or outside it, is created, changed or removed; no device is
  left behind. A DELETE with such a reference removes nothing either.
- A define whose title holds a carriage return is refused by the API (400) and leaves no file.
- A running network whose status record is corrupt (garbage, a field of the wrong type, a live
  definition that no longer parses) is left out of net-list (CLI, API, the CLI forwarded to the
  daemon) with a warning naming the file (the daemon logs it), the other networks are listed, and net-destroy (CLI, API) removes everything the
  network made: bridge, addresses, routes, nftables chains, dnsmasq and its files (found from
  the record's actions, its start's journal, or a start plan of the definition).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from virtnet.client import ApiError
from tests.kit.daemon import VirtnetdProcess, script

pytestmark = pytest.mark.netns

MAC = "52:54:00:16:00:01"
CLI_TIMEOUT_S = 120.0


def network_xml(name: str, subnet: str, bridge: str) -> str:
    return (f"<network><name>{name}</name><forward mode='nat'/>"
            f"<bridge name='{bridge}' stp='off'/>"
            f"<ip address='{subnet}.1' netmask='255.255.255.0'><dhcp>"
            f"<range start='{subnet}.100' end='{subnet}.150'/></dhcp></ip>"
            f"<route address='{subnet[:-2]}.250.0' prefix='24' gateway='{subnet}.2'/>"
            "</network>")


def tree(root: Path, skip: Callable[[Path], bool] = lambda path: False) -> dict[str, str]:
    """Every file and symlink under ROOT with a digest of its content (links: their target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if skip(path):
            continue
        if path.is_symlink():
            found[str(path)] = "-> " + str(path.readlink())
        elif path.is_file():  # (sockets, directories: not files anything could write)
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def cli(ns: str, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``virtnet --netns NS --state-dir STATE ARGS`` as a user types it (no daemon: direct)."""
    argv = [*script("virtnet"), "--netns", ns, "--state-dir", str(state), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def kernel(kit: Any, ns: str) -> tuple[Any, ...]:
    """What networks make in NS: links, addresses, routes, the nft ruleset, processes."""
    return (kit.ns_links(ns), kit.ns_addresses(ns), kit.ns_routes(ns),
            kit.ns_nft_ruleset(ns), sorted(kit.live_pids(ns)))


# --- hole 1: port uuids that would be paths ---------------------------------------------------


def test_port_uuids_that_climb_out_of_the_state_directory_change_no_file(
        netns_kit: Any, root: Path) -> None:
    ns = netns_kit.make_netns()
    state = root / "state"
    outside = root / "outside"
    outside.mkdir()
    for name in ("victim.json", "victim.journal"):
        (outside / name).write_text("precious\n")
    daemon = VirtnetdProcess(ns, state, log_path=root / "virtnetd.log")
    try:
        daemon.start()
        with daemon.client() as api:
            api.define(network_xml("lan", "10.96.0", "vnt16a"), start=True)
            api.define(network_xml("other", "10.97.0", "vnt16b"), start=True)
            hostile = [
                "../../x",  # run/x.json
                "../other",  # the other network's status record
                "../../../../outside/victim",  # a file outside the state directory
                str(outside / "victim"),  # absolute
                "..", "../lan.ports/../../../../outside/victim", "a\0b",
            ]
            before = tree(root, skip=lambda p: p.name == "virtnetd.log")
            links = netns_kit.ns_links(ns)
            answers: dict[str, Any] = {}
            deletes: dict[str, Any] = {}
            for value in hostile:
                try:
                    answers[value] = api.create_port("lan", MAC, uuid=value)["uuid"]
                except ApiError as exc:
                    answers[value] = (exc.status, exc.message)
            for target in ("..%2F..%2F..%2F..%2Foutside%2Fvictim", "..%2Fother", "..", "x"):
                try:
                    deletes[target] = api.call("DELETE", f"/v1/networks/lan/ports/{target}")
                except ApiError as exc:
                    deletes[target] = (exc.status, exc.message)
            # first what is on disk: created, changed or removed files show in the diff
            assert tree(root, skip=lambda p: p.name == "virtnetd.log") == before
            for value in hostile:
                assert answers[value][0] == 400, (value, answers[value])
                assert "malformed port UUID" in answers[value][1], answers[value]
            for target, answer in deletes.items():
                assert answer[0] in (404, 405), (target, answer)
            assert netns_kit.ns_links(ns) == links  # no tap left behind
            assert api.ports("lan") == []
            assert api.network("other")["active"] is True
            # the network still works: an honest port, then its deletion
            port = api.create_port("lan", MAC, uuid="5D744F21-BA4A-4D6E-BDB2-30A35FF3207D")
            assert port["uuid"] == "5d744f21-ba4a-4d6e-bdb2-30a35ff3207d"
            assert (state / "run" / "network" / "lan.ports" / f"{port['uuid']}.json").is_file()
            api.delete_port("lan", port["uuid"])
            assert netns_kit.ns_links(ns) == links

            # hole 4 through the API: refused at parse, nothing written
            with pytest.raises(ApiError) as info:
                api.define("<network><name>t</name><title>a&#13;b</title></network>")
            assert info.value.status == 400
            assert "/network/title: Network title can't contain newlines" in info.value.message
            with pytest.raises(ApiError) as info:
                api.define("<network><name>a&#13;b</name></network>")
            assert info.value.status == 400 and "invalid char in name: 0x0d" \
                in info.value.message
            assert sorted(p.name for p in (state / "etc" / "networks").glob("*.xml")) == \
                ["lan.xml", "other.xml"]
            for name in ("lan", "other"):
                api.destroy(name)
    finally:
        daemon.stop()
    assert (outside / "victim.json").read_text() == "precious\n"
    assert (outside / "victim.journal").read_text() == "precious\n"


# --- hole 5: a corrupt status record hides nothing, and its network can still be destroyed ---


def corrupt(path: Path, damage: str) -> None:
    data = json.loads(path.read_text())
    if damage == "garbage":
        path.write_text("\x00{ this is no status record")
    elif damage == "garbage-and-journal":
        # as if killed between writing the record and removing its start's journal (the
        # journal's steps: a header without actions, then one applied action per line)
        header = {**data, "actions": [], "active": False}
        lines = [json.dumps(header)] + [json.dumps(action) for action in data["actions"]]
        path.with_suffix(".journal").write_text("\n".join(lines) + "\n")
        path.write_text("\x00{ this is no status record")
    elif damage == "bad-field":
        path.write_text(json.dumps({**data, "connections": "many", "started_at": [1]}))
    elif damage == "live-xml":
        path.write_text(json.dumps({**data, "live_xml": "<network><name>bad</name"}))
    else:
        raise AssertionError(damage)


@pytest.mark.parametrize("damage", ["garbage", "garbage-and-journal", "bad-field", "live-xml"])
def test_cli_lists_the_rest_and_destroys_a_network_whose_status_is_corrupt(
        netns_kit: Any, root: Path, damage: str) -> None:
    ns = netns_kit.make_netns()
    state = root / "state"
    for name, subnet, bridge in (("good", "10.98.0", "vnt16g"), ("bad", "10.99.0", "vnt16x")):
        (root / f"{name}.xml").write_text(network_xml(name, subnet, bridge))
        assert cli(ns, state, "net-define", str(root / f"{name}.xml")).returncode == 0
    assert cli(ns, state, "net-start", "good").returncode == 0
    without_bad = kernel(netns_kit, ns)
    files_without_bad = tree(state, skip=lambda p: p.name == "virtnet.lock")
    started = cli(ns, state, "net-start", "bad")
    assert started.returncode == 0, started.stderr
    assert "vnt16x" in netns_kit.ns_links(ns)
    status = state / "run" / "network" / "bad.json"
    corrupt(status, damage)

    listed = cli(ns, state, "net-list", "--all", "--name")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["good"]
    assert f"warning: network 'bad' is left out: {status}" in listed.stderr

    destroyed = cli(ns, state, "net-destroy", "bad")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert "Network bad destroyed" in destroyed.stdout
    assert str(status) in destroyed.stderr  # says which file it could not trust
    source = {"garbage": "what a start of its persistent definition makes",
              "garbage-and-journal": "what its start journal says",
              "bad-field": "what its actions say", "live-xml": "from its status record"}
    assert source[damage] in destroyed.stderr, destroyed.stderr
    assert kernel(netns_kit, ns) == without_bad
    assert tree(state, skip=lambda p: p.name == "virtnet.lock") == files_without_bad

    # the state is whole again: bad starts and stops as before
    assert cli(ns, state, "net-start", "bad").returncode == 0
    assert cli(ns, state, "net-destroy", "bad").returncode == 0
    assert cli(ns, state, "net-destroy", "good").returncode == 0


def test_api_lists_the_rest_and_destroys_a_network_whose_status_is_corrupt(
        netns_kit: Any, root: Path) -> None:
    ns = netns_kit.make_netns()
    state = root / "state"
    daemon = VirtnetdProcess(ns, state, log_path=root / "virtnetd.log")
    try:
        daemon.start()
        with daemon.client() as api:
            api.define(network_xml("good", "10.98.0", "vnt16g"), start=True)
            api.define(network_xml("bad", "10.99.0", "vnt16x"))
            without_bad = kernel(netns_kit, ns)
            api.start("bad")
            status = state / "run" / "network" / "bad.json"
            corrupt(status, "garbage")
            assert [row["name"] for row in api.networks(all=True)] == ["good"]
            assert f"network 'bad' is left out: {status}" in daemon.log()
            forwarded = daemon.virtnet("net-list", "--all", "--name")  # the CLI, through it
            assert forwarded.stdout.split() == ["good"]
            assert f"warning: network 'bad' is left out: {status}" in forwarded.stderr
            answer = api.destroy("bad")
            assert answer["name"] == "bad" and answer["active"] is False
            assert kernel(netns_kit, ns) == without_bad
            assert not status.exists()
            assert [row["name"] for row in api.networks(all=True)] == ["bad", "good"]
            api.destroy("good")
    finally:
        daemon.stop()
