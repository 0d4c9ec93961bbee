"""DHCP leases of a network, read from the lease file dnsmasq keeps (``--dhcp-leasefile``), as
rows shaped like ``virsh net-dhcp-leases`` prints them.

dnsmasq's lease file has one line per lease:
- IPv4: ``EXPIRY MAC IP HOSTNAME CLIENTID`` (MAC prefixed with ``TT-`` for non-Ethernet types);
- the line ``duid SERVER-DUID`` once DHCPv6 is in use;
- IPv6: ``EXPIRY IAID IP HOSTNAME CLIENT-DUID`` (IAID prefixed with ``T`` for temporary
  addresses).
``*`` stands for "unknown"; EXPIRY is a unix time, 0 for an infinite lease.

libvirt's rules kept here: expired leases are not shown, the prefix comes from the network's
first ``<ip>`` of the lease's family, rows are sorted by MAC case-insensitively, and ``--mac``
must be a valid MAC. dnsmasq does not store a DHCPv6 client's MAC; it is recovered from the
client DUID when that is link-layer based (DUID-LLT or DUID-LL over Ethernet), else left unknown.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from virtnet.errors import StorageError, VirtnetError
from virtnet.spec.model import Network
from virtnet.paths import DnsmasqPaths, StatePaths

MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
HEADERS = ("Expiry Time", "MAC address", "Protocol", "IP address", "Hostname",
           "Client ID or DUID")
MAX_LEASE_FILE_BYTES = 32 * 1024 * 1024  # libvirt's bound on a network's lease data


@dataclass
class LeaseRow:
    expiry: int  # unix time; 0 = never expires
    mac: str | None
    protocol: str  # "ipv4" / "ipv6"
    ip: str
    prefix: int | None
    hostname: str | None
    client_id: str | None
    iaid: str | None = None  # IPv6 only

    @property
    def address(self) -> str:
        """The IP address with the network's prefix, as virsh shows it."""
        return f"{self.ip}/{self.prefix}" if self.prefix is not None else self.ip

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["address"] = self.address
        return data

    def cells(self) -> list[str]:
        """The row's cells for virsh's table, ``-`` for an unknown value."""
        return [
            format_expiry(self.expiry),
            self.mac or "-",
            self.protocol,
            self.address,
            self.hostname or "-",
            self.client_id or "-",
        ]


def lease_file(paths: StatePaths, network_name: str) -> Path:
    """Where dnsmasq keeps the leases of ``network_name`` (the path the dnsmasq runner uses)."""
    return DnsmasqPaths.for_state(paths).leases(network_name)


def format_expiry(expiry: int) -> str:
    """The expiry in local time as virsh prints it; an infinite lease says so."""
    if expiry == 0:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expiry))


def normalize_mac(mac: str) -> str:
    if not MAC_RE.match(mac):
        raise VirtnetError(f"invalid MAC address: {mac}")
    return mac.lower()


def mac_from_duid(duid: str | None) -> str | None:
    """The Ethernet MAC inside a DUID-LLT (type 1) or DUID-LL (type 3), else None."""
    if not duid:
        return None
    try:
        raw = bytes.fromhex(duid.replace(":", ""))
    except ValueError:
        return None
    duid_type = int.from_bytes(raw[0:2], "big") if len(raw) >= 2 else None
    hardware_type = int.from_bytes(raw[2:4], "big") if len(raw) >= 4 else None
    if hardware_type != 1:  # only Ethernet addresses are MACs
        return None
    if duid_type == 1 and len(raw) == 14:
        mac = raw[8:14]
    elif duid_type == 3 and len(raw) == 10:
        mac = raw[4:10]
    else:
        return None
    return ":".join(f"{byte:02x}" for byte in mac)


def _unknown(field: str) -> str | None:
    return None if field == "*" else field


def _prefix_for(net: Network, is_ipv6: bool) -> int | None:
    for ip in net.ips:
        if ip.is_ipv6 == is_ipv6:
            return ip.effective_prefix
    return None


def parse_lease_text(text: str, net: Network) -> list[LeaseRow]:
    """Every lease line of a dnsmasq lease file, unfiltered, in file order."""
    rows: list[LeaseRow] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] == "duid":
            continue
        expiry_text, hw_or_iaid, ip_text, hostname, client = fields[:5]
        try:
            expiry = int(expiry_text)
            address = ipaddress.ip_address(ip_text)
        except ValueError:
            continue  # a line we do not understand is skipped rather than failing the listing
        if address.version == 6:
            client_id = _unknown(client)
            rows.append(LeaseRow(
                expiry=expiry,
                mac=mac_from_duid(client_id),
                protocol="ipv6",
                ip=str(address),
                prefix=_prefix_for(net, True),
                hostname=_unknown(hostname),
                client_id=client_id,
                iaid=hw_or_iaid,
            ))
        else:
            # Non-Ethernet hardware addresses carry a "TT-" type prefix; keep only the address.
            mac = hw_or_iaid.split("-", 1)[1] if "-" in hw_or_iaid else hw_or_iaid
            rows.append(LeaseRow(
                expiry=expiry,
                mac=mac.lower() or None,
                protocol="ipv4",
                ip=str(address),
                prefix=_prefix_for(net, False),
                hostname=_unknown(hostname),
                client_id=_unknown(client),
            ))
    return rows


def select_leases(
    rows: list[LeaseRow], now: float, mac: str | None = None
) -> list[LeaseRow]:
    """libvirt's view: expired leases dropped, optionally one MAC only, sorted by MAC."""
    wanted = normalize_mac(mac) if mac is not None else None
    kept = [
        row for row in rows
        if not (0 < row.expiry < now) and (wanted is None or row.mac == wanted)
    ]
    return sorted(kept, key=lambda row: (row.mac or "").lower())


def read_leases(path: Path, net: Network, now: float, mac: str | None = None) -> list[LeaseRow]:
    """The current leases of ``net`` from dnsmasq's lease file at ``path`` (none if absent)."""
    if mac is not None:
        normalize_mac(mac)  # a bad --mac is an error even when there are no leases
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_LEASE_FILE_BYTES)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError.of(exc, "read the leases file", path) from exc
    return select_leases(parse_lease_text(data.decode(errors="replace"), net), now, mac)
