"""The readers of each benchmark in its native layout (:data:`LAYOUT`): a split → sorted :class:`Sample` list.

One set of readers serves both data sources: the real data and the synthetic benchmark, which
``densereg.data.synth`` writes in exactly the same layout (:func:`synthetic_paths` says where). The registry of
these readers, and the data-root rule, are in :mod:`densereg.data.datasets`.

The files themselves (``.pts``, box files, images, video frames, 300W-LP ``.mat`` fittings) are read through
:mod:`densereg.data.formats`. One quirk of the real 300W-LP files is a matter of layout and handled here: the
re-rendered ``k >= 1`` files copy ``pt2d`` from ``k = 0``, so their landmarks are not those of the image
(readers give ``None``; project the fitting's mesh instead).

Malformed or missing files always raise :class:`densereg.data.formats.DatasetError` naming the file and what is
wrong; nothing is skipped silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io

from densereg.data import formats
from densereg.data.formats import _fail
from densereg.data.sample import Sample, landmarks_box
from densereg.geometry import mirror
from densereg.registry import lookup

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



def _check_split(split, valid, dataset):
    lookup(dict.fromkeys(valid), split, f"{dataset} split")


def _need_dir(path, what):
    if not path.is_dir():
        raise formats.DatasetError(f"{path}: missing folder ({what}); expected layout:\n{LAYOUT}")
    return path


def _pair_by_stem(folder, annotation_exts=(".pts",)):
    """``[(stem, image, annotation)]`` sorted by stem; an image without annotation or vice versa is an error."""
    images, candidates = {}, {}
    for path in folder.iterdir():
        ext = path.suffix.lower()
        if path.name.startswith("."):
            continue
        if ext in formats.IMAGE_EXTS:
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
        landmarks = formats.read_pts(annotation, expected_n=n_points)
        if use_boxes:
            box_file = box_folder / f"{stem}.pts"
            if not box_file.is_file():
                _fail(box_file, f"box file missing for {image.name} (the box folder covers only some images)")
            box, source = formats.read_box_pts(box_file), "/".join(box_folder.parts[-2:])
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

def read_300w(root, split):
    """300-W faces of ``split`` (a key of :data:`SPLITS_300W`), 68 points each, sorted by name.

    Names are relative to ``300W/`` (``"afw/134212_1"``) or, for the private set, to ``300W/300W/``
    (``"01_Indoor/indoor_001"``). Boxes come from ``300W/boxes/<subset>/`` (``boxes/300w/`` for the private
    set) when that folder exists, else from the landmarks.
    """
    base = _need_dir(Path(root) / "300W", "300-W")
    samples = []
    for subset in lookup(SPLITS_300W, split, "300W split"):
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
    subset = lookup(SPLITS_HELEN, split, "Helen split")
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
SPLITS_300W_LP = ("train", "test", "all")


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
            synthetic ``SYNTH``; ``"test"`` the rest, i.e. the fittings of the 300-W common and challenging test
            images (HELEN testset, ``LFPW_image_test_*``, IBUG): the only real images with dense GT that no
            network was trained on; ``"all"`` keeps everything.
        flips: include the ``*_Flip`` folders.
        profiles: include the re-rendered ``k >= 1`` images. Their stored ``pt2d`` belongs to ``k = 0``, so their
            ``landmarks`` are None and their box is that of the ``k = 0`` landmarks (approximate).

    Landmarks of ``*_Flip`` samples are put back in iBUG semantic order (:func:`densereg.geometry.mirror.flip_file_landmarks`).
    """
    _check_split(split, SPLITS_300W_LP, "300W-LP")
    base = _need_dir(Path(root) / "300W_LP", "300W-LP")
    subsets = sorted(p for p in base.iterdir() if p.is_dir() and any(p.glob("*.mat")))
    if not subsets:
        raise formats.DatasetError(f"{base}: no subset folder with .mat fittings; expected layout:\n{LAYOUT}")
    helen_train_ids = None
    samples = []
    for folder in subsets:
        flip = folder.name.endswith("_Flip")
        subset = folder.name[: -len("_Flip")] if flip else folder.name
        if flip and not flips:
            continue
        if split != "all" and subset == "HELEN" and helen_train_ids is None:
            helen_dir = _need_dir(Path(root) / "300W" / "helen" / "trainset", "needed to pick HELEN train fits")
            helen_train_ids = {p.stem for p in helen_dir.glob("*.pts")}
        for stem, image, mat in _pair_by_stem(folder, (".mat",)):
            source_stem, _, k_text = stem.rpartition("_")
            if not k_text.isdigit():
                _fail(mat, "name does not end in _<k> (the 300W-LP rendering index)")
            k = int(k_text)
            if (k > 0 and not profiles) or (split != "all" and (split == "train") != _lp_is_train(
                    subset, source_stem, helen_train_ids)):
                continue
            fitting = formats.read_fitting(mat)
            if flip and len(fitting.pt2d) != 68:
                _fail(mat, f"a _Flip fitting needs 68 points to restore their order, found {len(fitting.pt2d)}")
            pts = mirror.flip_file_landmarks(fitting.pt2d) if flip else fitting.pt2d
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
    videos = lookup(VIDEOS_300VW, split, "300VW split")
    base = _need_dir(Path(root) / "300VW", "300-VW")
    present = [v for v in videos if (base / v).is_dir()]
    missing = sorted(set(videos) - set(present))
    if not present or (missing and require_all):
        raise formats.DatasetError(f"{base}: {len(missing)} of the {len(videos)} {split} videos are missing "
                                   f"({', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''})")
    samples = []
    for video in present:
        annot = _need_dir(base / video / "annot", f"300-VW video {video} annotations")
        frames_dir = base / video / "imgs"
        frames = ({p.stem: p for p in frames_dir.iterdir() if p.suffix.lower() in formats.IMAGE_EXTS}
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
            landmarks = formats.read_pts(pts, expected_n=68)
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
