"""Guest taps on bridges (networks with a bridge of their own, and host bridges).

libvirt makes a persistent tap ``vnetN`` per guest interface, owned by root, with the guest's
MAC whose first octet is changed to fe (so the bridge never takes it for its own address),
the network's MTU, up and enslaved to the bridge. The guest's hypervisor then opens it by
name. virtnet does the same through the Host handle (one TUNSETIFF, one RTM_NEWLINK, in
:mod:`virtnet.host.rtnl`), in well under a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from virtnet.plan.actions import RECORDED, Action, crash_in_step

if TYPE_CHECKING:
    from virtnet.host import Host


# --- port actions --------------------------------------------------------------------------


@dataclass
class CreateTap(Action):
    """A guest's tap on a bridge: persistent, root's (or the port's owner's), with the guest's MAC (first octet
    fe), the network's MTU, up and plugged in, optionally as an isolated bridge port."""

    kind: ClassVar[str] = "create-tap"
    name: str
    mac: str
    bridge: str
    mtu: int | None = None
    isolated: bool = False
    owner: int = 0  # root's unless the port names a user
    group: int | None = None
    queues: int = 1
    ifindex: int | None = field(default=None, metadata={RECORDED: True})

    def describe(self) -> str:
        extra = ", isolated" if self.isolated else ""
        return f"create tap {self.name} (MAC {self.mac}) on bridge {self.bridge}{extra}"

    def commands(self) -> list[str]:
        line = f"ip link set dev {self.name} address {self.mac} master {self.bridge}"
        if self.mtu:
            line += f" mtu {self.mtu}"
        add = f"ip tuntap add dev {self.name} mode tap vnet_hdr user {self.owner}"
        if self.group is not None:
            add += f" group {self.group}"
        if self.queues > 1:
            add += " multi_queue"
        lines = [add, line + " up"]
        if self.isolated:
            lines.append(f"ip link set dev {self.name} type bridge_slave isolated on")
        return lines

    def apply(self, host: Host) -> None:
        host.create_tap(self.name, owner=self.owner, group=self.group, queues=self.queues)
        crash_in_step()  # crash tests: the tap exists, not yet enslaved nor up
        try:
            self.ifindex = host.link_index(self.name)
            host.set_link(self.name, mac=self.mac, master=self.bridge, mtu=self.mtu, up=True)
            if self.isolated:
                host.set_bridge_port_isolated(self.name, True)
        except BaseException:
            host.delete_link(self.name)
            raise

    def undo(self, host: Host) -> None:
        index = host.link_index(self.name)
        # never a device that took the name after ours went (a tap its holder made
        # non-persistent goes when the holder exits)
        if index is not None and self.ifindex in (None, index):
            host.delete_link(self.name)


__all__ = ["CreateTap"]
