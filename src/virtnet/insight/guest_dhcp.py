"""How guests of a network take their address from its DHCP server: whether the network
serves DHCP at all, and the configuration per guest network manager or one-shot client.
"""

from __future__ import annotations

from virtnet.spec.model import Network

GUEST_IFACE = "eth0"


def serves_dhcp(net: Network) -> bool:
    return net.forward_mode.has_own_bridge and any(ip.has_dhcp for ip in net.ips)


def guest_dhcp_config(net: Network, iface: str = GUEST_IFACE) -> dict[str, str]:
    """How common guests take their address from the network's DHCP server: per network
    manager (Debian ifupdown, systemd-networkd, NetworkManager) and per one-shot client
    (dhclient, dhcpcd, udhcpc). Empty when the network serves no DHCP."""
    if not serves_dhcp(net):
        return {}
    v6 = any(ip.has_dhcp for ip in net.ipv6_defs())
    ifupdown = f"auto {iface}\niface {iface} inet dhcp\n"
    if v6:
        ifupdown += f"iface {iface} inet6 dhcp\n"
    return {
        "ifupdown": (
            "# /etc/network/interfaces.d/" + iface + " (ifup uses dhclient; without it, "
            "udhcpc or dhcpcd)\n" + ifupdown
        ),
        "systemd-networkd": (
            f"# /etc/systemd/network/20-{iface}.network\n[Match]\nName={iface}\n\n"
            f"[Network]\nDHCP={'yes' if v6 else 'ipv4'}\n"
        ),
        "NetworkManager": (
            f"nmcli connection add type ethernet ifname {iface} con-name {iface} "
            f"ipv4.method auto ipv6.method {'auto' if v6 else 'ignore'}\n"
            "# to use dhclient instead of the internal client: /etc/NetworkManager/conf.d/"
            "dhcp.conf\n[main]\ndhcp=dhclient\n"
        ),
        "dhclient": f"dhclient -4 {iface}" + (f"\ndhclient -6 {iface}" if v6 else "") + "\n",
        "dhcpcd": f"dhcpcd -4 {iface}" + (f"\ndhcpcd -6 {iface}" if v6 else "") + "\n",
        "udhcpc": f"udhcpc -i {iface}\n",
    }



__all__ = [
    "GUEST_IFACE",
    "guest_dhcp_config",
    "serves_dhcp",
]
