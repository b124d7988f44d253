"""Fitters: deformable models that refine an initial shape. The ``FITTERS`` registry and its small factories.

A **fitter** is a callable ``fit(image, shape) -> (N, 2) float array``: ``image`` is ``H×W×3`` uint8 RGB,
``shape`` the initialiser's ``(N, 2)`` estimate in ``(x, y)`` pixels. It never sees ground truth. "DenseReg
alone" in the paper's tables is the ``none`` fitter after the ``densereg`` initialiser.

As for initialisers, the registry holds factories ``factory(ctx) -> fitter`` taking the
:class:`benchmarks.context.RunContext`; a trained fitter (AAM, MDM) is an artefact under
``benchmarks.baselines.artefacts.ensure_artefact``, keyed by its config and training data and recorded in the
result row. :func:`get_fitter` also accepts a plug-in ``package.module:callable`` (``benchmarks.context``).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from benchmarks.baselines.artefacts import ensure_artefact
from benchmarks.context import TRAIN_SPLITS, resolve_factory


def none_factory(ctx):
    """``none``: return the initial shape unchanged, so the row scores the initialiser alone."""

    def none(image, shape):
        return np.array(shape, dtype=float, copy=True)

    return none


def aam_factory(ctx):
    """``aam``: menpofit's patch AAM, Wiberg inverse-compositional Lucas-Kanade, trained on the training split.

    An artefact ``runs/<source>[/seed<S>]/aam.pkl`` (its training subset drawn with the run's seed), built on
    first use (``python -m benchmarks.baselines.aam_train``).
    """
    from benchmarks.baselines import aam, aam_train

    path = ctx.artefact_dir() / "aam.pkl"
    config = aam.AAMConfig(seed=ctx.seed)
    command = aam.build_command(path, ctx.root) + (f" --seed {ctx.seed}" if ctx.seed else "")
    art = ensure_artefact(path, asdict(config), ctx.train_fingerprint(),
                          lambda p: aam_train.train_aam(ctx.train_samples(), p, config), command)
    ctx.record("aam", art.identity)
    return aam.AAMFitter.load(path)


def mdm_factory(ctx):
    """``mdm``: the Mnemonic Descent Method (PyTorch), trained on the training split from perturbed boxes.

    An artefact ``runs/<source>[/seed<S>]/mdm-<preset>/mdm.pt`` (weights, batches and augmentation seeded by the
    run's seed), trained on first use and resumed when unfinished
    (``python -m benchmarks.baselines.mdm_train`` builds it too). The preset follows the run's: ``cpu`` on the
    synthetic default, ``paper`` otherwise.
    """
    from benchmarks.baselines import mdm, mdm_train

    preset = ctx.preset if ctx.preset in mdm.PRESETS else ("cpu" if ctx.source == "synthetic" else "paper")
    path = ctx.artefact_dir(f"mdm-{preset}") / mdm.CHECKPOINT_NAME
    config = mdm.make_config(preset, seed=ctx.seed)
    art = ensure_artefact(
        path, asdict(config), ctx.train_fingerprint(),
        lambda p: mdm_train.train_mdm(ctx.train_samples(), p.parent, config),
        f"python -m benchmarks.baselines.mdm_train --root {ctx.root} --dataset {TRAIN_SPLITS[ctx.dataset][0]} "
        f"--out {path.parent} --preset {preset}" + (f" --seed {ctx.seed}" if ctx.seed else ""),
        complete=lambda p: mdm.load_checkpoint(p)["step"] >= config.iterations, label=preset)
    ctx.record("mdm", art.identity)
    return mdm.MDMFitter.load(path)


FITTERS = {
    "none": none_factory,
    "aam": aam_factory,
    "mdm": mdm_factory,
}

# Fitters spelt PREFIX:ARG (none yet); the factory is called as factory(ARG, ctx).
PREFIXED_FITTERS = {}


def get_fitter(spec, ctx):
    """Build the fitter named by ``spec`` for ``ctx`` (a key of :data:`FITTERS` or a plug-in)."""
    return resolve_factory(spec, FITTERS, PREFIXED_FITTERS, "fitter")(ctx)
