"""What every section of the network XML reader shares: the error it raises (naming the
element path, line and value), child lookup by tag with indexed paths, and the readers of
attribute values (integers, yes/no, enum members, addresses, MACs, UUIDs, netmasks).

The section readers (``parse_forward``, ``parse_ip``, ``parse_dns``) and ``parse`` build on
these; this module imports none of them.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
from typing import NoReturn, TypeVar

from virtnet.errors import XMLParseError
from virtnet.ids import canonical_uuid
from virtnet.spec.model import IPAddress
from virtnet.spec.xml.document import Element

E = TypeVar("E", bound=enum.Enum)

# Limits taken from libvirt 9.0's parser (see docs/formatnetwork.rst and src/conf/).
UINT_MAX = 2**32 - 1
ULLONG_MAX = 2**64 - 1

_DECIMAL = re.compile(r"[0-9]+\Z")
_MAC = re.compile(r"([0-9a-fA-F]{1,2}):" * 5 + r"([0-9a-fA-F]{1,2})\s*\Z")

# Elements that may occur more than once where they appear: their path carries an index.
REPEATED_ELEMENTS = frozenset(
    {"ip", "route", "portgroup", "range", "host", "interface", "address", "pf", "forwarder",
     "txt", "srv", "hostname", "tag", "option"}
)


# --- error and value helpers ------------------------------------------------------------


def fail(el: Element, path: str, message: str) -> NoReturn:
    raise XMLParseError(message, line=el.sourceline, path=path)


class Kids:
    """An element's child elements grouped by tag (no namespace), built in one pass."""

    __slots__ = ("by_tag", "parent", "path")

    def __init__(self, parent: Element, path: str) -> None:
        self.parent = parent
        self.path = path
        by_tag: dict[str, list[Element]] = {}
        for child in parent:
            tag = child.tag
            if isinstance(tag, str):
                if tag in by_tag:
                    by_tag[tag].append(child)
                else:
                    by_tag[tag] = [child]
        self.by_tag = by_tag

    def many(self, name: str) -> list[tuple[Element, str]]:
        """Children called ``name``, each with its indexed path."""
        found = self.by_tag.get(name)
        if not found:
            return []
        return [(child, f"{self.path}/{name}[{i}]") for i, child in enumerate(found, start=1)]

    def one(self, name: str) -> tuple[Element, str] | None:
        """The only child called ``name``, or None; a second one is an error."""
        found = self.by_tag.get(name)
        if not found:
            return None
        if len(found) > 1:
            fail(found[1], f"{self.path}/{name}",
                 f"<{name}> may appear only once in <{self.parent.tag}>")
        return found[0], f"{self.path}/{name}"


def required_attr(el: Element, path: str, name: str) -> str:
    value = el.get(name)
    if value is None:
        fail(el, path, f"missing required attribute '{name}' in <{el.tag}>")
    if value == "":
        fail(el, f"{path}/@{name}", f"attribute '{name}' must not be empty")
    return value


def element_text(el: Element) -> str:
    """The element's text content (all text nodes, as XPath string() would give)."""
    return "".join(el.itertext())


def parse_uint(
    el: Element,
    path: str,
    name: str,
    value: str,
    *,
    maximum: int = UINT_MAX,
    minimum: int = 0,
    what: str | None = None,
) -> int:
    what = what or f"'{name}'"
    if not _DECIMAL.match(value):
        fail(el, path, f"invalid {what} value '{value}': expected a non-negative decimal integer")
    number = int(value)
    if number < minimum or number > maximum:
        fail(el, path, f"{what} value '{value}' out of range {minimum}..{maximum}")
    return number


def uint_attr(
    el: Element,
    path: str,
    name: str,
    *,
    maximum: int = UINT_MAX,
    minimum: int = 0,
    empty_is_absent: bool = False,
) -> int | None:
    value = el.get(name)
    if value is None or (empty_is_absent and value == ""):
        return None
    return parse_uint(el, f"{path}/@{name}", name, value, maximum=maximum, minimum=minimum)


def parse_c_uint(el: Element, path: str, name: str, value: str, maximum: int) -> int:
    """An unsigned integer in C's base-0 syntax (0x hex, 0 octal, decimal), as libvirt reads
    PCI addresses and 802.1Qbg parameters."""
    text = value
    try:
        if text[:2] in ("0x", "0X") and len(text) > 2:
            number = int(text[2:], 16) if re.fullmatch(r"[0-9a-fA-F]+", text[2:]) else -1
        elif len(text) > 1 and text[0] == "0":
            number = int(text[1:], 8) if re.fullmatch(r"[0-7]+", text[1:]) else -1
        elif _DECIMAL.match(text):
            number = int(text)
        else:
            number = -1
    except ValueError:
        number = -1
    if number < 0:
        fail(el, path, f"invalid '{name}' value '{value}': expected an unsigned integer")
    if number > maximum:
        fail(el, path, f"'{name}' value '{value}' out of range 0..{maximum:#x}")
    return number


def yes_no(el: Element, path: str, name: str) -> bool | None:
    """A tri-state yes/no attribute: exactly 'yes' or 'no' (libvirt's virTristateBool)."""
    value = el.get(name)
    if value is None:
        return None
    if value == "yes":
        return True
    if value == "no":
        return False
    fail(el, f"{path}/@{name}", f"invalid value '{value}' for '{name}': expected 'yes' or 'no'")


def yes_no_anycase(el: Element, path: str, name: str) -> bool | None:
    """yes/no where libvirt compares case-insensitively (managed, default, trunk)."""
    value = el.get(name)
    if value is None or value == "":
        return None
    lowered = value.lower()
    if lowered == "yes":
        return True
    if lowered == "no":
        return False
    fail(el, f"{path}/@{name}", f"invalid value '{value}' for '{name}': expected 'yes' or 'no'")


def parse_enum(
    el: Element, path: str, name: str, enum_type: type[E], value: str, refused: tuple[E, ...] = ()
) -> E:
    """The member of ``enum_type`` whose value is ``value``; members in ``refused`` exist in the
    table but libvirt's parser does not accept them as written values."""
    try:
        member = enum_type(value)
    except ValueError:
        member = None
    if member is None or member in refused:
        allowed = ", ".join(f"'{m.value}'" for m in enum_type if m not in refused)
        fail(el, path, f"unknown {name} '{value}': expected one of {allowed}")
    return member


def parse_address(el: Element, path: str, name: str, value: str) -> IPAddress:
    # inet_pton is the strict numeric syntax and several times faster than ipaddress's parser
    try:
        if ":" not in value:
            return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, value))
        if "%" not in value:
            return ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, value))
        return ipaddress.IPv6Address(value)  # with a scope id
    except (OSError, ValueError):
        fail(el, path, f"invalid IP address '{value}' in '{name}'")


def parse_ipv4(el: Element, path: str, name: str, value: str) -> ipaddress.IPv4Address:
    address = parse_address(el, path, name, value)
    if not isinstance(address, ipaddress.IPv4Address):
        fail(el, path, f"'{name}' must be an IPv4 address, not '{value}'")
    return address


def parse_mac(el: Element, path: str, value: str) -> str:
    """A unicast MAC address 'xx:xx:xx:xx:xx:xx' (1 or 2 hex digits per octet, like libvirt),
    returned in canonical lowercase two-digit form."""
    match = _MAC.match(value)
    if match is None:
        fail(el, path, f"invalid MAC address '{value}': expected six hex octets like "
             "'52:54:00:12:34:56'")
    octets = match.groups()
    if int(octets[0], 16) & 1:
        fail(el, path, f"MAC address '{value}' is multicast: a unicast address is required")
    return ":".join(o.lower().zfill(2) for o in octets)


def parse_uuid(el: Element, path: str, value: str) -> str:
    """A UUID as libvirt reads it (32 hex digits, '-' or ' ' allowed before each digit pair,
    surrounding whitespace), returned as canonical lowercase 8-4-4-4-12."""
    found = canonical_uuid(value)
    if found is None:
        fail(el, path, f"malformed UUID '{value}': expected 32 hex digits like "
             "'81ff0d90-c91e-6742-64da-4a736edb9a9b'")
    return found


def parse_netmask(el: Element, path: str, value: str) -> ipaddress.IPv4Address:
    mask = parse_address(el, path, "netmask", value)
    if not isinstance(mask, ipaddress.IPv4Address):
        fail(el, path, f"netmask '{value}' must be an IPv4 address")
    bits = int(mask)
    inverted = ~bits & 0xFFFFFFFF
    if inverted & (inverted + 1):
        fail(el, path, f"netmask '{value}' is not contiguous")
    return mask
