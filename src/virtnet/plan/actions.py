"""Actions: one host change each, with its undo.

An :class:`Action` describes itself for a person, renders the equivalent shell command lines,
applies itself to a :class:`~virtnet.host.Host` and undoes itself. Applied actions serialize
with :meth:`Action.to_dict` so a later ``net-destroy`` (another process) can undo exactly
what was done. The ordered actions of one network, applied and rolled back as one, are a
:class:`virtnet.plan.plans.Plan`.

The fault and crash injection of the tests (VIRTNET_FAULT_STEP, VIRTNET_CRASH_*) is in
:mod:`virtnet.execute.faults` and keeps its names here for the actions that call
:func:`crash_in_step`.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import ipaddress
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from virtnet.errors import HostError
from virtnet.execute.faults import (  # noqa: F401 - the names actions and tests know
    CRASH_AFTER_APPLY_STEP_ENV,
    CRASH_AFTER_STEP_ENV,
    CRASH_AFTER_UNDO_STEP_ENV,
    CRASH_EXIT_STATUS,
    CRASH_IN_APPLY_STEP_ENV,
    CRASH_IN_STEP_ENV,
    FAULT_STEP_ENV,
    crash_in_step,
    crash_point,
)
from virtnet.facts import dotted
import importlib
from virtnet.render.dnsmasq import dnsmasq_argv

if TYPE_CHECKING:
    from virtnet.host import Host

RECORDED = "recorded"  # dataclass field metadata: set by apply, not part of the spec


class Action(abc.ABC):
    """One host change and its inverse. Subclasses are dataclasses of JSON-able fields."""

    kind: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[Action]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            if cls.kind in Action._registry:
                raise TypeError(f"action kind {cls.kind!r} registered twice")
            Action._registry[cls.kind] = cls

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for a person: what this step does."""

    @abc.abstractmethod
    def commands(self) -> list[str]:
        """Equivalent shell command lines a person could run instead."""

    @abc.abstractmethod
    def apply(self, host: Host) -> None:
        """Make the change. May record what it found (old values, pids) on self."""

    # An action that sets off something slow outside this process (a daemon initialising)
    # may let the steps after it run meanwhile: Plan.apply then calls launch() in its turn
    # and finish() after the last step, instead of apply(). apply() must do both at once.
    overlaps: ClassVar[bool] = False

    def launch(self, host: Host) -> None:
        """The first half of apply() (only for ``overlaps``): set it going. Once this
        returned, undo() must stop whatever was set going, finished or not."""
        self.apply(host)

    def finish(self, host: Host) -> None:
        """The second half of apply() (only for ``overlaps``): wait until it is done and
        record what it recorded; on failure leave nothing behind (as a failed apply)."""

    @abc.abstractmethod
    def undo(self, host: Host) -> None:
        """Reverse the change; safe to run twice and after a partial apply."""

    def replace(self, host: Host, previous: Action, *, restoring: bool = False) -> None:
        """Take the place of PREVIOUS (the same thing in another version: a file's old
        content) on a running network; ``restoring``: PREVIOUS is the newer one, being rolled
        back. By default, apply over it."""
        self.apply(host)

    def describe_replacing(self) -> str:
        """One line for a person: what replacing the older version by this one does."""
        return f"rewrite: {self.describe()}"

    def recover(self, host: Host) -> None:
        """Reverse what a killed process left of this change, whether it ran wholly, partly
        or not at all: every undo already holds in the three cases."""
        self.undo(host)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            data[f.name] = getattr(self, f.name)
        return data

    def recorded(self) -> dict[str, Any]:
        """What apply recorded (the fields spec() leaves out): to_dict() == spec() + this."""
        names = _RECORDED_FIELDS.get(type(self))
        if names is None:
            names = tuple(f.name for f in dataclasses.fields(self)  # type: ignore[arg-type]
                          if f.metadata.get(RECORDED))
            _RECORDED_FIELDS[type(self)] = names
        return {name: getattr(self, name) for name in names}

    def spec(self) -> dict[str, Any]:
        """to_dict() without what apply recorded (old values, pids): two actions with equal
        specs make the same change, whether or not one of them was applied."""
        data: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.metadata.get(RECORDED):
                data[f.name] = getattr(self, f.name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Action:
        data = dict(data)
        kind = data.pop("kind", None)
        if isinstance(kind, str) and kind not in Action._registry:
            _import_action_module(kind)  # recorded by a process that had its module loaded
        action_type = Action._registry.get(kind) if isinstance(kind, str) else None
        if action_type is None:
            raise ValueError(f"unknown action kind {kind!r}")
        names = {f.name for f in dataclasses.fields(action_type)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{kind}: unknown fields {sorted(unknown)}")
        return action_type(**data)

    @classmethod
    def registered_kinds(cls) -> list[str]:
        return sorted(Action._registry)


# per Action class, the names of its RECORDED fields (Action.recorded)
_RECORDED_FIELDS: dict[type[Action], tuple[str, ...]] = {}


# Action kinds defined outside this module, and where. A recorded action of one of these kinds
# imports just its module when read back, so a plain network's destroy pays for nothing else.
KIND_MODULES = {
    "allow-through-other-firewalls": "virtnet.plan.coexist",
    "apply-shaping": "virtnet.plan.shaping",
    "plug-floor": "virtnet.plan.shaping",
    "create-macvtap": "virtnet.plan.drivers.direct",
    "set-uplink-mac": "virtnet.plan.drivers.direct",
    "use-uplink": "virtnet.plan.drivers.direct",
    "create-tap": "virtnet.plan.drivers.tap",
    "reserve-vf": "virtnet.plan.drivers.hostdev",
    "use-vf-pool": "virtnet.plan.drivers.hostdev",
    "load-forwards": "virtnet.plan.forwards",
}


def _import_action_module(kind: str) -> None:
    module = KIND_MODULES.get(kind)
    if module is not None:
        importlib.import_module(module)


# --- actions ---------------------------------------------------------------------------


def _q(text: str) -> str:
    return shlex.quote(text)


@dataclass
class CreateBridge(Action):
    kind: ClassVar[str] = "create-bridge"
    name: str
    stp: bool = True
    delay: int = 0  # forward delay, seconds
    mac: str | None = None
    mtu: int | None = None
    vlan_filtering: bool = False

    def describe(self) -> str:
        extra = f", MAC {self.mac}" if self.mac else ""
        extra += f", MTU {self.mtu}" if self.mtu else ""
        stp = "on" if self.stp else "off"
        return f"create bridge {self.name} (STP {stp}, forward delay {self.delay} s{extra})"

    def commands(self) -> list[str]:
        line = f"ip link add {_q(self.name)}"
        if self.mac:
            line += f" address {self.mac}"
        if self.mtu:
            line += f" mtu {self.mtu}"
        line += f" type bridge forward_delay {self.delay * 100} stp_state {int(self.stp)}"
        if self.vlan_filtering:
            line += " vlan_filtering 1"
        return [line]

    def apply(self, host: Host) -> None:
        host.create_bridge(
            self.name,
            stp=self.stp,
            forward_delay=self.delay,
            mac=self.mac,
            mtu=self.mtu,
            vlan_filtering=self.vlan_filtering,
        )
        crash_in_step()

    def undo(self, host: Host) -> None:
        host.delete_link(self.name)


@dataclass
class AddAddress(Action):
    kind: ClassVar[str] = "add-address"
    link: str
    address: str  # "192.168.122.1/24"
    nodad: bool = True  # IPv6 only

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        return ipaddress.ip_interface(self.address)

    def _v6_nodad(self) -> bool:
        return self.nodad and self.interface.version == 6

    def describe(self) -> str:
        return f"add address {self.address} to {self.link}"

    def commands(self) -> list[str]:
        iface = self.interface
        line = f"ip address add {self.address}"
        if iface.version == 4 and iface.network.prefixlen <= 30:
            line += f" broadcast {iface.network.broadcast_address}"
        line += f" dev {_q(self.link)}"
        if self._v6_nodad():
            line += " nodad"
        return [line]

    def apply(self, host: Host) -> None:
        host.add_address(self.link, self.interface, nodad=self.nodad)

    def undo(self, host: Host) -> None:
        host.delete_address(self.link, self.interface)


@dataclass
class AddRoute(Action):
    kind: ClassVar[str] = "add-route"
    link: str
    destination: str  # "10.0.0.0/24"
    gateway: str | None = None
    metric: int | None = None

    def _args(self) -> tuple[Any, Any, int | None]:
        gateway = ipaddress.ip_address(self.gateway) if self.gateway else None
        return ipaddress.ip_network(self.destination), gateway, self.metric

    def describe(self) -> str:
        via = f" via {self.gateway}" if self.gateway else ""
        metric = f" (metric {self.metric})" if self.metric else ""
        return f"add route to {self.destination}{via} on {self.link}{metric}"

    def commands(self) -> list[str]:
        line = f"ip route add {self.destination}"
        if self.gateway:
            line += f" via {self.gateway}"
        line += f" dev {_q(self.link)} proto boot"
        if self.metric:
            line += f" metric {self.metric}"
        return [line]

    def apply(self, host: Host) -> None:
        host.add_route(self.link, *self._args())

    def undo(self, host: Host) -> None:
        host.delete_route(self.link, *self._args())


@dataclass
class LinkUp(Action):
    kind: ClassVar[str] = "link-up"
    link: str
    # False when an earlier step created the link: deleting it takes it down anyway, and a
    # separate "down" costs the kernel a few ms of RCU synchronisation for nothing.
    down_on_undo: bool = True

    def describe(self) -> str:
        return f"bring {self.link} up"

    def commands(self) -> list[str]:
        return [f"ip link set dev {_q(self.link)} up"]

    def apply(self, host: Host) -> None:
        host.set_link_up(self.link)

    def undo(self, host: Host) -> None:
        if self.down_on_undo:
            host.set_link_down(self.link)


@dataclass
class SetSysctl(Action):
    """Set a /proc/sys parameter; undo restores the value found, unless ``restore`` is off.

    Global forwarding switches are left on at undo, as libvirt does: other networks or the
    administrator may rely on them, and nothing records who turned them on first.
    """

    kind: ClassVar[str] = "set-sysctl"
    key: str  # slash form: "net/ipv4/ip_forward", "net/ipv6/conf/virbr0/accept_ra"
    value: str
    restore: bool = True
    missing_ok: bool = False  # e.g. per-bridge IPv6 knobs when IPv6 is disabled
    old: str | None = field(default=None, metadata={RECORDED: True})

    def describe(self) -> str:
        note = "" if self.restore else " (left as is when stopped)"
        return f"set {dotted(self.key)} = {self.value}{note}"

    def commands(self) -> list[str]:
        return [f"sysctl -w {_q(dotted(self.key) + '=' + self.value)}"]

    def apply(self, host: Host) -> None:
        current = host.sysctl_get(self.key)
        if current is None:
            if self.missing_ok:
                return
            raise HostError(f"cannot set sysctl {dotted(self.key)}: no such parameter")
        self.old = current
        if current != self.value:
            host.sysctl_set(self.key, self.value)

    def undo(self, host: Host) -> None:
        if not self.restore or self.old is None or self.old == self.value:
            return
        if host.sysctl_get(self.key) is None:
            return  # the interface it belonged to is gone already
        host.sysctl_set(self.key, self.old)


@dataclass
class LoadFirewall(Action):
    """Load one network's chains into virtnet's own nftables table, in one transaction.

    ``ruleset`` and ``teardown`` are rendered by :mod:`virtnet.render.nft` at plan time, so
    the undo removes exactly what was loaded, even from another process much later. When
    no network's chains remain, the (then empty) table is removed too.
    """

    kind: ClassVar[str] = "load-firewall"
    network: str
    family: str
    table: str
    ruleset: str
    teardown: str
    chain_prefix: str = "net-"  # chains of any network; shared chains have other names

    def describe(self) -> str:
        return f"load firewall rules of network {self.network} into {self.family} {self.table}"

    def commands(self) -> list[str]:
        return [f"nft -f - <<'EOF'\n{self.ruleset.rstrip()}\nEOF"]

    def apply(self, host: Host) -> None:
        host.nft(self.ruleset, what=f"load firewall rules of network {self.network}")
        crash_in_step()

    def replace(self, host: Host, previous: Action, *, restoring: bool = False) -> None:
        # one transaction: no packet sees a half-loaded ruleset
        assert isinstance(previous, LoadFirewall)
        host.nft(previous.teardown + self.ruleset,
                 what=f"{'restore' if restoring else 'replace'} the rules of network "
                      f"{previous.network if restoring else self.network}")

    def describe_replacing(self) -> str:
        return f"replace in one nft transaction: {self.describe()}"

    def undo(self, host: Host) -> None:
        host.nft(self.teardown, what=f"remove firewall rules of network {self.network}")
        chains = host.nft_chains(self.family, self.table)
        if chains is not None and not any(c.startswith(self.chain_prefix) for c in chains):
            host.nft(
                f"delete table {self.family} {self.table}\n",
                what=f"remove the empty table {self.family} {self.table}",
            )


@dataclass
class WriteFile(Action):
    kind: ClassVar[str] = "write-file"
    path: str
    content: str
    mode: int = 0o600

    def describe(self) -> str:
        return f"write {self.path}"

    def commands(self) -> list[str]:
        if not self.content:
            return [f"install -D -m {self.mode:o} /dev/null {_q(self.path)}"]
        return [
            f"install -D -m {self.mode:o} /dev/stdin {_q(self.path)} <<'EOF'\n"
            f"{self.content.rstrip()}\nEOF"
        ]

    def apply(self, host: Host) -> None:
        host.write_file(Path(self.path), self.content, self.mode)

    def undo(self, host: Host) -> None:
        host.remove_file(Path(self.path))


@dataclass
class StartDnsmasq(Action):
    """Start dnsmasq for a network; undo stops exactly that process and removes its pid file.

    The lease file is removed at undo only if this start created it and no lease was ever
    written to it; otherwise leases survive a restart, as guests expect. A start killed
    inside this step never recorded whether it created the file (None): an empty one is
    removed then, which loses no lease.
    """

    kind: ClassVar[str] = "start-dnsmasq"
    network: str
    conf_file: str
    pid_file: str
    lease_file: str
    binary: str = "dnsmasq"
    pid: int | None = field(default=None, metadata={RECORDED: True})
    created_lease_file: bool | None = field(default=None, metadata={RECORDED: True})

    def argv(self) -> list[str]:
        return dnsmasq_argv(
            self.binary, Path(self.conf_file), Path(self.lease_file), Path(self.pid_file)
        )

    def describe(self) -> str:
        return f"start dnsmasq for network {self.network} ({self.conf_file})"

    def commands(self) -> list[str]:
        # apply() makes these directories first; dnsmasq itself does not create them
        dirs = dict.fromkeys(str(Path(p).parent) for p in (self.lease_file, self.pid_file))
        return [f"install -d -m 755 {' '.join(_q(d) for d in dirs)} && "
                + " ".join(_q(arg) for arg in self.argv())]

    # dnsmasq takes ~6 ms to initialise (libraries, configuration, sockets), in a process of
    # its own: a start goes on with its next steps meanwhile (see Action.overlaps).
    overlaps: ClassVar[bool] = True
    _launched = None  # the dnsmasq being launched (a subprocess.Popen), until finish()

    def apply(self, host: Host) -> None:
        self.launch(host)
        self.finish(host)

    def launch(self, host: Host) -> None:
        lease_file = Path(self.lease_file)
        host.ensure_dir(lease_file.parent)
        host.ensure_dir(Path(self.pid_file).parent)
        self.created_lease_file = host.file_size(lease_file) is None
        self._launched = host.spawn_dnsmasq(self.argv(), Path(self.pid_file))

    def finish(self, host: Host) -> None:
        launched, self._launched = self._launched, None
        if launched is None:
            return
        try:
            self.pid = host.await_dnsmasq(launched, Path(self.conf_file), Path(self.pid_file))
        except Exception:
            self.undo(host)  # a daemon that started but was not confirmed must not stay
            raise

    def undo(self, host: Host) -> None:
        launched, self._launched = self._launched, None
        if launched is not None:
            # launched but not finished: once its first process is gone, the daemon (if
            # any) has written its pid file, and is found below
            with contextlib.suppress(Exception):
                host.settle_dnsmasq(launched)
        conf_file = Path(self.conf_file)
        if self.pid is not None and host.is_our_dnsmasq(self.pid, conf_file):
            pids = [self.pid]
        else:
            # The pid was never recorded (apply failed, or was killed inside this step) or
            # names a dnsmasq that died (a repair may have started another since). Trust the
            # pid file only if it names our dnsmasq (checked by cmdline, so a recycled pid is
            # never hit); failing that, look for our command line (pid file not written yet).
            from_file = host.read_pid_file(Path(self.pid_file))
            if from_file is not None and host.is_our_dnsmasq(from_file, conf_file):
                pids = [from_file]
            else:
                pids = host.find_our_dnsmasqs(conf_file)
        for pid in pids:
            host.stop_dnsmasq(pid, conf_file)
        host.remove_file(Path(self.pid_file))
        lease_file = Path(self.lease_file)
        if self.created_lease_file is not False and host.file_size(lease_file) == 0:
            host.remove_file(lease_file)


@dataclass
class AttachHostBridge(Action):
    """Use an existing host bridge: nothing is created, so there is nothing to undo."""

    kind: ClassVar[str] = "attach-host-bridge"
    network: str
    bridge: str

    def describe(self) -> str:
        return f"use the existing host bridge {self.bridge} (nothing is created)"

    def commands(self) -> list[str]:
        return [f"ip -details link show dev {_q(self.bridge)} type bridge"]

    def apply(self, host: Host) -> None:
        info = host.link(self.bridge)
        if info is None:
            raise HostError(f"bridge {self.bridge} of network {self.network} does not exist")
        if info.kind != "bridge":
            raise HostError(f"{self.bridge} of network {self.network} is not a bridge")

    def undo(self, host: Host) -> None:
        return None
