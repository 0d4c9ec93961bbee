"""Fuzz virtnetd's API: ``make fuzz`` (100,000 requests by default, after bench/fuzz.py).

    .venv/bin/python bench/fuzz_api.py [--count N] [--seed S] [--max-seconds T] [--progress]

Root only: a real virtnetd runs in network and mount namespaces the run creates and that go
away with it (see tests.kit.fuzz_api). Hostile identifiers for every endpoint that
takes one, malformed and mistyped bodies; seeded (the same seed sends the same requests,
and each finding names its request's number and bytes), bounded in count and time. Prints
the outcomes and the findings (an answer >= 500, an error that is not the JSON error body, a
traceback or an error in the daemon's output, a file created or removed outside the state
directory); exits 1 if there is a finding or the time ran out first.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.kit

from tests.kit.fuzz_api import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
