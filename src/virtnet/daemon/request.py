"""What a daemon request carries, checked: JSON bodies and their fields, query flags, port
requests, and the refusals (ApiError) and engine errors as HTTP statuses and JSON answers."""

from __future__ import annotations

import base64
import binascii
import errno
import json
from typing import Any

from aiohttp import web

from virtnet.errors import (
    Busy,
    HostConflict,
    HostError,
    InvalidOperationError,
    NotFoundError,
    StorageError,
    VirtnetError,
)
from virtnet.plan.ports import PortRequest, parse_rate_option
from virtnet.spec.model import Bandwidth, BandwidthRate
from virtnet.spec.xml.portxml import parse_port

# JSON integers the API takes are at most 64 bits (a larger one is refused, never passed on)
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
UINT64_MAX = 2**64 - 1
MAX_ERRNO = 4095  # the kernel's errno values are 1..4095
TRUE_WORDS = frozenset({"1", "true", "yes", "on", ""})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})




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
    xml = fields.get("xml", str, None)
    mac = fields.get("mac", str, None)
    if xml is not None:
        request = PortRequest.from_port(parse_port(xml, source="request"))
        if mac is not None:
            request.mac = mac
    else:
        request = PortRequest(mac=mac)  # None: one is made up
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



__all__ = ["ApiError", "Fields", "check_query", "decode_b64", "decode_files", "engine_error_status",
           "error_response", "loggable", "parse_body", "port_request_of", "query_flag", "rate_of"]
