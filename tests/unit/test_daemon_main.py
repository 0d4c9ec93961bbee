"""virtnetd's memory settings (virtnet.daemon.__main__): glibc's mmap threshold kept at
128 KiB, and the memory probe (MemoryProbe): the figures bench/soak.py reads to tell objects
kept alive from allocator behaviour, and nothing at all without the environment variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from virtnet.daemon.__main__ import MEMORY_PROBE_ENV, TRACEMALLOC_ENV, MemoryProbe, _mallinfo2

# Frees a 4 MiB block (glibc maps it, and by default then raises its mmap threshold to 4 MiB),
# then takes 512 KiB and prints whether that was mapped too (1) or came from the heap (0).
AFTER_A_LARGE_FREE = """
import sys
from virtnet.daemon.__main__ import _mallinfo2, fix_malloc_thresholds
if sys.argv[1] == "fixed":
    assert fix_malloc_thresholds()
large = bytearray(4 * 1024 * 1024)
del large
before = _mallinfo2()
middle = bytearray(512 * 1024)
print(_mallinfo2()["hblks"] - before["hblks"])
"""


def mapped_after_a_large_free(mode: str, **env: str) -> int:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", AFTER_A_LARGE_FREE, mode], check=True,
                         capture_output=True, text=True, timeout=60, env={**clean, **env})
    return int(out.stdout)


@pytest.mark.skipif(_mallinfo2() is None, reason="glibc's malloc only")
def test_large_blocks_stay_mapped_after_a_larger_one_was_freed() -> None:
    assert mapped_after_a_large_free("default") == 0  # glibc's dynamic threshold at work
    assert mapped_after_a_large_free("fixed") == 1


@pytest.mark.skipif(_mallinfo2() is None, reason="glibc's malloc only")
def test_a_threshold_set_in_the_environment_is_left_alone() -> None:
    script = ("from virtnet.daemon.__main__ import fix_malloc_thresholds as f; "
              "print(f())")
    for env in ({"MALLOC_MMAP_THRESHOLD_": "1048576"},
                {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}):
        out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                             text=True, timeout=60, env={**os.environ, **env})
        assert out.stdout.strip() == "False"


def test_no_probe_and_no_tracing_without_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MEMORY_PROBE_ENV, raising=False)
    monkeypatch.delenv(TRACEMALLOC_ENV, raising=False)
    was_tracing = tracemalloc.is_tracing()
    assert MemoryProbe.from_environment() is None
    assert tracemalloc.is_tracing() == was_tracing


def test_a_probe_counts_what_is_alive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRACEMALLOC_ENV, raising=False)
    monkeypatch.setenv(MEMORY_PROBE_ENV, str(tmp_path / "probe"))
    probe = MemoryProbe.from_environment()
    assert probe is not None and not probe.trace

    class Kept:
        pass

    first = json.loads(probe.dump().read_text())
    kept = [Kept() for _ in range(5000)]
    second = json.loads(probe.dump().read_text())
    assert (first["n"], second["n"]) == (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.1.json", "probe.2.json"]
    assert second["objects_by_type"].get(Kept.__qualname__) == len(kept)
    assert Kept.__qualname__ not in first["objects_by_type"]
    # (the test's own objects come and go meanwhile: a few either way)
    assert second["allocated_blocks"] - first["allocated_blocks"] >= 0.9 * len(kept)
    assert second["gc_objects"] - first["gc_objects"] >= 0.9 * len(kept)
    assert "MainThread" in second["threads"]
    assert second["vmrss_kb"] > 0
    assert second["pymalloc"]["arenas_allocated_current"] >= 1
    assert second["pymalloc"]["bytes_in_allocated_blocks"] > 0
    if second["mallinfo2"] is not None:  # glibc
        assert second["mallinfo2"]["uordblks"] > 0
    assert "traced_bytes" not in second
    assert not list(tmp_path.glob("*.snapshot"))
    del kept


def test_a_traced_probe_writes_a_snapshot_that_names_the_allocation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc already runs in this process")
    monkeypatch.setenv(TRACEMALLOC_ENV, str(tmp_path / "traced"))
    probe = MemoryProbe.from_environment()
    try:
        assert probe is not None and probe.trace and tracemalloc.is_tracing()
        kept = [bytearray(1000) for _ in range(200)]  # the line the snapshot must name
        line = sys._getframe().f_lineno - 1
        figures = json.loads(probe.dump().read_text())
        snapshot = tracemalloc.Snapshot.load(str(tmp_path / "traced.1.snapshot"))
    finally:
        tracemalloc.stop()
    assert figures["traced_bytes"] >= 200 * 1000
    here = [stat for stat in snapshot.statistics("lineno")
            if stat.traceback[0].filename == __file__ and stat.traceback[0].lineno == line]
    assert here and here[0].size >= 200 * 1000 and here[0].count >= 200
    del kept
