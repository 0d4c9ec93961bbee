"""A short, bounded run of the fuzzing harness (tests.kit.fuzz; ``make fuzz`` runs
100,000 inputs): a few thousand hostile definitions and command lines, no finding.

Also checks that the harness can find something: its oracles reject a renderer that lets a
newline through, and an exception that is not a VirtnetError is reported, not swallowed.
"""

from __future__ import annotations

import random

import pytest

from tests.kit import fuzz as harness

SHORT_RUN = 3000


def test_short_fuzz_run_has_no_finding() -> None:
    report = harness.fuzz(SHORT_RUN, seed=11, seeds=60)
    assert report.inputs == SHORT_RUN
    details = "\n".join(f"{f.short()}\n{f.input[:500]}" for f in report.findings[:5])
    assert report.findings == [], report.summary() + "\n" + details
    # the inputs reached every stage, not only the parser
    outcomes = report.outcomes
    assert outcomes["refused at parse"] and outcomes["refused at validate"]
    assert sum(v for k, v in outcomes.items() if k.startswith("accepted")) > SHORT_RUN // 10
    assert sum(v for k, v in outcomes.items() if k.startswith("cli:")) > SHORT_RUN // 20


def test_oracles_catch_a_line_break(monkeypatch: pytest.MonkeyPatch) -> None:
    import virtnet.render.dnsmasq

    from virtnet.spec.xml.parse import parse_network

    net = parse_network("<network><name>n</name><forward mode='nat'/><bridge name='br0'/>"
                        "<ip address='10.5.0.1' prefix='24'/></network>", source="test")
    harness.check_dnsmasq(net)
    monkeypatch.setattr(virtnet.render.dnsmasq, "render_conf",
                        lambda net, paths=None: "interface=br0\ndhcp-range=1\x0b2\n")
    with pytest.raises(AssertionError, match="control character"):
        harness.check_dnsmasq(net)


def test_mutations_are_reproducible() -> None:
    seed_text = "<network><name>n</name><bridge name='br0'/></network>"
    first = [harness.mutate(seed_text, random.Random(5)) for _ in range(3)]
    again = [harness.mutate(seed_text, random.Random(5)) for _ in range(3)]
    assert first == again
