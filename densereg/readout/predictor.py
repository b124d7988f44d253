"""``DenseReg``: a trained checkpoint as a library object (load, uv, faces, landmarks, parts).

    from densereg import DenseReg
    model = DenseReg.load("runs/synthetic/densereg-cpu/last.pt", device="auto")
    points = model.landmarks(image)        # one (68, 2) array per face found

Everything the read-out needs comes from the checkpoint: the network, its resolved training config (whose
``image_scale`` is applied to every input here, never by the caller), the template its UV refers to, and the
PCA shape model of its training landmarks. The one face-selection rule of the project applies to a given box:
the face whose landmark box overlaps it most, with IoU ≥ ``densereg.geometry.boxes.MIN_IOU``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from densereg.geometry.boxes import check_box, pick
from densereg.geometry.ear import EarTemplate
from densereg.geometry.shape_model import ShapeModel
from densereg.geometry.template import Template
from densereg.geometry.templates import get_template, template_for
from densereg.nn import checkpoint
from densereg.nn.config import PRESETS, TrainConfig
from densereg.readout.faces import Face, find_faces
from densereg.readout.forward import UVMap, as_batch, predict
from densereg.readout.parts import transfer_parts


# Weights shipped inside the package (int8 exports of a training checkpoint, ``densereg.nn.export``): name ->
# file under densereg/weights/ and the commands that rebuild it.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
PRETRAINED = {
    "transfer": {"file": "transfer-int8.pt",
                 "command": "./reproduce.sh transfer (trains the transfer preset on the realistic synthetic faces, "
                            "then python -m densereg.nn.export runs/synthetic/densereg-transfer/last.pt "
                            "--out densereg/weights/transfer-int8.pt --dtype int8)"},
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available (under ``torchrun`` this rank's GPU, ``cuda:$LOCAL_RANK``), else CPU;
    anything else as ``torch.device`` reads it."""
    if isinstance(device, str) and device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}")
    return torch.device(device)


def template_named(name: str, data_root=None) -> Template:
    """The template a config's ``template`` names: ``"bfm"`` (the user's Basel model, found as
    :func:`~densereg.geometry.templates.template_for` says, ``data_root/BFM`` included), a registry name or a
    directory of BFM files."""
    if name == "bfm":
        return template_for("bfm", data_root)
    return get_template(name)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class DenseReg:
    """A trained DenseReg model and its read-outs.

    Build it with :meth:`load`. The constructor takes the parts directly so tests (or other networks) can
    supply them; ``forward``, when given, replaces the network: it maps a list of ``H×W×3`` uint8 images to
    a list of ``UVMap``.

    Attributes:
        config: the resolved :class:`~densereg.nn.config.TrainConfig` of the checkpoint.
        template: the :class:`~densereg.geometry.template.Template` the UV refers to (``config.template``).
        shape_model: the PCA shape model of the training landmarks, or None (then the template's mean shape
            fills the landmarks not found).
        identity: ``{"checkpoint": sha256[:12] of the file, "preset", "K", "data": data fingerprint[:12]}``.
        readout_workers: CPU threads for the per-image work after the network (0: inline). On a GPU, > 0 reads
            out one batch while the next is on the network (``densereg.readout.forward.predict``); the answers
            are the same either way.
    """

    def __init__(self, net, config: TrainConfig, template: Template, shape_model: ShapeModel | None = None,
                 identity: dict | None = None, device: str | torch.device = "cpu", forward=None,
                 batch_size: int = 8, readout_workers: int = 0):
        if config.task != "densereg":
            raise ValueError(f"a DenseReg model needs a DenseReg checkpoint, got task {config.task!r}")
        self.net, self.config, self.template, self.shape_model = net, config, template, shape_model
        self.identity = identity or {"checkpoint": None, "preset": config.preset, "K": config.K, "data": None}
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.readout_workers = readout_workers   # CPU threads for the read-out while the next batch runs
        if net is not None:
            self.net.to(self.device).eval()
        self._forward = forward

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "auto", data_root=None) -> "DenseReg":
        """The model of a DenseReg checkpoint written by ``python -m densereg.nn.train``.

        ``data_root``: the data folder whose ``BFM/`` holds the Basel model of a checkpoint trained on real data
        (default: ``$DENSEREG_BFM`` or ``$DENSEREG_DATA/BFM``).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not a whole DenseReg checkpoint (names it and the problem).
        """
        path = Path(path)
        state = checkpoint.read_checkpoint(path)
        config = checkpoint.checkpoint_config(state)
        if config.task != "densereg":
            raise ValueError(f"{path}: a {config.task} checkpoint, not a DenseReg one")
        net, _ = checkpoint.load_model(path)
        identity = {"checkpoint": _sha256(path)[:12], "preset": _preset_label(config), "K": config.K,
                    "data": (state.get("data_fingerprint") or "")[:12] or None}
        if config.template == "ear":     # the reference ear of the training landmarks, kept in the checkpoint
            template = EarTemplate(checkpoint.checkpoint_template_landmarks(state, path))
        else:
            template = template_named(config.template, data_root)
        return cls(net, config, template, checkpoint.checkpoint_shape_model(state, path), identity, device)

    @classmethod
    def pretrained(cls, name: str = "transfer", device: str | torch.device = "auto") -> "DenseReg":
        """A model whose weights ship with the package (:data:`PRETRAINED`, in ``densereg/weights/``).

            model = DenseReg.pretrained()            # the transfer preset, trained on synthetic faces only

        Raises:
            KeyError: no shipped model of that name (lists the names).
            FileNotFoundError: the weights file is missing from this install (names the command that makes it).
        """
        if name not in PRETRAINED:
            raise KeyError(f"no pretrained DenseReg named {name!r}; shipped: {', '.join(PRETRAINED)}")
        path = WEIGHTS_DIR / PRETRAINED[name]["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the {name!r} weights are not in this install; make them with: "
                                    f"{PRETRAINED[name]['command']}")
        return cls.load(path, device)

    # ---------------------------------------------------------------------------------------------- read-outs

    def _maps(self, images: list[np.ndarray], then=None) -> list:
        """The ``UVMap`` of each image, or ``then`` of it (run by ``readout_workers`` threads when > 0)."""
        if self._forward is not None:
            maps = list(self._forward(images))
            return maps if then is None else [then(m) for m in maps]
        return predict(self.net, images, image_scale=self.config.image_scale, batch_size=self.batch_size,
                       device=self.device, then=then, workers=self.readout_workers)

    def uv(self, image):
        """The dense UV estimate (``UVMap``: u, v, mask, fg_prob, depth or None) of an image, or a list for a list.

        ``image``: a path, an ``H×W×3`` / ``H×W`` / ``H×W×4`` uint8 array, a menpo ``Image``, a torch tensor
        (``C×H×W`` or ``H×W×C``), or a list of those (see ``densereg.readout.forward.as_rgb``).
        """
        images, single = as_batch(image)
        maps = self._maps(images)
        return maps[0] if single else maps

    def faces(self, image):
        """The faces found (``Face``: box, score, mask, landmarks), best first; a list of lists for a list."""
        images, single = as_batch(image)
        found = self._maps(images, then=lambda m: find_faces(m, self.template, self.shape_model))
        return found[0] if single else found

    def landmarks(self, image, box=None):
        """Landmarks of the faces of an image (a list of inputs gives a list of answers).

        Args:
            image: any accepted input (see :meth:`uv`).
            box: None: one ``(N, 2)`` array per face found. A box ``(x0, y0, x1, y1)`` (or, for a list input,
                one box per image): only says *which* face, the one whose landmark box overlaps it most with
                IoU ≥ 0.3 (``densereg.geometry.boxes.pick``); its ``(N, 2)`` array, or None when no face does.

        Raises:
            ValueError: a box is not four finite numbers with ``x0 < x1``, ``y0 < y1``, or a list of images
                does not come with a list of as many boxes (checked before the network runs).
        """
        single = not isinstance(image, (list, tuple))
        boxes = None if box is None else _check_boxes(box, None if single else len(image))
        found = self.faces(image)
        per_image = [found] if single else found
        if boxes is None:
            out = [[f.landmarks for f in faces] for faces in per_image]
        else:
            out = [_pick(faces, b) for faces, b in zip(per_image, boxes)]
        return out[0] if single else out

    def parts(self, image):
        """``H×W`` uint8 template part labels (``densereg.geometry.template.PARTS``; 0 = other / background)."""
        maps = self.uv(image)
        label = lambda m: transfer_parts(self.template, m.u, m.v, m.mask)  # noqa: E731
        return label(maps) if isinstance(maps, UVMap) else [label(m) for m in maps]

    def __repr__(self) -> str:
        return f"DenseReg({self.identity}, template={self.template.name!r}, device={self.device})"


def _check_boxes(box, count: int | None) -> list:
    """The boxes of :meth:`DenseReg.landmarks` checked: ``[box]`` for one image, else one per image (or None)."""
    if count is None:
        return [check_box(box)]
    flat = hasattr(box, "__len__") and len(box) == 4 and all(isinstance(t, (int, float, np.number)) for t in box)
    if flat or not isinstance(box, (list, tuple, np.ndarray)) or len(box) != count:
        got = "one box" if flat else f"{len(box)} items" if hasattr(box, "__len__") else repr(box)
        raise ValueError(f"a list of {count} images needs a list of {count} boxes (one per image, None "
                         f"allowed), got {got}")
    return [None if b is None else check_box(b) for b in box]


def _pick(faces: list[Face], box) -> np.ndarray | None:
    if box is None:
        return None
    chosen = pick([f.box for f in faces], np.asarray(box, np.float64))
    return None if chosen is None else faces[chosen[0]].landmarks


def _preset_label(config: TrainConfig) -> str:
    """The preset a config was made from: recorded, or (older checkpoints) the one whose network it has."""
    if config.preset:
        return config.preset
    arch = ("backbone", "width", "output_stride", "crop", "iterations", "image_scale")
    defaults = TrainConfig()
    for name, overrides in PRESETS.items():
        if all(overrides.get(k, getattr(defaults, k)) == getattr(config, k) for k in arch):
            return name
    return "custom"
