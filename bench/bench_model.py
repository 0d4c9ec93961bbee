"""Benchmark: parse + validate + format of every network definition in libvirt's corpus.

Each input file (networkxml2xmlin, networkxml2confdata, networkxml2xmlupdatein and
networkxml2firewalldata, <network> documents only) goes through the whole definition path in one
process, many rounds; a file libvirt refuses is timed up to its refusal. Prints the median time
per file in microseconds, the slowest files, and the total of the medians.

Run: .venv/bin/python bench/bench_model.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.kit

from tests.kit.corpus import corpus_root  # noqa: E402
from virtnet.errors import XMLParseError  # noqa: E402
from virtnet.spec.validate import validate  # noqa: E402
from virtnet.spec.xml.format import format_network  # noqa: E402
from virtnet.spec.xml.parse import parse_network  # noqa: E402

INPUT_DIRS = (
    "tests/networkxml2xmlin",
    "tests/networkxml2confdata",
    "tests/networkxml2xmlupdatein",
    "tests/networkxml2firewalldata",
)
TARGET_US = 1000.0  # the budget per file for parse + validate + format


def corpus_inputs(root: Path) -> list[tuple[str, bytes]]:
    files = []
    for directory in INPUT_DIRS:
        for path in sorted((root / directory).glob("*.xml")):
            data = path.read_bytes()
            if b"<network" in data:  # update snippets are fragments, not definitions
                files.append((f"{path.parent.name}/{path.name}", data))
    return files


def one_pass(data: bytes, name: str, clock=time.perf_counter_ns) -> tuple[int, int, int]:
    """Run the definition path once; return the nanoseconds spent in parse, validate and
    format (0 for stages not reached)."""
    start = clock()
    try:
        net = parse_network(data, source=name)
    except XMLParseError:
        return clock() - start, 0, 0
    parsed = clock()
    problems = validate(net)
    validated = clock()
    if problems:
        return parsed - start, validated - parsed, 0
    format_network(net)
    return parsed - start, validated - parsed, clock() - validated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="rounds per file (default 200)")
    args = parser.parse_args(argv)
    root = corpus_root(fetch=True)
    if root is None:
        print("bench_model: libvirt corpus not available", file=sys.stderr)
        return 1
    files = corpus_inputs(root)
    for name, data in files:  # warm up imports and caches
        one_pass(data, name)
    stages = ("parse", "validate", "format")
    timings: dict[str, list[tuple[int, int, int]]] = {name: [] for name, _ in files}
    for _ in range(args.rounds):
        for name, data in files:
            timings[name].append(one_pass(data, name))
    medians = {
        name: statistics.median(sum(sample) for sample in samples) / 1000.0
        for name, samples in timings.items()
    }
    stage_medians = [
        statistics.median(
            statistics.median(sample[i] for sample in samples) for samples in timings.values()
        ) / 1000.0
        for i in range(len(stages))
    ]
    overall = statistics.median(medians.values())
    print(f"parse+validate+format: {len(files)} corpus files x {args.rounds} rounds")
    print(f"median per file: {overall:.1f} us  (budget {TARGET_US:.0f} us)")
    print("  by stage (median of per-file medians): " + ", ".join(
        f"{stage} {value:.1f} us" for stage, value in zip(stages, stage_medians)))
    print(f"slowest file:    {max(medians.values()):.1f} us")
    for name, value in sorted(medians.items(), key=lambda item: -item[1])[:5]:
        print(f"  {value:8.1f} us  {name}")
    print(f"total of medians (one pass over the corpus): {sum(medians.values()) / 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
