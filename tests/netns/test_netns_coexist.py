"""Beside a Docker-like firewall: iptables-nft in the host namespace with FORWARD policy DROP
and a DOCKER-USER chain, set up before the network starts. The NAT guest still reaches
upstream; net-info says what was added where and why; after destroy the other firewall's
rules are exactly as they were (iptables-save compared)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

XML = """<network>
  <name>coex</name>
  <forward mode='nat'/>
  <bridge stp='off'/>
  <ip address='192.168.78.1' netmask='255.255.255.0'/>
</network>
"""


def virtnet(ns: str, state: Path, *args: str) -> str:
    argv = [sys.executable, "-m", "virtnet.face.cli", "--netns", ns, "--state-dir", str(state), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"virtnet {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def iptables_save(kit: Any, ns: str) -> str:
    out = kit.ns_run(ns, ["iptables-save"]).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith("#"))


def test_nat_guest_gets_out_through_docker_like_forward_drop(
    netns_kit: Any, tmp_path: Path
) -> None:
    if shutil.which("iptables-nft") is None and shutil.which("iptables") is None:
        pytest.skip("needs iptables-nft (apt-get install iptables)")
    kit = netns_kit
    host = kit.make_netns()
    upstream = kit.add_upstream(host, kit.make_netns())
    # what dockerd does to a host's iptables (nft backend)
    for args in (["-P", "FORWARD", "DROP"], ["-N", "DOCKER-USER"],
                 ["-A", "FORWARD", "-j", "DOCKER-USER"], ["-A", "DOCKER-USER", "-j", "RETURN"]):
        kit.ns_run(host, ["iptables", "-w", "5", *args])
    before = iptables_save(kit, host)
    state = tmp_path / "state"
    path = tmp_path / "coex.xml"
    path.write_text(XML)
    virtnet(host, state, "net-define", str(path))
    virtnet(host, state, "net-start", "coex")
    info = json.loads(virtnet(host, state, "net-info", "coex", "--json"))
    added = info["coexistence"]
    assert added and {r["chain"] for r in added} == {"DOCKER-USER"}
    assert all("policy is drop" in r["why"] for r in added)
    guest = kit.add_guest(host, info["bridge"], kit.make_netns(), "192.168.78.10/24",
                          "192.168.78.1")
    assert kit.ping(guest.ns, upstream.ip), "the NAT guest cannot reach upstream"
    during = iptables_save(kit, host)
    assert during != before and "virtnet:coex" in during
    text = virtnet(host, state, "net-info", "coex")
    assert text.count("Opened:") == len(added) and "DOCKER-USER" in text
    virtnet(host, state, "net-destroy", "coex")
    assert iptables_save(kit, host) == before
    assert not kit.ping(guest.ns, upstream.ip, attempts=1)


FIREWALLD_LIKE = """table inet otherfw {
  chain forward_filter {
    type filter hook forward priority filter + 10; policy drop;
    ct state established,related accept
  }
}
"""


def test_nat_guest_gets_out_through_an_nftables_table_with_forward_drop(
    netns_kit: Any, tmp_path: Path
) -> None:
    """Another nftables table (firewalld-like, not iptables): our rules go into its chain by
    handle (in-process through libnftables) and exactly they leave it at destroy."""
    kit = netns_kit
    host = kit.make_netns()
    upstream = kit.add_upstream(host, kit.make_netns())
    kit.ns_run(host, ["nft", "-f", "-"], input=FIREWALLD_LIKE)
    before = kit.ns_run(host, ["nft", "list", "table", "inet", "otherfw"]).stdout
    state = tmp_path / "state"
    path = tmp_path / "coex.xml"
    path.write_text(XML)
    virtnet(host, state, "net-define", str(path))
    virtnet(host, state, "net-start", "coex")
    info = json.loads(virtnet(host, state, "net-info", "coex", "--json"))
    added = info["coexistence"]
    assert added and {(r["table"], r["chain"]) for r in added} == {
        ("inet otherfw", "forward_filter")}
    guest = kit.add_guest(host, info["bridge"], kit.make_netns(), "192.168.78.10/24",
                          "192.168.78.1")
    assert kit.ping(guest.ns, upstream.ip), "the NAT guest cannot reach upstream"
    assert "forward_filter" in virtnet(host, state, "net-info", "coex")
    virtnet(host, state, "net-destroy", "coex")
    assert kit.ns_run(host, ["nft", "list", "table", "inet", "otherfw"]).stdout == before
