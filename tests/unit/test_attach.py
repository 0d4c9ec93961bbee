"""The configuration fragments a VM manager copies (render/attach.py), checked against what
reads them: libvirt 9.0's own domain schema (as installed with libvirt), and the documented
Firecracker NetworkInterface and cloud-hypervisor NetConfig objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtnet.render.attach import (
    Attachment,
    cloud_hypervisor_net,
    firecracker_interface,
    fragments,
    libvirt_interface,
    libvirt_network_interface,
    qemu_args,
)

TAP = {"plug": "network", "mac": "52:54:00:7a:00:01", "device": "vnet0", "bridge": "virbr0"}
HOST_BRIDGE_TAP = {"plug": "bridge", "mac": "52:54:00:7a:00:04", "device": "vnet3",
                   "bridge": "br0"}
MACVTAP = {"plug": "direct", "mac": "52:54:00:7a:00:02", "device": "macvtap0",
           "char_device": "/dev/virtnet/x-macvtap0", "uplink": "eth1", "mode": "bridge"}
VF = {"plug": "hostdev-pci", "mac": "52:54:00:7a:00:03", "pci_address": "0000:03:10.2"}

# Firecracker's swagger (src/firecracker/swagger/firecracker.yaml), NetworkInterface
FC_REQUIRED = {"host_dev_name", "iface_id"}
FC_PROPERTIES = {"guest_mac": str, "host_dev_name": str, "iface_id": str, "mtu": int,
                 "rx_rate_limiter": dict, "tx_rate_limiter": dict}
# cloud-hypervisor's OpenAPI (vmm/src/api/openapi/cloud-hypervisor.yaml), NetConfig
CH_PROPERTIES = {"tap": str, "ip": str, "mask": str, "mac": str, "host_mac": str, "mtu": int,
                 "iommu": bool, "num_queues": int, "queue_size": int, "vhost_user": bool,
                 "vhost_socket": str, "vhost_mode": str, "id": str, "pci_segment": int,
                 "rate_limiter_config": dict, "offload_tso": bool, "offload_ufo": bool,
                 "offload_csum": bool}
CH_CLI_KEYS = {"tap", "ip", "mask", "mac", "host_mac", "mtu", "iommu", "num_queues",
               "queue_size", "vhost_user", "socket", "vhost_mode", "id", "fd", "bw_size",
               "bw_refill_time", "ops_size", "ops_refill_time", "pci_segment", "offload_tso",
               "offload_ufo", "offload_csum"}

DOMAIN_SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")


@pytest.fixture(scope="module")
def domain_schema():
    if not DOMAIN_SCHEMA.exists():
        pytest.skip("libvirt's schemas are not installed (libvirt0)")
    from lxml import etree

    return etree.RelaxNG(etree.parse(str(DOMAIN_SCHEMA)))


def _valid_domain(schema, interface: str) -> bool:
    from lxml import etree

    domain = ("<domain type='qemu'><name>t</name><memory>65536</memory>"
              f"<os><type>hvm</type></os><devices>{interface}</devices></domain>")
    return schema.validate(etree.fromstring(domain))


@pytest.mark.parametrize("summary", [TAP, HOST_BRIDGE_TAP, MACVTAP, VF,
                                     {**TAP, "queues": 4}, {**MACVTAP, "queues": 2}])
def test_libvirt_port_interface_is_valid_domain_xml(domain_schema, summary):
    assert _valid_domain(domain_schema, libvirt_interface(Attachment.from_summary(summary)))


def test_libvirt_port_interface_uses_virtnets_device_unmanaged():
    xml = libvirt_interface(Attachment.from_summary(TAP))
    assert "<interface type='ethernet'>" in xml
    assert "<target dev='vnet0' managed='no'/>" in xml
    assert "<mac address='52:54:00:7a:00:01'/>" in xml
    vf = libvirt_interface(Attachment.from_summary(VF))
    assert ("<address type='pci' domain='0x0000' bus='0x03' slot='0x10' function='0x2'/>"
            in vf)


@pytest.mark.parametrize("kwargs", [{"bridge": "virbr0"}, {"uplink": "eth1", "mode": "private"},
                                    {"uplink": "eth1", "mode": "passthrough", "queues": 2},
                                    {"pci_address": "0000:03:10.2"},
                                    {"bridge": "virbr0", "mac": "52:54:00:00:00:09"}])
def test_libvirt_network_interface_is_valid_domain_xml(domain_schema, kwargs):
    assert _valid_domain(domain_schema, libvirt_network_interface(**kwargs))


def test_a_broken_element_is_refused_by_the_schema(domain_schema):
    # the check can fail: a tap with no name, and an unknown macvtap mode
    assert not _valid_domain(domain_schema, libvirt_interface(Attachment(plug="network",
                                                                         mac=None)))
    assert not _valid_domain(domain_schema, libvirt_network_interface(uplink="eth1",
                                                                      mode="sideways"))


def test_attribute_values_are_escaped():
    xml = libvirt_network_interface(bridge="a'b<c")
    assert "bridge='a&apos;b&lt;c'" in xml


def test_qemu_tap_by_name_and_by_descriptor():
    att = Attachment.from_summary(TAP)
    assert qemu_args(att) == ["-netdev", "tap,id=net0,ifname=vnet0,script=no,downscript=no",
                              "-device", "virtio-net-pci,netdev=net0,mac=52:54:00:7a:00:01"]
    assert qemu_args(att, by_fd=True, vhost=True)[1] == (
        "tap,id=net0,fd={fd},vhost=on,vhostfd={vhostfd}")


def test_qemu_multiqueue():
    att = Attachment.from_summary({**TAP, "queues": 4})
    netdev, device = qemu_args(att)[1], qemu_args(att)[3]
    assert netdev.endswith(",queues=4")
    assert device.endswith(",mq=on,vectors=10")
    assert qemu_args(att, by_fd=True)[1] == "tap,id=net0,fds={fds},vhost=off"


def test_qemu_macvtap_is_always_a_descriptor_and_a_vf_a_vfio_device():
    assert qemu_args(Attachment.from_summary(MACVTAP))[1] == "tap,id=net0,fd={fd},vhost=off"
    assert qemu_args(Attachment.from_summary(VF)) == ["-device", "vfio-pci,host=0000:03:10.2"]


@pytest.mark.parametrize("summary", [TAP, HOST_BRIDGE_TAP])
def test_firecracker_entry_matches_its_schema(summary):
    entry = firecracker_interface(Attachment.from_summary(summary))
    assert FC_REQUIRED <= set(entry)
    assert set(entry) <= set(FC_PROPERTIES)
    for key, value in entry.items():
        assert isinstance(value, FC_PROPERTIES[key]), key
    assert entry["host_dev_name"] == summary["device"]
    assert entry["guest_mac"] == summary["mac"]


@pytest.mark.parametrize("summary", [MACVTAP, VF, {**TAP, "queues": 2}])
def test_firecracker_refuses_what_it_cannot_attach(summary):
    with pytest.raises(ValueError):
        firecracker_interface(Attachment.from_summary(summary))


@pytest.mark.parametrize("summary", [TAP, MACVTAP, {**TAP, "queues": 3}])
def test_cloud_hypervisor_matches_its_schema(summary):
    net = cloud_hypervisor_net(Attachment.from_summary(summary))
    keys = {item.split("=", 1)[0] for item in net["cli"].split(",")}
    assert keys <= CH_CLI_KEYS
    queues = int(summary.get("queues", 1))
    assert f"num_queues={2 * queues}" in net["cli"]
    if net["api"] is not None:
        assert set(net["api"]) <= set(CH_PROPERTIES)
        for key, value in net["api"].items():
            assert isinstance(value, CH_PROPERTIES[key]), key
    else:
        assert summary["plug"] == "direct" and net["cli"].startswith("fd={fd},")
    assert cloud_hypervisor_net(Attachment.from_summary(MACVTAP), fd_number=3)["cli"].startswith(
        "fd=3,")


def test_fragments_say_why_a_manager_cannot_use_a_port():
    got = fragments(VF)
    assert got["firecracker"] is None and "SR-IOV" in got["firecracker_unavailable"]
    assert got["cloud_hypervisor"] is None and "--device" in got["cloud_hypervisor_unavailable"]
    assert fragments(TAP)["qemu_fd"][1].startswith("tap,id=net0,fd={fd}")
    assert fragments(MACVTAP)["qemu_fd"] is None
