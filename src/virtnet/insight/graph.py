"""``virtnet graph``: a network's topology as a picture, with who cannot reach whom marked.

:func:`to_dot` is pure: DOT text from the definition, the ports a running network has (or two
hypothetical guests), and the reachability :mod:`virtnet.insight.reach` predicts. :func:`render` hands
it to Graphviz's ``dot`` (Debian package ``graphviz``) for an .svg or .png.

The picture: the host as a box holding its bridge or uplinks and the guests' devices; guests
beside it; the external switch, the LAN and the outside behind the uplink. Each unreachable
pair is a red dashed arrow (both heads when neither side reaches the other) numbered after the
table of reachability printed with the picture.
"""

from __future__ import annotations

import errno
import html
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from virtnet.insight.doctor import HostView, host_topology
from virtnet.plan.drivers import driver_for
from virtnet.errors import StorageError, VirtnetError
from virtnet.host import Host
from virtnet.spec.model import ForwardMode, Network
from virtnet.insight.reach import predict
from virtnet.insight.reach_summary import summary
from virtnet.insight.reach_terms import (
    Cell,
    Topology,
    bridge_address,
    default_guest_uplinks,
    guest_name,
    pool,
)
from virtnet.store.store import atomic_write

FONT = "DejaVu Sans"
RENDER_TIMEOUT_S = 30.0
FORMATS = {".svg": "svg", ".png": "png"}
COLOR_HOST = "#3b6ea5"
COLOR_NO = "#c62828"
COLOR_YES = "#2e7d32"
FILL_HOST = "#eef3fa"
FILL_GUEST = "#fff8e1"
FILL_OUTSIDE = "#f1f1f1"
# the picture fits a page (about 1000 px at 96 dpi): drawn top to bottom, its table's reasons
# and its node labels wrapped
WRAP_REASON = 44
WRAP_LEGEND = 70
WRAP_LABEL = 40
LEGEND_KEY = ("red dashed line: cannot reach; the bar marks the one not reached (bars at both "
              "ends: neither reaches the other)")


class GraphError(VirtnetError):
    """The picture cannot be made (no Graphviz, an unknown file type)."""


@dataclass(frozen=True)
class GuestPort:
    """A guest's attachment as the picture shows it."""

    name: str  # guest1.. (the endpoint names of virtnet.insight.reach_terms)
    device: str | None  # vnet0, macvtap1; None for a hypothetical guest
    mac: str | None = None
    uplink: str | None = None  # macvtap: the uplink its device is on
    owner: str | None = None  # the VM that owns the port


def _q(text: str, width: int = WRAP_LABEL) -> str:
    """A DOT double-quoted string; lines longer than WIDTH (0: any) broken between words."""
    if width:
        text = "\n".join(_split_words(line, width) for line in text.split("\n"))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def hypothetical_guests(net: Network, count: int = 2) -> list[GuestPort]:
    uplinks = default_guest_uplinks(net, count) if net.uses_macvtap else (None,) * count
    return [GuestPort(guest_name(i), None, None, uplinks[i - 1]) for i in range(1, count + 1)]


def _lines(text: str, width: int) -> list[str]:
    """TEXT in lines of at most WIDTH characters, broken between words (a longer word keeps
    a line of its own)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _split_words(line: str, width: int) -> str:
    return line if len(line) <= width else "\n".join(_lines(line, width))


def _wrap(text: str, width: int = WRAP_REASON) -> str:
    """TEXT as an HTML label's left-aligned lines of at most WIDTH characters."""
    lines = _lines(text, width)
    if len(lines) <= 1:
        return _h(text)
    return "".join(_h(line) + "<br align='left'/>" for line in lines)


def _reach_table(net: Network, topo: Topology) -> str:
    rows = []
    for number, row in enumerate(summary(net, topo), start=1):
        verdict = ("<font color='%s'><b>yes</b></font>" % COLOR_YES if row.cell.predicted
                   else "<font color='%s'><b>no</b></font>" % COLOR_NO)
        reason = _wrap(row.cell.reason)
        rows.append(f"<tr><td align='left'>{_h(row.label)}</td><td>{verdict}</td>"
                    f"<td align='left' balign='left'>{reason}</td></tr>")
    return ("<<table border='0' cellborder='1' cellspacing='0' cellpadding='4'>"
            "<tr><td colspan='3' bgcolor='#e0e0e0'><b>predicted reachability</b></td></tr>"
            "<tr><td><b>pair</b></td><td><b>?</b></td><td><b>why</b></td></tr>"
            + "".join(rows)
            + f"<tr><td colspan='3' align='left' balign='left'><font color='{COLOR_NO}'>- - -|"
            "</font> " + _wrap(LEGEND_KEY, WRAP_LEGEND) + "</td></tr></table>>")


def _unreachable(cells: list[Cell]) -> list[tuple[str, str, str]]:
    """(a, b, dir) for each unordered pair with a "no": dir is 'forward' (a cannot reach b),
    'back' (b cannot reach a) or 'both'."""
    no = {(c.src, c.dst) for c in cells if not c.predicted}
    seen = set()
    marks = []
    for c in cells:
        key = frozenset((c.src, c.dst))
        if key in seen or not ({(c.src, c.dst), (c.dst, c.src)} & no):
            continue
        seen.add(key)
        a, b = c.src, c.dst
        there, back = (a, b) in no, (b, a) in no
        marks.append((a, b, "both" if there and back else "forward" if there else "back"))
    return marks


def to_dot(net: Network, guests: list[GuestPort] | None = None, topo: Topology | None = None,
           active: bool | None = None) -> str:
    """The DOT text of NET's topology with GUESTS (default: two hypothetical ones)."""
    guests = guests if guests is not None else hypothetical_guests(net)
    topo = topo or Topology(guests=len(guests))
    shape = driver_for(net).topology(net)
    on_bridge = shape.own_bridge or shape.host_bridge is not None  # guests on taps
    if shape.macvtap and topo.guest_uplinks is None:
        topo = replace(topo, guest_uplinks=tuple(g.uplink for g in guests))
    cells = predict(net, topo)
    mode = net.forward_mode
    state = "" if active is None else (" — running" if active else " — not running")
    lines = [
        "digraph virtnet {",
        f'  graph [rankdir=TB, fontname="{FONT}", fontsize=18, labelloc=t, nodesep=0.35, '
        f'ranksep=0.7, bgcolor=white, pad=0.3, newrank=true, '
        f'label={_q(f"network {net.name} — forward mode {shape.title}{state}", 0)}];',
        f'  node [fontname="{FONT}", fontsize=11, shape=box, style="rounded,filled", '
        f'fillcolor="{FILL_HOST}", color="{COLOR_HOST}"];',
        f'  edge [fontname="{FONT}", fontsize=10, arrowhead=none, color="#555555"];',
    ]
    # the host, its devices
    lines.append("  subgraph cluster_host {")
    lines.append(f'    label="host"; style="rounded,bold"; color="{COLOR_HOST}"; '
                 f'fontcolor="{COLOR_HOST}";')
    uplinks = list(pool(net))
    if shape.own_bridge and net.forward is not None and net.forward.dev:
        uplinks = [net.forward.dev]
    host_label = "host's own stack"
    gateway = bridge_address(net)
    if shape.own_bridge and gateway is not None:
        host_label += f"\n{gateway.ip} on {net.bridge_name}"
    lines.append(f"    host [label={_q(host_label)}, shape=component];")
    lan_side = "uplink"
    if shape.own_bridge:
        bridge_lines = [f"bridge {net.bridge_name}"]
        bridge_lines += [str(ip.interface) for ip in net.ips if ip.interface is not None]
        for ip in net.ips:
            for r in ip.ranges:
                bridge_lines.append(f"DHCP {r.start} – {r.end}")
        if net.port_isolated:
            bridge_lines.append("ports isolated")
        lines.append(f"    bridge [label={_q(chr(10).join(bridge_lines))}, penwidth=2];")
        lines.append("    host -> bridge;")
        if uplinks:
            out = f"uplink {uplinks[0]}"
        elif topo.outside_dev is not None:  # from the host's facts, as the doctor reads them
            out = f"uplink {topo.outside_dev}\n(of the default route)"
        else:
            out = ("uplink\n(of the default route)" if topo.has_default_route
                   else "uplink\n(none: no default route)")
        lines.append(f"    uplink [label={_q(out)}];")
        if shape.uplink_via is not None:
            lines.append(f"    bridge -> uplink [label={_q(shape.uplink_via)}, style=bold];")
        else:
            lines.append('    bridge -> uplink [label="no forwarding", style=invis];')
        lines.append("    host -> uplink;")
    elif shape.host_bridge is not None:
        lines.append(f"    bridge [label={_q(f'host bridge {shape.host_bridge}')}, penwidth=2];")
        lines.append("    host -> bridge;")
        port = f" {topo.host_uplink_port}" if topo.host_uplink_port else ""
        port_label = f"LAN interface{port} (a port of {shape.host_bridge})"
        lines.append(f"    uplink [label={_q(port_label)}];")
        lines.append("    bridge -> uplink;")
    else:
        for index, uplink in enumerate(uplinks or ["(no interface)"]):
            node = f"uplink{index}"
            lines.append(f"    {node} [label={_q(uplink + chr(10) + 'uplink')}, penwidth=2];")
        host_link = topo.host_uplink or (uplinks[0] if uplinks and mode is not
                                         ForwardMode.PASSTHROUGH else None)
        if host_link in uplinks:
            lines.append(f"    host -> uplink{uplinks.index(host_link)} "
                         "[label=\"host's address\"];")
        lan_side = "uplink0"
    for guest in guests:
        node = f"dev_{guest.name}"
        if on_bridge:
            device = guest.device or "tap (vnetN)"
            lines.append(f"    {node} [label={_q(device)}, fontsize=10];")
            lines.append(f"    bridge -> {node};")
        elif guest.uplink is not None:
            device = guest.device or "macvtapN"
            mode_name = "passthru" if mode is ForwardMode.PASSTHROUGH else mode.value
            lines.append(f"    {node} [label={_q(f'{device}{chr(10)}mode {mode_name}')}, "
                         "fontsize=10];")
            lines.append(f"    uplink{uplinks.index(guest.uplink)} -> {node};")
    lines.append("  }")
    # guests
    for guest in guests:
        label = guest.name + (f" ({guest.owner})" if guest.owner else "")
        label += f"\n{guest.mac}" if guest.mac else ""
        lines.append(f'  {guest.name} [label={_q(label)}, fillcolor="{FILL_GUEST}", '
                     'color="#b08900", shape=box3d];')
        if on_bridge or guest.uplink is not None:
            lines.append(f"  dev_{guest.name} -> {guest.name};")
    # outside the host
    hairpin = "on" if topo.hairpin else "off"
    lines.append(f'  switch [label={_q(f"external switch{chr(10)}hairpin {hairpin}")}, '
                 f'shape=box, fillcolor="{FILL_OUTSIDE}", color="#777777"];')
    lines.append(f'  lan [label="LAN host / router", fillcolor="{FILL_OUTSIDE}", '
                 'color="#777777"];')
    lines.append(f'  upstream [label="outside (upstream)", shape=ellipse, '
                 f'fillcolor="{FILL_OUTSIDE}", color="#777777"];')
    if not on_bridge:
        for index in range(len(uplinks)):
            lines.append(f"  uplink{index} -> switch;")
    else:
        lines.append(f"  {lan_side} -> switch;")
    lines.append("  switch -> lan;")
    lines.append("  lan -> upstream;")
    # what cannot reach what
    for a, b, direction in _unreachable(cells):
        src, dst = a, b
        if direction == "back":
            src, dst = b, a
        heads = "both" if direction == "both" else "forward"
        lines.append(f'  {src} -> {dst} [color="{COLOR_NO}", fontcolor="{COLOR_NO}", '
                     f'style=dashed, penwidth=1.6, dir={heads}, arrowhead=tee, arrowtail=tee, '
                     f'constraint=false, label="✗", fontsize=13];')
    lines.append(f"  legend [shape=plain, fillcolor=white, label={_reach_table(net, topo)}];")
    lines.append("  { rank=sink; legend; }")
    lines.append("  upstream -> legend [style=invis];  # below the picture, not beside it")
    lines.append("}")
    return "\n".join(lines) + "\n"


def drawn_topology(net: Network, view: HostView | None, active: bool, guests: int,
                   hairpin: bool) -> Topology:
    """The topology to draw NET in: the doctor's reading of the host (VIEW: its default
    route's device, addresses, firewalls), with the guests and switch drawn; without a VIEW,
    a plain host's."""
    if view is None:
        return Topology(guests=guests, hairpin=hairpin)
    topo, _notes = host_topology(net, view, active)
    return replace(topo, guests=guests, hairpin=hairpin)


def render(dot_text: str, out: Path) -> None:
    """Render DOT_TEXT into OUT (.svg or .png) with Graphviz's dot."""
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise GraphError(f"{out}: the picture must be .svg or .png")
    dot = shutil.which("dot", path="/usr/bin:/bin:/usr/local/bin")
    if dot is None:
        raise GraphError("Graphviz's dot is not installed (apt-get install graphviz)")
    proc = Host.run_filter([dot, f"-T{fmt}", "-Gdpi=96"], dot_text.encode(), RENDER_TIMEOUT_S)
    if proc is None:
        raise GraphError(f"dot did not finish within {RENDER_TIMEOUT_S:.0f} s")
    if proc.returncode != 0:
        raise GraphError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")
    write_output(out, proc.stdout)


def write_output(out: Path, data: bytes | str) -> None:
    """Replace OUT with DATA (a temp file renamed: a full or read-only disk leaves the old
    picture, and its error names OUT and the errno)."""
    if not out.parent.is_dir():
        raise StorageError("write", out, errno.ENOENT)
    atomic_write(out, data, mode=0o644, durable=False)


def guests_of_ports(summaries: list[dict[str, object]]) -> list[GuestPort]:
    """Guests from a running network's port summaries (``PortRecord.facts()``)."""
    guests = []
    for index, port in enumerate(summaries, start=1):
        guests.append(GuestPort(guest_name(index),
                                str(port["device"]) if port.get("device") else None,
                                str(port["mac"]) if port.get("mac") else None,
                                str(port["uplink"]) if port.get("uplink") else None,
                                str(port["owner"]) if port.get("owner") else None))
    return guests


__all__ = ["FORMATS", "GraphError", "GuestPort", "drawn_topology", "guests_of_ports",
           "hypothetical_guests",
           "render", "to_dot", "write_output"]
