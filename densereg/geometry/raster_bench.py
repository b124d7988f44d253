"""Speed of the ground-truth renderer: projection + z-buffered rasterisation + UV interpolation, one thread.

    python -m densereg.geometry.raster_bench --bench --triangles 20000 --size 256

Renders a test mesh (a UV sphere or a bumpy height field, both with per-vertex UV) at random rotations; the
meshes also serve the renderer's tests, whose answers are known in closed form.
"""

from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np

from densereg.geometry.camera import project_ortho, rotation_matrix
from densereg.geometry.rasterize import rasterize


TARGET_RENDERS_PER_S = 400.0   # issue 16: 20k triangles at 256², one thread


def uv_sphere(n_lat: int, n_lon: int):
    """Unit sphere as a latitude/longitude grid with per-vertex UV.

    ``u = (φ + π) / 2π`` with longitude φ measured from +z towards +x (the seam is at the back, φ = ±π),
    ``v = θ / π`` with θ the angle from the north pole (+y), so v grows downwards as in the package.

    Returns:
        ``(vertices (V, 3), triangles (T, 3) int32, uv (V, 2))`` with ``T = 2·n_lat·n_lon − 2·n_lon``
        (the degenerate triangles at the poles are left out).
    """
    theta = np.linspace(0.0, np.pi, n_lat + 1)
    phi = np.linspace(-np.pi, np.pi, n_lon + 1)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    vertices = np.stack([np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)], -1).reshape(-1, 3)
    uv = np.stack([(ph + np.pi) / (2 * np.pi), th / np.pi], -1).reshape(-1, 2)
    tris = _grid_triangles(n_lat + 1, n_lon + 1)
    a, b, c = vertices[tris[:, 0]], vertices[tris[:, 1]], vertices[tris[:, 2]]
    keep = np.linalg.norm(np.cross(b - a, c - a), axis=1) > 1e-12
    return vertices, tris[keep], uv


def height_field(n: int, bumps: float = 0.08, seed: int = 0):
    """A face-sized bumpy surface: an n×n grid over [−1, 1]² with a nose-like hump and random bumps.

    ``z = 0.5·exp(−(x² + y²)/0.3) + bumps·Σ sinusoids``; ``uv = ((x + 1)/2, (1 − y)/2)`` (v down).

    Returns:
        ``(vertices (n², 3), triangles (2(n−1)², 3) int32, uv (n², 2))``.
    """
    rng = np.random.default_rng(seed)
    s = np.linspace(-1.0, 1.0, n)
    y, x = np.meshgrid(s[::-1], s, indexing="ij")  # row 0 at the top (y = 1)
    z = 0.5 * np.exp(-(x**2 + y**2) / 0.3)
    for fx, fy, ph in rng.uniform([1, 1, 0], [4, 4, 2 * np.pi], size=(4, 3)):
        z += bumps * np.sin(fx * x + ph) * np.cos(fy * y)
    vertices = np.stack([x, y, z], -1).reshape(-1, 3)
    uv = np.stack([(x + 1) / 2, (1 - y) / 2], -1).reshape(-1, 2)
    return vertices, _grid_triangles(n, n), uv


def _grid_triangles(rows: int, cols: int) -> np.ndarray:
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)]).astype(np.int32)


def _sphere_of(n_triangles: int):
    n_lat = max(2, int(round(np.sqrt(n_triangles / 4))))  # T ≈ 4·n_lat² with n_lon = 2·n_lat
    return uv_sphere(n_lat, 2 * n_lat)


def _height_field_of(n_triangles: int):
    return height_field(max(2, int(round(np.sqrt(n_triangles / 2))) + 1))


BENCH_MESHES = {"sphere": _sphere_of, "heightfield": _height_field_of}


def bench_mesh(name: str, n_triangles: int):
    """Looks up a benchmark mesh builder by name and builds a mesh of about ``n_triangles``."""
    if name not in BENCH_MESHES:
        raise KeyError(f"unknown benchmark mesh {name!r}; valid: {sorted(BENCH_MESHES)}")
    return BENCH_MESHES[name](n_triangles)


def benchmark(mesh: str = "sphere", n_triangles: int = 20000, size: int = 256, renders: int = 200,
              seed: int = 0) -> dict:
    """Times projection + rasterisation + UV interpolation at random rotations on one thread.

    The mesh spans about half the image area (radius 0.4·size). Returns a dict of the measurements: wall-clock
    ``renders_per_s`` and ``cpu_renders_per_s`` (by this process's CPU time, which a shared machine's other
    work inflates far less than the wall clock), with ``load`` the 1-minute load average at the end.
    """
    numba.set_num_threads(1)
    vertices, tris, uv = bench_mesh(mesh, n_triangles)
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-np.pi, np.pi, size=(renders, 3))
    t0 = time.perf_counter()
    rasterize(project_ortho(vertices, np.eye(3), 0.4 * size, size / 2, size / 2), tris, uv, size, size)
    first = time.perf_counter() - t0
    covered = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for yaw, pitch, roll in angles:
        verts_img = project_ortho(vertices, rotation_matrix(yaw, pitch, roll), 0.4 * size, size / 2, size / 2)
        covered += int(rasterize(verts_img, tris, uv, size, size).mask.sum())
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"cpu_renders_per_s": renders / cpu, "mesh": mesh, "vertices": len(vertices), "triangles": len(tris), "size": size, "renders": renders,
            "renders_per_s": renders / elapsed, "ms_per_render": 1e3 * elapsed / renders,
            "foreground_fraction": covered / (renders * size * size), "first_call_s": first,
            "load": round(os.getloadavg()[0], 2)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m densereg.geometry.raster_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--bench", action="store_true", help="time the renderer on one thread")
    parser.add_argument("--mesh", choices=sorted(BENCH_MESHES), default="sphere")
    parser.add_argument("--triangles", type=int, default=20000)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--renders", type=int, default=200)
    args = parser.parse_args(argv)
    if not args.bench:
        parser.error("nothing to do: pass --bench")
    r = benchmark(args.mesh, args.triangles, args.size, args.renders)
    print(f"{r['mesh']}: {r['triangles']} triangles, {r['vertices']} vertices, {r['size']}x{r['size']} image, "
          f"{r['foreground_fraction']:.0%} foreground, 1 thread")
    print(f"{r['renders_per_s']:.1f} renders/s ({r['ms_per_render']:.2f} ms/render over {r['renders']} renders), "
          f"{r['cpu_renders_per_s']:.1f} renders/s by CPU time, load {r['load']} (target >= {TARGET_RENDERS_PER_S:g}); "
          f"first call (compile or cache load) {r['first_call_s']:.2f} s")


if __name__ == "__main__":
    main()
