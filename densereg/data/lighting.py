"""Environment-like lighting for the realistic synthetic style: spherical harmonics plus a specular lobe.

``densereg.data.appearance.shade`` lights a face with one directional light and a flat ambient term, which
gives the hard, uniform look of a render. Real photos are lit by whole environments (sky, windows, walls), which
for a convex Lambertian surface is captured almost exactly by the first nine spherical-harmonic coefficients of
the incoming light (Ramamoorthi & Hanrahan 2001). Here an environment is a sky/ground gradient plus a few
coloured area lights, projected onto those nine coefficients per colour channel; skin's oily sheen is a
Blinn-Phong lobe of the strongest light. Pure functions of a ``numpy.random.Generator``.

Normals are per-pixel unit vectors in the image frame (x right, y *down*, z towards the camera); the light is
described in the template's y-up frame, and the conversion happens here.
"""

from __future__ import annotations

import numpy as np

# Lambertian convolution of SH bands 0, 1, 2 (Ramamoorthi & Hanrahan): irradiance = Σ A_l L_lm Y_lm.
_A = np.array([np.pi, 2 * np.pi / 3, 2 * np.pi / 3, 2 * np.pi / 3] + [np.pi / 4] * 5)


def sh_basis(n: np.ndarray) -> np.ndarray:
    """The nine real spherical harmonics up to band 2 at unit directions ``n`` (..., 3) → (..., 9)."""
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    return np.stack([np.full_like(x, 0.282095), 0.488603 * y, 0.488603 * z, 0.488603 * x,
                     1.092548 * x * y, 1.092548 * y * z, 0.315392 * (3 * z * z - 1), 1.092548 * x * z,
                     0.546274 * (x * x - y * y)], axis=-1)


def directional_sh(direction, colour, spread: float = 0.0) -> np.ndarray:
    """(9, 3) SH coefficients of a light from unit ``direction`` (y up) with RGB ``colour``.

    ``spread`` in [0, 1) damps bands 1 and 2 as an area light's size does (0: a point-like light).
    """
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    damp = np.array([1.0] + [1 - 0.5 * spread] * 3 + [1 - spread] * 5)
    return (sh_basis(d) * damp)[:, None] * np.asarray(colour, float)[None, :]


def random_light(rng: np.random.Generator, harsh: bool) -> dict:
    """A random environment: sky/ground ambience, a key light (sun, window or lamp) and a weaker fill light.

    Returns a dict with ``sh`` (9, 3), ``key`` (unit direction, y up), ``specular`` strength, ``shininess``
    and a global ``gain``. ``harsh`` gives outdoor-like strong, low-ambient side light.
    """
    warm = rng.uniform(-0.15, 0.15)                       # colour temperature of the key light
    key_colour = np.array([1 + warm, 1.0, 1 - warm]) * rng.uniform(1.2, 2.2 if harsh else 1.6)
    azimuth = rng.uniform(-1.5, 1.5) if harsh else rng.uniform(-0.9, 0.9)
    elevation = rng.uniform(-0.2, 1.0)
    key = np.array([np.sin(azimuth) * np.cos(elevation), np.sin(elevation), np.cos(azimuth) * np.cos(elevation)])
    sh = directional_sh(key, key_colour, spread=rng.uniform(0.0, 0.6))
    fill = np.array([-key[0], rng.uniform(-0.2, 0.5), abs(key[2]) + 0.3])
    sh += directional_sh(fill, rng.uniform(0.1, 0.5 if not harsh else 0.25) * rng.uniform(0.85, 1.15, 3), 0.7)
    # Sky above, ground (bounce) below: band-0 ambience plus a vertical band-1 gradient.
    ambient = rng.uniform(0.15, 0.3) if harsh else rng.uniform(0.3, 0.55)
    sky = ambient * rng.uniform(0.85, 1.15, 3)
    sh[0] += sky / 0.282095                              # irradiance / π = sky everywhere
    sh[1] += sky * rng.uniform(0.0, 0.6) / 0.488603      # up to +0.4 sky facing up, −0.4 facing down
    return {"sh": sh, "key": key, "specular": rng.uniform(0.02, 0.15), "shininess": rng.uniform(8, 40),
            "gain": rng.uniform(0.75, 1.2) if harsh else rng.uniform(0.9, 1.1)}


def irradiance(normals: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """Lambertian irradiance / π (RGB) at image-frame unit ``normals`` (N, 3) under SH lighting ``sh`` (9, 3)."""
    up = normals * np.array([1.0, -1.0, 1.0])
    return np.clip((sh_basis(up) * _A) @ sh / np.pi, 0.0, None)


def shade(albedo: np.ndarray, normals: np.ndarray, light: dict, gloss: np.ndarray | float = 1.0) -> np.ndarray:
    """Shaded RGB of surface points: ``albedo`` (N, 3) × SH irradiance + a Blinn-Phong highlight of the key light.

    ``gloss`` (scalar or (N,)) scales the highlight per point (skin 1, hair or cloth lower). The viewer looks
    along −z (orthographic camera), so the half vector is ``normalize(key + z)``.
    """
    n = np.asarray(normals, float)
    diffuse = albedo * irradiance(n, light["sh"])
    key = light["key"] * np.array([1.0, -1.0, 1.0])
    half = key + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half)
    spec = np.clip(n @ half, 0.0, None) ** light["shininess"] * light["specular"] * np.asarray(gloss, float)
    return (diffuse + np.asarray(spec)[..., None]) * light["gain"]
