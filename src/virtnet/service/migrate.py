"""Moving networks between libvirt and virtnet: ``virtnet import`` and ``virtnet export``.

Import reads a libvirt's own files (its persistent definitions, the autostart links beside them,
and the status files of the networks it runs) and defines each network in virtnet as it is:
same name, UUID, bridge and MAC, so guests configured for the libvirt network find the same
bridge under virtnet. A network libvirt is running is refused, with the reason: its bridge,
dnsmasq and firewall rules are libvirt's while it runs, and taking them over under running
guests is not something virtnet does behind libvirt's back. libvirt's files are never changed:
the result says which ``virsh`` commands hand a network over for good.

Export writes virtnet's definitions in libvirt's own format (the inactive XML, byte for byte
what libvirt writes) as NAME.xml files, with libvirt's autostart links, into a directory of
the user's choice — libvirt's own at /etc/libvirt/qemu/networks is read by libvirtd when it
starts — and says which commands give the network back to a running libvirtd. Existing files
are never overwritten.

Both are per network and all-or-nothing per network: a refused network changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtnet.errors import NotFoundError, VirtnetError
from virtnet.host import HostProcess
from virtnet.ids import check_network_name

LIBVIRT_CONFIG_DIR = Path("/etc/libvirt/qemu/networks")
LIBVIRT_STATUS_DIR = Path("/run/libvirt/network")
AUTOSTART = "autostart"


@dataclass(frozen=True)
class LibvirtNetworkFile:
    """One network libvirt defines, as its files show it."""

    name: str
    path: str  # its definition file
    data: bytes
    autostart: bool
    active: bool  # libvirt has a status file for it: it runs it now


@dataclass
class Outcome:
    """What import or export did (or, with dry_run, would do) with one network."""

    name: str
    done: bool
    reason: str = ""  # why not, when not done
    autostart: bool = False
    path: str = ""  # the file read (import) or written (export)
    next_steps: list[str] = field(default_factory=list)  # commands that finish the move

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "done": self.done, "reason": self.reason,
                "autostart": self.autostart, "path": self.path, "next_steps": self.next_steps}


def libvirt_network_files(config_dir: Path = LIBVIRT_CONFIG_DIR,
                          status_dir: Path = LIBVIRT_STATUS_DIR) -> list[LibvirtNetworkFile]:
    """libvirt's persistent networks in CONFIG_DIR (NAME.xml), which of them autostart
    (CONFIG_DIR/autostart/NAME.xml) and which run (STATUS_DIR/NAME.xml), sorted by name."""
    autostart = _xml_names(config_dir / AUTOSTART)
    active = _xml_names(status_dir)
    found = []
    for path, data in HostProcess.libvirt_network_files([config_dir]):
        name = Path(path).stem
        found.append(LibvirtNetworkFile(name, path, data, name in autostart, name in active))
    return sorted(found, key=lambda item: item.name)


def _xml_names(directory: Path) -> set[str]:
    return {entry[:-4] for entry in HostProcess.files.list_dir(directory)
            if entry.endswith(".xml")}


def import_networks(engine: Any, files: Iterable[LibvirtNetworkFile],
                    names: Iterable[str] = (), *, dry_run: bool = False) -> list[Outcome]:
    """Define each of FILES (only those NAMES name, if any) in virtnet, with its autostart."""
    wanted = set(names)
    files = list(files)
    unknown = sorted(wanted - {item.name for item in files})
    outcomes = [Outcome(name, False, "libvirt defines no network of this name here")
                for name in unknown]
    for item in files:
        if wanted and item.name not in wanted:
            continue
        outcomes.append(_import_one(engine, item, dry_run))
    return outcomes


def _import_one(engine: Any, item: LibvirtNetworkFile, dry_run: bool) -> Outcome:
    outcome = Outcome(item.name, False, autostart=item.autostart, path=item.path)
    if item.active:
        outcome.reason = (f"libvirt runs it now: its bridge, dnsmasq and firewall rules are "
                          f"libvirt's while it runs. Stop it there first (virsh net-destroy "
                          f"{item.name}; its guests lose the network until virtnet starts it)")
        return outcome
    try:
        net = engine.parse(item.data, item.path)
    except VirtnetError as exc:
        outcome.reason = f"virtnet cannot take this definition: {exc}"
        return outcome
    for record in engine.records():
        if record.name == net.name:
            outcome.reason = f"virtnet already has a network named {net.name!r}"
            return outcome
        if net.uuid is not None and record.uuid == net.uuid:
            outcome.reason = f"virtnet's network {record.name!r} has the same UUID {net.uuid}"
            return outcome
    if net.name != item.name:
        outcome.reason = f"the file is named {item.name}.xml but defines {net.name!r}"
        return outcome
    if not dry_run:
        try:
            engine.define(item.data, item.path)
            if item.autostart:
                engine.set_autostart(net.name, True)
        except VirtnetError as exc:
            outcome.reason = str(exc)
            return outcome
    outcome.done = True
    outcome.next_steps = [f"virsh net-autostart --disable {net.name}"] if item.autostart else []
    outcome.next_steps.append(f"virsh net-undefine {net.name}  # when virtnet is to keep it")
    return outcome


def export_networks(engine: Any, names: Iterable[str], target: Path, *,
                    dry_run: bool = False) -> list[Outcome]:
    """Write each of virtnet's networks NAMES (all persistent ones, if none) into TARGET as
    libvirt keeps them: NAME.xml, and autostart/NAME.xml linking to it for an autostarted one."""
    records = {record.name: record for record in engine.records()}
    chosen = list(names) or [name for name, record in records.items() if record.persistent]
    outcomes = []
    for name in chosen:
        outcome = Outcome(name, False)
        outcomes.append(outcome)
        try:
            check_network_name(name)
            record = records.get(name) or engine.lookup(name)
        except (NotFoundError, VirtnetError) as exc:
            outcome.reason = str(exc)
            continue
        if not record.persistent:
            outcome.reason = "a transient network has no definition to give libvirt"
            continue
        path = target / f"{record.name}.xml"
        outcome.path, outcome.autostart = str(path), bool(record.autostart)
        xml = engine.dumpxml(record.name, inactive=True)
        if not dry_run:
            link = target / AUTOSTART / path.name
            taken = [str(p) for p in (path, link) if HostProcess.files.path_exists(p)]
            if taken:
                outcome.reason = f"{taken[0]} exists: nothing is overwritten"
                continue
            try:
                HostProcess.files.ensure_dir(target, 0o755)
                HostProcess.files.atomic_write(path, xml.encode())
                if record.autostart:
                    HostProcess.files.atomic_symlink(link, Path(f"../{path.name}"))
            except VirtnetError as exc:
                outcome.reason = str(exc)
                continue
        outcome.done = True
        steps = []
        if record.active:
            steps.append(f"virtnet net-destroy {record.name}")
        steps.append(f"virsh net-define {path}")
        if record.autostart:
            steps.append(f"virsh net-autostart {record.name}")
        steps.append(f"virtnet net-undefine {record.name}  # when libvirt is to keep it")
        outcome.next_steps = steps
    return outcomes


__all__ = ["LIBVIRT_CONFIG_DIR", "LIBVIRT_STATUS_DIR", "LibvirtNetworkFile", "Outcome",
           "export_networks", "import_networks", "libvirt_network_files"]
