"""Running nftables scripts: each call is one atomic ``nft -f`` transaction.

libnftables (the library behind the ``nft`` binary) is used in-process through ctypes when
it is installed: same parser, same single netlink batch, but ~1-2 ms instead of ~15-25 ms
for spawning ``nft``. Without the library the ``nft`` binary is run (never through a shell).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from virtnet.errors import HostError, HostObjectMissing, NotInstalled

LIBNFTABLES = "libnftables.so.1"
NFT_TIMEOUT_S = 30.0
# libnftables output flags (nftables.h) and the nft options that set them
OUTPUT_HANDLE = 1 << 3
OUTPUT_JSON = 1 << 4
OUTPUT_ECHO = 1 << 5
_OUTPUT_OPTIONS = {OUTPUT_HANDLE: "-a", OUTPUT_JSON: "-j", OUTPUT_ECHO: "-e"}


# The tools report "not there" only in their messages (libnftables gives no errno): this is
# the one place those texts are read, so callers decide by the exception's type.
_NFT_MISSING = "No such file or directory"
_IPTABLES_MISSING = ("does a matching rule exist", "No chain/target/match", "Bad rule")


def _says_missing(tool: str, message: str) -> bool:
    if tool == "nft":
        return _NFT_MISSING in message
    return any(text in message for text in _IPTABLES_MISSING)


def _error_lines_only(err: str) -> str:
    """nft's "Error: ..." lines, each once, without the quoted source line and carets that
    follow them: for a script given as a buffer, libnftables 1.0.x quotes the wrong line
    (the first one), which would only mislead."""
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    return "\n".join(dict.fromkeys(errors)) if errors else err


class Nft:
    def __init__(self, *, use_library: bool = True) -> None:
        self._use_library = use_library
        self._lib: ctypes.CDLL | None = None
        self._ctx: int | None = None
        self._lock = threading.Lock()  # a libnftables context is not thread-safe

    # --- backends -----------------------------------------------------------------------

    def _library(self) -> tuple[ctypes.CDLL, int] | None:
        if not self._use_library:
            return None
        if self._ctx is None:
            try:
                lib = ctypes.CDLL(LIBNFTABLES)
            except OSError:
                self._use_library = False
                return None
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
            lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
            lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
            ctx = lib.nft_ctx_new(0)
            if not ctx:
                self._use_library = False
                return None
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            self._lib, self._ctx = lib, ctx
        assert self._lib is not None
        return self._lib, self._ctx

    def _run_library(self, lib: ctypes.CDLL, ctx: int, script: str,
                     output_flags: int = 0) -> tuple[int, str, str]:
        if output_flags:
            saved = lib.nft_ctx_output_get_flags(ctx)
            lib.nft_ctx_output_set_flags(ctx, saved | output_flags)
            try:
                rc = lib.nft_run_cmd_from_buffer(ctx, script.encode())
            finally:
                lib.nft_ctx_output_set_flags(ctx, saved)
        else:
            rc = lib.nft_run_cmd_from_buffer(ctx, script.encode())
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
        return rc, out, _error_lines_only(err)

    def _run_binary(self, script: str, output_flags: int = 0) -> tuple[int, str, str]:
        binary = shutil.which("nft")
        if binary is None:
            raise NotInstalled("nftables is not installed (neither libnftables nor the nft binary)")
        options = [opt for flag, opt in _OUTPUT_OPTIONS.items() if output_flags & flag]
        try:
            proc = subprocess.run(
                [binary, *options, "-f", "-"],
                input=script,
                capture_output=True,
                text=True,
                timeout=NFT_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise HostError(f"nft did not finish within {NFT_TIMEOUT_S:.0f} s") from None
        return proc.returncode, proc.stdout, proc.stderr

    # --- API ----------------------------------------------------------------------------

    def run(self, script: str, *, what: str = "load firewall rules",
            output_flags: int = 0) -> str:
        """Run SCRIPT as one transaction; return nft's output; HostError with nft's message.
        OUTPUT_FLAGS (OUTPUT_JSON, OUTPUT_HANDLE, OUTPUT_ECHO) shape the output, like nft's
        -j, -a and -e, for this call only."""
        with self._lock:
            backend = self._library()
            if backend is not None:
                rc, out, err = self._run_library(*backend, script, output_flags)
            else:
                rc, out, err = self._run_binary(script, output_flags)
        if rc != 0:
            detail = err.strip() or out.strip() or f"exit status {rc}"
            kind = HostObjectMissing if _says_missing("nft", detail) else HostError
            raise kind(f"cannot {what}: nft refused the ruleset:\n{detail}")
        return out

    def list_chains(self, family: str, table: str) -> list[str] | None:
        """Names of the chains in FAMILY TABLE, or None if the table does not exist."""
        try:
            out = self.run(f"list table {family} {table}\n", what=f"list table {table}")
        except HostObjectMissing:
            return None
        return re.findall(r"^\s*chain (\S+) \{", out, flags=re.MULTILINE)

    def close(self) -> None:
        with self._lock:
            if self._lib is not None and self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
            self._lib, self._ctx = None, None


# --- iptables (other firewalls' tables, which nft must not change) --------------------------


def iptables_delete(run: Callable[..., subprocess.CompletedProcess[str]], argv: list[str],
                    *, what: str) -> None:
    """Run the ``iptables -D`` ARGV through RUN (Host.run); HostObjectMissing when the
    rule or its chain is not there (an undo that ran before), HostError for anything else."""
    proc = run(argv, check=False)
    if proc.returncode == 0:
        return
    kind = HostObjectMissing if _says_missing("iptables", proc.stderr) else HostError
    raise kind(f"cannot {what}: {proc.stderr.strip()}")


# --- firewall facts (what the doctor judges) ------------------------------------------------

FACT_SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
FACT_TIMEOUT_S = 10.0
IPTABLES_NAMES = Path("/proc/net/ip_tables_names")


def read_ruleset() -> dict[str, Any] | None:
    """`nft -j list ruleset` of this namespace, parsed; None when it cannot be read."""
    nft = shutil.which("nft", path=FACT_SEARCH_PATH)
    if nft is None:
        return None
    try:
        proc = subprocess.run([nft, "-j", "list", "ruleset"], capture_output=True, text=True,
                              timeout=FACT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout or '{"nftables": []}')
    except ValueError:
        return None


def read_legacy_forward() -> list[str]:
    """`iptables-legacy -S FORWARD` when legacy iptables has a filter table here, else []."""
    try:
        tables = IPTABLES_NAMES.read_text().split()
    except OSError:
        return []
    legacy = shutil.which("iptables-legacy", path=FACT_SEARCH_PATH)
    if "filter" not in tables or legacy is None:
        return []
    try:
        proc = subprocess.run([legacy, "-S", "FORWARD"], capture_output=True, text=True,
                              timeout=FACT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return proc.stdout.splitlines() if proc.returncode == 0 else []


_shared: dict[tuple[int, int], Nft] = {}
_shared_lock = threading.Lock()


def shared_nft() -> Nft:
    """One libnftables context per process and network namespace, kept for the process's
    life: a long-lived virtnetd then does not load the library and build a context for every
    operation. Thread-safe (an Nft serialises its runs); keyed by pid so that a forked child
    builds its own, and by namespace because a context's netlink socket stays in the one it
    was opened in."""
    key = (os.getpid(), os.stat("/proc/self/ns/net").st_ino)
    with _shared_lock:
        found = _shared.get(key)
        if found is None:
            found = _shared[key] = Nft()
        return found

