"""The one door through which the project imports menpo and menpofit.

menpo 0.11.1 and menpofit 0.7.1 (the last releases) were written for NumPy 1.x and SciPy < 1.14. Under NumPy 2
and newer SciPy they fail on names that were removed upstream:

* ``np.Inf`` (every Lucas-Kanade ``run()`` in menpofit: AAM, ATM, CLM, APS),
* ``np.alltrue`` (menpofit ``checks.check_callable`` / ``check_sampling``),
* ``np.issubclass_`` (menpo ``Image`` float → uint8 conversion),
* ``np.complex`` (menpo log-Gabor convolution),
* ``scipy.integrate.simps`` (imported by ``menpofit/error/stats.py``, so ``import menpofit`` itself fails on
  SciPy >= 1.14).

Importing this module puts each missing name back as an alias of its modern equivalent. Names that still exist
are left untouched, so the shim is a no-op on old NumPy/SciPy. Use :func:`import_menpo` / :func:`import_menpofit`
rather than ``import menpo`` anywhere in the project, so the aliases are always in place first.
"""

import importlib

import numpy as np
import scipy.integrate

# Removed NumPy name → the modern object with the same behaviour.
NUMPY_ALIASES = {
    "Inf": np.inf,
    "alltrue": np.all,
    "issubclass_": issubclass,
    "complex": complex,
}

# Removed scipy.integrate name → the modern name in the same module.
SCIPY_INTEGRATE_ALIASES = {
    "simps": "simpson",
}


def apply_shim():
    """Restore the removed NumPy/SciPy names menpo and menpofit use, only where they are missing.

    Returns:
        The list of names that were added (``"numpy.Inf"``, ``"scipy.integrate.simps"``, ...), empty when the
        installed NumPy/SciPy still provide them all. Idempotent.
    """
    added = []
    for name, value in NUMPY_ALIASES.items():
        # np.__getattr__ raises AttributeError for removed names, so hasattr is the right probe.
        if not hasattr(np, name):
            setattr(np, name, value)
            added.append(f"numpy.{name}")
    for name, modern in SCIPY_INTEGRATE_ALIASES.items():
        if not hasattr(scipy.integrate, name):
            setattr(scipy.integrate, name, getattr(scipy.integrate, modern))
            added.append(f"scipy.integrate.{name}")
    return added


def import_menpo(submodule=None):
    """Apply the shim, then import and return ``menpo`` (or ``menpo.<submodule>``).

    Args:
        submodule: dotted name inside menpo, e.g. ``"shape"``; None for the package itself.

    Raises:
        ImportError: menpo is not installed (it is an optional dependency of the harness).
    """
    apply_shim()
    return importlib.import_module("menpo" if submodule is None else f"menpo.{submodule}")


def import_menpofit(submodule=None):
    """Apply the shim, then import and return ``menpofit`` (or ``menpofit.<submodule>``); menpofit imports menpo.

    Args:
        submodule: dotted name inside menpofit, e.g. ``"error"`` or ``"aam"``; None for the package itself.

    Raises:
        ImportError: menpofit is not installed (it is an optional dependency of the harness).
    """
    apply_shim()
    return importlib.import_module("menpofit" if submodule is None else f"menpofit.{submodule}")


apply_shim()
