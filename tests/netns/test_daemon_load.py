"""virtnetd under load and under attack, in a namespace of the test's own.

- Fuzzed requests (hypothesis, bounded): random methods, paths, query strings and bodies
  (malformed JSON, wrong types, unknown fields, raw garbage): never a 500 from a bug (an
  "InternalError"), never a traceback in a response, never a dead daemon.
- 100 concurrent API clients mixing reads, port creates (pairs racing for the same port UUID)
  and deletes on two networks: every request answered, each race won exactly once and lost
  with a clear refusal, no port lost or duplicated, and the state, the kernel's links and the
  daemon's answers agree afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import uuid as uuid_module
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virtnet.client import ApiError
from tests.kit.daemon import VirtnetdProcess, bytecode_env

pytestmark = pytest.mark.netns

CLIENTS = 100


def network_xml(name: str, bridge: str, subnet: str) -> str:
    return (f"<network><name>{name}</name><forward mode='nat'/>"
            f"<bridge name='{bridge}' stp='off'/>"
            f"<ip address='{subnet}.1' netmask='255.255.255.0'><dhcp>"
            f"<range start='{subnet}.100' end='{subnet}.200'/></dhcp></ip></network>")


def links(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return sorted(link["ifname"] for link in json.loads(out or "[]"))


@pytest.fixture(scope="module")
def daemon() -> Iterator[VirtnetdProcess]:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")
    ns = "vnt-" + secrets.token_hex(4)
    root = Path(tempfile.mkdtemp(prefix="vnt-load-"))
    root.chmod(0o755)
    process = VirtnetdProcess(ns, root / "state", args=("--request-timeout", "2"),
                              env=bytecode_env(root / "pycache"))
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=30)
        process.start()
        yield process
    finally:
        process.stop()
        from virtnet.host.netns import pids_in_netns

        for pid in pids_in_netns(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", ns], timeout=30, check=False)
        shutil.rmtree(root, ignore_errors=True)


# --- fuzzing ------------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/v1"), ("GET", "/v1/networks"), ("POST", "/v1/networks"),
    ("GET", "/v1/networks/{n}"), ("DELETE", "/v1/networks/{n}"),
    ("POST", "/v1/networks/{n}/start"), ("POST", "/v1/networks/{n}/destroy"),
    ("PUT", "/v1/networks/{n}/autostart"), ("GET", "/v1/networks/{n}/xml"),
    ("POST", "/v1/networks/{n}/update"), ("GET", "/v1/networks/{n}/leases"),
    ("GET", "/v1/networks/{n}/plan"), ("POST", "/v1/plan"),
    ("GET", "/v1/networks/{n}/ports"), ("POST", "/v1/networks/{n}/ports"),
    ("GET", "/v1/networks/{n}/ports/{p}"), ("GET", "/v1/networks/{n}/ports/{p}/xml"),
    ("DELETE", "/v1/networks/{n}/ports/{p}"), ("POST", "/v1/cli"), ("GET", "/v1/nothing"),
    ("PATCH", "/v1/networks"), ("POST", "/v1"),
]
FIELDS = ["xml", "start", "transient", "autostart", "command", "section", "parent_index", "live",
          "config", "mac", "portgroup", "owner", "owner_uuid", "uuid", "inbound", "outbound",
          "pass_fd", "vnet_hdr", "argv", "files", "stdin", "netns", "state_dir", "average",
          "dev", "ino", "data", "errno"]
NAMES = st.sampled_from(["fz", "nope", "a b", "ü", "..", "%2F", "x" * 300, "fz\x00"]) | st.text(
    max_size=12)
scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64) | st.floats(allow_nan=False)
           | st.text(max_size=40) | st.sampled_from(["<network/>", "52:54:00:00:00:01", "-",
                                                    "net-list", "add", "ip-dhcp-host"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=6), inner, max_size=5), max_leaves=12)
bodies = (st.none()
          | st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(
              lambda d: json.dumps(d).encode())
          | json_values.map(lambda v: json.dumps(v).encode())
          | st.binary(max_size=200)
          | st.text(max_size=100).map(str.encode))


def quote(text: str) -> str:
    return "".join(ch if ch.isalnum() and ch.isascii() else
                   "".join(f"%{b:02X}" for b in ch.encode()) for ch in text)


@st.composite
def requests(draw: Any) -> bytes:
    method, template = draw(st.sampled_from(ROUTES))
    path = template.replace("{n}", quote(draw(NAMES))).replace("{p}", quote(draw(NAMES)))
    query = draw(st.sampled_from(["", "?all=1", "?inactive=maybe", "?network=fz", "?since=x",
                                  "?mac=zz", "?x=1", "?since=0"]))
    body = draw(bodies)
    head = f"{method} {path}{query} HTTP/1.1\r\nHost: virtnetd\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + (body or b"")


def exchange(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"GET /v1/events" in data[:20] and b"\r\n\r\n" in b"".join(chunks):
                break  # a stream answered: its head is all there is to check
    return b"".join(chunks)


def check_response(request: bytes, response: bytes) -> None:
    assert response, f"no answer to {request[:80]!r}"
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"Traceback" not in body, body
    if status >= 500:
        error = json.loads(body)["error"]
        # The host may fail a request (HostError); the daemon itself must not.
        assert error["kind"] == "HostError", (request[:200], error)
    if b"application/json" in head and status >= 400:
        error = json.loads(body)["error"]
        assert error["status"] == status and error["message"]


@pytest.fixture(scope="module")
def fuzz_network(daemon: VirtnetdProcess) -> str:
    with daemon.client() as api:
        api.define(network_xml("fz", "vnfz0", "10.97.0"), start=True)
    return "fz"


def test_fuzzed_requests_never_crash_the_daemon(daemon: VirtnetdProcess,
                                                fuzz_network: str) -> None:
    path = daemon.socket_path

    @settings(max_examples=250, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(requests())
    def one(request: bytes) -> None:
        check_response(request, exchange(path, request))

    one()

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(st.binary(min_size=1, max_size=300))
    def garbage(data: bytes) -> None:
        exchange(path, data)  # any answer, or none; the daemon must live on

    garbage()
    assert daemon.running
    with daemon.client() as api:
        assert api.info()["pid"] == daemon.pid
    assert "Traceback" not in daemon.log()  # the daemon logs every internal error with one


# --- 100 clients ---------------------------------------------------------------------------------


def client_run(daemon: VirtnetdProcess, index: int, barrier: threading.Barrier,
               network: str, port_uuid: str) -> dict[str, Any]:
    result: dict[str, Any] = {"index": index, "network": network, "uuid": port_uuid}
    mac = f"52:54:00:aa:{index // 256:02x}:{index % 256:02x}"
    with daemon.client(timeout=120) as api:
        barrier.wait(timeout=60)
        result["listed"] = [n["name"] for n in api.networks()]
        try:
            port = api.create_port(network, mac, uuid=port_uuid, owner=f"client{index}")
        except ApiError as exc:
            result["refused"] = (exc.status, exc.message)
            return result
        result["created"] = port
        result["ports_seen"] = len(api.ports(network))
        assert api.port(network, port["uuid"])["mac"] == mac
        if index % 4 == 0:
            api.delete_port(network, port["uuid"])
            result["deleted"] = True
    return result


def test_a_hundred_concurrent_clients_keep_the_state_consistent(
        daemon: VirtnetdProcess, fuzz_network: str) -> None:
    with daemon.client() as api:
        api.define(network_xml("n1", "vnl1", "10.98.1"), start=True)
        api.define(network_xml("n2", "vnl2", "10.98.2"), start=True)
    # Clients 2k and 2k+1 race for the same port UUID on the same network.
    pair_uuids = [str(uuid_module.UUID(int=0x5EED_0000 + k, version=4)) for k in range(CLIENTS // 2)]
    barrier = threading.Barrier(CLIENTS)
    results: list[dict[str, Any]] = [{} for _ in range(CLIENTS)]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = client_run(daemon, index, barrier, ("n1", "n2")[(index // 2) % 2],
                                        pair_uuids[index // 2])
        except BaseException as exc:  # noqa: BLE001 - collected, reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert errors == [] and not any(t.is_alive() for t in threads)

    for k in range(CLIENTS // 2):
        pair = results[2 * k: 2 * k + 2]
        winners = [r for r in pair if "created" in r]
        losers = [r for r in pair if "refused" in r]
        assert len(winners) == 1 and len(losers) == 1, pair
        status, message = losers[0]["refused"]
        assert status == 400 and f"already has a port with uuid '{pair_uuids[k]}'" in message
        assert all({"n1", "n2"} <= set(r["listed"]) for r in pair)

    expected: dict[str, set[str]] = {"n1": set(), "n2": set()}
    for result in results:
        if "created" in result and not result.get("deleted"):
            expected[result["network"]].add(result["uuid"])
    devices = [r["created"]["device"] for r in results if "created" in r]
    with daemon.client() as api:
        for network, uuids in expected.items():
            ports = api.ports(network)
            assert {p["uuid"] for p in ports} == uuids
            assert api.network(network)["connections"] == len(uuids)
        kept = [p["device"] for n in ("n1", "n2") for p in api.ports(n)]
    assert len(set(kept)) == len(kept)
    on_host = [name for name in links(daemon.netns) if name.startswith("vnet")]
    assert sorted(on_host) == sorted(kept)
    # What the daemon served and what is on disk agree (an in-process run reads the disk).
    for network, uuids in expected.items():
        listing = daemon.virtnet("port-list", network, "--json", direct=True).stdout
        assert {p["uuid"] for p in json.loads(listing)} == uuids
    assert len(devices) == CLIENTS // 2
