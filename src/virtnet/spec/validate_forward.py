"""The definition rules of how a network reaches the host: <forward> (mode, NAT, device pools),
<bridge>, vlans and portgroups, <bandwidth> and <virtualport>."""

from __future__ import annotations

from virtnet.spec.model import (
    Bandwidth,
    BandwidthRate,
    Forward,
    ForwardDriverName,
    ForwardMode,
    NativeVlanMode,
    NetworkFamily,
    VirtualPort,
    VirtualPortType,
    Vlan,
)
from virtnet.spec.validate_base import (
    UUID_RE,
    Scan,
    control_char,
    describe,
    ifname_problem,
)

MAX_VLAN_ID = 4095
PROFILE_ID_MAX = 39  # IFLA_VF_PORT_PROFILE_MAX (40) minus the NUL


# --- forward, bridge --------------------------------------------------------------------


def check_forward(scan: Scan) -> None:
    forward = scan.net.forward
    if forward is None:
        return
    mode = forward.mode
    path = "/network/forward"
    if forward.driver is ForwardDriverName.DEFAULT:
        scan.add(f"{path}/driver", "default",
                 "forward driver name='default' is not allowed: use 'kvm' or 'vfio'")
    check_nat(scan, forward, path)
    pool = [iface.dev for iface in forward.interfaces]
    if forward.dev is not None:
        reason = ifname_problem(forward.dev)
        if reason is not None:
            scan.add(path, forward.dev, f"forward dev '{forward.dev}' {reason}: not a valid "
                     "interface name")
        if pool and pool[0] != forward.dev:
            scan.add(f"{path}/interface[1]", pool[0],
                     f"<forward dev='{forward.dev}'> must match the first "
                     f"<interface dev='{pool[0]}'/>")
        if forward.addresses or forward.pfs:
            scan.add(path, forward.dev, f"forward dev='{forward.dev}' cannot be combined "
                     "with <address> or <pf> elements")
        if not pool:
            pool = [forward.dev]
    seen: set[str] = set()
    for index, iface in enumerate(forward.interfaces, start=1):
        iface_path = f"{path}/interface[{index}]"
        if iface.dev in seen:
            scan.add(iface_path, iface.dev,
                     f"interface '{iface.dev}' is listed more than once")
        seen.add(iface.dev)
        if iface.dev != forward.dev:
            reason = ifname_problem(iface.dev)
            if reason is not None:
                scan.add(iface_path, iface.dev, f"forward interface '{iface.dev}' {reason}: "
                         "not a valid interface name")
    seen_pci: set[tuple[int, int, int, int]] = set()
    for index, address in enumerate(forward.addresses, start=1):
        address_path = f"{path}/address[{index}]"
        key = (address.domain, address.bus, address.slot, address.function)
        if key in seen_pci:
            scan.add(address_path, str(address),
                     f"PCI device '{address}' is listed more than once")
        seen_pci.add(key)
        for name, maximum in (("domain", 0xFFFFFFFF), ("bus", 0xFF), ("slot", 0x1F),
                              ("function", 7)):
            value = getattr(address, name)
            if not 0 <= value <= maximum:
                scan.add(address_path, f"{value:#x}", f"PCI {name} '{value:#x}' is outside "
                         f"0..{maximum:#x}")
    if len(forward.pfs) > 1:
        scan.add(f"{path}/pf[2]", forward.pfs[1].dev,
                 f"a second <pf dev='{forward.pfs[1].dev}'/>: only one <pf> is allowed")
    for index, pf in enumerate(forward.pfs, start=1):
        reason = ifname_problem(pf.dev)
        if reason is not None:
            scan.add(f"{path}/pf[{index}]", pf.dev,
                     f"pf dev '{pf.dev}' {reason}: not a valid interface name")
    kinds = [kind for kind, present in (("<interface>", bool(forward.interfaces)),
                                        ("<address>", bool(forward.addresses)),
                                        ("<pf>", bool(forward.pfs))) if present]
    if len(kinds) > 1:
        scan.add(path, " and ".join(kinds),
                 f"<forward> lists {' and '.join(kinds)} elements; they are mutually "
                 "exclusive", at_define=True)
    if scan.family is NetworkFamily.HOSTDEV and pool:
        scan.add(path, pool[0], f"forward mode='hostdev' lists the network device "
                 f"'{pool[0]}': hostdev pools are given by PCI <address> only",
                 at_define=True)
    if scan.family is not NetworkFamily.HOSTDEV and forward.addresses:
        scan.add(f"{path}/address[1]", str(forward.addresses[0]),
                 f"PCI device '{forward.addresses[0]}' in the pool of forward mode="
                 f"'{mode.value}': PCI addresses are only for mode='hostdev'",
                 at_define=True)
    if mode in (ForwardMode.NAT, ForwardMode.ROUTE, ForwardMode.OPEN):
        if mode is ForwardMode.OPEN and pool:
            scan.add(path, pool[0], f"forward dev '{pool[0]}' is not allowed with forward "
                     "mode='open', which places no restriction on where traffic goes")
        elif len(pool) > 1:
            scan.add(path, ", ".join(pool),
                     f"forward mode='{mode.value}' supports one forward interface, not "
                     f"{len(pool)} ({', '.join(pool)})")
    bridge_name = scan.net.bridge_name
    if not scan.own_bridge:
        if bridge_name is not None and (pool or forward.pfs):
            scan.add(path, bridge_name, f"forward mode='{mode.value}' can use bridge "
                     f"'{bridge_name}' or a forward device pool, not both")


def check_nat(scan: Scan, forward: Forward, path: str) -> None:
    nat = forward.nat
    if nat is None:
        return
    nat_path = f"{path}/nat"
    if forward.mode is not ForwardMode.NAT:
        scan.add(nat_path, forward.mode.value,
                 f"<nat> is only allowed with forward mode='nat', not '{forward.mode.value}'")
    start, end = nat.address_start, nat.address_end
    if (start is None) != (end is None):
        given = start if start is not None else end
        scan.add(f"{nat_path}/address", given,
                 f"NAT address range gives only {'start' if end is None else 'end'} "
                 f"'{given}': both start and end are required")
    elif start is not None and end is not None and int(start) > int(end):
        scan.add(f"{nat_path}/address", f"{start} - {end}",
                 f"NAT address range {start} - {end} is reversed")
    pstart, pend = nat.port_start, nat.port_end
    if (pstart is None) != (pend is None):
        given = pstart if pstart is not None else pend
        scan.add(f"{nat_path}/port", given,
                 f"NAT port range gives only {'start' if pend is None else 'end'} "
                 f"'{given}': both start and end are required")
    elif pstart is not None and pend is not None:
        for name, value in (("start", pstart), ("end", pend)):
            if not 0 <= value <= 65535:
                scan.add(f"{nat_path}/port", value,
                         f"NAT port {name} '{value}' is outside 0..65535")
        if pend < pstart:
            scan.add(f"{nat_path}/port", f"{pstart}-{pend}",
                     f"NAT port range {pstart}-{pend} is reversed")


def check_bridge(scan: Scan) -> None:
    bridge = scan.net.bridge
    mode = scan.mode.value
    if bridge is None:
        return
    path = "/network/bridge"
    if bridge.name is not None:
        # '%d' is a template libvirt fills with a free number at define time
        concrete = bridge.name.replace("%d", "0")
        reason = ifname_problem(concrete)
        if reason is not None:
            scan.add(path, bridge.name,
                     f"bridge name '{bridge.name}' {reason}: not a valid interface name")
    # macvtap and VFs: guests get host devices, no bridge of ours nor the host's
    devices = scan.family in (NetworkFamily.DIRECT, NetworkFamily.HOSTDEV)
    if devices and bridge.name is not None:
        scan.add(path, bridge.name,
                 f"bridge name '{bridge.name}' is not allowed with forward "
                 f"mode='{mode}'")
    # mode 'bridge' without a bridge name is macvtap too, yet may keep the attribute
    if devices and scan.mode is not ForwardMode.BRIDGE \
            and bridge.mac_table_manager is not None:
        scan.add(path, bridge.mac_table_manager.value,
                 f"macTableManager='{bridge.mac_table_manager.value}' is not allowed "
                 f"with forward mode='{mode}'")
    if not scan.own_bridge:
        if bridge.delay:
            scan.add(path, bridge.delay,
                     f"bridge delay='{bridge.delay}' is only allowed with an isolated, "
                     f"nat, route or open network, not forward mode='{mode}'")
        if not bridge.stp:
            scan.add(path, "off",
                     f"bridge stp='off' is only allowed with an isolated, nat, route or "
                     f"open network, not forward mode='{mode}'")
        if bridge.zone is not None:
            scan.add(path, bridge.zone,
                     f"bridge zone='{bridge.zone}' is only allowed with an isolated, nat, "
                     f"route or open network, not forward mode='{mode}'")
    if bridge.zone is not None and control_char(bridge.zone) is not None:
        scan.add(path, bridge.zone, f"bridge zone {bridge.zone!r} contains a control "
                 "character")


# --- portgroups and vlans ---------------------------------------------------------------


def check_vlans_and_portgroups(scan: Scan) -> None:
    net = scan.net
    if net.vlan is not None:
        check_vlan(scan, net.vlan, "/network/vlan")
    ovs_network = (net.virtualport is not None
                   and net.virtualport.type is VirtualPortType.OPENVSWITCH)
    host_bridge = scan.family is NetworkFamily.HOST_BRIDGE
    # Transparent vlans need a switch that tags: SR-IOV VFs, macvtap passthrough, Open
    # vSwitch, or (newer libvirt) a Linux host bridge.
    vlan_allowed = (
        scan.family is NetworkFamily.HOSTDEV or scan.mode is ForwardMode.PASSTHROUGH
        or (scan.mode is ForwardMode.BRIDGE and ovs_network)
        or (host_bridge and net.virtualport is None)
    )
    vlan_used = net.vlan is not None and bool(net.vlan.tags)
    bad_vlan_index: int | None = None  # first portgroup whose vlan cannot be tagged
    seen_names: dict[str, int] = {}
    default_index: int | None = None
    for index, group in enumerate(net.portgroups, start=1):
        path = f"/network/portgroup[{index}]"
        if not group.name:
            scan.add(path, group.name, "a portgroup needs a non-empty name")
        elif group.name in seen_names:
            scan.add(path, group.name,
                     f"portgroup name '{group.name}' is already used by "
                     f"portgroup[{seen_names[group.name]}]", at_define=True)
        else:
            seen_names[group.name] = index
        if group.default:
            if default_index is not None:
                first = net.portgroups[default_index - 1].name
                scan.add(path, group.name,
                         f"portgroup '{group.name}' is marked default, but portgroup "
                         f"'{first}' already is; only one default is allowed",
                         at_define=True)
            else:
                default_index = index
        if group.vlan is not None:
            check_vlan(scan, group.vlan, f"{path}/vlan")
        if vlan_used or (group.vlan is not None and group.vlan.tags):
            if group.virtualport is not None:
                if (scan.mode is not ForwardMode.BRIDGE
                        or group.virtualport.type is not VirtualPortType.OPENVSWITCH):
                    bad_vlan_index = bad_vlan_index or index
            elif not vlan_allowed:
                bad_vlan_index = bad_vlan_index or index
        if group.virtualport is not None:
            check_virtualport(scan, group.virtualport, f"{path}/virtualport", False)
        if group.bandwidth is not None:
            check_bandwidth(scan, group.bandwidth, f"{path}/bandwidth",
                            f"portgroup '{group.name}'")
    if bad_vlan_index is not None:
        port = net.portgroups[bad_vlan_index - 1].virtualport
        kind = "" if port is None else (
            f", {port.type.value if port.type else 'untyped'} virtualport")
        scan.add(f"/network/portgroup[{bad_vlan_index}]", scan.mode.value,
                 f"a <vlan> applies to this portgroup, but its connection type (forward "
                 f"mode='{scan.mode.value}'{kind}) does not support vlan tagging",
                 at_define=True)
    elif vlan_used and not vlan_allowed and default_index is None:
        # with a default portgroup every port gets one, so the loop above decided
        scan.add("/network/vlan", scan.mode.value,
                 f"<vlan> is not supported with forward mode='{scan.mode.value}'"
                 + ("" if scan.mode is not ForwardMode.BRIDGE else
                    " without a host bridge or an openvswitch virtualport"),
                 at_define=True)


def check_vlan(scan: Scan, vlan: Vlan, path: str) -> None:
    if not vlan.tags:
        scan.add(path, None, "a <vlan> needs at least one <tag id='N'/>")
    native = 0
    for index, tag in enumerate(vlan.tags, start=1):
        tag_path = f"{path}/tag[{index}]"
        if not 0 <= tag.id <= MAX_VLAN_ID:
            scan.add(tag_path, tag.id, f"vlan tag id '{tag.id}' is outside 0..{MAX_VLAN_ID}")
        if tag.native_mode is not None:
            native += 1
            if tag.native_mode is NativeVlanMode.DEFAULT:
                scan.add(tag_path, tag.native_mode.value,
                         "nativeMode='default' is not allowed: use 'tagged' or 'untagged'")
            if native == 2:
                scan.add(tag_path, tag.id,
                         f"vlan tag '{tag.id}' is a second native vlan; only one is allowed")
    if vlan.trunk is False:
        if len(vlan.tags) > 1:
            scan.add(path, "no", f"trunk='no' with {len(vlan.tags)} vlan tags: more than "
                     "one tag requires trunk='yes'")
        if native:
            scan.add(path, "no", "trunk='no' is not allowed with a native vlan")


# --- bandwidth --------------------------------------------------------------------------


def check_network_bandwidth(scan: Scan) -> None:
    if scan.net.bandwidth is not None:
        check_bandwidth(scan, scan.net.bandwidth, "/network/bandwidth", "the network")


def _bandwidth_allowed(scan: Scan) -> bool:
    return scan.family.shapes_bridge


def check_bandwidth(scan: Scan, bandwidth: Bandwidth, path: str, owner: str) -> None:
    if not _bandwidth_allowed(scan):
        scan.add(path, scan.mode.value,
                 f"<bandwidth> of {owner} is not supported with forward "
                 f"mode='{scan.mode.value}'"
                 + (" without a host bridge" if scan.mode is ForwardMode.BRIDGE else ""),
                 at_define=True)
    for direction in ("inbound", "outbound"):
        rate: BandwidthRate | None = getattr(bandwidth, direction)
        if rate is not None:
            check_rate(scan, rate, f"{path}/{direction}", direction)


def check_rate(scan: Scan, rate: BandwidthRate, path: str, direction: str) -> None:
    for name in ("average", "peak", "burst", "floor"):
        value = getattr(rate, name)
        if value is not None and value < 0:
            scan.add(path, value, f"{direction} {name} '{value}' is negative")
    if rate.average is None and rate.floor is None:
        scan.add(path, None, f"<{direction}> needs an 'average' (or a 'floor')")
    for name in ("peak", "burst"):
        value = getattr(rate, name)
        if rate.average is None and value is not None:
            scan.add(path, value, f"<{direction}> {name} '{value}' requires an 'average'")
    if rate.floor:
        if direction == "outbound":
            scan.add(path, rate.floor,
                     f"floor '{rate.floor}' is allowed only in <inbound>, not <outbound>")
        else:
            # a floor is a guarantee for one interface, shared out of the network's average
            scan.add(path, rate.floor,
                     f"floor '{rate.floor}' is not supported in a network's or portgroup's "
                     "<bandwidth> (only on an interface)")


# --- virtualport ------------------------------------------------------------------------


def check_virtualport(scan: Scan, port: VirtualPort, path: str, network_level: bool) -> None:
    if port.type is None and network_level:
        scan.add(path, None, "the network's <virtualport> needs a 'type'")
    if port.type is VirtualPortType.NONE:
        scan.add(path, "none", "virtualport type='none' is not a virtualport type: omit "
                 "the attribute instead")
    params = f"{path}/parameters"
    for name, attr, maximum in (("manager_id", "managerid", 0xFF),
                                ("type_id", "typeid", 0xFFFFFF),
                                ("type_id_version", "typeidversion", 0xFF)):
        value = getattr(port, name)
        if value is not None and not 0 <= value <= maximum:
            scan.add(params, value, f"{attr} '{value}' is outside 0..{maximum:#x}")
    for name, attr in (("instance_id", "instanceid"), ("interface_id", "interfaceid")):
        value = getattr(port, name)
        if value is not None and not UUID_RE.match(value):
            scan.add(params, value, f"{attr} '{value}' is not a UUID")
    if port.profile_id is not None:
        if len(port.profile_id.encode()) > PROFILE_ID_MAX:
            scan.add(params, port.profile_id, f"profileid '{port.profile_id}' is longer "
                     f"than {PROFILE_ID_MAX} bytes")
        bad = control_char(port.profile_id)
        if bad is not None:
            scan.add(params, port.profile_id,
                     f"profileid {port.profile_id!r} contains {describe(bad)}")
    allowed = {
        VirtualPortType.QBG: ("manager_id", "type_id", "type_id_version", "instance_id"),
        VirtualPortType.QBH: ("profile_id",),
        VirtualPortType.OPENVSWITCH: ("profile_id", "interface_id"),
    }
    if port.type in allowed:
        for name, attr in (("manager_id", "managerid"), ("type_id", "typeid"),
                           ("type_id_version", "typeidversion"),
                           ("instance_id", "instanceid"), ("profile_id", "profileid"),
                           ("interface_id", "interfaceid")):
            value = getattr(port, name)
            if value is not None and name not in allowed[port.type]:
                scan.add(params, value, f"{attr} '{value}' is not supported in "
                         f"<virtualport type='{port.type.value}'>")
