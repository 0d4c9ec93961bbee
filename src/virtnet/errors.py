"""virtnet's exceptions. Every error a user can cause carries a message fit to print as is.

The class says what kind of failure it is, and the daemon answers with the HTTP status of
that kind (virtnet.daemon.server.engine_error_status), never by reading the message:
NotFoundError 404, InvalidOperationError and HostConflict 409, Busy 503, any other HostError
500, any other VirtnetError 400 (the request or the definition was refused).
"""

from __future__ import annotations

from dataclasses import dataclass


class VirtnetError(Exception):
    """Base of all errors virtnet reports to users (exit status 1, no traceback)."""


@dataclass
class Problem:
    """One semantic problem in a definition: where, what value, and why."""

    path: str  # element path, e.g. "/network/ip[1]/dhcp/range[2]"
    message: str  # the reason, naming the value
    value: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class XMLParseError(VirtnetError):
    """The XML could not be read, or an element/attribute has a wrong value or type."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        path: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.path = path
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.source or "<input>"
        if self.line is not None:
            where += f":{self.line}"
        if self.path:
            where += f": {self.path}"
        return f"{where}: {self.message}"


class ValidationError(VirtnetError):
    """A definition parsed but breaks one or more semantic rules."""

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.__str__())

    def __str__(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return "\n".join(prefix + str(p) for p in self.problems)


class NotFoundError(VirtnetError):
    """No network has the given name or UUID (or, for a subclass, nothing else named)."""


class InvalidOperationError(VirtnetError):
    """The operation does not apply to the network in its present state."""


class Busy(VirtnetError):
    """What the command needs is held by another one past the time it may wait (the state
    lock): nothing was done, and the same command may succeed later."""


class PortError(VirtnetError):
    """A port cannot be allocated or found (the request, not the host, is the problem)."""


class PortNotFound(PortError, NotFoundError):
    """No port of the network has the given UUID, device name or MAC."""


class UpdateError(VirtnetError):
    """A net-update command was refused (unknown entry, duplicate, bad snippet...)."""


class HostError(VirtnetError):
    """The host refused or lacks something (missing kernel feature, busy name, tool error)."""


class HostConflict(HostError):
    """The network cannot start on the host as it is now (the preflight found what stands in
    the way: a link or subnet in use, a device missing, a tool not installed). Nothing was
    changed; the same request may succeed once the host changes."""
