"""Real guests on virtnet networks: QEMU boots Debian 12's kernel with a busybox initramfs
(tests/kit/vm.py builds both from Debian packages, cached) and the guest's own DHCP client
(busybox udhcpc) asks for its lease; then it pings the network's gateway.

Each guest runs inside a network namespace the test made (the virtnet network lives there
too), and is ended by its pid. QEMU emulates the CPU (TCG); the boot-to-lease times printed
are the guest's own clock (/proc/uptime) when its lease was bound.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.kit import vm
from tests.kit import macvtaplab
from tests.kit.daemon import VirtnetdProcess
from tests.kit.libvirtd import LibvirtdError, LibvirtdInNetns
from virtnet.client import Client

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_XML = ROOT / "examples" / "default.xml"
GATEWAY = "192.168.122.1"
SUBNET = ipaddress.ip_network("192.168.122.0/24")
ADMIN_GID = 4252  # the daemon's group here (no /etc/group entry needed)
MEMBER_UID = 4253

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or vm.available() is not None,
    reason=vm.available() or "needs root (network namespaces, taps)")


@pytest.fixture(scope="module")
def kit() -> vm.GuestKit:
    try:
        return vm.build_kit()
    except vm.GuestKitError as exc:
        pytest.skip(f"cannot build the guest kernel and initramfs: {exc}")


def _delete_netns(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                          timeout=20).stdout.split()
    for pid in pids:  # dnsmasq and any QEMU left by a failure: ours, in our namespace
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "delete", name], timeout=20)


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Fresh namespaces, each deleted afterwards with whatever still runs inside it."""
    created: list[str] = []

    def make() -> str:
        name = "vnt-" + secrets.token_hex(4)
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=20)
        created.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=20)
        return name

    try:
        yield make
    finally:
        for name in reversed(created):
            _delete_netns(name)


@pytest.fixture
def netns(make_netns: Callable[[], str]) -> str:
    return make_netns()


def virtnet(ns: str, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "virtnet.face.cli", "--netns", ns, "--state-dir", str(state),
         *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"virtnet {' '.join(args)}: {proc.stderr}"
    return proc


def leases(ns: str, state: Path) -> dict[str, str]:
    shown = json.loads(virtnet(ns, state, "net-dhcp-leases", "default", "--json").stdout)
    return {lease["mac"]: lease["ip"] for lease in shown}


def check_guest(result: vm.Result, mac: str, ns: str, state: Path) -> str:
    assert result.done, f"the guest did not finish:\n{result.console[-2000:]}"
    address = result.leases.get("eth0")
    assert address is not None, f"no lease:\n{result.console[-2000:]}"
    assert ipaddress.ip_address(address) in SUBNET
    assert result.pings == {GATEWAY: True}, result.console[-2000:]
    assert leases(ns, state).get(mac) == address  # the lease virtnet shows is the guest's
    return address


def test_a_root_qemu_guest_on_a_nat_network_through_a_tap_port(
        kit: vm.GuestKit, netns: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    virtnet(netns, state, "net-define", str(DEFAULT_XML))
    virtnet(netns, state, "net-start", "default")
    mac = "52:54:00:7a:00:01"
    port = json.loads(virtnet(netns, state, "port-create", "default", "--mac", mac,
                              "--json").stdout)
    nic = vm.Nic(f"tap,ifname={port['device']},script=no,downscript=no,vhost=off", mac)
    guest = vm.start(kit, [nic], netns=netns, ping=[GATEWAY], hold=3)
    try:
        listed = virtnet(netns, state, "net-port-list", "default", "--json").stdout
        assert port["uuid"] in listed  # the port is listed while the VM runs
        result = guest.wait()
    finally:
        guest.stop()
    check_guest(result, mac, netns, state)
    print(f"boot to lease {result.first_lease_s:.1f} s (root QEMU, tap port)")
    virtnet(netns, state, "port-delete", "default", port["uuid"])
    virtnet(netns, state, "net-destroy", "default")


HANDOVER = r"""
import os, sys
from virtnet.client import Client
socket_path, network, mac, *qemu = sys.argv[1:]
with Client(socket_path, timeout=30) as api:
    port = api.create_port(network, mac, owner="vm-unprivileged", pass_fd=True)
fd = port["fd"]
os.set_inheritable(fd, True)
print(f"VT-PORT {port['uuid']} {fd} uid={os.getuid()}", flush=True)
os.execvp(qemu[0], [arg.replace("{fd}", str(fd)) for arg in qemu])
"""


def test_an_unprivileged_qemu_gets_its_tap_from_the_daemon(
        kit: vm.GuestKit, netns: str) -> None:
    # a root directory others may traverse: the member reaches the socket and the guest kit
    root = Path(tempfile.mkdtemp(prefix="vnt-vm-"))
    root.chmod(0o755)
    daemon = VirtnetdProcess(netns, root / "state", args=("--group", str(ADMIN_GID)))
    try:
        shutil.copyfile(kit.kernel, root / "vmlinuz")
        shutil.copyfile(kit.initramfs, root / "initramfs.gz")
        for name in ("vmlinuz", "initramfs.gz"):
            (root / name).chmod(0o644)
        local = vm.GuestKit(root / "vmlinuz", root / "initramfs.gz", kit.version)
        (root / "handover.py").write_text(HANDOVER)
        daemon.start()
        with Client(str(daemon.socket_path), timeout=30) as api:
            api.define(DEFAULT_XML.read_text(), start=True)
        mac = "52:54:00:7a:00:02"
        qemu = vm.qemu_argv(local, [vm.Nic("tap,fd={fd},vhost=off", mac)], ping=[GATEWAY])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "PYTHONPATH": os.pathsep.join(sys.path)}
        guest = vm.Guest([sys.executable, str(root / "handover.py"), str(daemon.socket_path),
                          "default", mac, *qemu],
                         prefix=["ip", "netns", "exec", netns, "setpriv",
                                 f"--reuid={MEMBER_UID}", f"--regid={MEMBER_UID}",
                                 f"--groups={ADMIN_GID}"], env=env)
        try:
            result = guest.wait()
        finally:
            guest.stop()
        assert f"uid={MEMBER_UID}" in result.console, result.console[-2000:]
        check_guest(result, mac, netns, root / "state")
        print(f"boot to lease {result.first_lease_s:.1f} s (unprivileged QEMU, fd hand-over)")
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)



MACVTAP_XML = ROOT / "examples" / "macvtap-bridge.xml"  # mode bridge on the uplink eth1


def test_two_guests_on_a_macvtap_bridge_network_reach_each_other_and_the_lan(
        kit: vm.GuestKit, make_netns: Callable[[], str], tmp_path: Path) -> None:
    """Two VMs on macvtap ports of one uplink (mode bridge): their leases come from the LAN's
    DHCP server (virtnet serves none on a direct network), they ping the LAN host and each
    other (bridge mode switches between them inside the host)."""
    lab = macvtaplab.build_lab(make_netns, uplinks=1, host_address=False)
    macs = {"52:54:00:7a:01:01": "10.77.0.51", "52:54:00:7a:01:02": "10.77.0.52"}
    lan_dhcp = subprocess.Popen(
        ["ip", "netns", "exec", lab.lan, "dnsmasq", "--keep-in-foreground", "--no-resolv",
         "--no-hosts", "--port=0", "--interface=eth0", "--bind-interfaces", "--user=root",
         "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0",
         f"--dhcp-leasefile={tmp_path / 'lan.leases'}", "--pid-file=",
         *[f"--dhcp-host={mac},{address}" for mac, address in macs.items()]],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state, fds, guests = tmp_path / "state", [], []
    try:
        virtnet(lab.host, state, "net-define", str(MACVTAP_XML))
        virtnet(lab.host, state, "net-start", "macvtap-eth1")
        for mac, address in macs.items():
            port = json.loads(virtnet(lab.host, state, "port-create", "macvtap-eth1",
                                      "--mac", mac, "--json").stdout)
            assert port["mode"] == "bridge" and port["uplink"] == "eth1"
            fd = os.open(port["char_device"], os.O_RDWR | os.O_CLOEXEC)
            fds.append(fd)
            other = next(a for a in macs.values() if a != address)
            guests.append(vm.start(
                kit, [vm.Nic(f"tap,fd={fd},vhost=off", mac)], netns=lab.host,
                ping=[macvtaplab.LAN_IP, other], tries=8, hold=20, pass_fds=[fd]))
        results = [guest.wait() for guest in guests]
    finally:
        for guest in guests:
            guest.stop()
        for fd in fds:
            os.close(fd)
        lan_dhcp.terminate()
        lan_dhcp.wait(timeout=10)
    for result, (mac, address) in zip(results, macs.items()):
        assert result.done, result.console[-2000:]
        assert result.leases.get("eth0") == address, result.console[-2000:]
        other = next(a for a in macs.values() if a != address)
        assert result.pings == {macvtaplab.LAN_IP: True, other: True}, result.console[-2000:]
        print(f"boot to lease {result.first_lease_s:.1f} s (macvtap bridge, {mac})")
    virtnet(lab.host, state, "net-destroy", "macvtap-eth1")


class _LibvirtdForDomains(LibvirtdInNetns):
    """The tests' libvirtd (its own network and mount namespaces), with a qemu.conf for a
    sandbox: QEMU's output to files (no virtlogd here), QEMU as root, no security driver,
    cgroups or per-domain mount namespaces (a container has none of them to give)."""

    def _make_root(self) -> None:
        super()._make_root()
        assert self.root is not None
        conf = self.root / "etc" / "qemu.conf"
        conf.write_text((conf.read_text() if conf.exists() else "") + QEMU_CONF)


QEMU_CONF = """
stdio_handler = "file"
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
remember_owner = 0
"""

DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{images}/vmlinuz</kernel>
    <initrd>{images}/initramfs.gz</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet loglevel=3 vt.ping={gateway}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <interface type='bridge'>
      <source bridge='{bridge}'/>
      <mac address='{mac}'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'><source path='{console}'/></serial>
  </devices>
</domain>
"""


def test_a_libvirt_domain_joins_a_virtnet_network(kit: vm.GuestKit, tmp_path: Path) -> None:
    """libvirtd (in namespaces of its own, TCG) defines and boots a domain whose <interface>
    is the bridge of a network virtnet runs in the same namespace: the guest's lease comes
    from virtnet's dnsmasq, and virtnet lists it."""
    try:
        lv = _LibvirtdForDomains()
        lv.__enter__()
    except LibvirtdError as exc:
        pytest.skip(f"no libvirtd for domains here: {exc}")
    uri = lv.uri.replace("network:///", "qemu:///")
    name, mac = "vnt-guest", "52:54:00:7a:02:01"
    state = tmp_path / "state"
    try:
        assert lv.root is not None
        virtnet(lv.netns, state, "net-define", str(DEFAULT_XML))
        virtnet(lv.netns, state, "net-start", "default")
        images = lv.root / "lib" / "images"  # /var/lib/libvirt/images inside its namespace
        images.mkdir(exist_ok=True)
        shutil.copyfile(kit.kernel, images / "vmlinuz")
        shutil.copyfile(kit.initramfs, images / "initramfs.gz")
        domain = tmp_path / "domain.xml"
        domain.write_text(DOMAIN.format(name=name, images="/var/lib/libvirt/images",
                                        gateway=GATEWAY, bridge="virbr0", mac=mac,
                                        console=f"/var/log/libvirt/{name}.console"))
        started = time.monotonic()
        for args in (["define", str(domain)], ["start", name]):
            proc = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                                  timeout=60)
            assert proc.returncode == 0, f"virsh {' '.join(args)}: {proc.stderr}"
        console = lv.root / "log" / f"{name}.console"
        text = ""
        deadline = started + vm.BOOT_TIMEOUT_S
        while time.monotonic() < deadline and "VT-DONE" not in text:
            time.sleep(0.5)
            text = console.read_text(errors="replace") if console.exists() else ""
        result = vm.Result(console=text, elapsed=time.monotonic() - started, returncode=None)
        vm.parse_console(text, result)
        check_guest(result, mac, lv.netns, state)
        print(f"boot to lease {result.first_lease_s:.1f} s (libvirt domain)")
    finally:
        for args in (["destroy", name], ["undefine", name]):
            subprocess.run(["virsh", "-c", uri, *args], capture_output=True, timeout=60)
        subprocess.run([sys.executable, "-m", "virtnet.face.cli", "--netns", lv.netns,
                        "--state-dir", str(state), "net-destroy", "default"],
                       capture_output=True, timeout=60)
        lv.__exit__(None, None, None)
