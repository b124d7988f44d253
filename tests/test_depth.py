"""Monocular depth (Sec. 4.5, Fig. 9): the depth ground truth, its error measures, the 3D renderings, the
library's depth read-out and the ``fig9`` command end to end on a tiny synthetic set."""

import csv
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import depth_metrics, records as provenance, report, verdicts
from benchmarks.experiments import depth, fig9
from densereg.data import datasets, formats, groundtruth
from densereg.geometry import rasterize as R
from densereg.geometry.templates import template_for


def _duck(verts, tris, uv):
    return SimpleNamespace(vertices=verts, triangles=tris, uv=uv,
                           part_at=lambda u, v: np.ones(np.shape(u), np.uint8))


def _hemisphere(radius=20.0, centre=(32.0, 32.0), n=48):
    """A finely tessellated hemisphere facing the camera (z = sqrt(R² − r²), larger = closer)."""
    g = np.linspace(-1, 1, n)
    x, y = np.meshgrid(g, g)
    keep = x ** 2 + y ** 2 <= 1.0
    index = np.full(x.shape, -1)
    index[keep] = np.arange(keep.sum())
    verts = np.stack([centre[0] + radius * x[keep], centre[1] + radius * y[keep],
                      radius * np.sqrt(np.clip(1 - x[keep] ** 2 - y[keep] ** 2, 0, 1))], -1)
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])
    tris = tris[(tris >= 0).all(1)]
    return verts, tris, np.stack([x[keep] / 2 + 0.5, y[keep] / 2 + 0.5], -1)


def test_depth_gt_is_the_rendered_surfaces_z_normalised_to_the_face():
    verts, tris, uv = _hemisphere()
    gt = R.render_gt(_duck(verts, tris, uv), verts, 64, 64)
    rows, cols = np.nonzero(gt.mask)
    z = np.sqrt(np.clip(20.0 ** 2 - (cols - 32.0) ** 2 - (rows - 32.0) ** 2, 0, None))   # the sphere at each pixel
    expected = (z - z.min()) / (z.max() - z.min())
    # Tessellation error only: chords of a 48×48 grid; the rim (steep) is where it is largest.
    inner = (cols - 32.0) ** 2 + (rows - 32.0) ** 2 < 16.0 ** 2
    assert np.abs(gt.depth[rows, cols] - expected)[inner].max() < 0.02
    assert np.abs(gt.depth[rows, cols] - expected).mean() < 0.02
    assert gt.depth[32, 32] == pytest.approx(1.0, abs=0.01)    # the closest point is 1


def test_depth_gt_is_z_buffered_like_the_uv():
    # Two squares overlapping at columns 10..19: the nearer one (z = 9) hides the farther one (z = 1).
    far = np.array([[2.0, 2.0, 1.0], [20.0, 2.0, 1.0], [20.0, 20.0, 1.0], [2.0, 20.0, 1.0]])
    near = far + [8.0, 0.0, 8.0]
    verts = np.concatenate([far, near])
    tris = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    uv = np.array([[0.1, 0.1]] * 4 + [[0.9, 0.9]] * 4)
    gt = R.render_gt(_duck(verts, tris, uv), verts, 24, 32)
    overlap = gt.mask.copy()
    overlap[:, :10] = False
    overlap[:, 20:] = False
    assert overlap.any()
    assert (gt.depth[overlap] == 1.0).all() and np.allclose(gt.u[overlap], 0.9)   # depth and UV: the near square
    alone = gt.mask.copy()
    alone[:, 10:] = False
    assert (gt.depth[alone] == 0.0).all() and np.allclose(gt.u[alone], 0.1)


def test_dataset_depth_gt_matches_the_posed_fittings_vertices(tiny_synth):
    sample = datasets.load_dataset("300w", tiny_synth, "test")[0]
    gt = groundtruth.dense_gt(sample)
    fitting = formats.read_fitting(sample.extras["fitting"])
    template = template_for(fitting.model)
    verts = groundtruth.posed_vertices(fitting, template, gt.mask.shape[0])
    raw = R.rasterize(verts, template.triangles, template.uv, *gt.mask.shape).depth
    seen = R.visible_vertices(verts, raw, tol=0.5, margin=1)
    cols, rows = np.round(verts[seen, 0]).astype(int), np.round(verts[seen, 1]).astype(int)
    lo, hi = np.nanmin(raw), np.nanmax(raw)
    expected = (verts[seen, 2] - lo) / (hi - lo)
    # A visible vertex lies within half a pixel of its pixel centre: the depth there differs by the slope.
    assert seen.sum() > 100 and np.median(np.abs(gt.depth[rows, cols] - expected)) < 0.01
    assert np.nanargmax(np.where(gt.mask, gt.depth, np.nan)) == np.nanargmax(raw)   # 1 = closest to the camera


def test_depth_errors_absolute_and_scale_and_shift_invariant():
    gt = np.array([[0.0, 0.5], [1.0, np.nan]])
    mask = np.isfinite(gt)
    exact = depth_metrics.depth_errors(2 * gt + 0.3, gt, mask)   # right shape, wrong scale and offset
    assert np.allclose(exact["ssi"], 0.0) and np.allclose(exact["abs"], [0.3, 0.8, 1.3])
    missed = depth_metrics.depth_errors(np.array([[0.1, np.nan], [0.8, 0.0]]), gt, mask)
    assert missed["abs"][1] == np.inf and np.allclose(missed["abs"][[0, 2]], [0.1, 0.2])
    s = depth_metrics.summarise(missed["abs"])
    assert s["coverage"] == pytest.approx(2 / 3) and s["mean"] == pytest.approx(0.15)
    assert np.allclose(depth_metrics.flat_errors(gt, mask), [0.5, 0.0, 0.5])
    assert depth_metrics.ssi_fit(np.full(3, 0.4), np.array([0.0, 0.5, 1.0])) == (0.0, 0.5)


def test_relief_shades_by_slope_and_leaves_depth_steps_open():
    mask = np.ones((3, 3), bool)
    (rows, cols), tris = fig9.pixel_mesh(mask)
    assert rows.size == 9 and len(tris) == 8
    flat = fig9.relief(np.full((20, 20), 0.5), np.ones((20, 20), bool), 10.0, yaw=0.0)
    inside = flat[2:-2, 2:-2, 0]
    assert np.ptp(inside) < 1e-6 and inside.mean() < 1.0                # uniform shade, not background
    step = np.full((20, 20), 0.1)
    step[:, 10:] = 0.9                                                  # a jump of 0.8 of the range
    img = fig9.relief(step, np.ones((20, 20), bool), 10.0, yaw=0.0)
    assert (img[5:15, 9:11] == fig9.BACKGROUND).any()                   # no curtain bridges the step
    assert fig9.view_yaw(np.tile(np.linspace(0, 1, 20), (20, 1)), np.ones((20, 20), bool), 10.0) == fig9.YAW


@pytest.fixture(scope="module")
def depth_checkpoint(tiny_synth, tmp_path_factory):
    from densereg.nn import train

    cfg = train.make_config("tiny", root=str(tiny_synth), iterations=1, depth=True)
    return train.train(cfg, tmp_path_factory.mktemp("depth") / "run", progress=False)


def test_library_and_infer_give_depth_when_the_model_has_it(depth_checkpoint, tmp_path):
    from densereg import DenseReg, infer

    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    est = DenseReg.load(depth_checkpoint, device="cpu").uv(image)
    assert est.depth is not None and est.depth.shape == (40, 48)
    assert np.isnan(est.depth[~est.mask]).all() and np.isfinite(est.depth[est.mask]).all()
    path = tmp_path / "face.png"
    formats.write_image(path, image)
    assert infer.main([str(path), "--checkpoint", str(depth_checkpoint), "--out", str(tmp_path / "out")]) == 0
    with np.load(tmp_path / "out" / "face.npz") as f:
        np.testing.assert_array_equal(f["depth"], est.depth)


def test_evaluate_scores_depth_and_draws_the_figure(depth_checkpoint, tiny_synth, tmp_path):
    samples = datasets.load_dataset("300w", tiny_synth, "test")[:2]
    summary, per_image, kept = depth.evaluate(depth_checkpoint, samples, tiny_synth, figure=(1,), progress=False)
    assert [r["name"] for r in per_image] == [s.name for s in samples] and set(kept) == {1}
    assert summary["n_images"] == 2 and 0 < float(summary["depth_coverage"]) <= 1
    assert float(summary["depth_ssi_mean"]) <= float(summary["depth_abs_mean"]) + 1e-4   # the fit can only help
    panels = depth.figure_panels(samples, kept)
    assert panels[0]["gt"].shape == panels[0]["est"].shape and panels[0]["gt"].shape[2] == 3
    assert fig9.draw_figure(tmp_path / "fig9.png", panels, "test").stat().st_size > 1000


@pytest.mark.slow   # trains two tiny networks: ~45 s on the shared 2-core machine
def test_fig9_command_scores_both_models_and_the_report_judges_the_claim(tiny_synth, tmp_path):
    results = tmp_path / "results"
    args = ["--root", str(tiny_synth), "--preset", "tiny", "--runs", str(tmp_path / "runs"), "--results",
            str(results), "--figure-faces", "2", "--no-progress"]
    assert depth.main(args) == 0    # no model without depth in the cache: the depth model alone, said so
    rows = list(csv.DictReader((results / "fig9_runs.csv").open()))
    assert [r["model"] for r in rows] == ["DenseReg+depth"]
    assert depth.main(args + ["--baseline", "train"]) == 0
    rows = {r["model"]: r for r in csv.DictReader((results / "fig9_runs.csv").open())}
    assert set(rows) == {"DenseReg", "DenseReg+depth"}
    d, plain = rows["DenseReg+depth"], rows["DenseReg"]
    assert "+depth" in d["artefacts"] and "+depth" not in plain["artefacts"] and plain["depth_abs_mean"] == ""
    assert 0 <= float(d["depth_abs_mean"]) and 0 < float(d["depth_coverage"]) <= 1 and int(d["n_images"]) == 4
    assert (results / "figures" / "fig9_synthetic.png").stat().st_size > 1000
    assert len(list(csv.DictReader((results / d["errors"]).open()))) == 4
    tables, figures = report.build_report(results, report.DEFAULT_PAPER, None)
    assert {l["row"] for l in tables["fig9"] if l["ours"]} == {"DenseReg", "DenseReg+depth"}
    judged = {v.claim.key: v for v in verdicts.evaluate(tables)}
    assert judged["depth_no_harm"].verdict != verdicts.MISSING
    assert results / "figures" / "fig9_synthetic.png" in figures


def test_depth_claim_fails_when_depth_costs_more_than_the_seed_spread(tmp_path):
    results = tmp_path / "results"
    rows = [{"model": m, "landmark_auc": auc, "uv_auc": 0.5, "source": "synthetic", "preset": "cpu", "seed": s,
             "artefacts": f"densereg={s:012d}/cpu/K10" + ("+depth" if m.endswith("depth") else ""),
             "date": "2026-11-30T08:00:00+00:00"}
            for m, aucs in (("DenseReg", (0.50, 0.51, 0.49)), ("DenseReg+depth", (0.40, 0.41, 0.39)))
            for s, auc in enumerate(aucs)]
    provenance.write_csv(results / "fig9_runs.csv", rows, provenance.SCHEMAS["depth"].columns)
    tables, _ = report.build_report(results, report.DEFAULT_PAPER, None)
    judged = {v.claim.key: v for v in verdicts.evaluate(tables)}["depth_no_harm"]
    assert judged.verdict == verdicts.FAILS
    uv = next(c for c in judged.comparisons if c.metric == "uv_auc")
    assert uv.verdict == verdicts.HOLDS     # equal UV AUC: "at least as good" holds


def test_the_comparison_is_over_the_seeds_both_models_have(tmp_path):
    results = tmp_path / "results"
    aucs = {"DenseReg": (0.30, 0.30, 0.60), "DenseReg+depth": (0.29, 0.31)}   # no depth model of seed 2 yet
    rows = [{"model": m, "landmark_auc": auc, "uv_auc": 0.5, "source": "synthetic", "preset": "cpu", "seed": s,
             "artefacts": f"densereg={s:012d}/cpu/K10" + ("+depth" if m.endswith("depth") else ""),
             "date": "2026-11-30T08:00:00+00:00"} for m, values in aucs.items() for s, auc in enumerate(values)]
    provenance.write_csv(results / "fig9_runs.csv", rows, provenance.SCHEMAS["depth"].columns)
    tables, _ = report.build_report(results, report.DEFAULT_PAPER, None)
    at = {(l["row"], l["metric"]): l for l in tables["fig9"]}
    assert at[("DenseReg", "landmark_auc")]["n_seeds"] == 2 and float(at[("DenseReg", "landmark_auc")]["ours"]) == 0.3
    assert at[("DenseReg, all seeds", "landmark_auc")]["n_seeds"] == 3    # shown, but not what is compared
    judged = {v.claim.key: v for v in verdicts.evaluate(tables)}["depth_no_harm"]
    assert judged.verdict == verdicts.HOLDS and judged.comparisons[0].seeds == "2/2"
