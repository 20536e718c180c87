"""Experiment and dataset configs: read, validate against workflow/schemas, return read-only typed views.

Public face: load_experiment, load_dataset, experiment_from_dict, list_experiments, ConfigError. The views
(pipeline.config.view) take every key, type and default from the schema; nothing here repeats a key.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..reduction import check_image, check_text
from .compose import composed, seed_keys, split_replicate, with_replicate
from .schema import ConfigError, load_schema, read_yaml, schema_path, validate
from .view import Dataset, Experiment, Section, to_dict

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "config"

__all__ = [
    "ConfigError", "Dataset", "Experiment", "Section", "CONFIG_DIR", "REPO_ROOT",
    "load_experiment", "load_dataset", "experiment_from_dict", "dataset_from_dict", "experiment_source",
    "experiment_raw", "split_replicate",
    "list_experiments", "list_datasets", "experiment_path", "dataset_path", "to_dict",
    "read_yaml", "schema_path",
]


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def list_experiments(config_dir: Path = CONFIG_DIR) -> list[str]:
    return _names(Path(config_dir) / "experiments")


def list_datasets(config_dir: Path = CONFIG_DIR) -> list[str]:
    return _names(Path(config_dir) / "datasets")


def _config_file(kind: str, name: str, config_dir: Path) -> Path:
    """config_dir/<kind>s/<name>.yaml; a missing one is a one-line ConfigError listing the known names."""
    path = Path(config_dir) / f"{kind}s" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(_names(Path(config_dir) / f"{kind}s")) or "none"
        raise ConfigError(f"{path}: no {kind} named {name!r} ({kind}s: {known})")
    return path


def experiment_path(name: str, config_dir: Path = CONFIG_DIR) -> Path:
    """The file of experiment `name` (of its replicates `name@k` too)."""
    return _config_file("experiment", split_replicate(name)[0], config_dir)


def experiment_raw(path: Path, config_dir: Path = CONFIG_DIR, replicate: int = 0):
    """The raw mapping an experiment file stands for: its `base` chain merged in, seeds shifted for a replicate
    (pipeline.config.compose)."""
    raw = composed(Path(path), lambda name: experiment_path(name, config_dir))
    return with_replicate(raw, replicate, seed_keys(load_schema("experiment"))) if replicate else raw


def dataset_path(name: str, config_dir: Path = CONFIG_DIR) -> Path:
    return _config_file("dataset", name, config_dir)


def _check_stage(stage: Section, key: str, source: str) -> None:
    per_step = stage.processes * stage.resources.nodes * stage.grad_accum_steps
    if stage.batch_size % per_step:
        raise ConfigError(
            f"{source}: {key}.batch_size: {stage.batch_size} does not divide by processes x nodes x "
            f"grad_accum_steps = {per_step}")
    aug = stage.augment
    if aug.color_jitter_prob > 0 and aug.color_jitter is None:
        raise ConfigError(f"{source}: {key}.augment.color_jitter: required when color_jitter_prob is "
                          f"{aug.color_jitter_prob:g} (four numbers: brightness, contrast, saturation, hue)")
    try:
        check_image(stage.image_reduction, where=f"{source}: {key}")
        check_text(stage.text_reduction, where=f"{source}: {key}", context_length=stage.text_length)
    except UserError as exc:
        raise ConfigError(str(exc)) from None


def experiment_from_dict(raw, name: str, source: str) -> Experiment:
    """Validate a raw mapping (from YAML or JSON) and return the typed experiment."""
    data = validate(raw, "experiment", source)
    model = data["model"]
    if (model["name"] is None) == (model["config"] is None):
        raise ConfigError(f"{source}: model: give exactly one of model.name or model.config")
    exp = Experiment(name, data, load_schema("experiment"))
    if exp.finetune.enabled and not exp.pretrain.enabled:
        raise ConfigError(f"{source}: pretrain.enabled: false, but finetune.enabled starts from the pretrain "
                          f"checkpoint (disable finetune too, or enable pretrain)")
    for key in ("pretrain", "finetune"):
        _check_stage(exp.stage(key), key, source)
    for key in exp.published:
        if key == "finetune" and not exp.finetune.enabled:
            raise ConfigError(f"{source}: published.finetune: finetune.enabled is false")
    return exp


def load_experiment(name_or_path: str | Path, config_dir: Path = CONFIG_DIR,
                    check_datasets: bool = True) -> Experiment:
    """Load config/experiments/<name>.yaml (or a path; `@k` after either names replicate k) and check the
    datasets it names exist."""
    text, replicate = split_replicate(str(name_or_path))
    path = Path(text)
    if path.suffix not in (".yaml", ".yml"):
        path = experiment_path(text, config_dir)
    name = path.stem + (f"@{replicate}" if replicate else "")
    exp = experiment_from_dict(experiment_raw(path, config_dir, replicate), name, str(path))
    if check_datasets:
        _check_dataset_ref(exp.data.train, "data.train", "image_text", path, config_dir)
        for i, ds in enumerate(exp.evaluate.zeroshot.datasets):
            _check_dataset_ref(ds, f"evaluate.zeroshot.datasets.{i}", "classification", path, config_dir)
    return exp


def experiment_source(name_or_path: str | Path) -> tuple[Experiment, Path]:
    """(experiment, its config folder) for a stage's --experiment: a path config/experiments/E.yaml (the
    config folder is the one holding experiments/) or a name in the repository's config folder."""
    path = Path(split_replicate(str(name_or_path))[0])
    config_dir = path.resolve().parents[1] if path.suffix in (".yaml", ".yml") else CONFIG_DIR
    return load_experiment(name_or_path, config_dir), config_dir


def _check_dataset_ref(name: str, key: str, kind: str, source: Path, config_dir: Path) -> None:
    try:
        ds = load_dataset(name, config_dir)
    except ConfigError as exc:
        if not (Path(config_dir) / "datasets" / f"{name}.yaml").is_file():
            known = ", ".join(list_datasets(config_dir)) or "none"
            raise ConfigError(f"{source}: {key}: unknown dataset {name!r} (datasets: {known})") from None
        raise exc
    if ds.kind != kind:
        raise ConfigError(f"{source}: {key}: dataset {name!r} is {ds.kind}, expected {kind}")


def dataset_from_dict(raw, name: str, source: str) -> Dataset:
    data = validate(raw, "dataset", source)
    ds = Dataset(name, data, load_schema("dataset"))
    if ds.kind == "classification" and ds.classnames is None:
        raise ConfigError(f"{source}: classnames: required for a classification dataset")
    return ds


def load_dataset(name_or_path: str | Path, config_dir: Path = CONFIG_DIR) -> Dataset:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = dataset_path(str(name_or_path), config_dir)
    return dataset_from_dict(read_yaml(path), path.stem, str(path))
