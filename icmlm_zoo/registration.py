"""Registering the backbones in timm, and the installed version.

A library import (``import icmlm_zoo``) registers the backbones at once: it imports timm and torch. The console
scripts (``icmlm-zoo``, ``icmlm-train``, ``icmlm-eval``; ``python -m icmlm_zoo[.training]``) must answer ``-h`` and
``--version`` without torch, and set OpenMP's wait policy before torch loads it, so in their processes the
registration waits until timm is first imported (by the command that runs); it happens then, before any code
can ask timm for an ``icmlm_*`` model.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

CONSOLE_SCRIPTS = ("icmlm-zoo", "icmlm-train", "icmlm-eval")
MODULE_COMMANDS = ("icmlm_zoo", "icmlm_zoo.training")  # python -m ...: the same commands
MODELS_MODULE = "icmlm_zoo.models"  # importing it registers the backbones


def installed_version() -> str:
    """The installed distribution's version (one source: pyproject.toml); ``0+unknown`` in an uninstalled tree."""
    try:
        return metadata.version("icmlm-zoo")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return "0+unknown"


def in_console_script() -> bool:
    """Whether this process is one of the package's console scripts, or the same command run as
    ``python -m icmlm_zoo`` / ``python -m icmlm_zoo.training``."""
    argv = getattr(sys, "argv", None) or [""]
    if Path(argv[0]).stem in CONSOLE_SCRIPTS:
        return True
    orig = list(getattr(sys, "orig_argv", ()))  # the interpreter's own arguments (Python >= 3.10)
    return any(a == "-m" and b in MODULE_COMMANDS for a, b in zip(orig, orig[1:]))


class _ThenRegister(importlib.abc.Loader):
    """timm's own loader, which imports the backbones module right after timm itself has loaded."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        importlib.import_module(MODELS_MODULE)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


class _RegisterWhenTimmLoads(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the first ``import timm`` it hands back timm's spec with :class:`_ThenRegister`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # once; the search below goes through the other finders
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


def register_backbones() -> None:
    """Register the ``icmlm_*`` backbones in timm now, or, in a console script that has not imported timm yet,
    as soon as timm is imported."""
    if "timm" in sys.modules or not in_console_script():
        importlib.import_module(MODELS_MODULE)
    elif not any(isinstance(f, _RegisterWhenTimmLoads) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenTimmLoads())
