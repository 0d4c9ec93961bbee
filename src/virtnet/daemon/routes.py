"""virtnetd's endpoints (docs/api.md): networks, ports, events and the CLI's verbs.

Each group is a mixin of :class:`virtnet.daemon.server.Daemon`, which supplies what the
handlers use: ``engine``, ``ports``, ``supervisor``, ``bus``, ``config``, ``netns_id``, and
the plumbing ``call`` (the engine in a worker thread), ``body`` (the JSON body, timed),
``_change`` and ``scan_after_answer`` (events after the answer) and ``permission_message``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
from typing import Any

from aiohttp import web

from virtnet import __version__
from virtnet.daemon.peers import Peer
from virtnet.daemon.request import (
    UINT64_MAX,
    ApiError,
    Fields,
    check_query,
    decode_b64,
    decode_files,
    loggable,
    port_request_of,
    query_flag,
)
from virtnet.service.handover import open_port_device, release_with_descriptor
from virtnet.service.ports import port_summary
from virtnet.errors import VirtnetError
from virtnet.face import verbs
from virtnet.host import Host
from virtnet.spec.xml.schema import check_document

log = logging.getLogger("virtnetd")

API_VERSION = 1
FRAMES_TYPE = "application/x-virtnet-frames"  # the thin CLI's answer format


def route_table(daemon: Any) -> list[web.RouteDef]:
    """Every endpoint of the API and the Daemon method that answers it."""
    return [
        web.get("/", daemon.daemon_info),
        web.get("/v1", daemon.daemon_info),
        web.get("/v1/networks", daemon.list_networks),
        web.post("/v1/networks", daemon.define_network),
        web.get("/v1/networks/{name}", daemon.network_info),
        web.delete("/v1/networks/{name}", daemon.undefine_network),
        web.post("/v1/networks/{name}/start", daemon.start_network),
        web.post("/v1/networks/{name}/destroy", daemon.destroy_network),
        web.put("/v1/networks/{name}/autostart", daemon.set_autostart),
        web.get("/v1/networks/{name}/xml", daemon.network_xml),
        web.post("/v1/networks/{name}/update", daemon.update_network),
        web.get("/v1/networks/{name}/leases", daemon.network_leases),
        web.get("/v1/networks/{name}/plan", daemon.network_plan),
        web.post("/v1/plan", daemon.definition_plan),
        web.get("/v1/networks/{name}/ports", daemon.list_ports),
        web.post("/v1/networks/{name}/ports", daemon.create_port),
        web.get("/v1/networks/{name}/ports/{port}", daemon.port_info),
        web.get("/v1/networks/{name}/ports/{port}/xml", daemon.port_xml),
        web.delete("/v1/networks/{name}/ports/{port}", daemon.delete_port),
        web.get("/v1/doctor", daemon.doctor),
        web.get("/v1/events", daemon.events),
        web.post("/v1/cli", daemon.cli),
    ]


class NetworkRoutes:
    """The daemon itself and its networks: definitions, state, XML, leases, plans, doctor."""

    # --- daemon -------------------------------------------------------------------------------

    async def daemon_info(self, request: web.Request) -> web.Response:
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
            # by name or uuid; also when a file of the network is unreadable (lifecycle.salvage)
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

    # --- doctor -------------------------------------------------------------------------------

    async def doctor(self, request: web.Request) -> web.Response:
        """``virtnet doctor``'s report: the host, and the networks named (all by default)."""
        check_query(request, {"network"})
        if not doctor_available():
            raise ApiError(501, "NotImplemented", "this virtnet has no doctor")
        names = request.query.getall("network", [])

        def run() -> dict[str, Any]:
            from virtnet.insight.doctor import run_doctor  # heavy and rare: not resident

            return run_doctor(self.engine, list(names)).to_dict()

        return web.json_response(await self.call(run))



class PortRoutes:
    """A network's ports, a tap or macvtap descriptor handed over on request."""

    async def list_ports(self, request: web.Request) -> web.Response:
        check_query(request, set())
        name = request.match_info["name"]

        def ports() -> list[dict[str, Any]]:
            return [port_summary(record) for record in self.ports.list(name)]

        return web.json_response(await self.call(ports))

    async def port_info(self, request: web.Request) -> web.Response:
        check_query(request, set())
        name, port = request.match_info["name"], request.match_info["port"]
        record = await self.call(self.ports.get, name, port)
        return web.json_response(port_summary(record))

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
            return port_summary(record)

        return web.json_response(await self.call(delete))

    async def create_port(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        fields = Fields(await self.body(request))
        port_request = port_request_of(fields)
        pass_fd = fields.get("pass_fd", bool, False)
        vnet_hdr = fields.get("vnet_hdr", bool, True)
        release_on_close = fields.get("release_on_close", bool, False)
        fields.done()
        if release_on_close and not pass_fd:
            raise ApiError(400, "BadRequest", "release_on_close needs pass_fd")
        if pass_fd:
            self._check_fd_passing(request)

        def create() -> tuple[Any, int | None]:
            with self.engine.store.lock:
                record = self.ports.create(name, port_request)
                fd = None
                if pass_fd:
                    try:
                        fd = open_port_device(record, vnet_hdr=vnet_hdr)
                        if release_on_close:
                            release_with_descriptor(record, fd)
                    except BaseException:
                        self.ports.delete(record.network, record.uuid)
                        raise
                self.supervisor.note_port(record.network, record, created=True)
            return record, fd

        record, fd = await self.call(create)
        summary = port_summary(record)
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


class EventRoutes:
    """The event stream (ndjson), with a replay of the recent ones."""

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


class VerbRoutes:
    """The CLI's verbs run in the daemon for the thin client (virtnet.face.verbs)."""

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
        if verb not in verbs.FORWARDED_VERBS:
            raise ApiError(400, "BadRequest", f"'{verb}' runs in the client, not in the daemon "
                           "(it needs the user's terminal or files, or is not a verb)")
        self._check_netns(netns)
        peer: Peer = request["peer"]
        if verb not in verbs.READ_ONLY_VERBS and not peer.privileged:
            raise ApiError(403, "PermissionDenied", self.permission_message(peer))
        files = verbs.ClientFiles(entries=decode_files(files_in),
                                  stdin=decode_b64(stdin_b64, "stdin"))
        shown_state_dir = self._state_dir_for(state_dir)
        changes = verb not in verbs.READ_ONLY_VERBS

        result = await self.call(verbs.invoke, argv, files, shown_state_dir, self.services)
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


def doctor_available() -> bool:
    """Whether this virtnet has a doctor (a later addition: the endpoint answers 501 without)."""
    return importlib.util.find_spec("virtnet.insight.doctor") is not None


def frames_of(result: verbs.InvokeResult) -> bytes:
    """The thin CLI's answer format (docs/api.md): cheaper to read than JSON for a client
    that must not even import json."""
    parts = [f"status={result.status} elapsed_ms={result.elapsed * 1000.0:.3f}\n".encode()]
    for stream, text in result.output:
        data = text.encode("utf-8", "surrogateescape")
        parts.append(f"{stream} {len(data)}\n".encode())
        parts.append(data)
    return b"".join(parts)



__all__ = ["API_VERSION", "EventRoutes", "FRAMES_TYPE", "NetworkRoutes", "PortRoutes", "VerbRoutes",
           "doctor_available", "frames_of", "route_table"]
