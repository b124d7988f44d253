"""Rows over seeds: the latest row per (method, variant, seed), then mean ± standard deviation over the seeds.

Why here: a result is one sample of a trained chain. ``python -m benchmarks.run ... --seed S`` trains every
artefact of the chain with S (``benchmarks.context.RunContext.cache_dir``), so the spread over seeds is what
says which differences are real. Per-seed rows stay in the run CSVs; the tables show their mean ± std.

Rules (the same for Table 2, Table 1 and Fig. 5):

* A **method** is what a table row names (e.g. source, preset, init, fitter, tag). Its **variant** is the
  labels of its artefacts without their file hashes (``densereg cpu/K10, mdm cpu``): a K=5 checkpoint is
  another variant and another row, but the networks of seeds 0, 1, 2 (different hashes, same label) are one.
* Of several rows of one (method, variant, seed), e.g. one scored with an old checkpoint before the cache was
  rebuilt, only the **latest** (by ``date``, then file order) counts; the others are counted in ``superseded``
  and the tables say so. Rows of different artefact identities are never silently averaged.
* ``std`` is the sample standard deviation (ddof = 1) over the seeds; NaN (shown blank) with one seed.
"""

from __future__ import annotations

import math

SUPERSEDED_NOTE = ("Only the latest row of each (method, seed) is averaged; {n} older row(s) of the same method "
                   "and seed (another artefact identity, e.g. an old checkpoint) were left out.")


def variant(artefacts):
    """The artefacts of a row without their hashes: ``densereg cpu/K10, mdm cpu`` for
    ``densereg=3f2a9c1b7d0e/cpu/K10;mdm=0c1d2e3f4a5b/cpu`` (an artefact with no label contributes its name)."""
    parts = []
    for item in filter(None, str(artefacts).split(";")):
        name, _, identity = item.partition("=")
        label = identity.partition("/")[2]
        parts.append(f"{name} {label}" if label else name)
    return ", ".join(parts)


def latest_per_seed(frame, keys):
    """``(frame, superseded)``: one row per ``keys`` + variant + seed, the latest by ``date`` (then file order),
    and how many rows were dropped for it. Adds the ``variant`` column; a missing ``seed`` reads as 0."""
    import pandas as pd

    frame = frame.copy()
    if "seed" not in frame.columns:
        frame["seed"] = "0"
    frame["seed"] = pd.to_numeric(frame["seed"].replace("", "0"), errors="coerce").fillna(0).astype(int)
    frame["variant"] = [variant(a) for a in frame["artefacts"]] if "artefacts" in frame.columns else ""
    frame["_order"] = range(len(frame))
    sort = ["date", "_order"] if "date" in frame.columns else ["_order"]
    ordered = frame.sort_values(sort, kind="stable")
    kept = ordered.drop_duplicates([*keys, "variant", "seed"], keep="last").sort_values("_order")
    return kept.drop(columns="_order"), len(frame) - len(kept)


def aggregate(frame, keys, values):
    """Mean, std (ddof 1) and seed count of ``values`` per ``keys`` + variant, in first-appearance order.

    Args:
        frame: rows already reduced by :func:`latest_per_seed`.
        keys: the method's columns.
        values: numeric columns (NaN where a row has none).

    Returns:
        A DataFrame with ``keys``, ``variant``, each value column (the mean), ``<value>_std``, ``n_seeds``,
        ``seeds`` (``"0,1,2"``) and, from the latest row, every other column of ``frame``.
    """
    import pandas as pd

    if frame.empty:
        return frame
    group = [*keys, "variant"]
    grouped = frame.groupby(group, sort=False, dropna=False)
    means = grouped[list(values)].mean()
    stds = grouped[list(values)].std(ddof=1).add_suffix("_std")
    seeds = grouped["seed"].agg(n_seeds="nunique", seeds=lambda s: ",".join(map(str, sorted(set(s)))))
    others = [c for c in frame.columns if c not in (*group, *values, "seed")]
    last = frame.sort_values("date", kind="stable") if "date" in frame.columns else frame
    last = last.groupby(group, sort=False, dropna=False)[others].last() if others else None
    parts = [means, stds, seeds] + ([last] if last is not None else [])
    out = pd.concat(parts, axis=1).reset_index()
    order = {k: i for i, k in enumerate(dict.fromkeys(map(tuple, frame[group].to_numpy().tolist())))}
    out["_o"] = [order[tuple(k)] for k in out[group].to_numpy().tolist()]
    return out.sort_values("_o").drop(columns="_o").reset_index(drop=True)


def mean_std_text(mean, std, digits):
    """``0.5219 ± 0.0123``; just the mean when ``std`` is NaN or None (one seed); empty when no mean."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
