"""Readers for the benchmarks DenseReg is evaluated on, in their native on-disk formats.

    python -m densereg.datasets check ROOT     # try to read every image/.pts/.mat under ROOT; list problems

One set of readers serves both data sources: the real data under ``$DENSEREG_DATA`` and the embedded synthetic
benchmark, which ``densereg.synth`` writes in exactly the same layout (see :data:`LAYOUT` and
:func:`synthetic_paths`). Every reader turns a dataset split into a sorted list of :class:`Sample` (image path,
0-based ``(x, y)`` landmarks, face box, extras); :data:`DATASETS` registers them and :func:`load_dataset` looks
them up.

File formats (details and provenance in ``reference/datasets-and-protocols.md``):

* ``.pts`` (iBUG): a ``version``/``n_points`` header, ``{``, one ``x y`` line per point, ``}``. Coordinates are
  1-based on disk; :func:`read_pts` subtracts 1 and :func:`write_pts` adds it back, byte-compatible with the
  official files (:data:`PTS_STYLES`).
* 300W-LP / AFLW2000-3D ``.mat`` fittings: :func:`read_fitting` / :func:`write_fitting`. Two quirks of the real
  files are handled here: ``*_Flip`` files mirror ``pt2d`` without re-ordering the points
  (:func:`flip_file_landmarks`), and the re-rendered ``k >= 1`` files copy ``pt2d`` from ``k = 0``, so their
  landmarks are not those of the image (readers give ``None``; project the fitting's mesh instead).
* Images of any mode (grey, palette, RGBA, 16-bit) load as ``H×W×3`` uint8 RGB (:func:`read_image`).

Malformed or missing files always raise :class:`DatasetError` naming the file and what is wrong; nothing is
skipped silently.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import scipy.io

LAYOUT = """\
$DENSEREG_DATA/                      (the synthetic benchmark uses the same layout under data/synthetic/)
  300W/                              iBUG 300-W, one .pts per face, same stem as its image
    afw/*.jpg + *.pts                  337 faces (train)
    helen/trainset/*.jpg + *.pts       2000 (train)
    helen/testset/*.jpg + *.pts        330  (common test; also the Helen test set)
    lfpw/trainset/*.png + *.pts        811  (train)
    lfpw/testset/*.png + *.pts         224  (common test)
    ibug/*.jpg + *.pts                 135  (challenging test)
    300W/01_Indoor/*.png + *.pts       300  (private test set, the 300w.zip.* archive unpacked here)
    300W/02_Outdoor/*.png + *.pts      300
    boxes/300w/<stem>.pts              optional 4-point face boxes (MDM bbs/); also boxes/afw/, boxes/helen/testset/...
  300W_LP/                           3DDFA 300W-LP fittings
    {AFW,HELEN,LFPW,IBUG}/<SUBSET>_<300W stem>_<k>.jpg + .mat
    {AFW,HELEN,LFPW,IBUG}_Flip/...     mirrored copies
  SmithCVPR2013_dataset_resized/     optional Helen face-parsing labels: labels/<stem>/<stem>_lblNN.png
  300VW/<NNN>/annot/NNNNNN.pts       300-VW, one .pts per frame (1-based frame numbers)
  300VW/<NNN>/imgs/NNNNNN.jpg        extracted frames (ffmpeg -i vid.avi -start_number 1 imgs/%06d.jpg),
  300VW/<NNN>/vid.avi                  or the video itself
  300VW/extra/<NNN>.mat              optional: variable `error` = 1-based frames with unreliable annotations
  300VW/unreliable.json              optional, same information: {"401": [731, ...], ...}
  ears/{train,test}/*.png + *.pts    iBUG ears collection A, 55 points (.txt accepted for .pts)
"""

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
VIDEO_EXTS = (".avi", ".mp4", ".mkv", ".mov")


class DatasetError(ValueError):
    """A data file is missing, unreadable or inconsistent; the message names the file and the problem.

    Attributes:
        path: the offending file or folder (None for errors about the environment).
        reason: what is wrong, without the path.
    """

    def __init__(self, message, path=None, reason=None):
        super().__init__(message)
        self.path, self.reason = path, reason if reason is not None else message


def _fail(path, what):
    raise DatasetError(f"{path}: {what}", path=path, reason=what)


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    The file gets the usual permissions (0666 minus the umask), not ``mkstemp``'s private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------------------------
# .pts landmark files


@dataclass(frozen=True)
class PtsStyle:
    """How one family of official ``.pts`` files is laid out byte for byte."""

    newline: str
    n_points_gap: str  # what separates "n_points:" from the count
    decimals: int
    strip_zeros: bool  # drop trailing zeros of each number ("286.99", not "286.990")
    final_newline: bool  # whether the closing "}" is followed by a newline


# Observed in the real files (reference §0.1): 300-W, 300-VW, and the iBUG ears / MDM box files.
PTS_STYLES = {
    "300w": PtsStyle(newline="\n", n_points_gap="  ", decimals=6, strip_zeros=False, final_newline=False),
    "300vw": PtsStyle(newline="\r\n", n_points_gap=" ", decimals=3, strip_zeros=True, final_newline=True),
    "ibug": PtsStyle(newline="\n", n_points_gap=" ", decimals=3, strip_zeros=False, final_newline=True),
}


def _lookup(registry, key, what):
    if key not in registry:
        raise KeyError(f"unknown {what} {key!r}; valid: {', '.join(sorted(registry))}")
    return registry[key]


def read_pts(path, expected_n=None):
    """Read an iBUG ``.pts`` file as 0-based ``(x, y)`` points.

    Accepts LF or CRLF endings, any whitespace run, a missing final newline, ``version: 1`` or ``1.0``, and any
    number of decimals. The header's ``n_points`` (when present) must match the number of points read.

    Args:
        path: the file.
        expected_n: if given, the number of points the caller needs (68 faces, 55 ears, 4 boxes).

    Returns:
        ``(N, 2)`` float64 array, 1 subtracted from the on-disk values (they are MATLAB 1-based).

    Raises:
        DatasetError: unreadable file, no ``{`` or ``}``, a line that is not two numbers, a non-finite value,
            or a point count that differs from the header or from ``expected_n``.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        _fail(path, f"cannot read .pts file ({e.strerror or e})")
    except UnicodeDecodeError:
        _fail(path, "not a text .pts file (undecodable bytes)")
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("{")), None)
    if start is None:
        _fail(path, "missing '{' line: not a .pts file (or one without the version/n_points header)")
    declared = None
    for line in lines[:start]:
        key, _, value = line.partition(":")
        if key.strip() == "n_points":
            try:
                declared = int(value.strip())
            except ValueError:
                _fail(path, f"unparsable n_points value {value.strip()!r}")
    points = []
    closed = False
    for lineno, line in enumerate(lines[start + 1:], start=start + 2):
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0].startswith("}"):
            closed = True
            break
        if len(tokens) != 2:
            _fail(path, f"line {lineno}: expected 'x y', got {line.strip()!r}")
        try:
            x, y = float(tokens[0]), float(tokens[1])
        except ValueError:
            _fail(path, f"line {lineno}: unparsable coordinates {line.strip()!r}")
        if not (np.isfinite(x) and np.isfinite(y)):
            _fail(path, f"line {lineno}: non-finite coordinate {line.strip()!r}")
        points.append((x, y))
    if not closed:
        _fail(path, "missing closing '}' (truncated file?)")
    if declared is not None and declared != len(points):
        _fail(path, f"header says n_points {declared} but {len(points)} points follow")
    if expected_n is not None and len(points) != expected_n:
        _fail(path, f"expected {expected_n} points, found {len(points)}")
    return np.asarray(points, dtype=np.float64).reshape(-1, 2) - 1.0


def _format_number(value, style):
    text = f"{value:.{style.decimals}f}"
    if style.strip_zeros and "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def write_pts(path, points, style="300w"):
    """Write 0-based ``(x, y)`` points as a 1-based ``.pts`` file, atomically.

    Args:
        path: destination file.
        points: ``(N, 2)`` array, 0-based.
        style: a key of :data:`PTS_STYLES`. The default ``"300w"`` reproduces the official 300-W files byte for
            byte: ``n_points:`` followed by two spaces, 6 decimals, LF, no newline after ``}``.

    Raises:
        ValueError: points not ``(N, 2)`` or not finite (the message names ``path``).
    """
    style = _lookup(PTS_STYLES, style, ".pts style")
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{path}: points must be (N, 2), got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{path}: refusing to write non-finite points")
    nl = style.newline
    body = [f"{_format_number(x, style)} {_format_number(y, style)}" for x, y in points + 1.0]
    text = nl.join(["version: 1", f"n_points:{style.n_points_gap}{len(points)}", "{", *body, "}"])
    atomic_write_bytes(path, (text + (nl if style.final_newline else "")).encode("ascii"))


def read_box_pts(path):
    """Read a 4-point box ``.pts`` (corners TL, BL, BR, TR, as in MDM's ``bbs/``) as 0-based ``(x0, y0, x1, y1)``."""
    corners = read_pts(path, expected_n=4)
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def write_box_pts(path, box):
    """Write a 0-based ``(x0, y0, x1, y1)`` box as the 4-corner ``.pts`` MDM uses (TL, BL, BR, TR; 3 decimals)."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    write_pts(path, [[x0, y0], [x0, y1], [x1, y1], [x1, y0]], style="ibug")


def landmarks_box(points):
    """The tight ``(x0, y0, x1, y1)`` box around ``(N, 2)`` points."""
    points = np.asarray(points, dtype=np.float64)
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


# ----------------------------------------------------------------------------------------------------------------
# Images and video frames


def _to_rgb8(pixels, path):
    """Convert a cv2-decoded array (grey, BGR, BGRA, 8/16-bit) to ``H×W×3`` uint8 RGB."""
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        _fail(path, f"unsupported image sample type {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if channels in (1, 2):  # grey, or grey + alpha
        return np.ascontiguousarray(np.repeat(pixels[:, :, :1], 3, axis=2))
    if channels in (3, 4):  # BGR(A): the alpha is dropped, as the annotations ignore it
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    _fail(path, f"unsupported image with {channels} channels")


def read_image(path):
    """Load an image as ``H×W×3`` uint8 RGB whatever its mode (grey, palette, RGBA, 16-bit).

    EXIF orientation is ignored on purpose: annotations refer to the stored pixel grid (MATLAB ``imread``).
    OpenCV decodes; PIL is the fallback for formats OpenCV lacks (e.g. GIF).

    Raises:
        DatasetError: the file cannot be read or decoded.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        _fail(path, f"cannot read image file ({e.strerror or e})")
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if pixels is not None:
        return _to_rgb8(pixels, path)
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data.tobytes())) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:  # PIL raises many types; all mean "not an image we can decode"
        _fail(path, f"not a decodable image ({type(e).__name__}: {e})")


def read_video_frame(path, frame):
    """Decode frame ``frame`` (1-based, as 300-VW's ``annot/%06d.pts``) of a video as ``H×W×3`` uint8 RGB.

    Seeking relies on OpenCV's ``CAP_PROP_POS_FRAMES``; extract frames with ffmpeg for bulk work.
    """
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            _fail(path, "cannot open video")
        capture.set(cv2.CAP_PROP_POS_FRAMES, frame - 1)
        ok, bgr = capture.read()
    finally:
        capture.release()
    if not ok:
        _fail(path, f"cannot decode frame {frame}")
    return _to_rgb8(bgr, path)


# ----------------------------------------------------------------------------------------------------------------
# Samples


@dataclass
class Sample:
    """One annotated face of a dataset split.

    Attributes:
        name: id unique within the dataset, relative to its folder, e.g. ``"01_Indoor/indoor_001"``.
        image_path: the image (or, for 300-VW without extracted frames, the video; ``extras["frame"]`` says which).
        landmarks: ``(N, 2)`` 0-based ``(x, y)`` ground truth, or None when the dataset has none for this image.
        box: ``(x0, y0, x1, y1)`` ground-truth face box: the dataset's box file when it has one, else the
            landmarks' bounding box (``extras["box_source"]`` says which). Only for choosing *which* face.
        extras: dataset specifics: ``split``, ``subset``, ``frame``, ``fitting`` (path of a ``.mat``),
            ``unreliable``, ...
    """

    name: str
    image_path: Path
    landmarks: np.ndarray | None
    box: np.ndarray
    extras: dict = field(default_factory=dict)

    def image(self):
        """The sample's pixels as ``H×W×3`` uint8 RGB."""
        if "frame" in self.extras and self.image_path.suffix.lower() in VIDEO_EXTS:
            return read_video_frame(self.image_path, self.extras["frame"])
        return read_image(self.image_path)


# ----------------------------------------------------------------------------------------------------------------
# 3DMM fittings (300W-LP, AFLW2000-3D)


@dataclass
class Fitting:
    """A 3DMM fit of one image, in the 3DDFA ``.mat`` layout.

    Attributes:
        pose_para: ``(7,)`` ``[pitch, yaw, roll (radians), tx, ty, tz, scale]`` (3DDFA convention).
        shape_para: ``(k,)`` identity coefficients of ``model``.
        exp_para: ``(m,)`` expression coefficients of ``model``.
        pt2d: ``(N, 2)`` 0-based ``(x, y)`` landmarks stored with the fit. In real ``k >= 1`` 300W-LP files they
            are copied from ``k = 0`` and do **not** match the re-rendered image; in ``*_Flip`` files they are
            mirrored but not re-ordered (see :func:`flip_file_landmarks`).
        roi: ``(4,)`` ``[x1, y1, x2, y2]`` face ROI in the source image, as stored (may be negative).
        model: which 3D model the coefficients belong to: ``"bfm"`` (real 300W-LP, no ``model`` field) or the
            name written by the synthetic generator (``"builtin"``).
    """

    pose_para: np.ndarray
    shape_para: np.ndarray
    exp_para: np.ndarray
    pt2d: np.ndarray
    roi: np.ndarray
    model: str = "bfm"


def read_fitting(path):
    """Read a 300W-LP / AFLW2000-3D style ``.mat`` into a :class:`Fitting` (``pt2d`` made 0-based ``(N, 2)``).

    Raises:
        DatasetError: unreadable file, a missing field, or a field of the wrong size.
    """
    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... for bad files
        _fail(path, f"cannot read .mat file ({type(e).__name__}: {e})")
    missing = [k for k in ("Pose_Para", "Shape_Para", "Exp_Para", "pt2d") if k not in mat]
    if missing:
        _fail(path, f"not a 3DMM fitting: missing field(s) {', '.join(missing)}")
    pose = np.asarray(mat["Pose_Para"], dtype=np.float64).ravel()
    if pose.size != 7:
        _fail(path, f"Pose_Para has {pose.size} values, expected 7")
    pt2d = np.asarray(mat["pt2d"], dtype=np.float64)
    if pt2d.ndim != 2 or pt2d.shape[0] != 2:
        _fail(path, f"pt2d has shape {pt2d.shape}, expected (2, N)")
    params = {k: np.asarray(mat[k], dtype=np.float64).ravel() for k in ("Shape_Para", "Exp_Para")}
    for name, values in [("Pose_Para", pose), ("pt2d", pt2d), *params.items()]:
        if not np.isfinite(values).all():
            _fail(path, f"{name} contains non-finite values")
    roi = np.asarray(mat["roi"]).ravel() if "roi" in mat else np.full(4, np.nan)
    model = str(np.asarray(mat["model"]).ravel()[0]).strip() if "model" in mat else "bfm"
    return Fitting(pose_para=pose, shape_para=params["Shape_Para"], exp_para=params["Exp_Para"],
                   pt2d=pt2d.T - 1.0, roi=roi, model=model)


def write_fitting(path, fitting):
    """Write a :class:`Fitting` in the 300W-LP ``.mat`` layout, atomically.

    ``Pose_Para`` is stored as 1×7 float32 like the real files (so it reads back rounded to float32),
    ``Shape_Para``/``Exp_Para`` as float64 column vectors, ``pt2d`` as 2×N 1-based, ``roi`` as 1×4 (int16 when
    integral, as in the real files), plus a ``model`` string.
    """
    roi = np.asarray(fitting.roi, dtype=np.float64).reshape(1, 4)
    integral = np.isfinite(roi).all() and (roi == np.round(roi)).all() and (np.abs(roi) < 2**15).all()
    fields = {
        "pt2d": (np.asarray(fitting.pt2d, dtype=np.float64) + 1.0).T,
        "roi": roi.astype(np.int16) if integral else roi,
        "Pose_Para": np.asarray(fitting.pose_para, dtype=np.float32).reshape(1, 7),
        "Shape_Para": np.asarray(fitting.shape_para, dtype=np.float64).reshape(-1, 1),
        "Exp_Para": np.asarray(fitting.exp_para, dtype=np.float64).reshape(-1, 1),
        "model": str(fitting.model),
    }
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, fields, do_compression=True)
    atomic_write_bytes(path, buffer.getvalue())


def _mirror_order_68():
    """The 68-point iBUG horizontal-flip permutation (reference §0.2; same as MDM ``mirrored_parts_68``)."""
    part = lambda a, b: np.arange(a, b + 1)  # noqa: E731 - inclusive 0-based index ranges
    jaw, lbrow, rbrow = part(0, 16), part(17, 21), part(22, 26)
    upper_nose, lower_nose = part(27, 30), part(31, 35)
    leye, reye = part(36, 41), part(42, 47)
    outer_mouth, inner_mouth = part(48, 59), part(60, 67)
    # Each eye/lip loop is reversed, then rolled so that its first point lands on the mirrored partner.
    return np.concatenate([jaw[::-1], rbrow[::-1], lbrow[::-1], upper_nose, lower_nose[::-1],
                           np.roll(reye[::-1], 4), np.roll(leye[::-1], 4),
                           np.roll(outer_mouth[::-1], 7), np.roll(inner_mouth[::-1], 5)])


_FLIP_68 = _mirror_order_68()


def ibug_flip_permutation():
    """Index array ``p`` such that ``mirrored[p]`` is in semantic order after a horizontal flip (an involution).

    E.g. ``p[0] = 16`` (jaw ends swap), ``p[36] = 45`` (outer eye corners), ``p[48] = 54`` (mouth corners).
    """
    return _FLIP_68.copy()


def mirror_landmarks(points, width):
    """Mirror 0-based 68-point landmarks for an image flipped left-right, keeping iBUG semantic order."""
    points = np.asarray(points, dtype=np.float64)
    mirrored = np.column_stack([width - 1.0 - points[:, 0], points[:, 1]])
    return mirrored[_FLIP_68]


def flip_file_landmarks(pt2d):
    """Semantically ordered landmarks of a 300W-LP ``*_Flip`` file.

    Those files store ``x' = W + 1 - x`` (1-based) of the original points *in the original order*, so point 0
    of a flipped file is the mirror of the original jaw start and lies on the image's right. Re-indexing with
    :func:`ibug_flip_permutation` restores the iBUG meaning of every index.
    """
    pt2d = np.asarray(pt2d, dtype=np.float64)
    if pt2d.shape != (68, 2):
        raise ValueError(f"flip re-ordering needs 68 points, got shape {pt2d.shape}")
    return pt2d[_FLIP_68]


# ----------------------------------------------------------------------------------------------------------------
# Data roots


def _repo_root():
    return Path(__file__).resolve().parents[1]


def _real_root():
    value = os.environ.get("DENSEREG_DATA")
    if not value:
        raise DatasetError(f"$DENSEREG_DATA is not set: point it at the real data, laid out as\n{LAYOUT}")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DatasetError(f"$DENSEREG_DATA={value} is not a folder; expected layout:\n{LAYOUT}")
    return root


def _synthetic_root():
    value = os.environ.get("DENSEREG_SYNTH")
    return Path(value).expanduser() if value else _repo_root() / "data" / "synthetic"


DATA_SOURCES = {"real": _real_root, "synthetic": _synthetic_root}


def data_root(source):
    """The folder holding the data of ``source`` (a key of :data:`DATA_SOURCES`), laid out as :data:`LAYOUT`.

    ``"real"`` is ``$DENSEREG_DATA`` (an error naming the variable when unset); ``"synthetic"`` is
    ``$DENSEREG_SYNTH`` or ``<repo>/data/synthetic``, where the generator writes (it may not exist yet).
    """
    return _lookup(DATA_SOURCES, source, "data source")()


# ----------------------------------------------------------------------------------------------------------------
# Readers


def _check_split(split, valid, dataset):
    if split not in valid:
        raise KeyError(f"unknown {dataset} split {split!r}; valid: {', '.join(sorted(valid))}")


def _need_dir(path, what):
    if not path.is_dir():
        raise DatasetError(f"{path}: missing folder ({what}); expected layout:\n{LAYOUT}")
    return path


def _pair_by_stem(folder, annotation_exts=(".pts",)):
    """``[(stem, image, annotation)]`` sorted by stem; an image without annotation or vice versa is an error."""
    images, candidates = {}, {}
    for path in folder.iterdir():
        ext = path.suffix.lower()
        if path.name.startswith("."):
            continue
        if ext in IMAGE_EXTS:
            if path.stem in images:
                _fail(path, f"two images share the stem {path.stem!r} ({images[path.stem].name})")
            images[path.stem] = path
        elif ext in annotation_exts:
            candidates.setdefault(path.stem, []).append(path)
    # When one stem has several annotation files, the extension listed first wins (.pts before .txt).
    annotations = {stem: min(paths, key=lambda p: annotation_exts.index(p.suffix.lower()))
                   for stem, paths in candidates.items()}
    lonely_images = sorted(set(images) - set(annotations))
    if lonely_images:
        _fail(images[lonely_images[0]], f"image without annotation ({len(lonely_images)} such in the folder)")
    lonely_annotations = sorted(set(annotations) - set(images))
    if lonely_annotations:
        _fail(annotations[lonely_annotations[0]],
              f"annotation without image ({len(lonely_annotations)} such in the folder)")
    return [(stem, images[stem], annotations[stem]) for stem in sorted(images)]


def _read_landmark_folder(folder, name_prefix, n_points, extras, box_folder=None,
                          annotation_exts=(".pts",)):
    """Samples of one folder of image + ``.pts`` pairs.

    Boxes come from ``box_folder/<stem>.pts`` when that folder exists. A ``<stem>.mat`` fitting beside an image
    (the synthetic benchmark writes one for every test image) is named in ``extras["fitting"]``.
    """
    _need_dir(folder, f"{name_prefix} images and .pts")
    use_boxes = box_folder is not None and box_folder.is_dir()
    samples = []
    for stem, image, annotation in _pair_by_stem(folder, annotation_exts):
        landmarks = read_pts(annotation, expected_n=n_points)
        if use_boxes:
            box_file = box_folder / f"{stem}.pts"
            if not box_file.is_file():
                _fail(box_file, f"box file missing for {image.name} (the box folder covers only some images)")
            box, source = read_box_pts(box_file), "/".join(box_folder.parts[-2:])
        else:
            box, source = landmarks_box(landmarks), "landmarks"
        sample_extras = {**extras, "box_source": source}
        if (folder / f"{stem}.mat").is_file():
            sample_extras["fitting"] = folder / f"{stem}.mat"
        samples.append(Sample(name=f"{name_prefix}/{stem}", image_path=image, landmarks=landmarks, box=box,
                              extras=sample_extras))
    return samples


# 300-W (reference §1, §2): split -> subset folders relative to 300W/ ("300W/..." = the private test set).
SPLITS_300W = {
    "train": ("afw", "helen/trainset", "lfpw/trainset"),  # the paper's 3148 training faces
    "common": ("helen/testset", "lfpw/testset"),  # 554
    "challenging": ("ibug",),  # 135
    "full": ("helen/testset", "lfpw/testset", "ibug"),  # 689
    "test": ("300W/01_Indoor", "300W/02_Outdoor"),  # the 600-image private test set
    "indoor": ("300W/01_Indoor",),
    "outdoor": ("300W/02_Outdoor",),
}

# Sizes of the real splits, for the `check` summary (a synthetic tree is smaller).
EXPECTED_COUNTS_300W = {"train": 3148, "common": 554, "challenging": 135, "full": 689, "test": 600,
                        "indoor": 300, "outdoor": 300}


def read_300w(root, split):
    """300-W faces of ``split`` (a key of :data:`SPLITS_300W`), 68 points each, sorted by name.

    Names are relative to ``300W/`` (``"afw/134212_1"``) or, for the private set, to ``300W/300W/``
    (``"01_Indoor/indoor_001"``). Boxes come from ``300W/boxes/<subset>/`` (``boxes/300w/`` for the private
    set) when that folder exists, else from the landmarks.
    """
    base = _need_dir(Path(root) / "300W", "300-W")
    samples = []
    for subset in _lookup(SPLITS_300W, split, "300W split"):
        private = subset.startswith("300W/")
        name_prefix = subset[len("300W/"):] if private else subset
        box_folder = base / "boxes" / ("300w" if private else subset)
        samples += _read_landmark_folder(base / subset, name_prefix, 68,
                                         {"split": split, "subset": name_prefix}, box_folder)
    return sorted(samples, key=lambda s: s.name)


SPLITS_HELEN = {"test": "helen/testset", "train": "helen/trainset"}


def read_helen(root, split):
    """Helen faces with the 68-point 300-W re-annotation (``300W/helen/<split>set``; 330 test, 2000 train).

    When Smith et al.'s face-parsing archive is unpacked beside (``SmithCVPR2013_dataset_resized/labels/<stem>/``)
    the per-class label maps of an image are listed in ``extras["parsing_labels"]``.
    """
    subset = _lookup(SPLITS_HELEN, split, "Helen split")
    samples = _read_landmark_folder(Path(root) / "300W" / subset, subset, 68, {"split": split, "subset": subset})
    labels_root = Path(root) / "SmithCVPR2013_dataset_resized" / "labels"
    for sample in samples:
        label_dir = labels_root / sample.image_path.stem
        if label_dir.is_dir():
            sample.extras["parsing_labels"] = sorted(label_dir.glob("*_lbl*.png"))
    return samples


SPLITS_EARS = ("train", "test")


def read_ears(root, split):
    """iBUG ears collection A, 55 points per image (``.pts`` or ``.txt`` in PTS format), box = landmarks bbox."""
    _check_split(split, SPLITS_EARS, "ears")
    return _read_landmark_folder(Path(root) / "ears" / split, split, 55, {"split": split},
                                 annotation_exts=(".pts", ".txt"))


# 300W-LP: the subsets whose images belong to the 300-W training set; other subsets (e.g. the synthetic
# generator's SYNTH) are training data as a whole.
LP_TEST_SUBSETS = ("IBUG",)
SPLITS_300W_LP = ("train", "all")


def _lp_is_train(subset, source_stem, helen_train_ids):
    if subset in LP_TEST_SUBSETS:
        return False
    if subset == "LFPW":
        return source_stem.startswith("LFPW_image_train_")
    if subset == "HELEN":
        return source_stem[len("HELEN_"):] in helen_train_ids
    return True


def read_300w_lp(root, split, flips=False, profiles=False):
    """300W-LP images with their 3DMM fittings (``extras["fitting"]`` is the ``.mat`` path).

    Args:
        root: the data root.
        split: ``"train"`` keeps what matches the paper's 3148 training faces (AFW, HELEN trainset ids read from
            ``300W/helen/trainset``, ``LFPW_image_train_*``; never IBUG) plus whole non-300-W subsets such as the
            synthetic ``SYNTH``; ``"all"`` keeps everything.
        flips: include the ``*_Flip`` folders.
        profiles: include the re-rendered ``k >= 1`` images. Their stored ``pt2d`` belongs to ``k = 0``, so their
            ``landmarks`` are None and their box is that of the ``k = 0`` landmarks (approximate).

    Landmarks of ``*_Flip`` samples are put back in iBUG semantic order (:func:`flip_file_landmarks`).
    """
    _check_split(split, SPLITS_300W_LP, "300W-LP")
    base = _need_dir(Path(root) / "300W_LP", "300W-LP")
    subsets = sorted(p for p in base.iterdir() if p.is_dir() and any(p.glob("*.mat")))
    if not subsets:
        raise DatasetError(f"{base}: no subset folder with .mat fittings; expected layout:\n{LAYOUT}")
    helen_train_ids = None
    samples = []
    for folder in subsets:
        flip = folder.name.endswith("_Flip")
        subset = folder.name[: -len("_Flip")] if flip else folder.name
        if flip and not flips:
            continue
        if split == "train" and subset == "HELEN" and helen_train_ids is None:
            helen_dir = _need_dir(Path(root) / "300W" / "helen" / "trainset", "needed to pick HELEN train fits")
            helen_train_ids = {p.stem for p in helen_dir.glob("*.pts")}
        for stem, image, mat in _pair_by_stem(folder, (".mat",)):
            source_stem, _, k_text = stem.rpartition("_")
            if not k_text.isdigit():
                _fail(mat, "name does not end in _<k> (the 300W-LP rendering index)")
            k = int(k_text)
            if (k > 0 and not profiles) or (split == "train" and not _lp_is_train(subset, source_stem,
                                                                                   helen_train_ids)):
                continue
            fitting = read_fitting(mat)
            if flip and len(fitting.pt2d) != 68:
                _fail(mat, f"a _Flip fitting needs 68 points to restore their order, found {len(fitting.pt2d)}")
            pts = flip_file_landmarks(fitting.pt2d) if flip else fitting.pt2d
            samples.append(Sample(
                name=f"{folder.name}/{stem}", image_path=image, landmarks=pts if k == 0 else None,
                box=landmarks_box(pts),
                extras={"split": split, "subset": subset, "flip": flip, "k": k, "fitting": mat,
                        "model": fitting.model, "source": source_stem,
                        "box_source": "pt2d" if k == 0 else "pt2d of k=0 (approximate)"}))
    return sorted(samples, key=lambda s: s.name)


# 300-VW video lists (reference §5; identical in mmpose, SBR and OpenFace).
VIDEOS_300VW = {
    "train": ("001 002 003 004 007 009 010 011 013 015 016 017 018 019 020 022 025 027 028 029 031 033 034 035 "
              "037 039 041 043 044 046 047 048 049 053 057 059 112 113 115 119 120 123 138 143 144 160 204 205 "
              "223 225").split(),
    "cat1": ("114 124 125 126 150 158 401 402 505 506 507 508 509 510 511 514 515 518 519 520 521 522 524 525 "
             "537 538 540 541 546 547 548").split(),
    "cat2": "203 208 211 212 213 214 218 224 403 404 405 406 407 408 409 412 550 551 553".split(),
    "cat3": "410 411 516 517 526 528 529 530 531 533 557 558 559 562".split(),
}
VIDEOS_300VW["test"] = VIDEOS_300VW["cat1"] + VIDEOS_300VW["cat2"] + VIDEOS_300VW["cat3"]
CATEGORY_300VW = {v: c for c in ("cat1", "cat2", "cat3") for v in VIDEOS_300VW[c]}


def unreliable_frames_300vw(base, video):
    """1-based frames of ``video`` whose annotations the 300-VW authors flag as unreliable (``extra.zip``).

    Read from ``300VW/extra/<video>.mat`` (variable ``error``) or ``300VW/unreliable.json``; empty when neither
    is present. The annotation files of these frames exist: they are flagged, not missing.
    """
    frames = set()
    mat = base / "extra" / f"{video}.mat"
    if mat.is_file():
        try:
            frames |= {int(f) for f in np.asarray(scipy.io.loadmat(mat)["error"]).ravel()}
        except Exception as e:  # bad file or no `error` variable
            _fail(mat, f"cannot read the unreliable-frame list (variable 'error'): {type(e).__name__}: {e}")
    listing = base / "unreliable.json"
    if listing.is_file():
        try:
            frames |= {int(f) for f in json.loads(listing.read_text()).get(video, [])}
        except (ValueError, TypeError, AttributeError) as e:
            _fail(listing, f"expected {{\"<video>\": [frame, ...]}}: {e}")
    return frames


def read_300vw(root, split, drop_unreliable=False, require_all=True):
    """300-VW frames of ``split`` (``train``, ``test``, ``cat1``, ``cat2``, ``cat3``), one sample per annotation.

    Frame ``k`` (1-based) pairs ``annot/%06d.pts`` with ``imgs/%06d.<ext>`` when frames were extracted, else with
    ``vid.avi`` (``extras["frame"] = k``). ``extras["unreliable"]`` flags the frames of
    :func:`unreliable_frames_300vw`; the evaluation protocol drops them (``drop_unreliable=True`` does it here).

    Args:
        require_all: raise when a video of the split is absent (False reads the videos present).
    """
    videos = _lookup(VIDEOS_300VW, split, "300VW split")
    base = _need_dir(Path(root) / "300VW", "300-VW")
    present = [v for v in videos if (base / v).is_dir()]
    missing = sorted(set(videos) - set(present))
    if not present or (missing and require_all):
        raise DatasetError(f"{base}: {len(missing)} of the {len(videos)} {split} videos are missing "
                           f"({', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''})")
    samples = []
    for video in present:
        annot = _need_dir(base / video / "annot", f"300-VW video {video} annotations")
        frames_dir = base / video / "imgs"
        frames = ({p.stem: p for p in frames_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS}
                  if frames_dir.is_dir() else None)
        avi = base / video / "vid.avi"
        if frames is None and not avi.is_file():
            _fail(base / video, "neither imgs/ (extracted frames) nor vid.avi")
        unreliable = unreliable_frames_300vw(base, video)
        for pts in sorted(annot.glob("*.pts")):
            if not pts.stem.isdigit():
                _fail(pts, "300-VW annotation names must be the 6-digit frame number")
            frame = int(pts.stem)
            if drop_unreliable and frame in unreliable:
                continue
            if frames is not None and pts.stem not in frames:
                _fail(pts, f"no frame image {pts.stem}.* in {frames_dir}")
            landmarks = read_pts(pts, expected_n=68)
            samples.append(Sample(
                name=f"{video}/{pts.stem}", image_path=frames[pts.stem] if frames is not None else avi,
                landmarks=landmarks, box=landmarks_box(landmarks),
                extras={"split": split, "video": video, "frame": frame, "unreliable": frame in unreliable,
                        "category": CATEGORY_300VW.get(video, "train"), "box_source": "landmarks"}))
        if frames is not None:
            orphans = sorted(set(frames) - {p.stem for p in annot.glob("*.pts")})
            if orphans:
                _fail(frames[orphans[0]], f"frame without annotation ({len(orphans)} such in {frames_dir})")
    return samples


# ----------------------------------------------------------------------------------------------------------------
# Where the synthetic generator writes (the same layout as the real data, so the readers above serve both)

SYNTHETIC_SPLITS = ("train", "indoor", "outdoor", "helen")
_SYNTH_TRAIN_SUBSETS = (("afw", ".jpg"), ("helen/trainset", ".jpg"), ("lfpw/trainset", ".png"))


def synthetic_paths(root, split, index):
    """The files of synthetic sample ``index`` (0-based) of ``split``, laid out as the real data (:data:`LAYOUT`).

    * ``train``: ``image``/``pts`` in ``300W/{afw,helen/trainset,lfpw/trainset}`` (round robin, so every subset
      of the 300-W train split exists), plus its 300W-LP copy ``300W_LP/SYNTH/SYNTH_train_NNNNN_0``
      (``lp_image`` and ``fitting``), as real 300W-LP pairs each training image with a fitting.
    * ``indoor`` / ``outdoor``: ``300W/300W/01_Indoor/indoor_NNN.png`` (1-based numbers, as the real files),
      a ``box`` in ``300W/boxes/300w/``, and the ``fitting`` beside the image.
    * ``helen``: ``300W/helen/testset/helen_NNNNN.jpg`` with the ``fitting`` beside the image.

    Returns:
        dict of role -> Path (roles: ``image``, ``pts``, ``fitting``, and ``box`` / ``lp_image`` where used).
    """
    base = Path(root) / "300W"
    _check_split(split, SYNTHETIC_SPLITS, "synthetic")
    if split == "train":
        subset, ext = _SYNTH_TRAIN_SUBSETS[index % len(_SYNTH_TRAIN_SUBSETS)]
        stem = f"train_{index:05d}"
        lp = Path(root) / "300W_LP" / "SYNTH" / f"SYNTH_{stem}_0"
        return {"image": base / subset / f"{stem}{ext}", "pts": base / subset / f"{stem}.pts",
                "lp_image": lp.with_suffix(ext), "fitting": lp.with_suffix(".mat")}
    if split == "helen":
        folder, stem, ext = base / "helen" / "testset", f"helen_{index:05d}", ".jpg"
        paths = {}
    else:
        folder = base / "300W" / ("01_Indoor" if split == "indoor" else "02_Outdoor")
        stem, ext = f"{split}_{index + 1:03d}", ".png"
        paths = {"box": base / "boxes" / "300w" / f"{stem}.pts"}
    return {**paths, "image": folder / f"{stem}{ext}", "pts": folder / f"{stem}.pts",
            "fitting": folder / f"{stem}.mat"}


def write_image(path, image, jpeg_quality=95):
    """Write an ``H×W×3`` uint8 RGB image atomically, encoded by the file's extension (JPEG at ``jpeg_quality``)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{path}: expected H×W×3 uint8 RGB, got {image.dtype} {image.shape}")
    ext = Path(path).suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(image[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode {ext!r} images")
    atomic_write_bytes(path, encoded.tobytes())


DATASETS = {
    "300w": read_300w,
    "300w-lp": read_300w_lp,
    "helen": read_helen,
    "300vw": read_300vw,
    "ears": read_ears,
}

SPLITS = {
    "300w": tuple(SPLITS_300W),
    "300w-lp": SPLITS_300W_LP,
    "helen": tuple(SPLITS_HELEN),
    "300vw": tuple(VIDEOS_300VW),
    "ears": SPLITS_EARS,
}


def load_dataset(name, root, split, **options):
    """The samples of dataset ``name`` (a key of :data:`DATASETS`), ``split`` of :data:`SPLITS` ``[name]``.

    ``options`` go to the reader (e.g. ``flips=True`` for 300W-LP, ``drop_unreliable=True`` for 300-VW).
    """
    return _lookup(DATASETS, name, "dataset")(Path(root), split, **options)


# ----------------------------------------------------------------------------------------------------------------
# `check`: walk a tree and report every unreadable or inconsistent file


def _expected_points(rel_parts):
    """Point count implied by where a .pts lies under the data root (None when unknown)."""
    if "boxes" in rel_parts:
        return 4
    if "ears" in rel_parts:
        return 55
    if "300W" in rel_parts or "300VW" in rel_parts:
        return 68
    return None


def _video_info(path):
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return None
        return (int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
                (int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))))
    finally:
        capture.release()


def check_tree(root, max_outside=0.5):
    """Try to read every image, video, ``.pts`` and ``.mat`` under ``root``.

    Args:
        root: folder to walk (a data root or any part of one).
        max_outside: a landmark lying further outside its image than this fraction of the image's larger side
            is reported (landmarks slightly outside are normal on AFW/iBUG).

    Returns:
        ``(problems, counts)``: a list of ``(path, reason)`` and a Counter of files read per kind.
    """
    root = Path(root)
    problems, counts, pts_files, mats, txts = [], Counter(), [], [], []
    shapes, video_frames = {}, {}  # image/video path -> (H, W) or None when undecodable; video -> frame count
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for fname in sorted(files):
            path = Path(folder) / fname
            ext = path.suffix.lower()
            if fname.startswith("."):
                continue
            if ext in IMAGE_EXTS:
                counts["images"] += 1
                try:
                    shapes[path] = read_image(path).shape[:2]
                except DatasetError as e:
                    problems.append((path, e.reason))
                    shapes[path] = None
            elif ext in VIDEO_EXTS:
                counts["videos"] += 1
                info = _video_info(path)
                if info is None:
                    problems.append((path, "cannot open video"))
                video_frames[path], shapes[path] = info or (0, None)
            elif ext == ".pts":
                pts_files.append(path)
            elif ext == ".txt":
                txts.append(path)
            elif ext == ".mat":
                mats.append(path)
    # A .txt is an annotation when it sits beside a same-stem image (the ears) or looks like a .pts file.
    for path in txts:
        with open(path, "rb") as f:
            head = f.read(64)
        if head.lstrip().startswith(b"version:") or any(path.with_suffix(e) in shapes for e in IMAGE_EXTS):
            pts_files.append(path)

    def image_of(path):
        """The image (or 300-VW video) an annotation refers to; None when there is none."""
        for ext in IMAGE_EXTS:
            if path.with_suffix(ext) in shapes:
                return path.with_suffix(ext)
        if path.parent.name == "annot":  # 300-VW: annot/NNNNNN.pts -> imgs/NNNNNN.* or vid.avi
            for ext in IMAGE_EXTS:
                if (path.parent.parent / "imgs" / f"{path.stem}{ext}") in shapes:
                    return path.parent.parent / "imgs" / f"{path.stem}{ext}"
            return path.parent.parent / "vid.avi" if path.parent.parent / "vid.avi" in shapes else None
        return None

    def check_points(path, points):
        image = image_of(path)
        if image is None:
            problems.append((path, "annotation without image"))
            return
        if shapes[image] is None:
            return  # the image itself is already reported
        h, w = shapes[image]
        slack = max_outside * max(h, w)
        lo, hi = points.min(axis=0), points.max(axis=0)
        if (lo < -slack).any() or hi[0] > w - 1 + slack or hi[1] > h - 1 + slack:
            problems.append((path, f"points far outside the {w}x{h} image (x {lo[0]:.0f}..{hi[0]:.0f}, "
                                   f"y {lo[1]:.0f}..{hi[1]:.0f})"))

    annotated = set()
    counts_by_folder = {}
    for path in pts_files:
        counts["pts"] += 1
        rel_parts = path.relative_to(root).parts
        if "boxes" not in rel_parts:
            annotated.add(image_of(path))  # even when unreadable: that is reported once, as the .pts problem
        try:
            points = read_pts(path, expected_n=_expected_points(rel_parts))
        except DatasetError as e:
            problems.append((path, e.reason))
            continue
        counts_by_folder.setdefault(path.parent, []).append((path, len(points)))
        if "boxes" not in rel_parts:  # box files have no image of their own
            check_points(path, points)
    for folder, entries in counts_by_folder.items():  # unknown datasets: the majority count of a folder rules
        usual = Counter(n for _, n in entries).most_common(1)[0][0]
        problems += [(p, f"{n} points where the other files of the folder have {usual}")
                     for p, n in entries if n != usual]
    for path in mats:
        counts["mat"] += 1
        annotated.add(image_of(path))
        try:
            contents = scipy.io.whosmat(path)
        except Exception as e:  # unreadable container
            problems.append((path, f"cannot read .mat file ({type(e).__name__}: {e})"))
            continue
        if "Pose_Para" not in {name for name, _, _ in contents}:
            continue  # other .mat files (300W-LP landmarks/, 300-VW extra/, BFM) only need to open
        try:
            fitting = read_fitting(path)
        except DatasetError as e:
            problems.append((path, e.reason))
            continue
        check_points(path, fitting.pt2d)
    for image in shapes:
        is_parsing_label = "labels" in image.relative_to(root).parts  # Helen face-parsing maps
        if image.suffix.lower() in IMAGE_EXTS and image not in annotated and not is_parsing_label:
            problems.append((image, "image without annotation"))
    for video, n_frames in video_frames.items():  # 300-VW: one annot/*.pts per decoded frame
        annot = video.parent / "annot"
        n_annot = len(list(annot.glob("*.pts"))) if annot.is_dir() else 0
        if n_frames and n_annot and n_frames != n_annot and not (video.parent / "imgs").is_dir():
            problems.append((video, f"{n_frames} frames but {n_annot} annotations in {annot}"))
    return problems, counts


def main(argv=None):
    """Command line: ``check ROOT`` prints one line per problem and a summary; exit status 1 on any problem."""
    parser = argparse.ArgumentParser(prog="python -m densereg.datasets", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="read every image/.pts/.mat under ROOT and report problems")
    check.add_argument("root", type=Path)
    check.add_argument("--max-outside", type=float, default=0.5,
                       help="report landmarks further outside the image than this fraction of its size")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder")
    problems, counts = check_tree(args.root, args.max_outside)
    for path, reason in problems:
        print(f"PROBLEM {path}: {reason}")
    read = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "nothing"
    print(f"checked {args.root}: read {read}; {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
