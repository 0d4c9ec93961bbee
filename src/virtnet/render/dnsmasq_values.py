"""The values of a network definition as they may appear in dnsmasq's files: the checks every
one passes before it reaches a line (control characters, DNS names, dhcp-host names dnsmasq
could take for something else, free text quoted the way dnsmasq reads it back, the bridge and
network names), the error they raise, and the formatting of addresses, prefixes, lease times
and PTR zones as libvirt 9.0 writes them. Used by :mod:`virtnet.render.dnsmasq`; see its
docstring for why each check exists.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata

from virtnet.errors import VirtnetError
from virtnet.spec.model import IpDef, Lease, LeaseUnit, Network
from virtnet.spec.validate_base import libvirt_prefix


class DnsmasqConfigError(VirtnetError):
    """A value of the definition cannot be written safely into dnsmasq's files.

    The message names the element (as a path), the value (quoted and escaped, so a control
    character shows) and the reason.
    """

    def __init__(self, path: str, what: str, value: object, reason: str) -> None:
        self.path = path
        self.what = what
        self.value = value
        self.reason = reason
        shown = "" if value is None else f" {value!r}"
        super().__init__(f"{path}: {what}{shown} {reason}")


# --- value checks -------------------------------------------------------------------------

_DNS_NAME = re.compile(r"(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?")
_LEASE_TIME_LIKE = re.compile(r"[0-9]+[wWdDhHmMsS]?")
_IFNAME = re.compile(r"[A-Za-z0-9_.+-]{1,15}")


def _describe_char(ch: str) -> str:
    names = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\0": "a NUL byte"}
    if ch in names:
        return names[ch]
    return f"the control character U+{ord(ch):04X}"


def refuse_control(path: str, what: str, value: str) -> None:
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise DnsmasqConfigError(
                path, what, value, f"contains {_describe_char(ch)}, which dnsmasq cannot accept"
            )


def check_dns_name(path: str, what: str, value: str) -> str:
    """A DNS name dnsmasq reads back as exactly one field of one option."""
    refuse_control(path, what, value)
    if not value:
        raise DnsmasqConfigError(path, what, value, "is empty")
    for ch in value:
        if not ch.isascii():
            raise DnsmasqConfigError(
                path, what, value,
                f"contains the non-ASCII character {ch!r}; write the name in its ASCII "
                "(IDNA 'xn--') form",
            )
    if _DNS_NAME.fullmatch(value) is None:
        bad = next((ch for ch in value if not (ch.isalnum() or ch in "._-")), None)
        if bad is not None:
            reason = f"contains {bad!r}; a DNS name may only hold letters, digits, '-', '_' and '.'"
        elif ".." in value or value.startswith("."):
            reason = "has an empty label"
        else:
            reason = "has a label longer than 63 characters"
        raise DnsmasqConfigError(path, what, value, reason)
    if len(value.rstrip(".")) > 253:
        raise DnsmasqConfigError(path, what, value, "is longer than 253 characters")
    return value


def check_dhcp_host_name(path: str, value: str) -> str:
    """A host name in a dhcp-host line, where dnsmasq guesses each field's meaning."""
    check_dns_name(path, "host name", value)
    if not value[0].isalnum():
        raise DnsmasqConfigError(path, "host name", value, "must start with a letter or digit")
    if value in ("infinite", "ignore"):
        reason = "is a dnsmasq keyword in a dhcp-host line"
    elif _LEASE_TIME_LIKE.fullmatch(value):
        reason = "would be read by dnsmasq as a lease time"
    elif _is_ipv4(value):
        reason = "would be read by dnsmasq as an IPv4 address"
    else:
        return value
    raise DnsmasqConfigError(path, "host name", value, reason)


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def string_arg(path: str, what: str, value: str, *, comma_splits: bool) -> str:
    """Free text as one dnsmasq argument: plain when dnsmasq reads it back unchanged,
    otherwise in dnsmasq's double-quoted form (inside quotes commas, '#' and spaces lose
    their meaning; only backslash and the quote need escaping)."""
    refuse_control(path, what, value)
    plain = (
        value.isascii()
        and '"' not in value
        and "#" not in value
        and not (comma_splits and "," in value)
        and value == value.strip(" ")
        # dhcp-boot and friends take leading "tag:"/"net:" fields as tag filters
        and not value.startswith(("tag:", "net:"))
    )
    if plain:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_name_for_paths(name: str) -> None:
    refuse_control("/network/name", "network name", name)
    if not name or "/" in name:
        raise DnsmasqConfigError("/network/name", "network name", name,
                                 "cannot be part of a file name")


def bridge_ifname(net: Network) -> str:
    bridge = net.bridge_name
    if bridge is None:
        raise VirtnetError(
            f"network {net.name!r} has no bridge name yet; dnsmasq needs the interface to serve"
        )
    refuse_control("/network/bridge/@name", "bridge name", bridge)
    if _IFNAME.fullmatch(bridge) is None:
        raise DnsmasqConfigError(
            "/network/bridge/@name", "bridge name", bridge,
            "is not an interface name dnsmasq can be given (1-15 of letters, digits, '_.+-')",
        )
    return bridge


# --- formatting helpers ----------------------------------------------------------------------


def format_ip(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address as libvirt prints it: with the C library's inet_ntop, which keeps the dotted
    tail of IPv4-mapped and IPv4-compatible IPv6 addresses where Python < 3.13 does not."""
    if isinstance(address, ipaddress.IPv6Address):
        return socket.inet_ntop(socket.AF_INET6, address.packed)
    return str(address)


def lease_time(lease: Lease | None) -> str | None:
    """A lease as dnsmasq wants it: 'infinite' or the number and the unit's first letter."""
    if lease is None:
        return None
    if lease.expiry == 0:
        return "infinite"
    unit = lease.unit or LeaseUnit.MINUTES
    return f"{lease.expiry}{unit.value[0]}"


def ptr_domain(ip: IpDef, path: str) -> str:
    """The reverse zone served locally for a localPtr='yes' address."""
    address = ip.address
    prefix = libvirt_prefix(ip)
    assert address is not None
    if isinstance(address, ipaddress.IPv4Address):
        if prefix is None or prefix == 0 or prefix >= 32 or prefix % 8:
            raise DnsmasqConfigError(path, "localPtr with prefix", prefix,
                                     "cannot give an IPv4 PTR domain (it needs /8, /16 or /24)")
        octets = address.packed[: prefix // 8]
        return ".".join(str(b) for b in reversed(octets)) + ".in-addr.arpa"
    if prefix is None or prefix == 0 or prefix >= 128 or prefix % 4:
        raise DnsmasqConfigError(path, "localPtr with prefix", prefix,
                                 "cannot give an IPv6 PTR domain (it needs a multiple of 4)")
    nibbles = address.packed.hex()[: prefix // 4]
    return ".".join(reversed(nibbles)) + ".ip6.arpa"


def netmask_of(prefix: int) -> str:
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)
