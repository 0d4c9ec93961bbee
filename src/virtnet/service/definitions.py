"""Definitions: define, undefine, edit and autostart, each checked as libvirt
checks a definition arriving next to the existing ones, and saved only once it reads back as
the very same network.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from virtnet.errors import InvalidOperationError, VirtnetError
from virtnet.spec.model import Network
from virtnet.store.records import NetworkRecord

if TYPE_CHECKING:
    from virtnet.service.engine import Engine


def define(engine: Engine, data: bytes | str, source: str | None = None) -> Network:
    """Make (or replace) a persistent definition; returns it with defaults assigned.

    Redefining an active network changes only what its next start uses.
    """
    net = engine.parse(data, source)
    with engine.store.lock:
        engine.store.remove_stale_temp_files()  # of a define killed mid-write
        records = engine.records()
        check_identity(net, records, creating=False)
        engine.assign_defaults(net, records)
        text = text_reading_back(engine, net, engine.paths.definition(net.name))
        engine.store.write_definition(net.name, text)
    return net


def text_reading_back(engine: Engine, net: Network, path: Path, *, status: bool = False) -> str:
    """NET as it is saved in PATH, once checked to read back as the very same network, so
    that a definition which could not be loaded again is refused with nothing written.
    The parse is cached as :meth:`Engine.load` will ask for it (a definition is read back as
    bytes, a status record's live definition as text): the next load costs nothing."""
    text = engine.format(net, inactive=True)
    try:
        back = engine.parse(text if status else text.encode(), str(path))
    except VirtnetError as exc:
        raise VirtnetError(f"network '{net.name}' cannot be saved: it would not read back "
                           f"({exc})") from None
    if back.name != net.name or engine.format(back, inactive=True) != text:
        raise VirtnetError(f"network '{net.name}' cannot be saved: it would read back "
                           "as a different definition")
    return text


def undefine(engine: Engine, name: str) -> None:
    """Forget the persistent definition; an active network keeps running, as transient."""
    with engine.store.lock:
        record = engine.lookup(name)
        if not record.persistent:
            raise InvalidOperationError(
                "Requested operation is not valid: can't undefine transient network"
            )
        engine.store.delete_definition(record.name)
        if not record.active:
            engine.remove_leases(record.name)  # kept across restarts, not beyond the network


def check_identity(net: Network, records: list[NetworkRecord], creating: bool) -> None:
    """libvirt's rules for a definition arriving next to the existing ones."""
    for record in records:
        if net.uuid is not None and record.uuid.lower() == net.uuid.lower():
            if record.name != net.name:
                raise VirtnetError(
                    f"operation failed: network '{record.name}' is already defined "
                    f"with uuid {record.uuid}"
                )
            if creating and record.active:
                raise InvalidOperationError(
                    "Requested operation is not valid: network is already active as "
                    f"'{record.name}'"
                )
            return
    for record in records:
        if record.name == net.name:
            raise VirtnetError(
                f"operation failed: network '{net.name}' already exists with uuid "
                f"{record.uuid}"
            )


def edit(engine: Engine, name: str, data: bytes | str, source: str | None = None) -> bool:
    """Replace ``name``'s definition with an edited one; False when nothing changed.

    The edited text is validated (and checked like a define) before anything is saved, so a
    refused edit leaves the old definition in place.
    """
    record = engine.lookup(name)
    net = engine.parse(data, source)
    if record.config is not None and engine.format(net) == engine.format(record.config):
        return False
    engine.define(data, source)
    return True


def set_autostart(engine: Engine, name: str, enable: bool) -> None:
    with engine.store.lock:
        record = engine.lookup(name)
        if not record.persistent:
            raise InvalidOperationError(
                "Requested operation is not valid: cannot set autostart for transient network"
            )
        engine.store.set_autostart(record.name, enable)


__all__ = ["check_identity", "define", "edit", "set_autostart", "text_reading_back", "undefine"]
