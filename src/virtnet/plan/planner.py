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
from virtnet.render.nft import firewall_needed, forward_dev
from virtnet.spec.forwards import read_forwards
from virtnet.spec.model import Network


def preflight(net: Network, facts: HostFacts) -> None:
    """Refuse NET when the host cannot take it (HostConflict with every reason)."""
    problems: list[Problem] = driver_for(net).preflight(net, facts)
    if problems:
        details = "\n".join(f"  {problem}" for problem in problems)
        raise HostConflict(f"network '{net.name}' cannot start on this host:\n{details}")


def day_two_actions(net: Network) -> list[Action]:
    """What a start adds after the driver's steps: port forwards, other firewalls' rules."""
    return [*forwards.plan_actions(net), *coexist_actions(net)]


def coexist_actions(net: Network) -> list[Action]:
    """The step that lets NET's traffic through other tables' dropping chains
    (virtnet.plan.coexist): firewalled modes on a bridge of our own only."""
    if not firewall_needed(net) or not net.bridge_name \
            or not driver_for(net).capabilities(net).coexistence:
        return []

    try:
        forwards = read_forwards(net)
    except Exception:  # noqa: BLE001 - reported by validation, not here
        forwards = []
    return [coexist.AllowThroughOtherFirewalls(
        network=net.name,
        bridge=net.bridge_name,
        forward_mode=net.forward_mode.value,
        dev=forward_dev(net),
        ips=[str(ip.interface) for ip in net.ips if ip.interface is not None],
        forwards=[[f.proto, str(f.to_address), f.version, f.target_ports] for f in forwards],
    )]


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


__all__ = ["coexist_actions", "day_two_actions", "plan_start", "preflight"]
