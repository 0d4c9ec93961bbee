"""virtnet: libvirt-compatible virtual networks for Linux KVM/QEMU hosts."""

__version__ = "0.1.0"
