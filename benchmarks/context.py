"""What a benchmark run hands its methods (:class:`RunContext`) and how a method spec becomes a factory.

Initialisers and fitters are built by **factories**, ``factory(ctx) -> method``, so that costly set-up
(loading a network, training a detector, fitting a regression on the training split) happens once per
process, with the :class:`RunContext` saying which data, artefact cache, preset and seed to use. The
registries themselves are plain dicts in ``benchmarks.initialisers`` and ``benchmarks.fitters``;
:func:`resolve_factory` understands three spellings of a method:

* a registry key: ``mean-shape``, ``densereg``, ``aam``, ...;
* ``PREFIX:ARG`` for a key of the kind's prefixed registry: ``boxes:DIR``, ``preds:DIR``;
* a plug-in ``package.module:attribute`` (the module importable from ``sys.path``): the attribute is used
  as the method itself, or, when it carries ``is_factory = True`` (see :func:`factory`), called with the
  :class:`RunContext` to build it. A method written outside the project is compared with the recorded ones
  without editing the harness.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from densereg.data import datasets
from densereg.registry import lookup

# The training split whose annotations a method may learn from, per evaluated dataset: (dataset, split) for
# datasets.load_dataset. Helen and 300-VW are evaluated with models trained on 300-W, as in the paper (Table 3:
# "not fine-tuned for the task", trained "only on the 3148 images" of 300-W).
TRAIN_SPLITS = {
    "300w": ("300w", "train"),
    "helen": ("300w", "train"),
    "300vw": ("300w", "train"),
    "ears": ("ears", "train"),
}


def artefact_root(runs, source, dataset):
    """Where the artefacts trained for a run of ``dataset`` are cached: one folder per training split.

    Methods learnt from the 300-W training split (runs on ``300w``, ``helen`` and ``300vw``) share
    ``<runs>/<source>``; a dataset with its own training split (``ears``) gets ``<runs>/<source>/<dataset>``. One shared
    folder made a run of one dataset replace the artefacts trained on the other (they are keyed by their
    training data and rebuilt when it differs): an ``ears`` run deleted the 300-W AAM and MDM.
    """
    name, _ = lookup(TRAIN_SPLITS, dataset, "dataset with a training split")
    base = Path(runs) / source
    return base if name == "300w" else base / name


class DataRootError(Exception):
    """The data a command needs is not where it was asked for; the message says where and what to do."""


def resolve_data(folder, source=None, root=None):
    """``(source, root)`` of a run: the one data-root rule of every command.

    * ``root`` given: that folder, as it is, in the native layout (``datasets.LAYOUT``), e.g. one made with
      ``python -m densereg.data.synth --out DIR``. Never generated, overwritten or deleted. Its source is
      ``source``, else ``synthetic`` when it holds the generator's ``synth.json``, else ``real``.
    * ``source`` ``real`` (or None): ``$DENSEREG_DATA``, when it has ``folder``; never a silent switch.
    * ``source`` ``synthetic``: the default synthetic benchmark, generated on first use, but only into a
      folder that is absent, empty or made by the generator (one with ``synth.json``).

    Args:
        folder: the folder under the root whose presence says the dataset is there (``300W``).

    Raises:
        DataRootError: the data is absent (the message shows the expected layout and the options).
    """
    if root is not None:
        root = Path(root).expanduser()
        if not (root / folder).is_dir():
            raise DataRootError(f"--root {root}: no {folder}/ folder; expected the layout\n{datasets.LAYOUT}")
        return source or ("synthetic" if (root / "synth.json").is_file() else "real"), root
    if source in (None, "real"):
        value = os.environ.get("DENSEREG_DATA")
        if value and (Path(value).expanduser() / folder).is_dir():
            return "real", Path(value).expanduser()
        reason = "$DENSEREG_DATA is not set" if not value else f"$DENSEREG_DATA={value} has no {folder}/ folder"
        raise DataRootError(f"no real data: {reason}.\nPut the real data under $DENSEREG_DATA laid out as:\n"
                            f"{datasets.LAYOUT}\nor pass --root DIR (any folder in that layout), or run on the "
                            "embedded synthetic benchmark with --source synthetic (every output is then labelled "
                            "synthetic).")
    from densereg.data import synth  # generating needs the renderer; only import it when asked for

    default = Path(datasets.data_root("synthetic"))
    if default.is_dir() and any(default.iterdir()) and not (default / "synth.json").is_file():
        raise DataRootError(f"{default} exists but was not made by densereg.data.synth (no synth.json); it is "
                            f"left alone: pass --root {default} to evaluate it as it is, or move it away")
    root = Path(synth.ensure_synthetic(default, extras=[folder] if folder in synth.EXTRA_SETS else []))
    if folder == "300VW":   # the synthetic videos live beside the images, with their own manifest
        from densereg.data import synth_video

        synth_video.ensure_videos(root)
    if not (root / folder).is_dir():
        raise DataRootError(f"the synthetic benchmark at {root} has no {folder}/ folder")
    print(f"[data] synthetic benchmark at {root}", file=sys.stderr)
    return "synthetic", root


def add_common(parser):
    """The options every experiment command shares: where the data is, where outputs go, seed, limit.

    Outputs default to the current folder (``./results``, ``./runs``), never the package's install location.
    """
    parser.add_argument("--root", type=Path, default=None,
                        help="data folder in the native layout, used as it is (default: by --source)")
    parser.add_argument("--source", choices=("real", "synthetic"), default=None,
                        help="data source (default: real when $DENSEREG_DATA has the dataset; with --root, "
                             "synthetic when the folder has synth.json, else real)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder (default ./results)")
    parser.add_argument("--runs", "--runs-dir", dest="runs", type=Path, default=Path("runs"),
                        help="cache of trained artefacts: <runs>/<source>/, or <runs>/<source>/<dataset>/ for "
                             "datasets with their own training split (ears); default ./runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate only the first N samples (300vw: the first N frames of each video)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


class Miss(Exception):
    """Raised by a method for a face it did not find (a scored miss, +inf, listed with this reason)."""


# The presets a run may name: every method's registry (``densereg.nn.config.PRESETS``, ``dpm_config.PRESETS``,
# ``mdm.PRESETS``) has these keys (a test checks they agree), plus ``default``: each method's own default.
PRESETS = {
    "default": "cpu on synthetic data, paper on real data (DPM: cpu)",
    "paper": "the paper's configurations (a GPU-sized training)",
    "cpu": "a reduced configuration a CPU trains in minutes",
    "tiny": "seconds of training, for tests",
}


@dataclass
class RunContext:
    """What a factory needs to build a method for one benchmark run.

    Attributes:
        source: ``"real"`` or ``"synthetic"``.
        root: the data root of ``source`` (laid out as ``datasets.LAYOUT``).
        dataset: the evaluated dataset (a key of :data:`TRAIN_SPLITS`).
        runs_dir: cache for the artefacts the harness trains for this source, ``<runs>/<source>/``.
        preset: the configuration preset, a key of :data:`PRESETS`; ``default`` is resolved here to what the
            methods then use (``cpu`` on synthetic data, ``paper`` on real), so rows record the resolved name.
        preset_named: False when the preset was resolved from ``default`` (set here): a method with its own
            default (DPM: ``cpu``) keeps it, and an explicit checkpoint is not required to be that preset's.
        seed: the run's seed: the seed of every artefact the run trains (DenseReg, detectors, box
            regressions, AAM, MDM) as well as of the evaluation, so a seed is a sample of the whole chain;
            its artefacts live in :attr:`cache_dir`.
        checkpoint: an explicit DenseReg checkpoint, or None for the method's default.
        device: ``"auto"``, ``"cpu"`` or a CUDA device string (:meth:`torch_device` resolves it).
        artefacts: ``{name: identity}`` of every trained artefact the built methods use, filled in by the
            factories (:meth:`record`); the result row carries it.
        iterations: None, or a shortened training schedule for DenseReg (``densereg.nn.train``; the baselines
            keep the preset's): a smaller configuration, labelled in the rows as :attr:`preset_label`
            (``cpu+iterations=400``).
    """

    source: str
    root: Path
    dataset: str
    runs_dir: Path
    preset: str = "default"
    seed: int = 0
    checkpoint: Path | None = None
    device: str = "auto"
    iterations: int | None = None
    artefacts: dict = field(default_factory=dict, compare=False)
    _train: list | None = field(default=None, init=False, repr=False, compare=False)
    preset_named: bool = field(default=True, init=False)

    def __post_init__(self):
        lookup(PRESETS, self.preset, "preset")   # a typo must not silently become a method's default
        if self.preset == "default":
            self.preset, self.preset_named = ("cpu" if self.source == "synthetic" else "paper"), False
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def preset_label(self):
        """The preset as rows name it: ``cpu``, or ``cpu+iterations=400`` for a shortened schedule."""
        return self.preset if self.iterations is None else f"{self.preset}+iterations={self.iterations}"

    def train_samples(self):
        """The training split's samples for :attr:`dataset` (see :data:`TRAIN_SPLITS`), read once and cached.

        Raises:
            KeyError: the dataset has no training split registered.
            formats.DatasetError: the training data is missing or malformed.
        """
        if self._train is None:
            name, split = lookup(TRAIN_SPLITS, self.dataset, "dataset with a training split")
            self._train = datasets.load_dataset(name, self.root, split)
        return self._train

    def train_fingerprint(self):
        """The data fingerprint of :meth:`train_samples` (computed once): what every artefact is keyed by."""
        if self._fingerprint is None:
            from benchmarks.baselines.artefacts import fingerprint

            self._fingerprint = fingerprint(self.train_samples())
        return self._fingerprint

    @property
    def cache_dir(self):
        """The artefact cache of this source and seed: ``runs_dir`` for seed 0, ``runs_dir/seed<S>`` otherwise
        (``benchmarks.baselines.artefacts.seed_dir``)."""
        from benchmarks.baselines.artefacts import seed_dir

        return seed_dir(self.runs_dir, self.seed)

    def artefact_dir(self, *parts):
        """``cache_dir/<parts...>``, created: where a method caches what it trains for this source and seed."""
        path = Path(self.cache_dir).joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def record(self, name, identity):
        """Note that the methods use artefact ``name`` with ``identity`` (a short text), for the result row."""
        self.artefacts[name] = str(identity)

    def identity(self):
        """The artefacts used, as one stable text ``name=identity;...`` (empty when none)."""
        return ";".join(f"{k}={v}" for k, v in sorted(self.artefacts.items()))

    def torch_device(self):
        """The device string to use: ``"auto"`` becomes ``"cuda"`` when available (under ``torchrun`` this
        rank's GPU, ``cuda:$LOCAL_RANK``), else ``"cpu"``."""
        if self.device != "auto":
            return self.device
        from densereg.readout.predictor import resolve_device

        return str(resolve_device("auto"))


def factory(fn):
    """Mark ``fn`` as a factory ``fn(ctx) -> method`` for plug-in loading (sets ``fn.is_factory = True``)."""
    fn.is_factory = True
    return fn


def load_plugin(spec):
    """Import ``package.module:attribute`` (the attribute may be dotted) and return the object.

    Raises:
        ValueError: ``spec`` has no ``:``, the module cannot be imported, the attribute is missing or is not
            callable; the message says which.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"plug-in {spec!r} must be spelt package.module:callable")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"plug-in {spec!r}: cannot import module {module_name!r} ({e})") from e
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"plug-in {spec!r}: {getattr(obj, '__name__', repr(obj))} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"plug-in {spec!r} is a {type(obj).__name__}, not a callable")
    return obj


def _plugin_factory(obj, ctx):
    return obj(ctx) if getattr(obj, "is_factory", False) else obj


def valid_forms(registry, prefixed):
    """Every spelling a kind accepts, for help texts and error messages."""
    return [*sorted(registry), *(f"{p}:ARG" for p in sorted(prefixed)), "package.module:callable"]


def resolve_factory(spec, registry, prefixed, kind):
    """The factory ``factory(ctx) -> method`` that ``spec`` names (see the module docstring for the forms).

    Args:
        spec: registry key, ``PREFIX:ARG`` or ``module:attribute``.
        registry: ``{name: factory}``.
        prefixed: ``{prefix: factory(arg, ctx)}``.
        kind: ``"initialiser"`` or ``"fitter"``, for messages.

    Raises:
        KeyError: ``spec`` is none of the forms; the message names every valid key and form.
        ValueError: a plug-in cannot be loaded.
    """
    if spec in registry:
        return registry[spec]
    prefix, sep, arg = spec.partition(":")
    if sep and prefix in prefixed:
        if not arg:
            raise KeyError(f"{kind} {spec!r}: give the argument after '{prefix}:'")
        return functools.partial(prefixed[prefix], arg)
    if sep and "/" not in prefix and _module_exists(prefix):
        return functools.partial(_plugin_factory, load_plugin(spec))
    forms = dict.fromkeys(valid_forms(registry, prefixed))
    if sep and "/" not in prefix:   # a misspelt prefix reads as a module that does not exist: name the forms
        try:
            lookup(forms, spec, kind)
        except KeyError as e:
            raise KeyError(f"{e.args[0]} (and no module named {prefix!r})") from None
    return lookup(forms, spec, kind)  # KeyError naming every form


def _module_exists(name):
    """Whether module ``name`` can be found (without importing it; a missing parent package counts as no)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
