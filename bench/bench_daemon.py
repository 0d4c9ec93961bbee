"""Benchmark: virtnet through virtnetd against libvirt 9.0, and guest ports over the API.

In one run, as whole commands (a process per command, wall time, medians of --rounds >= 7),
round by round interleaved:
    virtnet net-start default / net-destroy default   (the thin client, forwarded to virtnetd
                                                       serving namespace A)
    virsh net-start default / net-destroy default     (libvirtd 9.0 in namespace B)
    virtnet net-list / virsh net-list                 (with the network active)
The goal for start and destroy: virtnet <= 1/4 of libvirt's time.

Then guest ports on the active default network:
- 1000 port creates over one API connection (virtnet.client, one request each, no fd
  hand-over), median per port (goal < 1 ms), then the deletes;
- port-create as whole CLI commands (``virtnet port-create default --mac ...``);
- for each API create, the daemon's own account (its Server-Timing header): the handler's
  whole time and, of that, the engine's work in a worker thread;
- the kernel floor: the same number of taps made in the same namespace the cheapest way
  (TUNSETIFF + TUNSETPERSIST, then MAC, bridge and up in one RTM_NEWLINK), timed one by one.
  Enslaving costs more the more ports a bridge has, so at 1000 ports this floor alone is
  close to the 1 ms goal;
- the API's floor: a request that does no work (GET /v1) over the same connection, as many
  times as there are ports: what any answer from the daemon costs the client.
The sum of the two floors is what a port create over the API cannot go below.

And where the thin client's time goes (VIRTNET_CLIENT_TIMING): the interpreter's own start
and exit (``python -c pass``), loading the client, connecting, building the request, waiting
for the answer (of which the daemon's own work), printing.

The state directory lives on tmpfs (/dev/shm), as /run does on a host. Children run with
bytecode caching on (PYTHONPYCACHEPREFIX in a temporary directory) and a first round is not
counted, so the numbers are those of an installed virtnet. Needs root; the virsh side needs
libvirtd 9.0 and is skipped (with the reason) without it.

Run: .venv/bin/python bench/bench_daemon.py [--rounds N] [--ports N] [--cli-ports N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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

from tests.kit.daemon import VirtnetdProcess, bytecode_env, script  # noqa: E402
from tests.kit.libvirtd import LibvirtdInNetns, libvirtd_unavailable_reason  # noqa: E402
from virtnet.host.netns import pids_in_netns  # noqa: E402
EXAMPLE = ROOT / "examples" / "default.xml"
NAME = "default"
RATIO_GOAL = 0.25
PORT_GOAL_MS = 1.0


def run(argv: list[str], env: dict[str, str], check: bool = True) -> tuple[float, str, str]:
    """Wall time (s), stdout, stderr of one whole command."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return elapsed, proc.stdout, proc.stderr


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000.0


def client_timing(stderr: str) -> dict[str, Any] | None:
    for line in stderr.splitlines():
        if line.startswith("virtnet-timing: "):
            return json.loads(line.split(": ", 1)[1])
    return None


def delete_netns(ns: str) -> None:
    if not Path(f"/run/netns/{ns}").exists():
        return
    for pid in pids_in_netns(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    subprocess.run(["ip", "netns", "delete", ns], timeout=30, check=False)


# Run in the bench's namespace: N persistent taps (TUNSETIFF + TUNSETPERSIST), each given its
# MAC, enslaved to a bridge with an address and set up in one RTM_NEWLINK (what virtnet does
# for a port, without anything else), timed one by one; then removed.
FLOOR_CODE = """
import ipaddress, json, sys, time
from virtnet.host.rtnl import create_persistent_tap, shared_rtnl
count = int(sys.argv[1])
rtnl = shared_rtnl()
# as the default network's bridge: STP on, no forward delay, a MAC of its own (a network's
# definition always has one; without it the kernel recomputes the bridge id at every port)
rtnl.create_bridge("vnfloor0", stp=True, forward_delay=0, mac="52:54:00:fe:00:01")
rtnl.add_address("vnfloor0", ipaddress.ip_interface("10.201.0.1/16"))
rtnl.set_link("vnfloor0", up=True)
samples = []
try:
    for index in range(count):
        name = f"vnfl{index}"
        start = time.perf_counter()
        create_persistent_tap(name)
        rtnl.set_link(name, mac=f"fe:54:01:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:"
                      f"{index & 255:02x}", master="vnfloor0", up=True)
        samples.append(time.perf_counter() - start)
finally:
    for index in range(len(samples)):
        rtnl.delete_link(f"vnfl{index}")
    rtnl.delete_link("vnfloor0")
print(json.dumps(samples))
"""


def server_timing(header: str) -> dict[str, float]:
    """The daemon's Server-Timing header ("work;dur=1.2, handler;dur=1.6") in ms."""
    found = {"work": 0.0, "handler": 0.0}
    for item in header.split(","):
        name, _, duration = item.strip().partition(";dur=")
        if name in found and duration:
            found[name] = float(duration)
    return found


def mac(index: int) -> str:
    return f"52:54:00:{(index >> 16) & 0xFF:02x}:{(index >> 8) & 0xFF:02x}:{index & 0xFF:02x}"


class Bench:
    def __init__(self, args: argparse.Namespace, ns: str, root: Path) -> None:
        self.args = args
        self.ns = ns
        self.root = root
        self.env = {**os.environ, **bytecode_env(root / "pycache"),
                    "VIRTNET_CLIENT_TIMING": "1"}
        self.daemon = VirtnetdProcess(ns, root / "state", env=bytecode_env(root / "pycache"))
        self.samples: dict[str, list[float]] = {}
        self.timings: dict[str, list[dict[str, Any]]] = {}

    def virtnet(self, *args: str) -> list[str]:
        return [*script("virtnet"), "--netns", self.ns, "--state-dir",
                str(self.daemon.state_dir), *args]

    def record(self, label: str, seconds: float, stderr: str | None = None) -> None:
        self.samples.setdefault(label, []).append(seconds)
        timing = client_timing(stderr) if stderr is not None else None
        if timing is not None:
            if not timing["forwarded"]:
                raise RuntimeError(f"{label}: the command was not forwarded to the daemon")
            self.timings.setdefault(label, []).append(timing)

    def timed_virtnet(self, label: str | None, *args: str) -> None:
        seconds, _, stderr = run(self.virtnet(*args), self.env)
        if label is not None:
            self.record(label, seconds, stderr)

    # --- the rounds ------------------------------------------------------------------------

    def commands(self, lv: LibvirtdInNetns | None) -> None:
        definition = self.root / "default.xml"
        shutil.copy(EXAMPLE, definition)
        self.timed_virtnet(None, "net-define", str(definition))
        if lv is not None:
            proc = lv.virsh("net-define", str(definition))
            if proc.returncode != 0:
                raise RuntimeError(f"virsh net-define failed: {proc.stderr}")
        virsh = lv.virsh_argv() if lv is not None else []
        for round_index in range(self.args.rounds + 1):
            counted = round_index > 0  # the first round warms caches and is not counted
            label = (lambda name: name) if counted else (lambda name: None)
            self.timed_virtnet(label("virtnet net-start"), "net-start", NAME)
            self.timed_virtnet(label("virtnet net-list"), "net-list")
            self.timed_virtnet(label("virtnet net-destroy"), "net-destroy", NAME)
            if lv is not None:
                for verb in ("net-start", "net-list", "net-destroy"):
                    seconds, _, _ = run(virsh + ([verb, NAME] if verb != "net-list"
                                                 else [verb]), dict(os.environ))
                    if counted:
                        self.record(f"virsh {verb}", seconds)
        for _ in range(self.args.rounds):
            seconds, _, _ = run([sys.executable, "-c", "pass"], self.env)
            self.record("python -c pass", seconds)

    def ports_over_api(self) -> None:
        self.timed_virtnet(None, "net-start", NAME)
        created: list[str] = []
        path = f"/v1/networks/{NAME}/ports"
        with self.daemon.client() as api:
            for _ in range(self.args.ports):
                start = time.perf_counter()
                api.call("GET", "/v1")
                self.record("API round trip floor (GET /v1)", time.perf_counter() - start)
            for index in range(self.args.ports):
                start = time.perf_counter()
                response = api.call("POST", path, {"mac": mac(index)}, raw=True)
                self.record("port create (API, one connection)", time.perf_counter() - start)
                server = server_timing(response.headers.get("server-timing", ""))
                self.record("port create: daemon handler", server["handler"] / 1000.0)
                self.record("port create: engine work", server["work"] / 1000.0)
                created.append(response.json()["uuid"])
            for uuid in created:
                start = time.perf_counter()
                api.delete_port(NAME, uuid)
                self.record("port delete (API, one connection)", time.perf_counter() - start)

    def kernel_floor(self) -> None:
        """The same number of taps made the cheapest way the kernel allows, in the same
        namespace, on a bridge like the network's: what a port create cannot go below."""
        proc = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", FLOOR_CODE,
                               str(self.args.ports)], capture_output=True, text=True,
                              timeout=600, env=self.env)
        if proc.returncode != 0:
            raise RuntimeError(f"the kernel floor measurement failed: {proc.stderr}")
        for seconds in json.loads(proc.stdout):
            self.record("port create: kernel floor", seconds)

    def ports_as_commands(self) -> None:
        created = []
        for index in range(self.args.cli_ports + 1):
            seconds, stdout, stderr = run(self.virtnet(
                "port-create", NAME, "--mac", mac(0x100000 + index), "--json"), self.env)
            if index > 0:
                self.record("virtnet port-create (command)", seconds, stderr)
            created.append(json.loads(stdout)["uuid"])
        with self.daemon.client() as api:
            for uuid in created:
                api.delete_port(NAME, uuid)
        self.timed_virtnet(None, "net-destroy", NAME)

    # --- the report ------------------------------------------------------------------------

    def report(self, virsh_skipped: str | None) -> None:
        print(f"\nvirtnet through virtnetd vs libvirt 9.0 ({self.args.rounds} rounds, medians, "
              "whole commands)")
        print(f"  {'':32} {'virtnet':>10} {'virsh':>10} {'ratio':>7}   goal")
        for verb in ("net-start", "net-destroy", "net-list"):
            ours = median_ms(self.samples[f"virtnet {verb}"])
            theirs_samples = self.samples.get(f"virsh {verb}")
            if theirs_samples:
                theirs = median_ms(theirs_samples)
                ratio = ours / theirs
                goal = "" if verb == "net-list" else (
                    "met" if ratio <= RATIO_GOAL else f"missed (<= {RATIO_GOAL:g})")
                print(f"  {verb:32} {ours:8.1f}ms {theirs:8.1f}ms {ratio:7.2f}   {goal}")
            else:
                print(f"  {verb:32} {ours:8.1f}ms {'-':>10} {'-':>7}")
        if virsh_skipped:
            print(f"  (virsh skipped: {virsh_skipped})")

        print(f"\nguest ports on the NAT network")
        for label in ("port create (API, one connection)", "port create: daemon handler",
                      "port create: engine work", "port create: kernel floor",
                      "API round trip floor (GET /v1)",
                      "port delete (API, one connection)", "virtnet port-create (command)"):
            values = self.samples[label]
            ordered = sorted(values)
            goal = ""
            if label == "port create (API, one connection)":
                goal = "met" if median_ms(values) < PORT_GOAL_MS else f"missed (< {PORT_GOAL_MS:g} ms)"
            print(f"  {label:36} median {median_ms(values):7.2f} ms  p90 "
                  f"{ordered[int(len(ordered) * 0.9)] * 1000:7.2f} ms  n={len(values)}  {goal}")
        api = median_ms(self.samples["port create (API, one connection)"])
        floor = median_ms(self.samples["port create: kernel floor"])
        round_trip = median_ms(self.samples["API round trip floor (GET /v1)"])
        print(f"  API create over the kernel floor: {api - floor:+.2f} ms "
              f"({api / floor:.2f} x the floor)")
        print(f"  the two floors together: {floor:.2f} + {round_trip:.2f} = "
              f"{floor + round_trip:.2f} ms (goal < {PORT_GOAL_MS:g} ms); API create over "
              f"them: {api - floor - round_trip:+.2f} ms")

        print("\nwhere the thin client's time goes (medians, ms)")
        interpreter = median_ms(self.samples["python -c pass"])
        print(f"  {'':28} {'whole':>7} {'python':>7} {'load':>7} {'connect':>8} {'request':>8} "
              f"{'answer':>7} {'daemon':>7} {'print':>6}")
        for label in ("virtnet net-start", "virtnet net-destroy", "virtnet net-list",
                      "virtnet port-create (command)"):
            timings = self.timings[label]
            whole = median_ms(self.samples[label])
            main_ms = statistics.median(t["main_ms"] for t in timings)
            parts = {key: statistics.median(t.get(f"{key}_ms", 0.0) for t in timings)
                     for key in ("connect", "prepared", "answered", "printed")}
            server = statistics.median(t.get("server_ms", 0.0) for t in timings)
            # "load": from the interpreter's start-up to the client's first line, and exit,
            # beyond what `python -c pass` costs.
            load = whole - interpreter - main_ms
            print(f"  {label:28} {whole:7.1f} {interpreter:7.1f} {load:7.1f} "
                  f"{parts['connect']:8.2f} {parts['prepared']:8.2f} {parts['answered']:7.2f} "
                  f"{server:7.2f} {parts['printed']:6.2f}")
        print("  python: the interpreter's start and exit; load: loading virtnet.face.fastcli and "
              "the rest of exit;\n  connect: to the socket; request: reading files, encoding; "
              "answer: until the answer is in\n  (daemon: of which the command's own work in "
              "the daemon); print: writing the output")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--ports", type=int, default=1000)
    parser.add_argument("--cli-ports", type=int, default=50)
    parser.add_argument("--state-base", type=Path, default=Path("/dev/shm"))
    args = parser.parse_args()
    if args.rounds < 7:
        parser.error("--rounds must be at least 7 (medians of >= 7)")
    if os.geteuid() != 0:
        print("bench_daemon: needs root (creates network namespaces)", file=sys.stderr)
        return 2
    ns = "vnt-bench-" + secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix="virtnet-bench-daemon-", dir=args.state_base))
    root.chmod(0o755)
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    bench = Bench(args, ns, root)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=30)
        bench.daemon.start()
        skipped = libvirtd_unavailable_reason()
        if skipped is None:
            with LibvirtdInNetns() as lv:
                bench.commands(lv)
        else:
            bench.commands(None)
        bench.ports_over_api()
        bench.kernel_floor()
        bench.ports_as_commands()
        bench.report(skipped)
    finally:
        bench.daemon.stop()
        delete_netns(ns)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
