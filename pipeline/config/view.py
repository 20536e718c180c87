"""Read-only typed views over validated configs: every key, type and default comes from the schema.

A `Section` wraps one object of a validated config (defaults already filled in) together with its schema
node. `section.key` returns the value converted by the schema's type (number -> float, array -> tuple,
object with properties -> Section); a key the schema does not declare is an AttributeError naming the
key path and the keys allowed there. No key is written down a second time: adding a setting to the
schema makes it readable here.
"""
from __future__ import annotations

from typing import Any


def resolve(node: dict, root: dict) -> dict:
    """A schema node with a local `$ref` ("#/$defs/x") followed; sibling keys (default, description) are kept."""
    while "$ref" in node:
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _types(node: dict) -> tuple[str, ...]:
    kind = node.get("type", ())
    return (kind,) if isinstance(kind, str) else tuple(kind)


def convert(value: Any, node: dict, root: dict, path: str) -> Any:
    """A validated value as the schema types it: None stays None, numbers become floats, arrays tuples,
    objects with declared properties Sections; free-form objects stay plain dicts."""
    node = resolve(node, root)
    if value is None:
        return None
    kinds = _types(node)
    if isinstance(value, dict):
        return Section(value, node, root, path) if "properties" in node else value
    if isinstance(value, list):
        items = node.get("items", {})
        return tuple(convert(v, items, root, f"{path}.{i}") for i, v in enumerate(value))
    if "number" in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def plain(value: Any, node: dict, root: dict) -> Any:
    """The JSON form of a validated value, converted like `convert` (floats for numbers) but with lists and dicts."""
    node = resolve(node, root)
    if isinstance(value, dict):
        props = node.get("properties")
        if props is None:
            return {k: plain(v, node.get("additionalProperties") or {}, root) for k, v in value.items()}
        return {k: plain(v, props.get(k, {}), root) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v, node.get("items", {}), root) for v in value]
    return convert(value, node, root, "")


class Section:
    """One validated config object; attribute access by the schema's key names, read-only."""

    __slots__ = ("_data", "_node", "_root", "_path")

    def __init__(self, data: dict, node: dict, root: dict, path: str):
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_node", resolve(node, root))
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        props = self._node.get("properties", {})
        if key not in props:
            allowed = ", ".join(sorted(props)) or "none"
            raise AttributeError(f"{self._path}.{key}: no such setting (settings here: {allowed})")
        return convert(self._data.get(key), props[key], self._root, f"{self._path}.{key}")

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{self._path}: configs are read-only")

    def __contains__(self, key: str) -> bool:
        """Whether the schema declares `key` here (every declared key has a value after validation)."""
        return key in self._node.get("properties", {})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Section) and self._data == other._data

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"Section({self._path}: {self._data!r})"

    def to_dict(self) -> dict:
        return plain(self._data, self._node, self._root)


class Named(Section):
    """A whole experiment or dataset file: its sections plus the name its file gives it."""

    __slots__ = ("name",)

    def __init__(self, name: str, data: dict, schema: dict):
        super().__init__(data, schema, schema, name)
        object.__setattr__(self, "name", name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Named) and self.name == other.name and self._data == other._data

    __hash__ = Section.__hash__

    def to_dict(self) -> dict:
        return {"name": self.name, **super().to_dict()}


class Experiment(Named):
    __slots__ = ()
    STAGES = ("pretrain", "finetune")

    def stage(self, name: str) -> Section:
        if name not in self.STAGES:
            raise KeyError(f"unknown stage {name!r} ({', '.join(self.STAGES)})")
        return getattr(self, name)


class Dataset(Named):
    __slots__ = ()


def to_dict(obj: Section) -> dict:
    """Plain-JSON form of a config view (tuples become lists), for checkpoints and params."""
    return obj.to_dict()
