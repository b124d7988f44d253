"""The synthetic 300-VW: videos of the built-in face moving smoothly, in 300-VW's native layout.

    python -m densereg.data.synth_video [--out DIR] [--seed S] [--videos 6,4,3] [--frames 150]

With no ``--out`` it (re)builds ``300VW/`` of the default synthetic benchmark (``data/synthetic`` or
``$DENSEREG_SYNTH``); ``python -m benchmarks.run 300vw --source synthetic`` does so on first use.

Why: Table 3 (deformable tracking on 300-VW) must run end to end without the real videos, through the code path
the real ones take. Each video is one identity whose pose, expression, light, occluders and camera (position,
zoom, pan of the background) follow smooth random trajectories; three categories mirror the benchmark's
(reference §5):

* ``cat1``, well lit, mild motion: near-frontal head (yaw ±20°), slow drift, even light, no occluder;
* ``cat2``, real-world interaction: moderate motion (yaw ±40°), light that changes direction and strength,
  now and then a small occluder;
* ``cat3``, arbitrary conditions: fast motion with motion blur, out-of-plane turns out to ±75° yaw, extreme
  side light with low ambient and flicker, large occluders over the face for long stretches.

Written as 300-VW is (``densereg.data.readers.read_300vw`` reads both): ``300VW/<video>/vid.avi`` (MJPEG) and
``300VW/<video>/annot/%06d.pts`` (1-based frames and coordinates, CRLF, the 300-VW ``.pts`` style). Video ids
are the first ones of each real category list (``VIDEOS_300VW``), so a video's category is read the real way.
Some videos carry a run of frames whose annotation is wrong (shifted, as a careless annotator's would be),
flagged in ``300VW/extra/<video>.mat`` (variable ``error``, 1-based frames) like the real ``extra.zip``; the
protocol drops them by that same rule. ``300VW/synth.json`` is the manifest (seed, sizes, videos, flagged
frames); a build goes to a temporary folder renamed into place, so a cut build never looks complete.

Our default is 6/4/3 videos of 150 frames (1,950 frames; 256×256 px) against the real 31/19/14 test videos
(123k frames of 700×512 to 1280×720): what a 2-core machine evaluates within Table 3's time budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from densereg.data import appearance, datasets, formats, synth
from densereg.data.readers import VIDEOS_300VW
from densereg.data.workers import WorkerDied, supervised_imap
from densereg.geometry import camera
from densereg.geometry.templates import builtin_face

FORMAT_VERSION = 1            # bump when what is written changes: cached videos are then rebuilt
DEFAULT_VIDEOS = {"cat1": 6, "cat2": 4, "cat3": 3}   # the real 31/19/14 scaled by ~1/5
DEFAULT_FRAMES = 150
FRAME_SIZE = 256              # square frames at the scale the 300-W-style training faces have
FPS = 30
CATEGORY_IDS = {"cat1": 1, "cat2": 2, "cat3": 3}


@dataclass(frozen=True)
class Conditions:
    """How hard one category is: amplitudes (degrees, fractions of the frame) and rates of its trajectories.

    Attributes:
        yaw, pitch, roll: amplitude of the head angles (degrees).
        cycles: how many slow oscillations a trajectory makes over the video (motion speed).
        turns: fast out-of-plane turns (yaw sweeps out to ``turn_yaw`` and back in ~20 frames) per video.
        shift: amplitude of the face centre's motion, a fraction of the frame.
        zoom: relative amplitude of the face scale (camera zoom / head distance).
        harsh: strong side light with low ambient (``appearance.random_light``).
        light_swing: how far the light direction swings (radians); flicker: amplitude of the gain changes.
        occluder_frames: fraction of frames an occluder covers part of the face; occluder_scale its size.
        blur: per-video blur sigma range; motion_blur: motion-blur length per pixel of motion per frame.
        noise: sensor noise range (fraction of full scale).
    """

    yaw: float
    pitch: float
    roll: float
    cycles: tuple
    turns: int
    turn_yaw: float
    shift: float
    zoom: float
    harsh: bool
    light_swing: float
    flicker: float
    occluder_frames: float
    occluder_scale: float
    blur: tuple
    motion_blur: float
    noise: tuple


CATEGORIES = {
    "cat1": Conditions(20, 8, 6, (0.5, 1.5), 0, 0, 0.05, 0.05, False, 0.1, 0.0, 0.0, 0.0, (0.0, 0.6), 0.0,
                       (0.004, 0.01)),
    "cat2": Conditions(40, 12, 10, (1.0, 3.0), 0, 0, 0.10, 0.12, False, 1.0, 0.25, 0.25, 0.6, (0.3, 1.0), 0.3,
                       (0.008, 0.02)),
    "cat3": Conditions(55, 20, 18, (2.0, 5.0), 2, 75, 0.16, 0.20, True, 1.6, 0.45, 0.55, 1.0, (0.5, 1.6), 0.8,
                       (0.015, 0.04)),
}


def video_ids(counts):
    """``[(video id, category)]``: the first ``counts[cat]`` ids of each real category list, in order."""
    out = []
    for category in CATEGORIES:
        n = int(counts.get(category, 0))
        if n > len(VIDEOS_300VW[category]):
            raise ValueError(f"{category}: at most {len(VIDEOS_300VW[category])} videos (the real list), got {n}")
        out += [(video, category) for video in VIDEOS_300VW[category][:n]]
    return out


# ------------------------------------------------------------------------------------------------ trajectories


def smooth_signal(rng, n_frames, cycles, n_waves=3):
    """A smooth zero-mean signal in about [-1, 1] over ``n_frames``: a few sinusoids of random phase whose
    frequencies make ``cycles`` (a range) oscillations over the video."""
    t = np.arange(n_frames) / max(n_frames - 1, 1)
    freqs = rng.uniform(*cycles, n_waves)
    amps = rng.uniform(0.3, 1.0, n_waves)
    signal = sum(a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for a, f in zip(amps, freqs))
    return signal / amps.sum()


def _turns(rng, n_frames, count, amplitude):
    """Fast out-of-plane turns: raised-cosine yaw sweeps (degrees) of ~20 frames at random times."""
    out = np.zeros(n_frames)
    for _ in range(count):
        length = int(rng.integers(14, 26))
        start = int(rng.integers(0, max(n_frames - length, 1)))
        bump = 0.5 - 0.5 * np.cos(np.linspace(0, 2 * np.pi, length))
        out[start:start + length] += rng.choice([-1, 1]) * amplitude * bump[: n_frames - start]
    return out


def trajectories(rng, template, cond, n_frames, size):
    """Every per-frame parameter of one video: dict of arrays over frames (angles in radians)."""
    sig = lambda: smooth_signal(rng, n_frames, cond.cycles)  # noqa: E731
    yaw = cond.yaw * sig() + _turns(rng, n_frames, cond.turns, cond.turn_yaw)
    yaw = np.clip(yaw, -85, 85)
    n_exp = template.exp_basis.shape[0]
    active = rng.random(n_exp) < 0.4
    expression = np.clip(0.5 + 0.6 * np.stack([sig() for _ in range(n_exp)], 1), 0, 1) * active
    return {
        "pitch": np.radians(cond.pitch * sig()), "yaw": np.radians(yaw), "roll": np.radians(cond.roll * sig()),
        "cx": size * (0.5 + cond.shift * sig()), "cy": size * (0.5 + cond.shift * sig()),
        "scale": rng.uniform(0.19, 0.24) * size * (1 + cond.zoom * sig()),
        "expression": expression, "pan": sig(), "light": sig(), "light2": sig(), "gain": 1 + cond.flicker * sig(),
    }


def _light(base, cond, phase, phase2, gain):
    """The base light of the video turned by ``phase`` (azimuth) and ``phase2`` (elevation) and scaled."""
    light = dict(base)
    az = np.arctan2(base["direction"][0], base["direction"][2]) + cond.light_swing * phase
    el = np.clip(np.arcsin(np.clip(base["direction"][1], -1, 1)) + 0.5 * cond.light_swing * phase2, -0.6, 1.2)
    light["direction"] = np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
    light["gain"] = base["gain"] * gain
    return light


# ------------------------------------------------------------------------------------------------ rendering


def render_video(video_index, category, seed, n_frames=DEFAULT_FRAMES, size=FRAME_SIZE):
    """Render one video: yields ``(frame image H×W×3 uint8 RGB, 68×2 0-based landmarks)`` for each frame.

    Deterministic in ``(seed, category, video_index)``.
    """
    template = builtin_face()
    cond = CATEGORIES[category]
    rng = np.random.default_rng([seed, 300, CATEGORY_IDS[category], video_index])
    n_id = template.id_basis.shape[0]
    identity = np.clip(rng.normal(0, 0.8, n_id), -2.5, 2.5)
    albedo = appearance.paint_albedo(template, rng)
    margin = int(size * 0.3)
    backdrop = appearance.background(rng, size, size + 2 * margin)   # wider than the frame: the camera pans
    base_light = appearance.random_light(rng, cond.harsh)
    path = trajectories(rng, template, cond, n_frames, size)
    blur = rng.uniform(*cond.blur)
    noise = rng.uniform(*cond.noise)
    occluder = smooth_signal(rng, n_frames, (0.5, 1.5))
    occluder_on = occluder > np.quantile(occluder, 1 - cond.occluder_frames)   # that fraction of the frames
    occ_rng = np.random.default_rng([seed, 302, CATEGORY_IDS[category], video_index])
    occ_colour, occ_phase = occ_rng.uniform(0, 1, 3).astype(np.float32), occ_rng.uniform(0, 2 * np.pi)
    previous = None
    for k in range(n_frames):
        shift = int(round(margin * (1 + path["pan"][k])))
        canvas = backdrop[:, shift:shift + size].copy()
        pose = np.array([path["pitch"][k], path["yaw"][k], path["roll"][k], path["cx"][k] + 1,
                         size - path["cy"][k], 0.0, path["scale"][k]])
        verts = camera.project_3ddfa(template.instance(identity, path["expression"][k]), pose, size)
        landmarks = verts[template.landmarks, :2].copy()
        light = _light(base_light, cond, path["light"][k], path["light2"][k], path["gain"][k])
        synth._draw_face(template, albedo, verts, canvas, light)   # the benchmark's own face renderer
        if occluder_on[k] and cond.occluder_scale > 0:
            canvas = _occlude(canvas, landmarks, occ_colour, occ_phase + 0.08 * k, cond.occluder_scale)
        motion = 0.0 if previous is None else float(np.linalg.norm(landmarks.mean(0) - previous))
        previous = landmarks.mean(0)
        yield _camera(rng, canvas, blur, cond.motion_blur * motion, noise), landmarks


def _occlude(canvas, landmarks, colour, phase, scale):
    """An opaque hand-like blob moving over the face on a circle around its centre (``phase`` turns it)."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    extent = float(max(hi - lo))
    centre = (lo + hi) / 2 + 0.35 * extent * np.array([np.cos(phase), np.sin(phase)])
    alpha = np.zeros(canvas.shape[:2], np.float32)
    axes = (int(0.3 * scale * extent) + 2, int(0.45 * scale * extent) + 2)
    cv2.ellipse(alpha, (int(centre[0]), int(centre[1])), axes, float(np.degrees(phase)), 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 1.0)[..., None]
    return canvas * (1 - alpha) + colour * alpha


def _camera(rng, canvas, blur, motion_blur, noise):
    """Sensor effects of one frame: focus blur, horizontal motion blur, noise; returns uint8 RGB."""
    img = np.clip(canvas, 0, 1).astype(np.float32)
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    length = int(round(motion_blur))
    if length >= 2:
        img = cv2.filter2D(img, -1, np.full((1, length), 1.0 / length, np.float32))
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def unreliable_run(rng, n_frames):
    """1-based frames of a run whose annotation is wrong, in about half the videos (empty otherwise)."""
    if rng.random() < 0.5 or n_frames < 20:
        return []
    length = int(rng.integers(3, 9))
    start = int(rng.integers(2, n_frames - length))
    return list(range(start, start + length))


# ------------------------------------------------------------------------------------------------ writing


def write_video(base, video, index, category, seed, n_frames=DEFAULT_FRAMES, size=FRAME_SIZE):
    """Render video ``video`` and write it under ``base`` (the ``300VW`` folder); returns its manifest entry."""
    folder = Path(base) / video
    (folder / "annot").mkdir(parents=True, exist_ok=True)
    flag_rng = np.random.default_rng([seed, 303, CATEGORY_IDS[category], index])
    flagged = set(unreliable_run(flag_rng, n_frames))
    writer = cv2.VideoWriter(str(folder / "vid.avi"), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"{folder / 'vid.avi'}: OpenCV cannot write MJPEG .avi videos here")
    try:
        for k, (image, landmarks) in enumerate(render_video(index, category, seed, n_frames, size), start=1):
            writer.write(np.ascontiguousarray(image[:, :, ::-1]))
            if k in flagged:   # a wrong annotation: the whole shape shifted and squashed, as 300-VW's bad frames
                centre = landmarks.mean(0)
                landmarks = centre + (landmarks - centre) * [1.0, 0.8] + flag_rng.normal(0, 6, 2)
            formats.write_pts(folder / "annot" / f"{k:06d}.pts", landmarks, style="300vw")
    finally:
        writer.release()
    if flagged:
        (Path(base) / "extra").mkdir(exist_ok=True)
        scipy.io.savemat(Path(base) / "extra" / f"{video}.mat", {"error": np.array(sorted(flagged), float)[None]})
    return {"category": category, "frames": n_frames, "unreliable": sorted(flagged)}


def generate(out, seed=0, counts=None, n_frames=DEFAULT_FRAMES, workers=None, progress=True):
    """Write the synthetic 300-VW into ``out`` (the ``300VW`` folder) atomically; returns its manifest.

    Built in ``<out>.tmp-<pid>`` and renamed into place; an existing ``out`` is replaced only when this
    generator wrote it (it has ``synth.json``) or it is empty.

    Raises:
        FileExistsError: ``out`` holds other files (real 300-VW videos are never overwritten).
    """
    counts = {**DEFAULT_VIDEOS, **(counts or {})}
    out = Path(out)
    if out.exists() and not (out / "synth.json").is_file() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty and not a synthetic 300-VW (no synth.json); refusing to replace it")
    synth._remove_stale_builds(out)
    def fill(tmp):
        plan = video_ids(counts)
        index_in_category = {v: list(VIDEOS_300VW[c]).index(v) for v, c in plan}
        start = time.perf_counter()
        from tqdm import tqdm

        bar = tqdm(total=len(plan), desc="synthetic 300-VW", unit="video", disable=not progress, file=sys.stderr)
        videos = {}
        task = lambda i: write_video(tmp, plan[i][0], index_in_category[plan[i][0]], plan[i][1], seed, n_frames)  # noqa: E731
        n_workers = max(1, min(workers or min(os.cpu_count() or 1, 4), len(plan)))
        results = (supervised_imap(task, len(plan), n_workers) if n_workers > 1
                   else ((i, task(i)) for i in range(len(plan))))
        for i, entry in results:
            if isinstance(entry, WorkerDied):
                raise RuntimeError(f"the worker rendering video {plan[i][0]} died ({entry.cause})")
            videos[plan[i][0]] = entry
            bar.update()
        bar.close()
        manifest = {"format_version": FORMAT_VERSION, "seed": seed, "counts": counts, "frames": n_frames,
                    "frame_size": FRAME_SIZE, "background_photos": appearance.background_photos(),
                    "videos": {v: videos[v] for v, _ in plan}, "seconds": round(time.perf_counter() - start, 2),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        formats.atomic_write_bytes(tmp / "synth.json", json.dumps(manifest, indent=2).encode())
        return manifest

    return formats.build_folder(out, fill)


def read_manifest(root):
    """The manifest of the synthetic 300-VW under data root ``root``, or None when absent."""
    path = Path(root) / "300VW" / "synth.json"
    return json.loads(path.read_text()) if path.is_file() else None


def ensure_videos(root=None, seed=0, counts=None, n_frames=DEFAULT_FRAMES):
    """``root`` (default: the synthetic data root) once its ``300VW/`` is the synthetic 300-VW of these sizes,
    generating it first when absent or stale (another format version, seed, sizes or background photos)."""
    root = Path(root) if root is not None else datasets.data_root("synthetic")
    want = {**DEFAULT_VIDEOS, **(counts or {})}
    have = read_manifest(root)
    if have and have.get("format_version") == FORMAT_VERSION and have.get("seed") == seed \
            and have.get("counts") == want and have.get("frames") == n_frames \
            and have.get("background_photos") == appearance.background_photos():
        return root
    why = "first use" if not have else "its manifest differs in format, seed, sizes or background photos"
    print(f"[synth] generating the synthetic 300-VW into {root / '300VW'} ({why}) ...", file=sys.stderr)
    manifest = generate(root / "300VW", seed=seed, counts=want, n_frames=n_frames)
    print(f"[synth] done: {len(manifest['videos'])} videos of {n_frames} frames in {manifest['seconds']:.0f} s",
          file=sys.stderr)
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m densereg.data.synth_video", description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", type=Path, default=None, help="data root (default: data/synthetic); writes OUT/300VW")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", default=",".join(str(v) for v in DEFAULT_VIDEOS.values()),
                        help="videos of categories 1,2,3 (default %(default)s; the real test set has 31,19,14)")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames per video")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        counts = dict(zip(CATEGORIES, (int(n) for n in args.videos.split(",")), strict=True))
    except ValueError:
        parser.error(f"--videos takes three counts, e.g. 6,4,3 (got {args.videos!r})")
    root = args.out or datasets.data_root("synthetic")
    manifest = generate(Path(root) / "300VW", seed=args.seed, counts=counts, n_frames=args.frames,
                        workers=args.workers)
    print(f"synthetic 300-VW written to {Path(root) / '300VW'}: {len(manifest['videos'])} videos in "
          f"{manifest['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
