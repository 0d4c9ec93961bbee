"""The daemon's event stream: what happened to networks, dnsmasq, leases and ports.

Events are published from any thread (the workers that run engine calls, the supervisor) and
delivered in the event loop to every subscriber whose filter matches. Each subscriber has a
bounded queue: one that does not read fast enough is told so (an ``overflow`` event) and cut
off, so a stalled client never makes the daemon hold memory without bound.

On the wire (``GET /v1/events``) every event is one JSON object per line (ndjson)::

    {"seq": 7, "time": 1767225600.25, "type": "lease-added", "network": "default",
     "mac": "52:54:00:12:34:56", "ip": "192.168.122.10", ...}

``seq`` grows by one per event the daemon delivered (a gap tells a client it missed events);
``time`` is the unix time at which the daemon saw the change.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

QUEUE_LIMIT = 4096  # events buffered per subscriber before it is cut off

# Every event type the daemon publishes (docs/api.md lists what each one carries).
EVENT_TYPES = frozenset({
    "network-defined", "network-undefined", "network-started", "network-stopped",
    "network-adopted", "network-degraded", "network-cleaned",
    "dnsmasq-died", "dnsmasq-restarted", "dnsmasq-restart-failed",
    "lease-added", "lease-renewed", "lease-released", "lease-expired",
    "port-created", "port-deleted",
    "daemon-started", "daemon-stopping",
})


@dataclass(frozen=True)
class Event:
    type: str
    time: float
    network: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "time": self.time, "type": self.type,
                               "network": self.network}
        out.update(self.data)
        return out

    def to_line(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode() + b"\n"


class Subscription:
    """One client's view of the stream: events for one network (or all), in order."""

    def __init__(self, network: str | None, limit: int = QUEUE_LIMIT) -> None:
        self.network = network
        self.limit = limit
        self.overflowed = False
        self.closed = False
        self._queue: collections.deque[Event] = collections.deque()
        self._ready = asyncio.Event()

    def wants(self, event: Event) -> bool:
        # Daemon-wide events (no network) go to everyone.
        return self.network is None or event.network is None or event.network == self.network

    def offer(self, event: Event) -> None:
        if self.closed or self.overflowed:
            return
        if len(self._queue) >= self.limit:
            self.overflowed = True
            self._queue.clear()
        else:
            self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next_batch(self) -> list[Event]:
        """The events queued so far (waiting for at least one); [] once closed or overflowed."""
        while not self._queue and not (self.closed or self.overflowed):
            self._ready.clear()
            await self._ready.wait()
        batch = list(self._queue)
        self._queue.clear()
        return batch


class EventBus:
    """Fan-out of events to subscribers; ``publish`` may be called from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float] = time.time) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._clock = clock
        self._subscribers: set[Subscription] = set()
        self._seq = 0
        self._closed = False
        # The last events, for the daemon's own log and for tests that look back.
        self.recent: collections.deque[Event] = collections.deque(maxlen=512)

    def publish(self, type: str, network: str | None = None, **data: Any) -> None:  # noqa: A002
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        event = Event(type=type, time=round(self._clock(), 6), network=network, data=data)
        if threading.get_ident() == self._loop_thread:
            self._deliver(event)
        else:
            try:
                self._loop.call_soon_threadsafe(self._deliver, event)
            except RuntimeError:
                pass  # the loop is closed: the daemon is exiting, nobody listens any more

    def _deliver(self, event: Event) -> None:
        self._seq += 1
        event = Event(event.type, event.time, event.network, event.data, self._seq)
        self.recent.append(event)
        for subscriber in list(self._subscribers):
            if subscriber.wants(event):
                subscriber.offer(event)

    def subscribe(self, network: str | None = None) -> Subscription:
        subscription = Subscription(network)
        if self._closed:
            subscription.close()
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        subscription.close()

    def close(self) -> None:
        """End every stream (the daemon is stopping)."""
        self._closed = True
        for subscriber in list(self._subscribers):
            subscriber.close()
