"""The one registry look-up of the project: ``lookup(REGISTRY, key, "what")``.

Registries are plain dicts in the module that defines the kind (``DATASETS``, ``PRESETS``, ``INITIALISERS``,
...). A wrong key raises a ``KeyError`` that names every valid key, so a typo on the command line is answered
with the choices.
"""

from __future__ import annotations


def lookup(registry, key, what: str):
    """``registry[key]``, or a ``KeyError`` naming ``what`` and every valid key."""
    if key not in registry:
        raise KeyError(f"unknown {what} {key!r}; valid: {', '.join(sorted(map(str, registry)))}")
    return registry[key]
