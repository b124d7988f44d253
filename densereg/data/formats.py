"""The on-disk file formats of the face benchmarks: landmarks, boxes, images, video frames, 3DMM fittings.

Every reader of :mod:`densereg.data.datasets` and the synthetic generator (:mod:`densereg.data.synth`) go through these
functions, so the real data and the embedded benchmark are read and written byte-compatibly. Details and
provenance in ``reference/datasets-and-protocols.md``:

* ``.pts`` (iBUG): a ``version``/``n_points`` header, ``{``, one ``x y`` line per point, ``}``. Coordinates are
  1-based on disk; :func:`read_pts` subtracts 1 and :func:`write_pts` adds it back, byte-compatible with the
  official files (:data:`PTS_STYLES`). Face boxes are 4-point ``.pts`` files (:func:`read_box_pts`).
* 300W-LP / AFLW2000-3D ``.mat`` fittings: :func:`read_fitting` / :func:`write_fitting`. Two quirks of the real
  files are handled by the readers: ``*_Flip`` files mirror ``pt2d`` without re-ordering the points
  (:func:`flip_file_landmarks`, built on the iBUG flip permutation), and the re-rendered ``k >= 1`` files copy
  ``pt2d`` from ``k = 0``, so their landmarks are not those of the image.
* Images of any mode (grey, palette, RGBA, 16-bit) load as ``H×W×3`` uint8 RGB (:func:`read_image`); 300-VW
  frames can be decoded straight from the video (:func:`read_video_frame`).

Every write is atomic (:func:`atomic_write_bytes`). Malformed or missing files always raise
:class:`DatasetError` naming the file and what is wrong; nothing is skipped silently.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from densereg.registry import lookup

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


def build_folder(out, fill):
    """Build the folder ``out`` atomically: ``fill(tmp)`` writes everything into ``<out>.tmp-<pid>``, which then
    replaces ``out``; returns what ``fill`` returns.

    An error or an interrupt removes the temporary folder, so no half-built folder is ever left where a reader
    would take it for a finished one (the synthetic benchmark, videos, ears and bodies are all built this way).
    """
    out = Path(out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        result = fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return result


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
    style = lookup(PTS_STYLES, style, ".pts style")
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
    if not data.size:
        _fail(path, "empty file (0 bytes), not an image")
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is not None:
        return _to_rgb8(pixels, path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError:   # its message names PIL's in-memory buffer, not the file
        _fail(path, f"not a decodable image (unknown image format; the file starts with {data[:8].tobytes()!r})")
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
