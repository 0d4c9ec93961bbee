"""Processes: the DHCP servers of this namespace (for the doctor), and running the tools
the faces call on (Graphviz's dot, the user's editor) without a shell.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from virtnet.facts import ProcessInfo

PROC = Path("/proc")
OWN_NETNS = PROC / "self" / "ns" / "net"


def netns_supported() -> bool:
    """Whether the kernel has network namespaces (CONFIG_NET_NS)."""
    return OWN_NETNS.exists()


def processes_in_netns(programs: Iterable[str]) -> list[ProcessInfo]:
    """The processes named PROGRAMS (their comm) in the network namespace this process is in,
    with a dnsmasq's --conf-file text when it can be read."""
    wanted = set(programs)
    try:
        ours = os.stat(OWN_NETNS).st_ino
    except OSError:
        return []
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm not in wanted or os.stat(entry / "ns" / "net").st_ino != ours:
                continue
            argv = tuple(p.decode(errors="replace")
                         for p in (entry / "cmdline").read_bytes().split(b"\0") if p)
        except OSError:
            continue
        conf = ""
        for arg in argv:
            if arg.startswith("--conf-file="):
                try:
                    conf = Path(arg.split("=", 1)[1]).read_text(errors="replace")[:100_000]
                except OSError:
                    conf = ""
        found.append(ProcessInfo(int(entry.name), comm, argv, conf))
    return found


def run_attached(argv: list[str]) -> int:
    """Run ARGV on this process's terminal (an editor); its exit status."""
    return subprocess.run(argv, check=False).returncode


def run_filter(argv: list[str], data: bytes,
               timeout: float) -> subprocess.CompletedProcess[bytes] | None:
    """Run ARGV with DATA on its stdin, capturing its output as bytes; None when it did not
    finish within TIMEOUT seconds (it is killed)."""
    try:
        return subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


__all__ = ["netns_supported", "processes_in_netns", "run_attached", "run_filter"]
