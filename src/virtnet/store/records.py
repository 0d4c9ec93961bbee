"""What the state says about networks, as the engine reads it: one network's record (its
definitions and status), the bridges of the active networks, the cache of parsed
definitions a long-lived process keeps, and how an unreadable state directory or file is
reported.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from virtnet.errors import StorageError
from virtnet.spec.model import Network
from virtnet.store.store import NetworkStatus, StateError, StateStore, Warn

# The kind of the action that makes a network's own bridge (virtnet.plan.actions.CreateBridge;
# a unit test holds the two together): the records say which bridges a start made without
# loading the action classes.
CREATE_BRIDGE_KIND = "create-bridge"


@dataclass
class NetworkRecord:
    """One network as the state knows it: its persistent and live definitions, its status."""

    name: str
    config: Network | None  # persistent definition; None for a transient network
    status: NetworkStatus | None  # present while active
    live: Network | None  # the definition it runs with, while active
    autostart: bool

    @property
    def active(self) -> bool:
        return self.status is not None and self.status.active

    @property
    def interrupted(self) -> bool:
        """A start that crashed (between two steps or inside one) left a record of what
        it applied or began."""
        return self.status is not None and not self.status.active

    @property
    def persistent(self) -> bool:
        return self.config is not None

    @property
    def current(self) -> Network:
        """What virsh shows without --inactive: the live definition while active."""
        if self.active and self.live is not None:
            return self.live
        net = self.config if self.config is not None else self.live
        assert net is not None  # a record has at least one of the two
        return net

    @property
    def uuid(self) -> str:
        return self.current.uuid or ""

    @property
    def bridge(self) -> str | None:
        return self.current.bridge_name


def created_links(recorded: Iterable[dict[str, Any]]) -> list[str]:
    """The links a start made, from its recorded actions (Action.to_dict): its bridge."""
    return [str(data["name"]) for data in recorded
            if data.get("kind") == CREATE_BRIDGE_KIND and data.get("name")]


class ActiveBridges(Mapping[str, str]):
    """The bridges of the active networks that made one of their own -> network name, read
    from the status records on first use, so a start whose subnets collide with nothing
    never reads the other networks' records."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.found: dict[str, str] | None = None

    def load(self) -> dict[str, str]:
        if self.found is None:
            found: dict[str, str] = {}
            try:
                names = self.store.status_names()
            except OSError:
                names = []
            for name in names:
                try:
                    status = self.store.read_status(name)
                except (StateError, OSError):
                    continue  # a record that cannot be read names nothing
                if status is None or not status.active or not status.bridge:
                    continue
                if created_links(status.actions):
                    found[status.bridge] = status.name  # a host bridge is not the network's
            self.found = found
        return self.found

    def __getitem__(self, bridge: str) -> str:
        return self.load()[bridge]

    def __iter__(self) -> Iterator[str]:
        return iter(self.load())

    def __len__(self) -> int:
        return len(self.load())


class ParsedCache:
    """A bounded, thread-safe LRU of pickled networks by (text, source) (Engine.parse)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[tuple[bytes | str, str | None], bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[bytes | str, str | None]) -> bytes | None:
        with self.lock:
            found = self.items.get(key)
            if found is not None:
                self.items.move_to_end(key)
            return found

    def put(self, key: tuple[bytes | str, str | None], value: bytes) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


PARSED_CACHE_SIZE = 128  # definitions and live records
# Larger texts (a definition may have 10 MiB) are parsed each time: the cache holds at most
# 128 x 64 KiB of text and as much pickled.
PARSED_CACHE_MAX_TEXT = 64 * 1024
PARSED = ParsedCache(PARSED_CACHE_SIZE)  # the process's


@contextlib.contextmanager
def readable_state() -> Iterator[None]:
    """The state directory refused to an unprivileged user is most likely root's: say so."""
    try:
        yield
    except StorageError as exc:
        if exc.errno != errno.EACCES or exc.hint or os.geteuid() == 0:
            raise
        raise StorageError(exc.action, exc.path, exc.errno, exc.strerror,
                           hint="the state directory belongs to another user: run virtnet "
                                "as root, or give --state-dir") from None


def reporter(warn: Warn | None) -> Warn:
    """A warning goes to the log (the daemon's, where libvirt's daemon reports a file it
    could not load) and to WARN, the caller's user, when there is one."""

    def report(message: str) -> None:
        import logging  # only when something is reported: 14 ms, for every command

        logger = logging.getLogger("virtnet")
        if not logger.handlers:  # a library's logger: no last-resort copy on stderr
            logger.addHandler(logging.NullHandler())
        logger.warning("%s", message)
        if warn is not None:
            warn(message)

    return report


__all__ = [
    "CREATE_BRIDGE_KIND",
    "PARSED",
    "PARSED_CACHE_MAX_TEXT",
    "ActiveBridges",
    "NetworkRecord",
    "ParsedCache",
    "created_links",
    "readable_state",
    "reporter",
]
