"""The ``virtnet`` command: a thin client of virtnetd, or the whole CLI in-process.

    virtnet [--netns NAME] [--state-dir DIR] [--direct] VERB [ARGS...]

When the daemon of the state directory answers on its socket (DIR/run/virtnetd.sock, by
default /run/virtnet/virtnetd.sock; ``VIRTNET_SOCKET`` overrides), the verb is forwarded to it
and its output and exit status are this command's. The daemon runs the very same click command
(virtnet.face.verbs), so both ways print the same. On that path only the standard library's
C parts (_socket, binascii) are loaded, with the two small modules of virtnet.host that make
the connection (virtnet.host, virtnet.host.fastipc): no lxml, click, rich or pyroute2 before
the answer is printed, and not even json and socket, whose imports cost more than the
daemon's answer (the request is plain JSON written here, the answer comes framed). With no
daemon, with ``--direct``, for ``net-edit`` (it needs this terminal) and for
``--help``/``--version`` (click formats help for this terminal's width), virtnet.face.cli runs here.

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
from binascii import b2a_base64  # noqa: E402 - a builtin module
from stat import S_ISDIR, S_ISREG  # noqa: E402 - loaded by os already

from virtnet.host import HostProcess  # noqa: E402 - cheap: its effects load on first use

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

GLOBAL_OPTIONS_WITH_VALUE = ("--netns", "--state-dir")
# Verbs whose arguments name files: they are read here and sent.
FILE_VERBS = frozenset({"validate", "format", "update", "dnsmasq-conf", "net-define",
                        "net-create", "plan", "port-create", "net-update", "net-apply",
                        "net-port-create"})
# Among them, those that read stdin for '-' (through cli.read_input).
STDIN_VERBS = FILE_VERBS - {"net-update"}
# Verbs whose output shows paths under the state directory: a relative --state-dir must be
# spelt the way the user spelt it, which only an in-process run does.
PATH_SHOWING_VERBS = frozenset({"dnsmasq-conf", "plan"})
# The verbs the daemon runs for a client (virtnet.face.verbs): checked to read files only
# through their session (what the client sent), to write none, and to print without regard
# to the terminal. Every other verb runs here: net-edit (the user's editor and
# terminal), doctor and lab (rich output sized to the terminal; lab builds sandboxes and
# waits), graph (writes the picture where the user is), and any verb added later until it is
# checked and listed here. The one list: the daemon imports it from here.
FORWARDED_VERBS = frozenset({
    "validate", "format", "update", "dnsmasq-conf", "plan",
    "net-define", "net-create", "net-undefine", "net-start", "net-destroy", "net-autostart",
    "net-list", "net-info", "net-dumpxml", "net-uuid", "net-name", "net-dhcp-leases",
    "net-update", "net-apply", "net-new", "net-addresses",
    "net-forward-add", "net-forward-del", "net-forward-list",
    "port-create", "port-delete", "port-list", "port-dumpxml",
    "net-port-create", "net-port-delete", "net-port-list", "net-port-dumpxml", "domif-xml",
})
# Among them, those that only read: anyone allowed to connect may run them (daemon.peers).
READ_ONLY_VERBS = frozenset({
    "validate", "format", "update", "dnsmasq-conf", "plan",
    "net-list", "net-info", "net-dumpxml", "net-uuid", "net-name", "net-dhcp-leases",
    "net-addresses", "net-forward-list", "port-list", "port-dumpxml",
    "net-port-list", "net-port-dumpxml", "domif-xml",
})
MAX_FILE_BYTES = 10 * 1024 * 1024  # = virtnet.spec.xml.parse.MAX_DOCUMENT_BYTES
HELP_TOKENS = frozenset({"-h", "--help", "--version"})
DEFAULT_SOCKET = "/run/virtnet/virtnetd.sock"  # = virtnet.client.DEFAULT_SOCKET


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
    if not inv.verb_args or inv.verb_args[0] not in FORWARDED_VERBS:
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
        if token.startswith("@") and token[1:] not in seen:  # `virtnet update ... @FILE`
            seen.append(token[1:])
        if token not in seen:
            seen.append(token)
    return seen


def _b64(data: bytes) -> str:
    return b2a_base64(data, newline=False).decode("ascii")


def read_files(paths: list[str]) -> dict[str, dict[str, Any]]:
    """Each path's content (regular files) or the errno reading it gave."""
    files: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            files[path] = {"errno": exc.errno}
            continue
        if S_ISDIR(st.st_mode):
            files[path] = {"errno": 21}  # EISDIR: what opening it for reading gives
            continue
        if not S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            raise NotForwardable(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            files[path] = {"errno": exc.errno}
            continue
        if len(data) > MAX_FILE_BYTES:
            raise NotForwardable(path)
        files[path] = {"data": _b64(data)}
    return files


def read_stdin() -> str:
    stream = getattr(sys.stdin, "buffer", None)
    return _b64(stream.read(MAX_FILE_BYTES + 1) if stream is not None else b"")


def netns_identity(name: str | None) -> dict[str, Any]:
    """Which network namespace the command means: (device, inode), as `ip netns identify`
    compares them."""
    if name is not None:
        if not name or "/" in name or name in (".", ".."):
            raise NotForwardable(name)
        try:
            dev, ino = HostProcess.netns_identity(name)
        except OSError:
            raise NotForwardable(name) from None  # the in-process run says what is wrong
        return {"dev": dev, "ino": ino, "name": name}
    dev, ino = HostProcess.netns_identity()
    return {"dev": dev, "ino": ino}


# --- the wire: a request and its framed answer, without the json and socket modules ------------
# (each costs more to import than the daemon needs to answer; binascii is C, and the
# connection is virtnet.host.fastipc's, made with _socket)

_JSON_ESCAPES = {i: f"\\u{i:04x}" for i in range(32)}
_JSON_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})


def encode_json(value: Any) -> str:
    """JSON for the request's plain values (str, int, bool, None, list, dict)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.translate(_JSON_ESCAPES) + '"'
    if isinstance(value, list):
        return "[" + ",".join(encode_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{encode_json(str(k))}:{encode_json(v)}"
                              for k, v in value.items()) + "}"
    raise TypeError(f"cannot encode {type(value).__name__}")


FRAMES_TYPE = "application/x-virtnet-frames"


class Answer:
    def __init__(self, status: int, reason: str, content_type: str, body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.content_type = content_type
        self.body = body


class Lost(Exception):
    """The daemon closed the connection before it answered."""


def exchange(sock: Any, body: bytes) -> Answer:
    """POST BODY to /v1/cli and read the whole answer (Content-Length delimited)."""
    head = ("POST /v1/cli HTTP/1.1\r\nHost: virtnetd\r\nContent-Type: application/json\r\n"
            f"Accept: {FRAMES_TYPE}\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body)
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise Lost()
        data += chunk
    lines = data[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body_in = data[end + 4:]
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body_in) < length:
        chunk = sock.recv(262144)
        if not chunk:
            if length < 0:
                break
            raise Lost()
        body_in += chunk
    return Answer(int(parts[1]), parts[2] if len(parts) > 2 else "",
                  headers.get("content-type", ""), body_in)


def parse_frames(body: bytes) -> tuple[int, float, list[tuple[int, str]]]:
    """The framed answer: "status=N elapsed_ms=F" then "STREAM LENGTH\\n" + text, repeated."""
    first, _, rest = body.partition(b"\n")
    fields = dict(item.split("=", 1) for item in first.decode().split())
    chunks = []
    offset = 0
    while offset < len(rest):
        newline = rest.index(b"\n", offset)
        stream, length = rest[offset:newline].split()
        start = newline + 1
        chunks.append((int(stream), rest[start:start + int(length)].decode("utf-8", "replace")))
        offset = start + int(length)
    return int(fields["status"]), float(fields.get("elapsed_ms", 0.0)), chunks


# --- forwarding ---------------------------------------------------------------------------------


def socket_path(state_dir: str | None) -> str:
    override = os.environ.get("VIRTNET_SOCKET")
    if override:
        return override
    if state_dir is None:
        return DEFAULT_SOCKET
    return os.path.join(state_dir, "run", "virtnetd.sock")


def forward(inv: Invocation, timing: dict[str, float]) -> int | None:
    """Run the verb in the daemon; None when there is no daemon to run it (or it must run
    here)."""
    verb = inv.verb_args[0]
    state_dir = inv.state_dir
    if state_dir is not None and not os.path.isabs(state_dir):
        if verb in PATH_SHOWING_VERBS:
            return None
        state_dir = os.path.abspath(state_dir)
    path = socket_path(state_dir)
    sock = HostProcess.connect_stream(path)
    timing["connect"] = time.perf_counter()
    if sock is None:
        return None
    try:
        request: dict[str, Any] = {"argv": inv.verb_args, "files": {}, "stdin": None,
                                   "state_dir": state_dir, "netns": netns_identity(inv.netns)}
        if verb in FILE_VERBS:
            request["files"] = read_files(candidate_paths(inv.verb_args))
            if verb in STDIN_VERBS and "-" in inv.verb_args[1:]:
                request["stdin"] = read_stdin()
        body = encode_json(request).encode("utf-8")
    except (NotForwardable, UnicodeEncodeError):
        sock.close()
        return None
    timing["prepared"] = time.perf_counter()
    try:
        answer = exchange(sock, body)
    except (Lost, OSError):
        sys.stderr.write(f"error: virtnetd at {path} closed the connection before answering; "
                         f"'{verb}' may or may not have taken effect\n")
        return 1
    finally:
        sock.close()
    timing["answered"] = time.perf_counter()
    if answer.status != 200 or not answer.content_type.startswith(FRAMES_TYPE):
        sys.stderr.write(f"error: {error_message(answer)}\n")
        sys.stderr.flush()
        return 1
    status, elapsed_ms, chunks = parse_frames(answer.body)
    for stream, text in chunks:
        out = sys.stdout if stream == 1 else sys.stderr
        out.write(text)
        out.flush()
    timing["printed"] = time.perf_counter()
    timing["server_ms"] = elapsed_ms
    return status


def error_message(answer: Answer) -> str:
    """The daemon's refusal as one line (JSON errors are rare: json is imported for them)."""
    import json

    try:
        return str(json.loads(answer.body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = answer.body.decode(errors="replace").strip()
        return f"virtnetd answered {answer.status} {answer.reason}" + (f": {text}" if text
                                                                       else "")


def report_timing(timing: dict[str, float], forwarded: bool) -> None:
    marks = ["connect", "prepared", "answered", "printed"]
    out: dict[str, Any] = {"forwarded": forwarded,
                           "main_ms": round((time.perf_counter() - _T_START) * 1000, 3)}
    previous = _T_START
    for mark in marks:
        if mark in timing:
            out[f"{mark}_ms"] = round((timing[mark] - previous) * 1000, 3)
            previous = timing[mark]
    if "server_ms" in timing:
        out["server_ms"] = timing["server_ms"]
    sys.stderr.write("virtnet-timing: " + encode_json(out) + "\n")


def run_in_process(args: list[str]) -> NoReturn:
    from virtnet.face.cli import main as cli_main  # click and the verbs: not for the thin path

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
