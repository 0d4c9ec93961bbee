"""Applying a fix doctor suggests inside a lab (tests/netns/test_fixes.py): the command runs
where the fix says, and the lab's topology follows it so the prediction can too."""

from __future__ import annotations

from dataclasses import replace

from virtnet.insight.lab import Lab, LabError
from virtnet.insight.reach_terms import ON_HOST, ON_LAN_ROUTER, ON_SWITCH, Fix


def apply_fix(lab: Lab, fix: Fix) -> None:
    """Run a fix command where it belongs: the host, the LAN router or the switch."""
    role = {ON_HOST: "host", ON_LAN_ROUTER: "lan", ON_SWITCH: "switch"}.get(fix.where)
    if role is None:
        raise LabError(f"the lab has no place called {fix.where!r}")
    lab.progress(f"fix on the {fix.where}: {fix.command}")
    lab.sandbox.shell(lab.ns(role), fix.command)  # the lab's runner: sh -ec inside the namespace
    lab.applied_fixes.append(fix)
    # what the topology now is (so the prediction can follow the fix)
    if fix.where == ON_LAN_ROUTER and fix.command.startswith("ip route add"):
        lab.lan_route = True
    if fix.where == ON_HOST and "type macvlan mode bridge" in fix.command:
        lab.shim = True
    if fix.where == ON_SWITCH and "hairpin" in fix.command:
        lab.options = replace(lab.options, hairpin="hairpin on" in fix.command)
