"""Synthetic ears in the iBUG 55-point markup, written as iBUG ears Collection A (``ears/{train,test}``).

    python -m densereg.data.synth_ears --out DIR [--seed S --n-train 500 --n-test 102] [--preview FILE.png]

With no ``--out`` it (re)builds the ears of the default synthetic benchmark (``data/synthetic/ears``); the
harness does that on first use (``densereg.data.synth.ensure_synthetic(..., extras=("ears",))``).

Why: the ear table (paper Table 4) must run end to end without the iBUG images, whose terms forbid shipping
them. Each sample is a procedural ear: a canonical 55-point ear (:func:`canonical_ear`, drawn from the
markup's meaning in ``densereg.geometry.ear``) deformed by random shape modes (aspect, helix width, lobule
length, concha size, a smooth random warp), placed left or right (a mirror image), rotated, scaled and moved;
drawn with a height field built from its own landmarks (raised helix rim and antihelix with its superior
crus, sunken concha, tragus bump, soft lobule) and Lambertian-lit, in a random skin tone; on a background of
cheek skin, hair and clutter; sometimes with occluding hair strands or an earring; then blurred, noised and
JPEG-compressed (``densereg.data.appearance.degrade``). The written landmarks are the ear's 55 points; the
dense ground truth is then made from them exactly as for real ears (``densereg.geometry.ear.ear_gt``).

Layout: ``<root>/ears/train/train_NNNN.png`` + ``.txt`` (PTS content, as the public copies of Collection A
name them; the reader accepts ``.pts`` too) and ``<root>/ears/test/test_NNNN.*``; ``ears/synth_ears.json`` is
the manifest. Sample ``i`` of split ``s`` is drawn from the seed ``(seed, 100 + s, i)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from densereg.data import appearance, datasets, formats
from densereg.geometry import ear

IMAGE_SIZE = 256
DEFAULT_COUNTS = {"train": 500, "test": 102}      # the paper's split of Collection A (Sec. 4.7)
FORMAT_VERSION = 1
SPLIT_IDS = {"train": 100, "test": 101}
MANIFEST = "synth_ears.json"


def canonical_ear() -> np.ndarray:
    """(55, 2) a right-facing canonical ear (helix root on the +x side, y down), height 1, centred near 0."""
    def polar(angles_deg, rx, ry, centre=(0.0, 0.0), shrink=None):
        a = np.radians(angles_deg)
        f = 1.0 if shrink is None else shrink
        return np.stack([centre[0] + f * rx * np.cos(a), centre[1] - f * ry * np.sin(a)], 1)

    # outer helix 0-19: root (inset towards the concha), over the top, down the back, to the lobule bottom
    phi = np.linspace(25, 282, 20)
    inset = 1 - 0.28 * np.exp(-((phi - 25) / 22) ** 2)
    outer = polar(phi, 0.30, 0.50, (0.0, 0.0), inset)
    # inner helix 20-34: the inner edge of the rim, from beside the root to the back
    psi = np.linspace(15, 235, 15)
    inner = polar(psi, 0.23, 0.40, (0.01, -0.01), 1 - 0.25 * np.exp(-((psi - 15) / 20) ** 2))
    # tragus / concha / inferior crus 35-49: a loop around the concha, from the tragus down, back, over the top
    loop = polar(np.linspace(-5, -330, 15), 0.13, 0.19, (0.04, 0.04))
    loop[0, 0] += 0.03                              # the tragus stands forward
    # superior crus 50-54: from above the concha towards the front under the helix top
    t = np.linspace(0, 1, 5)
    crus = np.stack([-0.12 + 0.26 * t, -0.20 - 0.10 * t + 0.04 * t * (1 - t)], 1)
    return np.concatenate([outer, inner, loop, crus])


def sample_shape(rng: np.random.Generator) -> np.ndarray:
    """A random ear in the canonical frame: shape modes plus a smooth random warp (see the module docstring)."""
    pts = canonical_ear()
    pts = pts * [rng.uniform(0.85, 1.15), 1.0]                        # aspect
    top = np.clip(-pts[:, 1] / 0.5, 0, 1)                             # 1 at the helix top, 0 at the middle
    pts[:, 0] *= 1 + rng.uniform(-0.12, 0.12) * top                   # helix width
    low = np.clip(pts[:, 1] / 0.5, 0, 1) ** 2                         # the lobule
    pts[:, 1] += rng.uniform(-0.08, 0.10) * low
    concha = np.r_[35:50]
    c = pts[concha].mean(0)
    pts[concha] = c + (pts[concha] - c) * rng.uniform(0.85, 1.15)
    anchors = np.array([[-0.3, -0.5], [0.3, -0.5], [-0.3, 0.5], [0.3, 0.5], [0.0, 0.0], [-0.35, 0.0], [0.3, 0.1]])
    from densereg.geometry.tps import ThinPlateSpline

    warp = ThinPlateSpline.fit(anchors, anchors + rng.normal(0, 0.025, anchors.shape))
    return warp(pts) + rng.normal(0, 0.004, pts.shape)


def place(shape: np.ndarray, rng: np.random.Generator, size: int) -> tuple[np.ndarray, bool]:
    """The ear in image pixels: left (mirrored) or right, rotated, scaled (height 40-70% of the image), moved."""
    left = bool(rng.random() < 0.5)
    pts = shape * [-1.0 if left else 1.0, 1.0]
    angle = np.radians(rng.normal(0, 12))
    c, s = np.cos(angle), np.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]]) * (rng.uniform(0.40, 0.70) * size)
    lo, hi = pts.min(0), pts.max(0)
    centre = rng.uniform(0.40, 0.60, 2) * size
    return pts - (lo + hi) / 2 + centre, left


def _distance_to(polyline: np.ndarray, shape: tuple[int, int], closed: bool = False) -> np.ndarray:
    """Distance (pixels) of every pixel to a polyline."""
    canvas = np.full(shape, 255, np.uint8)
    cv2.polylines(canvas, [np.round(polyline * 4).astype(np.int32).reshape(-1, 1, 2)], closed, 0, 1,
                  lineType=cv2.LINE_8, shift=2)
    return cv2.distanceTransform(canvas, cv2.DIST_L2, 5)


def height_field(pts: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(height, mask)`` of an ear in the image: the ear region (``ear.ear_region``) with a raised helix rim
    (between outer and inner helix), antihelix and superior crus, a sunken concha, a tragus bump."""
    h, w = shape
    mask = ear.ear_region(pts, h, w)
    scale = float(np.ptp(pts[:, 1])) or 1.0
    rim = (pts[0:15] + np.concatenate([pts[20:35]])) / 2                  # midline of the helix rim
    antihelix = np.concatenate([(pts[30:35] + pts[40:45][::-1]) / 2, pts[50:55][::-1]])
    height = 0.25 * np.ones(shape, np.float32)
    height += 0.55 * np.exp(-(_distance_to(rim, shape) / (0.045 * scale)) ** 2)
    height += 0.40 * np.exp(-(_distance_to(antihelix, shape) / (0.05 * scale)) ** 2)
    concha = np.zeros(shape, np.uint8)
    cv2.fillPoly(concha, [np.round(pts[35:50]).astype(np.int32).reshape(-1, 1, 2)], 1)
    height -= 0.45 * cv2.GaussianBlur(concha.astype(np.float32), (0, 0), 0.04 * scale)
    d_tragus = np.hypot(*(np.mgrid[0:h, 0:w][::-1] - pts[35][:, None, None]))
    height += 0.35 * np.exp(-(d_tragus / (0.06 * scale)) ** 2)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.03 * scale)
    return cv2.GaussianBlur(height, (0, 0), 0.01 * scale + 0.5) * soft, mask


def _normals(height: np.ndarray, relief: float) -> np.ndarray:
    gy, gx = np.gradient(height * relief)
    n = np.stack([-gx, -gy, np.ones_like(gx)], -1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def _hair(rng, canvas, colour, region, strands, width):
    """Draw ``strands`` hair strands (random quadratic curves) inside ``region`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = region
    for _ in range(strands):
        p = np.array([[rng.uniform(x0, x1), rng.uniform(y0, y1)] for _ in range(3)])
        t = np.linspace(0, 1, 20)[:, None]
        curve = (1 - t) ** 2 * p[0] + 2 * t * (1 - t) * p[1] + t ** 2 * p[2]
        shade = tuple(float(v) for v in np.clip(colour * rng.uniform(0.6, 1.4), 0, 1))
        cv2.polylines(canvas, [np.round(curve).astype(np.int32).reshape(-1, 1, 2)], False, shade,
                      int(rng.integers(1, width + 1)), lineType=cv2.LINE_AA)


def render_ear(rng: np.random.Generator, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray, bool]:
    """One synthetic ear image: ``(H×W×3 uint8 RGB, (55, 2) landmarks, left)``."""
    pts, left = place(sample_shape(rng), rng, size)
    canvas = appearance.background(rng, size, size)
    tone = appearance.SKIN_TONES[rng.integers(len(appearance.SKIN_TONES))] * rng.uniform(0.9, 1.1, 3)
    hair = appearance.HAIR_TONES[rng.integers(len(appearance.HAIR_TONES))].astype(np.float32)
    # the side of the head: cheek skin towards the face (the helix root's side), hair above and behind
    front = np.sign(pts[ear.HELIX_ROOT, 0] - pts[:, 0].mean())
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = pts.mean(0)
    head = (xx - centre[0]) * front > -rng.uniform(0.3, 0.9) * np.ptp(pts[:, 0])
    head |= np.hypot(xx - centre[0], yy - centre[1]) < rng.uniform(0.55, 0.8) * np.ptp(pts[:, 1])
    if rng.random() < 0.85:
        skin = tone * (1 + 0.05 * appearance._smooth_noise(rng, size, 30, 3)) * rng.uniform(0.8, 1.0)
        canvas = np.where(head[..., None], skin, canvas).astype(np.float32)
    if rng.random() < 0.8:
        top = pts[:, 1].min() - rng.uniform(-0.05, 0.3) * np.ptp(pts[:, 1])
        _hair(rng, canvas, hair, (0, 0, size, max(top, 1)), 60, 3)
        behind = (0, 0, max(pts[:, 0].min(), 1), size) if front > 0 else (pts[:, 0].max(), 0, size, size)
        _hair(rng, canvas, hair, behind, 40, 3)
    # the ear itself: albedo with blotches, shaded by its height field
    height, mask = height_field(pts, (size, size))
    light = appearance.random_light(rng, harsh=rng.random() < 0.3)
    normals = _normals(height, relief=rng.uniform(12, 25) * np.ptp(pts[:, 1]) / 100)
    albedo = tone * (1 + 0.06 * appearance._smooth_noise(rng, size, 20, 3))
    albedo = albedo * (1 + 0.10 * np.clip(height, 0, 1)[..., None])     # a redder, lit rim
    lit = appearance.shade(albedo.astype(np.float32), normals, light)
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)[..., None]
    canvas = canvas * (1 - alpha) + lit * alpha
    # occluders: hair strands over the ear, an earring at the lobule
    if rng.random() < 0.3:
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        _hair(rng, canvas, hair, (x0, y0 - 10, x1, y0 + rng.uniform(0.2, 0.6) * (y1 - y0)),
              int(rng.integers(5, 25)), 3)
    if rng.random() < 0.25:
        lobe = 0.7 * pts[19] + 0.3 * pts[17]
        metal = tuple(float(v) for v in rng.choice([[0.85, 0.7, 0.3], [0.8, 0.8, 0.82], [0.6, 0.1, 0.2]]))
        r = max(2, int(rng.uniform(0.03, 0.12) * np.ptp(pts[:, 1])))
        ring_centre = (int(round(lobe[0])), int(round(lobe[1] + (r if rng.random() < 0.5 else 0))))
        cv2.circle(canvas, ring_centre, r, metal, -1 if rng.random() < 0.4 else 2, lineType=cv2.LINE_AA)
    return appearance.degrade(rng, np.clip(canvas, 0, 1).astype(np.float32), harsh=rng.random() < 0.3), pts, left


def sample_paths(ears: Path, split: str, index: int) -> tuple[Path, Path]:
    """``(image, annotation)`` of sample ``index`` of ``split`` in the ears folder ``ears`` (``<root>/ears``)."""
    folder = Path(ears) / split
    return folder / f"{split}_{index:04d}.png", folder / f"{split}_{index:04d}.txt"


def generate(root: Path, seed: int = 0, counts: dict | None = None, progress: bool = True) -> dict:
    """Write the synthetic ears under ``root/ears`` atomically (built in ``ears.tmp-<pid>``, then renamed).

    Raises:
        FileExistsError: ``root/ears`` exists and was not written by this generator (no manifest).
    """
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    out = Path(root) / "ears"
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty and not made by densereg.data.synth_ears (no {MANIFEST}); "
                              "refusing to replace it")
    def fill(tmp):
        start = time.perf_counter()
        for split in ("train", "test"):
            (tmp / split).mkdir(parents=True)
            for i in range(counts[split]):
                image, pts, _ = render_ear(np.random.default_rng([seed, SPLIT_IDS[split], i]))
                img_path, pts_path = sample_paths(tmp, split, i)
                formats.write_image(img_path, image)
                formats.write_pts(pts_path, pts, style="ibug")
                if progress and (i + 1) % 100 == 0:
                    print(f"[synth_ears] {split}: {i + 1}/{counts[split]}", file=sys.stderr)
        manifest = {"format_version": FORMAT_VERSION, "seed": seed, "counts": counts, "image_size": IMAGE_SIZE,
                    "background_photos": appearance.background_photos(),
                    "seconds": round(time.perf_counter() - start, 2),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        formats.atomic_write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=2).encode())
        return manifest

    return formats.build_folder(out, fill)


def ensure_ears(root: Path, seed: int = 0, counts: dict | None = None) -> Path:
    """``root`` with its synthetic ears generated first when missing or stale (format, seed, counts, photos)."""
    want = {**DEFAULT_COUNTS, **(counts or {})}
    path = Path(root) / "ears" / MANIFEST
    have = json.loads(path.read_text()) if path.is_file() else None
    if have and have.get("format_version") == FORMAT_VERSION and have.get("seed") == seed \
            and have.get("counts") == want and have.get("background_photos") == appearance.background_photos():
        return Path(root)
    print(f"[synth_ears] generating {sum(want.values())} synthetic ears into {Path(root) / 'ears'} ...",
          file=sys.stderr)
    generate(root, seed, want)
    return Path(root)


def preview(root: Path, out_png: Path, n: int = 12) -> Path:
    """A grid of test ears with their landmarks (outer helix red, inner helix green, concha blue, crus yellow)."""
    samples = datasets.load_dataset("ears", root, "test")[:n]
    colours = [(255, 0, 0)] * 20 + [(0, 255, 0)] * 15 + [(0, 128, 255)] * 15 + [(255, 255, 0)] * 5
    tiles = []
    for s in samples:
        img = s.image().copy()
        for (x, y), c in zip(s.landmarks, colours):
            cv2.circle(img, (int(round(x)), int(round(y))), 2, c, -1)
        tiles.append(cv2.resize(img, (IMAGE_SIZE, IMAGE_SIZE)))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 6)
    grid = np.concatenate([np.concatenate(tiles[r:r + 6], 1) for r in range(0, len(tiles), 6)], 0)
    formats.write_image(Path(out_png), grid)
    return Path(out_png)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densereg.data.synth_ears", description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", type=Path, default=None, help="data root (default: the synthetic benchmark's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=DEFAULT_COUNTS["train"])
    parser.add_argument("--n-test", type=int, default=DEFAULT_COUNTS["test"])
    parser.add_argument("--preview", type=Path, default=None, help="write a grid of test ears here")
    args = parser.parse_args(argv)
    root = args.out or datasets.data_root("synthetic")
    if args.out is None and not (Path(root) / "synth.json").is_file():
        print(f"error: {root} holds no synthetic benchmark yet (no synth.json): run python -m densereg.data.synth "
              "first, or pass --out DIR", file=sys.stderr)
        return 1
    manifest = generate(root, args.seed, {"train": args.n_train, "test": args.n_test})
    print(f"synthetic ears written to {Path(root) / 'ears'} in {manifest['seconds']:.1f} s")
    if args.preview:
        print(f"preview grid: {preview(root, args.preview)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
