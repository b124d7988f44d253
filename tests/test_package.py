"""The package works installed, not only as a checkout: build a wheel, install it elsewhere, import it there."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Top-level modules of the optional extras (and the harness): the core must not import any of them.
EXTRAS = {"menpo", "menpofit", "sklearn", "pandas", "matplotlib", "tabulate", "dlib", "benchmarks"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the sources (so the build leaves nothing in the checkout)."""
    pip = [sys.executable, "-m", "pip"]
    if subprocess.run(pip + ["--version"], capture_output=True).returncode != 0:
        pytest.skip("pip is not available in this interpreter")
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    top_level_only = {".git", ".venv", "data", "runs", "results", "build"}   # densereg/data is source

    def ignore(folder, names):
        skip = set(shutil.ignore_patterns("*.egg-info", "__pycache__", ".pytest_cache")(folder, names))
        return skip | (top_level_only & set(names) if Path(folder) == REPO else set())

    shutil.copytree(REPO, src, ignore=ignore)
    dist = work / "dist"
    run = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-q",
                                "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    (path,) = dist.glob("densereg-*.whl")
    return path


def test_wheel_holds_every_package_and_the_licence(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packages = {str(p.parent.relative_to(REPO)).replace(os.sep, "/")
                for top in ("densereg", "benchmarks") for p in (REPO / top).rglob("*.py")}
    missing = sorted(p for p in packages if f"{p}/__init__.py" not in names)
    assert not missing, f"folders with modules but no __init__.py in the wheel: {missing}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: BSD-3-Clause" in text
    requires = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]
    core = {r for r in requires if "extra ==" not in r}
    extras = {r.split(";")[0].strip() for r in requires if 'extra == "benchmarks"' in r}
    assert core == {"torch", "numpy", "scipy", "opencv-python-headless", "numba", "pillow", "tqdm"}
    assert {"menpo", "menpofit", "dlib-bin", "face-recognition-models", "scikit-learn", "pandas", "matplotlib",
            "tabulate"} == extras


def test_installed_wheel_imports_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "-q",
                          "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    code = ("import densereg, densereg.data.datasets as ds\n"
            "from densereg import DenseReg\n"
            "print(ds.__file__)\n"
            "from densereg.geometry.templates import builtin_face\n"
            "face = builtin_face()\n"
            "print(densereg.__file__)\n"
            "print(len(face.landmarks), face.vertices.shape[1])\n"
            "print(ds.data_root('synthetic'))\n"
            f"import sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in {EXTRAS!r}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DENSEREG"))}
    env["PYTHONPATH"] = os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])
    run = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    datasets_file, location, counts, synthetic, extras_loaded = run.stdout.strip().splitlines()
    for path in (location, datasets_file):                      # the installed copy, not the checkout
        assert Path(path).resolve().is_relative_to(target.resolve()), path
        assert not Path(path).resolve().is_relative_to(REPO)
    assert counts == "68 3"
    assert Path(synthetic) == cwd / "data" / "synthetic"      # installed: data goes under the current folder
    assert extras_loaded == "[]", f"the core needs an optional dependency: {extras_loaded}"
    run = subprocess.run([sys.executable, "-m", "densereg.infer", "--help"], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "--checkpoint" in run.stdout and "--bench" in run.stdout, run.stderr
