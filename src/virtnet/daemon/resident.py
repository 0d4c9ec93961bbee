"""What the daemon keeps in memory between requests, and the port devices it hands over.

:class:`ResidentPortManager` is a :class:`~virtnet.service.ports.PortManager` that keeps the networks
and port records a session read for the next session, so a VM manager creating ports one
request at a time pays for reading the state once, not once per port (re-reading every port
record of a network per request would make the n-th port cost O(n)). What is kept is checked
against the disk at the start of each use, under the state lock, so changes made by other
processes (``virtnet --direct``, an older virtnet) are never missed:
- the network's status record is the same file (inode, mtime, size): a restart or a live
  update writes a new one;
- the network's port directory holds exactly the records kept (port records are written once
  and removed, never rewritten, so their names say everything). Listing a directory of a
  thousand records costs more than creating a port, so the directory's own stamp (inode,
  mtime, size), taken when the last session that used it ended (the lock still held: nobody
  else had written since), stands for the listing while it is unchanged; when it changed the
  listing decides.

(Opening a port's device for the hand-over is virtnet.service.handover's.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from virtnet.errors import VirtnetError
from virtnet.service.ports import PORTS_DIR_SUFFIX, PortManager, PortRecord, read_records
from virtnet.store.store import list_dir



Stamp = tuple[int, int, int]


def _stamp(path: Any) -> Stamp | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class _Kept:
    name: str
    state: Any  # ports._NetworkState
    status_stamp: Stamp | None
    dir_stamp: Stamp | None = None  # the port directory as this daemon last left it
    generation: int = 0  # grows with each fresh read of the network's state


class ResidentPortManager(PortManager):
    """A PortManager whose per-network state outlives a session (see the module's doc)."""

    def __init__(self, engine: Any, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._kept: dict[str, _Kept] = {}
        self._generation = 0
        # The device names every record holds, and the lowest free vnetN/macvtapN, as the
        # last session left them; valid while the states they came from are (see _names_key).
        self._kept_names: set[str] | None = None
        self._kept_floor: dict[str, int] = {}
        self._names_key: tuple[tuple[str, int], ...] | None = None

    @contextlib.contextmanager
    def session(self) -> Iterator[ResidentPortManager]:
        with self.engine.store.lock:
            outermost = self._session is None
            with super().session():
                try:
                    yield self
                finally:
                    if outermost:
                        self._restamp()
                        if self._names is not None and self._names_key is not None:
                            self._kept_names = self._names
                            self._kept_floor = dict(self._name_floor)

    def _restamp(self) -> None:
        """At the end of a session, the lock still held: the port directories as we leave
        them (later changes by others will show in their stamps)."""
        assert self._session is not None
        for state in {id(state): state for state in self._session.values()}.values():
            kept = self._kept.get(state.net.name)
            if kept is not None and kept.state is state:
                kept.dir_stamp = _stamp(self._dir(kept.name))

    def _status_stamp(self, name: str) -> Stamp | None:
        return _stamp(self.paths.status(name))

    def _still_valid(self, kept: _Kept) -> bool:
        if kept.status_stamp is None or self._status_stamp(kept.name) != kept.status_stamp:
            return False
        directory = self._dir(kept.name)
        now = _stamp(directory)
        if kept.dir_stamp is not None and now == kept.dir_stamp:
            return True
        entries = list_dir(directory)
        on_disk = {e[:-5] for e in entries if e.endswith(".json") and not e.startswith(".")}
        if on_disk != set(kept.state.records):
            return False
        kept.dir_stamp = now
        return True

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
        self._generation += 1
        kept = _Kept(name, state, self._status_stamp(name), generation=self._generation)
        self._kept[name] = kept
        self._kept[network] = kept
        return state

    def _forget(self, name: str) -> None:
        for key in [k for k, kept in self._kept.items() if kept.name == name]:
            del self._kept[key]

    def _taken_names(self) -> set[str]:
        """Device names held by the port records of every network: kept from the last
        session while every network's state it came from is still the one kept."""
        if self._names is not None:
            return self._names
        entries = sorted(list_dir(self.paths.status_dir))
        sources: list[tuple[str, Any]] = []
        key: list[tuple[str, int]] | None = []
        for entry in entries:
            if not entry.endswith(PORTS_DIR_SUFFIX):
                continue
            network = entry[: -len(PORTS_DIR_SUFFIX)]
            try:
                state = self._state(network)
            except VirtnetError:
                # Records of a network that is not active (left by a failed destroy).
                sources.append((network, read_records(self.paths.status_dir / entry)))
                key = None
                continue
            sources.append((network, state.records))
            if key is not None:
                key.append((network, self._kept[state.net.name].generation))
        names_key = tuple(key) if key is not None else None
        if names_key is not None and names_key == self._names_key \
                and self._kept_names is not None:
            self._names = self._kept_names
            self._name_floor = dict(self._kept_floor)
            return self._names
        names: set[str] = set()
        for _, records in sources:
            names.update(r.device for r in records.values() if r.device)
        self._names = names
        self._names_key = names_key
        self._kept_names = None
        return self._names

    def delete(self, network: str, ref: str) -> PortRecord:
        with self.session():
            if self._names is None and self._kept_names is not None:
                # The names kept from the last session come into this one, so that the
                # delete frees the port's device name (and lowers the floor) in them too;
                # otherwise every deleted name would stay taken for the daemon's life.
                self._taken_names()
            return super().delete(network, ref)

    def remove_all(self, network: str) -> list[str]:
        self._forget(network)
        self._names_key = None
        self._kept_names = None
        return super().remove_all(network)


__all__ = ["ResidentPortManager"]
