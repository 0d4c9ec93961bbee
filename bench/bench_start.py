"""Benchmark: net-start and net-destroy of the default NAT network, virtnet against libvirt 9.0.

Both sides run as whole CLI commands, interleaved round by round in the same run:
    virtnet --netns A --state-dir D net-start default        (A: a namespace made here)
    virsh -c network:///system net-start default             (libvirtd runs in namespace B)
virtnet is measured twice: with no daemon (the `virtnet` command runs the CLI in-process) and
forwarded to a virtnetd serving D (skipped, with the reason, if none can be started).
Nothing runs under ``ip netns exec``: virtnet enters its namespace itself (setns), virsh only
talks to libvirtd over its unix socket, reachable from any namespace, and libvirtd does the
work inside B. So no spawn cost needs subtracting; one ``ip netns exec B true`` is timed and
printed for reference only.

Then where the in-process command's time goes, for start and for destroy:
  interpreter   ``python -c pass`` with the same interpreter (start-up and exit)
  imports       the modules the command imports (found with ``python -X importtime``),
                imported in a fresh process and timed from inside it
  work          Engine.start / Engine.destroy in-process after all imports (no CLI), warm,
                with a breakdown by plan step kind; and what the first call in a process
                costs on top (first netlink socket, libnftables context)
  rest          the command minus those: click, setns, reading the state, exit
and the heaviest imports as ``-X importtime`` reports them (cumulative, top-level).

Every child runs with bytecode caching on (see CHILD_ENV), and a first round that is not
counted writes the caches, so the numbers are those of an installed virtnet.

The network is examples/default.xml copied to a temporary file (bridge virbr0: each side is
alone in its namespace). Needs root, libvirtd 9.0, virsh, dnsmasq and nft.

Run: .venv/bin/python bench/bench_start.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root: tests.kit

from tests.kit.libvirtd import LibvirtdInNetns, libvirtd_unavailable_reason  # noqa: E402
from virtnet.host.netns import pids_in_netns  # noqa: E402

# the children below run with -c: they find tests.kit through this first line
KIT_PATH = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
EXAMPLE = ROOT / "examples" / "default.xml"
NAME = "default"
TIMEOUT_S = 60.0
WORK_TARGET_S = 0.030  # the target for the engine's work, start and destroy alike
DAEMON_START_TIMEOUT_S = 15.0

# Run inside a fresh interpreter: enter the namespace, import everything, then time the
# engine alone. Every action kind's apply/undo is wrapped to attribute the time.
ENGINE_CHILD = KIT_PATH + r"""
import json, statistics, sys, time
from collections import defaultdict
from pathlib import Path
ns, state, rounds, name = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
from virtnet.host.netns import enter_netns
enter_netns(ns)
# everything the command imports, so that the first call below pays no import
import importlib
from tests.kit.pyroute2_light import load_pyroute2
load_pyroute2()
for module in sys.argv[5:]:
    try:
        importlib.import_module(module)
    except ImportError:
        pass
from virtnet.service.engine import Engine
from virtnet.paths import StatePaths
from virtnet.plan.actions import KIND_MODULES, Action
import virtnet.host.facts, virtnet.plan.drivers, virtnet.render.nft, virtnet.render.dnsmasq
for module in sorted(set(KIND_MODULES.values())):  # every action kind, registered
    importlib.import_module(module)
spent = defaultdict(float)
def timed(label, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - t
    return wrapper
for kind, cls in Action._registry.items():
    cls.apply = timed(f"apply {kind}", cls.apply)
    cls.undo = timed(f"undo {kind}", cls.undo)
    if cls.overlaps:  # applied in two halves, the second after the last step
        cls.launch = timed(f"launch {kind}", cls.launch)
        cls.finish = timed(f"finish {kind} (waiting, others ran meanwhile)", cls.finish)
Engine.read_facts = timed("read host facts", Engine.read_facts)
from virtnet.service import lifecycle
lifecycle.plan_start = timed("plan", lifecycle.plan_start)
from virtnet.store.store import StateStore
StateStore.write_status = timed("write status", StateStore.write_status)
engine = Engine(StatePaths.from_option(state))
# the first of each in this process: first netlink socket, libnftables context, caches
t = time.perf_counter(); engine.start(name); first_start = time.perf_counter() - t
t = time.perf_counter(); engine.destroy(name); first_destroy = time.perf_counter() - t
spent.clear()
starts, destroys = [], []
for _ in range(rounds):
    t = time.perf_counter(); engine.start(name); starts.append(time.perf_counter() - t)
    t = time.perf_counter(); engine.destroy(name); destroys.append(time.perf_counter() - t)
print(json.dumps({"start": starts, "destroy": destroys,
                  "first start": first_start, "first destroy": first_destroy,
                  "spent": {k: v / rounds for k, v in spent.items()}}))
"""

IMPORT_CHILD = KIT_PATH + r"""
import importlib, sys, time
names = sys.argv[1:]
t = time.perf_counter()
if any(name.startswith("pyroute2") for name in names):
    # as virtnet loads it: without the package __init__ that imports all of pyroute2
    from tests.kit.pyroute2_light import load_pyroute2
    load_pyroute2()
for name in names:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # a private submodule importlib cannot address on its own
print(time.perf_counter() - t)
"""


# Children get bytecode caching on (an installed package has its .pyc files; with
# PYTHONDONTWRITEBYTECODE=1, as some shells set it, every command would compile virtnet's
# sources anew, ~0.2 s), with the caches under the bench's temporary directory so the source
# tree is not written to. Fault-injection variables are dropped.
CHILD_ENV = {key: value for key, value in os.environ.items()
             if key != "PYTHONDONTWRITEBYTECODE" and not key.startswith("VIRTNET_")}


def run(argv: list[str], check: bool = True, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**CHILD_ENV, **(env or {})})
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def timed_run(argv: list[str]) -> float:
    start = time.perf_counter()
    run(argv)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


# --- namespace for virtnet ----------------------------------------------------------------


def delete_netns(ns: str) -> None:
    if not Path(f"/run/netns/{ns}").exists():
        return
    for pid in pids_in_netns(ns):  # a dnsmasq a failed destroy left: ours, it lives in our netns
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run(["ip", "netns", "delete", ns], check=False)


# --- import attribution ------------------------------------------------------------------------


IMPORTTIME_RE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def importtime(argv: list[str]) -> list[tuple[int, int, int, str]]:
    """(self us, cumulative us, depth, module) for each import ``argv`` made."""
    proc = run([sys.executable, "-X", "importtime", *argv])
    rows = []
    for line in proc.stderr.splitlines():
        match = IMPORTTIME_RE.match(line)
        if match:
            rows.append((int(match[1]), int(match[2]), len(match[3]) // 2, match[4]))
    return rows


def import_seconds(modules: list[str], rounds: int) -> float:
    """Median time a fresh interpreter takes to import MODULES (timed from inside it)."""
    times = [float(run([sys.executable, "-c", IMPORT_CHILD, *modules]).stdout)
             for _ in range(rounds)]
    return median(times)


def heaviest(rows: list[tuple[int, int, int, str]], count: int = 8) -> list[tuple[str, float]]:
    """Top-level imports by cumulative time, grouped by their top package."""
    groups: dict[str, float] = {}
    for _, cumulative, depth, module in rows:
        if depth == 0:
            key = module if module.startswith("virtnet") else module.split(".")[0]
            groups[key] = groups.get(key, 0.0) + cumulative / 1e6
    return sorted(groups.items(), key=lambda item: -item[1])[:count]


# --- the commands ---------------------------------------------------------------------------------


def virtnet_argv(ns: str, state: Path, *args: str) -> list[str]:
    """``virtnet --netns NS --state-dir STATE ARGS`` through the installed ``virtnet`` script
    (virtnet.face.fastcli: forwarded to virtnetd when one serves STATE, else in-process)."""
    script = Path(sys.executable).with_name("virtnet")
    entry = [str(script)] if script.exists() else ["-m", "virtnet.face.fastcli"]
    return [sys.executable, *entry, "--netns", ns, "--state-dir", str(state), *args]


def timed_virtnet(argv: list[str], forwarded: bool) -> tuple[float, float | None]:
    """Run a virtnet command; return its wall time and the daemon's own time (if forwarded).
    Fails if the command did not take the expected path (daemon or in-process)."""
    start = time.perf_counter()
    proc = run(argv, env={"VIRTNET_CLIENT_TIMING": "1"})
    elapsed = time.perf_counter() - start
    timing = {}
    for line in proc.stderr.splitlines():
        if line.startswith("virtnet-timing: "):
            timing = json.loads(line.removeprefix("virtnet-timing: "))
    if timing.get("forwarded") is not forwarded:
        raise SystemExit(f"{' '.join(argv)}: expected forwarded={forwarded}, got {timing}")
    return elapsed, timing.get("server_ms")


def start_daemon(ns: str, state: Path, log: Path) -> subprocess.Popen[bytes] | str:
    """virtnetd serving STATE inside NS, or the reason it could not be started."""
    socket_path = state / "run" / "virtnetd.sock"
    try:
        with open(log, "wb") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "virtnet.daemon", "--netns", ns, "--state-dir",
                 str(state), "--no-autostart", "--log-level", "warning"],
                stdout=out, stderr=subprocess.STDOUT, env=CHILD_ENV)
    except OSError as exc:
        return f"cannot run virtnetd: {exc}"
    deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            return f"virtnetd exited ({daemon.returncode}): {log.read_text().strip()[-300:]}"
        if socket_path.exists():
            return daemon
        time.sleep(0.05)
    stop_daemon(daemon)
    return f"virtnetd did not serve {socket_path} within {DAEMON_START_TIMEOUT_S:.0f} s"


def stop_daemon(daemon: subprocess.Popen[bytes]) -> None:
    """SIGTERM the daemon this bench started (by its pid), SIGKILL if it lingers."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=5)


# --- the benchmark --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    rounds = max(1, args.rounds)

    reason = libvirtd_unavailable_reason()
    for tool in ("dnsmasq", "nft"):
        if reason is None and shutil.which(tool) is None:
            reason = f"{tool} is not installed"
    if reason is not None:
        print(f"bench_start: skipped: {reason}")
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="vnt-bench-"))
    CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    ns = f"vnt-bs-{secrets.token_hex(3)}"
    daemon: subprocess.Popen[bytes] | None = None
    try:
        definition = tmp / "default.xml"
        definition.write_text(EXAMPLE.read_text())
        state = tmp / "state"
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(virtnet_argv(ns, state, "net-define", str(definition)))
        results: dict[str, Any] = {}
        with LibvirtdInNetns() as lv:
            run(lv.virsh_argv("net-define", str(definition)))
            results["in-process"] = measure(rounds, ns, state, lv, forwarded=False)
            started = start_daemon(ns, state, tmp / "virtnetd.log")
            if isinstance(started, str):
                results["daemon skipped"] = started
            else:
                daemon = started
                results["daemon"] = measure(rounds, ns, state, lv, forwarded=True)
                stop_daemon(daemon)
                daemon = None
            results["netns exec"] = median(
                [timed_run(["ip", "netns", "exec", lv.netns, "true"]) for _ in range(rounds)])
            run(lv.virsh_argv("net-undefine", NAME))
        results.update(attribute(rounds, ns, state))
        run(virtnet_argv(ns, state, "net-undefine", NAME))
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        delete_netns(ns)
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, rounds)
    return 0


def measure(rounds: int, ns: str, state: Path, lv: LibvirtdInNetns,
            forwarded: bool) -> dict[str, list[float]]:
    """Whole commands, virtnet and libvirt interleaved so that any drift of the machine hits
    both sides; the first round only warms caches (bytecode, page cache, daemons)."""
    times: dict[str, list[float]] = {key: [] for key in (
        "virtnet start", "virtnet destroy", "libvirt start", "libvirt destroy",
        "server start", "server destroy")}
    for round_index in range(rounds + 1):
        sample: dict[str, float | None] = {}
        for verb in ("start", "destroy"):
            wall, server = timed_virtnet(virtnet_argv(ns, state, f"net-{verb}", NAME), forwarded)
            sample[f"virtnet {verb}"], sample[f"server {verb}"] = wall, server
        for verb in ("start", "destroy"):
            sample[f"libvirt {verb}"] = timed_run(lv.virsh_argv(f"net-{verb}", NAME))
        if round_index:
            for key, value in sample.items():
                if value is not None:
                    times[key].append(value / 1000 if key.startswith("server") else value)
    return times


def attribute(rounds: int, ns: str, state: Path) -> dict[str, Any]:
    """Split the in-process command's time: interpreter, imports, engine work."""
    run([sys.executable, "-c", "pass"])  # its own bytecode caches, written once
    interpreter = median([timed_run([sys.executable, "-c", "pass"]) for _ in range(rounds)])
    rows = {}
    imports = {}
    for verb in ("start", "destroy"):
        argv = virtnet_argv(ns, state, "--direct", f"net-{verb}", NAME)
        rows[verb] = importtime(argv[1:])
        modules = [module for _, _, _, module in rows[verb] if module != "__main__"]
        # the script itself imports virtnet.face.fastcli, which runs virtnet.face.cli: both are listed
        imports[verb] = import_seconds(modules, rounds)
    modules = sorted({module for verb in rows for _, _, _, module in rows[verb]
                      if module != "__main__" and not module.startswith("pyroute2")})
    child = run([sys.executable, "-c", ENGINE_CHILD, ns, str(state), str(rounds), NAME,
                 *modules])
    return {
        "interpreter": interpreter,
        "imports": imports,
        "importtime": rows,
        "engine": json.loads(child.stdout),
    }


def report(results: dict[str, Any], rounds: int) -> None:
    local = results["in-process"]
    daemon = results.get("daemon")
    libvirt = {verb: median(local[f"libvirt {verb}"] + (daemon or {}).get(f"libvirt {verb}", []))
               for verb in ("start", "destroy")}
    print(f"net-start / net-destroy of the default NAT network: whole commands, {rounds} "
          "rounds, medians")
    print("virsh talks to libvirtd (in its own namespace) over its socket; virtnet enters its "
          "namespace itself.\nNeither runs under `ip netns exec` (one `ip netns exec NS true` "
          f"costs {ms(results['netns exec']).strip()}).\n")
    header = f"{'':9}{'libvirt':>10}{'virtnet':>11}{'ratio':>8}"
    if daemon:
        header += f"{'virtnet+virtnetd':>18}{'ratio':>8}"
    print(header + f"{'goal: libvirt/4':>17}")
    for verb in ("start", "destroy"):
        theirs = libvirt[verb]
        ours = median(local[f"virtnet {verb}"])
        line = f"{verb:9}{ms(theirs):>10}{ms(ours):>11}{ours / theirs:>7.2f}x"
        best = ours
        if daemon:
            via = median(daemon[f"virtnet {verb}"])
            line += f"{ms(via):>18}{via / theirs:>7.2f}x"
            best = min(best, via)
        line += f"{ms(theirs / 4):>17}{'  met' if best <= theirs / 4 else '  not met'}"
        print(line)
    print("virtnet = the `virtnet` command with no daemon running (the CLI in-process);")
    if daemon:
        inside = {verb: median(daemon[f"server {verb}"]) for verb in ("start", "destroy")}
        print("virtnet+virtnetd = the same command forwarded to a running virtnetd (time inside "
              f"the daemon: start {ms(inside['start']).strip()}, destroy "
              f"{ms(inside['destroy']).strip()})")
    else:
        print(f"virtnet+virtnetd: skipped: {results['daemon skipped']}")

    engine = results["engine"]
    work = {verb: median(engine[verb]) for verb in ("start", "destroy")}
    cold = {verb: engine[f"first {verb}"] - work[verb] for verb in work}
    parts = {
        "interpreter start and exit": {verb: results["interpreter"] for verb in work},
        "imports": results["imports"],
        "engine work, warm": work,
        "first-use costs (cold - warm)": cold,
    }
    whole = {verb: median(local[f"virtnet {verb}"]) for verb in work}
    print("\nwhere the in-process command's time goes (medians)")
    print(f"{'':34}{'start':>10}{'destroy':>10}")
    for label, values in parts.items():
        print(f"{label:34}{ms(values['start']):>10}{ms(values['destroy']):>10}")
    rest = {verb: whole[verb] - sum(part[verb] for part in parts.values()) for verb in work}
    print(f"{'rest (click, setns, state, exit)':34}{ms(rest['start']):>10}"
          f"{ms(rest['destroy']):>10}")
    print(f"{'whole command':34}{ms(whole['start']):>10}{ms(whole['destroy']):>10}")
    for verb in ("start", "destroy"):
        verdict = "met" if work[verb] <= WORK_TARGET_S else "not met"
        print(f"engine {verb} under {ms(WORK_TARGET_S).strip()}: {verdict}")

    print("\nengine work by part (warm, mean per round)")
    for label, seconds in sorted(engine["spent"].items(), key=lambda item: -item[1]):
        if seconds >= 0.0001:
            print(f"  {label:40}{ms(seconds)}")

    for verb in ("start", "destroy"):
        rows = results["importtime"][verb]
        total = sum(row[0] for row in rows) / 1e6
        print(f"\nheaviest imports of net-{verb} (-X importtime, cumulative; all imports "
              f"{ms(total).strip()} with importtime's own overhead)")
        for module, seconds in heaviest(rows):
            print(f"  {module:40}{ms(seconds)}")


if __name__ == "__main__":
    sys.exit(main())
