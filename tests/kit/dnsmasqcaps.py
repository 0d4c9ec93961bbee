"""DnsmasqCaps from what ``dnsmasq --version`` prints (libvirt's conformance driver fakes that
answer; virtnet itself works from the default capabilities)."""

from __future__ import annotations

import re

from virtnet.render.dnsmasq import DnsmasqCaps
from virtnet.errors import VirtnetError


def caps_from_version_output(text: str, binary: str = "/usr/sbin/dnsmasq") -> DnsmasqCaps:
    """Capabilities from the output of ``dnsmasq --version``."""
    match = re.match(r"\s*Dnsmasq version (\d+)\.(\d+)", text)
    if match is None:
        first = text.splitlines()[0] if text else ""
        raise VirtnetError(f"cannot read the version of {binary} from {first!r}")
    return DnsmasqCaps(version=(int(match.group(1)), int(match.group(2))), binary=binary)
