"""The start of a network, planned: the checks against the host's facts and the ordered
actions that bring the network up. Pure: the facts (tc's features included, for a network
that shapes traffic) are read before and come in as data, so ``virtnet plan`` and a start
see the same plan and planning never touches the host.
"""

from __future__ import annotations

from virtnet.errors import HostConflict, Problem
from virtnet.facts import HostFacts
from virtnet.paths import StatePaths
from virtnet.plan import coexist, forwards
from virtnet.plan.actions import Action
from virtnet.plan.plans import Plan
from virtnet.plan.drivers import driver_for
from virtnet.plan.shaping import ApplyShaping, network_shaping
from virtnet.spec.model import Network


def preflight(net: Network, facts: HostFacts) -> None:
    """Refuse NET when the host cannot take it (HostConflict with every reason)."""
    problems: list[Problem] = driver_for(net).preflight(net, facts)
    if problems:
        details = "\n".join(f"  {problem}" for problem in problems)
        raise HostConflict(f"network '{net.name}' cannot start on this host:\n{details}")


def day_two_actions(net: Network) -> list[Action]:
    """What a start adds after the driver's steps: port forwards, other firewalls' rules."""
    return [*forwards.plan_actions(net), *coexist.plan_actions(net)]


def plan_start(net: Network, facts: HostFacts, paths: StatePaths) -> Plan:
    """The actions that start NET on a host with FACTS, its state under PATHS."""
    plan = driver_for(net).plan_start(net, facts, paths)
    plan.actions += day_two_actions(net)
    if net.bandwidth is not None:  # the network's own <bandwidth>, on its bridge
        if facts.tc is None:
            raise ValueError(f"network '{net.name}' shapes traffic: its start is planned "
                             "with the host's tc features")
        shaping = network_shaping(net, facts.tc)
        if shaping is not None:
            plan.actions.append(ApplyShaping.of(shaping, f"network {net.name}'s bandwidth"))
    return plan


__all__ = ["day_two_actions", "plan_start", "preflight"]
