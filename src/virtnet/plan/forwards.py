"""Port forwards in a start plan: the mode and target checks, and the action that loads them.

Rules live in virtnet's own table, in three NAT chains per network (virtnet.render.nft
renders them); the forwards themselves are kept in the definition (virtnet.spec.forwards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from virtnet.errors import Problem, ValidationError
from virtnet.plan.actions import LoadFirewall, crash_in_step
from virtnet.plan.drivers import driver_for
from virtnet.render import nft as firewall
from virtnet.render.nft import render_forwards, render_forwards_teardown
from virtnet.spec.forwards import METADATA_PATH, PREFIX, ITEM, PortForward, read_forwards
from virtnet.spec.model import Network

# --- validation ----------------------------------------------------------------------------


def check_forwards(net: Network, forwards: list[PortForward]) -> list[Problem]:
    """Definition-only rules: the mode forwards, each target lies in one of the network's
    subnets, a port range keeps its ports, no two forwards claim the same port."""
    problems: list[Problem] = []
    if forwards and not driver_for(net).capabilities(net).forwards:
        problems.append(Problem(
            METADATA_PATH,
            f"port forwards need forward mode nat or route, not {net.forward_mode.value}",
        ))
    subnets = [ip.network for ip in net.ips if ip.network is not None]
    seen: list[PortForward] = []
    for index, fwd in enumerate(forwards, start=1):
        path = f"{METADATA_PATH}/{PREFIX}:{ITEM}[{index}]"
        if not any(fwd.to_address in subnet for subnet in subnets
                   if subnet.version == fwd.version):
            problems.append(Problem(
                path, f"target {fwd.to_address} is in none of the network's subnets",
                str(fwd.to_address)))
        if fwd.address is not None and fwd.address.version != fwd.version:
            problems.append(Problem(
                path, f"host address {fwd.address} and target {fwd.to_address} differ in family"))
        if fwd.to_port is not None and fwd.port_end != fwd.port_start \
                and fwd.to_port != fwd.port_start:
            problems.append(Problem(
                path, f"a port range ({fwd.ports}) is forwarded to the same ports; "
                "give no target port", fwd.ports))
        for other in seen:
            clash = (other.proto == fwd.proto and other.version == fwd.version
                     and other.port_start <= fwd.port_end and fwd.port_start <= other.port_end
                     and (other.address is None or fwd.address is None
                          or other.address == fwd.address))
            if clash:
                problems.append(Problem(
                    path, f"{fwd.proto} port {fwd.ports} is already forwarded to "
                    f"{other.target()}", fwd.ports))
        seen.append(fwd)
    return problems


@dataclass
class LoadForwards(LoadFirewall):
    """Load a network's port forwards (DNAT + hairpin NAT) into virtnet's table."""

    kind: ClassVar[str] = "load-forwards"

    def describe(self) -> str:
        count = self.ruleset.count(" dnat ") // 2
        return f"load {count} port forward(s) of network {self.network} into " \
               f"{self.family} {self.table}"

    def apply(self, host: Any) -> None:
        host.nft(self.ruleset, what=f"load port forwards of network {self.network}")
        crash_in_step()


def plan_actions(net: Network) -> list[LoadForwards]:
    """The start-plan step of NET's forwards (nothing when it has none)."""
    forwards = read_forwards(net)
    if not forwards:
        return []
    problems = check_forwards(net, forwards)
    if problems:
        raise ValidationError(problems, source=f"network '{net.name}'")
    if not net.bridge_name:
        return []
    return [LoadForwards(
        network=net.name,
        family=firewall.FAMILY,
        table=firewall.TABLE,
        ruleset=render_forwards(net, forwards),
        teardown=render_forwards_teardown(net),
        chain_prefix=firewall.CHAIN_PREFIX,
    )]
