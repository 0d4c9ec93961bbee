"""virtnet's exceptions. Every error a user can cause carries a message fit to print as is.

The class says what kind of failure it is, and the daemon answers with the HTTP status of
that kind (virtnet.daemon.server.engine_error_status), never by reading the message:
NotFoundError 404, InvalidOperationError and HostConflict 409, Busy 503, any other HostError
500, any other VirtnetError 400 (the request or the definition was refused).
"""

from __future__ import annotations

import contextlib
import errno as errno_module
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


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


class TapGrantRefused(PortError):
    """A client asked for a tap owned by a user or group other than its own."""


class UpdateError(VirtnetError):
    """A net-update command was refused (unknown entry, duplicate, bad snippet...)."""


class HostError(VirtnetError):
    """The host refused or lacks something (missing kernel feature, busy name, tool error)."""


_NETLINK_ERRNO_TEXT = {
    errno_module.EEXIST: "already exists",
    errno_module.ENODEV: "no such device",
    errno_module.ENOENT: "not found",
    errno_module.ESRCH: "not found",
    errno_module.EADDRNOTAVAIL: "address not available",
    errno_module.ENETUNREACH:
        "network unreachable (is the gateway on a directly connected subnet?)",
    errno_module.EPERM: "operation not permitted (needs root / CAP_NET_ADMIN)",
    errno_module.EOPNOTSUPP: "not supported by this kernel",
    errno_module.EINVAL: "invalid argument",
    errno_module.ERANGE: "value out of range",
    errno_module.EBUSY: "device or resource busy",
}


class NetlinkFailure(HostError):
    """A netlink request the kernel refused; ``code`` is the errno (raised by host/rtnl;
    kept here so that the layers above catch it by type without importing host/)."""

    def __init__(self, what: str, code: int) -> None:
        self.what = what
        self.code = code
        text = _NETLINK_ERRNO_TEXT.get(code) or errno_module.errorcode.get(code, f"error {code}")
        super().__init__(f"cannot {what}: {text}")

    def __reduce__(self) -> tuple[object, ...]:
        return (NetlinkFailure, (self.what, self.code))


class HostObjectMissing(HostError):
    """What a host command names (a firewall table, chain or rule) is not there: an undo
    that finds it gone is done."""


class NotInstalled(HostError):
    """A program or library virtnet needs is not installed on the host (by type, so callers
    that can do without it need not read the message)."""


class StorageError(VirtnetError):
    """A file could not be read or written: the disk is full (ENOSPC), read-only (EROFS),
    refuses access (EACCES), fails (EIO)...

    Raised in place of the OSError by the functions that touch virtnet's files (virtnet.store.store,
    the file helpers of virtnet.host), so every face reports it like any other error, on one
    line naming the file and the errno, and virtnetd answers it by its type (docs/api.md):

        cannot write /var/lib/virtnet/dnsmasq/default.conf: No space left on device (ENOSPC)
    """

    def __init__(self, action: str, path: str | os.PathLike[str], errno_number: int,
                 strerror: str | None = None, hint: str = "") -> None:
        self.action = action  # what was tried: "read", "write", "remove", "lock"...
        self.path = os.fspath(path)
        self.errno = errno_number
        self.strerror = strerror or os.strerror(errno_number)
        self.hint = hint  # what the user may do about it, if virtnet can tell
        super().__init__(str(self))

    @classmethod
    def of(cls, exc: OSError, action: str, path: str | os.PathLike[str] | None = None,
           hint: str = "") -> StorageError:
        """The StorageError for EXC, an OSError met trying to ACTION PATH (by default the
        file the OSError names)."""
        where = path if path is not None else exc.filename
        return cls(action, where if where is not None else "?", exc.errno or 0,
                   exc.strerror, hint)

    @property
    def errno_name(self) -> str:
        return errno_module.errorcode.get(self.errno, str(self.errno))

    def __str__(self) -> str:
        text = f"cannot {self.action} {self.path}: {self.strerror} ({self.errno_name})"
        return f"{text}; {self.hint}" if self.hint else text

    def __reduce__(self) -> tuple[Any, ...]:
        return (StorageError, (self.action, self.path, self.errno, self.strerror, self.hint))


@contextlib.contextmanager
def storage_errors(action: str, path: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Turn an OSError raised inside into a StorageError: trying to ACTION PATH (by default
    the file the OSError names). For the functions that touch files, at their boundary."""
    try:
        yield
    except OSError as exc:
        raise StorageError.of(exc, action, path) from exc
class HostConflict(HostError):
    """The network cannot start on the host as it is now (the preflight found what stands in
    the way: a link or subnet in use, a device missing, a tool not installed). Nothing was
    changed; the same request may succeed once the host changes."""
