"""What the command-line tools share: help formatting, ``--version`` and one-line hints for missing extras."""
from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys
from typing import Iterable, NoReturn

from . import __version__
from .errors import IcmlmZooError

__all__ = ["HelpFormatter", "MissingExtraError", "add_version", "require_extras", "exit_without_teardown"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (except empty ones: None, False, []) and keeps the description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        d = action.default
        if d is None or d is False or d == [] or d == argparse.SUPPRESS or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_version(parser: argparse.ArgumentParser) -> None:
    """Add ``--version`` (the installed package's version, one source: pyproject.toml)."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")


class MissingExtraError(IcmlmZooError):
    """A tool needs an optional dependency group (an extra) that is not installed."""


def require_extras(tool: str, extras: Iterable[str], modules: Iterable[str]) -> None:
    """Import ``modules`` now; if one is missing, raise :class:`MissingExtraError` with the one ``pip install``
    line that brings it (e.g. ``icmlm-train needs the [train] extra: pip install 'icmlm-zoo[train]'``)."""
    extras = sorted(set(extras))
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            names = ",".join(extras)
            word = "extra" if len(extras) == 1 else "extras"
            raise MissingExtraError(f"{tool} needs the [{names}] {word}: pip install 'icmlm-zoo[{names}]' "
                                    f"({mod} cannot be imported: {e})") from None


def exit_without_teardown(status: int) -> NoReturn:
    """End a command-line process with ``status``: run its exit handlers (logging, multiprocessing's clean-up of
    loader workers, ...) and flush its output, then leave without the interpreter's teardown. Freeing every module
    and running the C++ static destructors of torch's libraries pages their code back in (+~130 MB, the CUDA
    build on a CPU-only machine: the last moment of a run was its peak of memory) and takes time; nothing of
    ours needs it (files are written and closed by then)."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
            pass
    os._exit(status)
