"""The dnsmasq process: start it as a daemon of its own, find it again, stop it.

dnsmasq daemonizes itself (new session, pid file) and its launcher exits only once the
daemon has finished starting, with a non-zero status and a message if it could not (for
example when the address is in use). So a start is: run the launcher with a timeout, then
read the pid file. A stop checks /proc/PID/cmdline first so a recycled pid is never killed.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from virtnet.errors import HostError, StorageError

START_TIMEOUT_S = 10.0
PIDFILE_WAIT_S = 2.0
STOP_TIMEOUT_S = 5.0
KILL_TIMEOUT_S = 2.0
POLL_S = 0.001


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _state(pid: int) -> str | None:
    """The process state letter (R, S, D, Z, ...), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name is in parentheses and may contain spaces
    return stat.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int) -> bool:
    """True while PID runs; a zombie (already exited, not yet reaped) counts as gone."""
    state = _state(pid)
    return state is not None and state not in ("Z", "X")


def is_our_dnsmasq(pid: int, conf_file: Path) -> bool:
    """Whether PID is a live dnsmasq started with ``--conf-file=CONF_FILE``."""
    argv = _cmdline(pid)
    if not argv or os.path.basename(argv[0]) != "dnsmasq":
        return False
    return f"--conf-file={conf_file}" in argv[1:] and is_alive(pid)


def find_our_dnsmasqs(conf_file: Path) -> list[int]:
    """Every live dnsmasq started with ``--conf-file=CONF_FILE``, found by scanning /proc:
    for a dnsmasq whose pid was never recorded and whose pid file is missing or stale (a
    start killed while dnsmasq was daemonizing). The configuration file is the network's
    own; only processes in this network namespace count, so the same state directory used
    from another namespace is never touched."""
    own_netns = _netns_of("self")
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and is_our_dnsmasq(int(entry), conf_file) \
                and _netns_of(entry) == own_netns:
            found.append(int(entry))
    return found


def _netns_of(pid: str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return st.st_dev, st.st_ino


def read_pid_file(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError.of(exc, "read", pid_file) from exc
    return int(text) if text.isdigit() else None


def spawn_dnsmasq(argv: list[str], pid_file: Path) -> subprocess.Popen[str]:
    """Launch dnsmasq and return at once: its first process initialises, hands over to the
    daemon it forks and exits (:func:`await_dnsmasq` waits for that), meanwhile the caller
    can do other work."""
    try:
        pid_file.unlink()  # a stale file must not be mistaken for the new daemon
    except FileNotFoundError:
        pass
    except OSError as exc:  # (dnsmasq could not write it either)
        raise StorageError.of(exc, "remove", pid_file) from exc
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except FileNotFoundError:
        raise HostError(f"cannot start dnsmasq: {argv[0]} is not installed") from None


def settle_dnsmasq(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Wait for the process :func:`spawn_dnsmasq` launched to exit (killed after
    START_TIMEOUT_S); its output."""
    try:
        return proc.communicate(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise HostError(f"dnsmasq did not start within {START_TIMEOUT_S:.0f} s") from None


def await_dnsmasq(proc: subprocess.Popen[str], conf_file: Path, pid_file: Path,
                  running: Callable[[], None] | None = None) -> int:
    """The daemon's pid, once the dnsmasq :func:`spawn_dnsmasq` launched is up (HostError
    with dnsmasq's own message if it refused to start). ``running`` is called once the
    daemon runs, before its pid is read (the crash tests' hook, given by the Host)."""
    stdout, stderr = settle_dnsmasq(proc)
    if proc.returncode != 0:
        message = (stderr or stdout).strip() or f"exit status {proc.returncode}"
        raise HostError(f"dnsmasq failed to start: {message}")
    if running is not None:
        running()  # crash tests: the daemon runs, its pid is not known to virtnet yet
    deadline = time.monotonic() + PIDFILE_WAIT_S
    while True:
        pid = read_pid_file(pid_file)
        if pid is not None and is_our_dnsmasq(pid, conf_file):
            return pid
        if time.monotonic() > deadline:
            raise HostError(f"dnsmasq started but wrote no usable pid file at {pid_file}")
        time.sleep(POLL_S)


def reload_dnsmasq(pid: int, conf_file: Path) -> bool:
    """Have our dnsmasq PID of CONF_FILE re-read its hosts files (SIGHUP); False when PID
    is not that dnsmasq (gone, or recycled by another process)."""
    if not is_our_dnsmasq(pid, conf_file):
        return False
    os.kill(pid, signal.SIGHUP)
    return True


def _pidfd(pid: int) -> int | None:
    """A pidfd for PID (Linux 5.3+), or None where there is none to be had."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _signal(pid: int, pidfd: int | None, signum: int) -> None:
    if pidfd is not None:
        signal.pidfd_send_signal(pidfd, signum)  # never a recycled pid
    else:
        os.kill(pid, signum)


def _wait_gone(pid: int, timeout: float, pidfd: int | None = None) -> bool:
    """Wait until PID has exited. With a PIDFD the kernel wakes us when it exits (it is not
    our child, so there is no wait(2)); otherwise /proc is polled."""
    deadline = time.monotonic() + timeout
    poller = None
    if pidfd is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
    while is_alive(pid):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if poller is not None:
            poller.poll(max(1, int(min(remaining, 0.1) * 1000)))
        else:
            time.sleep(POLL_S)
    return True


def stop_dnsmasq(pid: int, conf_file: Path) -> bool:
    """Stop our dnsmasq PID (SIGTERM, then SIGKILL); False if it was not running.

    Waits until the process has exited, so its sockets are closed when this returns and a
    new dnsmasq can bind the same addresses at once.
    """
    pidfd = _pidfd(pid)  # opened before the check: it then names that very process
    try:
        if not is_our_dnsmasq(pid, conf_file):
            return False
        try:
            _signal(pid, pidfd, signal.SIGTERM)
        except ProcessLookupError:
            return False
        if _wait_gone(pid, STOP_TIMEOUT_S, pidfd):
            return True
        try:
            _signal(pid, pidfd, signal.SIGKILL)
        except ProcessLookupError:
            return True
        if not _wait_gone(pid, KILL_TIMEOUT_S, pidfd):
            raise HostError(f"dnsmasq (pid {pid}) did not exit after SIGKILL")
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)
