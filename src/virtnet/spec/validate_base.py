"""What every section of the definition rules shares: the value checks used by more than one
section (interface names, MAC addresses, characters dnsmasq would misread, an <ip>'s prefix and
subnet) and ``Scan``, the pass over one network that the sections record their problems in.

The sections (:mod:`virtnet.spec.validate_forward`, :mod:`virtnet.spec.validate_ip`,
:mod:`virtnet.spec.validate_dns`) import this module; :mod:`virtnet.spec.validate` runs them.
"""

from __future__ import annotations

import ipaddress
import re

from virtnet.errors import Problem
from virtnet.spec.model import IpDef, Network, NetworkFamily, family_of

IFNAMSIZ = 16  # the kernel's limit including the terminating NUL: names have at most 15 bytes

_MAC_RE = re.compile(r"[0-9a-fA-F]{1,2}(:[0-9a-fA-F]{1,2}){5}\Z")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z", re.I)


# --- value helpers ----------------------------------------------------------------------


def describe(char: str) -> str:
    """``char`` as a problem message names it."""
    if char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F:
        return f"the control or space character {char!r}"
    return f"'{char}'"


def unsafe_char(text: str, forbidden: str = "", no_space: bool = False) -> str | None:
    """The first character of ``text`` that is a control character, whitespace (if
    ``no_space``) or one of ``forbidden``."""
    for char in text:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return char
        if no_space and char.isspace():
            return char
        if char in forbidden:
            return char
    return None


def control_char(text: str) -> str | None:
    """The first control character in ``text`` (a newline would start a new dnsmasq option)."""
    return unsafe_char(text)


def ifname_problem(name: str) -> str | None:
    """Why the kernel would refuse ``name`` as a network interface name, or None."""
    if name == "":
        return "is empty"
    if len(name.encode()) >= IFNAMSIZ:
        return f"is longer than {IFNAMSIZ - 1} bytes"
    if name in (".", ".."):
        return "is reserved"
    for char in name:
        if char in "/:" or char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F:
            return f"contains {describe(char)}"
    return None


def mac_problem(mac: str) -> str | None:
    """Why ``mac`` is not a valid unicast MAC address (as libvirt reads one), or None."""
    if not _MAC_RE.match(mac.rstrip()):
        return "is not a MAC address (six hex octets like 52:54:00:12:34:56)"
    if int(mac.split(":")[0], 16) & 1:
        return "is a multicast address; a unicast address is required"
    return None


def libvirt_prefix(ip: IpDef) -> int | None:
    """The prefix length libvirt uses for an <ip>: prefix, else netmask, else the classful
    default (IPv4) or 64 (IPv6); None when none can be derived (class D/E, bad netmask)."""
    if ip.prefix:
        return ip.prefix
    if ip.netmask is not None:
        bits = int(ip.netmask)
        inverted = ~bits & 0xFFFFFFFF
        if inverted & (inverted + 1):
            return None
        return 32 - inverted.bit_length()
    if isinstance(ip.address, ipaddress.IPv4Address):
        if int(ip.address) == 0:
            return 0
        return IpDef(address=ip.address).effective_prefix
    if isinstance(ip.address, ipaddress.IPv6Address):
        return 0 if int(ip.address) == 0 else 64
    return None


def ip_subnet(ip: IpDef) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The subnet of an <ip> with libvirt's prefix, or None when it has none."""
    prefix = libvirt_prefix(ip)
    if ip.address is None or prefix is None:
        return None
    maximum = 32 if ip.address.version == 4 else 128
    if prefix > maximum:
        return None
    return ipaddress.ip_network(f"{ip.address}/{prefix}", strict=False)


def ip_version(ip: IpDef) -> int:
    """4 or 6: the address's version, else the one its family names."""
    if ip.address is not None:
        return ip.address.version
    return 6 if ip.family == "ipv6" else 4


# --- the pass ---------------------------------------------------------------------------


class Scan:
    """One validation pass over a network: the model, the facts every section reads (forward
    mode, driver family) and the problems found so far, in the order they were found."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.mode = net.forward_mode
        # the registry's classification (drivers.driver_for reads the same function); the
        # definition layer never imports a driver
        self.family = family_of(net)
        # own bridge: addresses, dnsmasq and firewall are ours to give
        self.own_bridge = self.family is NetworkFamily.OWN_BRIDGE
        self.problems: list[Problem] = []
        self.define_only: set[int] = set()  # id() of problems from define-time-only rules

    def add(self, path: str, value: object, message: str, at_define: bool = False) -> None:
        """Record a problem; ``at_define`` marks a rule libvirt applies only when defining."""
        problem = Problem(path=path, message=message, value=None if value is None else str(value))
        self.problems.append(problem)
        if at_define:
            self.define_only.add(id(problem))

    def dns_name(self, path: str, what: str, value: str, forbidden: str = ",") -> None:
        """Record a problem if ``value``, a name dnsmasq reads, holds whitespace, a control
        character or one of ``forbidden``."""
        bad = unsafe_char(value, forbidden=forbidden, no_space=True)
        if bad is not None:
            self.add(path, value, f"{what} {value!r} contains {describe(bad)}, which would "
                     "change the meaning of dnsmasq's configuration")
