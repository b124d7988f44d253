"""Check a data tree before using it: read every image, video, ``.pts`` and ``.mat`` and list every problem.

    python -m densereg.data.check ROOT [--max-outside 0.5]

Prints one ``PROBLEM <file>: <reason>`` line per unreadable or inconsistent file (an image without annotation,
points far outside their image, a ``.pts`` whose point count differs from its folder's, a 300-VW video whose
frame count differs from its annotations, ...) and a summary. Exit status: 0 when files were read and none has a
problem, 1 when some file has one, 2 when ROOT holds no data file at all (an empty or wrong folder is not a
clean data set).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

import cv2
import scipy.io

from densereg.data import formats


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
            if ext in formats.IMAGE_EXTS:
                counts["images"] += 1
                try:
                    shapes[path] = formats.read_image(path).shape[:2]
                except formats.DatasetError as e:
                    problems.append((path, e.reason))
                    shapes[path] = None
            elif ext in formats.VIDEO_EXTS:
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
        if head.lstrip().startswith(b"version:") or any(path.with_suffix(e) in shapes for e in formats.IMAGE_EXTS):
            pts_files.append(path)

    def image_of(path):
        """The image (or 300-VW video) an annotation refers to; None when there is none."""
        for ext in formats.IMAGE_EXTS:
            if path.with_suffix(ext) in shapes:
                return path.with_suffix(ext)
        if path.parent.name == "annot":  # 300-VW: annot/NNNNNN.pts -> imgs/NNNNNN.* or vid.avi
            for ext in formats.IMAGE_EXTS:
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
            points = formats.read_pts(path, expected_n=_expected_points(rel_parts))
        except formats.DatasetError as e:
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
            fitting = formats.read_fitting(path)
        except formats.DatasetError as e:
            problems.append((path, e.reason))
            continue
        check_points(path, fitting.pt2d)
    for image in shapes:
        is_parsing_label = "labels" in image.relative_to(root).parts  # Helen face-parsing maps
        if image.suffix.lower() in formats.IMAGE_EXTS and image not in annotated and not is_parsing_label:
            problems.append((image, "image without annotation"))
    for video, n_frames in video_frames.items():  # 300-VW: one annot/*.pts per decoded frame
        annot = video.parent / "annot"
        n_annot = len(list(annot.glob("*.pts"))) if annot.is_dir() else 0
        if n_frames and n_annot and n_frames != n_annot and not (video.parent / "imgs").is_dir():
            problems.append((video, f"{n_frames} frames but {n_annot} annotations in {annot}"))
    return problems, counts


def main(argv=None):
    """Command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m densereg.data.check", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--max-outside", type=float, default=0.5,
                        help="report landmarks further outside the image than this fraction of its size")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder")
    problems, counts = check_tree(args.root, args.max_outside)
    if not counts and not problems:
        print(f"{args.root}: nothing to check: no image, video, .pts or .mat file under it "
              "(is this the data root?)", file=sys.stderr)
        return 2
    for path, reason in problems:
        print(f"PROBLEM {path}: {reason}")
    read = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    print(f"checked {args.root}: read {read}; {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
