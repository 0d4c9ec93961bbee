"""The ``virtnet`` command: a thin client of virtnetd, or the whole CLI in-process.

    virtnet [--netns NAME] [--state-dir DIR] [--direct] VERB [ARGS...]

When the daemon of the state directory answers on its socket (DIR/run/virtnetd.sock, by
default /run/virtnet/virtnetd.sock; ``VIRTNET_SOCKET`` overrides), the verb is forwarded to it
and its output and exit status are this command's. The daemon runs the very same click command
(virtnet.daemon.invoke), so both ways print the same. On that path only the standard library
is loaded (socket, json, base64): no lxml, click, rich or pyroute2 before the answer is
printed. With no daemon, with ``--direct``, for ``net-edit`` (it needs this terminal) and for
``--help``/``--version`` (click formats help for this terminal's width), virtnet.cli runs here.

Files named on the command line are read here and their content is sent (the daemon never
opens a path a client names); so is stdin for ``-``. A file the daemon cannot be given as it
is (larger than a definition may be, or not a regular file) makes the command run here.

``VIRTNET_CLIENT_TIMING=1`` prints where the client's time went, as one JSON line on stderr.
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import os  # noqa: E402 - timed above: the imports are part of what is measured
import sys  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

GLOBAL_OPTIONS_WITH_VALUE = ("--netns", "--state-dir")
# Verbs whose arguments name files: they are read here and sent.
FILE_VERBS = frozenset({"validate", "format", "update", "dnsmasq-conf", "net-define",
                        "net-create", "plan", "port-create", "net-update"})
# Among them, those that read stdin for '-' (through cli.read_input).
STDIN_VERBS = FILE_VERBS - {"net-update"}
# Verbs whose output shows paths under the state directory: a relative --state-dir must be
# spelt the way the user spelt it, which only an in-process run does.
PATH_SHOWING_VERBS = frozenset({"dnsmasq-conf", "plan"})
LOCAL_VERBS = frozenset({"net-edit"})  # = virtnet.daemon.invoke.LOCAL_VERBS
MAX_FILE_BYTES = 10 * 1024 * 1024  # = virtnet.xml.parse.MAX_DOCUMENT_BYTES
HELP_TOKENS = frozenset({"-h", "--help", "--version"})


class Invocation:
    """The command line split into virtnet's global options and the verb with its args."""

    def __init__(self) -> None:
        self.netns: str | None = None
        self.state_dir: str | None = None
        self.direct = False
        self.forwardable = True  # False: something only an in-process run handles right
        self.args: list[str] = []  # the command line for click, without --direct
        self.verb_args: list[str] = []  # the verb and what follows it


def split_command_line(argv: list[str]) -> Invocation:
    inv = Invocation()
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--direct":
            inv.direct = True
            index += 1
            continue
        name, has_value, value = token.partition("=")
        if name in GLOBAL_OPTIONS_WITH_VALUE:
            if not has_value:
                if index + 1 >= len(argv):
                    inv.forwardable = False  # click reports the missing value
                    inv.args += argv[index:]
                    break
                value = argv[index + 1]
                inv.args += [token, value]
                index += 2
            else:
                inv.args.append(token)
                index += 1
            if name == "--netns":
                inv.netns = value
            else:
                inv.state_dir = value
            continue
        if token.startswith("-"):
            inv.forwardable = False  # --help, --version, or an option click will refuse
            inv.args += argv[index:]
            break
        inv.verb_args = argv[index:]
        inv.args += inv.verb_args
        break
    if not inv.verb_args or inv.verb_args[0] in LOCAL_VERBS:
        inv.forwardable = False
    if any(token in HELP_TOKENS for token in inv.verb_args):
        inv.forwardable = False
    return inv


# --- the files of a command line -----------------------------------------------------------------


class NotForwardable(Exception):
    """This command line must run in-process (see the module doc)."""


def candidate_paths(verb_args: list[str]) -> list[str]:
    """Arguments that may name a file: every non-option argument, and option values."""
    seen: list[str] = []
    for token in verb_args[1:]:
        if token.startswith("--") and "=" in token:
            token = token.partition("=")[2]
        elif token.startswith("-") or token.startswith("<") or not token:
            continue
        if token.startswith("@"):  # `virtnet update ... @FILE`
            seen.append(token[1:])
        if token not in seen:
            seen.append(token)
    return seen


def read_files(paths: list[str]) -> dict[str, dict[str, Any]]:
    import base64
    import stat

    files: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            files[path] = {"errno": exc.errno}
            continue
        if stat.S_ISDIR(st.st_mode):
            files[path] = {"errno": 21}  # EISDIR: what opening it for reading gives
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            raise NotForwardable(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            files[path] = {"errno": exc.errno}
            continue
        if len(data) > MAX_FILE_BYTES:
            raise NotForwardable(path)
        files[path] = {"data": base64.b64encode(data).decode("ascii")}
    return files


def read_stdin() -> str:
    import base64

    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read(MAX_FILE_BYTES + 1) if stream is not None else b""
    return base64.b64encode(data).decode("ascii")


def netns_identity(name: str | None) -> dict[str, Any]:
    """Which network namespace the command means: (device, inode) as `ip netns identify`
    compares them."""
    if name is not None:
        if not name or "/" in name or name in (".", ".."):
            raise NotForwardable(name)
        try:
            st = os.stat(f"/run/netns/{name}")
        except OSError:
            raise NotForwardable(name) from None  # the in-process run says what is wrong
        return {"dev": st.st_dev, "ino": st.st_ino, "name": name}
    st = os.stat("/proc/self/ns/net")
    return {"dev": st.st_dev, "ino": st.st_ino}


# --- forwarding ---------------------------------------------------------------------------------


def forward(inv: Invocation, timing: dict[str, float]) -> int | None:
    """Run the verb in the daemon; None when there is no daemon to run it (or it must run
    here)."""
    from virtnet.client import Connection, ConnectionLost, DaemonUnavailable, socket_path_for

    timing["imports"] = time.perf_counter()
    verb = inv.verb_args[0]
    state_dir = inv.state_dir
    if state_dir is not None and not os.path.isabs(state_dir):
        if verb in PATH_SHOWING_VERBS:
            return None
        state_dir = os.path.abspath(state_dir)
    connection = Connection(socket_path_for(state_dir))
    try:
        connection.connect()
    except (DaemonUnavailable, OSError):
        return None
    timing["connect"] = time.perf_counter()
    try:
        request: dict[str, Any] = {"argv": inv.verb_args, "files": {}, "stdin": None,
                                   "state_dir": state_dir,
                                   "netns": netns_identity(inv.netns)}
        if verb in FILE_VERBS:
            request["files"] = read_files(candidate_paths(inv.verb_args))
            if verb in STDIN_VERBS and "-" in inv.verb_args[1:]:
                request["stdin"] = read_stdin()
    except NotForwardable:
        connection.close()
        return None
    import json

    body = json.dumps(request).encode()
    timing["prepared"] = time.perf_counter()
    try:
        response = connection.request("POST", "/v1/cli", body)
    except (ConnectionLost, BrokenPipeError, ConnectionResetError):
        sys.stderr.write(f"error: virtnetd at {connection.path} closed the connection before "
                         f"answering; '{verb}' may or may not have taken effect\n")
        return 1
    finally:
        connection.close()
    timing["answered"] = time.perf_counter()
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status != 200 or not isinstance(answer, dict):
        message = f"virtnetd answered {response.status} {response.reason}"
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            message = str(answer["error"].get("message", message))
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
        return 1
    for stream, text in answer.get("output", []):
        out = sys.stdout if stream == 1 else sys.stderr
        out.write(text)
        out.flush()
    timing["printed"] = time.perf_counter()
    timing["server_ms"] = float(answer.get("elapsed_ms", 0.0))
    return int(answer.get("status", 1))


def report_timing(timing: dict[str, float], forwarded: bool) -> None:
    import json

    marks = ["imports", "connect", "prepared", "answered", "printed"]
    out: dict[str, Any] = {"forwarded": forwarded,
                           "main_ms": round((time.perf_counter() - _T_START) * 1000, 3)}
    previous = _T_START
    for mark in marks:
        if mark in timing:
            out[f"{mark}_ms"] = round((timing[mark] - previous) * 1000, 3)
            previous = timing[mark]
    if "server_ms" in timing:
        out["server_ms"] = timing["server_ms"]
    sys.stderr.write("virtnet-timing: " + json.dumps(out) + "\n")


def run_in_process(args: list[str]) -> NoReturn:
    from virtnet.cli import main as cli_main

    cli_main.main(args=args, prog_name="virtnet")
    raise SystemExit(0)  # click's standalone mode exits by itself; this is never reached


def main(argv: list[str] | None = None) -> int:
    inv = split_command_line(sys.argv[1:] if argv is None else list(argv))
    timing: dict[str, float] = {}
    status = None
    if inv.forwardable and not inv.direct:
        status = forward(inv, timing)
    if os.environ.get("VIRTNET_CLIENT_TIMING"):
        report_timing(timing, status is not None)
    if status is not None:
        return status
    run_in_process(inv.args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
