"""Port allocation as libvirt's networkAllocatePort does it (pure), records, and port plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtnet.facts import TcFeatures
from virtnet.errors import HostError, InvalidOperationError
from virtnet.spec.model import (
    Bandwidth,
    BandwidthRate,
    Bridge,
    Forward,
    ForwardDriverName,
    ForwardInterface,
    ForwardMode,
    MacTableManager,
    Network,
    PciAddress,
    PortGroup,
    VirtualPort,
    VirtualPortType,
    Vlan,
    VlanTag,
)
from virtnet.errors import PortError
from virtnet.plan.ports import (
    PortRequest,
    allocate,
    merge_virtualports,
    next_device_name,
    normalize_mac,
    parse_rate_option,
    plan_port,
    resolve_portgroup,
)
from virtnet.service.ports import PortManager, port_summary
from virtnet.spec.portdef import MacvtapMode, PlugType, PoolUsage, PortDef, tap_mac
from virtnet.store.ports import PortRecord, usage_of

MAC = "52:54:00:7b:35:93"
UUID = "5d744f21-ba4a-4d6e-bdb2-30a35ff3207d"


def rate(**values: int) -> BandwidthRate:
    return BandwidthRate(**values)


def nat_net(**extra: object) -> Network:
    net = Network(name="n", forward=Forward(mode=ForwardMode.NAT),
                  bridge=Bridge(name="virbr9", mac_table_manager=MacTableManager.KERNEL))
    for key, value in extra.items():
        setattr(net, key, value)
    return net


def direct_net(mode: ForwardMode, devices: list[str], **extra: object) -> Network:
    forward = Forward(mode=mode, dev=devices[0] if devices else None,
                      interfaces=[ForwardInterface(dev=d) for d in devices])
    net = Network(name="d", forward=forward)
    for key, value in extra.items():
        setattr(net, key, value)
    return net


def hostdev_net(addresses: list[PciAddress], **extra: object) -> Network:
    forward = Forward(mode=ForwardMode.HOSTDEV, managed=True, driver=ForwardDriverName.VFIO,
                      addresses=addresses)
    net = Network(name="h", forward=forward)
    for key, value in extra.items():
        setattr(net, key, value)
    return net


def alloc(net: Network, request: PortRequest | None = None, usage: PoolUsage | None = None,
          pool: list[str] | list[PciAddress] | None = None) -> PortDef:
    if pool is None and net.forward is not None:
        pool = [i.dev for i in net.forward.interfaces] or list(net.forward.addresses)
    return allocate(net, request or PortRequest(mac=MAC), usage or PoolUsage(),
                    port_uuid=UUID, pool=pool, new_uuid=lambda: "0" * 8 + "-0000-4000-8000-"
                    + "0" * 12)


# --- values ----------------------------------------------------------------------------------


def test_macs() -> None:
    assert normalize_mac(" 52:54:00:AB:1:2 ") == "52:54:00:ab:01:02"
    assert tap_mac("52:54:00:ab:01:02") == "fe:54:00:ab:01:02"
    for bad in ("52:54:00:ab:01", "52:54:00:ab:01:2g", "52:54:00:ab:01:123"):
        with pytest.raises(PortError, match="invalid MAC address"):
            normalize_mac(bad)
    with pytest.raises(PortError, match="is multicast"):
        normalize_mac("01:00:5e:00:00:01")


def test_rate_options_follow_virsh() -> None:
    assert parse_rate_option("--inbound", "1000,2000,64,300", floor=True) == rate(
        average=1000, peak=2000, burst=64, floor=300)
    assert parse_rate_option("--inbound", ",,,300", floor=True) == rate(floor=300)
    with pytest.raises(PortError, match="at most 3 values"):
        parse_rate_option("--outbound", "1,2,3,4", floor=False)
    with pytest.raises(PortError, match="needs an average"):
        parse_rate_option("--outbound", ",5", floor=False)
    with pytest.raises(PortError, match="must be a positive integer"):
        parse_rate_option("--outbound", "0", floor=False)


# --- portgroups and merges ---------------------------------------------------------------------


def test_portgroup_requested_else_default_else_none() -> None:
    groups = [PortGroup(name="a"), PortGroup(name="b", default=True)]
    net = nat_net(portgroups=groups)
    assert resolve_portgroup(net, "a") is groups[0]
    assert resolve_portgroup(net, None) is groups[1]
    assert resolve_portgroup(nat_net(portgroups=[PortGroup(name="a")]), None) is None
    with pytest.raises(PortError, match="network 'n' has no portgroup 'c' \\(portgroups: "
                                        "'a', 'b'\\)"):
        resolve_portgroup(net, "c")


def test_bandwidth_from_the_port_else_the_portgroup_never_the_network() -> None:
    group_bw = Bandwidth(inbound=rate(average=100))
    net = nat_net(bandwidth=Bandwidth(inbound=rate(average=9999)),
                  portgroups=[PortGroup(name="g", default=True, bandwidth=group_bw)])
    assert alloc(net).bandwidth == group_bw
    own = Bandwidth(outbound=rate(average=5))
    assert alloc(net, PortRequest(mac=MAC, bandwidth=own)).bandwidth == own
    only_network = nat_net(bandwidth=Bandwidth(inbound=rate(average=9)))
    assert alloc(only_network).bandwidth is None


def test_vlan_trust_and_isolation_precedence() -> None:
    net_vlan, group_vlan, own_vlan = (Vlan(tags=[VlanTag(id=i)]) for i in (1, 2, 3))
    address = PciAddress(0, 3, 0x10, 1)
    net = hostdev_net([address], vlan=net_vlan, trust_guest_rx_filters=False,
                      portgroups=[PortGroup(name="g", vlan=group_vlan,
                                            trust_guest_rx_filters=True)])
    port = alloc(net)
    assert port.vlan == net_vlan and port.trust_guest_rx_filters is False
    port = alloc(net, PortRequest(mac=MAC, portgroup="g"))
    assert port.vlan == group_vlan and port.trust_guest_rx_filters is True
    port = alloc(net, PortRequest(mac=MAC, portgroup="g", vlan=own_vlan,
                                  trust_guest_rx_filters=False))
    assert port.vlan == own_vlan and port.trust_guest_rx_filters is False
    isolated = nat_net(port_isolated=True)
    assert alloc(isolated).isolated is True
    assert alloc(isolated, PortRequest(mac=MAC, isolated=False)).isolated is False


def test_virtualports_merge_as_libvirt_merges() -> None:
    qbg = VirtualPortType.QBG
    merged = merge_virtualports(VirtualPort(type=qbg, manager_id=1),
                                VirtualPort(type_id=7, profile_id="ignored-for-qbg"),
                                VirtualPort(type=qbg, type_id_version=2))
    assert merged == VirtualPort(type=qbg, manager_id=1, type_id=7, type_id_version=2)
    assert merge_virtualports(None, VirtualPort(), None) is None
    with pytest.raises(PortError, match="mismatched types \\(802.1Qbg and 802.1Qbh\\)"):
        merge_virtualports(VirtualPort(type=qbg), VirtualPort(type=VirtualPortType.QBH), None)
    with pytest.raises(PortError, match="mismatched managerids \\(1 and 2\\)"):
        merge_virtualports(VirtualPort(type=qbg, manager_id=1), None,
                           VirtualPort(type=qbg, manager_id=2))


def test_virtualport_completion_and_types_per_connection() -> None:
    qbg = VirtualPort(type=VirtualPortType.QBG, manager_id=1, type_id=2, type_id_version=3)
    port = alloc(direct_net(ForwardMode.VEPA, ["eth1"], virtualport=qbg))
    assert port.virtualport.instance_id == "00000000-0000-4000-8000-000000000000"
    with pytest.raises(PortError, match="missing typeid in <virtualport type='802.1Qbg'>"):
        alloc(direct_net(ForwardMode.VEPA, ["eth1"],
                         virtualport=VirtualPort(type=VirtualPortType.QBG, manager_id=1)))
    ovs = VirtualPort(type=VirtualPortType.OPENVSWITCH)
    with pytest.raises(PortError, match="not supported for network 'd' which uses a macvtap"):
        alloc(direct_net(ForwardMode.VEPA, ["eth1"], virtualport=ovs))
    with pytest.raises(PortError, match="not supported for network 'n' which uses IP "
                                        "forwarding"):
        alloc(nat_net(virtualport=qbg))


# --- plugs and pools -----------------------------------------------------------------------


def test_bridge_backed_networks_get_a_network_plug() -> None:
    port = alloc(nat_net())
    assert (port.plug_type, port.bridge, port.mac_table_manager) == (
        PlugType.NETWORK, "virbr9", MacTableManager.KERNEL)
    host_bridge = Network(name="hb", forward=Forward(mode=ForwardMode.BRIDGE),
                          bridge=Bridge(name="br0"))
    port = alloc(host_bridge)
    assert (port.plug_type, port.bridge) == (PlugType.BRIDGE, "br0")


def test_direct_ports_take_the_least_used_interface() -> None:
    net = direct_net(ForwardMode.BRIDGE, ["eth1", "eth2", "eth3"])
    usage = PoolUsage(by_dev={"eth1": 2, "eth2": 1, "eth3": 1})
    port = alloc(net, usage=usage)
    assert (port.plug_type, port.dev, port.mode) == (
        PlugType.DIRECT, "eth2", MacvtapMode.BRIDGE)
    assert alloc(net, usage=PoolUsage(by_dev={"eth2": 1})).dev == "eth1"


def test_passthrough_and_private_qbh_need_an_unused_interface() -> None:
    net = direct_net(ForwardMode.PASSTHROUGH, ["eth1", "eth2"])
    assert alloc(net, usage=PoolUsage(by_dev={"eth1": 1})).dev == "eth2"
    with pytest.raises(PortError, match="requires exclusive access to interfaces, but none "
                                        "are available"):
        alloc(net, usage=PoolUsage(by_dev={"eth1": 1, "eth2": 1}))
    qbh = VirtualPort(type=VirtualPortType.QBH, profile_id="p")
    private = direct_net(ForwardMode.PRIVATE, ["eth1", "eth2"], virtualport=qbh)
    assert alloc(private, usage=PoolUsage(by_dev={"eth1": 1})).dev == "eth2"
    shared = direct_net(ForwardMode.PRIVATE, ["eth1"])
    assert alloc(shared, usage=PoolUsage(by_dev={"eth1": 5})).dev == "eth1"


def test_direct_network_without_pool() -> None:
    with pytest.raises(PortError, match="has no forward dev and no interface pool"):
        alloc(direct_net(ForwardMode.VEPA, []), pool=[])


def test_hostdev_gives_each_port_its_own_vf() -> None:
    first, second = PciAddress(0, 3, 0x10, 1), PciAddress(0, 3, 0x10, 2)
    net = hostdev_net([first, second])
    port = alloc(net, usage=PoolUsage(by_address={str(first): 1}))
    assert (port.plug_type, port.address, port.managed, port.driver) == (
        PlugType.HOSTDEV_PCI, second, True, ForwardDriverName.VFIO)
    with pytest.raises(PortError, match="none are available"):
        alloc(net, usage=PoolUsage(by_address={str(first): 1, str(second): 1}))
    with pytest.raises(PortError, match="bandwidth settings are not supported for hostdev"):
        alloc(net, PortRequest(mac=MAC, bandwidth=Bandwidth(inbound=rate(average=1))))


def test_vlan_refusals_name_what_is_missing() -> None:
    tagged = Vlan(tags=[VlanTag(id=42)])
    with pytest.raises(HostError, match="not a virtual function \\(this host has no SR-IOV\\)"):
        alloc(direct_net(ForwardMode.PASSTHROUGH, ["eth1"], vlan=tagged))
    with pytest.raises(PortError, match="vlan tag not supported for this connection type"):
        alloc(nat_net(), PortRequest(mac=MAC, vlan=tagged))


def test_floors_get_class_ids_and_respect_the_network_rate() -> None:
    net = nat_net(bandwidth=Bandwidth(inbound=rate(average=1000)))
    request = PortRequest(mac=MAC, bandwidth=Bandwidth(inbound=rate(floor=300)))
    port = alloc(net, request, PoolUsage(class_ids={3}, floor_sum=600))
    assert port.class_id == 4
    with pytest.raises(InvalidOperationError, match="would overcommit average=1000"):
        alloc(net, request, PoolUsage(class_ids={3}, floor_sum=800))  # not now: 409


# --- records, usage, names -----------------------------------------------------------------


def test_usage_and_records() -> None:
    net = nat_net(bandwidth=Bandwidth(inbound=rate(average=1000)))
    floored = alloc(net, PortRequest(mac=MAC, bandwidth=Bandwidth(inbound=rate(floor=300))))
    direct = alloc(direct_net(ForwardMode.VEPA, ["eth1"]),
                   PortRequest(mac="52:54:00:00:00:02"))
    records = [PortRecord(network="n", port=floored, device="vnet0"),
               PortRecord(network="d", port=direct, device="macvtap0")]
    usage = usage_of(records)
    assert (usage.total, usage.by_dev, usage.floor_sum, usage.class_ids) == (
        2, {"eth1": 1}, 300, {3})
    data = records[0].to_dict()
    again = PortRecord.from_dict(data, "test")
    assert again == records[0]
    assert port_summary(records[1])["uplink"] == "eth1"


def test_a_mac_another_port_of_the_network_has_is_refused() -> None:
    """Two guests with one MAC take each other's frames (a bridge learns one port for it;
    macvtaps on one uplink steal each other's traffic); unicast only, as before."""
    for net in (nat_net(), direct_net(ForwardMode.BRIDGE, ["eth1"])):
        first = alloc(net)
        usage = usage_of([PortRecord(network=net.name, port=first, device="dev0")])
        for same in (MAC, MAC.upper(), " 52:54:00:7B:35:93"):
            with pytest.raises(PortError, match=f"network '{net.name}' already has a port "
                                                f"with MAC address {MAC} \\(port {UUID}\\)"):
                alloc(net, PortRequest(mac=same), usage)
        assert alloc(net, PortRequest(mac="52:54:00:7b:35:94"), usage).mac == \
            "52:54:00:7b:35:94"
        for multicast in ("01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01"):
            with pytest.raises(PortError, match="is multicast"):
                alloc(net, PortRequest(mac=multicast), usage)
        # the MAC is free again once its port went
        assert alloc(net, PortRequest(mac=MAC), usage_of([])).mac == MAC


def test_device_names_skip_what_is_taken() -> None:
    existing = {"macvtap1"}
    assert next_device_name("macvtap", {"macvtap0"}, existing.__contains__) == "macvtap2"
    assert next_device_name("vnet", set(), lambda _: False, start=5) == "vnet5"


# --- port plans ------------------------------------------------------------------------------


@pytest.fixture
def manager(tmp_path: Path) -> PortManager:
    from virtnet.service.engine import Engine
    from virtnet.paths import StatePaths

    return PortManager(Engine(StatePaths.under(tmp_path)), features=TcFeatures())


def test_port_plans(manager: PortManager) -> None:
    net = nat_net(bandwidth=Bandwidth(inbound=rate(average=1000)), mtu=9000)
    request = PortRequest(mac=MAC, bandwidth=Bandwidth(inbound=rate(average=500, floor=100)))
    port = alloc(net, request)
    plan = plan_port(net, port, "vnet4", usage=PoolUsage(), features=TcFeatures())
    assert [a.kind for a in plan.actions] == ["create-tap", "apply-shaping", "plug-floor"]
    assert plan.commands()[:2] == [
        "ip tuntap add dev vnet4 mode tap vnet_hdr user 0",
        "ip link set dev vnet4 address fe:54:00:7b:35:93 master virbr9 mtu 9000 up",
    ]
    passthrough = direct_net(ForwardMode.PASSTHROUGH, ["eth1"])
    plan = plan_port(passthrough, alloc(passthrough), "macvtap0", usage=PoolUsage(), features=TcFeatures())
    assert [a.kind for a in plan.actions] == ["set-uplink-mac", "create-macvtap"]
    assert plan.commands()[-2] == ("ip link add link eth1 name macvtap0 address "
                                   f"{MAC} type macvtap mode passthru")
    vfs = hostdev_net([PciAddress(0, 3, 0x10, 1)])
    plan = plan_port(vfs, alloc(vfs), None, usage=PoolUsage(), features=TcFeatures())
    assert [a.describe() for a in plan.actions] == [
        f"give the SR-IOV virtual function 0000:03:10.1 to the guest with MAC {MAC}"]
