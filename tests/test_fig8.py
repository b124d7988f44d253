"""Fig. 8: per-face rows (GT dense map from the fitting, errors, misses) and the drawn PNG."""

import numpy as np
import pytest

from benchmarks.experiments import fig8
from densereg.data import datasets
from densereg.readout.forward import UVMap


class FakeModel:
    """Returns the GT landmarks shifted by ``shift`` px (or None: a miss) and an all-background UV map."""

    def __init__(self, shift, miss=False):
        self.shift, self.miss, self.truth = shift, miss, None

    def uv(self, image):
        h, w = image.shape[:2]
        nan = np.full((h, w), np.nan)
        return UVMap(u=nan, v=nan, u_q=nan, v_q=nan, fg_prob=np.zeros((h, w)), mask=np.zeros((h, w), bool))

    def landmarks(self, image, box):
        return None if self.miss else self.truth + self.shift


@pytest.fixture
def samples(tiny_synth):
    return datasets.load_dataset("300w", tiny_synth, "test")[:2]


def test_rows_carry_gt_uv_and_the_errors_of_both_methods(samples):
    model = FakeModel(np.array([3.0, 0.0]))
    rows = []
    for s in samples:   # the fake model answers with this sample's truth
        model.truth = s.landmarks
        rows += fig8.face_rows([s], model, lambda image, shape: shape - np.array([3.0, 0.0]), "outer-eye")
    for row, s in zip(rows, samples):
        assert row["gt_dense"] is not None and row["gt_dense"].mask.any()   # synthetic faces have fittings
        assert row["errors"]["DenseReg+MDM"] == pytest.approx(0.0, abs=1e-12)
        eye = np.linalg.norm(s.landmarks[36] - s.landmarks[45])
        assert row["errors"]["DenseReg"] == pytest.approx(3.0 / eye, rel=1e-6)


def test_a_miss_is_scored_inf_and_drawn_as_missed(samples, tmp_path):
    model = FakeModel(0.0, miss=True)
    rows = fig8.face_rows(samples, model, lambda image, shape: shape, "outer-eye")
    assert all(np.isinf(v) for r in rows for v in r["errors"].values())
    rows[0]["gt_dense"] = None   # a real 300-W image: no fitting, GT panels say so
    path = fig8.draw(tmp_path / "fig8.png", rows, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))
