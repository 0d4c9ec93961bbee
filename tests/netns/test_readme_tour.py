"""The README's quick tour, run from README.md itself, top to bottom, so the two cannot drift.

The tour's code blocks (the indented lines between "## A quick tour" and the paragraph after
it) are run as one bash script with `set -e`: the first command that fails fails the test, and
the trace names it. Only the names that would collide with another run are made unique: the
namespace `sandbox`, and the files under /tmp the tour writes (its state dir, the graph, the
changed definition). The script runs in a session of its own, so that whatever it started and
left running (the tour starts virtnetd in the background and stops it) is found afterwards.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TOUR_TIMEOUT_S = 300


def tour_script(readme: str) -> str:
    """The indented lines of the quick tour section, as a script."""
    section = readme.split("\n## A quick tour\n", 1)[1]
    section = section.split("\nEvery command that prints data", 1)[0]
    lines = [line[4:] for line in section.splitlines() if line.startswith("    ")]
    assert lines, "README.md: the quick tour has no commands"
    return "\n".join(lines) + "\n"


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_tour_script_is_the_readmes() -> None:
    script = tour_script(README.read_text())
    # the tour covers what it promises: definitions, a started network, insight, the daemon
    for verb in ("validate", "net-define", "net-start", "doctor", "lab", "graph",
                 "port-create", "net-apply", "net-destroy"):
        assert re.search(rf"^virtnet .*\b{verb}\b", script, re.MULTILINE), verb
    assert re.search(r"^virtnetd .*&", script, re.MULTILINE)


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    ns = f"vnt-tour-{secrets.token_hex(3)}"
    script = tour_script(README.read_text())
    script = re.sub(r"\bsandbox\b", ns, script)
    script = script.replace("/tmp/", f"{tmp_path}/")
    (tmp_path / "tour.sh").write_text(script)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    proc = subprocess.Popen(["bash", "-e", "-x", str(tmp_path / "tour.sh")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    leftovers: list[int] = []
    try:
        try:
            output, _ = proc.communicate(timeout=TOUR_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate(timeout=30)
            pytest.fail(f"the tour did not finish in {TOUR_TIMEOUT_S} s:\n{output[-4000:]}")
        deadline = time.monotonic() + 10
        while (leftovers := _session_pids(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for pid in _session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30,
                       check=False)
    assert proc.returncode == 0, f"the tour stopped at the last command traced:\n{output[-4000:]}"
    assert not leftovers, f"the tour left processes running: {leftovers}"
    # what the tour says it shows, it shows
    assert "Network default destroyed" in output
    assert (tmp_path / "topo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    port: dict[str, Any] = json.loads(re.search(r"^\{.*?^\}", output, re.M | re.S).group(0))
    # a made-up MAC (libvirt's prefix), and the fragments that use the port
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", port["mac"])
    assert f"<target dev='{port['device']}' managed='no'/>" in port["attach"]["libvirt"]
    assert "<interface type='bridge'>\n  <source bridge='virbr0'/>" in output  # domif-xml
    assert re.search(r"port [0-9a-f-]{36}: tap vnet\d+ open as fd \d+, guest MAC 52:54:00:",
                     output)  # port-exec
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=30, check=True).stdout
    assert ns not in listed.split()
