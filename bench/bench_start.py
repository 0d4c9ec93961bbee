"""Benchmark: net-start and net-destroy of the default NAT network, virtnet against libvirt 9.0.

Both sides run as whole CLI commands, interleaved round by round in the same run:
    virtnet --netns A --state-dir D net-start default        (A: a namespace made here)
    virsh -c network:///system net-start default             (libvirtd runs in namespace B)
Neither goes through ``ip netns exec``: virtnet enters its namespace itself (setns), and virsh
only talks to libvirtd over its unix socket, which is reachable from any namespace; libvirtd
does the work inside B. So no spawn cost needs subtracting; the cost of one
``ip netns exec B true`` is measured and printed for reference only.

Then where virtnet's time goes, for start and for destroy:
  interpreter   ``python -c pass`` with the same interpreter (start-up and exit)
  imports       the modules the command imports (found with ``python -X importtime``),
                imported in a fresh process and timed from inside it
  work          Engine.start / Engine.destroy in-process after all imports (no CLI), with a
                breakdown by plan step kind
  rest          the command minus those three: click, setns, reading the state, exit
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from virtnet.testing.libvirtd import LibvirtdInNetns, libvirtd_unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "default.xml"
NAME = "default"
TIMEOUT_S = 60.0
WORK_TARGET_S = 0.030  # the target for the engine's work, start and destroy alike

# Run inside a fresh interpreter: enter the namespace, import everything, then time the
# engine alone. Every action kind's apply/undo is wrapped to attribute the time.
ENGINE_CHILD = r"""
import json, statistics, sys, time
from collections import defaultdict
from pathlib import Path
ns, state, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
from virtnet.host.netns import enter_netns
enter_netns(ns)
from virtnet.engine import Engine
from virtnet.paths import StatePaths
from virtnet.plan import Action
from virtnet.ports import register_action_kinds
import virtnet.host.facts, virtnet.drivers, virtnet.firewall, virtnet.dnsmasq
register_action_kinds()
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
Engine._facts = timed("read host facts", Engine._facts)
Engine._plan_start = timed("plan", Engine._plan_start)
from virtnet.state import StateStore
StateStore.write_status = timed("write status", StateStore.write_status)
engine = Engine(StatePaths.from_option(state))
engine.start(sys.argv[4]); engine.destroy(sys.argv[4])  # warm: first netlink socket, caches
spent.clear()
starts, destroys = [], []
for _ in range(rounds):
    t = time.perf_counter(); engine.start(sys.argv[4]); starts.append(time.perf_counter() - t)
    t = time.perf_counter(); engine.destroy(sys.argv[4]); destroys.append(time.perf_counter() - t)
print(json.dumps({"start": starts, "destroy": destroys,
                  "spent": {k: v / rounds for k, v in spent.items()}}))
"""

IMPORT_CHILD = r"""
import importlib, sys, time
names = sys.argv[1:]
t = time.perf_counter()
if any(name.startswith("pyroute2") for name in names):
    # as virtnet loads it: without the package __init__ that imports all of pyroute2
    from virtnet.host.netlink import _load_pyroute2
    _load_pyroute2()
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


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env=CHILD_ENV)
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


def netns_pids(ns: str) -> list[int]:
    target = os.stat(f"/run/netns/{ns}").st_ino
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "net").st_ino == target:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def delete_netns(ns: str) -> None:
    if not Path(f"/run/netns/{ns}").exists():
        return
    for pid in netns_pids(ns):  # a dnsmasq a failed destroy left: ours, it lives in our netns
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
    try:
        definition = tmp / "default.xml"
        definition.write_text(EXAMPLE.read_text())
        state = tmp / "state"
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        virtnet_cmd: Callable[..., list[str]] = lambda *a: [  # noqa: E731
            sys.executable, "-m", "virtnet.cli", "--netns", ns, "--state-dir", str(state), *a]
        run(virtnet_cmd("net-define", str(definition)))
        with LibvirtdInNetns() as lv:
            virsh_cmd: Callable[..., list[str]] = lambda *a: [  # noqa: E731
                "virsh", "-c", "network:///system", *a]
            run(virsh_cmd("net-define", str(definition)))
            results = measure(rounds, virtnet_cmd, virsh_cmd, lv.netns)
            run(virsh_cmd("net-undefine", NAME))
        results.update(attribute(rounds, virtnet_cmd, ns, state))
        run(virtnet_cmd("net-undefine", NAME))
    finally:
        delete_netns(ns)
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, rounds)
    return 0


def measure(rounds: int, virtnet_cmd: Callable[..., list[str]],
            virsh_cmd: Callable[..., list[str]], libvirt_ns: str) -> dict[str, Any]:
    """Whole commands, interleaved so that any drift of the machine hits both sides."""
    times: dict[str, list[float]] = {key: [] for key in (
        "virtnet start", "virtnet destroy", "libvirt start", "libvirt destroy")}
    for round_index in range(rounds + 1):  # round 0 warms caches (pyc, page cache, daemon)
        sample = {
            "virtnet start": timed_run(virtnet_cmd("net-start", NAME)),
            "virtnet destroy": timed_run(virtnet_cmd("net-destroy", NAME)),
            "libvirt start": timed_run(virsh_cmd("net-start", NAME)),
            "libvirt destroy": timed_run(virsh_cmd("net-destroy", NAME)),
        }
        if round_index:
            for key, value in sample.items():
                times[key].append(value)
    netns_exec = [timed_run(["ip", "netns", "exec", libvirt_ns, "true"]) for _ in range(rounds)]
    return {"times": times, "netns exec": median(netns_exec)}


def attribute(rounds: int, virtnet_cmd: Callable[..., list[str]], ns: str,
              state: Path) -> dict[str, Any]:
    """Split virtnet's command time: interpreter, imports, engine work."""
    run([sys.executable, "-c", "pass"])  # its own bytecode caches, written once
    interpreter = median([timed_run([sys.executable, "-c", "pass"]) for _ in range(rounds)])
    start_rows = importtime(["-m", "virtnet.cli", *virtnet_cmd("net-start", NAME)[3:]])
    destroy_rows = importtime(["-m", "virtnet.cli", *virtnet_cmd("net-destroy", NAME)[3:]])
    imports = {}
    for label, rows in (("start", start_rows), ("destroy", destroy_rows)):
        modules = [module for _, _, _, module in rows if module != "__main__"]
        # virtnet.cli itself is what -m runs: import it like the other modules
        imports[label] = import_seconds([*modules, "virtnet.cli"], rounds)
    child = run([sys.executable, "-c", ENGINE_CHILD, ns, str(state), str(rounds), NAME])
    engine = json.loads(child.stdout)
    return {
        "interpreter": interpreter,
        "imports": imports,
        "importtime": {"start": start_rows, "destroy": destroy_rows},
        "engine": engine,
    }


def report(results: dict[str, Any], rounds: int) -> None:
    times = results["times"]
    med = {key: median(values) for key, values in times.items()}
    print(f"net-start / net-destroy of the default NAT network, {rounds} rounds, medians")
    print(f"(virsh talks to libvirtd over its socket; virtnet enters its namespace itself;"
          f" one `ip netns exec NS true` costs {ms(results['netns exec']).strip()}, not "
          "included on either side)\n")
    print(f"{'':10}{'virtnet':>12}{'libvirt':>12}{'ratio':>9}{'goal (1/4)':>13}")
    for verb in ("start", "destroy"):
        ours, theirs = med[f"virtnet {verb}"], med[f"libvirt {verb}"]
        goal = theirs / 4
        print(f"{verb:10}{ms(ours):>12}{ms(theirs):>12}{ours / theirs:>8.2f}x"
              f"{ms(goal):>13}{'  met' if ours <= goal else ''}")

    engine = results["engine"]
    print("\nwhere virtnet's time goes (medians)")
    print(f"{'':30}{'start':>12}{'destroy':>12}")
    work = {verb: median(engine[verb]) for verb in ("start", "destroy")}
    parts = {
        "interpreter start and exit": {v: results["interpreter"] for v in work},
        "imports": results["imports"],
        "engine work (in-process)": work,
    }
    for label, values in parts.items():
        print(f"{label:30}{ms(values['start']):>12}{ms(values['destroy']):>12}")
    rest = {v: med[f"virtnet {v}"] - sum(p[v] for p in parts.values()) for v in work}
    print(f"{'rest (click, setns, state, exit)':30}{ms(rest['start']):>12}"
          f"{ms(rest['destroy']):>12}")
    print(f"{'whole command':30}{ms(med['virtnet start']):>12}{ms(med['virtnet destroy']):>12}")
    for verb in ("start", "destroy"):
        verdict = "met" if work[verb] <= WORK_TARGET_S else "NOT met"
        print(f"engine {verb} target {ms(WORK_TARGET_S).strip()}: {verdict}")

    print("\nengine work by part (mean per round)")
    for label, seconds in sorted(engine["spent"].items(), key=lambda item: -item[1]):
        if seconds >= 0.0001:
            print(f"  {label:40}{ms(seconds)}")

    for verb in ("start", "destroy"):
        rows = results["importtime"][verb]
        total = sum(row[0] for row in rows) / 1e6
        print(f"\nheaviest imports of net-{verb} (-X importtime, cumulative; "
              f"all imports {ms(total).strip()} under importtime's own overhead)")
        for module, seconds in heaviest(rows):
            print(f"  {module:40}{ms(seconds)}")


if __name__ == "__main__":
    sys.exit(main())
