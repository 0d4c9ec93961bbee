"""The verbs that explain and prove reachability: doctor, lab, graph (they run in the user's
process, never in the daemon: rich output sized to the terminal, sandboxes, pictures)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from virtnet.errors import HostError, NotFoundError
from virtnet.face.common import (
    command,
    complete_network,
    current_output,
    echo,
    emit_json,
    engine_of,
    file_path,
    lookup_network,
    output_console,
    port_manager_of,
    read_input,
)
from virtnet.insight.doctor import read_host_view, run_doctor
from virtnet.insight.graph import (
    drawn_topology,
    guests_of_ports,
    hypothetical_guests,
    render,
    to_dot,
    write_output,
)
from virtnet.insight.lab import run_lab
from virtnet.insight.lab_layout import LabOptions


def _network_or_file(engine: Any, target: str) -> tuple[Any, Any]:
    """(definition, record or None): a known network by name wins over a file of that name."""
    try:
        record = engine.lookup(target)
        return record.current, record
    except NotFoundError:
        if target != "-" and not file_path(target).is_file():
            lookup_network(engine, target)  # virsh's "failed to get network" error
    data, name = read_input(target)
    net = engine.parse(data, source=name)
    return net, None


@command("doctor")
@click.argument("networks", nargs=-1, metavar="[NETWORK|FILE]...",
                shell_complete=complete_network)
@click.option("--guest-config", is_flag=True,
              help="Also print the guests' DHCP client configuration for each network.")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON.")
@click.pass_context
def doctor_cmd(ctx: click.Context, networks: tuple[str, ...], guest_config: bool,
               as_json: bool) -> None:
    """Check the host and explain who can reach whom on each network (all defined ones if
    none is named); exit 0 when healthy, 1 with problems."""
    engine = engine_of(ctx)
    targets = []
    for target in networks:
        net, record = _network_or_file(engine, target)
        targets.append(record.name if record is not None else net)
    report = run_doctor(engine, targets)
    if as_json:
        emit_json(report.to_dict())
        sys.exit(0 if report.healthy else 1)

    console = output_console()
    host = Table(title="host", show_lines=False, title_justify="left")
    for column in ("check", "", "detail"):
        host.add_column(column)
    for check in report.checks:
        mark = "[green]ok[/]" if check.ok else ("[red]PROBLEM[/]" if check.problem
                                                 else "[yellow]note[/]")
        detail = check.detail + "".join(f"\n  fix: {f}" for f in check.fix)
        host.add_row(check.name, mark, detail)
    console.print(host)
    for diagnosis in report.networks:
        state = "active" if diagnosis.active else "inactive"
        table = Table(title=f"network {diagnosis.name} ({diagnosis.mode}, {state})",
                      title_justify="left", show_lines=True)
        for column in ("pair", "", "why"):
            table.add_column(column)
        fixes: list[Any] = []
        for row in diagnosis.rows:
            cell = row.cell
            mark = "[green]yes[/]" if cell.predicted else "[red]no[/]"
            numbers = []
            for fix in cell.fix:
                if fix not in fixes:
                    fixes.append(fix)
                numbers.append(str(fixes.index(fix) + 1))
            note = f" (fix {', '.join(numbers)})" if numbers else ""
            table.add_row(row.label, mark, cell.reason + note)
        console.print(table)
        # the commands outside the table, one per line, so they copy and paste whole
        for number, fix in enumerate(fixes, start=1):
            echo(f"  fix {number} (on the {fix.where}): {fix.command}")
        for problem in diagnosis.problems:
            console.print(f"[red]problem:[/] {problem}", highlight=False)
        for warning in diagnosis.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        for note in diagnosis.notes:
            console.print(f"[dim]{note}[/]", highlight=False)
        if guest_config and diagnosis.guest_config:
            console.print("guest DHCP configuration:")
            for manager, text in diagnosis.guest_config.items():
                console.print(f"  [bold]{manager}[/]")
                for line in text.rstrip().splitlines():
                    console.print(f"    {line}", highlight=False, markup=False)
    console.print("[green]healthy[/]" if report.healthy else "[red]problems found[/]")
    sys.exit(0 if report.healthy else 1)


def lab_progress_line(message: str) -> None:
    """One stage of a lab run as a line on stderr (when not on a terminal)."""
    echo(f"lab: {message}", err=True)


@command("lab")
@click.argument("file")
@click.option("--guests", type=click.IntRange(1, 16), default=2, show_default=True,
              help="How many guests to plug in.")
@click.option("--hairpin", type=click.Choice(["on", "off"]), default="off", show_default=True,
              help="Hairpin (reflective relay) on the LAN switch's ports of the uplinks.")
@click.option("--dhcp-client", type=click.Choice(["udhcpc", "dhcpcd", "dhclient"]),
              default="udhcpc", show_default=True,
              help="The client guests run where the network serves DHCP.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def lab_cmd(file: str, guests: int, hairpin: str, dhcp_client: str, as_json: bool) -> None:
    """Build a sandbox of namespaces for the network in FILE, start it with virtnet, measure
    who reaches whom and compare with the prediction; exit 1 if any cell differs."""
    data, _name = read_input(file)
    options = LabOptions(guests=guests, hairpin=hairpin == "on", dhcp_client=dhcp_client)
    xml = data.decode("utf-8", errors="replace")
    try:
        if as_json:
            report = run_lab(xml, options)
            emit_json(report.to_dict())
            sys.exit(0 if report.all_match else 1)
        console = output_console()
        if current_output().isatty():  # the spinner is drawn on stdout
            with console.status("building the lab") as status:
                report = run_lab(xml, options, progress=lambda message: status.update(message))
        else:  # rich's spinner shows nothing off a terminal: a plain line per stage instead
            report = run_lab(xml, options, progress=lab_progress_line)
    except KeyboardInterrupt:
        echo("interrupted: the lab was removed", err=True)
        sys.exit(130)

    for guest in report.guests:
        console.print(f"{guest.name}: {guest.address or 'no address'} — {guest.how}",
                      highlight=False)
    table = Table(title=f"lab: network {report.network}, {report.mode}, hairpin "
                        f"{'on' if report.hairpin else 'off'}", title_justify="left")
    for column in ("from", "to", "predicted", "measured", "why"):
        table.add_column(column)
    for cell in report.cells:
        def word(value: bool) -> str:
            return "[green]yes[/]" if value else "[red]no[/]"

        measured = word(cell.measured) if cell.matches else f"[bold reverse]{word(cell.measured)}[/]"
        table.add_row(cell.src, cell.dst, word(cell.predicted), measured, cell.reason)
    console.print(table)
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items())
    verdict = "[green]all match[/]" if report.all_match else "[red]MISMATCH[/]"
    console.print(f"{report.matched}/{len(report.cells)} cells as predicted: {verdict} ({timing})")
    sys.exit(0 if report.all_match else 1)


@command("graph")
@click.argument("target", metavar="NETWORK|FILE", shell_complete=complete_network)
@click.option("-o", "--output", "output", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The picture to write: .svg or .png (.dot writes the Graphviz text).")
@click.option("--hairpin", type=click.Choice(["on", "off"]), default="off", show_default=True,
              help="Draw the external switch ports as hairpinning.")
@click.option("--guests", type=click.IntRange(1, 16), default=2, show_default=True,
              help="How many guests to draw when the network has no ports (yet).")
@click.pass_context
def graph_cmd(ctx: click.Context, target: str, output: Path, hairpin: str, guests: int) -> None:
    """Draw a network's topology (uplinks, bridge or macvtap devices, ports, guests) with the
    pairs that cannot reach each other marked."""
    engine = engine_of(ctx)
    net, record = _network_or_file(engine, target)
    drawn = None
    if record is not None and record.active:
        ports = [port.facts() for port in port_manager_of(ctx).list(record.name)]
        drawn = guests_of_ports(ports) if ports else None
    if drawn is None:
        drawn = hypothetical_guests(net, guests)
    active = record is not None and record.active
    # the host as the doctor reads it: the uplink's name, its addresses, other firewalls;
    # a host that cannot be read (no privilege) is drawn as a plain one
    try:
        view = read_host_view(engine.active_bridges())
    except (HostError, OSError):
        view = None
    topo = drawn_topology(net, view, active, len(drawn), hairpin == "on")
    text = to_dot(net, drawn, topo, active=record.active if record is not None else None)
    if output.suffix.lower() == ".dot":
        write_output(output, text)
    else:
        render(text, output)
    echo(f"{output}: network {net.name}, {len(drawn)} guest(s)")


# The verbs of this group, as virtnet.face.cli registers them.
COMMANDS = (
    doctor_cmd,
    lab_cmd,
    graph_cmd,
)
