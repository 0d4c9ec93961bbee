"""The supervisor's lease events against a lease file rewritten the way dnsmasq does it.

dnsmasq updates its lease file in place: it truncates it, then writes every lease again. A
read that falls in between sees no lease at all; a renewal must still come out as one
"lease-renewed" event, not "lease-released" followed by "lease-added". A lease really gone
is still reported as released.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtnet.daemon.events import EventBus
from virtnet.daemon.leasewatch import LEASE_REREAD_S
from virtnet.daemon.supervise import Supervisor
from virtnet.service.engine import Engine
from virtnet.store.leases import lease_file
from virtnet.paths import StatePaths

NAME = "leasy"
DEFINITION = f"""<network>
  <name>{NAME}</name>
  <bridge name='vleasy0'/>
  <ip address='192.168.131.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.131.10' end='192.168.131.99'/></dhcp>
  </ip>
</network>
"""
MAC = "52:54:00:13:10:0b"


def lease_line(expiry: int) -> str:
    return f"{expiry} {MAC} 192.168.131.11 guest 01:{MAC}\n"


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Supervisor, EventBus, Path]]:
    engine = Engine(StatePaths.under(tmp_path))
    engine.define(DEFINITION)
    loop = asyncio.new_event_loop()
    bus = EventBus(loop)  # built on this thread: events are delivered here, at once
    supervisor = Supervisor(engine, bus)
    path = lease_file(engine.paths, NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield supervisor, bus, path
    finally:
        loop.close()


def lease_events(bus: EventBus) -> list[str]:
    return [event.type for event in bus.recent if event.type.startswith("lease-")]


def test_a_renewal_read_mid_rewrite_is_one_renewed_event(
        watched: tuple[Supervisor, EventBus, Path]) -> None:
    supervisor, bus, path = watched
    expiry = int(time.time()) + 3600
    path.write_text(lease_line(expiry))
    supervisor._observe_leases(NAME, publish=False)  # what the daemon knew before
    supervisor._observe_leases(NAME, publish=True)
    assert lease_events(bus) == []

    # dnsmasq renews: the file is empty for a moment, then holds the lease with its new expiry
    path.write_text("")
    writer = threading.Timer(LEASE_REREAD_S / 5, path.write_text,
                             args=(lease_line(expiry + 60),))
    writer.start()
    try:
        supervisor._observe_leases(NAME, publish=True)
    finally:
        writer.join()
    assert lease_events(bus) == ["lease-renewed"]
    assert next(e for e in bus.recent).data["expiry"] == expiry + 60


def test_a_lease_really_gone_is_released(watched: tuple[Supervisor, EventBus, Path]) -> None:
    supervisor, bus, path = watched
    path.write_text(lease_line(int(time.time()) + 3600))
    supervisor._observe_leases(NAME, publish=False)
    supervisor._observe_leases(NAME, publish=True)
    path.write_text("")
    supervisor._observe_leases(NAME, publish=True)
    assert lease_events(bus) == ["lease-released"]
