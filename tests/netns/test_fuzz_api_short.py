"""A short run of the API fuzzer (``make fuzz`` runs 100,000 requests): a few thousand hostile
requests to a real virtnetd in network and mount namespaces of the run's own, with no answer
>= 500, no traceback, no error in the daemon's output and no file created or removed outside
its state directory (tests.kit.fuzz_api)."""

from __future__ import annotations

import io
import os
import shutil

import pytest

from tests.kit import fuzz_api

pytestmark = pytest.mark.netns

REQUESTS = 3000
SEED = 1
BOUND_S = 600.0  # a bound for a run gone wrong, not a measure: the run takes ~20 s here


def test_a_short_api_fuzz_run_finds_nothing() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network and mount namespaces)")
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    report = fuzz_api.run(REQUESTS, seed=SEED, max_seconds=BOUND_S)
    shown = io.StringIO()
    fuzz_api.print_findings(report, out=shown)
    assert report.requests == REQUESTS and not report.timed_out, shown.getvalue()
    assert report.findings == [], shown.getvalue()
    # it reached the engine, not only the lookups
    assert report.statuses["200"] > 0 and report.statuses["201"] > 0, shown.getvalue()
