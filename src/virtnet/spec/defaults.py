"""Values assigned when a network is defined (or created), as libvirt 9.0 assigns them.

What libvirt fills in at define time, and so what ``net-dumpxml --inactive`` shows afterwards:
- a ``<uuid>`` when none was given (random, version 4);
- for the modes with a bridge of our own (isolated, nat, route, open):
  - a bridge name when none was given, or when the given name is a template with one ``%d``:
    the first ``virbrN`` (or template with N) for N = 0..256 that no *other* network uses (its
    persistent or its live definition) and that is not an existing link on the host; in the
    namespace a packaged libvirt runs in, not one of libvirt's networks' bridges either;
  - a bridge MAC when no ``<mac>`` was given: 52:54:00 followed by three random bytes;
  - ``stp='on' delay='0'`` appear because ``<bridge>`` now exists with the model's defaults.
- an explicit bridge name that another network already uses is refused.
Nothing is added to networks of the other modes (their bridge or devices belong to the host).

Randomness comes from injectable sources so tests are deterministic.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from virtnet.errors import VirtnetError
from virtnet.spec.model import Bridge, Network
from virtnet.spec.libvirtnets import libvirt_bridges

BRIDGE_TEMPLATE = "virbr%d"
MAX_BRIDGE_ID = 256  # libvirt gives up after virbr256
MAC_PREFIX = bytes((0x52, 0x54, 0x00))  # the prefix QEMU/KVM guests and libvirt bridges use


@dataclass
class DefaultSources:
    """Where generated values come from: real randomness unless a test injects its own."""

    new_uuid: Callable[[], uuid.UUID] = field(default=uuid.uuid4)
    random_bytes: Callable[[int], bytes] = field(default=os.urandom)


def bridge_template(name: str | None) -> str | None:
    """The naming template to allocate from, or None when ``name`` is a plain bridge name.

    A name is a template when it holds exactly one ``%`` and that ``%`` is followed by ``d``.
    """
    if name is None:
        return BRIDGE_TEMPLATE
    first = name.find("%")
    if first >= 0 and first == name.rfind("%") and name[first + 1 : first + 2] == "d":
        return name
    return None


def find_free_bridge(template: str, in_use: Callable[[str], bool]) -> str:
    """First name from ``template`` with N = 0..MAX_BRIDGE_ID for which ``in_use`` is false."""
    for index in range(MAX_BRIDGE_ID + 1):
        candidate = template.replace("%d", str(index), 1)
        if not in_use(candidate):
            return candidate
    raise VirtnetError(f"Bridge generation exceeded max id {MAX_BRIDGE_ID}")


def generate_mac(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A random bridge MAC with libvirt's 52:54:00 prefix, lowercase."""
    tail = random_bytes(3)
    if len(tail) != 3:
        raise ValueError("random source returned the wrong number of bytes")
    return ":".join(f"{byte:02x}" for byte in MAC_PREFIX + tail)


def link_exists(name: str) -> bool:
    """Whether a network interface ``name`` exists in this process's network namespace.

    ``if_nametoindex`` asks the kernel through a socket, which follows ``setns`` (unlike
    ``/sys/class/net``, which shows the namespace sysfs was mounted in).
    """
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


class LibvirtPresence(Protocol):
    """What :func:`libvirt_bridges_here` asks of the host (the host layer's HostProcess)."""

    def in_libvirt_netns(self) -> bool: ...

    def libvirt_network_files(self) -> list[tuple[str, bytes]]: ...


def libvirt_bridges_here(host: LibvirtPresence | type[LibvirtPresence]) -> list[str]:
    """The bridge names of a packaged libvirt's networks (defined or running), when this
    process is in the namespace libvirtd runs in (the init one): there its bridges and ours
    meet. Elsewhere (a --netns namespace) none. ``host`` is the caller's host surface."""
    if not host.in_libvirt_netns():
        return []

    return libvirt_bridges(host.libvirt_network_files())


def assign_defaults(
    net: Network,
    *,
    other_bridges: Iterable[str],
    link_in_use: Callable[[str], bool] = link_exists,
    sources: DefaultSources | None = None,
    reserved: Callable[[], Iterable[str]] = tuple,
) -> Network:
    """Fill in ``net``'s define-time defaults in place and return it.

    ``other_bridges``: bridge names of every *other* network, persistent and live definitions.
    ``link_in_use``: whether a link of that name exists on the host (only consulted when a name
    is allocated, as libvirt does; an explicit name may be an existing bridge of ours).
    ``reserved``: more names an allocated one avoids (libvirt's bridges, read only then).
    """
    sources = sources or DefaultSources()
    taken = set(other_bridges)
    if net.uuid is None:
        net.uuid = str(sources.new_uuid())
    if not net.forward_mode.has_own_bridge:
        return net
    if net.bridge is None:
        net.bridge = Bridge()
    template = bridge_template(net.bridge.name)
    if template is None:
        if net.bridge.name in taken:
            raise VirtnetError(f"bridge name '{net.bridge.name}' already in use.")
    else:
        held = taken | set(reserved())
        net.bridge.name = find_free_bridge(
            template, lambda name: name in held or link_in_use(name)
        )
    if net.mac is None:
        net.mac = generate_mac(sources.random_bytes)
    return net
