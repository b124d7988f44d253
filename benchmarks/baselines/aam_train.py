"""Training of the patch AAM fitter (:mod:`benchmarks.baselines.aam`) on a training split.

    python -m benchmarks.baselines.aam_train --root ROOT --out PATH [--max-images N] [--features igo]

Training images are cropped around their landmarks and turned grey, then menpofit's ``PatchAAM`` builds the
shape and appearance models; the model, the resolved :class:`~benchmarks.baselines.aam.AAMConfig` and the
training provenance go to one pickle, written atomically, which :meth:`AAMFitter.load` reads back.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks.baselines.aam import (ARTEFACT_FORMAT, FEATURES, AAMConfig, AAMFitter, crop_around, feature,
                                      to_menpo_image)
from benchmarks.baselines.menpo import import_menpofit
from densereg.data import datasets
from densereg.data.formats import atomic_write_bytes


def _training_image(sample, config):
    """One training sample as a greyscale menpo image cropped around its landmarks (group ``"PTS"``)."""
    crop, offset = crop_around(sample.image(), sample.landmarks, config.crop_margin)
    return to_menpo_image(crop, sample.landmarks - offset, greyscale=True)


def pick_training_samples(samples, max_images, seed):
    """The annotated samples, reduced to a seeded random subset of ``max_images`` (sorted by name)."""
    annotated = [s for s in samples if s.landmarks is not None]
    if max_images is not None and len(annotated) > max_images:
        keep = np.random.default_rng(seed).choice(len(annotated), size=max_images, replace=False)
        annotated = [annotated[i] for i in sorted(keep)]
    return annotated


def train_aam(samples, out_path, config=None, progress=True):
    """Train a patch AAM on ``samples`` and store it, with its config and provenance, at ``out_path``.

    Args:
        samples: ``datasets.Sample`` list of the active training split (those without landmarks are skipped).
        out_path: the pickle to write (atomically).
        config: :class:`AAMConfig` (defaults if None).
        progress: show a progress bar for image loading and menpofit's training log.

    Returns:
        The :class:`AAMFitter` of the trained model.

    Raises:
        ValueError: fewer than 2 annotated samples.
    """
    config = config or AAMConfig()
    PatchAAM = import_menpofit("aam").PatchAAM
    chosen = pick_training_samples(samples, config.max_images, config.seed)
    if len(chosen) < 2:
        raise ValueError(f"need at least 2 annotated training samples to train an AAM, got {len(chosen)}")
    start = time.perf_counter()
    from tqdm import tqdm

    images = [_training_image(s, config)
              for s in tqdm(chosen, desc="AAM: loading training images", disable=not progress, file=sys.stderr)]
    # The largest component counts a small training set can support (PCA rank is at most n_images - 1).
    max_shape = min(config.max_shape_components, len(images) - 1)
    max_appearance = min(config.max_appearance_components, len(images) - 1)
    aam = PatchAAM(images, group="PTS", holistic_features=feature(config.features), diagonal=config.diagonal,
                   scales=tuple(config.scales), patch_shape=[tuple(p) for p in config.patch_shape],
                   max_shape_components=max_shape, max_appearance_components=max_appearance, verbose=progress)
    seconds = time.perf_counter() - start
    artefact = {
        "format": ARTEFACT_FORMAT,
        "aam": aam,
        "config": asdict(config),
        "n_train": len(images),
        "train_names": [s.name for s in chosen],
        "train_seconds": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_bytes(out_path, pickle.dumps(artefact, protocol=pickle.HIGHEST_PROTOCOL))
    return AAMFitter(aam, config, info={k: v for k, v in artefact.items() if k != "aam"})


def main(argv=None):
    """Entry point of ``python -m benchmarks.baselines.aam_train``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines.aam_train",
                                     description="train a patch AAM on a training split and store it")
    parser.add_argument("--root", required=True, type=Path, help="data root laid out as densereg.data.readers.LAYOUT")
    parser.add_argument("--out", required=True, type=Path, help="the artefact pickle to write")
    parser.add_argument("--dataset", default="300w", help="dataset whose training split is used (default 300w)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--max-images", type=int, default=AAMConfig.max_images,
                        help=f"random subset of training images (default {AAMConfig.max_images}; 0 = all)")
    parser.add_argument("--features", default=AAMConfig.features, choices=sorted(FEATURES))
    parser.add_argument("--seed", type=int, default=AAMConfig.seed)
    args = parser.parse_args(argv)
    config = AAMConfig(max_images=args.max_images or None, features=args.features, seed=args.seed)
    fitter = train_aam(datasets.load_dataset(args.dataset, args.root, args.split), args.out, config)
    print(f"wrote {args.out}: patch AAM on {fitter.info['n_train']} {args.dataset}/{args.split} images "
          f"in {fitter.info['train_seconds']} s")


if __name__ == "__main__":
    main()
