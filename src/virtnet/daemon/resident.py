"""What the daemon keeps in memory between requests, and the port devices it hands over.

:class:`ResidentPortManager` is a :class:`~virtnet.ports.PortManager` that keeps the networks
and port records a session read for the next session, so a VM manager creating ports one
request at a time pays for reading the state once, not once per port (re-reading every port
record of a network per request would make the n-th port cost O(n)). What is kept is checked
against the disk at the start of each use, under the state lock, so changes made by other
processes (``virtnet --direct``, an older virtnet) are never missed:
- the network's status record is the same file (inode, mtime, size): a restart or a live
  update writes a new one;
- the network's port directory holds exactly the records kept (port records are written once
  and removed, never rewritten, so their names say everything).

:func:`open_port_device` opens a port's tap or macvtap the way a hypervisor does, for the
SCM_RIGHTS hand-over to a VM manager that runs without root.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass
from typing import Any

from virtnet.errors import VirtnetError
from virtnet.ports import PORTS_DIR_SUFFIX, PortError, PortManager, PortRecord, read_records

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000


@dataclass
class _Kept:
    name: str
    state: Any  # ports._NetworkState
    status_stamp: tuple[int, int, int] | None


class ResidentPortManager(PortManager):
    """A PortManager whose per-network state outlives a session (see the module's doc)."""

    def __init__(self, engine: Any, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._kept: dict[str, _Kept] = {}

    def _status_stamp(self, name: str) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.paths.status(name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _still_valid(self, kept: _Kept) -> bool:
        if kept.status_stamp is None or self._status_stamp(kept.name) != kept.status_stamp:
            return False
        try:
            entries = os.listdir(self._dir(kept.name))
        except FileNotFoundError:
            entries = []
        on_disk = {e[:-5] for e in entries if e.endswith(".json") and not e.startswith(".")}
        return on_disk == set(kept.state.records)

    def _state(self, network: str) -> Any:
        session = self._session
        assert session is not None, "only inside a session"
        found = session.get(network)
        if found is not None:
            return found
        kept = self._kept.get(network)
        if kept is not None:
            if self._still_valid(kept):
                session[network] = session[kept.name] = kept.state
                return kept.state
            self._forget(kept.name)
        state = super()._state(network)
        name = state.net.name
        kept = _Kept(name, state, self._status_stamp(name))
        self._kept[name] = kept
        self._kept[network] = kept
        return state

    def _forget(self, name: str) -> None:
        for key in [k for k, kept in self._kept.items() if kept.name == name]:
            del self._kept[key]

    def _taken_names(self) -> set[str]:
        """Device names held by the port records of every network, from kept state where it
        is still valid."""
        if self._names is None:
            names: set[str] = set()
            try:
                entries = os.listdir(self.paths.status_dir)
            except FileNotFoundError:
                entries = []
            for entry in entries:
                if not entry.endswith(PORTS_DIR_SUFFIX):
                    continue
                network = entry[: -len(PORTS_DIR_SUFFIX)]
                try:
                    records = self._state(network).records
                except VirtnetError:
                    # Records of a network that is not active (left by a failed destroy).
                    records = read_records(self.paths.status_dir / entry)
                names.update(r.device for r in records.values() if r.device)
            self._names = names
        return self._names

    def remove_all(self, network: str) -> list[str]:
        self._forget(network)
        return super().remove_all(network)


def open_port_device(record: PortRecord, vnet_hdr: bool = True) -> int:
    """Open the port's device as QEMU would: a tap through /dev/net/tun by name, a macvtap
    through its character device; with virtio-net headers unless ``vnet_hdr`` is False.

    The caller owns the returned descriptor (opened close-on-exec)."""
    flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
    if record.char_device:
        path, name = record.char_device, b""
    elif record.device and record.port.plug_type.value in ("network", "bridge"):
        path, name = TUN_DEVICE, record.device.encode()
    else:
        raise PortError(f"port {record.uuid} has no tap or macvtap device to hand over")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise PortError(f"cannot open {path} for port {record.uuid}: {exc.strerror}") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name, flags))
        os.set_blocking(fd, True)  # a hypervisor chooses for itself; hand over the default
    except OSError as exc:
        os.close(fd)
        raise PortError(f"cannot attach to {record.device or path} for port {record.uuid}: "
                        f"{exc.strerror}") from None
    return fd


__all__ = ["ResidentPortManager", "open_port_device"]
