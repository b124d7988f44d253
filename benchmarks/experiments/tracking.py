"""Table 3: deformable tracking on the 300-VW test videos, streamed video by video and resumable.

    python -m benchmarks.run 300vw --source synthetic [--workers 2] [--batch-size 8] [--fresh]
    python -m benchmarks.run 300vw                      (the real videos under $DENSEREG_DATA/300VW)

The paper (Sec. 4.4) runs its landmark strategy of Table 2 on every frame, with DenseReg and MDM trained on the
3148 300-W-style training faces only ("not fine-tuned for the task"): the cached 300-W models of
``runs/<source>/`` are used (``benchmarks.context.TRAIN_SPLITS``). Rows (:data:`ROWS`):

* ``DenseReg``: the per-frame DenseReg read-out (the GT box only says which face);
* ``DenseReg+MDM``: MDM started from that read-out, per frame;
* ``DenseReg+MDM [tracking: previous frame's box]`` (beyond the paper, labelled): MDM started from the
  previous frame's result, as MDM starts from a detection: its mean shape placed in that result's box. DenseReg
  runs on the first frame and again only when the tracked shape is lost (missing, or its box leaves the frame
  or collapses). Why the box and not the shape itself: MDM learnt to refine its mean shape placed in a
  (perturbed) face box; fed its own output frame after frame it compounds a small scale bias (measured on a
  mild category-1 synthetic video: the shape grew ~1.5x within 60 frames, error 0.02 → 0.3), while from the
  previous box it stays at the per-frame error.

Each is scored on 68 points and on the 49-point markup of the 300-VW challenge (tag ``49 points``), error
over the GT outer-eye-corner distance, on each category (``cat1``..``cat3``) and on the whole test set
(``test``), frames flagged unreliable (``extra``) dropped by the reader's rule (the tracker still runs
through them). Rows carry AUC and failure at 0.1 and 0.08 and frames per second; the headline is 0.1: the
paper says Table 3 follows Sec. 4.3, whose failure rate it states at 0.1, and the project's protocol
(DESIGN.md) reads 300-W and 300-VW there; 0.08 (the MDM convention) is in the same rows.

Streaming: a video is decoded once, in order, ``--batch-size`` frames at a time (batched DenseReg inference,
on a GPU with ``--device cuda``); its per-frame results are written atomically to
``<runs>/<source>/300vw-progress/<run id>/<video>.csv`` when the video ends, so an interrupted evaluation
resumes at the first unfinished video and gives the rows an uninterrupted one gives (``--fresh`` restarts).
``--workers N`` evaluates N videos at once in forked CPU processes. On a GPU, ``--batch-size 32`` batches the
network and ``--readout-workers N`` (default up to 8 there) reads out a batch on CPU threads while the next is
on the GPU; ``torchrun --nproc_per_node 8 -m benchmarks.run 300vw`` gives each rank (GPU) whole videos,
balanced by frames, and rank 0 records the rows one process would. A run prints its frames/s. The run id
hashes what decides the numbers: data, artefacts, batch size, frame limit. ``--limit N`` scores the first N
frames of each video (rows tagged ``limit=N``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import metrics, records
from benchmarks.context import RunContext, add_common, artefact_root, resolve_data
from benchmarks.experiments.landmarks import errors_path, method_device, results_table
from benchmarks.fitters import get_fitter
from benchmarks.initialisers import get_initialiser
from densereg.data import datasets, formats, shards
from densereg.data.readers import CATEGORY_300VW
from densereg.data.sample import landmarks_box
from densereg.data.video_frames import iter_frames
from densereg.data.workers import WorkerDied, supervised_imap


@dataclass(frozen=True)
class Row:
    """One row of Table 3: how its shape of a frame is made, and how the table names it."""

    key: str
    init: str
    fitter: str
    tag: str


ROWS = {
    "densereg": Row("densereg", "densereg", "none", ""),
    "densereg+mdm": Row("densereg+mdm", "densereg", "mdm", ""),
    "tracking": Row("tracking", "densereg", "mdm", "tracking: previous frame's box"),
}
POINTS = (68, 49)                       # the paper's 68 points; the 300-VW challenge's 49 (tagged)
SPLITS = ("cat1", "cat2", "cat3", "test")
CHUNK_COLUMNS = ("name", "video", "frame", "row", "points", "error", "status", "message", "seconds")
SCHEMA = records.SCHEMAS["tracking"]
PROTOCOL_VERSION = 2     # in the run id: bump when evaluate_video changes, so no stale progress is resumed


def add_arguments(parser):
    """The options of ``python -m benchmarks.run 300vw``."""
    add_common(parser)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to compute (default all: {', '.join(ROWS)})")
    parser.add_argument("--workers", type=int, default=1, help="videos evaluated at once (forked CPU processes)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per DenseReg forward pass (default 8)")
    parser.add_argument("--readout-workers", type=int, default=None,
                        help="CPU threads reading out one batch while the next is on the network (default: "
                             "0 on CPU, up to 8 on a GPU); the rows are the same for any value")
    parser.add_argument("--preset", default="default", help="configuration preset of the models (recorded)")
    parser.add_argument("--device", default="auto", help="torch device for DenseReg: auto, cpu, cuda[:N]")
    parser.add_argument("--checkpoint", type=Path, default=None, help="DenseReg checkpoint (default: the preset's)")
    parser.add_argument("--fresh", action="store_true", help="discard the progress of an interrupted run")


# ----------------------------------------------------------------------------------------------------------------
# The methods, and one video


@dataclass
class Methods:
    """What the rows run: ``detect(images, boxes) -> [68×2 | None]`` (DenseReg, batched),
    ``refine(images, shapes (B,68,2)) -> (B,68,2)`` (MDM; NaN in, NaN out) and ``from_box(box) -> 68×2``
    (MDM's start from a face box: its mean shape placed in the box)."""

    detect: object
    refine: object
    from_box: object
    model: object = None          # the DenseReg behind ``detect`` (its ``readout_workers`` is set by the run)


def build_methods(ctx):
    """DenseReg and MDM for ``ctx`` (their artefacts checked and recorded in ``ctx``)."""
    init = get_initialiser("densereg", ctx)
    mdm = get_fitter("mdm", ctx)
    model = init.model
    return Methods(lambda images, boxes: model.landmarks(list(images), box=[np.asarray(b, float) for b in boxes]),
                   mdm.fit_batch, mdm.initial_shape, model)


def _lost(shape, image_shape):
    """Whether a tracked shape cannot start the next frame: missing, off the frame, or collapsed."""
    if shape is None or not np.isfinite(shape).all():
        return True
    h, w = image_shape[:2]
    lo, hi = shape.min(0), shape.max(0)
    return hi[0] < 0 or hi[1] < 0 or lo[0] > w or lo[1] > h or min(hi - lo) < 4


def _as_array(shape):
    return np.full((68, 2), np.nan) if shape is None else np.asarray(shape, float)


def evaluate_video(samples, methods, rows, batch_size=8):
    """The per-frame results of one video (samples in frame order, unreliable frames included).

    Returns:
        dicts over :data:`CHUNK_COLUMNS`, one per scored frame × row × point set, in frame order.
    """
    out, previous = [], None
    frames = iter_frames(samples)      # decoded once, in order; one batch of frames held at a time
    while True:
        batch = [item for _, item in zip(range(batch_size), frames)]
        if not batch:
            break
        scored = [i for i, (s, _) in enumerate(batch) if not s.extras.get("unreliable")]
        shapes, seconds = {}, {}
        if scored and {"densereg", "densereg+mdm"} & set(rows):
            t = time.perf_counter()
            found = methods.detect([batch[i][1] for i in scored], [batch[i][0].box for i in scored])
            dr_time = (time.perf_counter() - t) / len(scored)
            detected = dict(zip(scored, found))
            shapes["densereg"] = {i: _as_array(detected[i]) for i in scored}
            seconds["densereg"] = dict.fromkeys(scored, dr_time)
            if "densereg+mdm" in rows:
                t = time.perf_counter()
                fitted = methods.refine([batch[i][1] for i in scored], np.stack([shapes["densereg"][i] for i in scored]))
                mdm_time = (time.perf_counter() - t) / len(scored)
                shapes["densereg+mdm"] = dict(zip(scored, fitted))
                seconds["densereg+mdm"] = dict.fromkeys(scored, dr_time + mdm_time)
        if "tracking" in rows:
            shapes["tracking"], seconds["tracking"] = {}, {}
            for i, (sample, image) in enumerate(batch):
                t = time.perf_counter()
                if _lost(previous, image.shape):   # (re)initialise from DenseReg on this frame
                    extra = seconds.get("densereg", {}).get(i)
                    start_shape = shapes["densereg"][i] if extra is not None else \
                        _as_array(methods.detect([image], [sample.box])[0])
                else:
                    extra, start_shape = None, methods.from_box(landmarks_box(previous))
                previous = methods.refine([image], start_shape[None])[0]
                shapes["tracking"][i] = previous
                seconds["tracking"][i] = time.perf_counter() - t + (extra or 0.0)
        for i in scored:
            sample = batch[i][0]
            for key in rows:
                for points in POINTS:
                    out.append(_score(sample, key, points, shapes[key][i], seconds[key][i]))
    return out


def _score(sample, key, points, shape, seconds):
    error = float(metrics.nme(shape, sample.landmarks, norm="outer-eye", points=points))
    status, message = ("ok", "") if np.isfinite(error) else ("miss", "no face found (DenseReg found none here)"
                                                              if key != "tracking" else "tracker lost the face")
    return {"name": sample.name, "video": sample.extras["video"], "frame": sample.extras["frame"], "row": key,
            "points": points, "error": repr(error), "status": status, "message": message,
            "seconds": f"{seconds:.6g}"}


# ----------------------------------------------------------------------------------------------------------------
# All videos: streamed, resumable, in workers


def run_id(ctx, rows, batch_size, limit):
    """What decides the numbers of a run, hashed: the progress folder of a resumable evaluation."""
    text = "|".join([str(PROTOCOL_VERSION), ctx.source, str(Path(ctx.root).resolve()), ctx.preset, str(ctx.seed),
                     ctx.identity(), ",".join(f"{r}:{ROWS[r].tag}" for r in rows), str(batch_size), str(limit)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def evaluate_videos(videos, methods, rows, progress_dir, batch_size=8, workers=1, progress=True):
    """Evaluate every video not yet done; returns ``{video: its per-frame results file}`` (:data:`CHUNK_COLUMNS`).

    A video's results go to ``progress_dir/<video>.csv``, written atomically when the video ends; a video whose
    file exists is not evaluated again, so an interrupted run resumes at the first unfinished video. Memory
    holds one batch of frames and one video's scores per worker.
    """
    from tqdm import tqdm

    progress_dir = Path(progress_dir)
    progress_dir.mkdir(parents=True, exist_ok=True)
    chunks = {v: progress_dir / f"{v}.csv" for v in videos}
    done = {v for v in videos if chunks[v].is_file()}
    todo = [v for v in videos if v not in done]
    total = sum(len(s) for s in videos.values())
    bar = tqdm(total=total, initial=sum(len(videos[v]) for v in done), desc="300vw frames", unit="frame",
               file=sys.stderr, disable=not progress)
    if done:
        print(f"[300vw] resuming: {len(done)} of {len(videos)} videos already evaluated in {progress_dir}",
              file=sys.stderr)

    def task(index):
        video = todo[index]
        records.write_csv(chunks[video], evaluate_video(videos[video], methods, rows, batch_size), CHUNK_COLUMNS)
        return video

    if workers > 1 and len(todo) > 1:
        for index, result in supervised_imap(task, len(todo), workers):
            if isinstance(result, WorkerDied):
                raise RuntimeError(f"the worker evaluating video {todo[index]} died ({result.cause}); rerun to "
                                   "resume from the videos finished so far")
            bar.update(len(videos[todo[index]]))
    else:
        for index, video in enumerate(todo):
            task(index)
            bar.update(len(videos[video]))
    bar.close()
    return chunks


def evaluate_sharded(videos, methods, rows, progress_dir, batch_size=8, workers=1, progress=True, shard=None):
    """:func:`evaluate_videos` under ``torchrun``: each rank tracks whole videos, balanced by frame count
    (``shards.balanced``), into the shared ``progress_dir`` (several machines: a shared file system); when all
    are done, rank 0 gets ``{video: results file}`` of every video, the others ``None``. The files, and so the
    rows, are what one process writes (tested with 2 CPU ranks)."""
    shard = shard or shards.current()
    names = list(videos)
    mine = [names[i] for i in shards.balanced([len(videos[v]) for v in names], shard)]
    evaluate_videos({v: videos[v] for v in mine}, methods, rows, progress_dir, batch_size, workers,
                    progress and shards.is_writer(shard))
    shards.barrier(shard)
    if not shards.is_writer(shard):
        return None
    chunks = {v: Path(progress_dir) / f"{v}.csv" for v in names}
    missing = [v for v, path in chunks.items() if not path.is_file()]
    if missing:
        raise RuntimeError(f"{progress_dir}: no results for videos {missing[:5]} after every rank finished")
    return chunks


# ----------------------------------------------------------------------------------------------------------------
# Rows


def _tag(row, points, limit):
    parts = [row.tag] if row.tag else []
    parts += [f"{points} points"] if points != 68 else []
    parts += [f"limit={limit}"] if limit else []
    return ", ".join(parts)


def record_rows(chunks, rows, ctx, results_dir, device, limit=None):
    """Score and record every (row, point set, split): one row of ``300vw.csv`` and its per-frame errors file.

    ``chunks``: ``{video: results file}`` of :func:`evaluate_videos`, read once per row and point set, so
    memory holds the scores of one of them at a time.
    """
    written = []
    for key in rows:
        row = ROWS[key]
        for points in POINTS:
            mine = [r for path in chunks.values() for r in records.read_csv(path)[0]
                    if r["row"] == key and int(r["points"]) == points]
            for split in SPLITS:
                chosen = [r for r in mine if split == "test" or CATEGORY_300VW.get(r["video"]) == split]
                if not chosen:
                    continue
                tag = _tag(row, points, limit)
                errors = np.array([float(r["error"]) for r in chosen])
                summary = metrics.summarise(errors)
                seconds = float(np.mean([float(r["seconds"]) for r in chosen]))
                key_cols = {"dataset": "300vw", "split": split, "init": row.init, "fitter": row.fitter,
                            "source": ctx.source, "preset": ctx.preset, "seed": ctx.seed,
                            "artefacts": ctx.identity(), "tag": tag}
                err_path = errors_path(results_dir, "300vw", split, row.init, row.fitter, ctx.source, ctx.preset,
                                       tag, ctx.seed, ctx.identity())
                record = {**key_cols, **{k: f"{summary[k]:.6f}" for k in ("auc_0.1", "failure_0.1", "auc_0.08",
                                                                          "failure_0.08")},
                          "mean_nme": f"{summary['mean']:.6g}", "median_nme": f"{summary['median']:.6g}",
                          "n": summary["n"], "misses": summary["n_inf"], "seconds_per_image": f"{seconds:.4g}",
                          "frames_per_second": f"{1.0 / max(seconds, 1e-12):.4g}", "points": points,
                          "n_videos": len({r["video"] for r in chosen}), **records.stamp(device),
                          "errors": err_path.relative_to(results_dir).as_posix()}
                errors_rows = [{k: r[k] for k in records.ERROR_COLUMNS} for r in chosen]
                records.write_run(results_table(results_dir, "300vw"), [record], SCHEMA, err_path, errors_rows)
                written.append(record)
    return written


# ----------------------------------------------------------------------------------------------------------------
# The command


def load_videos(source, root, limit=None, require_all=True):
    """``{video: samples in frame order}`` of the test split, unreliable frames flagged (not dropped).

    Real data must hold all 64 test videos (``require_all=False`` reads those present); the synthetic set holds
    the videos its manifest lists, and exactly those (a missing one is an error, never a silent gap).
    """
    if source == "synthetic" and (Path(root) / "300VW" / "synth.json").is_file():
        from densereg.data import synth_video

        listed = set(synth_video.read_manifest(root)["videos"])
        samples = datasets.load_dataset("300vw", root, "test", require_all=False)
        present = {s.extras["video"] for s in samples}
        if present != listed:
            raise formats.DatasetError(f"{root}/300VW: videos {sorted(listed ^ present)} are listed in synth.json "
                                       "but absent, or present but not listed")
    else:
        samples = datasets.load_dataset("300vw", root, "test", require_all=require_all)
    videos = {}
    for sample in samples:
        videos.setdefault(sample.extras["video"], []).append(sample)
    for video, frames in videos.items():
        frames.sort(key=lambda s: s.extras["frame"])
        if limit:
            videos[video] = frames[:limit]
    return videos


def run(args):
    """``python -m benchmarks.run 300vw``: evaluate, record and print Table 3's rows; returns them."""
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        raise ValueError(f"--rows: unknown {unknown or 'empty'}; valid: {', '.join(ROWS)}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    source, root = resolve_data("300VW", args.source, args.root)
    videos = load_videos(source, root, args.limit)
    ctx = RunContext(source=source, root=root, dataset="300vw", runs_dir=artefact_root(args.runs, source, "300vw"),
                     preset=args.preset, seed=args.seed, checkpoint=args.checkpoint, device=args.device)
    n_frames = sum(len(v) for v in videos.values())
    n_dropped = sum(s.extras.get("unreliable", False) for v in videos.values() for s in v)
    print(f"[300vw] {source} data at {root}: {len(videos)} test videos, {n_frames} frames ({n_dropped} flagged "
          f"unreliable: not scored); rows {', '.join(rows)}; preset {ctx.preset}, seed {ctx.seed}", file=sys.stderr)
    shard = shards.current()
    with shards.rank_zero_first(shard):      # under torchrun: rank 0 builds any missing artefact, the others load
        methods = build_methods(ctx)
    device = method_device(ctx)
    readout_workers = args.readout_workers
    if readout_workers is None:
        readout_workers = 0 if not device.startswith("cuda") else min(8, max(1, (os.cpu_count() or 1) // shard.world))
    if readout_workers < 0:
        raise ValueError(f"--readout-workers must be 0 or more, got {readout_workers}")
    if methods.model is not None:
        methods.model.readout_workers = readout_workers
    first = next(iter(videos.values()))[0]
    methods.detect([first.image()], [first.box])   # warm-up (lazy initialisation), so it is not timed
    if args.workers > 1 and device.startswith("cuda"):
        raise ValueError("--workers > 1 forks CPU processes; on a GPU use --workers 1 and a larger --batch-size")
    progress_dir = Path(ctx.runs_dir) / "300vw-progress" / run_id(ctx, rows, args.batch_size, args.limit)
    if args.fresh and shards.is_writer(shard):
        shutil.rmtree(progress_dir, ignore_errors=True)
    shards.barrier(shard)                    # no rank writes a video before rank 0 has cleared the folder
    start = time.perf_counter()
    chunks = evaluate_sharded(videos, methods, rows, progress_dir, args.batch_size, args.workers,
                              not args.no_progress, shard)
    seconds = time.perf_counter() - start
    if chunks is None:                       # a torchrun rank other than 0: its videos are in progress_dir
        return []
    print(f"[300vw] {n_frames} frames evaluated in {seconds:.0f} s: {n_frames / max(seconds, 1e-9):.1f} frames/s "
          f"for all rows together ({shard.world} process(es), {args.workers} worker(s) each, batch "
          f"{args.batch_size}, {readout_workers} read-out thread(s), {device}; videos resumed from an earlier "
          "run count as instant)", file=sys.stderr)
    written = record_rows(chunks, rows, ctx, Path(args.results), device, args.limit)
    from benchmarks.experiments import tracking_report

    print(tracking_report.category_markdown(Path(args.results)))
    figure = tracking_report.ced_figure(Path(args.results))
    print(f"[300vw] {len(written)} rows written to {results_table(args.results, '300vw')} in "
          f"{time.perf_counter() - start:.0f} s; CED figure {figure}", file=sys.stderr)
    return written
