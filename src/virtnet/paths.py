"""Where virtnet keeps its state: definitions, runtime status, dnsmasq files and leases.

By default the layout mirrors libvirt's (/etc, /run, /var/lib); ``--state-dir DIR`` puts all of
it under DIR, which is how tests, the lab and the demo keep the host untouched.

Every path named after a network is built by :func:`virtnet.ids.network_file`: the name is
checked (one plain file name) and the result cannot leave its directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from virtnet.ids import join_state, network_file

# macvtap ports' character devices (virtnet.host.devices makes them)
NODE_DIR = Path("/dev/virtnet")  # under /dev: device nodes open there (/run is often nodev)
DEFAULT_DNSMASQ_DIR = Path("/var/lib/virtnet/dnsmasq")
LIBVIRT_DNSMASQ_DIR = Path("/var/lib/libvirt/dnsmasq")
LIBVIRT_PID_DIR = Path("/run/libvirt/network")


@dataclass(frozen=True)
class StatePaths:
    # The directories derived from the three roots are cached_property: a long-lived daemon
    # asks for them on every request, and building a Path costs more than using one.
    config_dir: Path  # persistent definitions: NAME.xml
    run_dir: Path  # runtime status of active networks, the lock, the daemon socket
    lib_dir: Path  # dnsmasq files, leases

    @classmethod
    def default(cls) -> StatePaths:
        return cls(Path("/etc/virtnet"), Path("/run/virtnet"), Path("/var/lib/virtnet"))

    @classmethod
    def under(cls, root: Path) -> StatePaths:
        root = Path(root)
        return cls(root / "etc", root / "run", root / "lib")

    @classmethod
    def from_option(cls, state_dir: Path | None) -> StatePaths:
        return cls.under(state_dir) if state_dir is not None else cls.default()

    # --- persistent -------------------------------------------------------------------

    @cached_property
    def networks_dir(self) -> Path:
        return self.config_dir / "networks"

    @property
    def autostart_dir(self) -> Path:
        return self.networks_dir / "autostart"

    def definition(self, name: str) -> Path:
        return network_file(self.networks_dir, name, ".xml")

    def autostart_link(self, name: str) -> Path:
        return network_file(self.autostart_dir, name, ".xml")

    # --- runtime ----------------------------------------------------------------------

    @cached_property
    def status_dir(self) -> Path:
        return self.run_dir / "network"

    def status(self, name: str) -> Path:
        """JSON status record of an active network (what was applied, pids, ports)."""
        return network_file(self.status_dir, name, ".json")

    def apply_journal(self, name: str) -> Path:
        """The journal of a net-apply in progress (virtnet.service.live): present only while one
        runs, or after one was killed midway until the next privileged command reverts it."""
        return network_file(self.status_dir, name, ".apply-journal")

    @property
    def lock_file(self) -> Path:
        return self.run_dir / "virtnet.lock"

    @property
    def socket(self) -> Path:
        return self.run_dir / "virtnetd.sock"

    # --- dnsmasq ----------------------------------------------------------------------

    @property
    def dnsmasq_dir(self) -> Path:
        return self.lib_dir / "dnsmasq"

    def dnsmasq_pidfile(self, name: str) -> Path:
        return network_file(self.status_dir, name, ".pid")


def _xml_escape(text: str) -> str:
    """libvirt escapes the network name like XML text when it builds the hosts file paths."""
    table = {"<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;"}
    return "".join(table.get(ch, ch) for ch in text)


@dataclass(frozen=True)
class DnsmasqPaths:
    """Where a network's dnsmasq files are said to live (and are written by the host layer).

    ``directory`` holds NAME.conf, NAME.hostsfile, NAME.addnhosts, NAME.leases and
    BRIDGE.status; ``pid_dir`` holds NAME.pid and, when set, adds a ``pid-file=`` line.
    """

    directory: Path = DEFAULT_DNSMASQ_DIR
    pid_dir: Path | None = None

    @classmethod
    def for_state(cls, state: StatePaths) -> DnsmasqPaths:
        """The paths inside virtnet's state layout (``--state-dir`` aware)."""
        return cls(directory=state.dnsmasq_dir, pid_dir=state.status_dir)

    @classmethod
    def libvirt(cls) -> DnsmasqPaths:
        """libvirt's own system layout (used to compare with what libvirtd writes)."""
        return cls(directory=LIBVIRT_DNSMASQ_DIR, pid_dir=LIBVIRT_PID_DIR)

    # joined by virtnet.ids.join_state: a name that is not one plain file name never leaves
    # the directory (names are checked when parsed: virtnet.ids.network_name_problem)

    def conf(self, name: str) -> Path:
        return join_state(self.directory, f"{name}.conf")

    def hostsfile(self, name: str) -> Path:
        return join_state(self.directory, f"{_xml_escape(name)}.hostsfile")

    def addnhosts(self, name: str) -> Path:
        return join_state(self.directory, f"{_xml_escape(name)}.addnhosts")

    def leases(self, name: str) -> Path:
        return join_state(self.directory, f"{name}.leases")

    def status(self, bridge: str) -> Path:
        """The lease status file libvirt's lease helper keeps, named after the bridge."""
        return join_state(self.directory, f"{bridge}.status")

    def pid_file(self, name: str) -> Path | None:
        return join_state(self.pid_dir, f"{name}.pid") if self.pid_dir is not None else None
