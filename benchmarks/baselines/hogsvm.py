"""The ``hog-svm`` detector (King's max-margin object detection, HOG + linear SVM) and dlib's 68-point predictor.

    python -m benchmarks.baselines.hogsvm train --root ROOT --out PATH [--max-images N]
    python -m benchmarks.baselines.hogsvm evaluate --root ROOT [--model PATH] [--split test] [--adjust-threshold T]

The paper's [23] is dlib's frontal face detector: HOG features scanned by linear filters trained with
max-margin object detection (MMOD, King 2015), one filter per head pose, detections of all filters merged by
non-maximum suppression. For real images we use that detector as shipped (``dlib.get_frontal_face_detector``).
Synthetic faces need their own, so :func:`train_hog_detector` trains the same kind of detector with
``dlib.train_simple_object_detector`` on the active training split: like dlib's, it has one filter per pose
group (:data:`COMPONENTS`, grouped by a yaw proxy read off the landmarks, :func:`yaw_proxy`), because a single
HOG filter cannot cover faces from frontal to profile.

:class:`DlibShapePredictor` wraps dlib's 68-point regression-tree predictor shipped in
``face_recognition_models`` (trained on real 300-W faces): the tool many users would reach for instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.baselines.artefacts import ArtefactError
from densereg.data.formats import atomic_write_bytes

ARTEFACT_FORMAT = 1  # bump when the stored .npz changes


def build_command(out, root="ROOT"):
    """The command line that trains the detector stored at ``out``."""
    return f"python -m benchmarks.baselines.hogsvm train --root {root} --out {out}"


def _dlib():
    try:
        import dlib
    except ImportError as e:  # an optional dependency of the harness
        raise ImportError("the hog-svm detector needs dlib: pip install dlib-bin") from e
    return dlib


# ----------------------------------------------------------------------------------------------------------------
# Pose groups


def yaw_proxy(points):
    """Where the nose tip sits across the jaw, in [-1, 1]: 0 frontal, ±1 profile (sign = side in the image).

    The 17 jaw points (0-16) and the nose tip (30) are projected on the outer-eye axis (36 → 45), which
    removes in-plane rotation; the value is ``2·(nose − jaw_min)/(jaw_max − jaw_min) − 1``, clipped.
    """
    points = np.asarray(points, dtype=np.float64)
    axis = points[45] - points[36]
    norm = np.linalg.norm(axis)
    axis = axis / norm if norm > 0 else np.array([1.0, 0.0])
    jaw = points[:17] @ axis
    span = jaw.max() - jaw.min()
    if span <= 0:
        return 0.0
    return float(np.clip(2.0 * (points[30] @ axis - jaw.min()) / span - 1.0, -1.0, 1.0))


# Pose groups: one HOG filter each. "left"/"right" say where the nose tip sits in the image.
COMPONENTS = ("frontal", "left", "right")


def component_of(yaw, frontal_yaw):
    """The :data:`COMPONENTS` entry of a face with :func:`yaw_proxy` value ``yaw``."""
    if abs(yaw) < frontal_yaw:
        return "frontal"
    return "left" if yaw < 0 else "right"


# ----------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class HogConfig:
    """Settings of :func:`train_hog_detector` (dlib ``simple_object_detector_training_options`` and ours).

    Attributes:
        window: side (px) of the square detection window. Synthetic faces are 55-120 px wide at 256×256; a
            64 px window sees the smallest without upsampling the image (dlib's own face detector uses 80).
        C: SVM regularisation; dlib's face examples use 5 (C = 1 found no face on held-out synthetic images).
        epsilon: the trainer's stopping tolerance (dlib's default).
        frontal_yaw: faces with ``|yaw_proxy| <`` this train the frontal filter (with left-right flips); the
            others train the side filters, each also on the mirror images of the opposite side.
        max_images: training images used (a seeded random subset; None = all): 400 keeps training near two
            minutes on a busy 2-core machine (about 1 minute when it is idle).
        max_face: training images whose face box is larger than this many windows are downscaled to it
            (real 300-W images are up to 3000 px; the pyramid makes detection scale-free anyway).
        seed: seed of the subset.
        num_threads: dlib training threads.
    """

    window: int = 64
    C: float = 5.0
    epsilon: float = 0.01
    frontal_yaw: float = 0.3
    max_images: int | None = 400
    max_face: float = 2.0
    seed: int = 0
    num_threads: int = 2


def square_box(box):
    """The square ``(x0, y0, x1, y1)`` box of side ``max(w, h)`` with the same centre as ``box``.

    dlib's detector has one fixed window shape, so its training boxes must share an aspect ratio.
    """
    box = np.asarray(box, dtype=np.float64)
    centre = (box[:2] + box[2:]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) / 2
    return np.concatenate([centre - half, centre + half])


def _rectangle(box):
    dlib = _dlib()
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return dlib.rectangle(x0, y0, x1, y1)


def _training_pairs(samples, config):
    """``{component: [(image, square box), ...]}``: side faces also go, mirrored, to the opposite side."""
    import cv2

    groups = {name: [] for name in COMPONENTS}
    for sample in samples:
        image = sample.image()
        box = square_box(sample.box)
        side = box[2] - box[0]
        limit = config.max_face * config.window
        if side > limit:  # large real faces: shrink the whole image (faster training, same detector)
            scale = limit / side
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            box = box * scale
        image = np.ascontiguousarray(image)
        name = component_of(yaw_proxy(sample.landmarks), config.frontal_yaw)
        groups[name].append((image, box))
        if name != "frontal":
            width = image.shape[1]
            mirrored = np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]])
            groups["right" if name == "left" else "left"].append((np.ascontiguousarray(image[:, ::-1]), mirrored))
    return groups


def train_hog_detector(samples, out_path, config=None, progress=True):
    """Train one HOG+SVM filter per pose group on ``samples`` and store them at ``out_path`` (``.npz``).

    Faces whose square box is smaller than the window cannot be matched by the window at scale 1 and are
    left out (their number is recorded). Samples without landmarks are skipped (the pose group needs them).

    Args:
        samples: ``datasets.Sample`` list of the active training split.
        out_path: the artefact to write (atomically).
        config: :class:`HogConfig` (defaults if None).
        progress: print one line per trained filter.

    Returns:
        The :class:`HogSvmDetector` of the trained filters.

    Raises:
        ValueError: no usable training face, or a pose group without any.
    """
    dlib = _dlib()
    config = config or HogConfig()
    annotated = [s for s in samples if s.landmarks is not None]
    fits = [float(np.ptp(square_box(s.box)[0::2])) >= config.window for s in annotated]
    usable = [s for s, ok in zip(annotated, fits) if ok]
    n_too_small = len(annotated) - len(usable)
    if config.max_images is not None and len(usable) > config.max_images:
        keep = np.random.default_rng(config.seed).choice(len(usable), size=config.max_images, replace=False)
        usable = [usable[i] for i in sorted(keep)]
    if not usable:
        raise ValueError(f"no annotated training face with a box side >= {config.window} px "
                         f"({n_too_small} smaller ones)")
    start = time.perf_counter()
    groups = _training_pairs(usable, config)
    blobs, counts = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in COMPONENTS:
            pairs = groups[name]
            if not pairs:
                raise ValueError(f"no training face in pose group {name!r}; lower frontal_yaw or add images")
            options = dlib.simple_object_detector_training_options()
            options.detection_window_size = config.window * config.window  # an area in dlib
            options.C, options.epsilon, options.num_threads = config.C, config.epsilon, config.num_threads
            options.add_left_right_image_flips = name == "frontal"  # side groups got their mirrors above
            options.upsample_limit = 0  # faces are already at least one window wide
            options.be_verbose = False
            t = time.perf_counter()
            detector = dlib.train_simple_object_detector([p[0] for p in pairs],
                                                         [[_rectangle(p[1])] for p in pairs], options)
            path = os.path.join(tmp, f"{name}.svm")
            detector.save(path)
            blobs[name] = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
            counts[name] = len(pairs)
            if progress:
                print(f"hog-svm: {name} filter on {len(pairs)} faces in {time.perf_counter() - t:.1f} s",
                      file=sys.stderr)
    info = {"format": ARTEFACT_FORMAT, "config": asdict(config), "components": list(COMPONENTS),
            "faces_per_component": counts, "n_train": len(usable), "n_too_small": n_too_small,
            "train_seconds": round(time.perf_counter() - start, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    buffer = io.BytesIO()
    np.savez(buffer, info=np.array(json.dumps(info)), **{f"svm_{k}": v for k, v in blobs.items()})
    atomic_write_bytes(out_path, buffer.getvalue())
    return HogSvmDetector(out_path)


# ----------------------------------------------------------------------------------------------------------------
# Detection


class HogSvmDetector:
    """HOG + linear SVM face detector: dlib's built-in frontal face detector, or filters we trained.

    Args:
        path: an artefact of :func:`train_hog_detector`; None for ``dlib.get_frontal_face_detector()``.
        adjust_threshold: added to the SVM's decision threshold; negative values return weaker detections
            too (higher recall, more false positives).

    Raises:
        ArtefactError: ``path`` is missing or not a detector artefact (the message names the build command).
    """

    def __init__(self, path=None, adjust_threshold=0.0):
        dlib = _dlib()
        self.path, self.adjust_threshold = path, float(adjust_threshold)
        if path is None:
            self.detectors, self.info = [dlib.get_frontal_face_detector()], {"builtin": True}
            return
        path = Path(path)
        command = build_command(path)
        if not path.is_file():
            raise ArtefactError(path, "no trained hog-svm detector here", command)
        try:
            with np.load(path, allow_pickle=False) as data:
                self.info = json.loads(str(data["info"]))
                blobs = [data[f"svm_{name}"].tobytes() for name in self.info["components"]]
        except Exception as e:  # truncated / foreign files raise many types; all mean "rebuild it"
            raise ArtefactError(path, f"not a readable hog-svm detector ({type(e).__name__}: {e})", command) from e
        if self.info.get("format") != ARTEFACT_FORMAT:
            raise ArtefactError(path, f"detector format {self.info.get('format')!r}, expected {ARTEFACT_FORMAT}",
                                command)
        self.detectors = []
        with tempfile.TemporaryDirectory() as tmp:  # dlib loads detectors from files only
            for name, blob in zip(self.info["components"], blobs):
                file = os.path.join(tmp, f"{name}.svm")
                Path(file).write_bytes(blob)
                self.detectors.append(dlib.fhog_object_detector(file))

    def detect(self, image, upsample=0):
        """Faces in ``image`` (``H×W×3`` uint8 RGB), strongest first.

        Args:
            image: the image.
            upsample: times the image is doubled before scanning (finds faces smaller than the window).

        Returns:
            List of ``(box, score)``: ``box`` a ``(4,)`` float ``(x0, y0, x1, y1)`` array (dlib's inclusive
            corner pixels), ``score`` the SVM margin (above ``adjust_threshold``), sorted by decreasing score.
        """
        dlib = _dlib()
        image = np.ascontiguousarray(image, dtype=np.uint8)
        rects, scores, _ = dlib.fhog_object_detector.run_multiple(self.detectors, image, int(upsample),
                                                                   self.adjust_threshold)
        found = [(np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64), float(s))
                 for r, s in zip(rects, scores)]
        return sorted(found, key=lambda d: -d[1])

    __call__ = detect


# ----------------------------------------------------------------------------------------------------------------
# dlib's 68-point regression-tree shape predictor


def shape_predictor_path():
    """``shape_predictor_68_face_landmarks.dat`` of the installed ``face_recognition_models``.

    The package is located without importing it: its ``__init__`` needs ``pkg_resources``, which current
    setuptools no longer ships.

    Raises:
        FileNotFoundError: the package or the model file is missing.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dlib's 68-point shape predictor needs the face_recognition_models package: "
                                "pip install face-recognition-models")
    path = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed face_recognition_models package")
    return path


class DlibShapePredictor:
    """dlib's 68-point ensemble-of-regression-trees predictor (Kazemi & Sullivan), trained on real 300-W.

    ``predictor(image, box) -> (68, 2)`` ``(x, y)`` landmarks of the face in ``box`` (``(x0, y0, x1, y1)``,
    best a dlib HOG detection, the box kind it was trained with).
    """

    def __init__(self, path=None):
        self.path = Path(path) if path is not None else shape_predictor_path()
        self.predictor = _dlib().shape_predictor(str(self.path))

    def __call__(self, image, box):
        parts = self.predictor(np.ascontiguousarray(image, dtype=np.uint8), _rectangle(box))
        return np.array([[p.x, p.y] for p in parts.parts()], dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------------
# Command line


def _evaluate(args):
    """Recall at IoU >= 0.5 of the detector on a split (the detection overlapping the GT box most)."""
    from densereg.geometry.boxes import iou
    from densereg.data import datasets

    detector = HogSvmDetector(args.model, adjust_threshold=args.adjust_threshold)
    samples = datasets.load_dataset(args.dataset, args.root, args.split)
    if args.n:
        samples = samples[: args.n]
    best, counts, seconds = [], [], []
    for sample in samples:
        image = sample.image()
        start = time.perf_counter()
        found = detector.detect(image, args.upsample)
        seconds.append(time.perf_counter() - start)
        counts.append(len(found))
        best.append(max((iou(box, sample.box) for box, _ in found), default=0.0))
    best = np.array(best)
    what = "dlib's built-in frontal face detector" if args.model is None else f"{args.model}"
    print(f"{what} on {len(samples)} {args.dataset}/{args.split} images of {args.root} "
          f"(upsample {args.upsample}, adjust_threshold {args.adjust_threshold})")
    print(f"recall: IoU>=0.5 {np.mean(best >= 0.5):.3f}, IoU>=0.3 {np.mean(best >= 0.3):.3f}; "
          f"median best IoU {np.median(best):.3f}; {np.mean(counts):.2f} detections per image; "
          f"{1000 * np.mean(seconds):.1f} ms per image")


def main(argv=None):
    """Entry point of ``python -m benchmarks.baselines.hogsvm``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines.hogsvm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the pose-grouped HOG+SVM face detector on a training split")
    train.add_argument("--root", required=True, type=Path, help="data root laid out as densereg.data.datasets.LAYOUT")
    train.add_argument("--out", required=True, type=Path, help="the .npz artefact to write")
    train.add_argument("--dataset", default="300w")
    train.add_argument("--split", default="train")
    train.add_argument("--max-images", type=int, default=HogConfig.max_images,
                       help=f"random subset of training images (default {HogConfig.max_images}; 0 = all)")
    train.add_argument("--seed", type=int, default=HogConfig.seed)
    evaluate = sub.add_parser("evaluate", help="detection recall at IoU >= 0.5 on a split")
    evaluate.add_argument("--root", required=True, type=Path)
    evaluate.add_argument("--model", type=Path, default=None, help="trained detector (default: dlib's built-in)")
    evaluate.add_argument("--dataset", default="300w")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--n", type=int, default=0, help="only the first N images (0 = all)")
    evaluate.add_argument("--upsample", type=int, default=0)
    evaluate.add_argument("--adjust-threshold", type=float, default=0.0)
    args = parser.parse_args(argv)

    if args.command == "train":
        from densereg.data import datasets

        config = HogConfig(max_images=args.max_images or None, seed=args.seed)
        detector = train_hog_detector(datasets.load_dataset(args.dataset, args.root, args.split), args.out, config)
        info = detector.info
        print(f"wrote {args.out}: {len(info['components'])} HOG filters on {info['n_train']} "
              f"{args.dataset}/{args.split} faces ({info['n_too_small']} too small left out) "
              f"in {info['train_seconds']} s")
    else:
        _evaluate(args)


if __name__ == "__main__":
    main()
