"""virtnet.service.live: the diff between a running network's recorded actions and a new start plan
(pure: plans come from the real bridged driver with hand-made host facts), what cannot change
live, and the rollback of steps (with real files in tmp_path)."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path

import pytest

from virtnet.service.live import diff_actions, not_live_changes, run_steps, step_from_dict
from virtnet.execute.steps import ApplyAction, Replace, Step
from virtnet.plan.drivers.bridged import BridgedDriver
from virtnet.errors import HostError
from virtnet.host import Host
from virtnet.facts import AddressInfo, HostFacts, LinkInfo, RouteInfo
from virtnet.spec.model import (
    Bridge,
    DhcpHost,
    DhcpRange,
    Forward,
    ForwardMode,
    IpDef,
    NatRange,
    Network,
    Route,
)
from virtnet.paths import StatePaths
from virtnet.plan.actions import Action, AddRoute, CreateBridge, LoadFirewall, StartDnsmasq, WriteFile

A = ipaddress.ip_address
N = ipaddress.ip_network
PATHS = StatePaths.under(Path("/state"))


def facts() -> HostFacts:
    links = {name: LinkInfo(name=name, index=index, kind=None, up=True, mac=None, mtu=1500,
                            master=None) for index, name in enumerate(("lo", "eth0"), 1)}
    return HostFacts(
        links=links,
        addresses=[AddressInfo("eth0", ipaddress.ip_interface("198.51.100.7/24"))],
        routes=[RouteInfo(N("0.0.0.0/0"), "eth0", A("198.51.100.1"), 0, 3, 254)],
        dnsmasq="/usr/sbin/dnsmasq",
    )


def nat_net() -> Network:
    return Network(
        name="live",
        forward=Forward(mode=ForwardMode.NAT),
        bridge=Bridge(name="virbr7", stp=False),
        mac="52:54:00:11:22:33",
        ips=[IpDef(address=A("192.168.79.1"), netmask=A("255.255.255.0"),
                   ranges=[DhcpRange(A("192.168.79.100"), A("192.168.79.150"))])],
    )


def recorded(net: Network) -> list[Action]:
    """The start plan of NET as a running network records it (dnsmasq with its pid)."""
    actions = [Action.from_dict(a.to_dict())
               for a in BridgedDriver().plan_start(net, facts(), PATHS).actions]
    for action in actions:
        if isinstance(action, StartDnsmasq):
            action.pid = 4242
    return actions


def planned(net: Network) -> list[Action]:
    return BridgedDriver().plan_start(net, facts(), PATHS).actions


def ops(diff_steps: list[Step]) -> list[tuple[str, str]]:
    return [(step.op, (step.new or step.old).kind) for step in diff_steps]  # type: ignore[union-attr]


def test_the_same_definition_changes_nothing() -> None:
    diff = diff_actions("live", recorded(nat_net()), planned(nat_net()))
    assert diff.steps == [] and diff.not_live == []
    # the recorded actions are kept as they are, so the dnsmasq pid stays known
    dnsmasq = next(a for a in diff.merged if isinstance(a, StartDnsmasq))
    assert dnsmasq.pid == 4242


def test_a_new_host_only_rewrites_the_hostsfile_and_signals_dnsmasq() -> None:
    old = recorded(nat_net())
    new_net = nat_net()
    new_net.ips[0].hosts = [DhcpHost(mac="52:54:00:aa:bb:01", name="reserved",
                                     ip=A("192.168.79.42"))]
    new = planned(new_net)
    diff = diff_actions("live", old, new)
    kinds = ops(diff.steps)
    assert ("restart-dnsmasq", "start-dnsmasq") not in kinds
    assert kinds[-1] == ("reload-dnsmasq", "start-dnsmasq")
    written = [s.new for s in diff.steps if isinstance(s.new, WriteFile)]
    assert written and all(not w.path.endswith(".conf") for w in written)
    assert any("192.168.79.42" in w.content for w in written)
    # the file is written before dnsmasq is told to read it
    assert max(diff.steps.index(s) for s in diff.steps if isinstance(s.new, WriteFile)) \
        < len(diff.steps) - 1
    assert "SIGHUP" in diff.steps[-1].describe()


def test_a_changed_range_restarts_dnsmasq_after_writing_its_conf() -> None:
    old = recorded(nat_net())
    new_net = nat_net()
    new_net.ips[0].ranges = [DhcpRange(A("192.168.79.100"), A("192.168.79.200"))]
    diff = diff_actions("live", old, planned(new_net))
    conf_steps = [i for i, s in enumerate(diff.steps)
                  if isinstance(s.new, WriteFile) and s.new.path.endswith(".conf")]
    restart = [i for i, s in enumerate(diff.steps) if s.op == "restart-dnsmasq"]
    assert conf_steps and restart == [len(diff.steps) - 1] and conf_steps[0] < restart[0]
    assert "192.168.79.200" in diff.steps[conf_steps[0]].new.content  # type: ignore[union-attr]
    # the restarted dnsmasq is a fresh action (no pid yet); the old one keeps its pid
    step = diff.steps[restart[0]]
    assert isinstance(step.old, StartDnsmasq) and step.old.pid == 4242
    assert isinstance(step.new, StartDnsmasq) and step.new.pid is None
    assert step.new in diff.merged and step.old not in diff.merged
    # the bridge is never recreated
    assert not any(isinstance(s.new, CreateBridge) and s.op == "apply" for s in diff.steps)


def test_an_added_route_is_applied_and_a_removed_one_undone_first() -> None:
    with_route = nat_net()
    with_route.routes = [Route(address=A("10.79.0.0"), prefix=24, gateway=A("192.168.79.5"))]
    added = diff_actions("live", recorded(nat_net()), planned(with_route))
    route_steps = [s for s in added.steps if isinstance(s.new, AddRoute)]
    assert [s.op for s in route_steps] == ["apply"]
    assert route_steps[0].new.destination == "10.79.0.0/24"  # type: ignore[union-attr]

    removed = diff_actions("live", recorded(with_route), planned(nat_net()))
    assert removed.steps[0].op == "undo" and isinstance(removed.steps[0].old, AddRoute)
    assert not any(isinstance(a, AddRoute) for a in removed.merged)


def test_a_new_nat_range_replaces_the_rules_in_one_step_per_table() -> None:
    old = recorded(nat_net())
    new_net = nat_net()
    assert new_net.forward is not None
    new_net.forward.nat = NatRange(address_start=A("198.51.100.7"),
                                   address_end=A("198.51.100.7"), port_start=2000,
                                   port_end=3000)
    diff = diff_actions("live", old, planned(new_net))
    firewall = [s for s in diff.steps
                if isinstance(s.new, LoadFirewall) or isinstance(s.old, LoadFirewall)]
    assert firewall and all(s.op == "replace" for s in firewall)
    assert any("198.51.100.7" in s.new.ruleset for s in firewall)  # type: ignore[union-attr]
    tables = {(s.new.family, s.new.table) for s in firewall}  # type: ignore[union-attr]
    assert len(tables) == len(firewall)
    assert all(s.describe().startswith("replace in one nft transaction") for s in firewall)


def test_bridge_mtu_and_stp_are_tuned_in_place() -> None:
    new_net = nat_net()
    assert new_net.bridge is not None
    new_net.bridge.stp = True
    new_net.mtu = 1400
    diff = diff_actions("live", recorded(nat_net()), planned(new_net))
    tune = [s for s in diff.steps if s.op == "tune-bridge"]
    assert len(tune) == 1 and "MTU 1400" in tune[0].describe() and "STP on" in tune[0].describe()
    assert not any(s.op in ("apply", "undo") and isinstance(s.new or s.old, CreateBridge)
                   for s in diff.steps)


def test_not_live_changes_names_each_one() -> None:
    old = nat_net()
    assert not_live_changes(old, copy.deepcopy(old)) == []
    new = copy.deepcopy(old)
    new.forward = Forward(mode=ForwardMode.ROUTE)
    assert new.bridge is not None
    new.bridge.name = "virbr8"
    new.mac = "52:54:00:11:22:44"
    new.ips[0].address = A("192.168.80.1")
    found = not_live_changes(old, new)
    assert any("forward mode (nat → route)" in f for f in found)
    assert any("bridge name (virbr7 → virbr8)" in f for f in found)
    assert any(f.startswith("bridge MAC") for f in found)
    assert any("192.168.80.1/24" in f for f in found)
    assert len(found) == 4


def test_a_failing_step_reverses_the_done_ones(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a.hostsfile", tmp_path / "b.addnhosts"
    first.write_text("old\n")
    steps = [
        Replace(WriteFile(str(first), "old\n"), WriteFile(str(first), "new\n")),
        ApplyAction(None, WriteFile(str(second), "added\n")),
        ApplyAction(None, WriteFile(str(tmp_path / "never"), "x")),
    ]
    monkeypatch.setenv("VIRTNET_APPLY_FAULT_STEP", "3")
    with pytest.raises(HostError, match=r"(?s)step 3 .* failed.*runs as before"):
        run_steps(Host(), steps)
    assert first.read_text() == "old\n"
    assert not second.exists() and not (tmp_path / "never").exists()

    monkeypatch.delenv("VIRTNET_APPLY_FAULT_STEP")
    run_steps(Host(), steps)
    assert first.read_text() == "new\n" and second.read_text() == "added\n"


def test_steps_survive_their_journal_form() -> None:
    """Step.to_dict/from_dict, as the apply journal keeps them: every op, with the actions'
    recorded fields (the running dnsmasq's pid), and an unknown op refused."""
    import json

    with_route = nat_net()
    with_route.routes = [Route(address=A("10.79.0.0"), prefix=24, gateway=A("192.168.79.5"))]
    new_net = nat_net()
    assert new_net.bridge is not None and new_net.forward is not None
    new_net.bridge.stp = True
    new_net.ips[0].ranges = [DhcpRange(A("192.168.79.100"), A("192.168.79.200"))]
    new_net.forward.nat = NatRange(address_start=A("198.51.100.7"),
                                   address_end=A("198.51.100.7"))
    steps = diff_actions("live", recorded(with_route), planned(new_net)).steps
    hosts_net = nat_net()
    hosts_net.ips[0].hosts = [DhcpHost(mac="52:54:00:aa:bb:01", name="r", ip=A("192.168.79.42"))]
    steps += diff_actions("live", recorded(nat_net()), planned(hosts_net)).steps[-1:]
    assert {s.op for s in steps} == {"undo", "replace", "tune-bridge", "restart-dnsmasq",
                                     "reload-dnsmasq"}
    steps.append(ApplyAction(None, AddRoute("virbr7", "10.80.0.0/24", "192.168.79.6")))
    for step in steps:
        back = step_from_dict(json.loads(json.dumps(step.to_dict())))
        assert back.op == step.op and back.describe() == step.describe()
        for mine, theirs in ((back.old, step.old), (back.new, step.new)):
            assert (mine is None) == (theirs is None)
            if mine is not None:
                assert type(mine) is type(theirs) and mine.to_dict() == theirs.to_dict()
    restart = next(s for s in steps if s.op == "restart-dnsmasq")
    assert step_from_dict(restart.to_dict()).old.pid == 4242  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown apply step"):
        step_from_dict({"op": "explode", "old": None, "new": None})
