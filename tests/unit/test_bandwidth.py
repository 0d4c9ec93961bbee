"""Pure bandwidth planning: libvirt's rates and directions as tc commands, floors, features."""

from __future__ import annotations

import pytest

from virtnet.plan.shaping import (
    ApplyShaping,
    BandwidthError,
    PlugFloor,
    TcFeatures,
    check_floor,
    device_shaping,
    floor_commands,
    ifb_name,
    network_shaping,
    next_class_id,
    port_shaping,
    quantum,
)
from virtnet.errors import HostError, InvalidOperationError, PortError
from virtnet.spec.model import Bandwidth, BandwidthRate, Bridge, Forward, ForwardMode, Network
from virtnet.plan.actions import Action

HERE = TcFeatures()  # what this kernel has: no sfq, no police
FULL = TcFeatures(sfq=True, police=True)


def bw(inbound: dict[str, int] | None = None, outbound: dict[str, int] | None = None) -> Bandwidth:
    return Bandwidth(
        inbound=BandwidthRate(**inbound) if inbound else None,
        outbound=BandwidthRate(**outbound) if outbound else None,
    )


def lines(shaping: object) -> list[str]:
    assert shaping is not None
    return [" ".join(argv) for argv in shaping.setup]  # type: ignore[attr-defined]


def nat(bandwidth: Bandwidth | None = None, mode: ForwardMode = ForwardMode.NAT) -> Network:
    return Network(name="n", forward=Forward(mode=mode), bridge=Bridge(name="virbr9"),
                   bandwidth=bandwidth)


# --- directions ----------------------------------------------------------------------------


def test_tap_inbound_is_the_devices_egress_and_outbound_its_ingress() -> None:
    shaping = port_shaping("vnet0", bw({"average": 1000}, {"average": 500, "burst": 64}),
                           tap=True, features=HERE)
    assert lines(shaping) == [
        "qdisc add dev vnet0 root handle 1: htb default 1",
        "class add dev vnet0 parent 1: classid 1:1 htb rate 1000kbps quantum 85",
        "qdisc add dev vnet0 handle ffff: ingress",
        "filter add dev vnet0 parent ffff: protocol all prio 1 u32 match u32 0 0 "
        "action mirred egress redirect dev ifb-vnet0",
        "qdisc add dev ifb-vnet0 root handle 1: htb default 1",
        "class add dev ifb-vnet0 parent 1: classid 1:1 htb rate 500kbps burst 64kb quantum 42",
    ]
    assert shaping is not None and shaping.ifb == "ifb-vnet0"
    assert [" ".join(a) for a in shaping.teardown] == [
        "qdisc del dev vnet0 root", "qdisc del dev vnet0 ingress"]


def test_macvtap_sees_the_device_as_the_guest_does() -> None:
    shaping = port_shaping("macvtap3", bw({"average": 1000}), tap=False, features=HERE)
    # inbound only: on a macvtap that is the device's ingress, so only the IFB path appears
    assert lines(shaping)[0] == "qdisc add dev macvtap3 handle ffff: ingress"
    assert not any("root handle 1: htb" in line and "dev macvtap3 " in line
                   for line in lines(shaping))
    outbound = port_shaping("macvtap3", bw(outbound={"average": 700}), tap=False, features=HERE)
    assert lines(outbound)[0] == "qdisc add dev macvtap3 root handle 1: htb default 1"
    assert outbound is not None and outbound.ifb is None


def test_a_floor_alone_shapes_nothing_on_the_device() -> None:
    assert port_shaping("vnet0", bw({"floor": 100}), tap=True, features=HERE) is None
    assert port_shaping("vnet0", None, tap=True, features=HERE) is None


def test_network_tree_on_the_bridge_has_room_for_floors() -> None:
    shaping = network_shaping(nat(bw({"average": 1000, "peak": 2000}, {"average": 300})), HERE)
    assert lines(shaping)[:3] == [
        "qdisc add dev virbr9 root handle 1: htb default 2",
        "class add dev virbr9 parent 1: classid 1:1 htb rate 1000kbps ceil 2000kbps quantum 85",
        "class add dev virbr9 parent 1:1 classid 1:2 htb rate 1000kbps ceil 2000kbps quantum 85",
    ]
    assert "ifb-virbr9" in lines(shaping)[4]


def test_sfq_and_police_are_used_only_where_the_kernel_has_them() -> None:
    with_sfq = lines(port_shaping("vnet0", bw({"average": 10}), tap=True, features=FULL))
    assert "qdisc add dev vnet0 parent 1:1 handle 2: sfq perturb 10" in with_sfq
    assert not any("sfq" in line for line in lines(
        port_shaping("vnet0", bw({"average": 10}), tap=True, features=HERE)))
    # no IFB but police: libvirt's policing filter
    police_only = TcFeatures(ifb=False, police=True)
    policed = lines(port_shaping("vnet0", bw(outbound={"average": 10}), tap=True,
                                 features=police_only))
    assert policed[-1] == ("filter add dev vnet0 parent ffff: protocol all u32 match u32 0 0 "
                           "police rate 10kbps burst 10kb mtu 64kb drop flowid :1")


def test_missing_kernel_features_are_named() -> None:
    with pytest.raises(HostError, match=r"IFB devices \(CONFIG_IFB\) nor the police action "
                                        r"\(CONFIG_NET_ACT_POLICE\)"):
        port_shaping("vnet0", bw(outbound={"average": 10}), tap=True,
                     features=TcFeatures(ifb=False))
    with pytest.raises(HostError, match=r"HTB qdisc \(CONFIG_NET_SCH_HTB\)"):
        port_shaping("vnet0", bw({"average": 10}), tap=True, features=TcFeatures(htb=False))


def test_quantum_and_ifb_names() -> None:
    assert quantum(1000) == "85" and quantum(1) == "1"
    assert ifb_name("vnet12") == "ifb-vnet12"
    long_name = ifb_name("averylongbridge")
    assert len(long_name) <= 15 and long_name.startswith("ifb")
    assert long_name != ifb_name("averylongbridgf")


# --- floors --------------------------------------------------------------------------------


def test_floor_needs_a_bridge_of_the_network_and_an_inbound_rate() -> None:
    # the port request is refused (not the host: virtnetd answers 400, not 500)
    floor = bw({"floor": 100})
    with pytest.raises(PortError, match="'floor' is only supported for interface type "
                                        "'network' with forward type 'nat', 'route', 'open' "
                                        "or none"):
        check_floor(nat(bw({"average": 1000}), ForwardMode.VEPA), floor, "52:54:00:00:00:01", 0)
    with pytest.raises(PortError, match="network 'n' has no inbound QoS set"):
        check_floor(nat(bw(outbound={"average": 1000})), floor, "52:54:00:00:00:01", 0)
    assert check_floor(nat(bw({"average": 1000})), floor, "52:54:00:00:00:01", 0)
    assert not check_floor(nat(None), bw({"average": 5}), "52:54:00:00:00:01", 0)


def test_floors_may_not_overcommit_the_network() -> None:
    # not now, with the ports there are (virtnetd answers 409)
    net = nat(bw({"average": 1000}))
    assert check_floor(net, bw({"floor": 400}), "52:54:00:00:00:01", 600)
    with pytest.raises(InvalidOperationError, match="new combined inbound floor=1001 would "
                                                    "overcommit average=1000 on network 'n'"):
        check_floor(net, bw({"floor": 401}), "52:54:00:00:00:01", 600)
    peaked = nat(bw({"average": 1000, "peak": 1500}))
    assert check_floor(peaked, bw({"floor": 900}), "52:54:00:00:00:01", 600)
    with pytest.raises(InvalidOperationError, match="overcommit peak=1500"):
        check_floor(peaked, bw({"floor": 901}), "52:54:00:00:00:01", 600)


def test_rates_and_bursts_beyond_what_tc_can_set_are_refused() -> None:
    # libvirt's grammar takes 2^64 - 1; tc does not (found by the API fuzzer: a 500)
    most = bw({"average": 2**32 - 1, "peak": 2**32 - 1, "burst": (2**32 - 1) // 1024})
    assert port_shaping("vnet0", most, tap=True, features=HERE) is not None
    for rate in ({"average": 2**32}, {"average": 1, "peak": 2**64 - 1},
                 {"average": 1, "burst": 2**22}):
        with pytest.raises(BandwidthError, match=r"the inbound bandwidth of vnet0: \w+ \d+ "
                                                 r"(kB/s|KiB) is more than tc can set"):
            port_shaping("vnet0", bw(rate), tap=True, features=HERE)
        assert not isinstance(BandwidthError("x"), HostError)
    with pytest.raises(BandwidthError, match="port 52:54:00:00:00:01: floor 4294967296 kB/s"):
        check_floor(nat(bw({"average": 1000})), bw({"floor": 2**32}), "52:54:00:00:00:01", 0)


def test_floor_class_filter_and_default_class_rate() -> None:
    net = nat(bw({"average": 1000}))
    setup, teardown = floor_commands(net, 10, "52:54:00:7b:35:93", 300, None, 500, HERE)
    joined = [" ".join(argv) for argv in setup]
    assert joined[0] == ("class add dev virbr9 parent 1:1 classid 1:a htb rate 300kbps "
                         "ceil 1000kbps quantum 25")
    assert joined[1] == (
        "filter add dev virbr9 parent 1: protocol ip prio 2 handle 800::a u32 "
        "match u16 0x0800 0xffff at -2 match u32 0x007b3593 0xffffffff at -12 "
        "match u16 0x5254 0xffff at -14 flowid 1:a")
    # the default class keeps what the floors (500 with this one) leave
    assert joined[2].endswith("classid 1:2 htb rate 500kbps ceil 1000kbps quantum 85")
    assert " ".join(teardown[-1]).endswith("classid 1:2 htb rate 800kbps ceil 1000kbps "
                                           "quantum 85")


def test_class_ids_are_the_lowest_free_above_two() -> None:
    assert next_class_id(set()) == 3
    assert next_class_id({3, 4, 6}) == 5


# --- actions -------------------------------------------------------------------------------


def test_actions_round_trip_and_render() -> None:
    shaping = port_shaping("vnet0", bw({"average": 10}, {"average": 20}), tap=True,
                           features=HERE)
    assert shaping is not None
    action = ApplyShaping.of(shaping, "port x")
    again = Action.from_dict(action.to_dict())
    assert again == action
    assert action.commands()[:2] == ["ip link add ifb-vnet0 type ifb",
                                     "ip link set dev ifb-vnet0 up"]
    assert action.commands()[2].startswith("tc qdisc add dev vnet0 root")
    floor = PlugFloor(bridge="virbr9", class_id=3, mac="52:54:00:00:00:01", floor=5)
    assert Action.from_dict(floor.to_dict()).spec() == floor.spec()
    assert "guarantee 5 kB/s inbound" in floor.describe()


def test_features_round_trip() -> None:
    assert TcFeatures.from_dict(FULL.to_dict()) == FULL
    assert HERE.can_redirect and not TcFeatures(mirred=False).can_redirect
