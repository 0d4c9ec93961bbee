"""Fuzz virtnet's input handling: ``make fuzz`` (100,000 inputs by default).

    .venv/bin/python bench/fuzz.py [--count N] [--seed S] [--seeds K]

Definitions (parse, validate, defaults, format, the dnsmasq and nftables renderers, net-update)
and command lines (the client's splitter, the click CLI for read-only verbs) from a seed corpus
of the hypothesis strategies, mutated with hostile values; see tests.kit.fuzz. Prints
the outcomes and every finding (an exception that is not a VirtnetError, an input slower than
2 s, a rendered line a reader would cut differently); exits 1 if there is a finding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.kit

from tests.kit.fuzz import fuzz  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="inputs to run")
    parser.add_argument("--seed", type=int, default=1, help="random seed (replayable)")
    parser.add_argument("--seeds", type=int, default=300, help="seed definitions to draw")
    options = parser.parse_args()
    report = fuzz(options.count, seed=options.seed, seeds=options.seeds,
                  progress=lambda r: print(f"... {r.inputs} inputs, {len(r.findings)} "
                                           f"findings, {r.seconds:.0f} s", flush=True))
    print(report.summary())
    for finding in report.findings[:20]:
        print(f"\n--- {finding.stage}\n{finding.error}\ninput: {finding.input[:2000]}")
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
