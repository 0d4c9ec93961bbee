"""Fixtures for tests on the real kernel, inside network namespaces they create.

Safety: every namespace is created here with a unique ``vnt-`` name and deleted afterwards,
even when the test fails; processes left inside such a namespace (dnsmasq) are killed by
pid; nothing ever touches the root namespace, and no namespace is connected to it. Code
under test runs in a forked child that entered the namespace (never the pytest process).

Fixtures: ``make_netns`` (factory) and ``netns_kit`` (the factory plus every helper below, since
test modules cannot import a conftest):
- ``make_netns()``            → a fresh namespace name
- ``run_in_netns(ns, fn, *a)`` → fn(*a) evaluated inside NS in a forked child; its result
  (or its exception, re-raised here) comes back pickled
- ``ns_run(ns, argv)``        → ``ip netns exec NS argv`` with a timeout
- ``add_guest(...)``          → a "guest" namespace behind a veth plugged into a bridge
- ``add_upstream(...)``       → an "upstream" namespace behind a veth "uplink"
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

NS_PREFIX = "vnt-"
CMD_TIMEOUT_S = 20.0
CHILD_TIMEOUT_S = 120.0


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2 (the ip command)"
    if not Path("/proc/self/ns/net").exists():
        return "the kernel has no network namespaces"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here) and "netns" in item.keywords:
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def _preload_netlink() -> None:
    """Import pyroute2 once in the pytest process so forked children start warm."""
    if _skip_reason() is None:
        from tests.kit.pyroute2_light import load_pyroute2

        load_pyroute2()


# --- commands ----------------------------------------------------------------------------


def run(argv: list[str], *, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=CMD_TIMEOUT_S, input=input
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ns_run(ns: str, argv: list[str], *, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return run(["ip", "netns", "exec", ns, *argv], check=check, input=input)


def ns_json(ns: str, argv: list[str]) -> Any:
    """Output of ``ip -j ARGV`` inside NS, parsed."""
    out = run(["ip", "-n", ns, "-j", *argv]).stdout
    return json.loads(out) if out.strip() else []


def ns_links(ns: str) -> list[str]:
    return sorted(link["ifname"] for link in ns_json(ns, ["link", "show"]))


def ns_addresses(ns: str) -> list[str]:
    result = []
    for link in ns_json(ns, ["address", "show"]):
        for info in link.get("addr_info", []):
            if info.get("scope") == "link" or info.get("local") in ("127.0.0.1", "::1"):
                continue
            result.append(f"{info['local']}/{info['prefixlen']}")
    return sorted(result)


def ns_routes(ns: str) -> list[str]:
    routes = ns_json(ns, ["route", "show"]) + ns_json(ns, ["-6", "route", "show"])
    return sorted(r["dst"] for r in routes if not r["dst"].startswith("fe80"))


def ns_nft_ruleset(ns: str) -> str:
    return ns_run(ns, ["nft", "list", "ruleset"]).stdout


def ns_pids(ns: str) -> list[int]:
    """Pids of the processes whose network namespace is NS."""
    target = os.stat(f"/run/netns/{ns}").st_ino
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == target:
                pids.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return pids


def live_pids(ns: str) -> list[int]:
    """ns_pids without zombies (exited, waiting for their reaper)."""
    alive = []
    for pid in ns_pids(ns):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive


# --- namespaces ---------------------------------------------------------------------------


def _delete_netns(name: str) -> None:
    if not Path(f"/run/netns/{name}").exists():
        return
    # The macvtap nodes virtnet made in there (/dev/virtnet/net<inode>-<macvtap>) would
    # outlive it when a test failed before deleting its ports: ours, found by the inode.
    nodes = list(Path("/dev/virtnet").glob(f"net{os.stat(f'/run/netns/{name}').st_ino}-*"))
    for node in nodes:
        node.unlink(missing_ok=True)
    if nodes:
        try:
            Path("/dev/virtnet").rmdir()
        except OSError:
            pass  # other namespaces' nodes
    # Processes started inside our namespace (dnsmasq) would keep it alive: kill them, by pid.
    for pid in ns_pids(name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Factory of fresh, uniquely named namespaces; all are deleted at teardown."""
    created: list[str] = []

    def make() -> str:
        name = NS_PREFIX + secrets.token_hex(4)
        run(["ip", "netns", "add", name])
        created.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    try:
        yield make
    finally:
        for name in reversed(created):
            _delete_netns(name)


# --- forked children ------------------------------------------------------------------------


class ChildError(AssertionError):
    """An exception raised inside a forked child, with its traceback text."""


class Child:
    """A forked child evaluating a function inside a namespace; ``result()`` collects it."""

    def __init__(self, ns: str, pid: int, read_fd: int) -> None:
        self.ns = ns
        self.pid = pid
        self.read_fd = read_fd

    def result(self, timeout: float = CHILD_TIMEOUT_S) -> Any:
        """The child's return value; its exception is re-raised here (as itself when it
        pickles, else as ChildError with the child's traceback)."""
        chunks = []
        deadline = time.monotonic() + timeout
        with os.fdopen(self.read_fd, "rb") as inp:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                    raise AssertionError(f"child in {self.ns} did not finish within {timeout:.0f} s")
                ready, _, _ = select.select([inp], [], [], remaining)
                if ready:
                    chunk = os.read(inp.fileno(), 65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        _, wait_status = os.waitpid(self.pid, 0)
        data = b"".join(chunks)
        if not data:
            raise AssertionError(
                f"child in {self.ns} died (wait status {wait_status}) without a result"
            )
        kind, value = pickle.loads(data)
        if kind == "ok":
            return value
        exc, text = value
        if isinstance(exc, Exception):
            exc.add_note(f"raised in a child inside {self.ns}:\n{text}")
            raise exc
        raise ChildError(f"child inside {self.ns} failed:\n{text}")


def start_in_netns(
    ns: str, fn: Callable[..., Any], *args: Any, env: dict[str, str] | None = None, **kwargs: Any
) -> Child:
    """Fork a child that enters NS and evaluates fn(*args, **kwargs); return at once."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        status = 0
        try:
            os.close(read_fd)
            if env:
                os.environ.update(env)
            from virtnet.host.netns import enter_netns

            enter_netns(ns)
            try:
                payload = ("ok", fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
                payload = ("error", (exc, traceback.format_exc()))
            try:
                data = pickle.dumps(payload)
                pickle.loads(data)  # what cannot be rebuilt in the parent goes back as text
            except Exception:  # noqa: BLE001 - unpicklable result or exception
                text = payload[1][1] if payload[0] == "error" else traceback.format_exc()
                data = pickle.dumps(("error", (None, text)))
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
        except BaseException:  # noqa: BLE001
            status = 70
        finally:
            os._exit(status)
    os.close(write_fd)
    return Child(ns, pid, read_fd)


def run_in_netns(
    ns: str,
    fn: Callable[..., Any],
    *args: Any,
    env: dict[str, str] | None = None,
    timeout: float = CHILD_TIMEOUT_S,
    **kwargs: Any,
) -> Any:
    """fn(*args, **kwargs) evaluated in a forked child inside NS; see Child.result."""
    return start_in_netns(ns, fn, *args, env=env, **kwargs).result(timeout)


def fork_exit_status(ns: str, fn: Callable[..., Any], *args: Any, env: dict[str, str] | None = None, timeout: float = CHILD_TIMEOUT_S) -> int:
    """Run fn(*args) in a forked child inside NS and return its exit status (for crash tests)."""
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            if env:
                os.environ.update(env)
            from virtnet.host.netns import enter_netns

            enter_netns(ns)
            fn(*args)
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            os._exit(status)
    deadline = time.monotonic() + timeout
    while True:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(wait_status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child in {ns} did not finish within {timeout:.0f} s")
        time.sleep(0.005)


# --- topology helpers -----------------------------------------------------------------------


@dataclass(frozen=True)
class Guest:
    ns: str
    address: str  # "192.168.122.10/24"
    port: str  # the veth end in the host namespace, plugged into the bridge

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


def add_guest(
    host_ns: str,
    bridge: str,
    guest_ns: str,
    address: str,
    gateway: str | None = None,
) -> Guest:
    """Plug GUEST_NS into BRIDGE (inside HOST_NS) through a veth; its end is eth0."""
    port = "vg" + secrets.token_hex(3)
    run(["ip", "-n", host_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", guest_ns])
    run(["ip", "-n", host_ns, "link", "set", port, "master", bridge])
    run(["ip", "-n", host_ns, "link", "set", port, "up"])
    run(["ip", "-n", guest_ns, "address", "add", address, "dev", "eth0"])
    run(["ip", "-n", guest_ns, "link", "set", "eth0", "up"])
    if gateway is not None:
        run(["ip", "-n", guest_ns, "route", "add", "default", "via", gateway])
    return Guest(guest_ns, address, port)


@dataclass(frozen=True)
class Upstream:
    ns: str
    address: str  # upstream's own address, "198.51.100.2/24"
    uplink: str  # the host namespace's interface towards upstream
    uplink_address: str  # the host namespace's address on it, "198.51.100.1/24"

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    @property
    def uplink_ip(self) -> str:
        return self.uplink_address.split("/")[0]


def add_upstream(
    host_ns: str,
    upstream_ns: str,
    uplink_address: str = "198.51.100.1/24",
    address: str = "198.51.100.2/24",
    uplink: str = "uplink0",
) -> Upstream:
    """An "upstream" namespace behind a veth: the host side is UPLINK, the upstream side eth0."""
    run(["ip", "-n", host_ns, "link", "add", uplink, "type", "veth", "peer", "name", "eth0", "netns", upstream_ns])
    run(["ip", "-n", host_ns, "address", "add", uplink_address, "dev", uplink])
    run(["ip", "-n", host_ns, "link", "set", uplink, "up"])
    run(["ip", "-n", upstream_ns, "address", "add", address, "dev", "eth0"])
    run(["ip", "-n", upstream_ns, "link", "set", "eth0", "up"])
    return Upstream(upstream_ns, address, uplink, uplink_address)


def _icmp_echo(address: str, attempts: int, timeout: float) -> bool:
    """One ICMP echo per attempt (like ``ping -c1 -W1``) over a raw socket; True on a reply."""
    import socket
    import struct

    def checksum(data: bytes) -> int:
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        total = (total >> 16) + (total & 0xFFFF)
        total += total >> 16
        return ~total & 0xFFFF

    ident = os.getpid() & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        for seq in range(1, attempts + 1):
            body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"virtnet-probe..."
            packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
            sock.sendto(packet, (address, 0))
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], remaining)
                if not ready:
                    break
                data, (source, _) = sock.recvfrom(2048)
                header_len = (data[0] & 0x0F) * 4
                icmp_type, _, _, reply_id, reply_seq = struct.unpack(
                    "!BBHHH", data[header_len : header_len + 8]
                )
                if (icmp_type, source, reply_id, reply_seq) == (0, address, ident, seq):
                    return True
    return False


def ping(ns: str, address: str, *, attempts: int = 5, timeout: float = 1.0) -> bool:
    """Whether NS reaches the IPv4 ADDRESS: one echo per attempt, each waited TIMEOUT s."""
    return bool(run_in_netns(ns, _icmp_echo, address, attempts, timeout))


def require_tools(*tools: str) -> None:
    """Skip the calling test unless TOOLS are installed."""
    for tool in tools:
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"needs {tool}")


@dataclass
class Snapshot:
    """Everything of a namespace a network could leave behind, plus the state files."""

    links: list[str]
    addresses: list[str]
    routes: list[str]
    ruleset: str
    pids: list[int]
    files: list[str]


def snapshot(ns: str, state: Path) -> Snapshot:
    files = sorted(
        str(path.relative_to(state)) for path in state.rglob("*")
        if path.is_file() and path.name != "virtnet.lock"
    ) if state.exists() else []
    return Snapshot(
        links=ns_links(ns),
        addresses=ns_addresses(ns),
        routes=ns_routes(ns),
        ruleset=ns_nft_ruleset(ns),
        pids=sorted(live_pids(ns)),
        files=files,
    )


class NetnsKit:
    """The helpers of this file, as one fixture (test modules cannot import a conftest)."""

    Child = Child
    ChildError = ChildError
    Guest = Guest
    Upstream = Upstream

    def __init__(self, make: Callable[[], str]) -> None:
        self.make_netns = make

    run = staticmethod(run)
    ns_run = staticmethod(ns_run)
    ns_json = staticmethod(ns_json)
    ns_links = staticmethod(ns_links)
    ns_addresses = staticmethod(ns_addresses)
    ns_routes = staticmethod(ns_routes)
    ns_nft_ruleset = staticmethod(ns_nft_ruleset)
    ns_pids = staticmethod(ns_pids)
    live_pids = staticmethod(live_pids)
    start_in_netns = staticmethod(start_in_netns)
    run_in_netns = staticmethod(run_in_netns)
    fork_exit_status = staticmethod(fork_exit_status)
    add_guest = staticmethod(add_guest)
    add_upstream = staticmethod(add_upstream)
    ping = staticmethod(ping)
    require_tools = staticmethod(require_tools)
    snapshot = staticmethod(snapshot)


@pytest.fixture
def root() -> Iterator[Path]:
    """A work directory dnsmasq can still read once it dropped root (pytest's tmp_path is
    private to root, and a start with reservations refuses it: virtnet.service.privilege)."""
    path = Path(tempfile.mkdtemp(prefix="vnt-root-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def netns_kit(make_netns: Callable[[], str]) -> NetnsKit:
    """All helpers above plus ``make_netns`` (namespaces deleted at teardown)."""
    return NetnsKit(make_netns)
