"""Soak: many start/stop and port create/delete cycles through one long-lived virtnetd, then
look for anything left behind (``make soak``: 500 and 5000 cycles; needs root).

    .venv/bin/python bench/soak.py [--cycles 500] [--port-cycles 5000]

Everything runs inside a network namespace created here (``vnt-soak-XXXX``) and deleted at the
end, even on failure; the daemon and every process in that namespace are stopped by pid.
Afterwards, compared with the moment after the first warm-up cycles:
- links, addresses, routes and the nftables ruleset of the namespace (as before the first start)
- dnsmasq processes in the namespace (none), the files under the state directory (the same)
- the daemon's open file descriptors (/proc/PID/fd: the same count)
- the daemon's resident memory (VmRSS), sampled along the way: flat (growth reported; a
  growth above --rss-slack-kb fails)
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
from pathlib import Path
from typing import Any

from virtnet.testing.daemon import VirtnetdProcess

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


def ns_pids(ns: str) -> list[int]:
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


def dnsmasq_pids(ns: str) -> list[int]:
    found = []
    for pid in ns_pids(ns):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq":
                found.append(pid)
        except OSError:
            continue
    return found


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def state_files(state: Path) -> list[str]:
    return sorted(str(p.relative_to(state)) for p in state.rglob("*")
                  if p.is_file() and p.name not in IGNORED_FILES)


def soak(ns: str, root: Path, cycles: int, port_cycles: int, rss_slack_kb: int) -> int:
    state = root / "state"
    before_start = ns_view(ns)
    with VirtnetdProcess(ns, state) as daemon, daemon.client() as api:
        api.define(XML)
        for _ in range(WARMUP):
            api.start(NETWORK)
            port = api.create_port(NETWORK, "52:54:00:97:00:01")
            api.delete_port(NETWORK, port["uuid"])
            api.destroy(NETWORK)
        pid = daemon.pid
        base_fds, base_rss, base_files = fd_count(pid), rss_kb(pid), state_files(state)
        samples = [base_rss]

        begin = time.monotonic()
        for cycle in range(1, cycles + 1):
            api.start(NETWORK)
            api.destroy(NETWORK)
            if cycle % max(1, cycles // 10) == 0:
                samples.append(rss_kb(pid))
        start_stop_s = time.monotonic() - begin

        api.start(NETWORK)
        begin = time.monotonic()
        for cycle in range(1, port_cycles + 1):
            mac = f"52:54:00:97:{cycle >> 8 & 0xff:02x}:{cycle & 0xff:02x}"
            port = api.create_port(NETWORK, mac)
            api.delete_port(NETWORK, port["uuid"])
            if cycle % max(1, port_cycles // 10) == 0:
                samples.append(rss_kb(pid))
        port_s = time.monotonic() - begin
        api.destroy(NETWORK)

        after = ns_view(ns)
        fds, rss, files = fd_count(pid), rss_kb(pid), state_files(state)
        leftovers = dnsmasq_pids(ns)

    problems = []
    for key in before_start:
        if after[key] != before_start[key]:
            problems.append(f"leaked {key}: before {before_start[key]!r}, after {after[key]!r}")
    if leftovers:
        problems.append(f"leaked dnsmasq processes: {leftovers}")
    if fds != base_fds:
        problems.append(f"daemon file descriptors: {base_fds} after warm-up, {fds} at the end")
    if files != base_files:
        problems.append(f"state files: {base_files} after warm-up, {files} at the end")
    growth = max(samples) - base_rss
    if growth > rss_slack_kb:
        problems.append(f"daemon RSS grew by {growth} kB (more than {rss_slack_kb} kB)")

    print(f"start/stop cycles: {cycles} in {start_stop_s:.1f} s "
          f"({1000 * start_stop_s / max(cycles, 1):.1f} ms per cycle)")
    print(f"port create/delete cycles: {port_cycles} in {port_s:.1f} s "
          f"({1000 * port_s / max(port_cycles, 1):.1f} ms per cycle)")
    print(f"daemon fds: {base_fds} after warm-up, {fds} at the end")
    print(f"daemon RSS kB: {base_rss} after warm-up, {rss} at the end, samples {samples}, "
          f"max growth {growth}")
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
                        help="RSS growth after warm-up that still counts as flat")
    options = parser.parse_args()
    if os.geteuid() != 0:
        print("soak: needs root (creates a network namespace)", file=sys.stderr)
        return 2
    ns = "vnt-soak-" + secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix="vnt-soak-"))
    root.chmod(0o755)  # dnsmasq, once it dropped root, reads its hosts files below
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return soak(ns, root, options.cycles, options.port_cycles, options.rss_slack_kb)
    finally:
        for pid in ns_pids(ns):  # only processes inside the namespace made here
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
