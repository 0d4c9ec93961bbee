"""Kernel parameters through /proc/sys (per network namespace for net/*).

Keys are written in slash form (``net/ipv6/conf/virbr0/disable_ipv6``) because an
interface name may contain dots, which the dotted form cannot express unambiguously.
"""

from __future__ import annotations

from pathlib import Path

from virtnet.errors import HostError
from virtnet.facts import dotted

PROC_SYS = Path("/proc/sys")


def sysctl_path(key: str) -> Path:
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise HostError(f"invalid sysctl key {key!r}")
    return PROC_SYS / key


def sysctl_get(key: str) -> str | None:
    """Current value (stripped), or None if the parameter does not exist."""
    try:
        return sysctl_path(key).read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HostError(f"cannot read sysctl {dotted(key)}: {exc.strerror}") from None


def sysctl_set(key: str, value: str) -> None:
    try:
        with open(sysctl_path(key), "w") as handle:
            handle.write(f"{value}\n")
    except FileNotFoundError:
        raise HostError(f"cannot set sysctl {dotted(key)}: no such parameter") from None
    except OSError as exc:
        raise HostError(f"cannot set sysctl {dotted(key)}={value}: {exc.strerror}") from None
