"""The CLI prints the same and exits the same, in-process (``--direct``) and through virtnetd.

One script of commands covering every verb but net-edit (checked in test_daemon.py) — good
and bad definitions, relative file paths, stdin, snippets from files, usage errors, virsh's
errors, ports, a transient network — runs twice in the same namespace and state directory
(with a daemon serving both): first with ``--direct``, then through the daemon. Every
command's stdout, stderr and exit status must match, after replacing what differs by nature
between two runs (random port UUIDs, interface indexes). Each forwarded command must really
have been forwarded (the client's timing line says so), but an unknown verb.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kit.daemon import VirtnetdProcess, bytecode_env
from virtnet.host.netns import pids_in_netns as _pids_in

pytestmark = pytest.mark.netns

NET_UUID = "5bde3cfc-22ab-4b3f-9c5e-6d4a1f0b7e21"
OTHER_UUID = "6c1f4a0e-8e4b-4d0e-b1e6-0f3a2e9c5d42"
PORT_UUID = "7d2e5b1f-9f5c-4e1f-a2f7-1a4b3fad6e53"
GOOD = (f"<network><name>good</name><uuid>{NET_UUID}</uuid><forward mode='nat'/>"
        "<bridge name='virbr0' stp='off'/><mac address='52:54:00:94:00:01'/>"
        "<ip address='10.94.0.1' netmask='255.255.255.0'>"
        "<dhcp><range start='10.94.0.100' end='10.94.0.150'/></dhcp></ip></network>\n")
OTHER = (f"<network><name>other</name><uuid>{OTHER_UUID}</uuid>"
         "<bridge name='virbr1' stp='off'/><mac address='52:54:00:94:00:02'/></network>\n")
TRANSIENT = ("<network><name>tr</name><uuid>8e3f6c2a-0a6d-4f2a-b3a8-2b5c4abe7f64</uuid>"
             "<bridge name='virbr2' stp='off'/><mac address='52:54:00:94:00:03'/>"
             "<ip address='10.95.0.1' netmask='255.255.255.0'/></network>\n")
BAD = "<network><name>bad</name><forward mode='nat'/><ip address='10.96.0.1' prefix='99'/>" \
      "</network>\n"
BROKEN = "<network><name>broken</name>\n"
HOST = "<host mac='52:54:00:00:00:09' name='nine' ip='10.94.0.9'/>\n"
HOST2 = "<host mac='52:54:00:00:00:0a' name='ten' ip='10.94.0.10'/>"
PORT = (f"<networkport><uuid>{PORT_UUID}</uuid><owner><name>vm2</name>"
        "<uuid>9f4a7d3b-1b7e-4a3b-84b9-3c6d5bcf8a75</uuid></owner>"
        "<mac address='52:54:00:00:01:02'/></networkport>\n")

SCRIPT: list[tuple[list[str], str | None]] = [
    (["validate", "good.xml", "bad.xml", "broken.xml"], None),
    (["validate", "--json", "good.xml", "missing.xml"], None),
    (["format", "good.xml"], None),
    (["format", "missing.xml"], None),
    (["format", "adir"], None),
    (["format", "-"], BROKEN),
    (["update", "good.xml", "add", "ip-dhcp-host", HOST.strip()], None),
    (["update", "good.xml", "add", "ip-dhcp-host", "@host.xml"], None),
    (["update", "good.xml", "add", "ip-dhcp-host", "nofile.xml"], None),
    (["dnsmasq-conf", "good.xml"], None),
    (["dnsmasq-conf", "--hostsfile", "good.xml"], None),
    (["net-list", "--all"], None),
    (["net-define", "good.xml"], None),
    (["net-define", "-"], OTHER),
    (["net-define", "bad.xml"], None),
    (["net-define", "broken.xml"], None),
    (["net-list", "--all"], None),
    (["net-list", "--all", "--name"], None),
    (["net-list", "--all", "--uuid"], None),
    (["net-list", "--all", "--json"], None),
    (["net-list", "--table", "--name"], None),
    (["net-info", "good"], None),
    (["net-info", "nope"], None),
    (["net-uuid", "good"], None),
    (["net-name", NET_UUID], None),
    (["net-name", "short"], None),
    (["net-dumpxml", "good", "--inactive"], None),
    (["plan", "good"], None),
    (["plan", "--commands", "good"], None),
    (["plan", "transient.xml"], None),
    (["plan", "nothing-like-it"], None),
    (["net-autostart", "good"], None),
    (["net-list", "--all", "--autostart"], None),
    (["net-autostart", "--disable", "good"], None),
    (["net-start", "good"], None),
    (["net-start", "good"], None),
    (["net-list"], None),
    (["net-update", "good", "add", "ip-dhcp-host", HOST.strip(), "--live", "--config"], None),
    (["net-update", "good", "add", "ip-dhcp-host", "host2.xml"], None),
    (["net-update", "good", "add", "ip-dhcp-host", "missing.xml"], None),
    (["net-update", "good", "add", "ip-dhcp-host", HOST2, "--current", "--live"], None),
    (["net-dumpxml", "good"], None),
    (["net-dhcp-leases", "good"], None),
    (["net-dhcp-leases", "good", "--mac", "zz"], None),
    (["port-create", "good", "--mac", "52:54:00:00:01:01", "--owner", "vm1"], None),
    (["port-create", "good", "--file", "port.xml"], None),
    (["port-create", "good", "--mac", "52:54:00:00:01:03", "--inbound", "100,200,0"], None),
    (["port-create"], None),
    (["port-list", "good"], None),
    (["domif-xml", "good", "--mac", "52:54:00:00:01:09"], None),
    (["domif-xml", "good", "--port", PORT_UUID], None),
    (["domif-xml", "good", "--port", "no-such-port"], None),
    (["port-dumpxml", "good", PORT_UUID], None),
    (["port-delete", "good", PORT_UUID], None),
    (["port-delete", "good", "52:54:00:00:01:01"], None),
    (["port-delete", "good", PORT_UUID], None),
    (["net-info", "good"], None),
    (["net-destroy", "good"], None),
    (["net-destroy", "good"], None),
    (["net-create", "transient.xml"], None),
    (["net-list", "--transient"], None),
    (["net-undefine", "tr"], None),
    (["net-destroy", "tr"], None),
    (["net-undefine", "good"], None),
    (["net-undefine", "other"], None),
    (["net-list", "--all"], None),
    (["net-start"], None),
    (["net-frobnicate", "x"], None),
]

UUID_RE = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
FIXED_UUIDS = {NET_UUID, OTHER_UUID, PORT_UUID}


def normalize(text: str) -> str:
    """What differs between two runs by nature: generated port UUIDs, interface indexes."""
    text = UUID_RE.sub(lambda m: m.group(0) if m.group(0) in FIXED_UUIDS else "<uuid>", text)
    return re.sub(r"ifindex \d+", "ifindex N", text)


@dataclass
class Outcome:
    argv: list[str]
    status: int
    stdout: str
    stderr: str
    forwarded: bool | None


def run_script(daemon: VirtnetdProcess, workdir: Path, direct: bool) -> list[Outcome]:
    outcomes = []
    for argv, stdin in SCRIPT:
        proc = daemon.virtnet(*argv, direct=direct, check=False, input=stdin, cwd=workdir,
                              env={"VIRTNET_CLIENT_TIMING": "1"})
        forwarded = None
        stderr_lines = []
        for line in proc.stderr.splitlines(keepends=True):
            if line.startswith("virtnet-timing: "):
                forwarded = json.loads(line.split(": ", 1)[1])["forwarded"]
            else:
                stderr_lines.append(line)
        outcomes.append(Outcome(argv, proc.returncode, normalize(proc.stdout),
                                normalize("".join(stderr_lines)), forwarded))
    return outcomes


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[VirtnetdProcess, Path]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")
    ns = "vnt-" + secrets.token_hex(4)
    root = Path(tempfile.mkdtemp(prefix="vnt-modes-"))
    root.chmod(0o755)
    workdir = root / "work"
    workdir.mkdir()
    for name, text in (("good.xml", GOOD), ("bad.xml", BAD), ("broken.xml", BROKEN),
                       ("transient.xml", TRANSIENT), ("host.xml", HOST), ("host2.xml", HOST2),
                       ("port.xml", PORT)):
        (workdir / name).write_text(text)
    (workdir / "adir").mkdir()
    daemon = VirtnetdProcess(ns, root / "state", env=bytecode_env(root / "pycache"))
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=30)
        daemon.start()
        yield daemon, workdir
    finally:
        daemon.stop()
        for pid in _pids_in(ns):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", ns], timeout=30, check=False)
        shutil.rmtree(root, ignore_errors=True)




def test_every_verb_prints_the_same_direct_and_through_the_daemon(
        setup: tuple[VirtnetdProcess, Path]) -> None:
    daemon, workdir = setup
    direct = run_script(daemon, workdir, direct=True)
    assert all(outcome.forwarded is False for outcome in direct)
    # The direct run left nothing behind: the second run starts from the same state.
    assert daemon.virtnet("net-list", "--all", "--name", direct=True).stdout == "\n"
    through = run_script(daemon, workdir, direct=False)
    not_forwarded = [o.argv for o in through if o.forwarded is not True]
    # Only a verb the daemon does not know to run (here: no verb at all) runs in the client.
    assert not_forwarded == [["net-frobnicate", "x"]]
    for one, other in zip(direct, through):
        assert (other.status, other.stdout, other.stderr) == (
            one.status, one.stdout, one.stderr), one.argv
    # The script exercises what it means to: successes, refusals and usage errors.
    statuses = {tuple(o.argv[:2]): o.status for o in direct}
    assert statuses[("net-start", "good")] == 1  # the second start: already active
    assert statuses[("net-frobnicate", "x")] == 2
    assert sum(o.status == 0 for o in direct) > 40
    assert "Network good started" in "".join(o.stdout for o in through)


def test_relative_state_dir_and_a_daemon_of_another_state_dir(
        setup: tuple[VirtnetdProcess, Path]) -> None:
    daemon, workdir = setup
    relative = os.path.relpath(daemon.state_dir, workdir)
    env = {"VIRTNET_CLIENT_TIMING": "1"}
    argv = [*_script(), "--netns", daemon.netns, "--state-dir", relative]
    listed = subprocess.run(argv + ["net-list", "--all"], cwd=workdir, capture_output=True,
                            text=True, timeout=60, env={**os.environ, **env})
    assert listed.returncode == 0 and '"forwarded":true' in listed.stderr
    # dnsmasq-conf prints paths under the state directory as the user spelt it: in-process.
    conf = subprocess.run(argv + ["dnsmasq-conf", "good.xml"], cwd=workdir, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})
    assert conf.returncode == 0 and '"forwarded":false' in conf.stderr
    assert f"{relative}/lib/dnsmasq" in conf.stdout
    # Another state directory has no daemon: the command runs in-process there.
    other = subprocess.run([*_script(), "--netns", daemon.netns, "--state-dir",
                            str(workdir / "elsewhere"), "net-list", "--all"],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, **env})
    assert other.returncode == 0 and '"forwarded":false' in other.stderr


def _script() -> list[str]:
    from tests.kit.daemon import script

    return script("virtnet")


def test_the_client_keeps_stdout_and_stderr_in_order(setup: tuple[VirtnetdProcess, Path],
                                                      ) -> None:
    daemon, _ = setup
    # virsh's failure: its blank line on stdout, then the error lines on stderr.
    proc = subprocess.run(
        [*_script(), "--netns", daemon.netns, "--state-dir", str(daemon.state_dir),
         "net-destroy", "nope"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == ("\nerror: failed to get network 'nope'\n"
                           "error: Network not found: no network with matching name 'nope'\n")


def test_help_and_version_run_here(setup: tuple[VirtnetdProcess, Path]) -> None:
    daemon, _ = setup
    for argv in (["--help"], ["net-list", "--help"], ["--version"]):
        proc = daemon.virtnet(*argv, env={"VIRTNET_CLIENT_TIMING": "1"})
        assert '"forwarded":false' in proc.stderr
        assert proc.stdout.strip()


def test_forwarded_output_matches_with_any_value(setup: tuple[VirtnetdProcess, Path]) -> None:
    """Arguments with quotes, backslashes, control characters and non-ASCII text survive the
    client's hand-written JSON (the network does not exist: the error echoes the name)."""
    daemon, _ = setup
    for name in ['we"ird\\name', "tab\there", "ünï-cødé ✓", "new\nline"]:
        direct = daemon.virtnet("net-info", name, direct=True, check=False)
        through = daemon.virtnet("net-info", name, check=False,
                                 env={"VIRTNET_CLIENT_TIMING": "1"})
        assert '"forwarded":true' in through.stderr
        stderr = "".join(line for line in through.stderr.splitlines(keepends=True)
                         if not line.startswith("virtnet-timing: "))
        assert (through.returncode, through.stdout, stderr) == (
            direct.returncode, direct.stdout, direct.stderr)
