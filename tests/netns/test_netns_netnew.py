"""net-new on the real kernel: with 192.168.122.0/24 (an address) and 192.168.100.0/24 (a
route) taken in the host namespace, `--subnet auto` picks another /24, a second network avoids
the first one's, the network starts; and libvirt (in a namespace of its own) defines the very
XML net-new prints."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.kit.libvirtd import LibvirtdInNetns, libvirtd_unavailable_reason

pytestmark = pytest.mark.netns

TAKEN = [ipaddress.ip_network("192.168.122.0/24"), ipaddress.ip_network("192.168.100.0/24")]


def virtnet(ns: str, state: Path, *args: str) -> str:
    argv = [sys.executable, "-m", "virtnet.face.cli", "--netns", ns, "--state-dir", str(state), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"virtnet {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def crowded_host(kit: Any) -> str:
    """A namespace whose 192.168.122.0/24 is an address and 192.168.100.0/24 a route."""
    host = kit.make_netns()
    kit.run(["ip", "-n", host, "link", "add", "uplink0", "type", "veth", "peer", "name",
             "uplink1"])
    kit.run(["ip", "-n", host, "address", "add", "192.168.122.5/24", "dev", "uplink0"])
    kit.run(["ip", "-n", host, "link", "set", "uplink0", "up"])
    kit.run(["ip", "-n", host, "link", "set", "uplink1", "up"])
    kit.run(["ip", "-n", host, "route", "add", "192.168.100.0/24", "dev", "uplink0"])
    return host


def subnets(xml: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    from virtnet.service.engine import Engine

    net = Engine.parse(xml, "net-new output")
    return [ip.interface.network for ip in net.ips if ip.interface is not None]


def test_auto_subnet_avoids_the_host_and_other_networks(netns_kit: Any, tmp_path: Path) -> None:
    host = crowded_host(netns_kit)
    state = tmp_path / "state"
    virtnet(host, state, "net-new", "first", "--ipv6", "auto", "--domain", "lab")
    first = virtnet(host, state, "net-dumpxml", "first", "--inactive")
    [first_v4, first_v6] = subnets(first)
    assert first_v4.prefixlen == 24 and first_v4.is_private
    assert not any(first_v4.overlaps(taken) for taken in TAKEN)
    assert first_v6.prefixlen == 64 and first_v6.subnet_of(ipaddress.ip_network("fd00::/8"))

    printed = virtnet(host, state, "net-new", "second", "--print")
    [second_v4] = subnets(printed)
    assert not second_v4.overlaps(first_v4) and not any(second_v4.overlaps(t) for t in TAKEN)
    assert "second" not in virtnet(host, state, "net-list", "--all", "--name")

    virtnet(host, state, "net-start", "first")
    info = json.loads(virtnet(host, state, "net-info", "first", "--json"))
    assert info["active"] is True, info
    bridge_addresses = netns_kit.ns_addresses(host)
    assert f"{first_v4.network_address + 1}/24" in bridge_addresses, bridge_addresses
    virtnet(host, state, "net-destroy", "first")


@pytest.mark.libvirt
@pytest.mark.skipif(libvirtd_unavailable_reason() is not None,
                    reason=f"libvirt check: {libvirtd_unavailable_reason()}")
def test_libvirt_accepts_what_net_new_prints(netns_kit: Any, tmp_path: Path) -> None:
    host = crowded_host(netns_kit)
    state = tmp_path / "state"
    cases = {
        "vnt-new-nat": ["--ipv6", "auto", "--domain", "lab"],
        "vnt-new-iso": ["--mode", "isolated", "--no-dhcp"],
        "vnt-new-br": ["--mode", "bridge", "--bridge", "br0"],
        "vnt-new-vtap": ["--mode", "macvtap", "--dev", "eth0", "--macvtap-mode", "vepa"],
    }
    with LibvirtdInNetns() as libvirt:
        for name, flags in cases.items():
            path = tmp_path / f"{name}.xml"
            path.write_text(virtnet(host, state, "net-new", name, *flags, "--print"))
            defined = libvirt.virsh("net-define", str(path))
            assert defined.returncode == 0, f"{name}: {defined.stderr}\n{path.read_text()}"
            dumped = libvirt.virsh("net-dumpxml", name, "--inactive").stdout
            # libvirt keeps what net-new wrote (it adds only uuid, bridge name and MAC)
            assert subnets(dumped) == subnets(path.read_text()), dumped
            libvirt.forget(name)


def _auto_subnets_beside(state: str, libvirt_dirs: list[str]) -> list[str]:
    from virtnet.service.engine import Engine
    from virtnet.insight.netnew import NewNetworkOptions, new_network
    from virtnet.paths import StatePaths

    engine = Engine(StatePaths.under(Path(state)))
    net = new_network(engine, NewNetworkOptions(name="beside", ipv6="auto"), define=False,
                      libvirt_dirs=[Path(d) for d in libvirt_dirs])
    return [str(ip.interface.network) for ip in net.ips if ip.interface is not None]


@pytest.mark.libvirt
@pytest.mark.skipif(libvirtd_unavailable_reason() is not None,
                    reason=f"libvirt check: {libvirtd_unavailable_reason()}")
def test_auto_subnet_avoids_libvirts_networks(netns_kit: Any, tmp_path: Path) -> None:
    """libvirt defines one network and runs a transient one; --subnet auto avoids both, and
    the host's own address and route, and takes the first /24 after them."""
    host = crowded_host(netns_kit)
    state = tmp_path / "state"
    persistent = tmp_path / "lvpersist.xml"
    persistent.write_text("<network><name>vnt-lv-persist</name><bridge name='vntlvp0'/>"
                          "<ip address='192.168.123.1' netmask='255.255.255.0'/></network>")
    transient = tmp_path / "lvtransient.xml"
    transient.write_text("<network><name>vnt-lv-trans</name><bridge name='vntlvt0'/>"
                         "<ip address='192.168.124.1' prefix='24'/></network>")
    with LibvirtdInNetns() as libvirt:
        assert libvirt.virsh("net-define", str(persistent)).returncode == 0
        created = libvirt.virsh("net-create", str(transient))
        assert created.returncode == 0, created.stderr
        dirs = [str(libvirt.host_path("/etc/libvirt/qemu/networks")),
                str(libvirt.host_path("/run/libvirt/network"))]
        chosen = netns_kit.run_in_netns(host, _auto_subnets_beside, str(state), dirs)
        without_libvirt = netns_kit.run_in_netns(host, _auto_subnets_beside, str(state), [])
    # 122 is the host's address, 123 libvirt's definition, 124 its running transient network
    assert chosen[0] == "192.168.125.0/24", chosen
    assert without_libvirt[0] == "192.168.123.0/24", without_libvirt
