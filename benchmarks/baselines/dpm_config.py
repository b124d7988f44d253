"""Every setting of the DPM face detector (training and detection), its named presets and ``--set`` parsing.

The detector (:mod:`benchmarks.baselines.dpm`) stores its config in the saved model; training
(:mod:`benchmarks.baselines.dpm_train`) reads every step's size from it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from densereg.registry import lookup


@dataclass
class DPMConfig:
    """Every setting of training and detection. Defaults follow Felzenszwalb et al. where they apply.

    Attributes:
        interval: pyramid levels per octave (Felzenszwalb et al. use 10).
        sbin: HOG cell size in pixels at the root level (parts use sbin/2-pixel cells, i.e. 2× resolution).
        n_components: pose components (faces sorted by yaw proxy, split into equal groups).
        mirror: add left-right mirrored copies of the training faces.
        root_area: root filter area in cells; its shape follows each component's median aspect ratio.
        n_parts: parts per component.
        svm_c: hinge-loss weight C of each component's SVM (``½|w|² + C Σ hinge``).
        svm_epochs: maximum passes of dual coordinate descent.
        svm_tol: stop when the spread of the projected gradient over an epoch is below this (liblinear's test).
        bias_feature: constant appended to every feature vector; its weight is the component bias.
        max_positives: at most this many training faces (before mirroring) are used.
        random_negatives: warped random negative windows per component for the first root training.
        neg_images_per_round: training images scanned in each hard-negative mining round.
        neg_per_image: hard negatives kept per image and component in one round.
        neg_cache: most negative feature vectors kept per component (hardest first).
        root_mining_rounds: hard-negative rounds with the root-only model.
        latent_iterations: relabel-positives-then-retrain iterations once parts are added.
        part_mining_rounds: hard-negative rounds within each latent iteration.
        bbox_samples: training faces used to fit the bounding-box regression.
        pos_iou: a latent positive placement must overlap its box by at least this IoU.
        neg_iou: a negative window overlaps every annotated face by less than this IoU.
        nms_iou: detections overlapping a better one by more than this IoU are suppressed.
        detect_threshold: default score threshold of ``DPMDetector.detect``.
        seed: random seed of every sampling step.
    """

    interval: int = 10
    sbin: int = 8
    n_components: int = 3
    mirror: bool = True
    root_area: int = 36  # 6×6 cells on a frontal face: a 48-pixel face at the finest root level
    n_parts: int = 8
    svm_c: float = 0.01
    svm_epochs: int = 100
    svm_tol: float = 0.05
    bias_feature: float = 10.0  # as in Felzenszwalb et al.'s code, so the bias is only lightly regularised
    max_positives: int = 4000
    random_negatives: int = 4000
    neg_images_per_round: int = 600
    neg_per_image: int = 10
    neg_cache: int = 10000
    root_mining_rounds: int = 2
    latent_iterations: int = 2
    part_mining_rounds: int = 2
    bbox_samples: int = 1500
    pos_iou: float = 0.7
    neg_iou: float = 0.3
    nms_iou: float = 0.3
    detect_threshold: float = -0.8
    seed: int = 0


# Named overrides of DPMConfig. "paper" keeps Felzenszwalb et al.'s scale (10 levels per octave, 8 parts, every
# face, two mining rounds per stage). "cpu" fits the two-core budget: its cost is bounded by max_positives and
# neg_images_per_round, not by the size of the split (about 65 s CPU on 256×256 synthetic images, 2.5 min wall
# on the shared machine), and it detects in about 0.1 s per 256×256 image.
PRESETS = {
    "paper": {},
    "cpu": {"interval": 5, "n_parts": 6, "max_positives": 500, "random_negatives": 1500,
            "neg_images_per_round": 100, "neg_cache": 4000, "root_mining_rounds": 1, "latent_iterations": 1,
            "part_mining_rounds": 1, "bbox_samples": 200, "svm_epochs": 60},
    # Seconds-long training on a handful of images: for contract tests of the harness, not for accuracy.
    "tiny": {"interval": 2, "n_parts": 2, "max_positives": 40, "random_negatives": 100, "neg_images_per_round": 4,
             "neg_cache": 200, "root_mining_rounds": 1, "latent_iterations": 1, "part_mining_rounds": 1,
             "bbox_samples": 20, "svm_epochs": 10},
}


def config_preset(name, **overrides):
    """The :class:`DPMConfig` of preset ``name`` (a key of :data:`PRESETS`) with ``overrides`` applied."""
    return DPMConfig(**{**lookup(PRESETS, name, "DPM preset"), **overrides})


def parse_overrides(items):
    """``["interval=4", "mirror=false"]`` → typed DPMConfig overrides; unknown keys exit with the valid ones."""
    types = {f.name: f.type for f in fields(DPMConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(types))}")
        kind = types[key] if isinstance(types[key], str) else types[key].__name__
        if kind == "bool":
            if value.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"--set {item!r}: {key} takes true or false")
            out[key] = value.lower() in ("true", "1")
        else:
            try:
                out[key] = {"int": int, "float": float}[kind](value)
            except ValueError:
                raise SystemExit(f"--set {item!r}: {key} takes a {kind}") from None
    return out
