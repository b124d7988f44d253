"""Left-right mirroring of 68-point iBUG landmarks, keeping each index's meaning.

A horizontally flipped face swaps its left and right: the jaw's first point becomes its last, the left eye the
right one. Data augmentation (MDM, HOG-SVM training) and 300W-LP's ``*_Flip`` files both need the permutation
that puts mirrored points back in iBUG semantic order; this module owns it (reference §0.2).
"""

from __future__ import annotations

import numpy as np

from densereg.registry import lookup


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


# Landmark count -> horizontal-flip permutation. The iBUG ears' 55 points keep their indices: a left ear is
# annotated as the mirror image of a right one (reference §6), so a flipped ear needs no re-ordering.
FLIP_PERMUTATIONS = {68: _FLIP_68, 55: np.arange(55)}


def mirror_landmarks(points, width):
    """Mirror 0-based landmarks (68-point faces, 55-point ears) for an image flipped left-right, keeping each
    index's meaning (:data:`FLIP_PERMUTATIONS`)."""
    points = np.asarray(points, dtype=np.float64)
    mirrored = np.column_stack([width - 1.0 - points[:, 0], points[:, 1]])
    return mirrored[lookup(FLIP_PERMUTATIONS, len(points), "landmark count with a mirror permutation")]


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
