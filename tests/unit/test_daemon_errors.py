"""virtnetd's answers by the error's type, and who a connection is (decided from the socket).

The HTTP status of an engine error follows its class (virtnet.errors), never its message: a
message that reads like another kind of error does not change the status. The peer of a
connection comes from SO_PEERCRED and SO_PEERGROUPS, the credentials the kernel recorded at
connect(2) (the pid-reuse scenario itself runs in tests/netns/test_daemon_peer.py).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from virtnet.plan.shaping import BandwidthError
from virtnet.daemon.peers import peer_of_socket
from virtnet.daemon.request import ApiError, engine_error_status, parse_body
from virtnet.errors import (
    Busy,
    HostConflict,
    HostError,
    InvalidOperationError,
    NotFoundError,
    PortError,
    PortNotFound,
    UpdateError,
    ValidationError,
    VirtnetError,
    XMLParseError,
)
from virtnet.plan.actions import LinkUp
from virtnet.plan.plans import PlanError
from virtnet.store.store import StateError, StateLock

ADMIN_GID = 4242
MEMBER_UID = 4243


@pytest.mark.parametrize(("error", "status"), [
    (NotFoundError("Network not found: no network with matching name 'x'"), 404),
    (PortNotFound("Network port not found: no network port with matching uuid 'x'"), 404),
    (InvalidOperationError("Requested operation is not valid: network 'x' is not active"), 409),
    (HostConflict("network 'x' cannot start on this host:\n  interface virbr0 exists"), 409),
    (Busy("timed out after 30s waiting for the state lock"), 503),
    (HostError("dnsmasq failed to start"), 500),
    (PlanError(1, LinkUp(link="virbr0"), RuntimeError("boom"), []), 500),
    (PortError("invalid MAC address 'x'"), 400),
    (BandwidthError("average 99 kB/s is more than tc can set"), 400),
    (ValidationError([]), 400),
    (XMLParseError("bad"), 400),
    (UpdateError("no such host"), 400),
    (VirtnetError("operation failed: network 'x' already exists"), 400),
    # messages that read like another kind of error: the type decides
    (PortError("Network port not found: but a port error all the same"), 400),
    (StateError("still waiting for something"), 400),
    (VirtnetError("Network not found: said, not meant"), 400),
])
def test_the_status_follows_the_error_type(error: VirtnetError, status: int) -> None:
    assert engine_error_status(error) == status


def test_a_port_not_found_is_a_port_error_and_a_not_found_error() -> None:
    assert issubclass(PortNotFound, PortError) and issubclass(PortNotFound, NotFoundError)
    assert issubclass(HostConflict, HostError)  # callers catching HostError still catch it


def test_a_state_lock_not_obtained_in_time_is_busy(tmp_path: Path) -> None:
    held = StateLock(tmp_path / "lock", timeout=5)
    other = StateLock(tmp_path / "lock", timeout=0.05, poll=0.01)
    with held:
        with pytest.raises(Busy, match="another virtnet command.* is still changing the state"):
            other.acquire()
        waiting = StateLock(tmp_path / "lock", timeout=0.05)
        waiting._thread_lock.acquire()  # another thread of this process holds it
        try:
            result: list[BaseException] = []

            def take() -> None:
                try:
                    waiting.acquire()
                except BaseException as exc:  # noqa: BLE001 - the test looks at it
                    result.append(exc)

            thread = threading.Thread(target=take)
            thread.start()
            thread.join(10)
        finally:
            waiting._thread_lock.release()
        assert len(result) == 1 and isinstance(result[0], Busy)
        assert engine_error_status(result[0]) == 503


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b'{"a": "\xff"}', "the body is not UTF-8: invalid start byte at byte 7"),
    ('{"a": 1}'.encode("utf-16"), "the body is not UTF-8"),
    (b'{"a": NaN}', "NaN is not a JSON value"),
    (b'{"a": -Infinity}', "-Infinity is not a JSON value"),
    (b'{"a": ' + b"9" * 5000 + b"}", "the body is not valid JSON"),
    (b"[1]", "the body must be a JSON object"),
    (b'{"a": 1', "the body is not valid JSON"),
])
def test_bodies_that_are_not_json_objects_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_body(raw)
    assert refused.value.status == 400 and message in refused.value.message


def test_a_json_object_body_is_read() -> None:
    assert parse_body(b"  \n") == {}
    assert parse_body('{"xml": "é", "n": 18446744073709551616}'.encode()) == {
        "xml": "é", "n": 2**64}  # the range of each field is checked where it is read


# --- the peer of a connection --------------------------------------------------------------


def connected_as(uid: int, gids: list[int]) -> socket.socket:
    """The accepted end of a connection made by a child running as UID with groups GIDS
    (first: primary), which exits right after connecting."""
    directory = tempfile.mkdtemp(prefix="vnt-peer-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        os.chmod(path, 0o666)
        listener.listen(1)
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups(gids[1:])
                os.setgid(gids[0])
                os.setuid(uid)
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.connect(path)
            finally:
                os._exit(0)
        listener.settimeout(10)
        conn, _ = listener.accept()
        os.waitpid(pid, 0)
        return conn
    finally:
        listener.close()
        os.unlink(path)
        os.rmdir(directory)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (switches users)")
def test_the_peer_is_what_the_socket_recorded_at_connect() -> None:
    # More groups than socket.getsockopt has room for (ERANGE, then libc's getsockopt).
    extra = list(range(5000, 5300))
    member = connected_as(MEMBER_UID, [MEMBER_UID, *extra, ADMIN_GID])
    other = connected_as(MEMBER_UID, [MEMBER_UID, *extra])
    primary = connected_as(MEMBER_UID, [ADMIN_GID])
    try:
        peer = peer_of_socket(member, ADMIN_GID)
        assert (peer.uid, peer.gid, peer.privileged) == (MEMBER_UID, MEMBER_UID, True)
        assert set(peer.groups) == {*extra, ADMIN_GID}
        # the process is gone: what it was at connect(2) still counts, and only that
        assert not peer_of_socket(other, ADMIN_GID).privileged
        assert peer_of_socket(primary, ADMIN_GID).privileged
        assert not peer_of_socket(member, None).privileged  # no group: root only
    finally:
        for conn in (member, other, primary):
            conn.close()


def test_a_request_the_http_parser_refuses_is_logged_as_one_line() -> None:
    """aiohttp logs it with a traceback at ERROR: each hostile client could fill the log (the
    API fuzzer counted every one as a traceback in the daemon's output)."""
    import logging
    import sys

    from aiohttp.http_exceptions import BadHttpMethod

    from virtnet.daemon.server import ClientErrorFilter

    try:
        raise BadHttpMethod("GETX /v1 HTTP/1.1")
    except BadHttpMethod:
        info = sys.exc_info()
    def refused() -> logging.LogRecord:
        return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                                 "Error handling request from %s", ("",), info)

    server_log = logging.getLogger("aiohttp.server")
    level = server_log.level
    try:
        server_log.setLevel(logging.INFO)
        assert not ClientErrorFilter().filter(refused())  # not shown at the default level
        server_log.setLevel(logging.DEBUG)
        record = refused()
        assert ClientErrorFilter().filter(record)
    finally:
        server_log.setLevel(level)
    assert (record.levelno, record.levelname, record.exc_info) == (logging.DEBUG, "DEBUG", None)
    assert record.getMessage().startswith("malformed HTTP request answered 400: ")
    assert "\n" not in record.getMessage()
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        bug = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "failed", (),
                                sys.exc_info())
    assert ClientErrorFilter().filter(bug) and bug.levelno == logging.ERROR and bug.exc_info
