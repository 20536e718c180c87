"""Method options with the experiment schema's defaults filled in.

The trainer passes `experiment.method_options` (a config view or its dict); tests pass a few keys. Either
way the method sees every key, validated and defaulted by workflow/schemas/experiment.schema.yaml, so
no default is written twice.
"""
from __future__ import annotations

from ..config import Section, to_dict
from ..config.schema import validate


def resolve_options(options, source: str = "method_options") -> dict:
    """Every method option (schema defaults for missing keys); bad keys/values raise ConfigError."""
    if options is None:
        options = {}
    elif isinstance(options, Section):
        options = to_dict(options)
    # validate a minimal experiment around the options, so the schema's own default filling and
    # one-line error messages ("method_options.ssl_scale: ...") apply unchanged
    raw = {"data": {"train": "unused"}, "model": {}, "method_options": dict(options)}
    return validate(raw, "experiment", source)["method_options"]
