"""Hostile and broken definitions through the real CLI (`virtnet validate` and `virtnet format`
in a subprocess): each must give one clear line naming the file, line, element and value, exit
status 1, and no traceback; nothing the document points at may be read or fetched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

VIRTNET = Path(sys.executable).with_name("virtnet")
TIMEOUT = 30

GOOD = """<network>
  <name>bad-input</name>
  <uuid>81ff0d90-c91e-6742-64da-4a736edb9a9b</uuid>
  <forward mode='nat'/>
  <bridge name='vnt0' stp='on' delay='0'/>
  <mac address='52:54:00:12:34:56'/>
  <dns>
    <srv service='ldap' protocol='tcp' target='srv.example.com' port='389'/>
  </dns>
  <ip address='192.168.100.1' prefix='24'>
    <dhcp>
      <range start='192.168.100.2' end='192.168.100.254'/>
      <host mac='52:54:00:aa:bb:cc' name='guest' ip='192.168.100.10'/>
    </dhcp>
  </ip>
</network>
"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE network [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<network><name>&lol9;</name></network>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE network [ <!ENTITY secret SYSTEM "file:///etc/passwd"> ]>
<network><name>&secret;</name></network>
"""


def _replace(old: str, new: str) -> bytes:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1).encode()


# name -> (document, substrings the one-line error must contain besides the file name)
CASES: dict[str, tuple[bytes, list[str]]] = {
    "malformed": (GOOD.replace("</ip>", "</ipp>").encode(), [":15:", "malformed XML"]),
    "truncated": (GOOD[:200].encode(), ["malformed XML"]),
    "not-xml": (b"this is not xml at all\n", [":1:", "malformed XML"]),
    "empty": (b"", ["empty"]),
    "billion-laughs": (BILLION_LAUGHS.encode(), [":2:", "DOCTYPE"]),
    "external-entity": (EXTERNAL_ENTITY.encode(), [":2:", "DOCTYPE"]),
    "invalid-utf8": (_replace("<name>bad-input</name>", "<name>bad-\xff-input</name>")
                     .replace(b"\xc3\xbf", b"\xff"), [":2:", "invalid UTF-8", "0xff"]),
    "latin1-declared": (b"<?xml version='1.0' encoding='ISO-8859-1'?>\n" + GOOD.encode(),
                        [":1:", "ISO-8859-1"]),
    "stp-maybe": (_replace("stp='on'", "stp='maybe'"), [":5:", "/network/bridge/@stp", "'maybe'"]),
    "delay-negative": (_replace("delay='0'", "delay='-1'"),
                       [":5:", "/network/bridge/@delay", "'-1'"]),
    "prefix-200": (_replace("prefix='24'", "prefix='200'"),
                   [":10:", "/network/ip[1]/@prefix", "200"]),
    "srv-port-70000": (_replace("port='389'", "port='70000'"),
                       [":8:", "/network/dns/srv[1]/@port", "'70000'"]),
    "bad-uuid": (_replace("81ff0d90-c91e", "81ff0d90-c91g"), [":3:", "/network/uuid", "c91g"]),
    "bad-mac": (_replace("52:54:00:aa:bb:cc", "52:54:00:aa:bb"),
                [":13:", "/network/ip[1]/dhcp/host[1]/@mac", "'52:54:00:aa:bb'"]),
    "multicast-mac": (_replace("52:54:00:12:34:56", "01:00:5e:00:00:01"),
                      [":6:", "/network/mac/@address", "01:00:5e:00:00:01", "multicast"]),
    "unknown-forward-mode": (_replace("mode='nat'", "mode='tunnel'"),
                             [":4:", "/network/forward/@mode", "'tunnel'"]),
    "bad-ip": (_replace("ip='192.168.100.10'", "ip='192.168.100.300'"),
               [":13:", "/network/ip[1]/dhcp/host[1]/@ip", "192.168.100.300"]),
    "wrong-root": (b"<domain><name>x</name></domain>", [":1:", "<network>"]),
}


def _run(command: str, path: Path) -> subprocess.CompletedProcess[str]:
    assert VIRTNET.exists(), f"the virtnet entry point is not installed next to {sys.executable}"
    return subprocess.run(
        [str(VIRTNET), command, str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_good_document_passes(tmp_path: Path) -> None:
    """The base document of the bad cases is itself valid: each case breaks one thing."""
    path = tmp_path / "good.xml"
    path.write_text(GOOD)
    result = _run("validate", path)
    assert result.returncode == 0, result.stderr
    assert _run("format", path).returncode == 0


@pytest.mark.parametrize("command", ["validate", "format"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_clear_line(tmp_path: Path, case: str, command: str) -> None:
    document, expected = CASES[case]
    path = tmp_path / f"{case}.xml"
    path.write_bytes(document)
    result = _run(command, path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert str(path) in line
    for fragment in expected:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert "root:" not in result.stdout + result.stderr  # nothing of /etc/passwd leaked


def test_fifty_megabyte_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.xml"
    with path.open("wb") as handle:
        handle.write(b"<network><name>huge</name><description>")
        chunk = b"x" * (1024 * 1024)
        for _ in range(50):
            handle.write(chunk)
        handle.write(b"</description></network>\n")
    for command in ("validate", "format"):
        result = _run(command, path)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(path) in lines[0] and "too large" in lines[0]
