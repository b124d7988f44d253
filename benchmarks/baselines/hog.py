"""Felzenszwalb et al.'s HOG features, the feature pyramid the DPM scans, and filter correlation.

The features of :mod:`benchmarks.baselines.dpm` (Felzenszwalb, Girshick, McAllester & Ramanan, PAMI 2010, Sec. 6):
31-dimensional HOG on ``sbin × sbin``-pixel cells (18 contrast-sensitive + 9 contrast-insensitive orientations +
4 gradient-energy features, each cell normalised by its 4 surrounding 2×2 blocks and truncated at 0.2), plus a
32nd channel that is 1 in the padding outside the image, so filters can learn what "off the image" costs.
:class:`FeaturePyramid` holds ``interval`` levels per octave; parts read the level one octave below the root
(2× resolution). :func:`correlate` scores filters on a map; :func:`warp_features` gives the feature vector of
one box warped to a filter's size (how training initialises root filters).
"""

from __future__ import annotations

import math

import cv2
import numba
import numpy as np

FEATURE_DIM = 32        # 31 HOG channels + 1 "outside the image" indicator
HOG_TRUNCATION = 0.2    # Felzenszwalb et al.'s clipping of block-normalised histograms
PART_MARGIN = 2         # extra part-level cells padded around every part map (see FeaturePyramid.part_map)


_UU = np.cos(np.arange(9) * np.pi / 9)
_VV = np.sin(np.arange(9) * np.pi / 9)


@numba.njit(cache=True)
def _gradients(img, uu, vv):
    """Per-pixel gradient magnitude and orientation bin (0-17) of the strongest colour channel.

    Orientation ``o`` is the nearest of 18 directions, ``o·20°`` from +x with y pointing down (0 = dark-to-bright
    left to right, 9 = the opposite). The one-pixel image border has no centred gradient and gets magnitude 0.
    """
    h, w, nch = img.shape
    mag = np.zeros((h, w), np.float32)
    ori = np.zeros((h, w), np.int64)
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            best_v = -1.0
            gx = 0.0
            gy = 0.0
            for c in range(nch):
                dx = img[y, x + 1, c] - img[y, x - 1, c]
                dy = img[y + 1, x, c] - img[y - 1, x, c]
                v = dx * dx + dy * dy
                if v > best_v:
                    best_v, gx, gy = v, dx, dy
            best_dot = 0.0
            best_o = 0
            for o in range(9):
                dot = uu[o] * gx + vv[o] * gy
                if dot > best_dot:
                    best_dot, best_o = dot, o
                elif -dot > best_dot:
                    best_dot, best_o = -dot, o + 9
            mag[y, x] = math.sqrt(best_v)
            ori[y, x] = best_o
    return mag, ori


@numba.njit(cache=True)
def _orientation_histograms(mag, ori, sbin):
    """Per-cell 18-bin histograms of gradient magnitude, each pixel spread bilinearly over its 4 nearest cells."""
    h, w = mag.shape
    cy = int(round(h / sbin))
    cx = int(round(w / sbin))
    hist = np.zeros((cy, cx, 18), np.float32)
    for y in range(1, min(cy * sbin, h) - 1):
        p = (y + 0.5) / sbin - 0.5
        iy = int(math.floor(p))
        fy = p - iy
        for x in range(1, min(cx * sbin, w) - 1):
            m = mag[y, x]
            o = ori[y, x]
            q = (x + 0.5) / sbin - 0.5
            ix = int(math.floor(q))
            fx = q - ix
            top, bottom = (1.0 - fy) * m, fy * m
            if iy >= 0:
                if ix >= 0:
                    hist[iy, ix, o] += (1.0 - fx) * top
                if ix + 1 < cx:
                    hist[iy, ix + 1, o] += fx * top
            if iy + 1 < cy:
                if ix >= 0:
                    hist[iy + 1, ix, o] += (1.0 - fx) * bottom
                if ix + 1 < cx:
                    hist[iy + 1, ix + 1, o] += fx * bottom
    return hist


@numba.njit(cache=True)
def _normalise_histograms(hist, truncation):
    """Block-normalise, truncate and project cell histograms to the 31 Felzenszwalb features (border cells drop)."""
    cy, cx, _ = hist.shape
    energy = np.zeros((cy, cx), np.float64)
    for y in range(cy):
        for x in range(cx):
            s = 0.0
            for o in range(9):
                t = hist[y, x, o] + hist[y, x, o + 9]
                s += t * t
            energy[y, x] = s
    oy, ox = max(cy - 2, 0), max(cx - 2, 0)
    feat = np.zeros((oy, ox, 31), np.float32)
    eps = 1e-4
    norms = np.empty(4)
    for y in range(oy):
        for x in range(ox):
            # the four 2×2 blocks containing cell (y+1, x+1)
            for b in range(4):
                by = y + (b // 2)
                bx = x + (b % 2)
                norms[b] = 1.0 / math.sqrt(energy[by, bx] + energy[by, bx + 1] + energy[by + 1, bx]
                                           + energy[by + 1, bx + 1] + eps)
            texture = np.zeros(4)
            for o in range(18):
                v = hist[y + 1, x + 1, o]
                s = 0.0
                for b in range(4):
                    t = min(v * norms[b], truncation)
                    s += t
                    texture[b] += t
                feat[y, x, o] = 0.5 * s
            for o in range(9):
                v = hist[y + 1, x + 1, o] + hist[y + 1, x + 1, o + 9]
                s = 0.0
                for b in range(4):
                    s += min(v * norms[b], truncation)
                feat[y, x, 18 + o] = 0.5 * s
            for b in range(4):
                feat[y, x, 27 + b] = 0.2357 * texture[b]
    return feat


def hog_features(image, sbin=8, gradients=None):
    """Felzenszwalb's 31-dimensional HOG of an image.

    Args:
        image: ``H×W×3`` (or ``H×W``) array, uint8 or float; values only matter up to a contrast scale.
        sbin: cell size in pixels.
        gradients: ``image_gradients(image)`` when already computed (the pyramid bins one image at two sizes).

    Returns:
        ``(round(H/sbin) - 2, round(W/sbin) - 2, 31)`` float32: channels 0-17 contrast-sensitive orientations
        (channel ``o`` is the direction at angle ``o·20°`` from +x, y pointing down), 18-26 contrast-insensitive
        orientations (``o mod 9``), 27-30 gradient energy in each of the 4 normalising blocks. Cell ``i`` covers
        pixels ``[(i+1)·sbin, (i+2)·sbin)`` (the outermost cells lack a full neighbourhood and are dropped).
    """
    mag, ori = image_gradients(image) if gradients is None else gradients
    return _normalise_histograms(_orientation_histograms(mag, ori, sbin), HOG_TRUNCATION)


def image_gradients(image):
    """``(magnitude, orientation bin)`` per pixel, the input of :func:`hog_features`."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[0] < 3 or img.shape[1] < 3:
        raise ValueError(f"image {img.shape[:2]} too small for HOG")
    return _gradients(np.ascontiguousarray(img), _UU, _VV)


def _with_indicator(feat):
    """Append the 32nd "outside the image" channel (0 on real cells)."""
    out = np.zeros(feat.shape[:2] + (FEATURE_DIM,), np.float32)
    out[:, :, :31] = feat
    return out


class FeaturePyramid:
    """HOG maps of one image at ``interval`` scales per octave, computed on demand and cached.

    Map ``k`` has cells of ``sbin · 2^(k/interval)`` image pixels. Root filters read maps ``k >= 0``; their parts
    read map ``k - interval`` (2× resolution): for ``k < interval`` that map is HOG with ``sbin/2``-pixel cells,
    otherwise it is the root map one octave finer. Padded maps (``root_map``/``part_map``) are what filters scan.
    """

    def __init__(self, image, interval, sbin, pad):
        self.image = np.asarray(image, dtype=np.float32)
        self.interval, self.sbin, self.pad = interval, sbin, pad
        self.height, self.width = self.image.shape[:2]
        self._hog, self._root, self._part, self._images, self._gradients = {}, {}, {}, {}, {}

    def _geometry(self, k):
        """``(sbin, scaled height, scaled width)`` of map ``k``: each octave halves the one above it."""
        base, sbin = (k, self.sbin) if k >= 0 else (k + self.interval, self.sbin // 2)
        h, w = self._size(base)
        return sbin, h, w

    def _size(self, base):
        if base >= self.interval:
            h, w = self._size(base - self.interval)
            return max(round(h / 2), 1), max(round(w / 2), 1)
        scale = 2.0 ** (-base / self.interval)
        return max(round(self.height * scale), 1), max(round(self.width * scale), 1)

    def scaled_image(self, base):
        """The image resized for root level ``base``: the first octave from the original, later ones by halving."""
        if base not in self._images:
            h, w = self._size(base)
            if (h, w) == (self.height, self.width):
                img = self.image
            else:
                src = self.scaled_image(base - self.interval) if base >= self.interval else self.image
                img = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
            self._images[base] = img
        return self._images[base]

    def steps(self, k):
        """``(step_y, step_x)``: image pixels per cell of map ``k`` (cheap; computes no features)."""
        sbin, h, w = self._geometry(k)
        return sbin * self.height / h, sbin * self.width / w

    def hog(self, k):
        """``(features (h, w, 31), step_y, step_x)`` of map ``k``."""
        if k not in self._hog:
            sbin, h, w = self._geometry(k)
            base = k if k >= 0 else k + self.interval
            if min(h, w) < 3 * sbin:   # fewer than one cell after dropping the border
                feat = np.zeros((0, 0, 31), np.float32)
            else:
                if base not in self._gradients:
                    self._gradients[base] = image_gradients(self.scaled_image(base))
                feat = hog_features(None, sbin, self._gradients[base])
            self._hog[k] = (feat,) + self.steps(k)
        return self._hog[k]

    def max_level(self, min_cells):
        """Largest root level whose unpadded map is at least ``min_cells = (rows, cols)``."""
        k = -1
        while True:
            h, w = self._size(k + 1)
            if h / self.sbin - 2 < min_cells[0] or w / self.sbin - 2 < min_cells[1] or (h, w) == (1, 1):
                return k
            k += 1

    def root_map(self, k):
        """Map ``k`` zero-padded by ``pad`` cells (indicator channel 1 in the padding)."""
        if k not in self._root:
            feat = self.hog(k)[0]
            py, px = self.pad
            out = np.zeros((feat.shape[0] + 2 * py, feat.shape[1] + 2 * px, FEATURE_DIM), np.float32)
            out[:, :, 31] = 1.0
            out[py:py + feat.shape[0], px:px + feat.shape[1]] = _with_indicator(feat)
            self._root[k] = out
        return self._root[k]

    def part_map(self, k):
        """Map ``k - interval`` padded so that root cell ``y`` of ``root_map(k)`` sits at part cell ``2y + M``.

        ``M = PART_MARGIN`` (plus the HOG offset of 1 that anchors absorb). The map has
        ``2·rows(root_map(k)) + 2M`` rows so every anchored part of every root position is inside it.
        """
        if k not in self._part:
            rows, cols = self.root_map(k).shape[:2]
            feat = self.hog(k - self.interval)[0]
            oy, ox = 2 * self.pad[0] + PART_MARGIN, 2 * self.pad[1] + PART_MARGIN
            out = np.zeros((2 * rows + 2 * PART_MARGIN, 2 * cols + 2 * PART_MARGIN, FEATURE_DIM), np.float32)
            out[:, :, 31] = 1.0
            h, w = min(feat.shape[0], out.shape[0] - oy), min(feat.shape[1], out.shape[1] - ox)
            out[oy:oy + h, ox:ox + w] = _with_indicator(feat[:h, :w])
            self._part[k] = out
        return self._part[k]


@numba.njit(cache=True, fastmath=True)
def _correlate(fmap, filters):
    n, fh, fw, d = filters.shape
    ho, wo = fmap.shape[0] - fh + 1, fmap.shape[1] - fw + 1
    out = np.zeros((n, ho, wo), np.float32)
    for f in range(n):
        for y in range(ho):
            for dy in range(fh):
                for x in range(wo):
                    s = np.float32(0.0)
                    for dx in range(fw):
                        for c in range(d):   # contiguous in both arrays: vectorised
                            s += fmap[y + dy, x + dx, c] * filters[f, dy, dx, c]
                    out[f, y, x] += s
    return out


def correlate(fmap, filters):
    """Valid cross-correlation of a ``(H, W, D)`` map with ``(F, fh, fw, D)`` filters → ``(F, H-fh+1, W-fw+1)``."""
    n, fh, fw, _ = filters.shape
    ho, wo = fmap.shape[0] - fh + 1, fmap.shape[1] - fw + 1
    if ho <= 0 or wo <= 0 or n == 0:
        return np.zeros((n, max(ho, 0), max(wo, 0)), np.float32)
    return _correlate(np.ascontiguousarray(fmap, dtype=np.float32), np.ascontiguousarray(filters, dtype=np.float32))



def warp_features(image, box, rh, rw, sbin):
    """HOG of ``box`` warped to exactly ``(rh, rw)`` cells (one cell of context each side feeds the border)."""
    x0, y0, x1, y1 = box
    cw, ch = (x1 - x0) / rw, (y1 - y0) / rh
    left, top = int(round(x0 - cw)), int(round(y0 - ch))
    right, bottom = int(round(x1 + cw)), int(round(y1 + ch))
    h, w = image.shape[:2]
    pad = max(0, -left, -top, right - w, bottom - h)
    src = image if pad == 0 else cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = src[top + pad:bottom + pad, left + pad:right + pad].astype(np.float32)
    size = ((rw + 2) * sbin, (rh + 2) * sbin)
    shrink = crop.shape[1] > size[0]
    crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return _with_indicator(hog_features(crop, sbin)).ravel()
