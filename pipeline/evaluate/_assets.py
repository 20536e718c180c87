"""Class-name and prompt-template lists shipped as package data (pipeline/evaluate/assets).

One file per list, one entry per line, in label order; templates hold `{c}` where the class name goes.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError

ASSETS = Path(__file__).with_name("assets")


def available(kind: str) -> list[str]:
    """Names of the shipped lists of one kind ('classnames' or 'templates')."""
    return sorted(p.stem for p in (ASSETS / kind).glob("*.txt"))


def _read_list(kind: str, name: str) -> list[str]:
    path = ASSETS / kind / f"{name}.txt"
    if not path.is_file():
        known = ", ".join(available(kind)) or "none"
        raise UserError(f"{path}: {kind}: no list named {name!r} (shipped: {known})")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    entries = [line for line in lines if line]
    if not entries:
        raise UserError(f"{path}: {kind}: the list is empty")
    return entries


def load_classnames(name: str) -> list[str]:
    return _read_list("classnames", name)


def load_templates(name: str) -> list[str]:
    """Templates of a named list; each must contain `{c}` exactly once (it is filled with str.format)."""
    templates = _read_list("templates", name)
    path = ASSETS / "templates" / f"{name}.txt"
    for i, template in enumerate(templates, 1):
        if template.count("{c}") != 1:
            raise UserError(f"{path}: templates: line {i} {template!r} must contain '{{c}}' exactly once")
        try:
            template.format(c="x")
        except (IndexError, KeyError, ValueError):
            raise UserError(f"{path}: templates: line {i} {template!r} has braces other than '{{c}}'") from None
    return templates


FROM_DATA = "from_data"  # classnames value: use the prepared dataset's own class names (e.g. torchvision's)


def prompts_for(dataset: str, config_dir, classes: list[str], stats_path) -> tuple[list[str], list[str]]:
    """Class names and templates named by config/datasets/<dataset>.yaml, checked against the prepared data."""
    from ..config import load_dataset

    ds = load_dataset(dataset, config_dir)
    if ds.classnames is None or ds.templates is None:
        raise UserError(f"{config_dir}/datasets/{dataset}.yaml: classnames/templates: both are needed for zero-shot")
    classnames = list(classes) if ds.classnames == FROM_DATA else load_classnames(ds.classnames)
    templates = load_templates(ds.templates)
    if len(classnames) != len(classes):
        raise UserError(f"{stats_path}: classes: {len(classes)} classes, but class-name list {ds.classnames!r} "
                        f"has {len(classnames)}")
    return classnames, templates
