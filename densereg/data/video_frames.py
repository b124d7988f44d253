"""The frames of one 300-VW video in order, decoded once each: what a tracker needs, in bounded memory.

``Sample.image()`` on a ``vid.avi`` sample seeks to its frame, which costs a decode from the last key frame
per call; a tracker reads every frame in order, so :func:`iter_frames` opens the video once and decodes
sequentially (or reads the extracted ``imgs/`` frames), holding one frame at a time. Frame ``k`` (1-based) of
``vid.avi`` is the ``k``-th decoded frame, as ``annot/%06d.pts`` numbers them (reference §5).
"""

from __future__ import annotations

import cv2

from densereg.data import formats


def iter_frames(samples):
    """Yield ``(sample, H×W×3 uint8 RGB)`` for the samples of one video, in the order given (frame order).

    Args:
        samples: ``Sample`` objects of one video with ``extras["frame"]`` (1-based), sorted by frame; their
            ``image_path`` is either one video file (decoded sequentially) or one image per frame.

    Raises:
        DatasetError: the video cannot be opened, ends before a sample's frame, or the samples are not in
            increasing frame order (the message names the file).
    """
    videos = [s for s in samples if s.image_path.suffix.lower() in formats.VIDEO_EXTS]
    if not videos:
        for sample in samples:
            yield sample, sample.image()
        return
    path = videos[0].image_path
    if len(videos) != len(samples) or any(s.image_path != path for s in videos):
        raise formats.DatasetError(f"{path}: the samples of one video must all come from it", path=path)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise formats.DatasetError(f"{path}: cannot open video", path=path)
        position = 0            # frames decoded so far
        for sample in samples:
            frame = int(sample.extras["frame"])
            if frame <= position:
                raise formats.DatasetError(f"{path}: frame {frame} requested after frame {position} (samples "
                                           "must be in increasing frame order)", path=path)
            while position < frame:
                ok, bgr = capture.read()
                position += 1
                if not ok:
                    raise formats.DatasetError(f"{path}: the video ends at frame {position - 1}, before frame "
                                               f"{frame} of {sample.name}", path=path)
            yield sample, formats._to_rgb8(bgr, path)
    finally:
        capture.release()
