"""Running CLI verbs inside the daemon (virtnet.face.verbs), without root.

- A forwarded verb reads files only through its session (``read_input`` and ``file_path``),
  which inside the daemon is what the client sent; a new way would let a forwarded command
  read files on the daemon's side, so this test fails first.
- The verbs that only read files and the state (validate, format, update, dnsmasq-conf,
  net-list, net-info of a missing network, usage errors) print exactly the same through
  ``verbs.invoke`` (files given as content, from another working directory) as ``virtnet --direct``
  does, run in a separate interpreter so the stream routing never touches pytest's.
"""

from __future__ import annotations

import ast
import importlib.util
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


def _verb_name(function: ast.FunctionDef) -> str | None:
    """The verb a function is the command of (``@command("name")``), if any."""
    for deco in function.decorator_list:
        if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Name)
                and deco.func.id == "command" and deco.args
                and isinstance(deco.args[0], ast.Constant)):
            return str(deco.args[0].value)
    return None


def test_forwarded_verbs_read_files_only_through_their_session() -> None:
    """A verb the daemon runs reads what the client sent (the session's files), never a path
    of the daemon's side: no open(), no stdin, no Path() of its own, in the modules of
    forwarded verbs (all their functions when every verb of the module is forwarded, else
    the forwarded verbs' own functions)."""
    from virtnet.face.cli import VERB_GROUPS
    from virtnet.face.fastcli import FORWARDED_VERBS

    checked = 0
    for module_name, names in VERB_GROUPS.items():
        forwarded = set(names) & FORWARDED_VERBS
        if not forwarded:
            continue
        source = Path(importlib.util.find_spec(module_name).origin)
        tree = ast.parse(source.read_text())
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        if forwarded != set(names):
            functions = [f for f in functions if _verb_name(f) in forwarded]
        for function in functions:
            checked += 1
            for node in ast.walk(function):
                where = (module_name, function.name)
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                    assert node.func.id not in ("open", "Path"), where
                if isinstance(node, ast.Attribute) and node.attr in (
                        "stdin", "read_bytes", "read_text", "open", "is_file"):
                    # only of a path of the session: file_path(x).read_text(), .is_file()
                    value = node.value
                    assert (node.attr != "stdin" and isinstance(value, ast.Call)
                            and isinstance(value.func, ast.Name)
                            and value.func.id == "file_path"), where
    assert checked > 30
    # in this process's own files (cli.LocalFiles) only read_input opens, and net-edit (never
    # forwarded) asks whether stdin is a terminal
    tree = ast.parse(CLI_SOURCE.read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    opens = [f.name for f in functions for n in ast.walk(f)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "open"]
    assert opens == ["read_input"]
    stdin_reads = {f.name for f in functions for n in ast.walk(f)
                   if isinstance(n, ast.Attribute) and n.attr == "stdin"}
    assert stdin_reads == {"net_edit_cmd", "read_input"}


INVOKER = """
import base64, json, os, sys
from pathlib import Path
from virtnet.face import verbs
from virtnet.service.engine import Engine
from virtnet.paths import StatePaths
from virtnet.service.ports import PortManager

state, workdir, script = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
engine = Engine(StatePaths.under(Path(state)))
services = verbs.ResidentServices(engine, PortManager(engine))
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
    result = verbs.invoke(argv, verbs.ClientFiles(files, stdin.encode() if stdin else None),
                          state, services)
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
