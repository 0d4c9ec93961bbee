"""The thin client's own logic: splitting the command line, which arguments are files, the
hand-written JSON of its requests and the framed answers it reads (no daemon needed).

Its behaviour against a real daemon is in tests/netns/test_daemon*.py.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtnet.face import fastcli


@pytest.mark.parametrize("argv, netns, state_dir, direct, verb_args, forwardable", [
    (["net-list"], None, None, False, ["net-list"], True),
    (["--netns", "lab", "--state-dir", "/s", "net-start", "x"], "lab", "/s", False,
     ["net-start", "x"], True),
    (["--netns=lab", "--state-dir=/s", "--direct", "net-list", "--all"], "lab", "/s", True,
     ["net-list", "--all"], True),
    (["--direct", "net-info", "x"], None, None, True, ["net-info", "x"], True),
    (["net-edit", "x"], None, None, False, ["net-edit", "x"], False),
    (["graph", "x", "-o", "x.svg"], None, None, False, ["graph", "x", "-o", "x.svg"], False),
    (["no-such-verb"], None, None, False, ["no-such-verb"], False),
    (["--help"], None, None, False, [], False),
    (["net-list", "--help"], None, None, False, ["net-list", "--help"], False),
    (["net-list", "-h"], None, None, False, ["net-list", "-h"], False),
    (["--version"], None, None, False, [], False),
    (["--bogus", "net-list"], None, None, False, [], False),
    (["--netns"], None, None, False, [], False),
    ([], None, None, False, [], False),
    # Only options before the verb are virtnet's own; after it they are the verb's.
    (["net-info", "--netns", "x"], None, None, False, ["net-info", "--netns", "x"], True),
])
def test_the_command_line_is_split_as_click_reads_it(
        argv: list[str], netns: str | None, state_dir: str | None, direct: bool,
        verb_args: list[str], forwardable: bool) -> None:
    inv = fastcli.split_command_line(argv)
    assert (inv.netns, inv.state_dir, inv.direct, inv.verb_args, inv.forwardable) == (
        netns, state_dir, direct, verb_args, forwardable)
    assert "--direct" not in inv.args
    assert [a for a in argv if a != "--direct"] == inv.args


def test_candidate_paths_are_the_arguments_that_may_name_files() -> None:
    assert fastcli.candidate_paths(
        ["update", "net.xml", "add", "ip-dhcp-host", "<host/>", "--parent-index", "1"]) == [
        "net.xml", "add", "ip-dhcp-host", "1"]
    assert fastcli.candidate_paths(["update", "n.xml", "add", "s", "@snip.xml"]) == [
        "n.xml", "add", "s", "snip.xml", "@snip.xml"]
    assert fastcli.candidate_paths(["port-create", "net", "--file=p.xml", "--json"]) == [
        "net", "p.xml"]
    assert fastcli.candidate_paths(["net-define", "-"]) == []


def test_files_are_sent_with_their_content_or_the_error_reading_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.xml").write_bytes(b"<network/>")
    (tmp_path / "dir").mkdir()
    monkeypatch.chdir(tmp_path)
    files = fastcli.read_files(["a.xml", "dir", "missing.xml"])
    assert files == {"a.xml": {"data": "PG5ldHdvcmsvPg=="},
                     "dir": {"errno": errno.EISDIR},
                     "missing.xml": {"errno": errno.ENOENT}}
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(fastcli.NotForwardable):  # not a regular file: runs in-process
        fastcli.read_files(["fifo"])


def test_constants_agree_with_the_modules_they_mirror() -> None:
    from virtnet.client import DEFAULT_SOCKET
    from virtnet.face.verbs import FORWARDED_VERBS, READ_ONLY_VERBS
    from virtnet.daemon.server import FRAMES_TYPE
    from virtnet.spec.xml.parse import MAX_DOCUMENT_BYTES

    assert fastcli.MAX_FILE_BYTES == MAX_DOCUMENT_BYTES
    assert fastcli.FORWARDED_VERBS == FORWARDED_VERBS
    assert READ_ONLY_VERBS <= FORWARDED_VERBS
    assert fastcli.DEFAULT_SOCKET == DEFAULT_SOCKET
    assert fastcli.FRAMES_TYPE == FRAMES_TYPE


def test_forwarded_verbs_are_verbs_of_the_cli() -> None:
    from virtnet.face.cli import main

    assert fastcli.FILE_VERBS <= fastcli.FORWARDED_VERBS <= set(main.commands)
    assert "net-edit" in main.commands and "net-edit" not in fastcli.FORWARDED_VERBS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_the_hand_written_json_is_json(value: object) -> None:
    assert json.loads(fastcli.encode_json(value)) == value


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.lists(st.tuples(st.sampled_from([1, 2]), st.text(min_size=1)),
                                    max_size=6))
def test_framed_answers_round_trip(status: int, output: list[tuple[int, str]]) -> None:
    from virtnet.face.output import Capture
    from virtnet.face.verbs import InvokeResult
    from virtnet.daemon.server import frames_of

    capture = Capture()
    for stream, text in output:
        capture.add(stream, text)
    got_status, _, chunks = fastcli.parse_frames(frames_of(InvokeResult(status, capture.chunks,
                                                                        0.001)))
    assert got_status == status
    assert [(s, t) for s, t in chunks] == [tuple(c) for c in capture.chunks]
    assert "".join(t for s, t in chunks if s == 1) == "".join(t for s, t in output if s == 1)


def test_no_daemon_means_no_forwarding(tmp_path: Path) -> None:
    inv = fastcli.split_command_line(["--state-dir", str(tmp_path), "net-list"])
    assert fastcli.forward(inv, {}) is None  # nothing listens at tmp_path/run/virtnetd.sock
