"""Synthetic people with exact patch / UV ground truth (the stand-in for UP-3D in paper Sec. 4.6 and Fig. 10).

    python -m densereg.data.synth_body [--out DIR] [--seed S] [--n-train N] [--n-test M] [--preview FILE.png]

With no ``--out`` it (re)builds the default set under ``data/synthetic-body`` beside the face benchmark's
``data/synthetic`` (or ``$DENSEREG_SYNTH_BODY``); :func:`ensure_body_synthetic` does the same on first use, and
again when the manifest says the set was made by another generator version, seed or counts.

Each image is the procedural body (:mod:`densereg.geometry.body`) in a random pose (global turn up to a back
view, limbs bent at shoulders, elbows, hips and knees, head turned), dressed in random clothing colours (shirt
with long or short sleeves, trousers or shorts, shoes, skin tone, hair on the back of the head), Lambertian-lit
over a cluttered background, blurred, noised and JPEG-compressed (:mod:`densereg.data.appearance`). The
ground truth comes from the same rasteriser as the image, so it is exact.

Native layout (documented here; :func:`read_body_gt` checks it):

    <root>/body.json              manifest: format_version, seed, counts, image_size, n_patches, patch_names, ...
    <root>/<split>/NNNNN.png      the image, H×W×3 RGB (split = train | test)
    <root>/<split>/NNNNN.npz      its ground truth (np.load(..., allow_pickle=False)):
        patch  (H, W) uint8    patch index, 0 = background, 1..24 (body.patch_names())
        u, v   (H, W) float32  coordinates in that patch's [0, 1]² chart, NaN on background
        pose   (14, 3) float64 axis-angle per joint (body.JOINTS order; the root's is the global turn)
        camera (3,) float64    scaled orthographic camera [scale (px/m), tx, ty] (camera.project_ortho, R = I)
        model  () str          only in sets of another mesh: "smpl" (UP-3D converted by densereg.data.up3d,
                               pose (24, 3) SMPL axis-angle, camera [f, t_x, t_y, t_z])

Generation is deterministic: image ``i`` of split ``s`` uses the seed ``(seed, s, i)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from densereg.data import appearance, datasets, formats
from densereg.data.sample import Sample
from densereg.geometry import body, camera, rasterize, unwrap

IMAGE_SIZE = 128
DEFAULT_COUNTS = {"train": 1600, "test": 200}
FORMAT_VERSION = 1
SPLIT_IDS = {"train": 10, "test": 11}
GT_KEYS = {"patch": np.uint8, "u": np.float32, "v": np.float32, "pose": np.float64, "camera": np.float64}

# Joint ranges (radians) of the random poses: (joint, axis, low, high); x flexes, z spreads, y twists.
_POSE_RANGES = (
    ("head", 1, -0.7, 0.7), ("head", 0, -0.3, 0.3),
    ("torso", 0, -0.25, 0.15),
    ("upper_arm_l", 2, -0.4, 1.5), ("upper_arm_l", 0, -1.6, 0.6),
    ("upper_arm_r", 2, -1.5, 0.4), ("upper_arm_r", 0, -1.6, 0.6),
    ("lower_arm_l", 0, -2.0, 0.0), ("lower_arm_r", 0, -2.0, 0.0),
    ("upper_leg_l", 0, -1.0, 0.4), ("upper_leg_l", 2, -0.1, 0.5),
    ("upper_leg_r", 0, -1.0, 0.4), ("upper_leg_r", 2, -0.5, 0.1),
    ("lower_leg_l", 0, 0.0, 1.6), ("lower_leg_r", 0, 0.0, 1.6),
    ("hand_l", 0, -0.5, 0.5), ("hand_r", 0, -0.5, 0.5), ("foot_l", 0, -0.3, 0.3), ("foot_r", 0, -0.3, 0.3),
)


def default_root() -> Path:
    """``$DENSEREG_SYNTH_BODY``, else ``synthetic-body`` beside the face benchmark's folder."""
    value = os.environ.get("DENSEREG_SYNTH_BODY")
    return Path(value).expanduser() if value else datasets.data_root("synthetic").with_name("synthetic-body")


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """A (14, 3) pose: a global turn (a back view one time in five) and every joint of :data:`_POSE_RANGES`."""
    pose = np.zeros((len(body.JOINTS), 3))
    yaw = rng.uniform(-2.6, 2.6) if rng.random() < 0.2 else rng.uniform(-1.0, 1.0)
    pose[0] = [0.0, yaw, 0.0]
    for name, axis, lo, hi in _POSE_RANGES:
        pose[body.JOINTS.index(name), axis] += rng.uniform(lo, hi)
    return pose


def _outfit(rng: np.random.Generator) -> np.ndarray:
    """(25, 3) albedo per patch (row 0 unused): skin, hair, shirt (long or short sleeves), trousers or shorts,
    shoes."""
    names = body.patch_names()
    skin = appearance.SKIN_TONES[rng.integers(len(appearance.SKIN_TONES))] * rng.uniform(0.92, 1.08, 3)
    hair = appearance.HAIR_TONES[rng.integers(len(appearance.HAIR_TONES))]
    shirt, trousers, shoes = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.8, 3), rng.uniform(0.02, 0.5, 3)
    long_sleeves, shorts = rng.random() < 0.5, rng.random() < 0.3
    colours = np.zeros((len(names), 3))
    for p, name in enumerate(names[1:], start=1):
        if name.startswith(("torso", "upper_arm")) or (name.startswith("lower_arm") and long_sleeves):
            colours[p] = shirt
        elif name.startswith("upper_leg") or (name.startswith("lower_leg") and not shorts):
            colours[p] = trousers
        elif name.startswith("foot"):
            colours[p] = shoes
        elif name == "head_back":
            colours[p] = hair
        else:
            colours[p] = skin
    return colours


def render_person(rng: np.random.Generator, size: int = IMAGE_SIZE, model=None):
    """One synthetic person: ``(image uint8 H×W×3, PatchGT, pose (14, 3), camera [scale, tx, ty])``."""
    model = model or body.procedural_body()
    pose = random_pose(rng)
    verts = model.posed(pose)
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    scale = rng.uniform(0.8, 0.95) * size / max(hi[1] - lo[1], 0.5 * (hi[0] - lo[0]))
    centre = (lo + hi) / 2
    tx = size / 2 - scale * centre[0] + rng.uniform(-0.08, 0.08) * size
    ty = size / 2 + scale * centre[1] + rng.uniform(-0.05, 0.05) * size
    cam = np.array([scale, tx, ty])
    verts_img = camera.project_ortho(verts, np.eye(3), *cam)
    gt = unwrap.render_patch_gt(model.atlas, verts_img, size, size)
    # Appearance: per-vertex normals on the atlas (cut) mesh, interpolated by the same rasteriser.
    atlas_v = verts_img[model.atlas.vertex_ids] * np.array([1.0, -1.0, 1.0])
    normals = appearance.vertex_normals(atlas_v, model.atlas.triangles) * np.array([1.0, -1.0, 1.0])
    r = rasterize.rasterize(verts_img[model.atlas.vertex_ids], model.atlas.triangles, normals, size, size)
    canvas = appearance.background(rng, size, size)
    if gt.mask.any():
        n = r.attr[gt.mask]
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
        n *= np.where(n[:, 2:3] < 0, -1.0, 1.0)            # the visible side faces the camera
        albedo = _outfit(rng)[gt.patch[gt.mask]]
        stripes = rng.random() < 0.3                        # a patterned shirt now and then
        if stripes:
            albedo = albedo * (0.8 + 0.2 * np.sin(gt.v[gt.mask] * rng.uniform(15, 40)))[:, None]
        albedo = albedo * rng.uniform(0.95, 1.05, (len(albedo), 1))
        canvas[gt.mask] = appearance.shade(albedo, n, appearance.random_light(rng, harsh=False))
    image = appearance.degrade(rng, np.clip(canvas, 0, 1).astype(np.float32), harsh=False)
    return image, gt, pose, cam


def sample_paths(root: Path, split: str, index: int) -> dict[str, Path]:
    """Where image ``index`` of ``split`` and its ground truth lie (the layout of the module docstring)."""
    folder = Path(root) / split
    return {"image": folder / f"{index:05d}.png", "gt": folder / f"{index:05d}.npz"}


def _render_and_write(args: tuple) -> None:
    root, seed, split, index = args
    image, gt, pose, cam = render_person(np.random.default_rng([seed, SPLIT_IDS[split], index]))
    paths = sample_paths(root, split, index)
    paths["image"].parent.mkdir(parents=True, exist_ok=True)
    formats.write_image(paths["image"], image)
    write_body_gt(paths["gt"], gt, pose, cam)


def write_body_gt(path: Path, gt: unwrap.PatchGT, pose, cam, model: str = "procedural") -> None:
    """Write one image's ground truth (the ``.npz`` of the module docstring) atomically. ``model`` names the
    mesh the pose belongs to; only a non-procedural one (``"smpl"``, from ``densereg.data.up3d``) is recorded,
    as a ``model`` string array, so the synthetic files stay as they were."""
    import io

    arrays = dict(patch=gt.patch.astype(np.uint8), u=gt.u.astype(np.float32), v=gt.v.astype(np.float32),
                  pose=np.asarray(pose, np.float64), camera=np.asarray(cam, np.float64))
    if model != "procedural":
        arrays["model"] = np.array(model)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    formats.atomic_write_bytes(path, buf.getvalue())


def read_body_gt(path: Path) -> tuple[unwrap.PatchGT, dict]:
    """One ``.npz`` of the layout → ``(PatchGT, {"pose", "camera", "model"})``; errors name the file and the
    problem."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise formats.DatasetError(f"{path}: not a readable body ground-truth .npz ({e})") from e
    missing = [k for k in GT_KEYS if k not in arrays]
    if missing:
        raise formats.DatasetError(f"{path}: missing arrays {missing}; expected {list(GT_KEYS)}")
    patch, u, v = arrays["patch"], arrays["u"], arrays["v"]
    if patch.ndim != 2 or u.shape != patch.shape or v.shape != patch.shape:
        raise formats.DatasetError(f"{path}: patch, u and v must be equal (H, W) arrays, got "
                                   f"{patch.shape}, {u.shape}, {v.shape}")
    if patch.max(initial=0) > body.N_PATCHES:
        raise formats.DatasetError(f"{path}: patch index {int(patch.max())} > {body.N_PATCHES}")
    mask = patch > 0
    gt = unwrap.PatchGT(patch.astype(np.uint8), u.astype(np.float32), v.astype(np.float32), mask)
    return gt, {"pose": arrays["pose"], "camera": arrays["camera"], "model": str(arrays.get("model", "procedural"))}


def render_sample_gt(sample: Sample, size: tuple[int, int], zoom: tuple[float, float] = (1.0, 1.0)
                     ) -> unwrap.PatchGT:
    """A sample's ground truth re-rendered from its stored pose and camera into an image of ``size`` (H, W)
    that is the original resized by ``zoom`` (x, y factors): exact at any scale, unlike resampling the maps.
    A set of another mesh (UP-3D converted with its SMPL fits) has no procedural pose: its stored maps are
    resampled to ``size`` by nearest neighbour instead."""
    stored, params = read_body_gt(sample.extras["gt"])
    if params["model"] != "procedural":
        import cv2

        def near(a):
            return cv2.resize(a, (int(size[1]), int(size[0])), interpolation=cv2.INTER_NEAREST)

        patch = near(stored.patch)
        return unwrap.PatchGT(patch, near(stored.u), near(stored.v), patch > 0)
    model = body.procedural_body()
    verts = camera.project_ortho(model.posed(params["pose"]), np.eye(3), *params["camera"])
    verts[:, :2] = (verts[:, :2] + 0.5) * np.asarray(zoom, np.float64) - 0.5
    return unwrap.render_patch_gt(model.atlas, verts, int(size[0]), int(size[1]))


def load_body(root: Path, split: str) -> list[Sample]:
    """The samples of ``split`` under ``root``: name ``<split>/NNNNN``, no landmarks, a zero box (one person per
    image, so no box is needed to say which), and
    ``extras["gt"]`` = the ``.npz`` path (so the training-data fingerprint covers the ground truth)."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise formats.DatasetError(f"{folder}: no such folder; expected the layout of densereg.data.synth_body")
    samples = []
    for image in sorted(folder.glob("*.png")):
        gt = image.with_suffix(".npz")
        if not gt.is_file():
            raise formats.DatasetError(f"{image}: its ground truth {gt.name} is missing")
        samples.append(Sample(f"{split}/{image.stem}", image, None, np.zeros(4), {"gt": gt, "split": split}))
    if not samples:
        raise formats.DatasetError(f"{folder}: no images")
    return samples


def generate(out: Path, seed: int = 0, counts: dict | None = None, workers: int | None = None) -> dict:
    """Write the set to ``out`` atomically (built in ``<out>.tmp-<pid>``, then renamed); returns the manifest.

    Raises:
        FileExistsError: ``out`` holds files this generator did not write (no ``body.json``).
    """
    from densereg.data.workers import WorkerDied, supervised_imap

    counts = {**DEFAULT_COUNTS, **(counts or {})}
    out = Path(out)
    if out.exists() and not (out / "body.json").is_file() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty and not a synthetic body set (no body.json); choose another --out")
    def fill(tmp):
        plan = [(tmp, seed, split, i) for split in ("train", "test") for i in range(counts[split])]
        start = time.perf_counter()
        body.procedural_body()          # built once before forking, inherited by the workers
        n_workers = workers or min(os.cpu_count() or 1, 4)
        if n_workers > 1:
            for index, result in supervised_imap(lambda i: _render_and_write(plan[i]), len(plan), n_workers):
                if isinstance(result, WorkerDied):
                    raise RuntimeError(f"the worker rendering {plan[index][2]} image {plan[index][3]} died "
                                       f"({result.cause})")
        else:
            for item in plan:
                _render_and_write(item)
        manifest = {"format_version": FORMAT_VERSION, "seed": seed, "counts": counts, "image_size": IMAGE_SIZE,
                    "n_patches": body.N_PATCHES, "patch_names": list(body.patch_names()),
                    "joints": list(body.JOINTS), "background_photos": appearance.background_photos(),
                    "seconds": round(time.perf_counter() - start, 2),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / "body.json").write_text(json.dumps(manifest, indent=2))
        return manifest

    return formats.build_folder(out, fill)


def ensure_body_synthetic(root: Path | None = None, seed: int = 0, counts: dict | None = None) -> Path:
    """The synthetic body set's root, generated first when missing or made differently (said on stderr)."""
    root = Path(root) if root is not None else default_root()
    want = {**DEFAULT_COUNTS, **(counts or {})}
    manifest = root / "body.json"
    have = json.loads(manifest.read_text()) if manifest.is_file() else None
    photos = appearance.background_photos()
    if have and have.get("format_version") == FORMAT_VERSION and have.get("seed") == seed \
            and have.get("counts") == want and have.get("background_photos") == photos:
        return root
    why = "first use" if not have else "its manifest differs in format, seed, counts or background photos"
    print(f"[synth_body] generating the synthetic body set into {root} ({why}) ...", file=sys.stderr)
    made = generate(root, seed=seed, counts=want)
    print(f"[synth_body] done: {sum(want.values())} images in {made['seconds']:.0f} s", file=sys.stderr)
    return root


def colour_patches(patch: np.ndarray) -> np.ndarray:
    """A fixed colour per patch index (black background), H×W×3 uint8, for figures and previews."""
    import colorsys

    lut = np.array([[0, 0, 0]] + [[int(255 * c) for c in colorsys.hsv_to_rgb((k * 0.618) % 1, 0.75, 0.95)]
                                  for k in range(body.N_PATCHES)], np.uint8)
    return lut[np.asarray(patch)]


def colour_uv(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """UV as colour (red = u, green = v, blue 0.5; black background), H×W×3 uint8."""
    out = np.zeros(np.shape(u) + (3,), np.uint8)
    fg = np.isfinite(u) & np.isfinite(v)
    out[fg] = np.stack([u[fg] * 255, v[fg] * 255, np.full(fg.sum(), 128)], axis=1).clip(0, 255).astype(np.uint8)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m densereg.data.synth_body", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: data/synthetic-body)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=DEFAULT_COUNTS["train"])
    parser.add_argument("--n-test", type=int, default=DEFAULT_COUNTS["test"])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--preview", type=Path, default=None, help="write a grid of test images with their GT")
    args = parser.parse_args(argv)
    out = args.out or default_root()
    made = generate(out, args.seed, {"train": args.n_train, "test": args.n_test}, args.workers)
    print(f"synthetic body set written to {out} in {made['seconds']:.1f} s")
    if args.preview:
        tiles = []
        for s in load_body(out, "test")[:8]:
            gt, _ = read_body_gt(s.extras["gt"])
            tiles.append(np.concatenate([s.image(), colour_patches(gt.patch), colour_uv(gt.u, gt.v)], axis=0))
        formats.write_image(args.preview, np.concatenate(tiles, axis=1))
        print(f"preview: {args.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
