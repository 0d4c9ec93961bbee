"""Who a connection to virtnetd is gets decided when it is accepted, from the socket.

A client that is no member of the daemon's group connects, hands its connection to a child
and exits; a member process then gets the same pid. The connection must still be judged by
the credentials it was accepted with (SO_PEERCRED, SO_PEERGROUPS), never by whatever process
holds the pid now. The pid reuse is made deterministic in a pid namespace of the test's own
(``unshare --pid --fork --mount-proc``, where only the test's processes take pids) by
writing the pid before the wanted one to /proc/sys/kernel/ns_last_pid. The daemon runs in
that pid namespace too (it sees the same pids) and serves a network namespace of the test's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

ADMIN_GID = 4242
MEMBER_UID = 4243
OTHER_UID = 4244
TIMEOUT_S = 120

# Runs as pid 1 of a fresh pid namespace; prints one JSON line with what it saw.
SCENARIO = r'''
import json, os, select, socket, sys, time
from tests.kit.daemon import VirtnetdProcess

netns, state, admin_gid, member_uid, other_uid = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
ATTEMPTS = 20


def http(sock, method, path, body=b""):
    """One request on SOCK; (status, decoded JSON body)."""
    head = (f"{method} {path} HTTP/1.1\r\nHost: virtnetd\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")][0])
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ")[1]), json.loads(rest[:length])


def become(uid, gids):
    os.setgroups(gids[1:])
    os.setgid(gids[0])
    os.setuid(uid)


def wait_line(fd, timeout=30):
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        raise TimeoutError("no word from the parent")
    return os.read(fd, 65536)


def attacker(socket_path):
    """A non-member connects, hands the connection to a child and exits. Returns (its pid,
    the child's pid, pipes to the child: go, answers)."""
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        become(other_uid, [other_uid])
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(socket_path)
        child = os.fork()
        if child == 0:  # holds the connection, and asks when told to
            wait_line(go_r)
            answers = {"info": http(sock, "GET", "/v1"),
                       "define": http(sock, "POST", "/v1/networks", b"{}")}
            os.write(out_w, json.dumps(answers).encode())
            os._exit(0)
        os.write(ready_w, f"{child}".encode())
        os._exit(0)  # the connecting process is gone; its pid is free once reaped
    child = int(wait_line(ready_r))
    os.waitpid(pid, 0)
    return pid, child, go_w, out_r


def member_with_pid(wanted):
    """A member of the daemon's group, forked to get pid WANTED (ns_last_pid); it sleeps
    until killed. Returns its pid (another one if something else took WANTED first)."""
    ready_r, ready_w = os.pipe()
    with open("/proc/sys/kernel/ns_last_pid", "w") as handle:
        handle.write(str(wanted - 1))
    pid = os.fork()
    if pid == 0:
        become(member_uid, [member_uid, admin_gid])
        os.write(ready_w, b"member")
        time.sleep(300)
        os._exit(0)
    wait_line(ready_r)
    return pid


daemon = VirtnetdProcess(netns, state, args=("--group", str(admin_gid), "--tick", "60"))
result = {}
try:
    daemon.start()
    os.chmod(daemon.socket_path, 0o666)  # by default others cannot connect at all
    for _ in range(3):  # the daemon's worker threads take pids too: let them exist now
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(daemon.socket_path))
            http(sock, "GET", "/v1/networks")
    for attempt in range(ATTEMPTS):
        old, holder, go, out = attacker(str(daemon.socket_path))
        member = member_with_pid(old)
        if member == old:
            break
        os.kill(member, 9)
        os.kill(holder, 9)
        os.waitpid(member, 0)
        os.waitpid(holder, 0)
    result["attempts"] = attempt + 1
    result["attacker_pid"], result["member_pid"] = old, member
    with open(f"/proc/{member}/status") as status:
        result["pid_now"] = {line.split(":")[0]: line.split()[1:]
                             for line in status if line.startswith(("Uid:", "Groups:"))}
    os.write(go, b"go")
    result.update(json.loads(wait_line(out, 60)))
    os.waitpid(holder, 0)
    # the member's own connection, for comparison
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        pid = os.fork()
        if pid == 0:
            become(member_uid, [member_uid, admin_gid])
            sock.connect(str(daemon.socket_path))
            os._exit(0)
        os.waitpid(pid, 0)
        result["member_define"] = http(sock, "POST", "/v1/networks", b"{}")
    os.kill(member, 9)
    os.waitpid(member, 0)
finally:
    daemon.stop()
print(json.dumps(result))
'''


def test_a_connection_handed_on_keeps_the_identity_it_was_accepted_with(
        make_netns: Callable[[], str], root: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    ns = make_netns()
    scenario = root / "scenario.py"
    scenario.write_text(SCENARIO)
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(scenario), ns,
         str(root / "state"), str(ADMIN_GID), str(MEMBER_UID), str(OTHER_UID)],
        capture_output=True, text=True, timeout=TIMEOUT_S)
    log_path = root / f"virtnetd-{ns}.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n{log}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The pid was reused: the process that holds it now is a member of the daemon's group.
    assert result["member_pid"] == result["attacker_pid"], result
    assert result["pid_now"]["Uid"][0] == str(MEMBER_UID)
    assert str(ADMIN_GID) in result["pid_now"]["Groups"]
    # The connection is still the non-member's: read only.
    status, info = result["info"]
    assert status == 200
    assert info["peer"] == {"uid": OTHER_UID, "gid": OTHER_UID, "pid": result["attacker_pid"],
                            "may_change": False}, info
    status, refused = result["define"]
    assert status == 403, refused
    assert refused["error"]["kind"] == "PermissionDenied"
    assert f"(uid {OTHER_UID}, gid {OTHER_UID}" in refused["error"]["message"]
    # A member's own connection may change things (the body is then what is refused).
    status, answer = result["member_define"]
    assert status == 400 and "field 'xml' is required" in answer["error"]["message"], answer
