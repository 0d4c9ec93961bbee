"""Identifiers that become file names, checked in one place, and the one way to build a path
from them.

Every identifier that ends up in a path under the state directory — a network's name (its
definition, status, journals, ports directory, dnsmasq files), a port's uuid (its record and
journal) — and every name read back from a directory listing passes :func:`check_network_name`
or :func:`check_uuid` at the boundary where it enters: the XML parser (a definition), the API
and the CLI (names, port requests), the state store (file names found on disk). Portgroup
names never become paths, but they are stored as an XML attribute, so they obey
:func:`check_portgroup_name` (a control character would not survive being read back).

Paths are then built by :func:`join_state`, which refuses anything that is not one plain file
name and checks that the result's parent is the directory asked for, resolved: an identifier
that a validator let through by mistake still cannot name a file elsewhere. Files under the
state directory are opened with ``O_NOFOLLOW`` (:func:`read_state_file`): a symlink planted
where a record is expected is refused, not followed.

Wording follows libvirt where libvirt refuses the same thing (``invalid char in name: /``;
a control character is shown as its code, so the message stays on one line).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from virtnet.errors import VirtnetError

MAX_NAME_BYTES = 200  # NAME_MAX (255) less what the longest derived file name adds
UUID_LENGTH = 36

# libvirt's virUUIDParse: 32 hex digits, any '-' or ' ' before each pair, surrounding
# blanks; canonical form 8-4-4-4-12 lowercase
_UUID_LENIENT = re.compile(r"\s*(?:[- ]*[0-9a-fA-F]{2}){16}\s*\Z")
_UUID_DROP = {ord(c): None for c in "- \t\n\r\v\f"}
_UUID_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


class IdentifierError(VirtnetError):
    """A name or uuid that cannot be used: it would not be one plain, stable file name."""


def show_char(char: str) -> str:
    """A character for a one-line message: itself when printable, else its code (0x0a)."""
    return char if char.isprintable() else f"0x{ord(char):02x}"


def _shown(value: str) -> str:
    """VALUE quoted for a one-line message: control characters escaped, long ones cut."""
    text = value if len(value) <= 60 else value[:60] + "..."
    return repr(text)


def control_char(text: str, allowed: str = "") -> str | None:
    """The first control character of TEXT (C0, DEL or C1) not in ALLOWED, or None."""
    for char in text:
        code = ord(char)
        if (code < 0x20 or 0x7F <= code <= 0x9F) and char not in allowed:
            return char
    return None


def network_name_problem(name: str) -> str | None:
    """Why NAME cannot be a network's name (it is part of every path of the network), in
    libvirt's words where libvirt refuses it too; None if it can."""
    if not name:
        return "missing network name"
    if "/" in name:
        return f"invalid char in name: / (in {_shown(name)})"
    bad = control_char(name)
    if bad is not None:
        return f"invalid char in name: {show_char(bad)} (in {_shown(name)})"
    if name in (".", "..") or name.startswith("."):
        return f"invalid network name '{name}': it must not start with '.'"
    try:
        size = len(name.encode())
    except UnicodeEncodeError:  # a lone surrogate (found by fuzzing)
        return f"invalid network name {name!r}: not valid UTF-8"
    if size > MAX_NAME_BYTES:
        return (f"invalid network name '{name[:40]}...': longer than {MAX_NAME_BYTES} bytes "
                "(it is part of file names)")
    return None


def check_network_name(name: str) -> str:
    """NAME, if it can be a network's name; IdentifierError otherwise."""
    problem = network_name_problem(name)
    if problem is not None:
        raise IdentifierError(problem)
    return name


def canonical_uuid(value: str) -> str | None:
    """VALUE in canonical form (8-4-4-4-12 lowercase) if libvirt would read it as a UUID."""
    if not isinstance(value, str) or not _UUID_LENIENT.match(value):
        return None
    digits = value.translate(_UUID_DROP).lower()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def uuid_problem(value: str, what: str = "UUID") -> str:
    return (f"malformed {what} {value!r}: expected 32 hex digits like "
            "'81ff0d90-c91e-6742-64da-4a736edb9a9b'")


def check_uuid(value: str, what: str = "UUID") -> str:
    """VALUE as a canonical UUID; IdentifierError if it is not one."""
    found = canonical_uuid(value)
    if found is None:
        raise IdentifierError(uuid_problem(value, what))
    return found


def is_canonical_uuid(value: str) -> bool:
    return _UUID_CANONICAL.match(value) is not None


def portgroup_name_problem(name: str) -> str | None:
    """Why NAME cannot be a portgroup's name, or None. An XML attribute turns tab, newline and
    carriage return into spaces when read back, so a name holding one would change."""
    if not name:
        return "a portgroup needs a non-empty name"
    bad = control_char(name)
    if bad is not None:
        return f"invalid char in portgroup name: {show_char(bad)} (in {_shown(name)})"
    return None


def check_portgroup_name(name: str) -> str:
    problem = portgroup_name_problem(name)
    if problem is not None:
        raise IdentifierError(problem)
    return name


# --- paths -----------------------------------------------------------------------------


def join_state(directory: Path, filename: str) -> Path:
    """DIRECTORY / FILENAME, where FILENAME must be one plain file name: no '/', no NUL, not
    '.' or '..'; the joined path, normalised ('..' and '.' resolved), must still have
    DIRECTORY as its parent and FILENAME as its name. IdentifierError otherwise.

    The check is lexical on purpose (no syscall: it runs for every record written): with a
    single component it is exact, and what a symlink could do at that component is handled
    where files are opened (O_NOFOLLOW, rename never follows, :func:`ensure_real_dir`)."""
    if (not filename or "/" in filename or "\0" in filename
            or filename in (".", "..")):
        raise IdentifierError(f"{filename!r} cannot be a file name in {directory}")
    parent = os.path.normpath(directory)
    joined = os.path.normpath(os.path.join(parent, filename))
    if os.path.dirname(joined) != parent or os.path.basename(joined) != filename:
        raise IdentifierError(f"{filename!r} would leave {directory}")
    return Path(directory) / filename


def ensure_real_dir(path: Path) -> None:
    """Refuse PATH if it is a symlink (a directory of the state must be one, not lead to one
    elsewhere); a missing PATH is fine."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise IdentifierError(f"{path} is a symlink: a state directory is never followed "
                              "through one")


def network_file(directory: Path, name: str, suffix: str) -> Path:
    """The file of network NAME in DIRECTORY: NAME + SUFFIX, NAME checked first."""
    return join_state(directory, check_network_name(name) + suffix)


def port_file(directory: Path, port_uuid: str, suffix: str) -> Path:
    """The file of the port PORT_UUID in DIRECTORY; the uuid must be canonical already."""
    if not is_canonical_uuid(port_uuid):
        raise IdentifierError(uuid_problem(port_uuid, "port UUID"))
    return join_state(directory, port_uuid + suffix)


def read_state_file(path: Path) -> bytes:
    """The content of the regular file PATH, opened without following a symlink at its last
    component (OSError ELOOP for a symlink; IdentifierError for a non-regular file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IdentifierError(f"{path} is not a regular file")
        chunks = []
        while True:
            chunk = os.read(fd, max(info.st_size + 1, 65536))
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


__all__ = [
    "IdentifierError",
    "MAX_NAME_BYTES",
    "canonical_uuid",
    "check_network_name",
    "check_portgroup_name",
    "check_uuid",
    "control_char",
    "ensure_real_dir",
    "is_canonical_uuid",
    "join_state",
    "network_file",
    "network_name_problem",
    "port_file",
    "portgroup_name_problem",
    "read_state_file",
    "show_char",
]
