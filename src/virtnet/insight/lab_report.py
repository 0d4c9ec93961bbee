"""What a lab finds: its guests as built (namespace, MAC, interface, address and how it got
it), each cell with its prediction and its measurement side by side, and the report of a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from virtnet.insight.reach_terms import Fix


@dataclass
class LabGuest:
    name: str  # guest1..
    ns: str
    mac: str
    iface: str | None = None  # its interface inside its namespace (None: it got no port)
    address: str | None = None  # "192.168.122.57/24"
    how: str = ""  # "dhcp (udhcpc)", "static", "no port: ..."
    uplink: str | None = None  # macvtap: the uplink its port is on
    host_end: str | None = None  # veth: its end on the bridge, in the host namespace

    @property
    def ip(self) -> str | None:
        return self.address.split("/")[0] if self.address else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.ns, "mac": self.mac,
                "interface": self.iface, "address": self.address, "how": self.how,
                "uplink": self.uplink}


@dataclass
class LabCell:
    src: str
    dst: str
    predicted: bool
    measured: bool
    reason: str
    fix: tuple[Fix, ...] = ()

    @property
    def matches(self) -> bool:
        return self.predicted == self.measured

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.src, "to": self.dst, "predicted": self.predicted,
                "measured": self.measured, "reason": self.reason,
                "fix": [f.to_dict() for f in self.fix]}


@dataclass
class LabReport:
    network: str
    mode: str
    hairpin: bool
    dhcp_client: str
    guests: list[LabGuest]
    cells: list[LabCell]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def matched(self) -> int:
        return sum(cell.matches for cell in self.cells)

    @property
    def all_match(self) -> bool:
        return self.matched == len(self.cells)

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "mode": self.mode,
            "hairpin": self.hairpin,
            "dhcp_client": self.dhcp_client,
            "guests": [g.to_dict() for g in self.guests],
            "cells": [c.to_dict() for c in self.cells],
            "matched": self.matched,
            "total": len(self.cells),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


__all__ = [
    "LabCell",
    "LabGuest",
    "LabReport",
]
