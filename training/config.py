"""Configuration: defaults, YAML presets, ``key=value`` overrides and strict key checking.

A config is a nested dict while it is read, merged and overridden; every key must exist in :data:`DEFAULTS`
(from the typed sections of :mod:`.config_sections`); an unknown key is an error that names the valid keys at
that level. :func:`load_config` checks it once, with :func:`validate` (every key's type and range, and the rules
across keys), and returns the typed :class:`Config` whose sections the trainer's modules receive and trust.
Presets live in ``training/presets/*.yaml`` and are shipped with the package.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config_schema import ConfigError, Spec, check_tree
from .config_sections import DEFAULTS, SCHEMA, Config, sections

__all__ = ["DEFAULTS", "ConfigError", "list_presets", "load_preset", "load_config", "apply_overrides",
           "merge", "validate", "dump", "SCHEMA", "Spec", "Config"]


def validate(cfg: dict) -> dict:
    """Check every key against :data:`SCHEMA` (type and range) and the rules across keys; return ``cfg``
    (numbers normalised in place). :func:`load_config` returns its typed view.

    The one place a config is checked: it runs before anything is written, so a refused config leaves no trace,
    and the modules trust the sections they receive. Errors name the key and what is expected, e.g.
    ``train.batch_size='abc' is not valid: expected an integer >= 1``."""
    _checked(cfg)
    return cfg


def _checked(cfg: dict) -> Config:
    check_tree(cfg, SCHEMA)
    typed = sections(cfg)
    _check_rules(typed)
    return typed


def _check_rules(c: Config) -> None:
    """The rules across keys (each key's own type and range is in :data:`SCHEMA`)."""
    heads = c.model.heads
    if len(set(heads)) != len(heads):
        raise ConfigError(f"model.heads={heads!r}: each head at most once")
    if "attfc" in heads and "tfm" in heads:
        raise ConfigError("model.heads: choose one MLM head (attfc or tfm), not both")
    m = c.masking
    if m.together == "class" and not m.groups_file and c.data.kind != "synthetic":
        raise ConfigError(f"masking.together=class needs word classes for data.kind={c.data.kind}: set "
                          "masking.groups_file to a file of 'word<TAB>class' lines (e.g. 'red<TAB>colour')")
    if c.needs_tags and c.tags.source == "file" and not c.tags.file:
        raise ConfigError("tags.source=file needs tags.file: set tags.file=PATH (make one with "
                          "`icmlm-train build-tags`), or use tags.source=mine")


def merge(base: dict, update: dict, *, path: str = "") -> dict:
    """Return ``base`` updated recursively by ``update``; unknown keys raise :class:`ConfigError`."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        where = f"{path}{key}"
        if key not in out:
            valid = ", ".join(sorted(out))
            under = f" under {path[:-1]}" if path else ""
            raise ConfigError(f"unknown config key '{where}'; valid keys{under}: {valid}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{where}' is a section; give a mapping, not {value!r}")
            out[key] = merge(out[key], value, path=where + ".")
        else:
            out[key] = _coerce(value, out[key], where)
    return out


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _coerce(value: Any, default: Any, where: str) -> Any:
    """YAML reads ``1e-3`` as text: turn number-looking text into a number where numbers are expected."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        if isinstance(default, bool):
            return value
        integral = float(value).is_integer() and "." not in value and "e" not in value.lower()
        if isinstance(default, int) and not isinstance(default, bool) and integral:
            return int(value)
        if isinstance(default, (int, float)) or default is None:
            return float(value)
    return value


def list_presets() -> list[str]:
    """Names of the presets shipped in ``icmlm_zoo/training/presets`` (``training/presets`` in the repository)."""
    root = resources.files(__package__) / "presets"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, origin: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{origin}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections")
    return data


def load_preset(name: str) -> dict:
    """Defaults updated by the preset ``name``."""
    names = list_presets()
    if name not in names:
        raise ConfigError(f"unknown preset '{name}'; available presets: {', '.join(names)}")
    text = (resources.files(__package__) / "presets" / f"{name}.yaml").read_text()
    return merge(DEFAULTS, _read_yaml(text, f"preset {name}"))


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a","b","c"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like section.key=value, e.g. optim.lr=3e-4")
    key, raw = item.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError:
        value = raw
    return keys, value


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides (values parsed as YAML) with strict key checking."""
    for item in overrides or []:
        keys, value = parse_override(item)
        update: Any = value
        for k in reversed(keys):
            update = {k: update}
        cfg = merge(cfg, update)
    return cfg


def load_config(preset: str | None = None, config_file: str | Path | None = None,
                overrides: list[str] | None = None) -> Config:
    """Resolve a config: defaults ← preset ← YAML file ← overrides, validated once; the typed :class:`Config`."""
    cfg = load_preset(preset) if preset else copy.deepcopy(DEFAULTS)
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        cfg = merge(cfg, _read_yaml(path.read_text(), str(path)))
    cfg = apply_overrides(cfg, overrides or [])
    return _checked(cfg)


def dump(cfg: Config | dict) -> str:
    """YAML text of a config (typed or as a dict), in the section order of :data:`DEFAULTS`."""
    return yaml.safe_dump(dataclasses.asdict(cfg) if isinstance(cfg, Config) else cfg, sort_keys=False)
