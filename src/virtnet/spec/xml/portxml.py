"""libvirt's <networkport> XML: parse into :class:`~virtnet.spec.portdef.PortDef` and format back in
libvirt 9.0's exact layout (what ``virsh net-port-dumpxml`` prints).

The parser uses the same hardened document parser as network definitions and reads what
libvirt's reads (unknown elements are ignored, as libvirt's XPath-based parser does); every
value it does read must convert, or the whole port is refused with its element path.
Bandwidth, vlan and virtualport share their parsers and formatters with <network>; only the
port's ``classID`` and 'floor' differ.
"""

from __future__ import annotations

import copy

from virtnet.errors import XMLParseError
from virtnet.ids import portgroup_name_problem
from virtnet.spec.model import ForwardDriverName, MacTableManager, PciAddress
from virtnet.spec.portdef import (
    TAP_NAMESPACE,
    TAP_PREFIX,
    MacvtapMode,
    PlugType,
    PortDef,
    TapOptions,
    tap_options_problem,
)
from virtnet.spec.xml.document import Element, parse_fragment
from virtnet.spec.xml.format import (
    INDENT,
    escape,
    format_bandwidth,
    format_virtualport,
    format_vlan,
)
from virtnet.spec.xml.parse_common import parse_mac, parse_uuid
from virtnet.spec.xml.parse_forward import parse_bandwidth, parse_virtualport, parse_vlan

UINT_MAX = 2**32 - 1


def _fail(el: Element, path: str, message: str) -> XMLParseError:
    return XMLParseError(message, line=el.sourceline, path=path)


def _only(root: Element, name: str, path: str) -> Element | None:
    found = [child for child in root if child.tag == name]
    if len(found) > 1:
        raise _fail(found[1], f"{path}/{name}", f"<{name}> may appear only once")
    return found[0] if found else None


def _text_of(root: Element, name: str, path: str) -> tuple[str, Element] | None:
    el = _only(root, name, path)
    if el is None:
        return None
    return "".join(el.itertext()).strip(), el


def _tristate(el: Element, path: str, name: str) -> bool | None:
    value = el.get(name)
    if value is None:
        return None
    if value in ("yes", "no"):
        return value == "yes"
    raise _fail(el, f"{path}/@{name}", f"invalid value '{value}' for '{name}': expected "
                "'yes' or 'no'")


def _c_uint(el: Element, path: str, name: str, maximum: int) -> int:
    value = el.get(name)
    if value is None:
        return 0
    try:
        number = int(value, 16) if value.lower().startswith("0x") else int(value, 10)
    except ValueError:
        number = -1
    if number < 0 or number > maximum:
        raise _fail(el, f"{path}/@{name}", f"invalid PCI address {name} '{value}'")
    return number


def parse_port(data: bytes | str, source: str | None = None, *,
               require_owner: bool = True) -> PortDef:
    """Parse a whole <networkport> document. Raises XMLParseError for what libvirt refuses.

    ``require_owner=False`` reads virtnet's own port records, where a port created without
    ``--owner`` has no owner (libvirt's ports always belong to a domain).
    """
    root = parse_fragment(data if isinstance(data, str) else data.decode("utf-8", "replace"),
                          source or "<input>")
    try:
        return _parse_port_element(root, require_owner)
    except XMLParseError as exc:
        if exc.source is not None:
            raise
        raise XMLParseError(exc.message, source=source, line=exc.line, path=exc.path) from None


def _parse_port_element(root: Element, require_owner: bool) -> PortDef:
    path = "/networkport"
    if root.tag != "networkport":
        raise _fail(root, f"/{root.tag}", f"root element must be <networkport>, not <{root.tag}>")
    found = _text_of(root, "uuid", path)
    if found is None or not found[0]:
        raise _fail(root, f"{path}/uuid", "network port has no uuid")
    uuid = parse_uuid(found[1], f"{path}/uuid", found[0])
    owner = _only(root, "owner", path)
    owner_path = f"{path}/owner"
    owner_name = _text_of(owner, "name", owner_path) if owner is not None else None
    if (owner_name is None or not owner_name[0]) and require_owner:
        raise _fail(owner if owner is not None else root, f"{owner_path}/name",
                    "network port has no owner name")
    owner_uuid = _text_of(owner, "uuid", owner_path) if owner is not None else None
    if (owner_uuid is None or not owner_uuid[0]) and require_owner:
        raise _fail(owner if owner is not None else root, f"{owner_path}/uuid",
                    "network port has no owner UUID")
    mac_el = _only(root, "mac", path)
    mac_value = mac_el.get("address") if mac_el is not None else None
    if mac_el is None or not mac_value:
        raise _fail(mac_el if mac_el is not None else root, f"{path}/mac",
                    "network port has no mac")
    port = PortDef(
        uuid=uuid,
        mac=parse_mac(mac_el, f"{path}/mac/@address", mac_value),
        owner_name=owner_name[0] if owner_name and owner_name[0] else None,
        owner_uuid=(parse_uuid(owner_uuid[1], f"{owner_path}/uuid", owner_uuid[0])
                    if owner_uuid and owner_uuid[0] else None),
    )
    group = _text_of(root, "group", path)
    if group is not None:
        problem = portgroup_name_problem(group[0]) if group[0] else None
        if problem is not None:
            raise _fail(group[1], f"{path}/group", problem)
        port.group = group[0] or None
    virtualport = _only(root, "virtualport", path)
    if virtualport is not None:
        port.virtualport = parse_virtualport(virtualport, f"{path}/virtualport",
                                             require_type=False)
    bandwidth = _only(root, "bandwidth", path)
    if bandwidth is not None:
        port.bandwidth, port.class_id = _parse_port_bandwidth(bandwidth, f"{path}/bandwidth")
    vlan = _only(root, "vlan", path)
    if vlan is not None:
        port.vlan = parse_vlan(vlan, f"{path}/vlan")
    options = _only(root, "port", path)
    if options is not None:
        port.isolated = _tristate(options, f"{path}/port", "isolated")
    rxfilters = _only(root, "rxfilters", path)
    if rxfilters is not None:
        port.trust_guest_rx_filters = _tristate(rxfilters, f"{path}/rxfilters", "trustGuest")
    plug = _only(root, "plug", path)
    if plug is not None:
        _parse_plug(plug, f"{path}/plug", port)
    tap = _only(root, f"{{{TAP_NAMESPACE}}}tap", path)
    if tap is not None:
        port.tap = _parse_tap(tap, f"{path}/{TAP_PREFIX}:tap")
    return port


def _parse_tap(el: Element, path: str) -> TapOptions:
    """virtnet's <virtnet:tap owner='UID' group='GID' queues='N'/>."""
    values: dict[str, int | None] = {}
    for name in ("owner", "group", "queues"):
        text = el.get(name)
        if text is None:
            values[name] = None
            continue
        if not text.isdigit():
            raise _fail(el, f"{path}/@{name}", f"invalid value '{text}' for '{name}': "
                        "expected a decimal number")
        values[name] = int(text)
    queues = values["queues"] if values["queues"] is not None else 1
    problem = tap_options_problem(values["owner"], values["group"], queues)
    if problem is not None:
        raise _fail(el, path, problem)
    return TapOptions(owner=values["owner"], group=values["group"], queues=queues)


def _parse_port_bandwidth(el: Element, path: str) -> tuple[object, int | None]:
    """A port's <bandwidth>: 'floor' is allowed (whether it applies is decided when the port
    is plugged), and classID records the tc class of that floor."""
    class_id = None
    value = el.get("classID")
    if value is not None:
        if not value.isdigit() or int(value) > UINT_MAX:
            raise _fail(el, f"{path}/@classID", f"invalid classID '{value}'")
        class_id = int(value) or None
        el = copy.deepcopy(el)
        del el.attrib["classID"]
    return parse_bandwidth(el, path, allow_floor=True), class_id


def _parse_plug(el: Element, path: str, port: PortDef) -> None:
    value = el.get("type")
    if value is None:
        return  # libvirt: a <plug> without a type is plug type none
    try:
        port.plug_type = PlugType(value)
    except ValueError:
        allowed = ", ".join(f"'{t.value}'" for t in PlugType)
        raise _fail(el, f"{path}/@type", f"unknown plug type '{value}': expected one of "
                    f"{allowed}") from None
    if port.plug_type in (PlugType.NETWORK, PlugType.BRIDGE):
        port.bridge = el.get("bridge")
        if not port.bridge:
            raise _fail(el, f"{path}/@bridge", "Missing network port bridge name")
        manager = el.get("macTableManager")
        if manager is not None:
            try:
                port.mac_table_manager = MacTableManager(manager)
            except ValueError:
                port.mac_table_manager = None
            if port.mac_table_manager in (None, MacTableManager.DEFAULT):
                raise _fail(el, f"{path}/@macTableManager",
                            f"Invalid macTableManager setting '{manager}' in network port")
    elif port.plug_type is PlugType.DIRECT:
        port.dev = el.get("dev")
        if not port.dev:
            raise _fail(el, f"{path}/@dev", "Missing network port link device name")
        mode = el.get("mode")
        if mode is not None:
            try:
                port.mode = MacvtapMode(mode)
            except ValueError:
                raise _fail(el, f"{path}/@mode",
                            f"Invalid mode setting '{mode}' in network port") from None
    elif port.plug_type is PlugType.HOSTDEV_PCI:
        port.managed = _tristate(el, path, "managed")
        driver = _only(el, "driver", path)
        name = driver.get("name") if driver is not None else None
        if name:
            try:
                port.driver = ForwardDriverName(name)
            except ValueError:
                port.driver = None
            if port.driver in (None, ForwardDriverName.DEFAULT):
                raise _fail(driver, f"{path}/driver/@name", "Missing network port driver name")
        address = _only(el, "address", path)
        if address is None:
            raise _fail(el, f"{path}/address", "Missing network port PCI address")
        address_path = f"{path}/address"
        port.address = PciAddress(
            domain=_c_uint(address, address_path, "domain", 0xFFFF),
            bus=_c_uint(address, address_path, "bus", 0xFF),
            slot=_c_uint(address, address_path, "slot", 0x1F),
            function=_c_uint(address, address_path, "function", 7),
        )


# --- formatting ---------------------------------------------------------------------------


def format_port(port: PortDef) -> str:
    """The port in libvirt 9.0's layout (virNetworkPortDefFormat)."""
    inner = INDENT
    out = ["<networkport>\n", f"{inner}<uuid>{port.uuid}</uuid>\n"]
    if port.owner_name is not None or port.owner_uuid is not None:
        out.append(f"{inner}<owner>\n")
        if port.owner_name is not None:
            out.append(f"{inner}{INDENT}<name>{escape(port.owner_name)}</name>\n")
        if port.owner_uuid is not None:
            out.append(f"{inner}{INDENT}<uuid>{port.owner_uuid}</uuid>\n")
        out.append(f"{inner}</owner>\n")
    if port.group is not None:
        out.append(f"{inner}<group>{escape(port.group)}</group>\n")
    out.append(f"{inner}<mac address='{port.mac}'/>\n")
    format_virtualport(port.virtualport, inner, out)
    if port.bandwidth is not None:
        start = len(out)
        format_bandwidth(port.bandwidth, inner, out)
        if port.class_id and len(out) > start:
            out[start] = f"{inner}<bandwidth classID='{port.class_id}'>\n"
    format_vlan(port.vlan, inner, out)
    if port.isolated is not None:
        out.append(f"{inner}<port isolated='{'yes' if port.isolated else 'no'}'/>\n")
    if port.trust_guest_rx_filters is not None:
        trust = "yes" if port.trust_guest_rx_filters else "no"
        out.append(f"{inner}<rxfilters trustGuest='{trust}'/>\n")
    out += _format_plug(port, inner)
    if port.tap is not None and not port.tap.is_default:
        out.append(format_tap(port.tap, inner))
    out.append("</networkport>\n")
    return "".join(out)


def format_tap(tap: TapOptions, indent: str = "") -> str:
    """virtnet's own element of a port (after libvirt's, which keep their layout)."""
    attrs = "".join(f" {name}='{value}'" for name, value in
                    (("owner", tap.owner), ("group", tap.group), ("queues", tap.queues))
                    if value is not None and not (name == "queues" and value == 1))
    return (f"{indent}<{TAP_PREFIX}:tap xmlns:{TAP_PREFIX}='{TAP_NAMESPACE}'{attrs}/>\n")


def _format_plug(port: PortDef, indent: str) -> list[str]:
    kind = port.plug_type
    if kind is PlugType.NONE:
        return []
    head = f"{indent}<plug type='{kind.value}'"
    if kind in (PlugType.NETWORK, PlugType.BRIDGE):
        head += f" bridge='{escape(port.bridge or '')}'"
        if port.mac_table_manager not in (None, MacTableManager.DEFAULT):
            assert port.mac_table_manager is not None
            head += f" macTableManager='{port.mac_table_manager.value}'"
        return [head + "/>\n"]
    if kind is PlugType.DIRECT:
        mode = port.mode or MacvtapMode.VEPA  # libvirt's default mode is the table's first
        return [head + f" dev='{escape(port.dev or '')}' mode='{mode.value}'/>\n"]
    if port.managed is not None:
        head += f" managed='{'yes' if port.managed else 'no'}'"
    lines = [head + ">\n"]
    if port.driver not in (None, ForwardDriverName.DEFAULT):
        assert port.driver is not None
        lines.append(f"{indent}{INDENT}<driver name='{port.driver.value}'/>\n")
    address = port.address or PciAddress()
    lines.append(
        f"{indent}{INDENT}<address domain='0x{address.domain:04x}' bus='0x{address.bus:02x}' "
        f"slot='0x{address.slot:02x}' function='0x{address.function:x}'/>\n"
    )
    lines.append(f"{indent}</plug>\n")
    return lines


__all__ = ["format_port", "format_tap", "parse_port"]
