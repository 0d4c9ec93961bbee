"""Guest ports on the real kernel: pools, records across processes, taps, failures, refusals.

Everything runs inside namespaces created here; virtnet runs in forked children that entered
the "host" namespace, or as the CLI with --netns.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.kit.macvtaplab import build_lab, ip

pytestmark = pytest.mark.netns

VEPA3 = ("<network><name>lan</name><forward mode='vepa'><interface dev='eth1'/>"
         "<interface dev='eth2'/><interface dev='eth3'/></forward></network>")
VEPA1 = VEPA3.replace("<interface dev='eth2'/><interface dev='eth3'/>", "")


def mac(index: int) -> str:
    return f"52:54:00:cc:{index // 256:02x}:{index % 256:02x}"


# --- inside the host namespace -------------------------------------------------------------


def engine(state: Path) -> Any:
    from virtnet.service.engine import Engine
    from virtnet.paths import StatePaths

    return Engine(StatePaths.under(state))


def start_network(state: Path, xml: str, name: str = "lan") -> None:
    eng = engine(state)
    eng.define(xml)
    eng.start(name)


def create_ports(state: Path, macs: list[str], network: str = "lan",
                 **request: Any) -> list[dict[str, Any]]:
    from virtnet.plan.ports import PortRequest
    from virtnet.service.ports import PortManager, port_summary

    manager = PortManager(engine(state))
    with manager.session():
        return [port_summary(manager.create(network, PortRequest(mac=m, **request))) for m in macs]


def delete_ports(state: Path, refs: list[str], network: str = "lan") -> None:
    from virtnet.service.ports import PortManager

    manager = PortManager(engine(state))
    for ref in refs:
        manager.delete(network, ref)


def port_record(state: Path, ref: str, network: str = "lan") -> Any:
    from virtnet.service.ports import PortManager

    return PortManager(engine(state)).get(network, ref)


def info(state: Path, network: str = "lan") -> dict[str, Any]:
    return dict(engine(state).info(network))


def live_xml(state: Path, network: str = "lan") -> str:
    return str(engine(state).dumpxml(network))


def destroy(state: Path, network: str = "lan") -> None:
    engine(state).destroy(network)


def restart(state: Path, network: str = "lan") -> None:
    engine(state).start(network)


def macvtaps(kit: Any, ns: str) -> list[str]:
    return [name for name in kit.ns_links(ns) if name.startswith("macvtap")]


def sysfs_rdev(ns: str, device: str, ifindex: int) -> int:
    """The device number of a macvtap's character device, as sysfs shows it inside NS (``ip
    netns exec`` mounts a sysfs of NS)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "cat",
                          f"/sys/class/net/{device}/macvtap/tap{ifindex}/dev"],
                         capture_output=True, text=True, timeout=20, check=True).stdout
    major, minor = out.strip().split(":")
    return os.makedev(int(major), int(minor))


def cli(ns: str, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "virtnet.face.cli", "--netns", ns, "--state-dir", str(state), *args],
        capture_output=True, text=True, timeout=60,
    )


# --- pools and connection counts ----------------------------------------------------------


def test_ten_ports_spread_over_three_interfaces(netns_kit: Any, tmp_path: Path) -> None:
    lab = build_lab(netns_kit.make_netns, uplinks=3, host_address=False)
    state = tmp_path / "state"
    netns_kit.run_in_netns(lab.host, start_network, state, VEPA3)
    ports = netns_kit.run_in_netns(lab.host, create_ports, state, [mac(i) for i in range(10)])
    uplinks = [port["uplink"] for port in ports]
    # always the interface with the fewest connections, the first of equals
    assert uplinks == ["eth1", "eth2", "eth3"] * 3 + ["eth1"]
    details = ip(lab.host, "-d", "-j", "link", "show", "type", "macvtap").stdout
    kernel = {link["ifname"]: link for link in json.loads(details)}
    assert len(kernel) == 10
    for port in ports:
        link = kernel[port["device"]]
        assert link["address"] == port["mac"]
        assert link["linkinfo"]["info_data"]["mode"] == "vepa"
        assert link["ifindex"] == port["ifindex"]
        node = os.stat(port["char_device"])
        assert port["char_device"].startswith("/dev/virtnet/net")
        assert stat.S_ISCHR(node.st_mode) and node.st_mode & 0o777 == 0o600
        assert node.st_rdev == sysfs_rdev(lab.host, port["device"], port["ifindex"])

    shown = netns_kit.run_in_netns(lab.host, info, state)
    assert shown["connections"] == 10
    assert shown["interface_connections"] == {"eth1": 4, "eth2": 3, "eth3": 3}
    dumped = netns_kit.run_in_netns(lab.host, live_xml, state)
    assert "<network connections='10'>" in dumped
    assert "<interface dev='eth1' connections='4'/>" in dumped

    # freeing two ports on eth2 makes it the least used: the next port goes there
    on_eth2 = [p["uuid"] for p in ports if p["uplink"] == "eth2"][:2]
    netns_kit.run_in_netns(lab.host, delete_ports, state, on_eth2)
    [extra] = netns_kit.run_in_netns(lab.host, create_ports, state, [mac(99)])
    assert extra["uplink"] == "eth2"

    everyone = [p["uuid"] for p in ports if p["uuid"] not in on_eth2] + [extra["uuid"]]
    netns_kit.run_in_netns(lab.host, delete_ports, state, everyone)
    assert macvtaps(netns_kit, lab.host) == []
    assert not [p for p in ports + [extra] if os.path.lexists(p["char_device"])]
    shown = netns_kit.run_in_netns(lab.host, info, state)
    assert shown["connections"] == 0
    assert shown["interface_connections"] == {"eth1": 0, "eth2": 0, "eth3": 0}


def test_cli_ports_across_processes(netns_kit: Any, tmp_path: Path) -> None:
    lab = build_lab(netns_kit.make_netns, uplinks=3, host_address=False)
    state = tmp_path / "state"
    definition = tmp_path / "lan.xml"
    definition.write_text(VEPA3.replace("</forward>", "</forward><portgroup name='web' "
                                        "default='yes' trustGuestRxFilters='yes'/>"))
    assert cli(lab.host, state, "net-define", str(definition)).returncode == 0
    assert cli(lab.host, state, "net-start", "lan").returncode == 0
    created = cli(lab.host, state, "port-create", "lan", "--mac", "52:54:00:CC:00:01",
                  "--owner", "vm1", "--owner-uuid", "d54df46f-1ab5-4a22-8618-4560ef5fac2c",
                  "--json")
    assert created.returncode == 0, created.stderr
    port = json.loads(created.stdout)
    assert port["mac"] == "52:54:00:cc:00:01"
    assert (port["portgroup"], port["trust_guest_rx_filters"]) == ("web", True)
    listed = json.loads(cli(lab.host, state, "port-list", "lan", "--json").stdout)
    assert [p["uuid"] for p in listed] == [port["uuid"]]
    dumped = cli(lab.host, state, "port-dumpxml", "lan", port["device"]).stdout
    assert dumped == (
        "<networkport>\n"
        f"  <uuid>{port['uuid']}</uuid>\n"
        "  <owner>\n    <name>vm1</name>\n"
        "    <uuid>d54df46f-1ab5-4a22-8618-4560ef5fac2c</uuid>\n  </owner>\n"
        "  <group>web</group>\n"
        "  <mac address='52:54:00:cc:00:01'/>\n"
        "  <rxfilters trustGuest='yes'/>\n"
        f"  <plug type='direct' dev='{port['uplink']}' mode='vepa'/>\n"
        "</networkport>\n\n"
    )
    # a networkport document as input, with its own bandwidth
    request = tmp_path / "port.xml"
    request.write_text(
        "<networkport><uuid>5d744f21-ba4a-4d6e-bdb2-30a35ff3207d</uuid><owner><name>vm2</name>"
        "<uuid>d54df46f-1ab5-4a22-8618-4560ef5fac2d</uuid></owner>"
        "<mac address='52:54:00:cc:00:02'/><bandwidth><outbound average='500'/></bandwidth>"
        "</networkport>")
    second = cli(lab.host, state, "port-create", "lan", "--file", str(request), "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["uuid"] == "5d744f21-ba4a-4d6e-bdb2-30a35ff3207d"
    qdiscs = subprocess.run(["ip", "netns", "exec", lab.host, "tc", "qdisc", "show", "dev",
                             "macvtap1"], capture_output=True, text=True, check=True).stdout
    assert "qdisc htb 1: root" in qdiscs
    assert cli(lab.host, state, "port-delete", "lan", port["uuid"]).returncode == 0
    gone = cli(lab.host, state, "port-delete", "lan", port["uuid"])
    assert gone.returncode == 1 and "no network port with matching uuid" in gone.stderr
    assert cli(lab.host, state, "net-destroy", "lan").returncode == 0
    assert macvtaps(netns_kit, lab.host) == []


def one_macvtap_port(kit: Any, tmp_path: Path) -> tuple[Any, Path, dict[str, Any]]:
    """A lab with one uplink, a vepa network on it, and one port: (lab, state, port)."""
    lab = build_lab(kit.make_netns, uplinks=1, host_address=False)
    state = tmp_path / "state"
    kit.run_in_netns(lab.host, start_network, state, VEPA1)
    [port] = kit.run_in_netns(lab.host, create_ports, state, [mac(1)])
    return lab, state, port


def test_the_node_is_our_own_whatever_dev_tapN_is(netns_kit: Any, tmp_path: Path) -> None:
    """/dev/tapIFINDEX may belong to a macvtap of another namespace (or be missing, without
    devtmpfs): the port's node is virtnet's own, made from the numbers of a sysfs of the
    right namespace, and goes with the port."""
    lab, state, port = one_macvtap_port(netns_kit, tmp_path)
    node = Path(port["char_device"])
    inode = os.stat(f"/run/netns/{lab.host}").st_ino
    assert node == Path(f"/dev/virtnet/net{inode}-{port['device']}")
    assert node.stat().st_rdev == sysfs_rdev(lab.host, port["device"], port["ifindex"])

    def numbers(name: str, ifindex: int, private_mount: bool) -> tuple[int, int]:
        from virtnet.host.sysfs import read_netns_sysfs

        text = read_netns_sysfs(f"class/net/{name}/macvtap/tap{ifindex}/dev",
                                private_mount=private_mount)
        major, minor = (text or "").split(":")
        return int(major), int(minor)

    expected = sysfs_rdev(lab.host, port["device"], port["ifindex"])
    for private_mount in (False, True):  # the detached mount, and the forked fallback
        found = netns_kit.run_in_netns(lab.host, numbers, port["device"], port["ifindex"],
                                       private_mount)
        assert os.makedev(*found) == expected
    netns_kit.run_in_netns(lab.host, delete_ports, state, [port["uuid"]])
    assert not node.exists()


def test_port_exec_without_a_daemon_hands_its_command_the_macvtap(netns_kit: Any,
                                                                 tmp_path: Path) -> None:
    """With no virtnetd, port-exec makes the port in its own process (root), opens the
    macvtap's node, runs the command with it and deletes the port when the command exits."""
    lab = build_lab(netns_kit.make_netns, uplinks=1, host_address=False)
    state = tmp_path / "state"
    netns_kit.run_in_netns(lab.host, start_network, state, VEPA1)
    ran = cli(lab.host, state, "port-exec", "lan", "--mac", mac(7), "--",
              "sh", "-c", "readlink /proc/self/fd/{fd}; echo dev={device} mac={mac}; exit 3")
    assert ran.returncode == 3, ran.stderr
    node, said = ran.stdout.splitlines()
    assert node.startswith("/dev/virtnet/net") and said == f"dev=macvtap0 mac={mac(7)}"
    assert not os.path.lexists(node) and macvtaps(netns_kit, lab.host) == []
    assert netns_kit.run_in_netns(lab.host, info, state)["connections"] == 0
    missing = cli(lab.host, state, "port-exec", "lan", "--mac", mac(8), "--",
                  str(tmp_path / "no-such-program"))
    assert missing.returncode == 1 and "cannot run" in missing.stderr
    assert macvtaps(netns_kit, lab.host) == []
    netns_kit.run_in_netns(lab.host, destroy, state)


def test_domif_xml_and_the_fragments_of_a_port_with_a_made_up_mac(netns_kit: Any,
                                                                  tmp_path: Path) -> None:
    """domif-xml gives the <interface> with which libvirt makes its own macvtap where a port
    would go; a port created without a MAC gets one made up (52:54:00:...), and its JSON
    carries the fragments to use it (libvirt's element for its own device, QEMU's by
    descriptor), the same element domif-xml --port prints."""
    lab = build_lab(netns_kit.make_netns, uplinks=1, host_address=False)
    state = tmp_path / "state"
    netns_kit.run_in_netns(lab.host, start_network, state, VEPA1)
    own = cli(lab.host, state, "domif-xml", "lan", "--mac", mac(9))
    assert own.returncode == 0, own.stderr
    assert own.stdout == ("<interface type='direct'>\n  <source dev='eth1' mode='vepa'/>\n"
                          f"  <mac address='{mac(9)}'/>\n  <model type='virtio'/>\n"
                          "</interface>\n\n")
    assert macvtaps(netns_kit, lab.host) == []  # nothing was made for it
    created = cli(lab.host, state, "port-create", "lan", "--json")
    assert created.returncode == 0, created.stderr
    port = json.loads(created.stdout)
    assert port["mac"].startswith("52:54:00:") and port["mac"] != "52:54:00:00:00:00"
    attach = port["attach"]
    assert attach["libvirt"] == ("<interface type='ethernet'>\n  <target dev='macvtap0' "
                                 f"managed='no'/>\n  <mac address='{port['mac']}'/>\n"
                                 "  <model type='virtio'/>\n</interface>\n")
    assert "tap,id=net0,fd={fd}" in " ".join(attach["qemu"])
    assert attach["firecracker"] is None and "tap" in attach["firecracker_unavailable"]
    by_port = cli(lab.host, state, "domif-xml", "lan", "--port", port["uuid"])
    assert by_port.returncode == 0 and by_port.stdout == attach["libvirt"] + "\n"
    second = cli(lab.host, state, "port-create", "lan", "--json")
    assert json.loads(second.stdout)["mac"] != port["mac"]
    missing = cli(lab.host, state, "domif-xml", "nope")
    assert missing.returncode == 1 and "nope" in missing.stderr
    netns_kit.run_in_netns(lab.host, destroy, state)


def test_tap_ports_on_a_bridge_of_the_network(netns_kit: Any, tmp_path: Path) -> None:
    host = netns_kit.make_netns()
    state = tmp_path / "state"
    netns_kit.run_in_netns(host, start_network, state,
                           "<network><name>lan</name><bridge name='vnpt0' stp='off'/>"
                           "<mtu size='1400'/><port isolated='yes'/>"
                           "<ip address='10.79.0.1' netmask='255.255.255.0'/></network>")
    ports = netns_kit.run_in_netns(host, create_ports, state, [mac(1), mac(2)])
    assert [p["device"] for p in ports] == ["vnet0", "vnet1"]
    for port in ports:
        assert (port["plug"], port["bridge"], port["isolated"]) == ("network", "vnpt0", True)
        link = json.loads(ip(host, "-d", "-j", "link", "show", "dev", port["device"]).stdout)[0]
        assert link["address"] == "fe" + port["mac"][2:]  # libvirt's host-side tap MAC
        assert link["master"] == "vnpt0" and "UP" in link["flags"] and link["mtu"] == 1400
        assert link["linkinfo"]["info_kind"] == "tun"
        assert link["linkinfo"]["info_data"]["type"] == "tap"
        assert link["linkinfo"]["info_slave_data"]["isolated"] is True
    netns_kit.run_in_netns(host, destroy, state)
    assert not [n for n in netns_kit.ns_links(host) if n.startswith(("vnet", "vnpt"))]


# --- failures, teardown ---------------------------------------------------------------------


def test_a_failing_step_undoes_the_port(netns_kit: Any, tmp_path: Path) -> None:
    from virtnet.spec.model import Bandwidth, BandwidthRate
    from virtnet.plan.plans import PlanError

    lab = build_lab(netns_kit.make_netns, uplinks=1, host_address=False)
    state = tmp_path / "state"
    netns_kit.run_in_netns(lab.host, start_network, state, VEPA1)
    shaped = {"bandwidth": Bandwidth(inbound=BandwidthRate(average=800),
                                     outbound=BandwidthRate(average=800))}
    with pytest.raises(PlanError, match="injected fault at step 2"):
        netns_kit.run_in_netns(lab.host, create_ports, state, [mac(1)],
                               env={"VIRTNET_FAULT_STEP": "2"}, **shaped)
    assert macvtaps(netns_kit, lab.host) == []
    assert not [n for n in netns_kit.ns_links(lab.host) if n.startswith("ifb")]
    assert netns_kit.run_in_netns(lab.host, info, state)["connections"] == 0
    # the same request works once the fault is gone, and gets the first name again
    [port] = netns_kit.run_in_netns(lab.host, create_ports, state, [mac(1)], **shaped)
    assert port["device"] == "macvtap0"
    netns_kit.run_in_netns(lab.host, destroy, state)
    assert not os.path.lexists(port["char_device"])


def test_a_name_taken_by_another_program_is_skipped(netns_kit: Any, tmp_path: Path) -> None:
    lab = build_lab(netns_kit.make_netns, uplinks=1, host_address=False)
    state = tmp_path / "state"
    netns_kit.run_in_netns(lab.host, start_network, state, VEPA1)
    ip(lab.host, "link", "add", "link", "eth1", "name", "macvtap0", "type", "macvtap")
    [port] = netns_kit.run_in_netns(lab.host, create_ports, state, [mac(1)])
    assert port["device"] == "macvtap1"
    netns_kit.run_in_netns(lab.host, destroy, state)
    assert macvtaps(netns_kit, lab.host) == ["macvtap0"]  # not ours: left alone


def test_net_destroy_removes_the_ports(netns_kit: Any, tmp_path: Path) -> None:
    lab = build_lab(netns_kit.make_netns, uplinks=3, host_address=False)
    state = tmp_path / "state"
    netns_kit.run_in_netns(lab.host, start_network, state, VEPA3)
    netns_kit.run_in_netns(lab.host, create_ports, state, [mac(i) for i in range(3)])
    netns_kit.run_in_netns(lab.host, destroy, state)
    assert macvtaps(netns_kit, lab.host) == []
    assert not (state / "run" / "network" / "lan.ports").exists()
    netns_kit.run_in_netns(lab.host, restart, state)
    assert netns_kit.run_in_netns(lab.host, info, state)["connections"] == 0


# --- macvtaps of two namespaces with one ifindex -------------------------------------------

BRIDGE1 = ("<network><name>lan</name><forward mode='bridge'><interface dev='eth1'/>"
           "</forward></network>")
MARKER_ETHERTYPE = 0x88B5  # IEEE local experimental: nothing else sends it


def same_ifindexes(kit: Any, count: int) -> tuple[list[str], int]:
    """COUNT namespaces in which the next links get the same ifindexes: the same links made
    in the same order (IPv6 off, so nothing but the test sends), after a batch of links made
    and removed, so that the macvtap's ifindex is one no other namespace on this machine is
    likely to use (on today's virtnet a /dev/tapN of another test would be opened).
    Returns (the namespaces, the ifindex the first macvtap will get)."""
    for skip in (400, 700, 1000, 1300):
        ifindex = 2 + 2 * skip + 2  # lo, the skipped veth pairs, eth1 and its peer
        if not os.path.lexists(f"/dev/tap{ifindex}"):
            break
    else:
        pytest.skip("every /dev/tapN this test could use exists")
    namespaces = []
    batch = "".join(f"link add s{i} group 77 type veth peer name t{i} group 77\n"
                    for i in range(skip))
    for _ in range(count):
        ns = kit.make_netns()
        for key in ("all", "default"):
            kit.ns_run(ns, ["sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"])
        kit.run(["ip", "-n", ns, "-batch", "-"], input=batch)
        kit.run(["ip", "-n", ns, "link", "delete", "group", "77"])
        kit.run(["ip", "-n", ns, "link", "add", "eth1", "type", "veth", "peer", "name", "lan1"])
        for link in ("eth1", "lan1"):
            kit.run(["ip", "-n", ns, "link", "set", link, "up"])
        namespaces.append(ns)
    return namespaces, ifindex


def tx_packets(ns: str, device: str) -> int:
    out = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", "dev", device],
                         capture_output=True, text=True, timeout=20, check=True).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["packets"])


def marker_frame(source: str) -> bytes:
    return (b"\xff" * 6 + bytes.fromhex(source.replace(":", ""))
            + MARKER_ETHERTYPE.to_bytes(2, "big") + b"virtnet".ljust(46, b"\0"))


def test_macvtaps_with_one_ifindex_in_two_namespaces_get_their_own_nodes(
        netns_kit: Any, root: Path) -> None:
    """A macvtap's kernel node is /dev/tapIFINDEX in the one /dev of every namespace: with
    the same ifindex in two namespaces the first one's node stood for both, and the daemon
    handed over the other namespace's device (another tenant's LAN). Each port now has a
    node of its own, and the daemon checks the descriptor's device number before it hands
    it over."""
    from tests.kit.daemon import VirtnetdProcess

    (ns_a, ns_b), ifindex = same_ifindexes(netns_kit, 2)
    definition = root / "lan.xml"
    definition.write_text(BRIDGE1)
    state_a = root / "a"
    assert cli(ns_a, state_a, "net-define", str(definition)).returncode == 0
    assert cli(ns_a, state_a, "net-start", "lan").returncode == 0
    created = cli(ns_a, state_a, "port-create", "lan", "--mac", mac(0xA), "--json")
    assert created.returncode == 0, created.stderr
    port_a = json.loads(created.stdout)
    assert port_a["ifindex"] == ifindex
    daemon = VirtnetdProcess(ns_b, root / "b")
    fd = port_b = None
    try:
        daemon.start()
        daemon.virtnet("net-define", str(definition))
        daemon.virtnet("net-start", "lan")
        with daemon.client() as api:
            port_b = api.create_port("lan", mac(0xB), pass_fd=True, vnet_hdr=False)
            fd = port_b.pop("fd")
        assert port_b["ifindex"] == ifindex == port_a["ifindex"]
        rdev_a = sysfs_rdev(ns_a, port_a["device"], ifindex)
        rdev_b = sysfs_rdev(ns_b, port_b["device"], ifindex)
        assert rdev_a != rdev_b
        # the descriptor is B's macvtap, and so is what it sends
        assert os.fstat(fd).st_rdev == rdev_b
        sent_a, sent_b = tx_packets(ns_a, "macvtap0"), tx_packets(ns_b, "macvtap0")
        for _ in range(3):
            os.write(fd, marker_frame(port_b["mac"]))
        assert tx_packets(ns_b, "macvtap0") == sent_b + 3
        assert tx_packets(ns_a, "macvtap0") == sent_a
        # each port's node is its own device, under a name of its own
        assert port_a["char_device"] != port_b["char_device"]
        assert os.stat(port_a["char_device"]).st_rdev == rdev_a
        assert os.stat(port_b["char_device"]).st_rdev == rdev_b
    finally:
        if fd is not None:
            os.close(fd)
        if port_b is not None and daemon.running:
            with daemon.client() as api:
                api.delete_port("lan", port_b["uuid"])
        daemon.stop()
        deleted = cli(ns_a, state_a, "port-delete", "lan", port_a["uuid"])
    assert deleted.returncode == 0, deleted.stderr
    assert not os.path.lexists(port_a["char_device"])
    assert not os.path.lexists(port_b["char_device"])


def test_a_node_that_is_not_the_port_s_device_is_never_handed_over(netns_kit: Any,
                                                                  tmp_path: Path) -> None:
    """The daemon opens a macvtap's node and checks the descriptor's device number before
    handing it over: a node that names another device (here: swapped for /dev/null's) is
    refused, whatever its path."""
    lab, state, port = one_macvtap_port(netns_kit, tmp_path)
    node = Path(port["char_device"])
    assert node.parent == Path("/dev/virtnet")  # ours: this test may replace it
    rdev = node.stat().st_rdev

    def hand_over(uuid: str) -> int:
        from virtnet.service.handover import open_port_device

        record = port_record(state, uuid)
        fd = open_port_device(record)
        st = os.fstat(fd)
        os.close(fd)
        return st.st_rdev

    assert netns_kit.run_in_netns(lab.host, hand_over, port["uuid"]) == rdev
    node.unlink()
    os.mknod(node, stat.S_IFCHR | 0o600, os.stat("/dev/null").st_rdev)
    try:
        from virtnet.errors import PortError

        with pytest.raises(PortError, match=f"{node} is not the character device of macvtap "
                                            f"{port['device']}"):
            netns_kit.run_in_netns(lab.host, hand_over, port["uuid"])
    finally:
        node.unlink()
        os.mknod(node, stat.S_IFCHR | 0o600, rdev)
    netns_kit.run_in_netns(lab.host, destroy, state)
    assert not node.exists()


# --- refusals --------------------------------------------------------------------------------


def test_hostdev_network_is_planned_and_refused_without_sriov(netns_kit: Any,
                                                            tmp_path: Path) -> None:
    lab = build_lab(netns_kit.make_netns, uplinks=1, host_address=False)
    state = tmp_path / "state"
    xml_file = tmp_path / "vfs.xml"
    xml_file.write_text(
        "<network><name>vfs</name><forward mode='hostdev' managed='yes'>"
        "<address type='pci' domain='0x0000' bus='0x7e' slot='0x10' function='0x1'/>"
        "</forward></network>")
    assert cli(lab.host, state, "net-define", str(xml_file)).returncode == 0
    plan = cli(lab.host, state, "plan", "vfs")
    assert "use the SR-IOV virtual functions 0000:7e:10.1" in plan.stdout
    started = cli(lab.host, state, "net-start", "vfs")
    assert started.returncode == 1
    assert "PCI device 0000:7e:10.1 does not exist on this host (no SR-IOV" in started.stderr

    xml_file.write_text("<network><name>pf</name><forward mode='hostdev' managed='yes'>"
                        "<pf dev='eth1'/></forward></network>")
    assert cli(lab.host, state, "net-define", str(xml_file)).returncode == 0
    started = cli(lab.host, state, "net-start", "pf")
    assert started.returncode == 1
    assert "eth1 has no SR-IOV virtual functions" in started.stderr


def test_vlan_on_a_host_bridge_port_needs_8021q(netns_kit: Any, tmp_path: Path) -> None:
    from virtnet.errors import HostError
    from virtnet.host.kernel import kernel_has

    host = netns_kit.make_netns()
    ip(host, "link", "add", "br0", "type", "bridge")
    state = tmp_path / "state"
    netns_kit.run_in_netns(host, start_network, state,
                           "<network><name>lan</name><forward mode='bridge'/>"
                           "<bridge name='br0'/><vlan><tag id='42'/></vlan></network>")

    def has_vlan() -> bool:
        return kernel_has("vlan")

    if netns_kit.run_in_netns(host, has_vlan):
        pytest.skip("the kernel has 802.1Q: vlan tags on host bridge ports are not "
                    "implemented yet, and this test checks the refusal without it")
    with pytest.raises(HostError, match=r"802\.1Q VLAN support \(CONFIG_VLAN_8021Q\)"):
        netns_kit.run_in_netns(host, create_ports, state, [mac(1)])
    assert not [n for n in netns_kit.ns_links(host) if n.startswith("vnet")]


def test_kernel_preflight_matches_the_kernel(netns_kit: Any) -> None:
    """Each probe says what creating the real device says, without creating anything."""
    host = netns_kit.make_netns()
    ip(host, "link", "add", "eth1", "type", "veth", "peer", "name", "eth2")

    def probe() -> dict[str, bool]:
        from virtnet.host.kernel import probe_kernel

        return probe_kernel().to_dict()

    found = netns_kit.run_in_netns(host, probe)
    assert netns_kit.ns_links(host) == ["eth1", "eth2", "lo"]  # the probes created nothing
    attempts = {
        "macvlan": ["link", "add", "link", "eth1", "name", "p1", "type", "macvlan"],
        "macvtap": ["link", "add", "link", "eth1", "name", "p2", "type", "macvtap"],
        "vlan": ["link", "add", "link", "eth1", "name", "p3", "type", "vlan", "id", "5"],
        "bridge": ["link", "add", "p4", "type", "bridge"],
        "ifb": ["link", "add", "p5", "type", "ifb"],
    }
    for feature, argv in attempts.items():
        created = ip(host, *argv, check=False).returncode == 0
        assert found[feature] == created, feature
    assert found["tun"] == os.path.exists("/dev/net/tun")
