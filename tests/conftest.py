"""Shared fixtures: the libvirt corpus (fetched and cached at test time).

The test kit is the package ``tests.kit`` of this checkout, outside the installed one: pytest
finds it through its ``pythonpath`` setting, and every Python a test starts (a scenario script,
a daemon) finds it through PYTHONPATH, set here once for the whole run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.kit.corpus import corpus_root

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        part for part in (_ROOT, os.environ.get("PYTHONPATH")) if part)


@pytest.fixture(scope="session")
def libvirt_corpus() -> Path:
    """Root of libvirt 9.0.0's source corpus (tests/, docs/), fetched on first use."""
    try:
        root = corpus_root(fetch=True)
    except Exception as exc:  # noqa: BLE001 - report any fetch failure as one clear failure
        pytest.fail(f"cannot fetch libvirt's test corpus: {exc}")
    assert root is not None
    return root
