"""Face-part labels from a UV field (paper Sec. 2 and 4.2): the template's part at each pixel's (u, v).

DenseReg is never trained for segmentation; its part labels come for free by looking up, at every pixel it
calls foreground, the template's part label at the regressed (u, v). Applied to the *ground-truth* UV field
rendered from a 3D fitting, the same lookup is the segmentation ground truth of Table 1.
"""

from __future__ import annotations

import numpy as np

# Display colours of the parts (RGB), indexed like ``densereg.geometry.template.PARTS``; "other" is black.
PART_COLOURS = np.array([(0, 0, 0), (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
                         (0, 114, 178), (213, 94, 0), (204, 121, 167)], dtype=np.uint8)


def transfer_parts(template, u: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Part labels of an image from a UV field: the template's label at ``(u, v)`` on ``mask``, 0 elsewhere.

    Args:
        template: anything with ``part_at(u, v)`` (a ``densereg.geometry.template.Template``).
        u, v: ``H×W`` UV maps (NaN where undefined).
        mask: ``H×W`` bool foreground; pixels outside it are "other" (class 0).

    Returns:
        ``H×W`` uint8 class ids into ``template.PARTS``.
    """
    mask = np.asarray(mask, bool) & np.isfinite(u) & np.isfinite(v)
    labels = np.zeros(mask.shape, np.uint8)
    labels[mask] = template.part_at(u[mask], v[mask])
    return labels


def colourise(labels: np.ndarray) -> np.ndarray:
    """``H×W×3`` uint8 display of a part-label image (:data:`PART_COLOURS`)."""
    return PART_COLOURS[np.asarray(labels, np.intp)]
