"""Run a trained DenseReg on images and write everything it reads out.

    python -m densereg.infer IMAGES... --checkpoint runs/synthetic/densereg-cpu/last.pt --out DIR [--device auto]
    python -m densereg.infer --bench [--size 300] [--batch 1] [--bf16] [--csv results/speed.csv]

Per image ``<stem>`` (files written atomically into ``DIR``):

* ``<stem>.npz``: ``u``, ``v`` (float32, NaN on background), ``mask`` (bool), ``fg_prob``, ``parts`` (uint8
  template part ids) and ``depth`` when the model has a depth head;
* ``<stem>_<k>.pts``: the 68 (template-sized) landmarks of face ``k`` = 1, 2, ... (best score first), 1-based
  ``.pts`` as in 300-W; no file when no face is found. The ``<stem>_<k>.pts`` left in ``DIR`` by an earlier
  run are removed first, so the folder never holds faces this run did not find;
* ``<stem>_parts.png``: the part labels in colour (``densereg.readout.parts.PART_COLOURS``);
* ``<stem>_overlay.png``: the image with the parts, the face boxes and the landmarks drawn on it.

Two images with the same stem would write the same files: they are refused up front (exit 2, naming both), as
are an ``--out`` that is not a folder and a ``--device`` torch does not know or this machine lacks. An image
that cannot be read or processed gets one line on stderr naming it; the others are still processed and the exit
status is 1 at the end. ``--bench`` times the networks instead (``densereg.readout.forward``).
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from densereg.data import formats
from densereg.readout import forward
from densereg.readout.faces import find_faces
from densereg.readout.parts import colourise, transfer_parts
from densereg.readout.predictor import DenseReg, resolve_device


def overlay(image: np.ndarray, parts: np.ndarray, faces) -> np.ndarray:
    """The image with the part labels blended in (50 %), each face's box and its landmarks drawn."""
    out = image.copy()
    fg = parts > 0
    out[fg] = (0.5 * out[fg] + 0.5 * colourise(parts)[fg]).astype(np.uint8)
    radius = max(1, round(min(image.shape[:2]) / 200))
    for face in faces:
        x0, y0, x1, y1 = (int(round(t)) for t in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 0), max(1, radius // 2))
        for x, y in face.landmarks:
            cv2.circle(out, (int(round(x)), int(round(y))), radius, (255, 0, 0), -1)
    return out


def process(model: DenseReg, path: Path, out: Path) -> list[Path]:
    """Read out one image file into ``out``; returns the files written."""
    image = formats.read_image(path)
    uvmap = model.uv(image)
    faces = find_faces(uvmap, model.template, model.shape_model)
    parts = transfer_parts(model.template, uvmap.u, uvmap.v, uvmap.mask)
    arrays = {"u": uvmap.u, "v": uvmap.v, "mask": uvmap.mask, "fg_prob": uvmap.fg_prob, "parts": parts}
    if uvmap.depth is not None:
        arrays["depth"] = uvmap.depth
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    stem = path.stem
    stale = re.compile(re.escape(stem) + r"_\d+\.pts")
    for old in out.glob(f"{glob_escape(stem)}_*.pts"):
        if stale.fullmatch(old.name):
            old.unlink()
    written = [out / f"{stem}.npz"]
    formats.atomic_write_bytes(written[0], buffer.getvalue())
    for k, face in enumerate(faces, start=1):
        written.append(out / f"{stem}_{k}.pts")
        formats.write_pts(written[-1], face.landmarks)
    written.append(out / f"{stem}_parts.png")
    formats.write_image(written[-1], colourise(parts))
    written.append(out / f"{stem}_overlay.png")
    formats.write_image(written[-1], overlay(image, parts, faces))
    return written


def glob_escape(text: str) -> str:
    """``text`` with the glob metacharacters ``*?[`` taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def usage_error(images: list[Path], out: Path, device: str) -> str | None:
    """What makes the whole run impossible (checked before the model loads), or None."""
    seen = {}
    for path in images:
        if path.stem in seen and seen[path.stem] != path:
            return f"{seen[path.stem]} and {path} have the same stem {path.stem!r}: their outputs would collide"
        seen[path.stem] = path
    if out.exists() and not out.is_dir():
        return f"--out {out}: not a folder"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--out {out}: cannot create the folder ({exc.strerror or exc})"
    try:
        chosen = resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        return f"--device {device}: {' '.join(str(exc).split())} (use auto, cpu, cuda or cuda:N)"
    if chosen.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: no CUDA device on this machine (use auto or cpu)"
    return None


def _one_line(path: Path, exc: Exception) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    return message if str(path) in message else f"{path}: {message}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--bench" in argv:
        return forward.main(argv)
    parser = argparse.ArgumentParser(prog="python -m densereg.infer", description=__doc__.split("\n\n")[0],
                                     epilog="python -m densereg.infer --bench --help: the timing options "
                                            "(densereg.readout.forward)")
    parser.add_argument("images", nargs="+", type=Path,
                        help="image files (any format OpenCV reads); each stem must be unique")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a DenseReg checkpoint (last.pt)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the outputs (created)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    problem = usage_error(args.images, args.out, args.device)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        model = DenseReg.load(args.checkpoint, device=args.device)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {_one_line(args.checkpoint, exc)}", file=sys.stderr)
        return 2
    failed = 0
    for path in args.images:
        try:
            written = process(model, path, args.out)
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others
            failed += 1
            print(f"error: {_one_line(path, exc)}", file=sys.stderr)
            continue
        faces = sum(p.suffix == ".pts" for p in written)
        print(f"{path}: {faces} face{'s' if faces != 1 else ''} -> {args.out / path.stem}.npz")
    if failed:
        print(f"{failed} of {len(args.images)} images failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
