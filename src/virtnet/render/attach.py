"""How a VM manager plugs a guest into a virtnet network: ready-made configuration fragments.

Everything here is a pure function of what virtnet already knows about a port (its summary,
as ``port-create --json`` prints it) or about a network (its definition), so the fragments a
user copies are the same ones the real-VM tests boot guests with:

- QEMU: the ``-netdev``/``-device`` pair. A tap made by virtnet is named with ``ifname=``; a
  macvtap is a character device that QEMU can only use as an open descriptor, so its
  arguments carry a ``{fd}`` placeholder (``port-exec`` fills it in, a shell can do it with a
  ``3<>/dev/...`` redirection). Multiqueue becomes ``queues=``/``fds=`` on the netdev and
  ``mq=on,vectors=2N+2`` on the device; an SR-IOV function is a ``vfio-pci`` device.
- libvirt: the ``<interface>`` element of a domain. For a port, the device virtnet made, which
  libvirt then uses as it is (type 'ethernet' with ``managed='no'``); for a network with no
  port (``domif-xml``), the element with which libvirt makes its own device: type 'bridge' on
  the network's bridge, 'direct' on its uplink in the network's mode, 'hostdev' for a VF.
- Firecracker: a ``network-interfaces`` entry (its API's NetworkInterface object). Firecracker
  opens a tap by name only, so macvtap and hostdev ports have no Firecracker fragment, and the
  reason is given instead.
- cloud-hypervisor: the ``--net`` option and its API's NetConfig object (``tap=`` for a tap,
  ``fd=`` for a macvtap, whose descriptor the API cannot take in JSON).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TAP_PLUGS = frozenset({"network", "bridge"})
FD_PLACEHOLDER = "{fd}"
FDS_PLACEHOLDER = "{fds}"
VHOSTFD_PLACEHOLDER = "{vhostfd}"


@dataclass(frozen=True)
class Attachment:
    """What the fragments need of a port, whatever produced it."""

    plug: str  # network | bridge | direct | hostdev-pci (a port's "plug")
    mac: str | None
    device: str | None = None  # the tap or macvtap's name
    char_device: str | None = None  # a macvtap's node
    bridge: str | None = None  # the bridge a tap is on
    uplink: str | None = None  # a macvtap's lower device
    mode: str | None = None  # a macvtap's mode (bridge, private, vepa, passthrough)
    pci_address: str | None = None  # a virtual function
    queues: int = 1

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> Attachment:
        """From a port's summary (``port-create --json``, the API's port object)."""
        return cls(plug=str(summary.get("plug") or ""), mac=summary.get("mac"),
                   device=summary.get("device"), char_device=summary.get("char_device"),
                   bridge=summary.get("bridge"), uplink=summary.get("uplink"),
                   mode=summary.get("mode"), pci_address=summary.get("pci_address"),
                   queues=max(1, int(summary.get("queues") or 1)))

    @property
    def is_tap(self) -> bool:
        return self.plug in TAP_PLUGS

    @property
    def is_macvtap(self) -> bool:
        return self.plug == "direct"

    @property
    def is_vf(self) -> bool:
        return self.plug == "hostdev-pci"


# --- QEMU ------------------------------------------------------------------------------------


def qemu_netdev(att: Attachment, *, netdev_id: str = "net0", by_fd: bool = False,
                vhost: bool = False) -> str | None:
    """The ``-netdev`` value, or None for a virtual function (which is a device, not a netdev).

    BY_FD: the tap is handed to QEMU as open descriptors (the daemon's hand-over, port-exec,
    the helper) rather than opened by name. A macvtap is always by descriptor. VHOST: ask for
    vhost-net; with descriptors, its own descriptor goes in ``{vhostfd}``."""
    if att.is_vf:
        return None
    parts = ["tap", f"id={netdev_id}"]
    if att.is_macvtap or by_fd:
        parts.append(f"fds={FDS_PLACEHOLDER}" if att.queues > 1 else f"fd={FD_PLACEHOLDER}")
        if vhost:
            parts += ["vhost=on", f"vhostfd={VHOSTFD_PLACEHOLDER}"]
        else:
            parts.append("vhost=off")
        return ",".join(parts)
    parts += [f"ifname={att.device}", "script=no", "downscript=no"]
    if att.queues > 1:
        parts.append(f"queues={att.queues}")
    if vhost:
        parts.append("vhost=on")
    return ",".join(parts)


def qemu_device(att: Attachment, *, netdev_id: str = "net0") -> str:
    """The ``-device`` value: virtio-net on the netdev, or vfio-pci for a virtual function."""
    if att.is_vf:
        return f"vfio-pci,host={att.pci_address}"
    parts = ["virtio-net-pci", f"netdev={netdev_id}"]
    if att.mac:
        parts.append(f"mac={att.mac}")
    if att.queues > 1:
        # one vector per queue of each direction, one for configuration, one for control
        parts += ["mq=on", f"vectors={2 * att.queues + 2}"]
    return ",".join(parts)


def qemu_args(att: Attachment, *, netdev_id: str = "net0", by_fd: bool = False,
              vhost: bool = False) -> list[str]:
    """The whole argument list QEMU needs for this port."""
    netdev = qemu_netdev(att, netdev_id=netdev_id, by_fd=by_fd, vhost=vhost)
    args = ["-netdev", netdev] if netdev is not None else []
    return args + ["-device", qemu_device(att, netdev_id=netdev_id)]


# --- libvirt ---------------------------------------------------------------------------------


def libvirt_interface(att: Attachment, *, model: str = "virtio") -> str:
    """The ``<interface>`` element with which a libvirt domain uses this very port: the device
    virtnet made, named and left alone by libvirt (type 'ethernet', target managed='no'), so
    the port stays virtnet's (listed, shaped, released by virtnet); a virtual function is
    given by its PCI address."""
    if att.is_vf:
        lines = ["<interface type='hostdev' managed='yes'>", "  <source>",
                 "    " + _pci_address_element(att.pci_address or ""), "  </source>"]
        if att.mac:
            lines.append(f"  <mac address={_attr(att.mac)}/>")
        return "\n".join(lines + ["</interface>"]) + "\n"
    lines = ["<interface type='ethernet'>", f"  <target dev={_attr(att.device or '')} "
             "managed='no'/>"]
    return _finish_interface(lines, att.mac, model, att.queues)


def libvirt_network_interface(*, bridge: str | None = None, uplink: str | None = None,
                              mode: str | None = None, pci_address: str | None = None,
                              mac: str | None = None, model: str = "virtio",
                              queues: int = 1) -> str:
    """The ``<interface>`` element with which libvirt makes its own device on a virtnet
    network (``domif-xml``): a tap on BRIDGE, a macvtap on UPLINK in MODE, or the virtual
    function at PCI_ADDRESS. No MAC: libvirt generates one, as for any interface."""
    if pci_address is not None:
        return libvirt_interface(Attachment(plug="hostdev-pci", mac=mac, pci_address=pci_address))
    if uplink is not None:
        lines = ["<interface type='direct'>", f"  <source dev={_attr(uplink)} "
                 f"mode={_attr(mode or 'vepa')}/>"]
    else:
        lines = ["<interface type='bridge'>", f"  <source bridge={_attr(bridge or '')}/>"]
    return _finish_interface(lines, mac, model, queues)


def _finish_interface(lines: list[str], mac: str | None, model: str, queues: int) -> str:
    if mac:
        lines.append(f"  <mac address={_attr(mac)}/>")
    lines.append(f"  <model type={_attr(model)}/>")
    if queues > 1:
        lines.append(f"  <driver name='vhost' queues='{queues}'/>")
    lines.append("</interface>")
    return "\n".join(lines) + "\n"


def _attr(value: str) -> str:
    """VALUE as a single-quoted XML attribute value."""
    escaped = (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
               .replace("'", "&apos;").replace('"', "&quot;"))
    return f"'{escaped}'"


def _pci_address_element(text: str) -> str:
    """``0000:03:10.2`` as libvirt's ``<address type='pci' .../>``."""
    try:
        rest, function = text.rsplit(".", 1)
        domain, bus, slot = rest.split(":") if rest.count(":") == 2 else ("0000", *rest.split(":"))
    except ValueError:
        raise ValueError(f"not a PCI address: {text!r}") from None
    return (f"<address type='pci' domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' "
            f"function='0x{function}'/>")


# --- Firecracker and cloud-hypervisor ----------------------------------------------------------


def firecracker_interface(att: Attachment, *, iface_id: str = "eth0") -> dict[str, Any]:
    """A ``network-interfaces`` entry. Raises ValueError (the reason) where Firecracker cannot
    use the port: it attaches a tap by name and knows neither macvtap nor passthrough."""
    if not att.is_tap:
        kind = "an SR-IOV function" if att.is_vf else "a macvtap"
        raise ValueError(f"Firecracker attaches only taps by name; this port is {kind}")
    if att.queues > 1:
        raise ValueError("Firecracker's virtio-net has one queue pair; this port has "
                         f"{att.queues}")
    entry: dict[str, Any] = {"iface_id": iface_id, "host_dev_name": att.device}
    if att.mac:
        entry["guest_mac"] = att.mac
    return entry


def cloud_hypervisor_net(att: Attachment, *, fd_number: int | None = None) -> dict[str, Any]:
    """``{"cli": the --net value, "api": a NetConfig object or None}``. A macvtap goes by
    descriptor (``fd=``; FD_NUMBER, else the ``{fd}`` placeholder), which the JSON API cannot
    carry, so it has no API object. Raises ValueError for an SR-IOV function (a VFIO device,
    not a --net)."""
    if att.is_vf:
        raise ValueError("an SR-IOV function is given to cloud-hypervisor as --device "
                         f"path=/sys/bus/pci/devices/{att.pci_address}/, not as --net")
    # cloud-hypervisor counts queues of both directions together
    num_queues = 2 * att.queues
    cli: list[str] = []
    api: dict[str, Any] | None
    if att.is_macvtap:
        if att.queues > 1:
            raise ValueError("a multiqueue macvtap goes to cloud-hypervisor as one descriptor per "
                             "queue (fd=[...]); virtnet writes no fragment for it")
        cli.append(f"fd={fd_number if fd_number is not None else FD_PLACEHOLDER}")
        api = None
    else:
        cli.append(f"tap={att.device}")
        api = {"tap": att.device, "num_queues": num_queues}
        if att.mac:
            api["mac"] = att.mac
    if att.mac:
        cli.append(f"mac={att.mac}")
    cli.append(f"num_queues={num_queues}")
    return {"cli": ",".join(cli), "api": api}


def fragments(summary: dict[str, Any]) -> dict[str, Any]:
    """Every fragment for one port summary, as the port's JSON carries them ("attach")."""
    att = Attachment.from_summary(summary)
    out: dict[str, Any] = {
        "qemu": qemu_args(att),
        "qemu_fd": qemu_args(att, by_fd=True) if att.is_tap else None,
        "libvirt": libvirt_interface(att),
    }
    for key, make in (("firecracker", firecracker_interface), ("cloud_hypervisor",
                                                              cloud_hypervisor_net)):
        try:
            out[key] = make(att)
        except ValueError as why:
            out[key] = None
            out[key + "_unavailable"] = str(why)
    return out
