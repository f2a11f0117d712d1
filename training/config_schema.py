"""Config value specs: the expected type and range of one key (:class:`Spec`), and :func:`check_tree`, which checks
a whole config against a tree of them and names the key that is wrong and what it expects."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["ConfigError", "Spec", "Either", "integer", "floating", "choice", "check_tree"]


class ConfigError(ValueError):
    """A config file, preset or override is invalid."""


class Spec:
    """The expected type and range of one config value; :meth:`check` returns the (normalised) value or raises."""

    def __init__(self, kind: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False, none: bool = False, choices: tuple = (), item: "Spec | None" = None,
                 length: tuple[int, int | None] = (0, None)) -> None:
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        self.none, self.choices, self.item, self.length = none, choices, item, length

    def describe(self) -> str:
        if self.kind == "choice":
            d = "one of " + ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices)
        elif self.kind == "list":
            n, m = self.length
            count = f"{n}" if n == m else f"at least {n}" if m is None else f"{n} to {m}"
            d = f"a list of {count} values, each {self.item.describe()}"
        else:
            d = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a non-empty text",
                 "paths": "a path/URL or a list of them"}[self.kind]
            if self.lo is not None and self.hi is not None:
                d += f" in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
            elif self.lo is not None:
                d += f" {'>' if self.lo_open else '>='} {self.lo:g}"
        return d + (" or null" if self.none else "")

    def check(self, v: Any) -> Any:
        if v is None and self.none:
            return v
        if self.kind == "choice":
            ok = any(v is c or (type(v) is type(c) and v == c) for c in self.choices)
        elif self.kind == "list":
            n, m = self.length
            ok = isinstance(v, list) and len(v) >= n and (m is None or len(v) <= m)
            if ok:
                v = [self.item.check(x) for x in v]
        elif self.kind == "bool":
            ok = isinstance(v, bool)
        elif self.kind == "str":
            ok = isinstance(v, str) and v.strip() != ""
        elif self.kind == "paths":
            ok = (isinstance(v, str) and v.strip() != "") or (
                isinstance(v, list) and bool(v) and all(isinstance(x, str) and x.strip() for x in v))
        else:
            if self.kind == "int" and isinstance(v, float) and v.is_integer():
                v = int(v)  # YAML reads 1e4 as a float
            types = (int,) if self.kind == "int" else (int, float)
            ok = isinstance(v, types) and not isinstance(v, bool) and math.isfinite(v)
            if ok and self.lo is not None:
                ok = v > self.lo if self.lo_open else v >= self.lo
            if ok and self.hi is not None:
                ok = v < self.hi if self.hi_open else v <= self.hi
        if not ok:
            raise _Bad(self)
        return v


class _Bad(Exception):
    def __init__(self, spec: Spec) -> None:
        self.spec = spec


class Either(Spec):
    """A value that passes any of ``specs`` (the first that accepts it normalises it)."""

    def __init__(self, *specs: Spec) -> None:
        super().__init__("either")
        self.specs = specs

    def describe(self) -> str:
        return " or ".join(s.describe() for s in self.specs)

    def check(self, v: Any) -> Any:
        for s in self.specs:
            try:
                return s.check(v)
            except _Bad:
                pass
        raise _Bad(self)


def integer(lo: int | None = 0, hi: int | None = None, none: bool = False) -> Spec:
    """An integer in [lo, hi] (or None when ``none``)."""
    return Spec("int", lo, hi, none=none)


def floating(lo: float | None = 0.0, hi: float | None = None, *, none: bool = False, lo_open: bool = False,
             hi_open: bool = False) -> Spec:
    """A finite number between lo and hi (open or closed bounds)."""
    return Spec("float", lo, hi, none=none, lo_open=lo_open, hi_open=hi_open)


def choice(*choices: Any) -> Spec:
    """One of ``choices`` (compared with their type: ``true`` is not ``'true'``)."""
    return Spec("choice", choices=choices)


def check_tree(cfg: dict, schema: dict, path: str = "") -> None:
    """Check (and normalise in place) every key of ``cfg`` against ``schema``; the first bad one raises."""
    for key, spec in schema.items():
        where = f"{path}{key}"
        if isinstance(spec, dict):
            if not isinstance(cfg.get(key), dict):
                raise ConfigError(f"config key '{where}' is a section; give a mapping, not {cfg.get(key)!r}")
            check_tree(cfg[key], spec, where + ".")
            continue
        try:
            cfg[key] = spec.check(cfg.get(key))
        except _Bad:
            want = spec.describe().replace("one of", "choose one of", 1) if spec.kind == "choice" else \
                f"expected {spec.describe()}"
            raise ConfigError(f"{where}={cfg.get(key)!r} is not valid: {want}") from None
