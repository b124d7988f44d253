"""The landmark experiment protocol (Tables 2–4, Fig. 7): samples → predict → score → summarise → row.

    python -m benchmarks.run 300w --init densereg --fitter none --source synthetic

For every sample of the split: ``init(image, box)`` → ``fitter(image, shape)`` → normalised error against the
ground truth, which only this module and the metrics see (68-point error over the outer-eye-corner distance
for faces, over the GT box's average edge for ears). A missed face (``None`` or ``benchmarks.context.Miss``),
an exception raised by a method, or an output that is not a finite ``N×2`` shape scores ``+inf``: it counts
in every denominator and is listed with its reason in the per-image file, never dropped. A malformed data file
(the image, or a box file a method reads: ``formats.DatasetError``) is not a method failure: it stops the run
with the file's name and problem.

Outputs, written as one unit by ``benchmarks.records.write_run``:

* ``<results>/<dataset>.csv`` (``helen_landmarks.csv`` for Helen, whose ``helen.csv`` is Table 1's
  segmentation file; :func:`results_table`): one summary row per run (AUC and failure rate at 0.1 and 0.08 as fractions,
  mean/median NME over the finite errors, n, misses, seconds per image, source, preset, seed, the identity of
  every trained artefact used, commit, torch, device, date, tag, the errors file). A later run with the same
  key (dataset, split, init, fitter, artefacts, source, preset, seed, tag) replaces the earlier row; a run
  with another artefact (a K=5 checkpoint) or seed gets its own row.
* ``<results>/errors/<key>.csv``: ``name, error, status, message, seconds`` per image in sample order.
  ``status`` is ``ok``, ``miss``, ``init-error``, ``init-invalid``, ``fit-error``, ``fit-invalid`` or
  ``worker-died``.

``workers > 1`` evaluates images in forked processes that inherit the methods built once in the parent (so
anything a method trains on first use is trained once); every image is seeded from (seed, its index) and
results are kept in sample order, so the output does not depend on the number of workers. A worker that dies
on an image (a segfault or out-of-memory kill in native code) scores that image ``+inf`` with status
``worker-died`` and is replaced; workers dying on ``MAX_DEATHS_IN_A_ROW`` images in a row stop the run with an
error naming them (something kills every worker, and a row would be meaningless).
"""

from __future__ import annotations

import random
import re
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import metrics, records
from benchmarks.context import Miss
from benchmarks.fitters import get_fitter
from benchmarks.initialisers import get_initialiser
from densereg.data import formats, shards
from densereg.data.workers import WorkerDied, WorkersKeptDying, supervised_imap


@dataclass(frozen=True)
class Protocol:
    """How one landmark dataset is evaluated.

    Attributes:
        folder: the folder under the data root whose presence says the dataset is there.
        norm: key of ``metrics.NORMALISERS`` for the per-image error.
        load_options: keyword arguments for ``datasets.load_dataset``.
    """

    folder: str
    norm: str
    load_options: dict = field(default_factory=dict)


PROTOCOLS = {
    "300w": Protocol("300W", "outer-eye"),
    # The 300-VW protocol drops the frames its authors flag as unreliable.
    "300vw": Protocol("300VW", "outer-eye", {"drop_unreliable": True}),
    "ears": Protocol("ears", "box"),  # 55 points over the GT box's (w + h) / 2, paper Sec. 4.7
    "helen": Protocol("300W/helen/testset", "outer-eye"),
}
SCHEMA = records.SCHEMAS["landmarks"]


# ----------------------------------------------------------------------------------------------------------------
# Predict and score one sample


def seed_everything(seed, index):
    """Seed Python, NumPy and (when loaded) torch from ``(seed, index)`` so an image's result is reproducible
    whichever worker evaluates it."""
    value = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(value)


def _message(exc):
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
    return text if len(text) <= 300 else text[:297] + "..."


def _check_shape(pred, n_points, who):
    """``(shape, None)`` for a finite ``(n_points, 2)`` output, else ``(None, reason)``."""
    try:
        shape = np.asarray(pred, dtype=float)
    except (TypeError, ValueError) as e:
        return None, f"{who} returned {type(pred).__name__}, not an array ({e})"
    if shape.shape != (n_points, 2):
        return None, f"{who} returned shape {shape.shape}, expected ({n_points}, 2)"
    if not np.isfinite(shape).all():
        return None, f"{who} returned non-finite coordinates"
    return shape, None


def _run_init(sample, image, init, n_points):
    """``init`` on one sample: ``{"pred", "status", "message", "seconds"}`` (``pred`` None unless ``ok``)."""
    out = {"pred": None, "status": "ok", "message": ""}
    start = time.perf_counter()
    try:
        kwargs = {"name": sample.name} if getattr(init, "needs_name", False) else {}
        pred = init(image, np.array(sample.box, dtype=float), **kwargs)
    except Miss as e:  # a declared miss, with its reason (e.g. no prediction file)
        out.update(status="miss", message=str(e))
    except formats.DatasetError:  # a malformed input file (a box file): the data's fault, not the method's
        raise
    except Exception as e:  # any failure of a method is a scored failure, never a crash of the run
        out.update(status="init-error", message=_message(e))
    else:
        if pred is None:
            out.update(status="miss", message="initialiser found no face")
        else:
            out["pred"], reason = _check_shape(pred, n_points, "initialiser")
            if reason:
                out.update(status="init-invalid", message=reason)
    out["seconds"] = time.perf_counter() - start
    return out


def evaluate_sample(sample, init, fit, norm, replay=None):
    """Run ``init`` then ``fit`` on one sample and score it.

    ``replay``: this sample's ``"init"`` record from an earlier run of the same initialiser on the same data in
    this process (:func:`run`'s ``memo``): the initialiser is not called again, its recorded output and time
    are used. The initialisers are deterministic and draw nothing from the per-image seed, so a replayed run
    scores exactly what a fresh one does (``tests/test_run.py`` checks it).

    Returns:
        dict with ``name``, ``error`` (``+inf`` on any failure), ``status``, ``message``, ``seconds`` (time
        spent in the two methods) and ``init`` (the initialiser's record, for replay).

    Raises:
        formats.DatasetError: the sample's image, or a file a method reads for it (a ``boxes:DIR`` box file),
            cannot be read: a data problem to fix, not a method failure to score.
    """
    image = sample.image()
    gt = sample.landmarks
    record = dict(replay) if replay is not None else _run_init(sample, image, init, len(gt))
    out = {"name": sample.name, "error": float("inf"), "status": record["status"], "message": record["message"],
           "init": record}
    start = time.perf_counter()
    if out["status"] == "ok":
        try:
            fitted = fit(image, record["pred"].copy())
        except formats.DatasetError:
            raise
        except Exception as e:
            out.update(status="fit-error", message=_message(e))
        else:
            fitted, reason = _check_shape(fitted, len(gt), "fitter")
            if reason:
                out.update(status="fit-invalid", message=reason)
            else:
                box = sample.box if norm.startswith("box") else None
                out["error"] = float(metrics.nme(fitted, gt, norm=norm, box=box))
    out["seconds"] = record["seconds"] + time.perf_counter() - start
    return out


# ----------------------------------------------------------------------------------------------------------------
# Predict every sample, in this process or in forked workers


def build_methods(init_spec, fitter_spec, ctx):
    """``(initialiser, fitter)`` built from their specs for ``ctx`` (artefacts recorded in ``ctx``)."""
    return get_initialiser(init_spec, ctx), get_fitter(fitter_spec, ctx)


def method_device(ctx):
    """What the methods of this process run on, for the provenance column."""
    device = ctx.torch_device() if "torch" in sys.modules else "cpu"
    return records.device_description(device)


MAX_DEATHS_IN_A_ROW = 3


def _died(sample, death):
    return {"name": sample.name, "error": float("inf"), "status": "worker-died",
            "message": f"the worker process died ({death.cause}) while evaluating this image; it was replaced",
            "seconds": death.seconds}


def _evaluate_in_workers(samples, indices, methods, norm, workers, seed, bar, replays):
    """The per-sample dicts of :func:`evaluate` for ``samples[indices]``, computed in forked workers that
    inherit ``methods`` (and ``replays``)."""
    def task(k):
        seed_everything(seed, indices[k])
        return evaluate_sample(samples[indices[k]], *methods, norm, replays and replays[indices[k]])

    results = [None] * len(indices)
    try:
        for k, result in supervised_imap(task, len(indices), workers, MAX_DEATHS_IN_A_ROW):
            results[k] = _died(samples[indices[k]], result) if isinstance(result, WorkerDied) else result
            bar.update()
    except WorkersKeptDying as e:
        listed = "; ".join(f"{samples[i].name} ({cause})" for i, cause in e.deaths)
        raise WorkersKeptDying(e.deaths, f"worker processes died on {len(e.deaths)} images in a row: {listed}. "
                               "Something kills every worker (a crash in native code, memory); rerun with "
                               "--workers 1 to see it in the main process") from None
    return results


def evaluate(samples, methods, norm, workers=1, seed=0, progress=True, desc="", replays=None):
    """Evaluate every sample with ``methods = (init, fit)``, in sample order; ``workers > 1`` forks.
    ``replays``: None, or one ``init`` record per sample (:func:`evaluate_sample`) to use instead of calling
    the initialiser.

    Under ``torchrun`` this rank evaluates its shard only (``densereg.data.shards``) and every rank gets all
    the results back in sample order; image ``i`` is seeded from ``(seed, i)`` wherever it runs.

    Returns:
        the per-sample dicts of :func:`evaluate_sample` (``worker-died`` ones for images whose worker died).

    Raises:
        WorkersKeptDying: workers died on ``MAX_DEATHS_IN_A_ROW`` images in a row (an ``OSError``).
    """
    from tqdm import tqdm

    shard = shards.current()
    indices = shard.indices(len(samples))
    bar = tqdm(total=len(indices), desc=desc, unit="img", file=sys.stderr, disable=not progress)
    results = []
    if workers <= 1:
        for index in indices:
            seed_everything(seed, index)
            results.append(evaluate_sample(samples[index], *methods, norm, replays and replays[index]))
            bar.update()
    else:
        results = _evaluate_in_workers(samples, indices, methods, norm, workers, seed, bar, replays)
    bar.close()
    return shards.gather_in_order(shard, indices, results, len(samples))


# ----------------------------------------------------------------------------------------------------------------
# Summarise and record


def slug(text, max_len=60):
    """``text`` made safe as part of a file name; long texts keep their end and gain a short hash."""
    safe = re.sub(r"[^A-Za-z0-9.+=-]+", "-", str(text)).strip("-.") or "x"
    if len(safe) > max_len:
        safe = f"{safe[-(max_len - 9):].lstrip('-.')}-{zlib.crc32(str(text).encode()):08x}"
    return safe


# Landmark rows of a dataset whose ``<dataset>.csv`` belongs to another table (Helen's is Table 1's IoUs).
CSV_NAMES = {"helen": "helen_landmarks.csv"}


def results_table(results_dir, dataset: str) -> Path:
    """The CSV that holds the landmark rows of ``dataset``: ``<results>/<dataset>.csv`` or :data:`CSV_NAMES`'s."""
    return Path(results_dir) / CSV_NAMES.get(dataset, f"{dataset}.csv")


def errors_path(results_dir, dataset, split, init, fitter, source, preset="default", tag="", seed=0,
                artefacts=""):
    """The per-image errors file of one run key: preset when not ``default``, tag when set, ``s<seed>`` when
    not 0, and a short hash of the artefact identities when the run used any."""
    parts = [dataset, split, init, fitter, source]
    parts += [preset] if preset != "default" else []
    parts += [tag] if tag else []
    parts += [f"s{seed}"] if int(seed) else []
    parts += [f"a{zlib.crc32(artefacts.encode()):08x}"] if artefacts else []
    return Path(results_dir) / "errors" / ("_".join(slug(p) for p in parts) + ".csv")


def _fmt(value, spec):
    return "nan" if value != value else format(value, spec)  # NaN never equals itself


def summary_row(results, key, device, errors_file):
    """The run's row: metrics of the per-image errors, its key, provenance and its errors file."""
    errors = np.array([r["error"] for r in results], dtype=float)
    s = metrics.summarise(errors)
    seconds = float(np.mean([r["seconds"] for r in results]))
    return {**key,
            "auc_0.1": _fmt(s["auc_0.1"], ".6f"), "failure_0.1": _fmt(s["failure_0.1"], ".6f"),
            "auc_0.08": _fmt(s["auc_0.08"], ".6f"), "failure_0.08": _fmt(s["failure_0.08"], ".6f"),
            "mean_nme": _fmt(s["mean"], ".6g"), "median_nme": _fmt(s["median"], ".6g"),
            "n": s["n"], "misses": s["n_inf"], "seconds_per_image": _fmt(seconds, ".4g"),
            **records.stamp(device), "errors": errors_file}


def error_rows(results):
    """The per-image errors file's rows (``records.ERROR_COLUMNS``)."""
    return [{"name": r["name"], "error": repr(float(r["error"])), "status": r["status"], "message": r["message"],
             "seconds": _fmt(r["seconds"], ".4g")} for r in results]


class MethodAlwaysFailed(ValueError):
    """Every sample failed with an exception of a method: a broken method, not a result worth a row."""


def _refuse_if_the_method_always_failed(results):
    """Raise :class:`MethodAlwaysFailed`, quoting the first errors, when every sample is an init/fit error.

    Misses (no face found, no prediction file) are results; an exception on every image means the method is
    broken (a wrong plug-in, a bad call signature), and recording its row would put a 0 AUC into a table.
    """
    if results and all(r["status"] in ("init-error", "fit-error") for r in results):
        first = "; ".join(f"{r['name']}: {r['status']}: {r['message']}" for r in results[:3])
        raise MethodAlwaysFailed(f"the method failed on every one of the {len(results)} images, nothing recorded; "
                                 f"first errors: {first}")


_SAMPLES = ("samples fingerprint",)   # memo key of the evaluated samples' fingerprint (never an initialiser spec)


def run(samples, init_spec, fitter_spec, ctx, *, split, results_dir, norm, workers=1, tag="", progress=True,
        memo=None, reuse=False):
    """The whole protocol for one initialiser × fitter: build, predict, score, summarise, record.

    Args:
        memo: None, or a dict shared by the runs of one process over the same ``samples``, seed and preset
            (``benchmarks.run 300w --pairs``): an initialiser's per-sample records are kept under its spec, and a
            later pair with the same initialiser replays them instead of running it again (the DenseReg rows
            of Table 2 run DenseReg once).
        reuse: reuse the recorded row when every input is unchanged (``benchmarks.evalcache``; single process;
            every single-process run is recorded for a later reuse).

    Returns:
        ``(row, results, table_path, errors_path, n_replaced)``; ``n_replaced`` is ``None`` for a reused row.
    """
    shard = shards.current()
    start = time.perf_counter()
    with shards.rank_zero_first(shard):                     # under torchrun: one rank trains, the others load
        methods = build_methods(init_spec, fitter_spec, ctx)   # builds (or checks) every artefact, recorded in ctx
    built = time.perf_counter() - start
    device = method_device(ctx)
    key = {"dataset": ctx.dataset, "split": split, "init": init_spec, "fitter": fitter_spec, "source": ctx.source,
           "preset": ctx.preset_label, "seed": ctx.seed, "artefacts": ctx.identity(), "tag": tag}
    table = results_table(results_dir, ctx.dataset)
    full_key = None
    if shard.world <= 1:                                    # every run is recorded for reuse; --reuse looks
        from benchmarks import evalcache
        from densereg.data.fingerprint import fingerprint

        samples_fp = memo.get(_SAMPLES) if memo is not None else None
        if samples_fp is None:
            samples_fp = fingerprint(samples)
            if memo is not None:
                memo[_SAMPLES] = samples_fp
        full_key = evalcache.cache_key(key, samples_fp, norm, device)
        hit = evalcache.lookup(ctx.cache_dir, full_key, table, results_dir) if reuse else None
        if hit is not None:
            row, results = hit
            print(f"[cached] {ctx.dataset}/{split} {init_spec}+{fitter_spec} seed {ctx.seed}: the row of "
                  f"{row['date']} is reused (same artefacts, samples, code, torch and device; drop --reuse "
                  "to evaluate again)", file=sys.stderr)
            return row, results, table, Path(results_dir) / row["errors"], None
    replays = memo.get(init_spec) if memo is not None else None
    start = time.perf_counter()
    results = evaluate(samples, methods, norm, workers=workers, seed=ctx.seed, progress=progress,
                       desc=f"{ctx.dataset}/{split} {init_spec}+{fitter_spec}", replays=replays)
    print(f"[time] {ctx.dataset}/{split} {init_spec}+{fitter_spec} seed {ctx.seed}: methods built or loaded in "
          f"{built:.0f} s, {len(samples)} images evaluated in {time.perf_counter() - start:.0f} s"
          + (" (initialiser replayed)" if replays is not None else ""), file=sys.stderr)
    inits = [r.pop("init", None) for r in results]
    if memo is not None and replays is None and all(i is not None for i in inits):
        memo[init_spec] = inits
    _refuse_if_the_method_always_failed(results)
    err_path = errors_path(results_dir, ctx.dataset, split, init_spec, fitter_spec, ctx.source, ctx.preset_label, tag,
                           ctx.seed, ctx.identity())
    row = summary_row(results, key, device, err_path.relative_to(results_dir).as_posix())
    replaced = 0
    if shards.is_writer(shard):                             # under torchrun only rank 0 writes
        replaced = records.write_run(table, [row], SCHEMA, err_path, error_rows(results))
        if full_key is not None:
            evalcache.store(ctx.cache_dir, full_key, row, results_dir)
    return row, results, table, err_path, replaced
