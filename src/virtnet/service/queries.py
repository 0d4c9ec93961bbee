"""The read-only questions about networks: net-list's rows, net-info, net-dhcp-leases, and
how a network recorded active compares with what the kernel shows (its health). None takes
the state lock or changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from virtnet.store.records import NetworkRecord
from virtnet.store.store import NetworkStatus, Warn, path_exists
from virtnet.store.leases import lease_file, read_leases

if TYPE_CHECKING:
    from virtnet.service.engine import Engine
    from virtnet.store.leases import LeaseRow


@dataclass
class Health:
    """What the kernel says about a network recorded active."""

    bridge_present: bool | None = None  # None: the network has no bridge of ours to check
    dnsmasq_running: bool | None = None  # None: no dnsmasq was started
    problems: list[str] = field(default_factory=list)

    @property
    def degraded(self) -> bool:
        return bool(self.problems)


def health(engine: Engine, record: NetworkRecord) -> Health:
    """Compare what RECORD's status claims with what the kernel shows now."""
    found = Health()
    status = record.status
    if status is None:
        return found
    if not status.active:
        found.problems.append(
            f"an interrupted start left {len(status.actions)} step(s) to undo; "
            "net-start or net-destroy undoes them"
        )
        return found
    if path_exists(engine.paths.apply_journal(record.name)):  # left for a privileged command
        found.problems.append(
            "an interrupted net-apply left the network partly changed; the next command "
            "run with CAP_NET_ADMIN reverts it"
        )
    if status.bridge:  # our own bridge, or the host's bridge a network attaches to
        found.bridge_present = engine.link_in_use(status.bridge)
        if not found.bridge_present:
            found.problems.append(f"bridge {status.bridge} is missing")
    if status.dnsmasq_pid is not None:
        found.dnsmasq_running = engine.dnsmasq_alive(status.name, status.dnsmasq_pid)
        if not found.dnsmasq_running:
            found.problems.append(f"dnsmasq (pid {status.dnsmasq_pid}) is not running")
    return found


def list_networks(engine: Engine, *, all: bool = False,  # noqa: A002 - virsh's option name
                  autostart: bool = False, inactive: bool = False, persistent: bool = False,
                  transient: bool = False, no_autostart: bool = False,
                  warn: Warn | None = None) -> list[dict[str, Any]]:
    """Rows like ``virsh net-list`` (see Engine.list_networks)."""
    rows = []
    for record in engine.records(warn):
        if not all and record.active == inactive:
            continue
        if persistent and not record.persistent or transient and record.persistent:
            continue
        if autostart and not record.autostart or no_autostart and record.autostart:
            continue
        rows.append({
            "name": record.name,
            "uuid": record.uuid,
            "state": "active" if record.active else "inactive",
            "autostart": record.autostart,
            "persistent": record.persistent,
            "bridge": record.bridge,
            "problems": health(engine, record).problems,
        })
    return rows


def info(engine: Engine, name: str) -> dict[str, Any]:
    """net-info's facts of the network NAME (or uuid), its health and its connections."""
    record = engine.lookup(name)
    found = health(engine, record)
    status = record.status
    return {
        "name": record.name,
        "uuid": record.uuid,
        "active": record.active,
        "persistent": record.persistent,
        "autostart": record.autostart,
        "bridge": record.bridge,
        "forward_mode": record.current.forward_mode.value,
        "bridge_present": found.bridge_present,
        "dnsmasq_pid": status.dnsmasq_pid if status else None,
        "dnsmasq_running": found.dnsmasq_running,
        "started_at": status.started_at if status else None,
        "connections": status.connections if status else 0,
        # per pool interface of a direct network (from the port records: store.ports)
        "interface_connections": {
            i.dev: i.connections
            for i in (record.current.forward.interfaces if record.current.forward else [])
        } if record.current.uses_macvtap else {},
        "problems": found.problems,
        # rules added to other firewalls' chains at start (virtnet.plan.coexist), and why
        "coexistence": coexistence(status),
    }


def coexistence(status: NetworkStatus | None) -> list[dict[str, Any]]:
    if status is None:
        return []
    # the action classes load only for a network that is running (net-info of an
    # inactive one needs none)
    from virtnet.plan.coexist import recorded_rules

    return recorded_rules(status.actions)


def dhcp_leases(engine: Engine, name: str, mac: str | None = None) -> list[LeaseRow]:
    """net-dhcp-leases: the leases of network NAME now, MAC's alone when given."""
    record = engine.lookup(name)
    return read_leases(
        lease_file(engine.paths, record.name), record.current, engine.store.now(), mac
    )


__all__ = ["Health", "coexistence", "dhcp_leases", "health", "info", "list_networks"]
