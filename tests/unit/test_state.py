"""virtnet.store.store: atomic files, modes, autostart links, status records and the state lock."""

from __future__ import annotations

import errno
import json
import multiprocessing
import pickle
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from virtnet.execute.journal import json_line
from virtnet.errors import StorageError
from virtnet.errors import Busy
from virtnet.paths import StatePaths
from virtnet.ids import IdentifierError
from virtnet.store.store import (
    NetworkStatus,
    StateError,
    StateLock,
    StateStore,
    atomic_write,
    check_name,
    remove_file,
)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(StatePaths.under(tmp_path), clock=lambda: 1234.5, lock_timeout=2.0)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_definition_round_trip_with_private_modes(store: StateStore) -> None:
    path = store.write_definition("net1", "<network><name>net1</name></network>\n")
    assert path == store.paths.definition("net1")
    assert store.read_definition("net1") == b"<network><name>net1</name></network>\n"
    assert mode_of(path) == 0o600
    assert mode_of(store.paths.networks_dir) == 0o700
    # Parents stay traversable: dnsmasq, once it dropped root, reads files under the root.
    assert mode_of(store.paths.config_dir) == 0o755
    store.write_status(NetworkStatus(name="n", uuid="u", bridge=None, live_xml="<network/>"))
    assert mode_of(store.paths.status_dir) == 0o700
    assert mode_of(store.paths.run_dir) == 0o755
    assert store.defined_names() == ["net1"]
    assert store.read_definition("other") is None


def test_atomic_write_leaves_no_temp_files_and_replaces_whole_content(tmp_path: Path) -> None:
    target = tmp_path / "d" / "file.xml"
    atomic_write(target, "a" * 10000)
    atomic_write(target, "short")
    assert target.read_text() == "short"
    assert os.listdir(target.parent) == ["file.xml"]


def test_atomic_write_failure_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "file.xml"
    atomic_write(target, "old")

    with pytest.raises(TypeError):
        atomic_write(target, 12345)  # type: ignore[arg-type]  # not bytes: write fails
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["file.xml"]


def test_concurrent_readers_never_see_partial_definitions(store: StateStore) -> None:
    big = "<network>" + "x" * 200_000 + "</network>"
    small = "<network/>"
    store.write_definition("n", small)
    stop = threading.Event()
    seen: set[bytes] = set()

    def reader() -> None:
        while not stop.is_set():
            data = store.read_definition("n")
            assert data is not None
            seen.add(data)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(50):
            store.write_definition("n", big)
            store.write_definition("n", small)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert seen <= {big.encode(), small.encode()}


def test_autostart_is_a_symlink_to_the_definition(store: StateStore) -> None:
    store.write_definition("n", "<network/>")
    assert not store.is_autostart("n")
    store.set_autostart("n", True)
    link = store.paths.autostart_link("n")
    assert link.is_symlink()
    assert Path(os.readlink(link)) == store.paths.definition("n").absolute()
    assert store.is_autostart("n")
    assert store.autostart_names() == ["n"]
    store.set_autostart("n", True)  # idempotent
    store.set_autostart("n", False)
    assert not link.is_symlink()
    store.set_autostart("n", False)  # idempotent too


def test_delete_definition_drops_autostart(store: StateStore) -> None:
    store.write_definition("n", "<network/>")
    store.set_autostart("n", True)
    store.delete_definition("n")
    assert not store.paths.autostart_link("n").is_symlink()
    assert store.defined_names() == []


def test_status_record_round_trip(store: StateStore) -> None:
    status = NetworkStatus(
        name="n", uuid="u", bridge="virbr0", live_xml="<network/>",
        actions=[{"kind": "link", "name": "virbr0"}], dnsmasq_pid=42, connections=3,
        started_at=store.now(),
    )
    store.write_status(status)
    assert mode_of(store.paths.status("n")) == 0o600
    data = json.loads(store.paths.status("n").read_text())
    assert data["active"] is True and data["started_at"] == 1234.5
    assert store.read_status("n") == status
    assert store.status_names() == ["n"]
    store.delete_status("n")
    assert store.read_status("n") is None


def test_transient_network_is_known_by_its_status_alone(store: StateStore) -> None:
    store.write_definition("b", "<network/>")
    store.write_status(NetworkStatus(name="A", uuid="u", bridge=None, live_xml="<network/>"))
    assert store.all_names() == ["A", "b"]
    assert not store.is_defined("A")


def test_unreadable_status_is_a_clear_error(store: StateStore) -> None:
    atomic_write(store.paths.status("n"), "{not json")
    with pytest.raises(StateError, match="unreadable status record"):
        store.read_status("n")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", ".hidden", "a\0b", "a\nb", "a\rb"])
def test_names_that_cannot_be_file_names_are_refused(name: str) -> None:
    with pytest.raises(IdentifierError):
        check_name(name)


def test_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    lock = StateLock(tmp_path / "run" / "virtnet.lock", timeout=1)
    with lock:
        with lock:
            assert lock.held
        assert lock.held
    assert not lock.held


HOLD_LOCK = """
import sys, time
from pathlib import Path
from virtnet.store.store import StateLock
lock = StateLock(Path(sys.argv[1]), timeout=5)
with lock:
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_lock_excludes_other_processes_with_bounded_wait(tmp_path: Path) -> None:
    path = tmp_path / "virtnet.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        waiter = StateLock(path, timeout=0.3)
        started = time.monotonic()
        # Busy (virtnetd: 503, try again), not a StateError: the state is fine, only held
        with pytest.raises(Busy, match=rf"pid {holder.pid}.*gave up after waiting 0.3s"):
            waiter.acquire()
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait(timeout=10)
    # The kernel released the dead holder's lock.
    with StateLock(path, timeout=2):
        pass


def _increment(path: str, counter: str, rounds: int) -> None:
    lock = StateLock(Path(path), timeout=30)
    for _ in range(rounds):
        with lock:
            value = int(Path(counter).read_text())
            time.sleep(0.001)  # widen the race window a lock must close
            atomic_write(Path(counter), str(value + 1))


def test_lock_serialises_read_modify_write_across_processes(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_increment, args=(str(tmp_path / "lock"), str(counter), 25))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert counter.read_text() == "100"


# --- runtime records: not fsynced, and the journal of a start in progress ---------------------


def _status(name: str = "n") -> NetworkStatus:
    return NetworkStatus(name=name, uuid="u", bridge="virbr0", live_xml="<network/>",
                         started_at=1234.5, active=False)


def test_runtime_writes_are_atomic_without_fsync(tmp_path: Path) -> None:
    target = tmp_path / "run" / "x.json"
    atomic_write(target, "a" * 10000, durable=False)
    atomic_write(target, "short", durable=False)
    assert target.read_text() == "short"
    assert os.listdir(target.parent) == ["x.json"]
    assert remove_file(target, durable=False) is True
    assert remove_file(target, durable=False) is False


def test_status_record_is_one_line_of_compact_json(store: StateStore) -> None:
    status = _status()
    status.actions.append({"kind": "k", "text": "x" * 100})
    store.write_status(status)
    text = store.paths.status("n").read_text()
    assert text.count("\n") == 1  # one line: the C encoder, not the indented one
    assert json.loads(text)["actions"] == [{"kind": "k", "text": "x" * 100}]


def test_journal_reads_back_as_an_interrupted_start(store: StateStore) -> None:
    status = _status()
    with store.begin_status(status) as journal:
        assert not store.journal_path("n").exists()  # nothing before the first step
        journal.write(json_line({"kind": "a", "n": 1}))
        journal.write(json_line({"kind": "b", "text": "line\nbreak"}))  # JSON escapes the newline
    assert mode_of(store.journal_path("n")) == 0o600
    read = store.read_status("n")
    assert read is not None and read.active is False
    assert read.actions == [{"kind": "a", "n": 1}, {"kind": "b", "text": "line\nbreak"}]
    assert (read.name, read.bridge, read.started_at) == ("n", "virbr0", 1234.5)
    assert store.status_names() == ["n"]
    assert store.all_names() == ["n"]


def test_journal_line_cut_by_a_crash_is_ignored(store: StateStore) -> None:
    with store.begin_status(_status()) as journal:
        journal.write(json_line({"kind": "a"}))
    with open(store.journal_path("n"), "ab") as handle:
        handle.write(b'{"kind": "b", "cut')  # killed in the middle of the second record
    read = store.read_status("n")
    assert read is not None and read.actions == [{"kind": "a"}]


def test_journal_keeps_the_step_a_kill_cut_inside(store: StateStore) -> None:
    with store.begin_status(_status()) as journal:
        journal.begun({"kind": "a", "pid": None})
        journal.completed(1, {"pid": 42})  # what apply recorded completes the planned action
        journal.begun({"kind": "b"})
        journal.completed(2, {})
        journal.begun({"kind": "c", "pid": None})  # killed inside step 3
    read = store.read_status("n")
    assert read is not None and read.active is False
    assert read.actions == [{"kind": "a", "pid": 42}, {"kind": "b"}, {"kind": "c", "pid": None}]


def test_journal_forgets_a_step_that_failed(store: StateStore) -> None:
    # a failed step left nothing (and may have failed on something someone else owns)
    with store.begin_status(_status()) as journal:
        journal.begun({"kind": "a"})
        journal.completed(1, {})
        journal.begun({"kind": "b"})
        journal.failed(2)
    read = store.read_status("n")
    assert read is not None and read.actions == [{"kind": "a"}]


def test_journal_done_line_cut_by_a_crash_leaves_its_step_begun(store: StateStore) -> None:
    with store.begin_status(_status()) as journal:
        journal.begun({"kind": "a", "pid": None})
    with open(store.journal_path("n"), "ab") as handle:
        handle.write(b'{"done":1,"recor')  # killed while recording the applied step
    read = store.read_status("n")
    assert read is not None and read.actions == [{"kind": "a", "pid": None}]


def test_journal_steps_reads_every_line_kind() -> None:
    from virtnet.store.store import begun_line, done_line, failed_line, journal_steps

    lines = [begun_line({"kind": "a"}), done_line(1, {}), {"kind": "legacy"},
             begun_line({"kind": "b", "old": None}), done_line(3, {"old": "0"}),
             begun_line({"kind": "c"}), failed_line(4), begun_line({"kind": "d"})]
    entries = [json.loads(line) if isinstance(line, bytes) else line for line in lines]
    assert all(line.endswith(b"\n") for line in lines if isinstance(line, bytes))
    assert journal_steps(entries) == [{"kind": "a"}, {"kind": "legacy"},
                                      {"kind": "b", "old": "0"}, {"kind": "d"}]
    assert journal_steps([]) == []


def test_journal_cut_before_its_first_line_holds_nothing(store: StateStore) -> None:
    store.paths.status_dir.mkdir(parents=True)
    store.journal_path("n").write_bytes(b'{"name": "n", "uu')
    assert store.read_status("n") is None


def test_corrupt_journal_is_a_clear_error(store: StateStore) -> None:
    with store.begin_status(_status()) as journal:
        journal.write(json_line({"kind": "a"}))
    with open(store.journal_path("n"), "ab") as handle:
        handle.write(b"not json\n")
    with pytest.raises(StateError, match="unreadable status journal"):
        store.read_status("n")


def test_completed_record_supersedes_and_removes_the_journal(store: StateStore) -> None:
    status = _status()
    with store.begin_status(status) as journal:
        journal.write(json_line({"kind": "a"}))
    status.actions = [{"kind": "a"}]
    status.active = True
    store.write_status(status)
    assert not store.journal_path("n").exists()
    assert store.read_status("n") == status


def test_delete_status_removes_record_and_journal(store: StateStore) -> None:
    with store.begin_status(_status()) as journal:
        journal.write(json_line({"kind": "a"}))
    store.write_status(_status())
    with store.begin_status(_status()) as journal:  # a leftover next to the record
        journal.write(json_line({"kind": "b"}))
    assert store.read_status("n") == _status()  # the record wins over a journal
    store.delete_status("n")
    assert os.listdir(store.paths.status_dir) == []
    assert store.read_status("n") is None


# --- a full, read-only or unreadable state directory: one StorageError, files intact ---------


def failing(errno_number: int, real: Any, when: Any = lambda *args, **kwargs: True) -> Any:
    """REAL, raising errno_number's OSError for the calls WHEN accepts."""
    def call(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            raise OSError(errno_number, os.strerror(errno_number))
        return real(*args, **kwargs)
    return call


def test_storage_error_names_the_file_and_the_errno_and_pickles() -> None:
    error = StorageError("write", "/x/etc/networks/a.xml", errno.ENOSPC)
    assert str(error) == "cannot write /x/etc/networks/a.xml: No space left on device (ENOSPC)"
    assert (error.path, error.errno, error.errno_name) == ("/x/etc/networks/a.xml",
                                                           errno.ENOSPC, "ENOSPC")
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again)) == (StorageError, str(error))
    hinted = StorageError("read", "/x", errno.EACCES, hint="ask root")
    assert str(hinted) == "cannot read /x: Permission denied (EACCES); ask root"


@pytest.mark.parametrize("durable", [True, False])
def test_a_write_on_a_full_disk_keeps_the_old_file_and_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool) -> None:
    target = tmp_path / "file.xml"
    atomic_write(target, "old")
    # where a full disk shows: the data (fsync, delayed allocation) or the rename's directory
    name = "fsync" if durable else "replace"
    monkeypatch.setattr(os, name, failing(errno.ENOSPC, getattr(os, name)))
    with pytest.raises(StorageError) as info:
        atomic_write(target, "new" * 1000, durable=durable)
    assert str(info.value) == f"cannot write {target}: No space left on device (ENOSPC)"
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["file.xml"]


def test_a_journal_whose_first_line_cannot_be_written_leaves_no_file(
        store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = store.begin_status(NetworkStatus(name="n", uuid="u", bridge=None,
                                               live_xml="<network/>"))
    monkeypatch.setattr(os, "write", failing(errno.ENOSPC, os.write))
    with pytest.raises(StorageError, match=r"cannot write .*/n\.journal: .* \(ENOSPC\)$"):
        journal.begun({"kind": "link-up"})
    assert not journal.path.exists()
    assert store.read_status("n") is None


def test_reading_an_unreadable_state_is_a_storage_error(
        store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.write_definition("a", "<network/>")
    networks = store.paths.networks_dir
    monkeypatch.setattr(os, "scandir", failing(errno.EACCES, os.scandir))
    with pytest.raises(StorageError) as info:
        store.defined_names()
    assert str(info.value) == f"cannot read {networks}: Permission denied (EACCES)"
    monkeypatch.undo()
    monkeypatch.setattr(os, "read", failing(errno.EIO, os.read))
    with pytest.raises(StorageError, match=r"^cannot read .*/a\.xml: .*\(EIO\)$"):
        store.read_definition("a")


def test_removing_what_is_not_there_from_a_read_only_disk_is_nothing_to_remove(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    present = tmp_path / "present"
    present.write_text("x")
    monkeypatch.setattr(os, "unlink", failing(errno.EROFS, os.unlink))
    assert remove_file(tmp_path / "absent") is False  # EROFS comes before ENOENT
    with pytest.raises(StorageError, match=r"cannot remove .*present: .*\(EROFS\)$"):
        remove_file(present)
    assert present.exists()


def test_the_lock_of_a_read_only_state_directory_is_taken_for_reading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock_path = tmp_path / "virtnet.lock"
    lock_path.write_text("1\n")
    monkeypatch.setattr(os, "open", failing(errno.EROFS, os.open,
                                            lambda path, flags, *a: flags & os.O_RDWR))
    lock = StateLock(lock_path, timeout=1.0)
    with lock:  # the commands that only read still serialise
        assert lock.held
    lock_path.unlink()
    with pytest.raises(StorageError, match=r"cannot open the state lock .*: .*\(EROFS\)$"):
        with StateLock(lock_path, timeout=1.0):
            pass


def test_the_lock_of_a_full_disk_is_still_taken(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder's pid is only informative: a command that has nothing to write (or space
    to free) is not refused for want of a few bytes."""
    monkeypatch.setattr(os, "pwrite", failing(errno.ENOSPC, os.pwrite))
    with StateLock(tmp_path / "virtnet.lock", timeout=1.0) as lock:
        assert lock.held
