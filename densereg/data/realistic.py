"""The realistic synthetic style: a whole person in a photographed scene (``python -m densereg.data.synth
--style realistic``).

The default style (``densereg.data.synth.render_scene``) renders a face mask on clutter. This one renders, per
sample: a room, street or photo background (:mod:`densereg.data.scenes`), sometimes a second, unannotated
person behind; the annotated person as a head with skull, ears, hair, neck and shoulders
(:mod:`densereg.geometry.head`) with the template's face drawn over it; environment lighting with a specular
lobe (:mod:`densereg.data.lighting`); glasses, hats, hands or microphones (:mod:`densereg.data.occluders`);
and a camera's colour cast, blur, noise and JPEG. Faces are 40 px to most of the frame wide
(:func:`densereg.data.scenes.face_scale`), with all 68 landmarks inside the image.

Ground truth is unchanged in kind: the sample's fitting poses the face template alone, so the dense UV covers
exactly the face pixels drawn last here (:func:`render` returns both masks so tests can check it) and the
head's pixels are non-face.
"""

from __future__ import annotations

import numpy as np

from densereg.data import appearance, lighting, occluders, scenes
from densereg.geometry import camera, head, rasterize


def _sample_pose(rng, frontal_bias):
    """Yaw, pitch, roll (radians): near-frontal mostly, a tail to profile (as the default style)."""
    yaw = rng.normal(0, 25) if rng.random() < frontal_bias else rng.uniform(-90, 90)
    pitch = float(np.clip(rng.normal(0, 13), -45, 45))
    roll = float(np.clip(rng.normal(0, 10), -30, 30))
    return tuple(np.radians([pitch, float(np.clip(yaw, -90, 90)), roll]))


def sample_face(template, rng, size, frontal_bias=0.7, scale=None, centre=None, margin=2.0):
    """Identity, expression and pose of a face whose 68 landmarks lie inside the ``size``² image.

    ``scale`` (pixels per template unit) defaults to :func:`scenes.face_scale`; the face is shrunk when its
    landmarks cannot fit, then moved inside the frame.

    Returns:
        (shape, exp, pose_para (7,) 3DDFA, face vertices in the image frame, template-space vertices).
    """
    n_id, n_exp = template.id_basis.shape[0], template.exp_basis.shape[0]
    shape = np.clip(rng.normal(0, 0.8, n_id), -2.5, 2.5)
    exp = np.where(rng.random(n_exp) < 0.3, rng.uniform(0, 1, n_exp), 0.0)
    pitch, yaw, roll = _sample_pose(rng, frontal_bias)
    f = scale if scale is not None else scenes.face_scale(rng, size)
    cx, cy = centre if centre is not None else rng.uniform(0.2, 0.8, 2) * size
    verts = template.instance(shape, exp)
    for _ in range(20):
        pose = np.array([pitch, yaw, roll, cx + 1, size - cy, 0.0, f], np.float64)
        img = camera.project_3ddfa(verts, pose, size)
        lm = img[template.landmarks, :2]
        extent = lm.max(0) - lm.min(0)
        if (extent <= size - 2 * margin - 1).all():
            break
        f *= 0.9 * (size - 2 * margin - 1) / extent.max()
    lo, hi = lm.min(0), lm.max(0)
    shift = np.clip(0, margin - lo, size - 1 - margin - hi)     # the smallest move that brings it inside
    pose[3] += shift[0]
    pose[4] -= shift[1]
    return shape, exp, pose, camera.project_3ddfa(verts, pose, size), verts


def _pixel_normals(verts_img, triangles, raster):
    """Unit per-pixel normals (image frame) of the winning surface, turned towards the camera."""
    up = verts_img * np.array([1.0, -1.0, 1.0])
    vn = appearance.vertex_normals(up, triangles) * np.array([1.0, -1.0, 1.0])
    tri = triangles[raster.triangle[raster.mask]]
    n = np.einsum("pk,pkc->pc", raster.bary[raster.mask], vn[tri])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    return n * np.where(n[:, 2:3] < 0, -1.0, 1.0)


def _materials(rng, skin):
    """RGB of the head's parts (:data:`head.HEAD_PARTS`) and their gloss."""
    hair = appearance.HAIR_TONES[rng.integers(len(appearance.HAIR_TONES))] * rng.uniform(0.8, 1.2)
    clothes = rng.uniform(0.05, 0.9, 3)
    return np.stack([skin, np.clip(hair, 0, 1), clothes]), np.array([1.0, 0.5, 0.1])


BODY_TURN = 0.3   # the shoulders turn by this fraction of the head's pitch, yaw and roll


def posed_head(person: head.Head, pose, height):
    """Image-frame vertices of a head under the face's 3DDFA ``pose``; the shoulders turn by :data:`BODY_TURN`
    of its rotation about :data:`head.NECK_BASE`, which stays where the head's pose puts it."""
    verts = camera.project_3ddfa(person.vertices, pose, height)
    body_pose = np.array(pose, float)
    body_pose[:3] *= BODY_TURN
    anchor = head.NECK_BASE[None]
    shift = camera.project_3ddfa(anchor, pose, height) - camera.project_3ddfa(anchor, body_pose, height)
    verts[person.body] = camera.project_3ddfa(person.vertices[person.body], body_pose, height) + shift
    return verts


def draw_head(person: head.Head, pose, canvas, light, skin, rng):
    """Render a posed head over ``canvas`` (float RGB, in place); returns its pixel mask."""
    h, w = canvas.shape[:2]
    verts_img = posed_head(person, pose, h)
    raster = rasterize.rasterize(verts_img, person.triangles, np.zeros(len(verts_img)), h, w)
    if not raster.mask.any():
        return raster.mask
    labels = person.labels[raster.triangle[raster.mask]]
    colours, gloss = _materials(rng, skin)
    texture = 1 + 0.08 * appearance._smooth_noise(rng, max(h, w), rng.uniform(1.5, 4))[:h, :w, 0]
    albedo = colours[labels] * texture[raster.mask][:, None]
    canvas[raster.mask] = _shade(albedo, _pixel_normals(verts_img, person.triangles, raster), light, gloss[labels])
    return raster.mask


def _bilinear(texture, xy):
    """``texture`` (S×S×3) sampled bilinearly at (N, 2) pixel coordinates ``(col, row)`` (edges clamped)."""
    s = texture.shape[0] - 1
    xy = np.clip(xy, 0, s)
    x0, y0 = np.minimum(xy.astype(np.int64), s - 1).T
    fx, fy = (xy[:, 0] - x0)[:, None], (xy[:, 1] - y0)[:, None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x0 + 1] * fx
    bottom = texture[y0 + 1, x0] * (1 - fx) + texture[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def draw_face(template, albedo, verts_img, canvas, light):
    """Render the textured face template over ``canvas`` (float RGB, in place); returns its pixel mask."""
    h, w = canvas.shape[:2]
    raster = rasterize.rasterize(verts_img, template.triangles, template.uv, h, w)
    if not raster.mask.any():
        return raster.mask
    rgb = _bilinear(albedo, raster.attr[raster.mask, :2] * (albedo.shape[0] - 1))
    canvas[raster.mask] = _shade(rgb, _pixel_normals(verts_img, template.triangles, raster), light)
    return raster.mask


def _skin_of(albedo):
    """The skin colour of an albedo texture (its median), so the head matches the face."""
    return np.median(albedo.reshape(-1, 3), axis=0)


# The renderer changes of this style, each of which an ablation can turn back to the default style's way
# (``drop``): the head; SH lighting + specular (→ one directional light); the object occluders (→ blobs); the
# photo-like scenes and camera (→ clutter, Gaussian blur and noise); the 40 px – full-frame size range (→ the
# default's faces of 35-65 % of the width, near the centre).
CHANGES = ("head", "lighting", "occluders", "scenes", "sizes")
# The style and its ablations, by name (``densereg.data.synth`` offers each as a ``--style``).
VARIANTS = {"realistic": (), **{f"realistic-no-{c}": (c,) for c in CHANGES}}


def _shade(albedo, normals, light, gloss=1.0):
    """Shading by the light's kind: SH environment (``lighting``) or the default style's directional light."""
    return lighting.shade(albedo, normals, light, gloss) if "sh" in light else appearance.shade(albedo, normals, light)


def render(template, rng, size=256, harsh=False, extra_face_prob=0.15, occluder_prob=0.3, frontal_bias=0.7,
           drop=()):
    """One realistic sample; ``drop``: the :data:`CHANGES` rendered the default style's way instead.

    Returns:
        dict with ``image`` (uint8 RGB), ``landmarks`` (68, 2), ``pose_para``, ``shape_para``, ``exp_para``,
        ``n_extra_faces``, ``occluded`` (the fields of ``densereg.data.synth.Scene``) and, for checks,
        ``face_mask`` (pixels whose colour is the annotated face's), ``head_mask`` (its head's other pixels),
        ``occluder`` (name or "").
    """
    unknown = set(drop) - set(CHANGES)
    if unknown:
        raise ValueError(f"unknown renderer change(s) {sorted(unknown)}; valid: {', '.join(CHANGES)}")
    if "scenes" in drop:
        canvas = appearance.background(rng, size, size)
    else:
        canvas, _ = scenes.background(rng, size, size)
    light = appearance.random_light(rng, harsh) if "lighting" in drop else lighting.random_light(rng, harsh)
    draw_person = (lambda *a: np.zeros((size, size), bool)) if "head" in drop else draw_head
    n_extra = 0
    if rng.random() < extra_face_prob:   # another person further back, smaller, unannotated
        n_extra = 1
        scale_x = rng.uniform(0.07, 0.12) * size if "sizes" in drop else scenes.face_scale(rng, size) * 0.6
        _, _, pose_x, verts_x, _ = sample_face(template, rng, size, frontal_bias, scale=scale_x)
        albedo_x = appearance.paint_albedo(template, rng)
        draw_person(head.build_head(rng), pose_x, canvas, light, _skin_of(albedo_x), rng)
        draw_face(template, albedo_x, verts_x, canvas, light)
    narrow = "sizes" in drop
    shape, exp, pose, verts_img, _ = sample_face(
        template, rng, size, frontal_bias, scale=rng.uniform(0.17, 0.27) * size if narrow else None,
        centre=tuple(rng.uniform(0.38, 0.62, 2) * size) if narrow else None)
    landmarks = verts_img[template.landmarks, :2].copy()
    albedo = appearance.paint_albedo(template, rng)
    skin = _skin_of(albedo)
    head_mask = draw_person(head.build_head(rng), pose, canvas, light, skin, rng)
    face_mask = draw_face(template, albedo, verts_img, canvas, light)
    name = ""
    if rng.random() < occluder_prob:
        if "occluders" in drop:
            name, (rgb, alpha) = "blob", appearance.occluder(rng, size, size, np.r_[landmarks.min(0), landmarks.max(0)])
        else:
            name, rgb, alpha = occluders.random_occluder(rng, landmarks, size, size, skin)
        canvas = canvas * (1 - alpha[..., None]) + rgb * alpha[..., None]
    canvas = np.clip(canvas, 0, 1).astype(np.float32)
    image = appearance.degrade(rng, canvas, harsh) if "scenes" in drop else scenes.camera(rng, canvas, harsh)
    return {"image": image, "landmarks": landmarks, "pose_para": pose, "shape_para": shape, "exp_para": exp,
            "n_extra_faces": n_extra, "occluded": bool(name), "face_mask": face_mask,
            "head_mask": head_mask & ~face_mask, "occluder": name}
