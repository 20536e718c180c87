"""JSON-schema validation with defaults filled in, and one-line errors naming file and key path.

The schemas under workflow/schemas are the single source of every key and default; Snakemake's
`validate` reads the same files, so the workflow and the package can never disagree.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import UserError

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "workflow" / "schemas"


class ConfigError(UserError, ValueError):
    """A config file is missing, unreadable or invalid; the message is one line naming file and key."""


def schema_path(kind: str) -> Path:
    return SCHEMA_DIR / f"{kind}.schema.yaml"


@functools.lru_cache(maxsize=None)
def load_schema(kind: str) -> dict:
    with open(schema_path(kind)) as f:
        return yaml.safe_load(f)


def _fill_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema and key not in instance:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties_with_defaults})


_DefaultFillingValidator = _fill_defaults(jsonschema.Draft202012Validator)


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in allowed)
        if unknown:
            choices = ", ".join(sorted(allowed)) or "none"
            return f"{_key_path(path + [unknown[0]])}: unknown key (allowed here: {choices})"
    if "propertyNames" in error.schema_path:
        allowed = ", ".join(map(str, error.schema.get("enum", []))) or "none"
        return f"{_key_path(path + [error.instance])}: unknown key (allowed here: {allowed})"
    if error.validator == "required":
        return f"{_key_path(path)}: {error.message}"
    return f"{_key_path(path)}: {error.message}"


def validate(data: Any, kind: str, source: str) -> dict:
    """Validate `data` against the named schema, fill defaults in a copy, and return it."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: <top level>: expected a mapping of keys, got {type(data).__name__}")
    data = copy.deepcopy(data)
    validator = _DefaultFillingValidator(load_schema(kind))
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"{source}: {_describe(best)}")
    return data


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise ConfigError(f"{path}: not valid YAML ({where}: {getattr(exc, 'problem', exc)})") from None
