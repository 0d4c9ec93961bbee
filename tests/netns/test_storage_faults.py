"""Every verb on a state directory that is full, read-only or unreadable (issue #16, hole 6).

Three faults, each through the CLI in-process (``--direct``) and through a running virtnetd:

- full: the state directory is a small tmpfs, filled to ENOSPC;
- read-only: a read-only bind mount stacked over it (a remount would be refused: dnsmasq
  keeps its lease file open for writing);
- permission denied: the definition, status and dnsmasq directories chmod 000, for a root
  that lacks CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (the CLI and the daemon run under
  ``setpriv --bounding-set``), so the kernel refuses it as it refuses any other user — and
  it keeps CAP_NET_ADMIN, so the verbs that change the network get as far as they can.

The tmpfs lives in a mount namespace of the test's own (held by a sleeping process, slave
to the host's so the test's network namespace shows up in it): nothing is mounted on the
host, and the mounts vanish with the holder even if the test is killed. Every command runs
in it (``nsenter --mount``); the test reads the tree through ``/proc/HOLDER/root``.

Before the fault a network ``up`` is started (dnsmasq, a port, a forward) and ``down`` is
defined with autostart. Then every verb runs; each one must either succeed (reads must, on a
full or read-only disk) or exit 1 with exactly one line naming the file and the errno, like
``cannot write /x/etc/networks/a.xml: No space left on device (ENOSPC)``, with no traceback,
every file of the tree byte-identical, no temp file left, and the network namespace (links,
addresses, routes, nftables, processes) as it was. Through the daemon, the daemon must still
run, answer the API with the error's status, and once the fault is lifted serve a change
again. Two more cases: only dnsmasq's directory full or read-only (a start gets as far as
writing its files, then undoes everything), and an unprivileged user (uid nobody) on a state
directory it cannot read.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.kit.daemon import CLI_TIMEOUT_S, VirtnetdProcess, bytecode_env, script

pytestmark = pytest.mark.netns

HOLDER_TIMEOUT_S = 10.0
TMPFS_SIZE = "4m"
DROP_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
ERRNO_NAMES = ("ENOSPC", "EROFS", "EACCES")

UP_UUID = "3b1f6a2e-97a1-4c1e-9a5e-0d7f3c2b9a01"
UP = ("<network><name>up</name><uuid>%s</uuid><forward mode='nat'/>"
      "<bridge name='vntup0' stp='off'/><mac address='52:54:00:97:00:01'/>"
      "<dns><host ip='10.97.0.7'><hostname>seven</hostname></host></dns>"
      "<ip address='10.97.0.1' netmask='255.255.255.0'><dhcp>"
      "<range start='10.97.0.100' end='10.97.0.150'/>"
      "<host mac='52:54:00:97:00:aa' name='aa' ip='10.97.0.20'/>%s"
      "</dhcp></ip></network>\n")
DOWN = ("<network><name>down</name><uuid>4c2e7b3f-98b2-4d2f-8b6f-1e8a4d3c0b02</uuid>"
        "<forward mode='nat'/><bridge name='vntdn0' stp='off'/>"
        "<mac address='52:54:00:98:00:01'/><ip address='10.98.0.1' netmask='255.255.255.0'>"
        "<dhcp><range start='10.98.0.100' end='%s'/>"
        "<host mac='52:54:00:98:00:aa' name='aa' ip='10.98.0.20'/></dhcp></ip></network>\n")
FRESH = ("<network><name>fresh</name><uuid>5d3f8c40-99c3-4e30-9c70-2f9b5e4d1c03</uuid>"
         "<bridge name='vntfr0' stp='off'/><mac address='52:54:00:99:00:01'/>"
         "<ip address='10.99.0.1' netmask='255.255.255.0'><dhcp>"
         "<range start='10.99.0.100' end='10.99.0.150'/></dhcp></ip></network>\n")
LATER = FRESH.replace("fresh", "later").replace("5d3f8c40", "6e4a9d51") \
    .replace("vntfr0", "vntla0").replace("52:54:00:99", "52:54:00:9a") \
    .replace("10.99.0", "10.100.0")
HOST = "<host mac='52:54:00:97:00:bb' name='bb' ip='10.97.0.21'/>"
HOST2 = "<host mac='52:54:00:97:00:cc' name='cc' ip='10.97.0.22'/>"
DOWN_HOST = "<host mac='52:54:00:98:00:bb' name='bb' ip='10.98.0.21'/>"
DNS_HOST = "<host ip='10.97.0.8'><hostname>eight</hostname></host>"
RANGE = "<range start='10.97.0.200' end='10.97.0.210'/>"
PORT_MAC = "52:54:00:97:00:10"
FILES = {
    "fresh.xml": FRESH,
    "later.xml": LATER,
    "up-changed.xml": UP % (UP_UUID, HOST2),
    "down-changed.xml": DOWN % "10.98.0.120",
}
# an editor for net-edit: changes the range's end (a real edit, saved through define)
EDITOR = "sed -i s/10.98.0.150/10.98.0.140/"


@dataclass(frozen=True)
class Op:
    argv: tuple[str, ...]
    reads: bool = False  # must work on a full or read-only disk


def op(*argv: str, reads: bool = False) -> Op:
    return Op(tuple(argv), reads)


# In an order where a verb that succeeds despite the fault (a removal needs no space) comes
# after the verbs whose state it changes.
OPS: list[Op] = [
    op("net-list", "--all", reads=True),
    op("net-list", "--all", "--json", reads=True),
    op("net-info", "up", reads=True),
    op("net-info", "down", reads=True),
    op("net-dumpxml", "up", reads=True),
    op("net-dumpxml", "down", "--inactive", reads=True),
    op("net-uuid", "up", reads=True),
    op("net-name", UP_UUID, reads=True),
    op("net-dhcp-leases", "up", reads=True),
    op("net-addresses", "up", reads=True),
    op("net-forward-list", "up", reads=True),
    op("port-list", "up", reads=True),
    op("port-dumpxml", "up", PORT_MAC, reads=True),
    op("plan", "down", reads=True),
    op("plan", "--commands", "fresh.xml", reads=True),
    op("validate", "fresh.xml", reads=True),
    op("format", "fresh.xml", reads=True),
    op("update", "fresh.xml", "add", "ip-dhcp-host", HOST.replace("10.97", "10.99"),
       reads=True),
    op("dnsmasq-conf", "fresh.xml", reads=True),
    op("net-apply", "--dry-run", "up-changed.xml", reads=True),
    op("net-new", "lab2", "--mode", "isolated", "--print", reads=True),
    op("doctor", "up", "--json"),  # exit 1 is its verdict on the network, not an error
    op("graph", "up", "-o", "{state}/up.dot"),  # a picture written where the user says
    op("graph", "up", "-o", "{state}/up.svg"),
    op("net-define", "fresh.xml"),
    op("net-define", "down-changed.xml"),
    op("net-update", "down", "add", "ip-dhcp-host", DOWN_HOST, "--config"),
    op("net-update", "up", "add", "ip-dhcp-host", HOST, "--live"),
    op("net-update", "up", "add", "ip-dhcp-host", HOST, "--live", "--config"),
    op("net-update", "up", "add", "ip-dhcp-host", HOST, "--config"),
    op("net-update", "up", "add", "dns-host", DNS_HOST, "--live"),
    op("net-update", "up", "add", "ip-dhcp-range", RANGE, "--live"),
    op("net-apply", "up-changed.xml"),
    op("net-apply", "down-changed.xml"),
    op("net-forward-add", "up", "--proto", "tcp", "--port", "8081", "--to", "10.97.0.51:80",
       "--live"),
    op("net-forward-add", "up", "--proto", "tcp", "--port", "8082", "--to", "10.97.0.52:80",
       "--config"),
    op("net-forward-add", "up", "--proto", "udp", "--port", "5353", "--to", "10.97.0.53"),
    op("net-forward-del", "up", "--proto", "tcp", "--port", "8080", "--live"),
    op("net-forward-del", "up", "--proto", "tcp", "--port", "8080", "--config"),
    op("port-create", "up", "--mac", "52:54:00:97:00:11"),
    op("port-create", "up", "--mac", "52:54:00:97:00:12", "--json"),
    op("net-new", "lab3", "--mode", "isolated", "--subnet", "auto"),
    op("net-new", "lab4", "--mode", "nat", "--subnet", "10.96.4.0/24"),
    op("net-start", "down"),
    op("net-create", "fresh.xml"),
    op("net-edit", "down"),
    op("net-autostart", "up"),
    op("port-delete", "up", PORT_MAC),
    op("net-destroy", "up"),
    op("net-autostart", "--disable", "down"),
    op("net-undefine", "down"),
]


# --- the mount namespace ---------------------------------------------------------------------


class MountSandbox:
    """A mount namespace of the test's own, held by a sleeping process (killed by pid)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "slave", "sleep", "3600"],
            start_new_session=True)
        own = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + HOLDER_TIMEOUT_S
        while os.readlink(f"/proc/{self.proc.pid}/ns/mnt") == own:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise AssertionError("unshare did not make a mount namespace")
            time.sleep(0.01)

    def prefix(self, cwd: Path | None = None) -> list[str]:
        """The command line prefix that runs a command inside (in CWD: entering a mount
        namespace moves to its root)."""
        where = [f"--wd={cwd}"] if cwd is not None else []
        return ["nsenter", "--target", str(self.proc.pid), "--mount", *where, "--"]

    def sh(self, *argv: str) -> None:
        subprocess.run([*self.prefix(), *argv], check=True, timeout=30, capture_output=True)

    def seen(self, path: Path) -> Path:
        """PATH as the sandbox sees it, from outside."""
        return Path(f"/proc/{self.proc.pid}/root{path}")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(HOLDER_TIMEOUT_S)


# --- one scenario: a state directory, a namespace, a fault -----------------------------------


@dataclass
class Outcome:
    op: Op
    status: int
    stdout: str
    stderr: str


@dataclass
class Scenario:
    sandbox: MountSandbox
    kit: Any
    ns: str
    root: Path  # test-owned, on the host: the definitions to hand over, logs, bytecode
    fault: str
    daemon: VirtnetdProcess | None = None
    env: dict[str, str] = field(default_factory=dict)
    only_lib: bool = False  # the fault hits only lib/ (dnsmasq's files), a tmpfs of its own

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def faulty(self) -> Path:
        """The file system the fault hits."""
        return self.state / "lib" if self.only_lib else self.state

    @property
    def caps_prefix(self) -> list[str]:
        return DROP_DAC if self.fault == "denied" else []

    def virtnet(self, *args: str, direct: bool, faulted: bool = True,
                check: bool = False, env: dict[str, str] | None = None) -> Outcome:
        argv = [*self.sandbox.prefix(self.root / "work"), *(self.caps_prefix if faulted else []),
                *script("virtnet"), "--netns", self.ns, "--state-dir", str(self.state)]
        if direct:
            argv.append("--direct")
        proc = subprocess.run(argv + list(args), capture_output=True, text=True,
                              timeout=CLI_TIMEOUT_S, cwd=self.root / "work",
                              env={**os.environ, **self.env, **(env or {})})
        if check and proc.returncode != 0:
            raise AssertionError(f"virtnet {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}{proc.stderr}")
        return Outcome(Op(tuple(args)), proc.returncode, proc.stdout, proc.stderr)

    # --- the state as it is --------------------------------------------------------------

    def tree(self) -> dict[str, tuple[Any, ...]]:
        """Every entry of the state directory: kind, mode, and content (hash) or target. The
        lock file's content (the last holder's pid, informative) is left out."""
        top = self.sandbox.seen(self.state)
        entries: dict[str, tuple[Any, ...]] = {}
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                rel = str(path.relative_to(top))
                st = path.lstat()
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISLNK(st.st_mode):
                    entries[rel] = ("link", os.readlink(path))
                elif stat.S_ISREG(st.st_mode):
                    digest = "" if name == "virtnet.lock" else \
                        hashlib.sha256(path.read_bytes()).hexdigest()
                    entries[rel] = ("file", mode, digest)
                elif stat.S_ISDIR(st.st_mode):
                    entries[rel] = ("dir", mode)
                else:
                    entries[rel] = ("other", stat.S_IFMT(st.st_mode))
        return entries

    def host(self) -> tuple[Any, ...]:
        kit = self.kit
        return (kit.ns_links(self.ns), kit.ns_addresses(self.ns), kit.ns_routes(self.ns),
                kit.ns_nft_ruleset(self.ns), sorted(kit.live_pids(self.ns)))

    # --- faults -------------------------------------------------------------------------

    def apply_fault(self) -> None:
        state = self.faulty
        if self.fault == "full":
            fd = os.open(self.sandbox.seen(state / "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                for size in (65536, 1):  # then what is left of the last page
                    try:
                        while os.write(fd, b"\0" * size):
                            pass
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC, exc
            finally:
                os.close(fd)
        elif self.fault == "readonly":
            self.sandbox.sh("mount", "--bind", str(state), str(state))
            self.sandbox.sh("mount", "-o", "remount,bind,ro", str(state))
        else:
            for sub in ("etc/networks", "run/network", "lib/dnsmasq"):
                os.chmod(self.sandbox.seen(state / sub), 0)

    def lift_fault(self) -> None:
        state = self.faulty
        if self.fault == "full":
            os.unlink(self.sandbox.seen(state / "filler"))
        elif self.fault == "readonly":
            self.sandbox.sh("umount", str(state))
        else:
            for sub in ("etc/networks", "run/network", "lib/dnsmasq"):
                os.chmod(self.sandbox.seen(state / sub), 0o700 if sub != "lib/dnsmasq"
                         else 0o755)


def is_error_line(line: str, as_json: bool) -> bool:
    """An error as the CLI prints it: `error: ...`, or with --json one object whose code says
    a file of virtnet's failed (see the README's error codes)."""
    if line.startswith("error: "):
        return True
    if not as_json:
        return False
    try:
        error = json.loads(line)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return error.get("code") == "storage" and bool(error.get("message"))


def traceback_in(outcome: Outcome) -> bool:
    text = outcome.stdout + outcome.stderr
    return "Traceback" in text or "internal error" in text


def problems_of(outcome: Outcome, scenario: Scenario, before_tree: dict[str, Any],
                after_tree: dict[str, Any], before_host: Any, after_host: Any) -> list[str]:
    """What is wrong with one verb's run on the faulted state (nothing: an empty list)."""
    problems = []
    traceback = traceback_in(outcome)
    if traceback:
        problems.append("traceback or internal error")
    if outcome.status not in (0, 1):
        problems.append(f"exit status {outcome.status}")
    errno_lines = [line for line in outcome.stderr.splitlines()
                   if re.search(r"\((%s)\)" % "|".join(ERRNO_NAMES), line)]
    temps = [name for name in after_tree if Path(name).name.endswith(".tmp")]
    if temps:
        problems.append(f"temp files left: {temps}")
    doctor = outcome.op.argv[0] == "doctor"
    failed = outcome.status != 0 and not doctor
    if outcome.op.reads and scenario.fault != "denied" and outcome.status != 0:
        problems.append("a read failed")
    if failed:
        if len(errno_lines) != 1:
            problems.append(f"{len(errno_lines)} lines naming the errno")
        elif str(scenario.state) not in errno_lines[0]:
            problems.append("the errno line names no file of the state directory")
        others = [line for line in outcome.stderr.splitlines()
                  if not is_error_line(line, "--json" in outcome.op.argv)]
        if others and not traceback:
            problems.append(f"lines that are not errors: {others}")
    if failed or outcome.op.reads:
        if after_tree != before_tree:
            changed = sorted(k for k in set(before_tree) | set(after_tree)
                             if before_tree.get(k) != after_tree.get(k))
            problems.append(f"the tree changed: {changed}")
        if after_host != before_host:
            problems.append("the network namespace changed")
    return problems


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def scenario_factory(netns_kit: Any) -> Iterator[Callable[..., Scenario]]:
    made: list[tuple[Scenario, Path]] = []
    sandboxes: list[MountSandbox] = []

    def make(fault: str, with_daemon: bool, only_lib: bool = False) -> Scenario:
        ns = netns_kit.make_netns()
        root = Path(tempfile.mkdtemp(prefix="vnt-disk-"))
        root.chmod(0o755)
        sandbox = MountSandbox()
        sandboxes.append(sandbox)
        scenario = Scenario(sandbox, netns_kit, ns, root, fault,
                            env={**bytecode_env(root / "pycache"), "EDITOR": EDITOR,
                                 "VISUAL": EDITOR}, only_lib=only_lib)
        made.append((scenario, root))
        work = root / "work"
        work.mkdir()
        for name, text in FILES.items():
            (work / name).write_text(text)
        scenario.state.mkdir()
        sandbox.sh("mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "vnt-state",
                   str(scenario.state))
        if only_lib:
            (sandbox.seen(scenario.state) / "lib").mkdir(mode=0o755)
            sandbox.sh("mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "vnt-lib",
                       str(scenario.state / "lib"))
        build(scenario)
        if with_daemon:
            scenario.daemon = SandboxedVirtnetd(scenario)
            scenario.daemon.start()
        return scenario

    try:
        yield make
    finally:
        for scenario, root in made:
            if scenario.daemon is not None:
                scenario.daemon.stop()
        for sandbox in sandboxes:
            sandbox.close()
        for scenario, root in made:
            shutil.rmtree(root, ignore_errors=True)


class SandboxedVirtnetd(VirtnetdProcess):
    """virtnetd inside the mount sandbox (with the fault's capabilities), its socket reached
    from outside through /proc/HOLDER/root."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        socket_path = scenario.sandbox.seen(scenario.state / "run" / "virtnetd.sock")
        super().__init__(scenario.ns, scenario.state, socket_path=socket_path,
                         env=scenario.env, log_path=scenario.root / "virtnetd.log")

    def argv(self) -> list[str]:
        return [*self.scenario.sandbox.prefix(), *self.scenario.caps_prefix,
                *script("virtnetd"), "--netns", self.netns, "--state-dir", str(self.state_dir),
                "--no-autostart"]


def build(scenario: Scenario) -> None:
    """up: started, with a port and a forward; down: defined, autostart; then the fault."""
    def run(*args: str, stdin: str | None = None) -> None:
        scenario.virtnet(*args, direct=True, faulted=False, check=True)

    work = scenario.root / "work"
    (work / "up.xml").write_text(UP % (UP_UUID, ""))
    (work / "down.xml").write_text(DOWN % "10.98.0.150")
    run("net-define", "up.xml")
    run("net-define", "down.xml")
    run("net-autostart", "down")
    run("net-start", "up")
    run("port-create", "up", "--mac", PORT_MAC)
    run("net-forward-add", "up", "--proto", "tcp", "--port", "8080", "--to", "10.97.0.50:80",
        "--live", "--config")


def run_ops(scenario: Scenario, direct: bool) -> dict[str, list[str]]:
    from virtnet.face.fastcli import FORWARDED_VERBS

    found: dict[str, list[str]] = {}
    for one in OPS:
        before_tree, before_host = scenario.tree(), scenario.host()
        argv = [arg.replace("{state}", str(scenario.state)) for arg in one.argv]
        outcome = scenario.virtnet(*argv, direct=direct, env={"VIRTNET_CLIENT_TIMING": "1"})
        timing = [line for line in outcome.stderr.splitlines(keepends=True)
                  if line.startswith("virtnet-timing: ")]
        stderr = "".join(line for line in outcome.stderr.splitlines(keepends=True)
                         if line not in timing)
        outcome = Outcome(one, outcome.status, outcome.stdout, stderr)
        problems = problems_of(outcome, scenario, before_tree, scenario.tree(), before_host,
                               scenario.host())
        forwarded = bool(timing) and '"forwarded":true' in timing[0]
        if forwarded != (not direct and one.argv[0] in FORWARDED_VERBS):
            problems.append(f"forwarded: {forwarded}")
        if problems:
            lines = outcome.stderr.strip().splitlines()
            shown = lines[-1:] if traceback_in(outcome) else lines
            found[" ".join(one.argv)] = problems + [f"exit {outcome.status}; stderr:"] + [
                f"  {line}" for line in shown]
        if scenario.daemon is not None:
            assert scenario.daemon.running, f"virtnetd died at {one.argv}"
    return found


def report(found: dict[str, list[str]]) -> str:
    tracebacks = sum("traceback or internal error" in problems for problems in found.values())
    lines = [f"{len(found)} of {len(OPS)} verbs misbehave ({tracebacks} with a traceback):"]
    for argv, problems in found.items():
        lines.append(f"- {argv}")
        lines.extend(f"    {problem}" for problem in problems)
    return "\n".join(lines)


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["full", "readonly", "denied"])
def test_every_verb_in_process(scenario_factory: Callable[[str, bool], Scenario],
                               fault: str) -> None:
    scenario = scenario_factory(fault, False)
    scenario.apply_fault()
    found = run_ops(scenario, direct=True)
    assert not found, report(found)


# what the daemon's API answers a define with, per fault (docs/api.md)
API_STATUS = {"full": 507, "readonly": 500, "denied": 500}


@pytest.mark.parametrize("fault", ["full", "readonly", "denied"])
def test_every_verb_through_virtnetd(scenario_factory: Callable[[str, bool], Scenario],
                                     fault: str) -> None:
    from virtnet.client import ApiError

    scenario = scenario_factory(fault, True)
    daemon = scenario.daemon
    assert daemon is not None
    scenario.apply_fault()
    # The API answers the error by its type, with the same one line.
    with daemon.client() as api:
        with pytest.raises(ApiError) as refused:
            api.define(LATER)
        assert refused.value.status == API_STATUS[fault], refused.value
        assert refused.value.kind == "StorageError"
        assert str(scenario.state) in refused.value.message
        assert re.search(r"\((ENOSPC|EROFS|EACCES)\)$", refused.value.message)
    found = run_ops(scenario, direct=False)  # the last ones free space
    assert not found, report(found)
    assert daemon.running
    assert "Traceback" not in daemon.log()
    # Once the fault is lifted, the same daemon serves changes again.
    scenario.lift_fault()
    defined = scenario.virtnet("net-define", "later.xml", direct=False, faulted=False)
    assert defined.status == 0, defined.stderr
    listed = scenario.virtnet("net-list", "--all", "--name", direct=False, faulted=False)
    assert "later" in listed.stdout.split()
    with daemon.client() as api:
        assert "later" in [row["name"] for row in api.networks(all=True)]


@pytest.mark.parametrize("fault", ["full", "readonly"])
def test_a_start_that_cannot_write_dnsmasq_files_undoes_everything(
        scenario_factory: Callable[..., Scenario], fault: str) -> None:
    """Only lib/ (dnsmasq's configuration, hosts and lease files) is full or read-only: the
    start gets as far as writing them, then undoes the bridge, its addresses and the
    firewall, and says which file it could not write and why; a live change of the running
    network's hosts file is rolled back the same way."""
    scenario = scenario_factory(fault, False, only_lib=True)
    scenario.apply_fault()
    expected = "ENOSPC" if fault == "full" else "EROFS"
    for argv, verb in ((("net-start", "down"), "start"), (("net-create", "fresh.xml"), "create"),
                       (("net-update", "up", "add", "ip-dhcp-host", HOST, "--live"), "update")):
        before_tree, before_host = scenario.tree(), scenario.host()
        outcome = scenario.virtnet(*argv, direct=True)
        assert outcome.status == 1, outcome
        assert "Traceback" not in outcome.stderr
        named = [line for line in outcome.stderr.splitlines() if f"({expected})" in line]
        assert len(named) == 1, outcome.stderr
        assert f"cannot write {scenario.state}/lib/dnsmasq/" in named[0], outcome.stderr
        assert scenario.host() == before_host, argv  # bridge, addresses, nft, processes
        assert scenario.tree() == before_tree, argv
    assert "vntdn0" not in scenario.kit.ns_links(scenario.ns)
    listed = scenario.virtnet("net-list", "--all", direct=True)
    assert listed.status == 0 and "Traceback" not in listed.stderr
    assert re.search(r"down\s+inactive", listed.stdout) and re.search(r"up\s+active",
                                                                     listed.stdout)


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def test_an_unprivileged_user_on_a_state_directory_it_cannot_read() -> None:
    """A user's own state directory with its definitions directory chmod 000, then root's
    state directory: every verb that needs the state says which file and why, in one line."""
    root = Path(tempfile.mkdtemp(prefix="vnt-disk-"))
    try:
        root.chmod(0o755)
        work, state = root / "work", root / "state"
        work.mkdir()
        state.mkdir()
        os.chown(state, 65534, 65534)
        for name, text in {**FILES, "down.xml": DOWN % "10.98.0.150"}.items():
            (work / name).write_text(text)
        env = {**os.environ, **bytecode_env(root / "pycache")}
        (root / "pycache").mkdir(mode=0o777)
        (root / "pycache").chmod(0o777)

        def virtnet(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*NOBODY, *script("virtnet"), "--state-dir", str(state_dir),
                                   "--direct", *args], capture_output=True, text=True,
                                  timeout=CLI_TIMEOUT_S, cwd=work, env=env)

        for args in (("net-define", "down.xml"), ("net-autostart", "down")):
            assert virtnet(state, *args).returncode == 0
        (state / "etc" / "networks").chmod(0)
        found = {}
        for args in (("net-list", "--all"), ("net-info", "down"), ("net-dumpxml", "down"),
                     ("plan", "down"), ("net-define", "fresh.xml"), ("net-undefine", "down"),
                     ("net-autostart", "--disable", "down"),
                     ("net-update", "down", "add", "ip-dhcp-host", DOWN_HOST, "--config"),
                     ("net-new", "lab5", "--mode", "isolated", "--subnet", "10.96.9.0/24")):
            proc = virtnet(state, *args)
            named = [line for line in proc.stderr.splitlines() if "(EACCES)" in line]
            if proc.returncode != 1 or "Traceback" in proc.stderr or len(named) != 1 \
                    or f"{state}/etc/networks" not in named[0]:
                found[" ".join(args)] = proc.stderr.strip().splitlines()[-3:]
        assert not found, found
        (state / "etc" / "networks").chmod(0o700)
        assert virtnet(state, "net-list", "--all", "--name").stdout.split() == ["down"]
        # root's state directory (private to root): the user is told whose it is
        private = root / "private"
        (private / "etc" / "networks").mkdir(parents=True)
        (private / "etc" / "networks").chmod(0o700)
        proc = virtnet(private, "net-list", "--all")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and "(EACCES); the state directory belongs to " \
            "another user" in proc.stderr, proc.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)
