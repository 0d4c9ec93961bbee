"""A client of virtnetd for VM managers and for the thin CLI: standard library only.

    from virtnet.client import Client

    with Client() as api:                       # /run/virtnet/virtnetd.sock
        api.start("default")
        port = api.create_port("default", "52:54:00:12:34:56", owner="vm1", pass_fd=True)
        fd = port["fd"]                         # the tap, opened by the daemon, now ours
        for event in api.events("default"):     # in another thread / connection
            ...

HTTP/1.1 is spoken directly over the unix socket (keep-alive, Content-Length and chunked
bodies) rather than through http.client, whose imports (email, ssl...) alone cost more than
the whole answer of a resident daemon on these machines; only socket, json and base64 are
loaded (and virtnet.host.ipc, which holds the socket's effects). Errors the daemon reports
become :class:`ApiError` (status, kind, message: the same message the CLI prints); a daemon
that does not answer at all is :class:`DaemonUnavailable`.

File descriptor hand-over (``pass_fd=True``): the daemon sends the port's opened tap or
macvtap with SCM_RIGHTS on one NUL byte just before its HTTP response; the client takes it
with recvmsg before parsing the response. An HTTP response never starts with NUL, so the two
are told apart by the first byte.
"""

from __future__ import annotations

import json
import os
import select
import socket
from collections.abc import Iterator
from typing import Any

from virtnet.host import HostProcess  # the socket's effects (host/ipc.py), loaded on first use

DEFAULT_SOCKET = "/run/virtnet/virtnetd.sock"
MAX_HEAD_BYTES = 64 * 1024
RECV_BYTES = 256 * 1024
_SAFE_PATH_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class ApiError(Exception):
    """The daemon refused or failed a request; ``message`` is what the CLI would print."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


class DaemonUnavailable(ConnectionError):
    """No virtnetd answers at the socket (not running, or not reachable by this user)."""


class ConnectionLost(ConnectionError):
    """The daemon closed the connection before it answered."""


def socket_path_for(state_dir: str | os.PathLike[str] | None = None) -> str:
    """Where the daemon of a state directory listens (``VIRTNET_SOCKET`` overrides)."""
    override = os.environ.get("VIRTNET_SOCKET")
    if override:
        return override
    if state_dir is None:
        return DEFAULT_SOCKET
    return os.path.join(os.path.abspath(os.fspath(state_dir)), "run", "virtnetd.sock")


def quote(segment: str) -> str:
    """Percent-encode one path segment (urllib.parse costs more to import than to write)."""
    return "".join(chr(b) if b in _SAFE_PATH_BYTES else f"%{b:02X}"
                   for b in segment.encode("utf-8"))


def query_string(params: dict[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        if value is None or value is False:
            continue
        parts.append(f"{quote(key)}={'1' if value is True else quote(str(value))}")
    return "?" + "&".join(parts) if parts else ""


class Response:
    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes,
                 fd: int | None = None) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.fd = fd  # a descriptor the daemon handed over (pass_fd), owned by the caller

    def json(self) -> Any:
        return json.loads(self.body)

    def raise_for_status(self) -> Response:
        if self.status < 400:
            return self
        kind, message = "HTTPError", f"{self.status} {self.reason}"
        try:
            error = json.loads(self.body)["error"]
            kind, message = str(error["kind"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            text = self.body.decode(errors="replace").strip()
            if text:
                message = f"{message}: {text}"
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        raise ApiError(self.status, kind, message)


class Connection:
    """One keep-alive HTTP/1.1 connection to virtnetd over its unix socket."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout: float | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    # --- the socket --------------------------------------------------------------------------

    def connect(self) -> None:
        try:
            sock = HostProcess.connect_unix(self.path, self.timeout)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError,
                PermissionError) as exc:
            raise DaemonUnavailable(f"no virtnetd at {self.path}: {exc.strerror}") from None
        self._sock = sock
        self._buffer = b""

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _usable(self) -> bool:
        """Whether a kept connection is still open (the daemon closes idle ones)."""
        if self._sock is None:
            return False
        readable, _, _ = select.select([self._sock], [], [], 0)
        if not readable:
            return True
        try:
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False

    def _fill(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(RECV_BYTES)
        if not chunk:
            raise ConnectionLost(f"virtnetd at {self.path} closed the connection")
        self._buffer += chunk

    def _take(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _take_line(self, limit: int = MAX_HEAD_BYTES) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line, self._buffer = self._buffer[:end], self._buffer[end + 2:]
                return line
            if len(self._buffer) > limit:
                raise ConnectionLost("virtnetd sent a line longer than expected")
            self._fill()

    # --- requests ----------------------------------------------------------------------------

    def send(self, method: str, target: str, body: bytes | None = None,
             content_type: str = "application/json") -> None:
        if not self._usable():
            self.close()
            self.connect()
        assert self._sock is not None
        head = f"{method} {target} HTTP/1.1\r\nHost: virtnetd\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode() + (body or b"")
        self._sock.sendall(data)

    def receive_fd(self) -> int | None:
        """Before a pass_fd response: the descriptor on its NUL byte, if the daemon sent one."""
        assert self._sock is not None
        if self._buffer:
            return None
        data, fds = HostProcess.recv_fds(self._sock, 1, 4)
        if not data:
            for fd in fds:
                os.close(fd)
            raise ConnectionLost(f"virtnetd at {self.path} closed the connection")
        if data == b"\0" and fds:
            for extra in fds[1:]:
                os.close(extra)
            return fds[0]
        for fd in fds:
            os.close(fd)
        self._buffer = data + self._buffer  # no descriptor: that was the response's first byte
        return None

    def read_head(self) -> tuple[int, str, dict[str, str]]:
        status_line = self._take_line().decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ConnectionLost(f"virtnetd sent an unexpected status line: {status_line!r}")
        headers: dict[str, str] = {}
        while True:
            line = self._take_line().decode("latin-1")
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), parts[2] if len(parts) > 2 else "", headers

    def read_body(self, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return b"".join(self.chunks())
        length = headers.get("content-length")
        if length is not None:
            body = self._take(int(length))
        else:  # delimited by the end of the connection
            chunks = [self._buffer]
            self._buffer = b""
            assert self._sock is not None
            while chunk := self._sock.recv(RECV_BYTES):
                chunks.append(chunk)
            body = b"".join(chunks)
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return body

    def chunks(self) -> Iterator[bytes]:
        """The chunks of a chunked body, as they arrive."""
        while True:
            size_line = self._take_line().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ConnectionLost(f"virtnetd sent a bad chunk size {size_line!r}") from None
            if size == 0:
                while self._take_line():  # trailers, then the blank line
                    pass
                return
            data = self._take(size)
            self._take(2)
            yield data

    def request(self, method: str, target: str, body: bytes | None = None, *,
                content_type: str = "application/json", receive_fd: bool = False) -> Response:
        reused = self._sock is not None
        try:
            self.send(method, target, body, content_type)
            fd = self.receive_fd() if receive_fd else None
            try:
                status, reason, headers = self.read_head()
                data = self.read_body(headers)
            except BaseException:
                if fd is not None:
                    os.close(fd)
                raise
        except (ConnectionLost, BrokenPipeError, ConnectionResetError):
            self.close()
            # A kept connection the daemon closed just as we sent: safe to repeat a read only.
            if reused and method == "GET":
                return self.request(method, target, body, content_type=content_type)
            raise
        return Response(status, reason, headers, data, fd)


class Client:
    """virtnetd's API as methods; each returns the decoded JSON (or text for XML)."""

    def __init__(self, socket_path: str | None = None, *,
                 state_dir: str | os.PathLike[str] | None = None,
                 timeout: float | None = 300.0) -> None:
        self.socket_path = socket_path or socket_path_for(state_dir)
        self.timeout = timeout
        self._connection = Connection(self.socket_path, timeout)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ----------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, *, receive_fd: bool = False,
             raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        response = self._connection.request(method, path, data, receive_fd=receive_fd)
        response.raise_for_status()
        if raw:
            return response
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.body.decode()

    @staticmethod
    def _net(name: str, *rest: str) -> str:
        return "/v1/networks/" + "/".join([quote(name), *rest])

    # --- daemon ------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return self.call("GET", "/v1")

    # --- networks ----------------------------------------------------------------------------

    def networks(self, *, all: bool = False, inactive: bool = False,  # noqa: A002
                 persistent: bool = False, transient: bool = False, autostart: bool = False,
                 no_autostart: bool = False) -> list[dict[str, Any]]:
        query = query_string({"all": all, "inactive": inactive, "persistent": persistent,
                              "transient": transient, "autostart": autostart,
                              "no_autostart": no_autostart})
        return self.call("GET", "/v1/networks" + query)

    def define(self, xml: str, *, start: bool = False,
               autostart: bool | None = None, validate: bool = False) -> dict[str, Any]:
        """net-define; with ``validate``, refuse elements and attributes libvirt's schema
        does not know (otherwise they are ignored and listed in the answer's warnings)."""
        body: dict[str, Any] = {"xml": xml, "start": start}
        if autostart is not None:
            body["autostart"] = autostart
        if validate:
            body["validate"] = True
        return self.call("POST", "/v1/networks", body)

    def create(self, xml: str, *, validate: bool = False) -> dict[str, Any]:
        """Start a transient network (net-create)."""
        body: dict[str, Any] = {"xml": xml, "transient": True}
        if validate:
            body["validate"] = True
        return self.call("POST", "/v1/networks", body)

    def network(self, name: str) -> dict[str, Any]:
        return self.call("GET", self._net(name))

    def ports_are_taps(self, name: str) -> bool:
        """Whether network NAME's ports are taps (on a bridge): a tap port can go with its
        last descriptor (``release_on_close``); a macvtap or VF port cannot."""
        return bool(self.network(name).get("bridge"))

    def undefine(self, name: str) -> dict[str, Any]:
        return self.call("DELETE", self._net(name))

    def start(self, name: str) -> dict[str, Any]:
        return self.call("POST", self._net(name, "start"))

    def destroy(self, name: str) -> dict[str, Any]:
        return self.call("POST", self._net(name, "destroy"))

    def set_autostart(self, name: str, enable: bool = True) -> dict[str, Any]:
        return self.call("PUT", self._net(name, "autostart"), {"autostart": enable})

    def dumpxml(self, name: str, inactive: bool = False) -> str:
        return self.call("GET", self._net(name, "xml") + query_string({"inactive": inactive}))

    def update(self, name: str, command: str, section: str, xml: str, *,
               parent_index: int = -1, live: bool = False,
               config: bool = False) -> dict[str, Any]:
        return self.call("POST", self._net(name, "update"), {
            "command": command, "section": section, "xml": xml, "parent_index": parent_index,
            "live": live, "config": config})

    def leases(self, name: str, mac: str | None = None) -> list[dict[str, Any]]:
        return self.call("GET", self._net(name, "leases") + query_string({"mac": mac}))

    def plan(self, name: str | None = None, *, xml: str | None = None) -> dict[str, Any]:
        if (name is None) == (xml is None):
            raise ValueError("give a network name or a definition's xml")
        if xml is not None:
            return self.call("POST", "/v1/plan", {"xml": xml})
        assert name is not None
        return self.call("GET", self._net(name, "plan"))

    # --- ports -------------------------------------------------------------------------------

    def ports(self, network: str) -> list[dict[str, Any]]:
        return self.call("GET", self._net(network, "ports"))

    def port(self, network: str, ref: str) -> dict[str, Any]:
        return self.call("GET", self._net(network, "ports", quote(ref)))

    def port_xml(self, network: str, ref: str) -> str:
        return self.call("GET", self._net(network, "ports", quote(ref), "xml"))

    def create_port(self, network: str, mac: str | None = None, *, portgroup: str | None = None,
                    owner: str | None = None, owner_uuid: str | None = None,
                    uuid: str | None = None, inbound: dict[str, int] | str | None = None,
                    outbound: dict[str, int] | str | None = None, xml: str | None = None,
                    pass_fd: bool = False, vnet_hdr: bool = True,
                    release_on_close: bool = False) -> dict[str, Any]:
        """Create a port; with ``pass_fd`` the result's "fd" is the opened device (yours to
        close). With ``release_on_close`` too, a tap port goes when its last descriptor is
        closed (the VM's exit)."""
        body = {key: value for key, value in {
            "mac": mac, "portgroup": portgroup, "owner": owner, "owner_uuid": owner_uuid,
            "uuid": uuid, "inbound": inbound, "outbound": outbound, "xml": xml}.items()
            if value is not None}
        if pass_fd:
            body["pass_fd"] = True
            body["vnet_hdr"] = vnet_hdr
            if release_on_close:
                body["release_on_close"] = True
        response = self.call("POST", self._net(network, "ports"), body, receive_fd=pass_fd,
                             raw=True)
        port = response.json()
        if pass_fd:
            if response.fd is None:
                raise ConnectionLost("virtnetd created the port but sent no descriptor")
            port["fd"] = response.fd
        return port

    def delete_port(self, network: str, ref: str) -> dict[str, Any]:
        return self.call("DELETE", self._net(network, "ports", quote(ref)))

    # --- events ------------------------------------------------------------------------------

    def events(self, network: str | None = None, *, since: int | None = None,
               timeout: float | None = None) -> EventStream:
        """The event stream (on a connection of its own), subscribed when this returns: an
        iterator of events as dicts, until closed or the daemon stops. ``since``: first replay
        the events the daemon still remembers (the last 512) whose seq is greater (0: all).
        ``timeout``: seconds to wait for the next event before TimeoutError (None: forever)."""
        return EventStream(self.socket_path, network, timeout, since)

    # --- the CLI ----------------------------------------------------------------------------

    def cli(self, argv: list[str], *, files: dict[str, Any] | None = None,
            stdin: str | None = None, netns: dict[str, Any] | None = None,
            state_dir: str | None = None) -> dict[str, Any]:
        """Run a virtnet verb in the daemon (what the thin CLI does)."""
        return self.call("POST", "/v1/cli", {"argv": argv, "files": files or {},
                                             "stdin": stdin, "netns": netns,
                                             "state_dir": state_dir})


class EventStream:
    """``GET /v1/events`` as an iterator of dicts (see Client.events)."""

    def __init__(self, socket_path: str, network: str | None, timeout: float | None,
                 since: int | None = None) -> None:
        self._connection = Connection(socket_path, timeout)
        try:
            self._connection.send("GET", "/v1/events" + query_string({"network": network,
                                                                      "since": since}))
            status, reason, headers = self._connection.read_head()
            if status != 200:
                body = self._connection.read_body(headers)
                Response(status, reason, headers, body).raise_for_status()
        except BaseException:
            self._connection.close()
            raise
        self._chunks = self._connection.chunks()
        self._pending = b""
        self._lines: list[bytes] = []

    def settimeout(self, timeout: float | None) -> None:
        if self._connection._sock is not None:
            self._connection._sock.settimeout(timeout)

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> dict[str, Any]:
        while not self._lines:
            try:
                chunk = next(self._chunks)
            except ConnectionLost:
                raise StopIteration from None
            self._pending += chunk
            *lines, self._pending = self._pending.split(b"\n")
            self._lines.extend(line for line in lines if line.strip())
        return json.loads(self._lines.pop(0))

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ApiError", "Client", "Connection", "ConnectionLost", "DaemonUnavailable",
           "EventStream", "Response", "socket_path_for"]
