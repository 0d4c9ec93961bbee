"""A virtnetd for tests and benchmarks, serving a network namespace they created.

    with VirtnetdProcess("vnt-1234", state_dir) as daemon:
        daemon.virtnet("net-start", "default")          # through the daemon
        daemon.virtnet("net-list", direct=True)         # in-process, for comparison
        with daemon.client() as api: ...

The daemon runs as a child process (``virtnetd --netns NS --state-dir DIR``, its own session,
output in a log file); it is stopped by its pid (SIGTERM, then SIGKILL) on exit. What it
started inside the namespace (dnsmasq) stays there: deleting the namespace is the caller's
cleanup, as for every netns test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from virtnet.client import Client, DaemonUnavailable


def bytecode_env(cache_dir: Path) -> dict[str, str]:
    """Environment for child interpreters that keeps compiled modules in CACHE_DIR (outside
    the source tree), as an installed package has them, instead of compiling every module at
    every start when PYTHONDONTWRITEBYTECODE is set."""
    return {"PYTHONPYCACHEPREFIX": str(cache_dir), "PYTHONDONTWRITEBYTECODE": ""}

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 120.0


def script(name: str) -> list[str]:
    """How to run one of the package's console scripts with this interpreter."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return [str(candidate)]
    module = {"virtnet": "virtnet.face.fastcli", "virtnetd": "virtnet.daemon"}[name]
    return [sys.executable, "-m", module]


class VirtnetdError(RuntimeError):
    """The daemon did not start, or did not stop."""


class VirtnetdProcess:
    def __init__(self, netns: str | None, state_dir: Path, *, socket_path: Path | None = None,
                 args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        self.netns = netns
        self.state_dir = Path(state_dir)
        self.socket_path = socket_path or self.state_dir / "run" / "virtnetd.sock"
        self.args = args
        self.env = env
        self.log_path = log_path or self.state_dir.parent / f"virtnetd-{netns}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # --- life --------------------------------------------------------------------------------

    def argv(self) -> list[str]:
        argv = [*script("virtnetd"), *self._netns_args(), "--state-dir", str(self.state_dir)]
        if self.socket_path != self.state_dir / "run" / "virtnetd.sock":
            argv += ["--socket", str(self.socket_path)]
        return argv + list(self.args)

    def _netns_args(self) -> list[str]:
        """--netns NS; nothing for netns None (the namespace the caller runs in)."""
        return ["--netns", self.netns] if self.netns is not None else []

    def start(self, timeout: float = START_TIMEOUT_S) -> VirtnetdProcess:
        if self.proc is not None and self.proc.poll() is None:
            raise VirtnetdError("virtnetd is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, **(self.env or {})})
        finally:
            log.close()
        self.starts += 1
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise VirtnetdError(f"virtnetd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with Client(str(self.socket_path), timeout=5.0) as api:
                    if api.info()["pid"] == self.proc.pid:
                        return
            except (DaemonUnavailable, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise VirtnetdError(f"virtnetd did not answer within {timeout:g} s:\n"
                                    f"{self.log()}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)

    def restart(self) -> VirtnetdProcess:
        self.stop()
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> VirtnetdProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- use ---------------------------------------------------------------------------------

    def client(self, timeout: float | None = 120.0) -> Client:
        return Client(str(self.socket_path), timeout=timeout)

    def virtnet(self, *args: str, direct: bool = False, check: bool = True,
                input: str | bytes | None = None, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``virtnet --netns NS --state-dir DIR [--direct] ARGS`` as a user types it."""
        argv = [*script("virtnet"), *self._netns_args(), "--state-dir", str(self.state_dir)]
        if direct:
            argv.append("--direct")
        proc = subprocess.run(
            argv + list(args), capture_output=True, timeout=CLI_TIMEOUT_S, cwd=cwd,
            input=input.encode() if isinstance(input, str) else input,
            env={**os.environ, **(self.env or {}), **(env or {})})
        result = subprocess.CompletedProcess(proc.args, proc.returncode,
                                             proc.stdout.decode(errors="replace"),
                                             proc.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise AssertionError(f"virtnet {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}{result.stderr}")
        return result


__all__ = ["VirtnetdError", "VirtnetdProcess", "bytecode_env", "script"]
