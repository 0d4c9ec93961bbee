"""docs/api.md and examples/vm_manager_port.py, run against a daemon in a test namespace.

Every ``sh`` block of docs/api.md runs in order (each curl must succeed; one that streams
events may end at its --max-time); a ``json`` block right after an ``sh`` block is the answer
of that block's last curl, abridged: each field it shows must be in the real answer (values
differ: UUIDs, pids). The example creates a port with its tap handed over, gives a guest
namespace a DHCP lease through it, and tears everything down.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.daemon import VirtnetdProcess, bytecode_env

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
API_DOC = ROOT / "docs" / "api.md"
EXAMPLE = ROOT / "examples" / "vm_manager_port.py"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
CURL_TIMEOUT_EXIT = 28
# Each curl's output, then its exit status, so a block of several curls can be checked.
CURL_WRAPPER = 'curl() { command curl "$@"; local rc=$?; printf "\\n@@@%d@@@\\n" "$rc"; }\n'


def doc_blocks(text: str) -> list[tuple[str, str, str | None]]:
    """(language, code, the json block right after it or None) for every sh block."""
    blocks = []
    matches = list(FENCE.finditer(text))
    for index, match in enumerate(matches):
        if match.group(1) != "sh":
            continue
        answer = None
        if index + 1 < len(matches):
            after = matches[index + 1]
            between = text[match.end():after.start()]
            if after.group(1) == "json" and not between.strip():
                answer = after.group(2)
        blocks.append((match.group(1), match.group(2), answer))
    return blocks


def shape_matches(shown: Any, real: Any, where: str = "answer") -> list[str]:
    """Where REAL lacks what SHOWN (the documentation) has: keys, recursively."""
    if isinstance(shown, dict):
        if not isinstance(real, dict):
            return [f"{where}: expected an object, got {real!r}"]
        problems = []
        for key, value in shown.items():
            if key not in real:
                problems.append(f"{where}: no field '{key}'")
            else:
                problems += shape_matches(value, real[key], f"{where}.{key}")
        return problems
    if isinstance(shown, list):
        if not isinstance(real, list):
            return [f"{where}: expected an array, got {real!r}"]
        if shown and real and isinstance(shown[0], (dict, list)):
            return shape_matches(shown[0], real[0], f"{where}[0]")
        return []
    return []


@pytest.fixture(scope="module")
def daemon() -> Iterator[VirtnetdProcess]:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")
    for tool in ("curl", "udhcpc"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    ns = "vnt-" + secrets.token_hex(4)
    root = Path(tempfile.mkdtemp(prefix="vnt-docs-"))
    root.chmod(0o755)
    process = VirtnetdProcess(ns, root / "state", env=bytecode_env(root / "pycache"))
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=30)
        process.start()
        yield process
    finally:
        process.stop()
        from virtnet.host.netns import pids_in_netns

        for pid in pids_in_netns(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", ns], timeout=30, check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_every_curl_example_of_the_api_doc_runs(daemon: VirtnetdProcess) -> None:
    blocks = doc_blocks(API_DOC.read_text())
    assert len(blocks) >= 12
    env = {**os.environ, "SOCK": str(daemon.socket_path),
           "NS_FILE": f"/run/netns/{daemon.netns}"}
    checked_answers = 0
    for _, code, answer in blocks:
        proc = subprocess.run(["bash", "-c", CURL_WRAPPER + code], capture_output=True,
                              text=True, timeout=60, env=env)
        assert proc.returncode == 0, (code, proc.stderr)
        pieces = re.split(r"\n@@@(\d+)@@@\n", proc.stdout)
        outputs, statuses = pieces[0::2][:-1], [int(s) for s in pieces[1::2]]
        calls = [line for line in code.splitlines() if line.lstrip().startswith("curl ")]
        assert len(statuses) == len(calls), code
        for call, status, output in zip(calls, statuses, outputs):
            streaming = "--max-time" in call
            assert status == 0 or (streaming and status == CURL_TIMEOUT_EXIT), (call, status)
            if streaming:
                events = [json.loads(line) for line in output.splitlines() if line.strip()]
                assert events and all("seq" in e and "type" in e for e in events)
        if answer is not None:
            shown = json.loads(answer)
            if calls and "--max-time" in calls[-1]:
                real: Any = json.loads(outputs[-1].splitlines()[0])
            else:
                real = json.loads(outputs[-1])
            assert shape_matches(shown, real) == [], (code, real)
            checked_answers += 1
    assert checked_answers >= 10
    with daemon.client() as api:
        assert api.networks(all=True) == []  # the doc cleans up after itself


def test_the_vm_manager_example(daemon: VirtnetdProcess) -> None:
    xml = ("<network><name>vmnet</name><forward mode='nat'/><bridge name='virbr7' stp='off'/>"
           "<ip address='10.99.7.1' netmask='255.255.255.0'><dhcp>"
           "<range start='10.99.7.100' end='10.99.7.150'/></dhcp></ip></network>")
    guest_ns = "vnt-" + secrets.token_hex(4)
    with daemon.client() as api:
        api.define(xml, start=True)
    try:
        proc = subprocess.run(
            [sys.executable, str(EXAMPLE), "--socket", str(daemon.socket_path), "--network",
             "vmnet", "--guest-ns", guest_ns, "--mac", "52:54:00:99:07:01"],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("port ") and "handed over" in lines[0]
        address = re.search(r"got (10\.99\.7\.\d+) on eth0", proc.stdout)
        assert address is not None, proc.stdout
        assert f"event: lease-added {address.group(1)} for 52:54:00:99:07:01" in proc.stdout
        assert f"net-dhcp-leases: {address.group(1)}/24 for 52:54:00:99:07:01" in proc.stdout
        assert lines[-1].startswith(f"torn down: guest {guest_ns} removed, port ")
        assert not Path(f"/run/netns/{guest_ns}").exists()
        with daemon.client() as api:
            assert api.ports("vmnet") == []
            assert any(lease["mac"] == "52:54:00:99:07:01" for lease in api.leases("vmnet"))
    finally:
        subprocess.run(["ip", "netns", "delete", guest_ns], capture_output=True, timeout=30,
                       check=False)
        with daemon.client() as api:
            api.destroy("vmnet")
            api.undefine("vmnet")
