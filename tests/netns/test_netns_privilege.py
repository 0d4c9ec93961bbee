"""virtnet.service.privilege on a running network: without CAP_NET_ADMIN every verb that would change
the host refuses with one message and changes nothing, neither the namespace nor the state.

A NAT network with a port forward and a guest port is started as root inside a namespace of
our own; then each changing verb runs as root without CAP_NET_ADMIN (``setpriv`` drops it from
the bounding and inheritable sets, so the command's effective set lacks it while CAP_SYS_ADMIN
still lets ``--netns`` enter the namespace). Each must exit 1 naming CAP_NET_ADMIN once, and
leave the namespace (links, addresses, routes, nftables, processes, qdiscs) and the state
directory (every path with its mode, mtime and content, the lock file included) as they were.
tests/unit/test_privilege.py covers the same verbs as ``nobody`` in nobody's own state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns

CLI_TIMEOUT_S = 60.0
NAME = "privnet"
BRIDGE = "vpriv0"
PORT_MAC = "52:54:00:92:00:10"
XML = f"""<network>
  <name>{NAME}</name>
  <uuid>6a0b7f3e-91c1-4d0e-9a55-0c2d92000001</uuid>
  <metadata>
    <virtnet:forwards xmlns:virtnet="http://virtnet.dev/schemas/forward/1.0">
      <virtnet:port proto="tcp" port="8080" to="10.92.0.10" to-port="80"/>
    </virtnet:forwards>
  </metadata>
  <forward mode='nat'/>
  <bridge name='{BRIDGE}' stp='on' delay='0'/>
  <ip address='10.92.0.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.92.0.20' end='10.92.0.99'/>
      <host mac='52:54:00:92:00:11' name='guest1' ip='10.92.0.11'/>
    </dhcp>
  </ip>
</network>
"""
# the same network with one more reservation (what net-apply would change live)
CHANGED_XML = XML.replace("</dhcp>", "  <host mac='52:54:00:92:00:12' ip='10.92.0.12'/>\n"
                          "    </dhcp>")
OTHER_XML = """<network>
  <name>other</name>
  <bridge name='vpriv1'/>
  <ip address='10.93.0.1' netmask='255.255.255.0'/>
</network>
"""
FORWARD = ("--proto", "tcp", "--port", "9090", "--to", "10.92.0.10")


def _drop_net_admin_argv() -> list[str] | None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--bounding-set", "-net_admin", "--inh-caps", "-net_admin"]


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("nft", "dnsmasq", "tc"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"needs {tool}")
    if _drop_net_admin_argv() is None:
        pytest.skip("needs setpriv (util-linux) to drop CAP_NET_ADMIN")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VIRTNET_")}


class Running:
    """The running network, and virtnet run with or without CAP_NET_ADMIN."""

    def __init__(self, kit: Any, ns: str, root: Path) -> None:
        self.kit = kit
        self.ns = ns
        self.root = root
        self.state = root / "state"

    def cli(self, *args: str, privileged: bool = True,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        prefix = [] if privileged else (_drop_net_admin_argv() or [])
        argv = [*prefix, sys.executable, "-m", "virtnet.face.cli", "--netns", self.ns,
                "--state-dir", str(self.state), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                              env=_env(), cwd=self.root)
        assert "Traceback" not in proc.stderr, proc.stderr
        if check:
            assert proc.returncode == 0, f"{args}: {proc.stdout}{proc.stderr}"
        return proc

    def namespace(self) -> tuple[Any, ...]:
        kit, ns = self.kit, self.ns
        return (kit.ns_links(ns), kit.ns_addresses(ns), kit.ns_routes(ns),
                kit.ns_nft_ruleset(ns), sorted(kit.live_pids(ns)),
                kit.ns_run(ns, ["tc", "qdisc", "show"]).stdout)

    def tree(self) -> dict[str, tuple[int, int, bytes]]:
        found = {}
        for path in sorted(self.state.rglob("*")):
            st = path.lstat()
            content = path.read_bytes() if path.is_file() else b""
            found[str(path.relative_to(self.state))] = (st.st_mode, st.st_mtime_ns, content)
        return found


@pytest.fixture
def running(netns_kit: Any, root: Path) -> Iterator[Running]:
    net = Running(netns_kit, netns_kit.make_netns(), root)
    for name, xml in (("privnet.xml", XML), ("changed.xml", CHANGED_XML),
                      ("other.xml", OTHER_XML)):
        (root / name).write_text(xml)
    net.cli("net-define", "privnet.xml", check=True)
    net.cli("net-define", "other.xml", check=True)
    net.cli("net-start", NAME, check=True)
    net.cli("port-create", NAME, "--mac", PORT_MAC, "--inbound", "100", check=True)
    try:
        yield net
    finally:
        net.cli("net-destroy", NAME)  # the namespace goes at teardown anyway


# Every verb that changes the host, aimed at something it would change. "Current" (no
# --live/--config) of an active network is live.
CHANGING_VERBS = [
    ("net-start", NAME),  # active: would restart a dead dnsmasq
    ("net-start", "other"),
    ("net-destroy", NAME),
    ("net-create", "other.xml"),
    ("net-update", NAME, "add", "ip-dhcp-host", "<host mac='52:54:00:92:00:13' ip='10.92.0.13'/>"),
    ("net-update", NAME, "delete", "ip-dhcp-host", "<host mac='52:54:00:92:00:11'/>", "--live"),
    ("net-forward-add", NAME, *FORWARD),
    ("net-forward-add", NAME, *FORWARD, "--live", "--config"),
    ("net-forward-del", NAME, "--proto", "tcp", "--port", "8080"),
    ("net-apply", "changed.xml"),
    ("net-apply", "--restart", "changed.xml"),
    ("port-create", NAME, "--mac", "52:54:00:92:00:20"),
    ("port-delete", NAME, PORT_MAC),
]


def test_changing_verbs_refuse_without_net_admin(running: Running) -> None:
    namespace, tree = running.namespace(), running.tree()
    for args in CHANGING_VERBS:
        proc = running.cli(*args, privileged=False)
        assert proc.returncode == 1, (args, proc.stdout + proc.stderr)
        assert "needs CAP_NET_ADMIN" in proc.stderr, (args, proc.stderr)
        assert proc.stderr.count("CAP_NET_ADMIN") == 1, args  # one message, not one per step
        assert running.namespace() == namespace, args
        assert running.tree() == tree, args  # not a file touched, not even the lock
    # with the capability, the same commands go through (the refusal was the only reason)
    running.cli("net-forward-add", NAME, *FORWARD, check=True)
    running.cli("port-delete", NAME, PORT_MAC, check=True)
    running.cli("net-destroy", NAME, check=True)
    assert BRIDGE not in running.kit.ns_links(running.ns)


def test_reads_work_without_net_admin_and_leave_recovery_to_root(running: Running) -> None:
    namespace, tree = running.namespace(), running.tree()
    for args in (("net-list", "--all"), ("net-info", NAME), ("port-list", NAME),
                 ("net-forward-list", NAME), ("plan", "other"), ("net-apply", "--dry-run",
                                                             "changed.xml")):
        running.cli(*args, privileged=False, check=True)
    assert running.namespace() == namespace
    # a port-create killed inside its tap step left a tap and its journal: a read without
    # the capability lists the ports without trying (and failing) to undo it
    killed = subprocess.run(
        [sys.executable, "-m", "virtnet.face.cli", "--netns", running.ns, "--state-dir",
         str(running.state), "port-create", NAME, "--mac", "52:54:00:92:00:21"],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
        env={**_env(), "VIRTNET_CRASH_IN_STEP": "1"})
    assert killed.returncode < 0, killed.stderr
    assert "vnet1" in running.kit.ns_links(running.ns)
    listed = json.loads(running.cli("port-list", NAME, "--json", privileged=False,
                                    check=True).stdout)
    assert [port["mac"] for port in listed] == [PORT_MAC]
    assert "vnet1" in running.kit.ns_links(running.ns)
    # root's next command undoes it
    running.cli("port-list", NAME, check=True)
    assert "vnet1" not in running.kit.ns_links(running.ns)
    assert running.namespace() == namespace
