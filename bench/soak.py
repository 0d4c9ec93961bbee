"""Soak: many start/stop and port create/delete cycles through one long-lived virtnetd, then
look for anything left behind (``make soak``: 500 and 5000 cycles; needs root).

    .venv/bin/python bench/soak.py [--cycles 500] [--port-cycles 5000] [--tracemalloc]

Everything runs inside a network namespace created here (``vnt-soak-XXXX``) and deleted at the
end, even on failure; the daemon and every process in that namespace are stopped by pid.
Afterwards, compared with the moment after the first warm-up cycles:
- links, addresses, routes and the nftables ruleset of the namespace (as before the first start)
- dnsmasq processes in the namespace (none), the files under the state directory (the same)
- the daemon's open file descriptors (/proc/PID/fd), once settled, at each phase's start,
  half-way point and end: the same count, but for one more per worker thread started on
  demand meanwhile (each keeps a netlink socket of its own: virtnet.host.rtnl.shared_rtnl)
- the daemon's memory stays flat. A process's resident size first climbs to a plateau (its
  allocators keep freed memory for reuse; bounded buffers such as the event history fill
  up) and then stays there, while a leak keeps it climbing at a steady rate. So VmRSS is
  sampled along each phase and two figures are checked: the growth over the whole run after
  warm-up (``--rss-slack-kb``), and the growth over the second half of each phase above the
  sample at its half-way point (``--rss-late-slack-kb``, one allocator step: a pymalloc
  arena is 1 MiB). Python's own view is taken too, at each phase's start, half-way point
  and end (virtnetd's memory probe, asked for with VIRTNETD_MEMORY_PROBE and SIGUSR2):
  allocated blocks and live objects after a full collection, pymalloc's arenas, and
  malloc's bytes in use and held. Objects kept per cycle show as allocated blocks that
  climb over a second half (``--blocks-per-cycle``, beyond ``--blocks-noise``); memory held
  but not in use is allocator behaviour.
- port device names: each port is deleted before the next is created, so all get one name.
With ``--tracemalloc`` the daemon traces its Python allocations and the places that grew over
each half of each phase are printed (tracing inflates RSS: the RSS checks are then skipped).
Prints the numbers; exits 1 if something leaked.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.kit

from tests.kit.daemon import VirtnetdProcess  # noqa: E402
from virtnet.daemon.__main__ import MEMORY_PROBE_ENV, TRACEMALLOC_ENV  # noqa: E402
from virtnet.host.netns import pids_in_netns  # noqa: E402

NETWORK = "soak"
XML = f"""<network>
  <name>{NETWORK}</name>
  <forward mode='nat'/>
  <bridge name='vsoak0'/>
  <ip address='10.97.0.1' netmask='255.255.255.0'>
    <dhcp><range start='10.97.0.10' end='10.97.0.200'/>
      <host mac='52:54:00:97:00:10' name='g1' ip='10.97.0.10'/></dhcp>
  </ip>
</network>
"""
WARMUP = 5
SAMPLES_PER_PHASE = 20
PROBE_TIMEOUT_S = 120.0
FD_SETTLE_S = 1.0  # five supervision ticks
FD_SETTLE_TIMEOUT_S = 10.0
TOP_GROWTH = 12  # allocation sites printed per phase with --tracemalloc
IGNORED_FILES = ("virtnet.lock", "virtnetd.sock", "kernel-tc-features.json")


def run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def ns_view(ns: str) -> dict[str, Any]:
    def ip_json(*args: str) -> Any:
        out = run(["ip", "-n", ns, "-j", *args])
        return json.loads(out) if out.strip() else []

    links = sorted(link["ifname"] for link in ip_json("link", "show"))
    addresses = sorted(f"{a['local']}/{a['prefixlen']}" for link in ip_json("address", "show")
                       for a in link.get("addr_info", []) if a.get("scope") != "link")
    routes = sorted(r["dst"] for r in ip_json("route", "show") + ip_json("-6", "route", "show"))
    ruleset = run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"])
    return {"links": links, "addresses": addresses, "routes": routes, "nft": ruleset}


def dnsmasq_pids(ns: str) -> list[int]:
    found = []
    for pid in pids_in_netns(ns):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq":
                found.append(pid)
        except OSError:
            continue
    return found


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid: int, timeout: float = FD_SETTLE_TIMEOUT_S) -> int:
    """The daemon's descriptor count once supervision caught up with the last request (a
    stopped dnsmasq's pidfd is closed by the event loop or the next tick): the same count
    twice in a row, FD_SETTLE_S apart. A leaked descriptor stays, so it is still counted."""
    deadline = time.monotonic() + timeout
    last = fd_count(pid)
    while time.monotonic() < deadline:
        time.sleep(FD_SETTLE_S)
        now = fd_count(pid)
        if now == last:
            break
        last = now
    return last


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def state_files(state: Path) -> list[str]:
    return sorted(str(p.relative_to(state)) for p in state.rglob("*")
                  if p.is_file() and p.name not in IGNORED_FILES)


# --- memory -----------------------------------------------------------------------------------


@dataclass
class Phase:
    """One phase's memory record: RSS samples, and the daemon's probes at its start, its
    half-way point and its end."""

    name: str
    cycles: int
    rss: list[tuple[int, int]] = field(default_factory=list)  # (cycle, VmRSS kB)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)  # start, half, end
    fds: dict[str, tuple[int, int]] = field(default_factory=dict)  # (descriptors, threads)

    @property
    def half(self) -> int:
        return self.cycles // 2

    def rss_at(self, cycle: int) -> int:
        return next(kb for at, kb in self.rss if at == cycle)

    def mark(self, label: str, pid: int, memory: Memory) -> None:
        """Descriptors, threads and a memory probe at the phase's start, half or end."""
        self.fds[label] = (settled_fd_count(pid), thread_count(pid))
        self.probes[label] = memory.probe()

    def late_rss_growth(self) -> int:
        """The most VmRSS grew, over the second half, above its value at the half."""
        at_half = self.rss_at(self.half)
        return max(kb for at, kb in self.rss if at >= self.half) - at_half


class Memory:
    """VmRSS samples and daemon probes (SIGUSR2 → PREFIX.N.json, see virtnetd's MemoryProbe)."""

    def __init__(self, pid: int, prefix: Path) -> None:
        self.pid = pid
        self.prefix = prefix
        self.count = 0

    def probe(self) -> dict[str, Any]:
        self.count += 1
        target = Path(f"{self.prefix}.{self.count}.json")
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while not target.exists():  # renamed into place once complete
            if time.monotonic() > deadline:
                raise RuntimeError(f"virtnetd wrote no memory probe {target} within "
                                   f"{PROBE_TIMEOUT_S:g} s")
            time.sleep(0.02)
        figures: dict[str, Any] = json.loads(target.read_text())
        snapshot = Path(f"{self.prefix}.{self.count}.snapshot")
        if snapshot.exists():
            figures["snapshot"] = str(snapshot)
        return figures


def sample_points(cycles: int) -> set[int]:
    """The cycles after which VmRSS is sampled: about SAMPLES_PER_PHASE, always including the
    half-way point and the last."""
    step = max(1, cycles // SAMPLES_PER_PHASE)
    return set(range(step, cycles + 1, step)) | {cycles // 2, cycles} - {0}


def malloc_kb(probe: dict[str, Any]) -> tuple[int, int] | None:
    """(in use, held from the system) by glibc's malloc, in kB."""
    info = probe.get("mallinfo2")
    if not info:
        return None
    return info["uordblks"] // 1024, (info["arena"] + info["hblkhd"]) // 1024


def describe_probe(probe: dict[str, Any]) -> str:
    text = (f"{probe['allocated_blocks']} blocks, {probe['gc_objects']} objects, "
            f"{len(probe['threads'])} threads")
    arenas = probe.get("pymalloc", {})
    if "arenas_allocated_current" in arenas:
        text += (f", pymalloc arenas {arenas['arenas_allocated_current']} "
                 f"(at most {arenas['arenas_highwater_mark']}) with "
                 f"{arenas['bytes_in_allocated_blocks'] // 1024} kB in use")
    held = malloc_kb(probe)
    if held is not None:
        text += f", malloc {held[0]} kB in use of {held[1]} kB held"
    if "traced_bytes" in probe:
        text += f", traced {probe['traced_bytes'] // 1024} kB"
    return text


def object_growth(before: dict[str, Any], after: dict[str, Any], top: int = 6) -> str:
    counts_before, counts_after = before["objects_by_type"], after["objects_by_type"]
    diff = {name: counts_after.get(name, 0) - counts_before.get(name, 0)
            for name in set(counts_before) | set(counts_after)}
    grown = sorted(((n, name) for name, n in diff.items() if n > 0), reverse=True)[:top]
    return ", ".join(f"{name} {n:+d}" for n, name in grown) or "none"


def traced_growth(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The allocation sites that grew most between two traced probes."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__),
              tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    old = tracemalloc.Snapshot.load(before["snapshot"]).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(after["snapshot"]).filter_traces(ignore)
    lines = []
    for stat in new.compare_to(old, "lineno")[:TOP_GROWTH]:
        if stat.size_diff:
            frame = stat.traceback[0]
            lines.append(f"{stat.size_diff:+9d} B {stat.count_diff:+6d} blocks  "
                         f"{frame.filename}:{frame.lineno}")
    return lines


def check_fds(phases: list[Phase], end: tuple[int, int], problems: list[str]) -> None:
    """Descriptors may only have grown with the worker threads (see the module's doc)."""
    def text(at: tuple[int, int]) -> str:
        return f"{at[0]} ({at[1]} threads)"

    base = phases[0].fds["start"]
    print(f"daemon fds: {text(base)} after warm-up, {text(end)} at the end; "
          + "; ".join(f"{phase.name}: " + ", ".join(
              f"{text(phase.fds[k])} at {k}" for k in ("start", "half", "end"))
              for phase in phases))
    spans = [("over the run", base, end)] + [
        (f"over the second half of the {phase.name} phase", phase.fds["half"],
         phase.fds["end"]) for phase in phases]
    for what, before, after in spans:
        grown, new_threads = after[0] - before[0], after[1] - before[1]
        if grown > max(0, new_threads):
            problems.append(f"daemon file descriptors {what}: {text(before)} before, "
                            f"{text(after)} after")


def check_memory(phases: list[Phase], base_rss: int, options: argparse.Namespace,
                 problems: list[str]) -> None:
    traced = options.tracemalloc
    all_rss = [base_rss] + [kb for phase in phases for _, kb in phase.rss]
    end_rss = phases[-1].rss[-1][1]
    growth = max(all_rss) - base_rss
    print(f"daemon RSS kB: {base_rss} after warm-up, {end_rss} at the end; "
          f"max growth {growth} over the run (limit {options.rss_slack_kb})")
    if not traced and growth > options.rss_slack_kb:
        problems.append(f"daemon RSS grew by {growth} kB over the run "
                        f"(more than {options.rss_slack_kb} kB)")
    for phase in phases:
        samples = " ".join(str(kb) for _, kb in phase.rss)
        print(f"  {phase.name}: RSS every {max(1, phase.cycles // SAMPLES_PER_PHASE)} cycles: "
              f"{samples}")
        late = phase.late_rss_growth()
        print(f"  {phase.name}: RSS {phase.rss[0][1]} kB at its start, "
              f"{phase.rss_at(phase.half)} at cycle {phase.half}, {phase.rss[-1][1]} at cycle "
              f"{phase.cycles}; growth over the second half {late} kB "
              f"(limit {options.rss_late_slack_kb})")
        if not traced and late > options.rss_late_slack_kb:
            problems.append(f"daemon RSS still grew by {late} kB over the second half of the "
                            f"{phase.name} phase (more than {options.rss_late_slack_kb} kB)")
        start, half, end = (phase.probes[k] for k in ("start", "half", "end"))
        for label, probe in (("start", start), (f"cycle {phase.half}", half),
                             (f"cycle {phase.cycles}", end)):
            print(f"  {phase.name}: python at {label}: {describe_probe(probe)}")
        late_blocks = end["allocated_blocks"] - half["allocated_blocks"]
        late_cycles = phase.cycles - phase.half
        allowed = int(options.blocks_per_cycle * late_cycles) + options.blocks_noise
        print(f"  {phase.name}: python allocated blocks over the second half: {late_blocks:+d} "
              f"in {late_cycles} cycles (limit {allowed}); objects grown: "
              f"{object_growth(half, end)}")
        if late_blocks > allowed:
            problems.append(f"the daemon's Python heap grew by {late_blocks} blocks over the "
                            f"second half of the {phase.name} phase ({late_cycles} cycles; "
                            f"more than {allowed}): objects are kept per cycle")
        if traced:
            print(f"  {phase.name}: traced kB: {start['traced_bytes'] // 1024} at the start, "
                  f"{half['traced_bytes'] // 1024} at cycle {phase.half}, "
                  f"{end['traced_bytes'] // 1024} at the end")
            for label, before, after in (("first", start, half), ("second", half, end)):
                print(f"  {phase.name}: grown most over the {label} half "
                      f"({after['traced_bytes'] - before['traced_bytes']:+d} B traced):")
                for line in traced_growth(before, after):
                    print(f"    {line}")
    if traced:
        print("(RSS not judged: tracemalloc's own memory grows with what it traces)")


# --- the soak ---------------------------------------------------------------------------------


def soak(ns: str, root: Path, options: argparse.Namespace) -> int:
    state = root / "state"
    prefix = root / "memory-probe"
    env = {TRACEMALLOC_ENV if options.tracemalloc else MEMORY_PROBE_ENV: str(prefix)}
    before_start = ns_view(ns)
    cycles, port_cycles = options.cycles, options.port_cycles
    with VirtnetdProcess(ns, state, env=env) as daemon, daemon.client() as api:
        api.define(XML)
        for _ in range(WARMUP):
            api.start(NETWORK)
            port = api.create_port(NETWORK, "52:54:00:97:00:01")
            api.delete_port(NETWORK, port["uuid"])
            api.destroy(NETWORK)
        pid = daemon.pid
        memory = Memory(pid, prefix)
        base_rss, base_files = rss_kb(pid), state_files(state)
        devices: set[str] = set()

        start_stop = Phase("start/stop", cycles, rss=[(0, base_rss)])
        start_stop.mark("start", pid, memory)
        points = sample_points(cycles)
        begin = time.monotonic()
        for cycle in range(1, cycles + 1):
            api.start(NETWORK)
            api.destroy(NETWORK)
            if cycle in points:
                start_stop.rss.append((cycle, rss_kb(pid)))
                if cycle == start_stop.half:
                    start_stop.mark("half", pid, memory)
        start_stop_s = time.monotonic() - begin
        start_stop.mark("end", pid, memory)

        api.start(NETWORK)
        ports = Phase("port", port_cycles, rss=[(0, rss_kb(pid))])
        ports.mark("start", pid, memory)
        points = sample_points(port_cycles)
        begin = time.monotonic()
        for cycle in range(1, port_cycles + 1):
            mac = f"52:54:00:97:{cycle >> 8 & 0xff:02x}:{cycle & 0xff:02x}"
            port = api.create_port(NETWORK, mac)
            devices.add(port["device"])
            api.delete_port(NETWORK, port["uuid"])
            if cycle in points:
                ports.rss.append((cycle, rss_kb(pid)))
                if cycle == ports.half:
                    ports.mark("half", pid, memory)
        port_s = time.monotonic() - begin
        ports.mark("end", pid, memory)
        api.destroy(NETWORK)

        after = ns_view(ns)
        end_fds, files = (settled_fd_count(pid), thread_count(pid)), state_files(state)
        leftovers = dnsmasq_pids(ns)

    problems = []
    for key in before_start:
        if after[key] != before_start[key]:
            problems.append(f"leaked {key}: before {before_start[key]!r}, after {after[key]!r}")
    if leftovers:
        problems.append(f"leaked dnsmasq processes: {leftovers}")
    if files != base_files:
        problems.append(f"state files: {base_files} after warm-up, {files} at the end")
    # Each port is deleted before the next is made, so each can have the same device name:
    # names that keep changing mean deleted ports still count as holding theirs.
    if len(devices) > 1:
        problems.append(f"port devices: {len(devices)} different names for ports that never "
                        f"coexisted ({', '.join(sorted(devices)[:5])}, ...): deleted ports' "
                        "names stay taken")

    print(f"start/stop cycles: {cycles} in {start_stop_s:.1f} s "
          f"({1000 * start_stop_s / max(cycles, 1):.1f} ms per cycle)")
    print(f"port create/delete cycles: {port_cycles} in {port_s:.1f} s "
          f"({1000 * port_s / max(port_cycles, 1):.1f} ms per cycle); "
          f"port device names used: {', '.join(sorted(devices)[:3])}"
          f"{', ...' if len(devices) > 3 else ''} ({len(devices)})")
    check_fds([start_stop, ports], end_fds, problems)
    check_memory([start_stop, ports], base_rss, options, problems)
    print(f"namespace after: {len(after['links'])} links, {len(after['addresses'])} addresses, "
          f"{len(after['routes'])} routes, nft ruleset {len(after['nft'])} bytes, "
          f"dnsmasq {len(leftovers)}; state files {len(files)} (as after warm-up: "
          f"{files == base_files})")
    for problem in problems:
        print(f"LEAK: {problem}")
    print("no leak" if not problems else f"{len(problems)} leak(s)")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--port-cycles", type=int, default=5000)
    parser.add_argument("--rss-slack-kb", type=int, default=4096,
                        help="RSS growth over the whole run after warm-up that still counts "
                        "as flat (default: %(default)s)")
    parser.add_argument("--rss-late-slack-kb", type=int, default=1024,
                        help="RSS growth over the second half of a phase that still counts as "
                        "a plateau (default: %(default)s)")
    parser.add_argument("--blocks-per-cycle", type=float, default=0.5,
                        help="Python allocated-block growth per cycle, over the second half "
                        "of a phase, that still counts as flat (default: %(default)s)")
    parser.add_argument("--blocks-noise", type=int, default=1000,
                        help="allocated blocks that come and go whatever the cycle count "
                        "(requests and supervision ticks in flight, timers): allowed on top "
                        "(default: %(default)s)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace the daemon's Python allocations and print what grew")
    options = parser.parse_args()
    if os.geteuid() != 0:
        print("soak: needs root (creates a network namespace)", file=sys.stderr)
        return 2
    if options.cycles < 2 or options.port_cycles < 2:
        parser.error("--cycles and --port-cycles must be at least 2 (a phase has two halves)")
    ns = "vnt-soak-" + secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix="vnt-soak-"))
    root.chmod(0o755)  # dnsmasq, once it dropped root, reads its hosts files below
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return soak(ns, root, options)
    finally:
        for pid in pids_in_netns(ns):  # only processes inside the namespace made here
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
