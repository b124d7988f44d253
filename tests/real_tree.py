"""A miniature real-data tree for tests: ``$DENSEREG_DATA`` in the README's layout, made from the fixtures.

    build_real_tree(Path("../shared/fixtures/real"), tmp_path / "data")

Nobody can ship the real benchmarks, so the real-data path is rehearsed on this: every file is in its real
on-disk format (1-based ``.pts``, 4-point box ``.pts``, 3DDFA ``.mat`` fittings, the 3DDFA BFM ``.npy``/``.mat``
files), laid out as ``densereg.data.readers.LAYOUT`` says, and small enough to train the ``tiny`` presets in
seconds. The images are the fixtures' real faces (the LFPW image, the 300W-LP AFW fitting and its ``_Flip``
copy, the 300-VW frames), copied or augmented (mirrored, shifted, rescaled, written as new files with
consistent landmarks). The tree is built in a temporary folder; no fixture file ever enters the repository.

The Basel Face Model cannot be shipped and the fixtures hold only its mean, triangles and UV, without the
identity/expression bases a fitting needs. :func:`write_bfm_standin` therefore writes a **stand-in in the real
BFM file formats** made from the built-in template (see its docstring for how its units and bases are chosen
so that the real 300W-LP fittings pose and deform it sensibly).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from densereg.data import formats
from densereg.geometry import mirror
from densereg.geometry.templates import builtin_face

# Sizes of the 3DDFA BFM bases, which 300W-LP's Shape_Para / Exp_Para have (199 identity, 29 expression).
N_SHAPE, N_EXP = 199, 29
# The stand-in's expression columns: built-in modes whose negative values are still a valid face (mouth_open
# and eye_closure below 0 cross the lips or lids, and 3DDFA's Exp_Para takes both signs).
STANDIN_EXPRESSIONS = ("smile", "pout", "brow_raise", "frown")
# Native BFM units per unit of a built-in expression mode, relative to the face's size: an Exp_Para of about 1
# (the real files' range) then moves the face by a fifth of a full built-in expression.
EXP_GAIN = 0.2

HELEN_TEST = ("2968560214_1", "2968560214_2")   # Helen test stems (ids in the real Helen naming style)
HELEN_TRAIN = ("100032540_1", "100040721_1")


def _augment(image, points, flip=False, shift=(0, 0), scale=1.0):
    """``image`` and its 0-based 68 points mirrored, then rescaled, then shifted (edge pixels replicated)."""
    points = np.asarray(points, np.float64)
    if flip:
        points = mirror.mirror_landmarks(points, image.shape[1])
        image = image[:, ::-1]
    if scale != 1.0:
        h, w = image.shape[:2]
        image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        points = (points + 0.5) * [image.shape[1] / w, image.shape[0] / h] - 0.5
    if shift != (0, 0):
        h, w = image.shape[:2]
        matrix = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
        image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
        points = points + shift
    return np.ascontiguousarray(image), points


def _write_face(folder, stem, ext, image, points, box_folder=None):
    folder.mkdir(parents=True, exist_ok=True)
    formats.write_image(folder / f"{stem}{ext}", image)
    formats.write_pts(folder / f"{stem}.pts", points)
    if box_folder is not None:
        box_folder.mkdir(parents=True, exist_ok=True)
        formats.write_box_pts(box_folder / f"{stem}.pts", np.concatenate([points.min(0), points.max(0)]))


def _copy_pair(src_stem: Path, dst_stem: Path):
    """Byte copies of ``<src_stem>.jpg`` and ``.mat`` as ``<dst_stem>.*`` (a 300W-LP image and its fitting)."""
    dst_stem.parent.mkdir(parents=True, exist_ok=True)
    for ext in (".jpg", ".mat"):
        shutil.copyfile(src_stem.with_suffix(ext), dst_stem.with_suffix(ext))


def _unflipped_copy(flip_stem: Path, dst_stem: Path):
    """A ``*_Flip`` 300W-LP pair stored as an ordinary (unmirrored-file) pair: a mirrored face in its own right.

    The ``_Flip`` files keep ``pt2d`` in the original's order; an ordinary file has it in iBUG order, so the
    ``.mat`` is re-saved (same variables, MATLAB 5 format) with ``pt2d`` re-ordered.
    """
    dst_stem.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(flip_stem.with_suffix(".jpg"), dst_stem.with_suffix(".jpg"))
    mat = {k: v for k, v in scipy.io.loadmat(flip_stem.with_suffix(".mat")).items() if not k.startswith("__")}
    mat["pt2d"] = mirror.flip_file_landmarks(mat["pt2d"].T).T
    scipy.io.savemat(dst_stem.with_suffix(".mat"), mat)


def _similarity(source, target):
    """``(s, R, t)`` minimising ``|s·R·source + t − target|`` (Umeyama; no reflection)."""
    ms, mt = source.mean(0), target.mean(0)
    a, b = source - ms, target - mt
    u, sv, vt = np.linalg.svd(a.T @ b)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = (u @ d @ vt).T
    scale = float((sv * np.diag(d)).sum() / (a ** 2).sum())
    return scale, rotation, mt - scale * ms @ rotation.T


def write_bfm_standin(fixture_bfm: Path, out: Path):
    """Writes a BFM stand-in, made from the built-in template, in the 3DDFA BFM file formats, into ``out``.

    Files and formats (those of the real 3DDFA files; the fixtures show the ones they carry):

    * ``u_shp.npy`` / ``u_exp.npy``: ``(3V, 1)`` float32 flat ``x0, y0, z0, x1, ...``; their sum is the mean.
      ``u_exp`` is a small non-zero expression offset, as in the real model, so the reader must add it.
    * ``w_shp.npy`` ``(3V, 199)`` and ``w_exp.npy`` ``(3V, 29)`` float32: the bases, sized for 300W-LP's
      ``Shape_Para`` (199) and ``Exp_Para`` (29). Identity: the built-in template's identity modes, each
      scaled to a unit-norm column as the 3DDFA ``w_shp`` columns are (so a real ``Shape_Para`` of ~1e6 moves
      the face by a few percent of its size), then zero columns up to 199. Expression: the built-in modes of
      :data:`STANDIN_EXPRESSIONS` times :data:`EXP_GAIN` of the face's size, then zero columns up to 29.
    * ``tri.mat``: ``tri`` 3×T uint16, 1-based, wound inwards like 3DDFA's (the reader re-winds it).
    * ``keypoints_sim.npy``: 204 int64 flat indices (68 landmark vertices × x, y, z).
    * ``BFM_UV.mat``: ``UV`` V×2 float64 in [0, 1], v growing upwards like the real file (the reader flips it).

    Units and placement: the built-in face is mapped by the similarity that best puts its 68 landmark vertices
    on the real BFM mean's (``fixture_bfm``'s ``u_shp + u_exp`` at ``keypoints_sim``), so it is in the BFM's
    native units (micrometres, ~86,000 between the outer eye corners), axes and origin, and the real fittings'
    ``Pose_Para`` project it onto the face in their images.
    """
    out.mkdir(parents=True, exist_ok=True)
    t = builtin_face()
    real = (np.load(fixture_bfm / "u_shp.npy") + np.load(fixture_bfm / "u_exp.npy")).reshape(-1, 3)
    real_kp = np.load(fixture_bfm / "keypoints_sim.npy")[0::3] // 3
    scale, rotation, shift = _similarity(t.vertices[t.landmarks], real[real_kp].astype(np.float64))
    n = len(t.vertices)

    def native(displacement):   # a (V, 3) displacement of the built-in face in BFM units and axes
        return scale * displacement @ rotation.T

    mean = native(t.vertices) + shift
    exp_modes = [native(t.exp_basis[t.exp_names.index(name)]) * EXP_GAIN for name in STANDIN_EXPRESSIONS]
    u_exp = 0.5 * exp_modes[0]
    w_shp = np.zeros((3 * n, N_SHAPE), np.float32)
    for i, mode in enumerate(t.id_basis[:N_SHAPE]):
        flat = native(mode).ravel()
        w_shp[:, i] = flat / np.linalg.norm(flat)
    w_exp = np.zeros((3 * n, N_EXP), np.float32)
    for i, mode in enumerate(exp_modes):
        w_exp[:, i] = mode.ravel()

    np.save(out / "u_shp.npy", (mean - u_exp).astype(np.float32).reshape(-1, 1))
    np.save(out / "u_exp.npy", u_exp.astype(np.float32).reshape(-1, 1))
    np.save(out / "w_shp.npy", w_shp)
    np.save(out / "w_exp.npy", w_exp)
    scipy.io.savemat(out / "tri.mat", {"tri": (t.triangles[:, [0, 2, 1]].T + 1).astype(np.uint16)})
    np.save(out / "keypoints_sim.npy", (3 * t.landmarks[:, None] + np.arange(3)).ravel().astype(np.int64))
    scipy.io.savemat(out / "BFM_UV.mat", {"UV": t.uv * [1.0, -1.0] + [0.0, 1.0]})


def build_real_tree(fixtures: Path, out: Path) -> Path:
    """Writes the miniature real tree into ``out`` (created) and returns it.

    Contents (every 300-W face has its image and 68-point ``.pts``):

    * ``300W/afw`` (2): the 300W-LP AFW image with its ``pt2d``, and its ``_Flip`` copy with the points put
      back in iBUG order. ``300W/helen/trainset`` (2) and ``300W/lfpw/trainset`` (2): the LFPW face mirrored,
      shifted, as is, rescaled. So the 300-W train split has 6 faces of two people.
    * ``300W/helen/testset`` (2, :data:`HELEN_TEST`): the two AFW faces again, each with its 300W-LP fitting as
      ``300W_LP/HELEN/HELEN_<stem>_0.{jpg,mat}`` (what Helen segmentation on real data needs).
    * ``300W/300W/01_Indoor``, ``02_Outdoor`` (2 each, ``.png``): 300-VW frames and LFPW variants;
      ``300W/boxes/300w/<stem>.pts``: their 4-point boxes (the landmarks' bounding box).
    * ``300W_LP/AFW``, ``AFW_Flip``: the fixture fittings as they are (``_0`` and re-rendered ``_1``), plus
      ``AFW/AFW_134212_2_0``: the ``_Flip`` face as an ordinary pair, so DenseReg has two training fittings.
    * ``BFM``: :func:`write_bfm_standin`. ``300VW/001``: the fixture frames. ``ears/{train,test}``: the
      fixture ears (``.txt`` annotations), the test split a copy of one of them.
    """
    fx, out = Path(fixtures), Path(out)
    lp_fx = fx / "300W_LP"
    w = out / "300W"

    lfpw = formats.read_image(fx / "300W/lfpw/trainset/image_0001.png")
    lfpw_pts = formats.read_pts(fx / "300W/lfpw/trainset/image_0001.pts", expected_n=68)
    afw = formats.read_image(lp_fx / "AFW/AFW_134212_1_0.jpg")
    afw_pts = formats.read_fitting(lp_fx / "AFW/AFW_134212_1_0.mat").pt2d
    afw_flip = formats.read_image(lp_fx / "AFW_Flip/AFW_134212_1_0.jpg")
    afw_flip_pts = mirror.flip_file_landmarks(formats.read_fitting(lp_fx / "AFW_Flip/AFW_134212_1_0.mat").pt2d)
    frames = [(formats.read_image(fx / f"300VW/001/imgs/{k}.jpg"),
               formats.read_pts(fx / f"300VW/001/annot/{k}.pts", expected_n=68)) for k in ("000006", "000009")]

    _write_face(w / "afw", "134212_1", ".jpg", afw, afw_pts)
    _write_face(w / "afw", "134212_2", ".jpg", afw_flip, afw_flip_pts)
    _write_face(w / "helen/trainset", HELEN_TRAIN[0], ".jpg", *_augment(lfpw, lfpw_pts, flip=True))
    _write_face(w / "helen/trainset", HELEN_TRAIN[1], ".jpg", *_augment(lfpw, lfpw_pts, shift=(25, -15)))
    _write_face(w / "lfpw/trainset", "image_0001", ".png", lfpw, lfpw_pts)
    _write_face(w / "lfpw/trainset", "image_0002", ".png", *_augment(lfpw, lfpw_pts, scale=0.8))
    _write_face(w / "helen/testset", HELEN_TEST[0], ".jpg", afw, afw_pts)
    _write_face(w / "helen/testset", HELEN_TEST[1], ".jpg", afw_flip, afw_flip_pts)

    boxes = w / "boxes/300w"
    _write_face(w / "300W/01_Indoor", "indoor_001", ".png", *frames[0], box_folder=boxes)
    _write_face(w / "300W/01_Indoor", "indoor_002", ".png", *_augment(lfpw, lfpw_pts, shift=(-20, 10)),
                box_folder=boxes)
    _write_face(w / "300W/02_Outdoor", "outdoor_001", ".png", *_augment(*frames[1], flip=True), box_folder=boxes)
    _write_face(w / "300W/02_Outdoor", "outdoor_002", ".png",
                *_augment(lfpw, lfpw_pts, flip=True, scale=1.2), box_folder=boxes)

    lp = out / "300W_LP"
    for folder in ("AFW", "AFW_Flip"):
        for k in (0, 1):
            _copy_pair(lp_fx / folder / f"AFW_134212_1_{k}", lp / folder / f"AFW_134212_1_{k}")
    _unflipped_copy(lp_fx / "AFW_Flip/AFW_134212_1_0", lp / "AFW/AFW_134212_2_0")
    _copy_pair(lp_fx / "AFW/AFW_134212_1_0", lp / "HELEN" / f"HELEN_{HELEN_TEST[0]}_0")
    _copy_pair(lp / "AFW/AFW_134212_2_0", lp / "HELEN" / f"HELEN_{HELEN_TEST[1]}_0")

    write_bfm_standin(fx / "BFM", out / "BFM")
    shutil.copytree(fx / "300VW/001", out / "300VW/001")
    shutil.copytree(fx / "ears/train", out / "ears/train")
    (out / "ears/test").mkdir(parents=True)
    for ext in (".png", ".txt"):
        shutil.copyfile(fx / f"ears/train/train_5{ext}", out / f"ears/test/test_1{ext}")
    return out
