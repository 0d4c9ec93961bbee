"""Running CLI verbs inside the daemon (virtnet.daemon.invoke), without root.

- cli.py reads files only in the two ways invoke routes to what a client sent (``read_input``
  and ``Path(x).is_file()/.read_text()``); a new way would let a forwarded command read files
  on the daemon's side, so this test fails first.
- The verbs that only read files and the state (validate, format, update, dnsmasq-conf,
  net-list, net-info of a missing network, usage errors) print exactly the same through
  ``invoke`` (files given as content, from another working directory) as ``virtnet --direct``
  does, run in a separate interpreter so the stream routing never touches pytest's.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import virtnet.face.cli

CLI_SOURCE = Path(virtnet.face.cli.__file__)
FILES = {
    "good.xml": "<network><name>good</name><uuid>5bde3cfc-22ab-4b3f-9c5e-6d4a1f0b7e21</uuid>"
                "<forward mode='nat'/><bridge name='virbr0'/><mac address='52:54:00:94:00:01'/>"
                "<ip address='10.94.0.1' netmask='255.255.255.0'><dhcp>"
                "<range start='10.94.0.100' end='10.94.0.150'/></dhcp></ip></network>\n",
    "bad.xml": "<network><name>bad</name><ip address='10.96.0.1' prefix='99'/></network>\n",
    "broken.xml": "<network><name>broken</name>\n",
    "typo.xml": "<network>\n<name>typo</name>\n<forwrd mode='nat'/>\n</network>\n",
    "host.xml": "<host mac='52:54:00:00:00:09' name='nine' ip='10.94.0.9'/>\n",
    "latin1.xml": "<host mac='52:54:00:00:00:09' name='n\xe9uf' ip='10.94.0.9'/>\n",
}
SCRIPT = [
    (["validate", "good.xml", "bad.xml", "broken.xml", "missing.xml"], None),
    (["validate", "--json", "good.xml", "bad.xml"], None),
    (["validate", "typo.xml"], None),
    (["net-define", "--validate", "typo.xml"], None),  # refused: the state stays as it was
    (["format", "good.xml"], None),
    (["format", "adir"], None),
    (["format", "-"], FILES["good.xml"]),
    (["update", "good.xml", "add", "ip-dhcp-host", "@host.xml"], None),
    (["update", "good.xml", "add", "ip-dhcp-host", "host.xml"], None),
    (["update", "good.xml", "add", "ip-dhcp-host", "@nofile.xml"], None),
    (["update", "good.xml", "add", "ip-dhcp-host", "@latin1.xml"], None),
    (["dnsmasq-conf", "good.xml"], None),
    (["dnsmasq-conf", "--addnhosts", "--hostsfile", "good.xml"], None),
    (["net-list", "--all"], None),
    (["net-info", "nope"], None),
    (["net-start"], None),
    (["no-such-verb"], None),
]


def test_cli_reads_files_only_through_what_invoke_routes() -> None:
    tree = ast.parse(CLI_SOURCE.read_text())
    functions = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    opens = [f.name for f in functions.values() for n in ast.walk(f)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "open"]
    assert opens == ["read_input"]
    stdin_reads = [f.name for f in functions.values() for n in ast.walk(f)
                   if isinstance(n, ast.Attribute) and n.attr == "stdin"]
    # read_input reads '-'; net_edit (never forwarded) asks whether stdin is a terminal.
    assert sorted(set(stdin_reads)) == ["net_edit_cmd", "read_input"]
    for function in functions.values():
        for node in ast.walk(function):
            is_path_call = (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call)
                            and isinstance(node.value.func, ast.Name)
                            and node.value.func.id == "Path")
            if is_path_call and function.name != "net_edit_cmd":
                assert node.attr in ("read_text", "is_file"), (function.name, node.attr)
    for name in ("read_input", "engine_of", "port_manager_of", "Path"):
        assert hasattr(virtnet.face.cli, name)


INVOKER = """
import base64, json, os, sys
from pathlib import Path
from virtnet.daemon import invoke
from virtnet.service.engine import Engine
from virtnet.paths import StatePaths
from virtnet.service.ports import PortManager

state, workdir, script = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
engine = Engine(StatePaths.under(Path(state)))
invoke.install(invoke.Resident(engine, PortManager(engine)))
os.chdir("/")  # the daemon's working directory is not the client's
results = []
for argv, stdin in script:
    files = {}
    for token in argv[1:]:
        for name in (token, token[1:]):
            path = os.path.join(workdir, name)
            if os.path.isfile(path):
                files[name] = open(path, "rb").read()
            elif os.path.isdir(path):
                files[name] = 21
    result = invoke.invoke(argv, invoke.ClientFiles(files, stdin.encode() if stdin else None),
                           state)
    results.append([result.status, result.output])
sys.__stdout__.write(json.dumps(results))
"""


def test_read_only_verbs_print_the_same_through_invoke(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    for name, text in FILES.items():
        (workdir / name).write_bytes(text.encode("latin-1"))
    (workdir / "adir").mkdir()
    state = str(tmp_path / "state")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", INVOKER, state, str(workdir),
                           json.dumps(SCRIPT)], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    through = json.loads(proc.stdout)
    for (argv, stdin), (status, output) in zip(SCRIPT, through):
        direct = subprocess.run(
            [sys.executable, "-m", "virtnet.face.fastcli", "--direct", "--state-dir", state, *argv],
            cwd=workdir, input=stdin, capture_output=True, text=True, timeout=120, env=env)
        stdout = "".join(text for stream, text in output if stream == 1)
        stderr = "".join(text for stream, text in output if stream == 2)
        assert (status, stdout, stderr) == (direct.returncode, direct.stdout, direct.stderr), argv
    assert [status for status, _ in through] == [1, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 2, 0, 1, 2, 2]
