"""Traffic control on the host: run tc command batches, create IFB devices, and probe once
which qdiscs, classifiers and actions the kernel has.

One ``tc -batch`` process per action (not one per command): a port with shaping costs one
spawn. Teardown tolerates what is already gone (the device or the qdisc), so an undo can run
twice and after a partial apply.

The probe runs in a forked child that first moves into a new, empty network namespace of
its own: there it creates one IFB device, tries each piece on it, and the namespace (with the
device) vanishes when the child exits, so probing never adds or removes a link where the
caller plans. Its result is kept per process and, when a cache directory is given, in a file
keyed by the kernel's boot id: kernel features do not change until reboot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from virtnet.errors import HostError, StorageError
from virtnet.facts import TcFeatures
from virtnet.host.netlink import NetlinkFailure
from virtnet.host.rtnl import shared_rtnl
from virtnet.host.fs import atomic_write
from virtnet.host.netns import run_in_netns, unshare_netns

TC_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 20.0
TC_SEARCH_PATH = "/usr/sbin:/sbin:/usr/bin:/bin:/usr/local/sbin"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
FEATURES_FILE = "kernel-tc-features.json"
# What tc prints when the thing to remove is not there (any more).
_GONE = re.compile(
    r"Cannot find device|No such file or directory|No such device|Invalid handle|"
    r"Cannot find specified qdisc|Class doesn't exist|Filter with specified priority/protocol "
    r"not found|Cannot delete qdisc with handle of zero|Specified class not found",
    re.IGNORECASE,
)
_FAILED_LINE = re.compile(r"^Command failed -:(\d+)\s*$")

_features_cache: TcFeatures | None = None


def tc_binary() -> str:
    found = shutil.which("tc", path=TC_SEARCH_PATH)
    if found is None:
        raise HostError("cannot shape traffic: the tc command (iproute2) is not installed")
    return found


def _batch(commands: list[list[str]], force: bool) -> tuple[int, dict[int, str]]:
    """Run COMMANDS through one ``tc -batch -``; return its status and, per failing line
    (1-based), the error text tc printed for it."""
    text = "".join(" ".join(argv) + "\n" for argv in commands)
    argv = [tc_binary()]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    try:
        proc = subprocess.run(argv, input=text, capture_output=True, text=True,
                              timeout=TC_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise HostError(f"tc did not finish within {TC_TIMEOUT_S:.0f} s") from None
    failures: dict[int, str] = {}
    pending: list[str] = []
    for line in (proc.stderr or "").splitlines():
        match = _FAILED_LINE.match(line.strip())
        if match:
            failures[int(match.group(1))] = " ".join(pending).strip()
            pending = []
        elif line.strip():
            pending.append(line.strip())
    if proc.returncode != 0 and not failures:
        failures[len(commands)] = " ".join(pending).strip() or f"exit status {proc.returncode}"
    return proc.returncode, failures


def run(commands: list[list[str]], *, what: str, missing_ok: bool = False) -> None:
    """Run tc COMMANDS (argv lists without 'tc') in order, in one process.

    ``missing_ok`` (teardown): every command is tried; failures saying the device, qdisc,
    class or filter is not there are ignored, any other failure is raised at the end.
    """
    if not commands:
        return
    status, failures = _batch(commands, force=missing_ok)
    if status == 0:
        return
    problems = []
    for line, error in sorted(failures.items()):
        if missing_ok and _GONE.search(error or ""):
            continue
        command = " ".join(commands[line - 1]) if 0 < line <= len(commands) else "?"
        problems.append(f"tc {command}: {error or 'failed'}")
    if problems:
        raise HostError(f"cannot {what}:\n  " + "\n  ".join(problems))


def create_ifb(name: str) -> None:
    """Create the IFB device NAME, up (it only ever carries redirected traffic)."""
    rtnl = shared_rtnl()
    try:
        rtnl.create_link(name, "ifb", up=True)
    except NetlinkFailure as exc:
        if exc.code == 95:  # EOPNOTSUPP
            raise HostError(
                f"cannot create {name}: the kernel lacks IFB devices (CONFIG_IFB)"
            ) from None
        raise


def delete_link(name: str) -> bool:
    return shared_rtnl().delete_link(name)


# --- the probe ----------------------------------------------------------------------------


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _read_cache(path: Path) -> TcFeatures | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("boot_id") != _boot_id() or not _boot_id():
        return None
    features = data.get("features")
    return TcFeatures.from_dict(features) if isinstance(features, dict) else None


def _write_cache(path: Path, features: TcFeatures) -> None:
    try:
        atomic_write(path, json.dumps({"boot_id": _boot_id(),
                                       "features": features.to_dict()}) + "\n")
    except StorageError:
        pass  # only a cache: the next command probes again


def probe_features(cache_dir: Path | None = None) -> TcFeatures:
    """What tc can use on this kernel: probed on a scratch IFB device, once per boot."""
    global _features_cache
    if _features_cache is not None:
        return _features_cache
    cache = cache_dir / FEATURES_FILE if cache_dir is not None else None
    if cache is not None:
        cached = _read_cache(cache)
        if cached is not None:
            _features_cache = cached
            return cached
    try:
        features = run_in_netns(None, _probe_in_fresh_netns, timeout=PROBE_TIMEOUT_S,
                                what="the tc feature probe")
    except (HostError, OSError):
        # No private namespace (no privilege) means no device to try qdiscs on either: the
        # defaults (the common pieces, no police) stand, and are not kept for the next one.
        return TcFeatures()
    _features_cache = features
    if cache is not None:
        _write_cache(cache, features)
    return features


def _probe_in_fresh_netns() -> TcFeatures:
    """The child's side of the probe: a namespace of its own, then the pieces tried there."""
    unshare_netns()
    return _probe_on(f"vnprobe{os.getpid() % 100000}")


def _probe_on(scratch: str) -> TcFeatures:
    """Try each tc piece on a new IFB device SCRATCH in the current namespace, then delete it."""
    rtnl = shared_rtnl()
    try:
        rtnl.create_link(scratch, "ifb", up=False)
    except NetlinkFailure:
        # Without IFB there is no device of our own to try qdiscs on; assume the common
        # pieces and report IFB (and police, which libvirt needs) as missing.
        return TcFeatures(ifb=False, police=False, sfq=False)
    try:
        steps = [
            ["qdisc", "add", "dev", scratch, "root", "handle", "1:", "htb", "default", "1"],
            ["class", "add", "dev", scratch, "parent", "1:", "classid", "1:1", "htb",
             "rate", "1mbit"],
            ["qdisc", "add", "dev", scratch, "parent", "1:1", "handle", "2:", "sfq"],
            ["qdisc", "add", "dev", scratch, "handle", "ffff:", "ingress"],
            ["filter", "add", "dev", scratch, "parent", "ffff:", "protocol", "all", "prio", "1",
             "u32", "match", "u32", "0", "0"],
            ["filter", "add", "dev", scratch, "parent", "ffff:", "protocol", "all", "prio", "2",
             "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev",
             scratch],
            ["filter", "add", "dev", scratch, "parent", "ffff:", "protocol", "all", "prio", "3",
             "u32", "match", "u32", "0", "0", "police", "rate", "1mbit", "burst", "10k",
             "drop", "flowid", ":1"],
        ]
        _, failures = _batch(steps, force=True)
        ok = {index: index not in failures for index in range(1, len(steps) + 1)}
        return TcFeatures(
            htb=ok[1] and ok[2],
            sfq=ok[1] and ok[2] and ok[3],
            ingress=ok[4],
            u32=ok[4] and ok[5],
            mirred=ok[4] and ok[5] and ok[6],
            ifb=True,
            police=ok[4] and ok[5] and ok[7],
        )
    finally:
        rtnl.delete_link(scratch)


__all__ = ["create_ifb", "delete_link", "probe_features", "run", "tc_binary"]
