"""Shared test fixtures: the path to the real-format samples (tests using it skip when absent)."""

from pathlib import Path

import pytest

REAL_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"


@pytest.fixture
def real_fixtures():
    """``../shared/fixtures/real`` when this checkout sits beside it; skip the test otherwise."""
    if not REAL_FIXTURES.is_dir():
        pytest.skip(f"real-format fixtures not present at {REAL_FIXTURES}")
    return REAL_FIXTURES


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """A tiny synthetic benchmark (6 train, 4 test, 2 Helen images) generated once per test session."""
    from densereg.data import synth

    root = tmp_path_factory.mktemp("synth") / "bench"
    synth.generate(root, seed=3, counts={"train": 6, "test": 4, "helen": 2}, workers=1, progress=False)
    return root
