"""The daemon's event bus: filtering by network, order, publishing from other threads, and a
subscriber that reads too slowly being cut off instead of holding memory."""

from __future__ import annotations

import asyncio
import threading

import pytest

from virtnet.daemon.events import EVENT_TYPES, EventBus


def test_events_reach_the_subscribers_that_want_them_in_order() -> None:
    async def scenario() -> tuple[list[dict], list[dict], list[dict]]:
        bus = EventBus(asyncio.get_running_loop(), clock=lambda: 100.0)
        everything = bus.subscribe()
        only_a = bus.subscribe("a")
        bus.publish("network-started", "a", bridge="virbr0", dnsmasq_pid=7)
        bus.publish("network-started", "b", bridge="virbr1", dnsmasq_pid=8)
        bus.publish("daemon-stopping", pid=1)
        all_events = [e.to_dict() for e in await everything.next_batch()]
        a_events = [e.to_dict() for e in await only_a.next_batch()]
        bus.close()
        assert await everything.next_batch() == []  # closed: the stream ends
        return all_events, a_events, [e.to_dict() for e in bus.recent]

    all_events, a_events, recent = asyncio.run(scenario())
    assert [(e["seq"], e["type"], e["network"]) for e in all_events] == [
        (1, "network-started", "a"), (2, "network-started", "b"), (3, "daemon-stopping", None)]
    assert all_events[0] == {"seq": 1, "time": 100.0, "type": "network-started",
                             "network": "a", "bridge": "virbr0", "dnsmasq_pid": 7}
    assert [e["seq"] for e in a_events] == [1, 3]  # its network's, and the daemon's own
    assert recent == all_events


def test_events_published_from_worker_threads_arrive() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        bus = EventBus(loop)
        subscription = bus.subscribe()
        workers = [threading.Thread(target=bus.publish, args=("port-created", "n"),
                                    kwargs={"uuid": str(i)}) for i in range(20)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        got: list[str] = []
        while len(got) < 20:
            got += [e.data["uuid"] for e in await asyncio.wait_for(subscription.next_batch(), 5)]
        return got

    assert sorted(asyncio.run(scenario()), key=int) == [str(i) for i in range(20)]


def test_a_subscriber_that_falls_behind_is_cut_off() -> None:
    async def scenario() -> tuple[bool, list]:
        bus = EventBus(asyncio.get_running_loop())
        slow = bus.subscribe()
        slow.limit = 10
        for i in range(11):
            bus.publish("lease-added", "n", ip=f"10.0.0.{i}")
        return slow.overflowed, await slow.next_batch()

    overflowed, batch = asyncio.run(scenario())
    assert overflowed and batch == []


def test_unknown_event_types_are_refused() -> None:
    async def scenario() -> None:
        EventBus(asyncio.get_running_loop()).publish("network-exploded", "n")

    with pytest.raises(ValueError, match="unknown event type"):
        asyncio.run(scenario())
    assert "lease-added" in EVENT_TYPES
