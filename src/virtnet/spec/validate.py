"""Semantic validation of a network definition: the rules libvirt 9.0 applies when a network is
defined, plus a few of our own where a value would be unsafe to hand on to dnsmasq or a command.

``validate`` is pure (no host access): it only looks at the model. Rules that need the host (is
the forward dev there, is a PCI device an SR-IOV VF, is the subnet free) belong to start time.

Two stages, as in libvirt: the rules its XML parser applies, and those its network driver
adds when a network is defined (``validate(net, stage=...)``).

This module runs the sections in the order of libvirt's layout and holds the network-wide
rules (name, uuid, title, mtu, mac, dnsmasq options); the others are in
:mod:`virtnet.spec.validate_forward` (forward, bridge, vlans, portgroups, bandwidth,
virtualport), :mod:`virtnet.spec.validate_ip` (ip, DHCP, routes) and
:mod:`virtnet.spec.validate_dns` (domain, DNS), on the helpers and the problem collector of
:mod:`virtnet.spec.validate_base`.

Every broken rule gives one ``Problem`` with the element path (``/network/ip[1]/dhcp/range[2]``),
the offending value, and a reason that names the value. Elements that may repeat carry their
1-based position among same-named siblings.

Where we are stricter than libvirt 9.0, on purpose:
- interface and bridge names must be names the kernel accepts (libvirt fails only at start);
- a DHCP host's ip must lie in its <ip>'s subnet (dnsmasq would silently never hand it out);
- <forward> may list only one kind of pool (<interface>, <address> or <pf>): libvirt silently
  drops the kinds it does not use;
- control characters, and separators that would change the meaning of a dnsmasq option line
  (',' in single-valued fields, '/' in domains, whitespace in host names), are refused in
  values that reach dnsmasq's configuration or hosts files;
- an <ip> must yield a usable subnet (prefix 0 or an address without a classful default).
Newer libvirt features are accepted as a superset: vlan on a host bridge, forward mode='open'
without an <ip>, a DNS forwarder port, <domain register>.
"""

from __future__ import annotations

from typing import Literal

from virtnet.errors import Problem, ValidationError
from virtnet.ids import network_name_problem
from virtnet.spec.model import Network
from virtnet.spec.validate_base import UUID_RE, Scan, control_char, describe, mac_problem
from virtnet.spec.validate_dns import check_dns, check_domain
from virtnet.spec.validate_forward import (
    check_bridge,
    check_forward,
    check_network_bandwidth,
    check_virtualport,
    check_vlans_and_portgroups,
)
from virtnet.spec.validate_ip import check_ips, check_routes


def validate(net: Network, *, stage: Literal["parse", "define"] = "define") -> list[Problem]:
    """All semantic problems of ``net``, in the order of libvirt's canonical layout; an empty
    list means valid.

    ``stage='define'`` (the default) applies every rule: what libvirt refuses when a network is
    defined. ``stage='parse'`` leaves out the rules libvirt applies only in its network driver
    at define time (networkValidate: elements a forward mode cannot use, one DHCP per family,
    portgroup defaults and names, vlan support...), i.e. it gives what libvirt's XML parser
    alone refuses, as in its networkxml2xml tests."""
    scan = Scan(net)
    _run(scan)
    if stage == "parse":
        return [p for p in scan.problems if id(p) not in scan.define_only]
    return scan.problems


def check(net: Network, source: str | None = None) -> None:
    """Raise ``ValidationError`` listing every problem of ``net``; return if it is valid."""
    problems = validate(net)
    if problems:
        raise ValidationError(problems, source=source)


# --- the order of the sections ----------------------------------------------------------


def _run(scan: Scan) -> None:
    # roughly the order of libvirt's canonical layout
    check_identity(scan)
    check_forward(scan)
    check_bridge(scan)
    check_mtu(scan)
    check_mac(scan)
    check_domain(scan)
    check_dns(scan)
    check_network_bandwidth(scan)
    check_ips(scan)
    check_routes(scan)
    if scan.net.virtualport is not None:
        check_virtualport(scan, scan.net.virtualport, "/network/virtualport", True)
    check_vlans_and_portgroups(scan)
    check_dnsmasq_options(scan)


# --- name, uuid, title, mtu, mac, dnsmasq options ---------------------------------------


def check_identity(scan: Scan) -> None:
    net = scan.net
    if not net.name:
        scan.add("/network/name", net.name, "the network name is empty")
    else:
        # the one check of names that become file names (the parser applies it too)
        problem = network_name_problem(net.name)
        if problem is not None:
            scan.add("/network/name", net.name, problem)
    if net.uuid is not None and not UUID_RE.match(net.uuid):
        scan.add("/network/uuid", net.uuid,
                 f"uuid '{net.uuid}' is not of the form 8-4-4-4-12 hex digits")
    if net.title is not None and ("\n" in net.title or "\r" in net.title):
        scan.add("/network/title", net.title, "Network title can't contain newlines")


def check_mtu(scan: Scan) -> None:
    mtu = scan.net.mtu
    if mtu is None:
        return
    if mtu < 0:
        scan.add("/network/mtu", mtu, f"mtu size '{mtu}' is negative")
    # libvirt treats size 0 as "not given"
    if mtu and not scan.own_bridge:
        scan.add("/network/mtu", mtu,
                 f"mtu size '{mtu}' is only allowed with an isolated, nat, route or open "
                 f"network, not forward mode='{scan.mode.value}'")


def check_mac(scan: Scan) -> None:
    mac = scan.net.mac
    if mac is None:
        return
    reason = mac_problem(mac)
    if reason is not None:
        scan.add("/network/mac", mac, f"bridge MAC address '{mac}' {reason}")
    if not scan.own_bridge:
        scan.add("/network/mac", mac,
                 f"<mac address='{mac}'> is not allowed with forward mode="
                 f"'{scan.mode.value}': there is no bridge of ours to give it to",
                 at_define=True)


def check_dnsmasq_options(scan: Scan) -> None:
    for index, option in enumerate(scan.net.dnsmasq_options, start=1):
        bad = control_char(option)
        if bad is not None:
            scan.add(f"/network/dnsmasq:options/dnsmasq:option[{index}]", option,
                     f"dnsmasq option {option!r} contains {describe(bad)}: each option "
                     "must be one line")
