"""Kernel preflight: which of the features virtnet builds on the running kernel has.

Each probe asks the kernel without changing anything: a link kind is probed with an
RTM_NEWLINK the kernel must refuse (see :meth:`Rtnl.link_kind_supported`), TUN/TAP by
opening /dev/net/tun, nftables by asking nfnetlink for the ruleset generation. So a missing
feature gives a clear error naming it ("the kernel lacks macvtap devices (CONFIG_MACVTAP)")
before anything is created, instead of an obscure netlink error halfway through a plan.

Results are kept per process and feature: kernel features do not change while it runs (a
module loaded later is found by the next command).
"""

from __future__ import annotations

import errno
import socket
import struct
from virtnet.errors import HostError
from virtnet.facts import FEATURE_TEXT, KernelFeatures
from virtnet.host.rtnl import shared_rtnl, tun_available

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN = 16
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2

_known: dict[str, bool] = {}


def nftables_supported() -> bool:
    """Whether the kernel answers nf_tables requests (module present or loadable)."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             NETLINK_NETFILTER)
    except OSError:
        return False
    with sock:
        sock.bind((0, 0))
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)
        msg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
        header = struct.pack("=IHHII", 16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
        sock.send(header + body)
        sock.settimeout(5.0)
        while True:
            try:
                data = sock.recv(65536)
            except (TimeoutError, OSError):
                return False
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, _, _ = struct.unpack_from("=IHHII", data, offset)
                if length < 16:
                    return False
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    return -code not in (errno.EOPNOTSUPP, errno.EPROTONOSUPPORT)
                offset += (length + 3) & ~3


def _probe_one(name: str) -> bool:
    if name == "tun":
        return tun_available()
    if name == "nftables":
        return nftables_supported()
    return shared_rtnl().link_kind_supported(name)


def kernel_has(name: str) -> bool:
    """Whether the kernel has feature NAME (a key of FEATURE_TEXT); probed once per process.

    Probing one feature at a time matters: asking for a kind whose module is absent makes the
    kernel run modprobe first, which costs tens of milliseconds.
    """
    if name not in FEATURE_TEXT:
        raise ValueError(f"unknown kernel feature {name!r}")
    found = _known.get(name)
    if found is None:
        found = _known[name] = _probe_one(name)
    return found


def require(*names: str, what: str) -> None:
    """Raise HostError naming every feature among NAMES the kernel lacks, for WHAT."""
    missing = [name for name in names if not kernel_has(name)]
    if missing:
        lacks = ", ".join(FEATURE_TEXT[name] for name in missing)
        raise HostError(f"cannot {what}: the kernel lacks {lacks}")


def probe_kernel() -> KernelFeatures:
    """Every feature at once (for reports: ``virtnet`` preflight output, tests)."""
    return KernelFeatures(**{name: kernel_has(name) for name in FEATURE_TEXT})


__all__ = ["FEATURE_TEXT", "KernelFeatures", "kernel_has", "nftables_supported", "probe_kernel",
           "require"]
