"""Reading how a network reaches the host's interfaces and what its ports carry: <forward> (mode,
nat, interface pool, PCI addresses, pf), <bridge>, <portgroup>, and the <bandwidth>, <vlan> and
<virtualport> elements a network, a portgroup and a port share.
"""

from __future__ import annotations

from virtnet.ids import portgroup_name_problem
from virtnet.spec.model import (
    Bandwidth,
    BandwidthRate,
    Bridge,
    Forward,
    ForwardDriverName,
    ForwardInterface,
    ForwardMode,
    ForwardPf,
    MacTableManager,
    NativeVlanMode,
    NatRange,
    PciAddress,
    PortGroup,
    VirtualPort,
    VirtualPortType,
    Vlan,
    VlanTag,
)
from virtnet.spec.xml.document import Element
from virtnet.spec.xml.parse_common import (
    UINT_MAX,
    ULLONG_MAX,
    Kids,
    fail,
    parse_c_uint,
    parse_enum,
    parse_ipv4,
    parse_uint,
    parse_uuid,
    uint_attr,
    yes_no,
    yes_no_anycase,
)

PROFILE_ID_MAX = 39  # the kernel's IFLA_VF_PORT_PROFILE_MAX is 40 bytes with the NUL


def parse_bandwidth(el: Element, path: str, allow_floor: bool = False) -> Bandwidth | None:
    """<bandwidth>: at most one <inbound> and one <outbound>. Returns None when neither is
    given (libvirt then drops the element). 'floor' is only accepted where ``allow_floor``."""
    if el.get("classID") is not None:
        fail(el, f"{path}/@classID", "classID is not allowed on <bandwidth> here")
    kids = Kids(el, path)
    result = Bandwidth()
    for direction in ("inbound", "outbound"):
        found = kids.one(direction)
        if found is None:
            continue
        child, child_path = found
        rate = _parse_rate(child, child_path)
        if rate.floor is not None:
            if direction == "outbound":
                fail(child, f"{child_path}/@floor", "'floor' is allowed only in <inbound>")
            if not allow_floor:
                fail(child, f"{child_path}/@floor",
                     "'floor' is not supported in a network's or portgroup's <bandwidth>")
        setattr(result, direction, rate)
    if result.inbound is None and result.outbound is None:
        return None
    return result


def _parse_rate(el: Element, path: str) -> BandwidthRate:
    values = {
        name: uint_attr(el, path, name, maximum=ULLONG_MAX)
        for name in ("average", "peak", "burst", "floor")
    }
    if values["average"] is None and values["floor"] is None:
        fail(el, path, f"<{el.tag}> needs an 'average' or a 'floor' attribute")
    if values["average"] is None and (values["peak"] is not None or values["burst"] is not None):
        fail(el, path, "'peak' and 'burst' require an 'average' attribute")
    return BandwidthRate(**values)


def parse_vlan(el: Element, path: str) -> Vlan:
    kids = Kids(el, path)
    tags = kids.many("tag")
    if not tags:
        fail(el, path, "<vlan> needs at least one <tag id='N'/>")
    vlan = Vlan()
    native_seen = False
    for tag_el, tag_path in tags:
        id_value = tag_el.get("id")
        if id_value is None:
            fail(tag_el, tag_path, "missing required attribute 'id' in <tag>")
        tag_id = parse_uint(tag_el, f"{tag_path}/@id", "id", id_value, maximum=4095,
                            what="vlan tag id")
        mode_value = tag_el.get("nativeMode")
        mode = None
        if mode_value is not None:
            mode = parse_enum(tag_el, f"{tag_path}/@nativeMode", "nativeMode", NativeVlanMode,
                              mode_value, refused=(NativeVlanMode.DEFAULT,))
            if native_seen:
                fail(tag_el, f"{tag_path}/@nativeMode", "duplicate native vlan setting")
            native_seen = True
        vlan.tags.append(VlanTag(id=tag_id, native_mode=mode))
    trunk = el.get("trunk")
    if trunk:
        lowered = trunk.lower()
        if lowered == "yes":
            vlan.trunk = True
        elif lowered == "no":
            if len(vlan.tags) > 1:
                fail(el, f"{path}/@trunk", f"trunk='{trunk}' is invalid: more than one vlan "
                     "tag requires trunk='yes'")
            if native_seen:
                fail(el, f"{path}/@trunk", "trunk='no' is not allowed with a native vlan")
            vlan.trunk = False
        else:
            fail(el, f"{path}/@trunk", f"invalid trunk '{trunk}': expected 'yes' or 'no'")
    return vlan


def parse_virtualport(el: Element, path: str, require_type: bool) -> VirtualPort:
    port = VirtualPort()
    type_value = el.get("type")
    if type_value is not None:
        port.type = parse_enum(el, f"{path}/@type", "virtualport type", VirtualPortType, type_value,
                               refused=(VirtualPortType.NONE,))
    elif require_type:
        fail(el, path, "missing required attribute 'type' in <virtualport>")
    params = el.find("parameters")
    if params is not None:
        ppath = f"{path}/parameters"
        for name, attr, maximum in (
            ("manager_id", "managerid", 0xFF),
            ("type_id", "typeid", 0xFFFFFF),
            ("type_id_version", "typeidversion", 0xFF),
        ):
            value = params.get(attr)
            if value is not None:
                setattr(port, name, parse_c_uint(params, f"{ppath}/@{attr}", attr, value, maximum))
        instance = params.get("instanceid")
        if instance is not None:
            port.instance_id = parse_uuid(params, f"{ppath}/@instanceid", instance)
        profile = params.get("profileid")
        if profile is not None:
            if len(profile.encode()) > PROFILE_ID_MAX:
                fail(params, f"{ppath}/@profileid",
                     f"profileid '{profile}' is too long (at most {PROFILE_ID_MAX} bytes)")
            port.profile_id = profile or None
        interface = params.get("interfaceid")
        if interface is not None:
            port.interface_id = parse_uuid(params, f"{ppath}/@interfaceid", interface)
        _check_virtualport_extras(params, ppath, port)
    return port


def _check_virtualport_extras(el: Element, path: str, port: VirtualPort) -> None:
    allowed = {
        VirtualPortType.QBG: ("manager_id", "type_id", "type_id_version", "instance_id"),
        VirtualPortType.QBH: ("profile_id",),
        VirtualPortType.OPENVSWITCH: ("profile_id", "interface_id"),
    }
    if port.type not in allowed:
        return
    attr_names = {
        "manager_id": "managerid", "type_id": "typeid", "type_id_version": "typeidversion",
        "instance_id": "instanceid", "profile_id": "profileid", "interface_id": "interfaceid",
    }
    for field_name, attr in attr_names.items():
        if getattr(port, field_name) is not None and field_name not in allowed[port.type]:
            fail(el, f"{path}/@{attr}",
                 f"'{attr}' is not supported in <virtualport type='{port.type.value}'>")


def parse_forward_interface(el: Element, path: str) -> ForwardInterface:
    dev = el.get("dev")
    if not dev:
        fail(el, path, "missing required attribute 'dev' in <forward> <interface>")
    return ForwardInterface(dev=dev)


def _parse_pci_address(el: Element, path: str) -> PciAddress:
    type_value = el.get("type")
    if type_value is None:
        fail(el, path, "missing required attribute 'type' in <forward> <address>")
    if type_value != "pci":
        fail(el, f"{path}/@type", f"unsupported address type '{type_value}': only 'pci' is "
             "supported")
    fields = {}
    for name, maximum in (("domain", UINT_MAX), ("bus", 0xFF), ("slot", 0x1F), ("function", 7)):
        value = el.get(name)
        fields[name] = (
            parse_c_uint(el, f"{path}/@{name}", name, value, maximum) if value is not None else 0
        )
    address = PciAddress(**fields)
    if not (address.domain or address.bus or address.slot):
        fail(el, path, "invalid PCI address 0000:00:00: at least one of domain, bus or slot "
             "must be non-zero")
    return address


def _parse_nat(el: Element, path: str) -> NatRange:
    nat = NatRange(ipv6=yes_no(el, path, "ipv6"))
    kids = Kids(el, path)
    found = kids.one("address")
    if found is not None:
        addr_el, addr_path = found
        start = addr_el.get("start")
        end = addr_el.get("end")
        if start is None:
            fail(addr_el, addr_path, "missing required attribute 'start' in <nat> <address>")
        if end is None:
            fail(addr_el, addr_path, "missing required attribute 'end' in <nat> <address>")
        nat.address_start = parse_ipv4(addr_el, f"{addr_path}/@start", "start", start)
        nat.address_end = parse_ipv4(addr_el, f"{addr_path}/@end", "end", end)
        if int(nat.address_start) > int(nat.address_end):
            fail(addr_el, addr_path, f"NAT address start '{start}' is after its end '{end}'")
    found = kids.one("port")
    if found is not None:
        port_el, port_path = found
        start = port_el.get("start") or None
        end = port_el.get("end") or None
        if start is None:
            fail(port_el, port_path, "missing required attribute 'start' in <nat> <port>")
        if end is None:
            fail(port_el, port_path, "missing required attribute 'end' in <nat> <port>")
        nat.port_start = parse_uint(port_el, f"{port_path}/@start", "start", start,
                                    maximum=65535, what="NAT port start")
        nat.port_end = parse_uint(port_el, f"{port_path}/@end", "end", end, maximum=65535,
                                  what="NAT port end")
        if nat.port_end < nat.port_start:
            fail(port_el, port_path, f"NAT port end '{end}' is below its start '{start}'")
    return nat


def parse_forward(el: Element, path: str) -> Forward | None:
    mode_value = el.get("mode") or None
    mode = ForwardMode.NAT
    if mode_value is not None:
        mode = parse_enum(el, f"{path}/@mode", "forward mode", ForwardMode, mode_value)
    forward = Forward(mode=mode)
    kids = Kids(el, path)
    forward.managed = bool(yes_no_anycase(el, path, "managed"))
    driver = kids.one("driver")
    if driver is not None:
        name = driver[0].get("name") or None
        if name is not None:
            forward.driver = parse_enum(driver[0], f"{driver[1]}/@name", "forward driver name",
                                        ForwardDriverName, name,
                                        refused=(ForwardDriverName.DEFAULT,))
    interfaces = kids.many("interface")
    addresses = kids.many("address")
    pfs = kids.many("pf")
    found = kids.one("nat")
    if found is not None:
        if mode is not ForwardMode.NAT:
            fail(found[0], found[1], f"<nat> is only allowed with forward mode='nat', not "
                 f"'{mode.value}'")
        forward.nat = _parse_nat(*found)
    dev = el.get("dev") or None
    if dev is not None and (addresses or pfs):
        fail(el, f"{path}/@dev", f"forward dev='{dev}' cannot be combined with <address> or "
             "<pf> elements")
    if addresses and interfaces:
        fail(addresses[0][0], addresses[0][1], "<forward> cannot list both <interface> and "
             "<address> elements")
    if len(pfs) > 1:
        fail(pfs[1][0], pfs[1][1], "only one <pf> element is allowed in <forward>")
    forward.dev = dev
    if dev is not None:
        forward.interfaces.append(ForwardInterface(dev=dev))
    for index, (child, child_path) in enumerate(interfaces):
        interface = parse_forward_interface(child, child_path)
        if index == 0 and dev is not None:
            # <forward dev='x'> names the first pool interface; if listed it must match
            if interface.dev != dev:
                fail(child, f"{child_path}/@dev", f"<forward dev='{dev}'> must match the "
                     f"first <interface dev='{interface.dev}'/>")
            continue
        forward.interfaces.append(interface)
    forward.addresses = [_parse_pci_address(c, p) for c, p in addresses]
    for child, child_path in pfs:
        pf_dev = child.get("dev")
        if not pf_dev:
            fail(child, child_path, "missing required attribute 'dev' in <pf>")
        forward.pfs.append(ForwardPf(dev=pf_dev))
    if mode is ForwardMode.NONE:
        return None  # an explicit mode='none' is the isolated network; libvirt never shows it
    return forward


def parse_portgroup(el: Element, path: str) -> PortGroup:
    name = el.get("name") or None
    if name is None:
        fail(el, path, "missing required attribute 'name' in <portgroup>")
    problem = portgroup_name_problem(name)
    if problem is not None:  # read back from a file, the attribute would not be the same
        fail(el, f"{path}/@name", problem)
    group = PortGroup(name=name)
    group.default = bool(yes_no_anycase(el, path, "default"))
    group.trust_guest_rx_filters = yes_no(el, path, "trustGuestRxFilters")
    kids = Kids(el, path)
    found = kids.one("virtualport")
    if found is not None:
        group.virtualport = parse_virtualport(*found, require_type=False)
    found = kids.one("bandwidth")
    if found is not None:
        group.bandwidth = parse_bandwidth(*found, allow_floor=False)
    found = kids.one("vlan")
    if found is not None:
        group.vlan = parse_vlan(*found)
    return group


def parse_bridge(el: Element, path: str) -> Bridge:
    bridge = Bridge(name=el.get("name") or None, zone=el.get("zone") or None)
    stp = el.get("stp") or None
    if stp is not None:
        if stp not in ("on", "off"):
            fail(el, f"{path}/@stp", f"invalid stp '{stp}': expected 'on' or 'off'")
        bridge.stp = stp == "on"
    delay = el.get("delay") or None
    if delay is not None:
        bridge.delay = parse_uint(el, f"{path}/@delay", "delay", delay, maximum=2**63 - 1,
                                  what="bridge delay")
    manager = el.get("macTableManager") or None
    if manager is not None:
        bridge.mac_table_manager = parse_enum(el, f"{path}/@macTableManager", "macTableManager",
                                              MacTableManager, manager,
                                              refused=(MacTableManager.DEFAULT,))
    return bridge
