"""What the doctor (and the graph) show of a network's reachability: a few rows, one per kind
of pair (guest and guest on one uplink or two, guest and host, LAN, outside), each a cell
:func:`virtnet.insight.reach.predict` decides.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from virtnet.spec.model import ForwardMode, Network
from virtnet.insight.reach import predict
from virtnet.insight.reach_terms import HOST, LAN, UPSTREAM, Cell, Topology, pool


@dataclass(frozen=True)
class Row:
    """One line of a network's reachability table: a kind of pair, with a cell for it."""

    label: str
    cell: Cell

    def to_dict(self) -> dict[str, Any]:
        return {"pair": self.label, **self.cell.to_dict()}


def summary(net: Network, topo: Topology | None = None) -> list[Row]:
    """guest↔guest (same and different uplink), guest↔host, guest↔LAN, guest→outside and
    outside→guest, as the doctor shows them."""
    topo = topo or Topology()
    uplinks = pool(net)
    macvtap = net.uses_macvtap
    rows: list[Row] = []

    def cell(cells: list[Cell], src: str, dst: str) -> Cell:
        return next(c for c in cells if c.src == src and c.dst == dst)

    if macvtap and net.forward_mode is not ForwardMode.PASSTHROUGH and uplinks:
        same = predict(net, replace(topo, guests=2, guest_uplinks=(uplinks[0], uplinks[0])))
        rows.append(Row(f"guest↔guest, same uplink ({uplinks[0]})",
                        cell(same, "guest1", "guest2")))
    else:
        same = predict(net, replace(topo, guests=2))
        label = "guest↔guest" if not macvtap else "guest↔guest (each its own uplink)"
        rows.append(Row(label, cell(same, "guest1", "guest2")))
    if macvtap and net.forward_mode is not ForwardMode.PASSTHROUGH and len(uplinks) > 1:
        other = predict(net, replace(topo, guests=2, guest_uplinks=(uplinks[0], uplinks[1])))
        rows.append(Row(f"guest↔guest, different uplinks ({uplinks[0]}, {uplinks[1]})",
                        cell(other, "guest1", "guest2")))
    for src, dst, label in (("guest1", HOST, "guest→host"), (HOST, "guest1", "host→guest"),
                            ("guest1", LAN, "guest→LAN"), (LAN, "guest1", "LAN→guest"),
                            ("guest1", UPSTREAM, "guest→outside"),
                            (UPSTREAM, "guest1", "outside→guest")):
        rows.append(Row(label, cell(same, src, dst)))
    return rows



__all__ = [
    "Row",
    "summary",
]
