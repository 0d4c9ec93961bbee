"""Shared fixtures: the libvirt corpus (fetched and cached at test time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kit.corpus import corpus_root


@pytest.fixture(scope="session")
def libvirt_corpus() -> Path:
    """Root of libvirt 9.0.0's source corpus (tests/, docs/), fetched on first use."""
    try:
        root = corpus_root(fetch=True)
    except Exception as exc:  # noqa: BLE001 - report any fetch failure as one clear failure
        pytest.fail(f"cannot fetch libvirt's test corpus: {exc}")
    assert root is not None
    return root
