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
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from virtnet.daemon.events import EventBus
from virtnet.daemon.settings import DEFAULT_GROUP, DEFAULT_REQUEST_TIMEOUT_S
from virtnet.daemon.peers import Peer, PeerListener, Peers, peer_of_socket, resolve_group
from virtnet.daemon.request import (
    ApiError,
    Fields,
    engine_error_status,
    error_response,
    loggable,
    parse_body,
    port_request_of,
)
from virtnet.daemon.routes import (
    API_VERSION,
    FRAMES_TYPE,
    EventRoutes,
    NetworkRoutes,
    PortRoutes,
    VerbRoutes,
    frames_of,
    route_table,
)
from virtnet.daemon.supervise import Supervisor
from virtnet.errors import VirtnetError
from virtnet.face.verbs import ResidentServices
from virtnet.host import Host
from virtnet.paths import StatePaths
from virtnet.service.engine import Engine
from virtnet.service.ports import PortManager
from virtnet.store.ports import ResidentPortCache

log = logging.getLogger("virtnetd")


class ClientErrorFilter(logging.Filter):
    """aiohttp logs a request its HTTP parser refuses (the client's doing, answered 400) as
    an error with a traceback: a client could fill the daemon's log with them. Such a
    record becomes one line at DEBUG (shown with --log-level debug only); everything else
    passes as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            text = " ".join(str(exc.message).split())
            record.msg, record.args = "malformed HTTP request answered %d: %s", \
                (exc.code, text[:200])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


# Seconds spent in worker threads on the engine for the request being handled (see
# Daemon.call), reported with the handler's whole time in a Server-Timing header so that
# clients and benchmarks can tell the engine's work from the HTTP and thread hand-off cost.
_work_seconds: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "virtnetd_work_seconds", default=None)

DEFAULT_WORKERS = 8
# A definition may be 10 MiB (virtnet.spec.xml.parse.MAX_DOCUMENT_BYTES); the CLI endpoint carries
# files base64-encoded, so a little more than 4/3 of that, plus the rest of the request.
DEFAULT_MAX_BODY = 16 * 1024 * 1024


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


class Daemon(NetworkRoutes, PortRoutes, EventRoutes, VerbRoutes):
    """The engine, the supervisor, the event bus and the HTTP application around them; the
    endpoints' handlers come from the route groups of virtnet.daemon.routes."""

    def __init__(self, config: DaemonConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.engine = Engine(config.paths)
        self.ports = PortManager(self.engine, cache=ResidentPortCache(
            self.engine.paths.status_dir, self.engine.paths.status))
        self.bus = EventBus(loop)
        self.supervisor = Supervisor(self.engine, self.bus, tick=config.tick)
        self.executor = ThreadPoolExecutor(max_workers=config.workers,
                                           thread_name_prefix="virtnetd")
        self.admin_gid = resolve_group(config.group)
        self.peers = Peers(self.admin_gid)  # serve the listener it makes: self.peers.listener
        self.netns_id = Host.netns_identity()
        self.services = ResidentServices(self.engine, self.ports)  # for the CLI's verbs
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
        app.add_routes(route_table(self))
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


def _log_scan_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        exc = future.exception()
        if isinstance(exc, VirtnetError):  # a state directory it cannot read now: one line
            log.error("scan after a change failed: %s", exc)
        else:
            log.error("scan after a change failed", exc_info=exc)


__all__ = ["API_VERSION", "ApiError", "ClientErrorFilter", "Daemon", "DaemonConfig", "FRAMES_TYPE", "Fields", "Peer",
           "PeerListener", "Peers", "engine_error_status", "frames_of", "loggable", "parse_body",
           "peer_of_socket", "port_request_of", "resolve_group"]
