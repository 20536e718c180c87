"""How an experiment file can build on another, and replicates of one experiment at other seeds.

- `base: <experiment>` at the top of a file: that experiment's settings, then this file's on top (mappings merged
  key by key, everything else replaced). `groups` is not inherited: a file is a row of the tables it lists itself.
  So a variant of a recipe is a few lines (the findings arms, config/experiments/findings_*.yaml).
- `<experiment>@<k>` names replicate k of an experiment: the same settings with every `seed` shifted by k
  (training order, initialisation, masks, evaluation splits). `E@0` is `E` itself; results go to results/E@k/.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

from .schema import ConfigError, read_yaml

REPLICATE = re.compile(r"^(?P<name>[^@]+)@(?P<k>[0-9]+)$")
NOT_INHERITED = ("groups",)


def split_replicate(name: str) -> tuple[str, int]:
    """'E@2' -> ('E', 2); 'E' -> ('E', 0)."""
    match = REPLICATE.match(str(name))
    return (match["name"], int(match["k"])) if match else (str(name), 0)


def merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def composed(path: Path, locate, seen: tuple[Path, ...] = ()) -> dict:
    """The raw mapping of an experiment file with its `base` chain merged in; `locate(name)` finds a file."""
    path = Path(path)
    if path in seen:
        chain = " -> ".join(p.stem for p in (*seen, path))
        raise ConfigError(f"{seen[0]}: base: experiments build on each other in a circle ({chain})")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        return raw  # the schema check names the problem
    raw = dict(raw)
    parent = raw.pop("base", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: base: expected an experiment name, got {parent!r}")
    inherited = composed(locate(parent), locate, (*seen, path))
    for key in NOT_INHERITED:
        inherited.pop(key, None)
    return merge(inherited, raw)


def shift_seeds(raw, k: int):
    """A copy of `raw` with every integer `seed` increased by k (replicate k)."""
    if isinstance(raw, dict):
        return {key: (value + k if key == "seed" and isinstance(value, int) else shift_seeds(value, k))
                for key, value in raw.items()}
    if isinstance(raw, list):
        return [shift_seeds(v, k) for v in raw]
    return raw


def with_replicate(raw, k: int, schema_defaults: dict[str, int]):
    """Replicate k: every seed the file sets shifted by k, and every seed it leaves at the schema default too
    (`schema_defaults`: dotted seed key -> default), so no stream keeps replicate 0's seed."""
    if k == 0:
        return raw
    out = copy.deepcopy(raw) if isinstance(raw, dict) else {}
    for dotted, default in schema_defaults.items():
        node, keys = out, dotted.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break
        else:
            node.setdefault(keys[-1], default)
    return shift_seeds(out, k)


def seed_keys(schema: dict) -> dict[str, int]:
    """Dotted paths of every `seed` the experiment schema declares in a fixed section -> its default."""
    from .view import resolve

    found: dict[str, int] = {}

    def walk(node, prefix):
        node = resolve(node, schema)
        for key, sub in node.get("properties", {}).items():
            sub = resolve(sub, schema)
            if key == "seed" and isinstance(sub.get("default"), int):
                found[prefix + key] = sub["default"]
            elif "properties" in sub:
                walk(sub, f"{prefix}{key}.")
    walk(schema, "")
    return found
