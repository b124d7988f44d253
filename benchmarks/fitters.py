"""Fitters: deformable models that refine an initial shape. ``FITTERS`` registry of factories.

A **fitter** is a callable ``fit(image, shape) -> (N, 2) float array``: ``image`` is ``H×W×3`` uint8 RGB,
``shape`` the initialiser's ``(N, 2)`` estimate in ``(x, y)`` pixels. It never sees ground truth. "DenseReg
alone" in the paper's tables is the ``none`` fitter after the ``densereg`` initialiser.

As for initialisers, the registry holds factories ``factory(ctx) -> fitter`` taking the
:class:`benchmarks.initialisers.RunContext`, so training or loading (an AAM, an MDM network) happens once per
process. :func:`get_fitter` also accepts a plug-in ``package.module:callable`` under the same rule as
initialisers (``is_factory = True`` → called with the context). This is the only module of the project that
may import menpo/menpofit (through ``benchmarks.baselines.menpo``), for the AAM fitter.
"""

from __future__ import annotations

import numpy as np

from benchmarks.initialisers import resolve_factory


def none_factory(ctx):
    """``none``: return the initial shape unchanged, so the row scores the initialiser alone."""

    def none(image, shape):
        return np.array(shape, dtype=float, copy=True)

    return none


def aam_factory(ctx):
    """``aam``: menpofit's patch AAM, Wiberg inverse-compositional Lucas-Kanade, trained on the training split.

    Cached as ``runs/<source>/aam.pkl`` (built on first use; ``python -m benchmarks.baselines.aam_train`` builds it too).
    """
    from benchmarks.baselines import aam, aam_train

    path = ctx.artefact_dir() / "aam.pkl"
    if not path.is_file():
        return aam_train.train_aam(ctx.train_samples(), path)
    return aam.AAMFitter.load(path)


def mdm_factory(ctx):
    """``mdm``: the Mnemonic Descent Method (PyTorch), trained on the training split from perturbed boxes.

    Cached as ``runs/<source>/mdm/mdm.pt`` (trained on first use, resumable; ``python -m benchmarks.baselines.mdm_train``
    builds it too). The preset follows the run's: ``cpu`` on the synthetic default, ``paper`` otherwise.
    """
    from benchmarks.baselines import mdm, mdm_train

    preset = ctx.preset if ctx.preset in mdm.PRESETS else ("cpu" if ctx.source == "synthetic" else "paper")
    out = ctx.artefact_dir(f"mdm-{preset}")
    path = out / "mdm.pt"
    config = mdm.make_config(preset)
    if not path.is_file() or mdm.load_checkpoint(path)["step"] < config.iterations:
        mdm_train.train_mdm(ctx.train_samples(), out, config)
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
