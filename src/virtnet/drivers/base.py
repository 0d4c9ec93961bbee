"""The interface every forward-mode driver implements.

A driver turns (network, host facts) into start-time problems and a start Plan; it never
touches the host itself. Drivers are stateless singletons.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

from virtnet.model import ForwardMode, Network

if TYPE_CHECKING:
    from virtnet.errors import Problem
    from virtnet.host.facts import HostFacts
    from virtnet.paths import StatePaths
    from virtnet.plan import Plan


class Driver(abc.ABC):
    name: ClassVar[str]
    modes: ClassVar[tuple[ForwardMode, ...]]

    def handles(self, net: Network) -> bool:
        return net.forward_mode in self.modes

    @abc.abstractmethod
    def preflight(self, net: Network, facts: HostFacts) -> list[Problem]:
        """What on this host keeps NET from starting (libvirt's start-time checks)."""

    @abc.abstractmethod
    def plan_start(self, net: Network, facts: HostFacts, paths: StatePaths) -> Plan:
        """The ordered actions that make NET real."""
