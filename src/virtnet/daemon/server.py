"""virtnetd's HTTP/JSON API on a unix socket (aiohttp), over one resident engine.

Every handler is a thin shell: it checks the request, runs the engine call in a worker thread
(engine calls block: netlink, nft, dnsmasq, fsync; the state lock serialises the ones that
change something, across threads and processes) and turns the result or the VirtnetError into
JSON. docs/api.md documents every endpoint.

Access: root and members of the daemon's group (``virtnet`` by default) may change things,
which makes them root-equivalent (they can create devices, run dnsmasq with the options of
their choice), as the docker group is; anyone else who can connect may only read (GET, and
the CLI's read-only verbs). The socket itself is 0660, root:virtnet, so by default nobody
else can connect at all. Who a connection is gets decided once, when it is accepted, from the
socket alone: the uid and gid (SO_PEERCRED) and the supplementary groups (SO_PEERGROUPS) the
kernel recorded when the client connected. Nothing is looked up by the peer's pid: a client
that hands its connection to another process and exits cannot lend it the rights of
whatever process takes its pid next.

Robustness: bodies over ``max_body`` get 413; bodies that are not UTF-8, not JSON, nested too
deeply, or hold a wrong type or an integer out of range get 400; unknown paths 404, wrong
methods 405, each as a JSON error; a body that does not arrive within
``request_timeout`` gets 408 and the connection is closed; an idle connection, or one whose
request head does not complete, is closed after ``request_timeout`` (aiohttp's keep-alive
timer runs from the connection's start). An unexpected exception is logged with its
traceback and answered 500 with a one-line message; it never reaches the client as a
traceback and never stops the daemon.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import errno
import functools
import grp
import json
import logging
import os
import socket
import struct
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from virtnet.daemon import invoke
from virtnet.daemon.events import EventBus
from virtnet.daemon.resident import ResidentPortManager, open_port_device
from virtnet.daemon.supervise import Supervisor
from virtnet.host import Host
from virtnet.errors import (
    Busy,
    HostConflict,
    HostError,
    InvalidOperationError,
    NotFoundError,
    StorageError,
    VirtnetError,
)
from virtnet.paths import StatePaths

log = logging.getLogger("virtnetd")


def loggable(words: list[str]) -> str:
    """WORDS for one log line: a client's text cannot start a line of its own or hide in
    control characters (each is shown escaped), and a long word is cut."""
    shown = []
    for word in words:
        text = word if len(word) <= 200 else word[:200] + "..."
        if not text.isprintable() or not text or " " in text:
            text = repr(text)
        shown.append(text)
    return " ".join(shown)

# Seconds spent in worker threads on the engine for the request being handled (see
# Daemon.call), reported with the handler's whole time in a Server-Timing header so that
# clients and benchmarks can tell the engine's work from the HTTP and thread hand-off cost.
_work_seconds: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "virtnetd_work_seconds", default=None)

API_VERSION = 1
DEFAULT_GROUP = "virtnet"
DEFAULT_REQUEST_TIMEOUT_S = 10.0
DEFAULT_WORKERS = 8
# A definition may be 10 MiB (virtnet.spec.xml.parse.MAX_DOCUMENT_BYTES); the CLI endpoint carries
# files base64-encoded, so a little more than 4/3 of that, plus the rest of the request.
DEFAULT_MAX_BODY = 16 * 1024 * 1024
SOCKET_MODE = 0o660
SO_PEERCRED_FORMAT = "3i"  # struct ucred: pid, uid, gid
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13 (asm-generic/socket.h)
GID_FORMAT = "I"  # gid_t
NGROUPS_MAX = 65536  # the kernel's limit of supplementary groups
PEERGROUPS_FIRST_TRY = 256  # groups socket.getsockopt has room for (ERANGE: libc's)
# JSON integers the API takes are at most 64 bits (a larger one is refused, never passed on)
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
UINT64_MAX = 2**64 - 1
MAX_ERRNO = 4095  # the kernel's errno values are 1..4095
FRAMES_TYPE = "application/x-virtnet-frames"  # the thin CLI's answer format
TRUE_WORDS = frozenset({"1", "true", "yes", "on", ""})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


# --- errors -----------------------------------------------------------------------------------


class ApiError(Exception):
    """A refusal with its HTTP status (the request, not the engine, is the problem)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def error_response(status: int, kind: str, message: str) -> web.Response:
    body = {"error": {"status": status, "kind": kind, "message": message}}
    return web.json_response(body, status=status)


# The HTTP status of each kind of engine error, by class (errors.py); first match wins.
ERROR_STATUSES: tuple[tuple[type[VirtnetError], int], ...] = (
    (NotFoundError, 404),  # no such network or port
    (InvalidOperationError, 409),  # does not apply to the network's present state
    (HostConflict, 409),  # the network cannot start on the host as it is now
    (Busy, 503),  # the state lock was not obtained in time: try again later
    (HostError, 500),  # the host could not do it: a server-side failure, reported clearly
)


def engine_error_status(exc: VirtnetError) -> int:
    """The HTTP status of an engine error: by its class, never by its message; any other
    VirtnetError is a refused request (definition, update, port request): 400."""
    if isinstance(exc, StorageError):  # the state directory: full (507), or refused (500)
        return 507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 500
    for kind, status in ERROR_STATUSES:
        if isinstance(exc, kind):
            return status
    return 400


# --- peers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection, as the kernel recorded it at connect(2), and
    whether they may change things. ``pid`` is informative only: it may belong to another
    process by now."""

    pid: int
    uid: int
    gid: int
    privileged: bool
    groups: tuple[int, ...] = ()

    def describe(self) -> str:
        return f"uid {self.uid}, gid {self.gid}, pid {self.pid}"


UNKNOWN_PEER = Peer(0, -1, -1, False)  # a connection whose credentials cannot be read


def socket_groups(sock: socket.socket) -> tuple[int, ...]:
    """The supplementary groups the peer of a unix socket had when it connected
    (SO_PEERGROUPS); () where the kernel cannot tell (older than 4.13)."""
    item = struct.calcsize(GID_FORMAT)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, PEERGROUPS_FIRST_TRY * item)
    except OSError as exc:
        if exc.errno in (errno.ENOPROTOOPT, errno.EINVAL, errno.EOPNOTSUPP):
            return ()
        if exc.errno != errno.ERANGE:
            raise
        # more groups than socket.getsockopt can take a buffer for (1024 bytes)
        raw = Host.getsockopt(sock.fileno(), socket.SOL_SOCKET, SO_PEERGROUPS,
                              NGROUPS_MAX * item)
    count = len(raw) // item
    return struct.unpack(f"{count}{GID_FORMAT}", raw[:count * item])


def peer_of_socket(sock: socket.socket, admin_gid: int | None) -> Peer:
    """The peer of a connected unix socket, from the socket alone: SO_PEERCRED's uid and gid
    and SO_PEERGROUPS' groups are the client's credentials at connect(2), which no later
    change of process (exec, fd passing, a pid reused) alters."""
    if sock.family != socket.AF_UNIX:
        return UNKNOWN_PEER
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                              struct.calcsize(SO_PEERCRED_FORMAT))
        pid, uid, gid = struct.unpack(SO_PEERCRED_FORMAT, raw)
        groups = socket_groups(sock)
    except OSError:
        return UNKNOWN_PEER
    privileged = uid == 0 or (admin_gid is not None
                              and (gid == admin_gid or admin_gid in groups))
    return Peer(pid, uid, gid, privileged, groups)


class PeerListener(socket.socket):
    """The daemon's listening socket: every connection it accepts is handed to ``on_accept``
    (which decides its peer) before anything is read from it."""

    def __init__(self, listening: socket.socket,
                 on_accept: Callable[[socket.socket], None]) -> None:
        super().__init__(listening.family, listening.type, listening.proto,
                         fileno=listening.detach())
        self.on_accept = on_accept

    def accept(self) -> tuple[socket.socket, Any]:
        conn, address = super().accept()
        self.on_accept(conn)
        return conn, address


class Peers:
    """The peer of each open connection, decided at accept and looked up by its socket."""

    def __init__(self, admin_gid: int | None) -> None:
        self.admin_gid = admin_gid
        # fd -> (the accepted socket, its peer); an entry whose socket is gone or holds
        # another descriptor by now is stale (a newer connection on that fd replaces it)
        self._by_fd: dict[int, tuple[weakref.ref[socket.socket], Peer]] = {}

    def accepted(self, conn: socket.socket) -> None:
        self._by_fd[conn.fileno()] = (weakref.ref(conn), peer_of_socket(conn, self.admin_gid))

    def listener(self, sock: socket.socket) -> PeerListener:
        return PeerListener(sock, self.accepted)

    def of(self, transport: Any) -> Peer:
        """The peer of a request's connection; unknown (unprivileged) if it was not accepted
        through :meth:`listener`."""
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return UNKNOWN_PEER
        fd = sock.fileno()
        entry = self._by_fd.get(fd)
        if entry is None:
            return UNKNOWN_PEER
        conn = entry[0]()
        if conn is None or conn.fileno() != fd:
            return UNKNOWN_PEER
        return entry[1]


def resolve_group(name: str | None) -> int | None:
    """The gid of ``name`` (a group name or a number), None if there is no such group."""
    if not name:
        return None
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


# --- request helpers --------------------------------------------------------------------------


class Fields:
    """Typed access to a JSON object's fields; unknown fields are an error."""

    def __init__(self, data: dict[str, Any], where: str = "the body") -> None:
        self.data = data
        self.where = where
        self.used: set[str] = set()

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None,
            required: bool = False, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> Any:
        """The field's value, of type KIND (an integer: from MINIMUM to MAXIMUM)."""
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            if required:
                raise ApiError(400, "BadRequest", f"{self.where}: field '{name}' is required")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # JSON true is not an integer here, whatever Python thinks of bools.
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(_json_type(k) for k in kinds)
            raise ApiError(400, "BadRequest",
                           f"{self.where}: field '{name}' must be {names}, "
                           f"not {_json_type(type(value))}")
        if isinstance(value, int) and not isinstance(value, bool) \
                and not minimum <= value <= maximum:
            raise ApiError(400, "BadRequest", f"{self.where}: field '{name}' must be an "
                           f"integer from {minimum} to {maximum}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ApiError(400, "BadRequest",
                           f"{self.where}: unknown field(s): {', '.join(unknown)}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object ({} for an empty body); ApiError 400 for anything
    else: bytes that are not UTF-8, text that is not JSON (NaN and Infinity included), an
    object nested deeper than the parser goes, an integer too long to read."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "BadRequest", f"the body is not UTF-8: {exc.reason} at byte "
                       f"{exc.start}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ApiError(400, "BadRequest", "the body is not valid JSON: nested too deeply") \
            from None
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "BadRequest", "the body must be a JSON object")
    return data


def _json_type(kind: type) -> str:
    return {str: "a string", bool: "true or false", int: "an integer", float: "a number",
            dict: "an object", list: "an array", type(None): "null"}.get(kind, kind.__name__)


def query_flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    if value is None:
        return False
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ApiError(400, "BadRequest", f"query parameter '{name}' must be true or false")


def check_query(request: web.Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise ApiError(400, "BadRequest", f"unknown query parameter(s): {', '.join(unknown)}")


# --- the daemon -------------------------------------------------------------------------------


@dataclass
class DaemonConfig:
    paths: StatePaths
    state_dir: Path | None  # as given on the command line (None: the default layout)
    socket_path: Path
    netns: str | None = None
    group: str | None = DEFAULT_GROUP
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S
    max_body: int = DEFAULT_MAX_BODY
    workers: int = DEFAULT_WORKERS
    tick: float = 0.2


class Daemon:
    """The engine, the supervisor, the event bus and the HTTP application around them."""

    def __init__(self, config: DaemonConfig, loop: asyncio.AbstractEventLoop) -> None:
        from virtnet.service.engine import Engine

        self.config = config
        self.loop = loop
        self.engine = Engine(config.paths)
        self.ports = ResidentPortManager(self.engine)
        self.bus = EventBus(loop)
        self.supervisor = Supervisor(self.engine, self.bus, tick=config.tick)
        self.executor = ThreadPoolExecutor(max_workers=config.workers,
                                           thread_name_prefix="virtnetd")
        self.admin_gid = resolve_group(config.group)
        self.peers = Peers(self.admin_gid)  # serve the listener it makes: self.peers.listener
        self.netns_id = Host.netns_identity()
        invoke.install(invoke.Resident(self.engine, self.ports))
        self.app = self._make_app()

    # --- plumbing ----------------------------------------------------------------------------

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) in a worker thread: the event loop never blocks on the engine."""
        spent = _work_seconds.get()
        if spent is None:
            return await self.loop.run_in_executor(self.executor,
                                                   functools.partial(fn, *args, **kwargs))

        def timed() -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - start)

        return await self.loop.run_in_executor(self.executor, timed)

    async def body(self, request: web.Request) -> dict[str, Any]:
        """The request's JSON object ({} when there is no body)."""
        try:
            if request.content.is_eof():
                raw = await request.read()  # already here: no timer, no extra task
            else:
                raw = await asyncio.wait_for(request.read(), self.config.request_timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, "RequestTimeout",
                           f"the request body did not arrive within "
                           f"{self.config.request_timeout:g} s") from None
        return parse_body(raw)

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body,
                              middlewares=[self._middleware])
        routes = [
            web.get("/", self.daemon_info),
            web.get("/v1", self.daemon_info),
            web.get("/v1/networks", self.list_networks),
            web.post("/v1/networks", self.define_network),
            web.get("/v1/networks/{name}", self.network_info),
            web.delete("/v1/networks/{name}", self.undefine_network),
            web.post("/v1/networks/{name}/start", self.start_network),
            web.post("/v1/networks/{name}/destroy", self.destroy_network),
            web.put("/v1/networks/{name}/autostart", self.set_autostart),
            web.get("/v1/networks/{name}/xml", self.network_xml),
            web.post("/v1/networks/{name}/update", self.update_network),
            web.get("/v1/networks/{name}/leases", self.network_leases),
            web.get("/v1/networks/{name}/plan", self.network_plan),
            web.post("/v1/plan", self.definition_plan),
            web.get("/v1/networks/{name}/ports", self.list_ports),
            web.post("/v1/networks/{name}/ports", self.create_port),
            web.get("/v1/networks/{name}/ports/{port}", self.port_info),
            web.get("/v1/networks/{name}/ports/{port}/xml", self.port_xml),
            web.delete("/v1/networks/{name}/ports/{port}", self.delete_port),
            web.get("/v1/doctor", self.doctor),
            web.get("/v1/events", self.events),
            web.post("/v1/cli", self.cli),
        ]
        app.add_routes(routes)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        started = time.perf_counter()
        spent: list[float] = []
        _work_seconds.set(spent)
        response = await self._handle(request, handler)
        if request.method not in ("GET", "HEAD") and request.path != "/v1/cli" \
                and "peer" in request:  # a change (or an attempt), and who asked for it
            log.info("%s %s by %s: %d", request.method, loggable([request.path]),
                     request["peer"].describe(), response.status)
        if not response.prepared:
            handled = (time.perf_counter() - started) * 1000.0
            response.headers["Server-Timing"] = (f"work;dur={sum(spent) * 1000.0:.3f}, "
                                                 f"handler;dur={handled:.3f}")
        return response

    async def _handle(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        try:
            peer = self.peers.of(request.transport)
            request["peer"] = peer
            if request.method not in ("GET", "HEAD") and request.path != "/v1/cli" \
                    and not peer.privileged:
                raise ApiError(403, "PermissionDenied", self.permission_message(peer))
            return await handler(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.kind, exc.message)
            if exc.status == 408:
                response.force_close()  # the rest of the body would be taken for a request
            return response
        except VirtnetError as exc:
            return error_response(engine_error_status(exc), type(exc).__name__, str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) \
                else exc.reason
            if exc.status == 413:
                message = (f"the request body is larger than the daemon accepts "
                           f"({self.config.max_body} bytes)")
            elif exc.status == 404:
                message = f"no such endpoint: {request.path}"
            elif exc.status == 405:
                message = f"{request.method} is not allowed on {request.path}"
            response = error_response(exc.status, exc.reason.replace(" ", ""), message)
            if exc.status == 413:
                response.force_close()
            return response
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug answers 500; the daemon goes on
            log.exception("%s %s failed", request.method, request.path)
            return error_response(500, "InternalError",
                                  f"internal error: {type(exc).__name__}: {exc}")

    def permission_message(self, peer: Peer) -> str:
        group = self.config.group if self.admin_gid is not None else None
        who = f"root or members of group '{group}'" if group else "root"
        return f"permission denied: only {who} may change networks ({peer.describe()})"

    # --- daemon -------------------------------------------------------------------------------

    async def daemon_info(self, request: web.Request) -> web.Response:
        from virtnet import __version__

        peer: Peer = request["peer"]
        return web.json_response({
            "api": API_VERSION,
            "version": __version__,
            "pid": os.getpid(),
            "netns": self.config.netns,
            "state_dir": str(self.config.state_dir) if self.config.state_dir else None,
            "socket": str(self.config.socket_path),
            "doctor": doctor_available(),
            "peer": {"uid": peer.uid, "gid": peer.gid, "pid": peer.pid,
                     "may_change": peer.privileged},
        })

    # --- networks -----------------------------------------------------------------------------

    async def list_networks(self, request: web.Request) -> web.Response:
        flags = {"all", "inactive", "persistent", "transient", "autostart", "no_autostart"}
        check_query(request, flags)
        options = {flag: query_flag(request, flag) for flag in flags}
        rows = await self.call(self.engine.list_networks, **options)
        return web.json_response(rows)

    def _info(self, name: str) -> dict[str, Any]:
        info = self.engine.info(name)
        info["adopted"] = info["name"] in self.supervisor.adopted and info["active"]
        return info

    async def define_network(self, request: web.Request) -> web.Response:
        fields = Fields(await self.body(request))
        xml = fields.get("xml", str, required=True)
        transient = fields.get("transient", bool, False)
        start = fields.get("start", bool, False)
        autostart = fields.get("autostart", bool, None)
        validate = fields.get("validate", bool, False)
        fields.done()
        if transient and autostart:
            raise ApiError(400, "BadRequest", "a transient network cannot autostart")

        def define() -> dict[str, Any]:
            from virtnet.spec.xml.schema import check_document

            # unknown elements and attributes: refused with validate, else reported and ignored
            unknown = check_document(xml, "request", refuse=validate)
            with self.engine.store.lock:
                if transient:
                    net = self.engine.create(xml, source="request")
                else:
                    net = self.engine.define(xml, source="request")
                    if autostart is not None:
                        self.engine.set_autostart(net.name, autostart)
                    if start:
                        self.engine.start(net.name)
                return {**self._info(net.name), "warnings": [str(item) for item in unknown]}

        info = await self.call(define)
        self.scan_after_answer()
        return web.json_response(info, status=201)

    async def network_info(self, request: web.Request) -> web.Response:
        check_query(request, set())
        return web.json_response(await self.call(self._info, request.match_info["name"]))

    async def _change(self, fn: Callable[[], Any]) -> Any:
        """An engine change; its events follow the answer (see scan_after_answer)."""
        result = await self.call(fn)
        self.scan_after_answer()
        return result

    def scan_after_answer(self) -> None:
        """Publish the events of the change just made, once its answer is on its way.

        The scan reads every network's status and leases, a few milliseconds the client
        should not wait for. Scheduled with call_soon from the handler, it runs after the
        handler's task step, in which aiohttp writes the response (nothing in between
        suspends), so subscribers get the events a moment after the client got its answer.
        """
        def start() -> None:
            future = self.loop.run_in_executor(self.executor, self.supervisor.scan)
            future.add_done_callback(_log_scan_failure)

        self.loop.call_soon(start)

    async def undefine_network(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def undefine() -> dict[str, Any]:
            record = self.engine.lookup(name)
            self.engine.undefine(record.name)
            return {"name": record.name, "undefined": True}

        return web.json_response(await self._change(undefine))

    async def start_network(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def start() -> dict[str, Any]:
            record = self.engine.lookup(name)
            self.engine.start(record.name)
            return self._info(record.name)

        return web.json_response(await self._change(start))

    async def destroy_network(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def destroy() -> dict[str, Any]:
            # by name or uuid; also when a file of the network is unreadable (Engine._salvage)
            destroyed = self.engine.destroy(name)
            try:
                return self._info(destroyed)
            except VirtnetError:  # transient, or its definition is the unreadable file
                return {"name": destroyed, "active": False}

        return web.json_response(await self._change(destroy))

    async def set_autostart(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        fields = Fields(await self.body(request))
        enable = fields.get("autostart", bool, required=True)
        fields.done()

        def set_it() -> dict[str, Any]:
            record = self.engine.lookup(name)
            self.engine.set_autostart(record.name, enable)
            return self._info(record.name)

        return web.json_response(await self._change(set_it))

    async def network_xml(self, request: web.Request) -> web.Response:
        check_query(request, {"inactive"})
        inactive = query_flag(request, "inactive")
        name = request.match_info["name"]

        def dump() -> str:
            return self.engine.dumpxml(self.engine.lookup(name).name, inactive=inactive)

        return web.Response(text=await self.call(dump), content_type="application/xml")

    async def update_network(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        fields = Fields(await self.body(request))
        command = fields.get("command", str, required=True)
        section = fields.get("section", str, required=True)
        xml = fields.get("xml", str, required=True)
        parent_index = fields.get("parent_index", int, -1, minimum=-1)
        live = fields.get("live", bool, False)
        config = fields.get("config", bool, False)
        fields.done()

        def update() -> dict[str, Any]:
            record = self.engine.lookup(name)
            did_live, did_config = self.engine.update(record.name, command, section, xml,
                                                      parent_index, live=live, config=config)
            return {"name": record.name, "live": did_live, "config": did_config}

        return web.json_response(await self._change(update))

    async def network_leases(self, request: web.Request) -> web.Response:
        check_query(request, {"mac"})
        mac = request.query.get("mac")
        name = request.match_info["name"]

        def leases() -> list[dict[str, Any]]:
            record = self.engine.lookup(name)
            return [lease.to_dict() for lease in self.engine.dhcp_leases(record.name, mac=mac)]

        return web.json_response(await self.call(leases))

    @staticmethod
    def _plan_dict(plan: Any) -> dict[str, Any]:
        data = plan.to_dict()
        data["describe"] = plan.describe()
        data["commands"] = plan.commands()
        return data

    async def network_plan(self, request: web.Request) -> web.Response:
        check_query(request, set())
        name = request.match_info["name"]
        return web.json_response(self._plan_dict(await self.call(self.engine.plan, name)))

    async def definition_plan(self, request: web.Request) -> web.Response:
        fields = Fields(await self.body(request))
        xml = fields.get("xml", str, required=True)
        fields.done()

        def plan() -> Any:
            return self.engine.plan(self.engine.parse(xml, source="request"))

        return web.json_response(self._plan_dict(await self.call(plan)))

    # --- ports --------------------------------------------------------------------------------

    async def list_ports(self, request: web.Request) -> web.Response:
        check_query(request, set())
        name = request.match_info["name"]

        def ports() -> list[dict[str, Any]]:
            return [record.summary() for record in self.ports.list(name)]

        return web.json_response(await self.call(ports))

    async def port_info(self, request: web.Request) -> web.Response:
        check_query(request, set())
        name, port = request.match_info["name"], request.match_info["port"]
        record = await self.call(self.ports.get, name, port)
        return web.json_response(record.summary())

    async def port_xml(self, request: web.Request) -> web.Response:
        check_query(request, set())
        name, port = request.match_info["name"], request.match_info["port"]
        text = await self.call(self.ports.dumpxml, name, port)
        return web.Response(text=text, content_type="application/xml")

    async def delete_port(self, request: web.Request) -> web.Response:
        name, port = request.match_info["name"], request.match_info["port"]

        def delete() -> dict[str, Any]:
            record = self.ports.delete(name, port)
            self.supervisor.note_port(record.network, record, created=False)
            return record.summary()

        return web.json_response(await self.call(delete))

    async def create_port(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        fields = Fields(await self.body(request))
        port_request = port_request_of(fields)
        pass_fd = fields.get("pass_fd", bool, False)
        vnet_hdr = fields.get("vnet_hdr", bool, True)
        fields.done()
        if pass_fd:
            self._check_fd_passing(request)

        def create() -> tuple[Any, int | None]:
            with self.engine.store.lock:
                record = self.ports.create(name, port_request)
                fd = None
                if pass_fd:
                    try:
                        fd = open_port_device(record, vnet_hdr=vnet_hdr)
                    except BaseException:
                        self.ports.delete(record.network, record.uuid)
                        raise
                self.supervisor.note_port(record.network, record, created=True)
            return record, fd

        record, fd = await self.call(create)
        summary = record.summary()
        if fd is not None:
            try:  # right before the HTTP response (docs/api.md, "pass_fd")
                Host.send_fd(request.transport.get_extra_info("socket"), fd)
            except OSError as exc:
                await self.call(self._undo_port, record)
                raise ApiError(500, "HostError", f"cannot hand the descriptor of port "
                               f"{record.uuid} over: {exc.strerror}; the port was removed "
                               "again") from None
            finally:
                os.close(fd)
            summary["fd_passed"] = True
        return web.json_response(summary, status=201)

    def _undo_port(self, record: Any) -> None:
        self.ports.delete(record.network, record.uuid)
        self.supervisor.note_port(record.network, record, created=False)

    @staticmethod
    def _check_fd_passing(request: web.Request) -> None:
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or sock.family != socket.AF_UNIX:
            raise ApiError(400, "BadRequest", "pass_fd needs a unix socket connection")
        if transport.get_write_buffer_size():
            raise ApiError(409, "Conflict", "pass_fd: read the previous response before "
                           "asking for a descriptor on this connection")

    # --- doctor -------------------------------------------------------------------------------

    async def doctor(self, request: web.Request) -> web.Response:
        """``virtnet doctor``'s report: the host, and the networks named (all by default)."""
        check_query(request, {"network"})
        if not doctor_available():
            raise ApiError(501, "NotImplemented", "this virtnet has no doctor")
        names = request.query.getall("network", [])

        def run() -> dict[str, Any]:
            from virtnet.insight.doctor import run_doctor

            return run_doctor(self.engine, list(names)).to_dict()

        return web.json_response(await self.call(run))

    # --- events -------------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        check_query(request, {"network", "since"})
        network = request.query.get("network") or None
        since_text = request.query.get("since")
        if since_text is not None and not (since_text.isascii() and since_text.isdigit()
                                           and len(since_text) <= 20):
            raise ApiError(400, "BadRequest", "query parameter 'since' must be an event's seq")
        # Subscribing and taking the replay happen together in the loop: nothing is missed
        # or seen twice in between.
        subscription = self.bus.subscribe(network)
        replay = [] if since_text is None else [
            event for event in self.bus.recent
            if event.seq > int(since_text) and subscription.wants(event)]
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                               "Cache-Control": "no-store"})
        try:
            await response.prepare(request)
            if replay:
                await response.write(b"".join(event.to_line() for event in replay))
            while True:
                batch = await subscription.next_batch()
                if not batch:
                    if subscription.overflowed:
                        line = json.dumps({"type": "overflow", "network": network,
                                           "message": "events came faster than they were "
                                           "read; reconnect and re-read the state"})
                        await response.write(line.encode() + b"\n")
                    break
                await response.write(b"".join(event.to_line() for event in batch))
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.bus.unsubscribe(subscription)
        return response

    # --- the CLI ------------------------------------------------------------------------------

    async def cli(self, request: web.Request) -> web.Response:
        fields = Fields(await self.body(request))
        argv = fields.get("argv", list, required=True)
        files_in = fields.get("files", dict, {})
        stdin_b64 = fields.get("stdin", str, None)
        netns = fields.get("netns", dict, None)
        state_dir = fields.get("state_dir", str, None)
        fields.done()
        if not argv or not all(isinstance(arg, str) for arg in argv):
            raise ApiError(400, "BadRequest", "argv must be a non-empty array of strings")
        verb = argv[0]
        if verb not in invoke.FORWARDED_VERBS:
            raise ApiError(400, "BadRequest", f"'{verb}' runs in the client, not in the daemon "
                           "(it needs the user's terminal or files, or is not a verb)")
        self._check_netns(netns)
        peer: Peer = request["peer"]
        if verb not in invoke.READ_ONLY_VERBS and not peer.privileged:
            raise ApiError(403, "PermissionDenied", self.permission_message(peer))
        files = invoke.ClientFiles(entries=decode_files(files_in),
                                   stdin=decode_b64(stdin_b64, "stdin"))
        shown_state_dir = self._state_dir_for(state_dir)
        changes = verb not in invoke.READ_ONLY_VERBS

        result = await self.call(invoke.invoke, argv, files, shown_state_dir)
        if changes:
            log.info("%s by %s: exit status %d", loggable(argv[:2]), peer.describe(),
                     result.status)
            self.scan_after_answer()
        if FRAMES_TYPE in request.headers.get("Accept", ""):
            return web.Response(body=frames_of(result), content_type=FRAMES_TYPE)
        return web.json_response(result.to_dict())

    def _check_netns(self, netns: dict[str, Any] | None) -> None:
        """A client that meant another network namespace must not act on this one."""
        if netns is None:
            raise ApiError(400, "BadRequest", "netns: the client must say which network "
                           "namespace it means ({\"dev\": N, \"ino\": N})")
        fields = Fields(netns, "netns")
        wanted = (fields.get("dev", int, required=True, minimum=0, maximum=UINT64_MAX),
                  fields.get("ino", int, required=True, minimum=0, maximum=UINT64_MAX))
        name = fields.get("name", str, None)
        fields.done()
        if wanted != self.netns_id:
            mine = f"network namespace '{self.config.netns}'" if self.config.netns \
                else "the network namespace it was started in"
            theirs = f"'{name}'" if name else "this client's network namespace"
            raise ApiError(409, "WrongNetns",
                           f"virtnetd at {self.config.socket_path} manages {mine}, not "
                           f"{theirs}; use --direct, or the virtnetd of that namespace")

    def _state_dir_for(self, client_state_dir: str | None) -> str | None:
        """The --state-dir the forwarded command sees: the client's own spelling when it names
        the daemon's directory (so printed paths are the ones a direct run prints)."""
        mine = self.config.state_dir
        if client_state_dir is None or mine is None or not os.path.isabs(client_state_dir):
            return str(mine) if mine is not None else None
        try:
            same = os.path.samefile(client_state_dir, mine)
        except (OSError, ValueError):  # ValueError: a NUL in the client's spelling
            same = False
        return client_state_dir if same else str(mine)


def _log_scan_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        exc = future.exception()
        if isinstance(exc, VirtnetError):  # a state directory it cannot read now: one line
            log.error("scan after a change failed: %s", exc)
        else:
            log.error("scan after a change failed", exc_info=exc)


def doctor_available() -> bool:
    """Whether this virtnet has a doctor (a later addition: the endpoint answers 501 without)."""
    import importlib.util

    return importlib.util.find_spec("virtnet.insight.doctor") is not None


# --- request bodies -----------------------------------------------------------------------------


def decode_b64(text: str | None, what: str) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "BadRequest", f"{what}: not valid base64") from None


def decode_files(files: dict[str, Any]) -> dict[str, bytes | int]:
    entries: dict[str, bytes | int] = {}
    for path, entry in files.items():
        if not isinstance(entry, dict):
            raise ApiError(400, "BadRequest", f"files['{path}'] must be an object")
        fields = Fields(entry, f"files['{path}']")
        data = fields.get("data", str, None)
        error = fields.get("errno", int, None, minimum=1, maximum=MAX_ERRNO)
        fields.done()
        if (data is None) == (error is None):
            raise ApiError(400, "BadRequest", f"files['{path}']: give data or errno")
        if data is not None:
            decoded = decode_b64(data, f"files['{path}']")
            assert decoded is not None
            entries[path] = decoded
        else:
            entries[path] = int(error)
    return entries


RATE_FIELDS = ("average", "peak", "burst", "floor")


def rate_of(value: Any, where: str, floor: bool) -> Any:
    from virtnet.spec.model import BandwidthRate
    from virtnet.service.ports import parse_rate_option

    if isinstance(value, str):
        return parse_rate_option(where, value, floor=floor)
    if not isinstance(value, dict):
        raise ApiError(400, "BadRequest", f"{where} must be an object or 'avg,peak,burst'")
    fields = Fields(value, where)
    values = {}
    for name in RATE_FIELDS if floor else RATE_FIELDS[:3]:
        number = fields.get(name, int, None, minimum=1, maximum=UINT64_MAX)
        if number is not None:
            values[name] = number
    fields.done()
    if "average" not in values and "floor" not in values:
        raise ApiError(400, "BadRequest", f"{where} needs an average (or a floor)")
    return BandwidthRate(**values)


def port_request_of(fields: Fields) -> Any:
    """A PortRequest from a port-create body (the same choices as virtnet port-create)."""
    from virtnet.spec.model import Bandwidth
    from virtnet.service.ports import PortRequest

    xml = fields.get("xml", str, None)
    mac = fields.get("mac", str, None)
    if xml is not None:
        from virtnet.spec.xml.portxml import parse_port

        request = PortRequest.from_port(parse_port(xml, source="request"))
        if mac is not None:
            request.mac = mac
    elif mac is None:
        raise ApiError(400, "BadRequest", "the body: field 'mac' is required (or give a "
                       "<networkport> as 'xml')")
    else:
        request = PortRequest(mac=mac)
    for field_name, attribute in (("portgroup", "portgroup"), ("owner", "owner_name"),
                                  ("owner_uuid", "owner_uuid"), ("uuid", "uuid")):
        value = fields.get(field_name, str, None)
        if value is not None:
            setattr(request, attribute, value)
    inbound = fields.get("inbound", (dict, str), None)
    outbound = fields.get("outbound", (dict, str), None)
    if inbound is not None or outbound is not None:
        request.bandwidth = request.bandwidth or Bandwidth()
        if inbound is not None:
            request.bandwidth.inbound = rate_of(inbound, "inbound", floor=True)
        if outbound is not None:
            request.bandwidth.outbound = rate_of(outbound, "outbound", floor=False)
    return request


def frames_of(result: invoke.InvokeResult) -> bytes:
    """The thin CLI's answer format (docs/api.md): cheaper to read than JSON for a client
    that must not even import json."""
    parts = [f"status={result.status} elapsed_ms={result.elapsed * 1000.0:.3f}\n".encode()]
    for stream, text in result.output:
        data = text.encode("utf-8", "surrogateescape")
        parts.append(f"{stream} {len(data)}\n".encode())
        parts.append(data)
    return b"".join(parts)


__all__ = ["ApiError", "Daemon", "DaemonConfig", "Peer", "PeerListener", "Peers",
           "engine_error_status", "peer_of_socket"]
