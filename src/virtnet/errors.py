"""virtnet's exceptions. Every error a user can cause carries a message fit to print as is."""

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


class UpdateError(VirtnetError):
    """A net-update command was refused (unknown entry, duplicate, bad snippet...)."""


class HostError(VirtnetError):
    """The host refused or lacks something (missing kernel feature, busy name, tool error)."""
