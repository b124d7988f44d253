"""Trained artefacts of the harness (detectors, AAM, MDM, box regressions, ...): one policy for all of them.

An artefact is keyed by its resolved config and a fingerprint of its training data; when either changes it is
rebuilt (or the command refuses and prints the command that rebuilds it), never silently reused.
"""

from __future__ import annotations

from pathlib import Path


class ArtefactError(RuntimeError):
    """A cached trained artefact (AAM, detector, ...) is missing, unreadable or stale.

    The message names the file, what is wrong and the command that (re)builds it.

    Attributes:
        path: the artefact file.
        command: the shell command that builds it.
    """

    def __init__(self, path, problem, command):
        super().__init__(f"{path}: {problem}; build it with: {command}")
        self.path, self.command = Path(path), command
