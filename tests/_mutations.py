"""Mutated copies of the shipped experiments, generated from the schema, and the "trains one step on CPU" check.

A mutation sets one key (or two at once) of the sections the training jobs read - method, method_options, model,
pretrain, finetune - to a value derived from that key's schema node: every other enum value, the flipped boolean,
null where allowed, integers and numbers around the bounds and around the current value, reordered arrays, other
model names (open_clip's and the project's, and one that does not exist). Keys that only the cluster reads
(resources.*) and `compile` (a compiled CPU step costs about a minute; whether torch.compile works is the host's
matter, not the config's) are not mutated.

`train_one_step` runs the real training stages in-process on a "trimmed twin" of the mutated experiment: the same
model config with one layer per tower (widths, patch grid, context length, heads and every method setting kept),
one process, the real per-rank micro-batch (capped at 2), grad_accum_steps micro-batches, one optimizer step, on
tiny synthetic shards; finetune starts from that pretrain's final.pt. Run as a script it checks every mutation
and prints the counts (docs/robustness.md): `python tests/_mutations.py [--limit N]`.
"""
from __future__ import annotations

import copy
import functools
import random
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("method", "method_options", "model", "pretrain", "finetune")
NOT_MUTATED = {"resources", "compile"}
INTEGERS = (1, 2, 3, 7, 8, 16, 17, 33, 64)
NUMBERS = (0.0, 1e-8, 0.01, 0.1, 0.5, 0.99, 1.0, 2.0, 10.0, -1.0)
MODEL_KEYS = {"embed_dim": (8, 16, 17, 64), "patch_size": (3, 4, 7, 16, 32, 64), "image_size": (8, 15, 16, 64, 224),
              "width": (16, 30, 32, 64), "head_width": (8, 15, 16, 64), "heads": (1, 2, 3, 5),
              "layers": (1, 2), "context_length": (1, 2, 3, 8, 77, 100), "vocab_size": (10, 1000, 49408)}


@functools.lru_cache(maxsize=1)
def shipped() -> dict[str, dict]:
    """Every shipped experiment as the job reads it: a file's `base` chain merged in (pipeline.config.compose),
    so each mutation is written as a file of its own."""
    from pipeline.config import experiment_raw

    folder = REPO / "config" / "experiments"
    return {p.stem: experiment_raw(p, REPO / "config") for p in sorted(folder.glob("*.yaml"))}


def _resolve(node: dict, root: dict) -> dict:
    while "$ref" in node:
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **extra}
    return node


def _types(node: dict) -> tuple[str, ...]:
    kinds = node.get("type", ())
    return (kinds,) if isinstance(kinds, str) else tuple(kinds)


def model_names() -> list[str]:
    import open_clip

    import pipeline.models  # noqa: F401  (registers the project's configs)

    names = sorted(open_clip.list_models())
    return names[::12] + ["ViT-B-16", "ViT-L-16-CL16-GAP", "RN50", "ViT-B-16-does-not-exist"]


def _numbers(node: dict, current) -> list:
    out = list(NUMBERS)
    for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if bound in node:
            out.append(node[bound])
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        out += [current * 10, current / 10]
    return out


def _integers(node: dict, current) -> list:
    low = node.get("minimum", 0)
    out = [low - 1, low, low + 1, *INTEGERS]
    if isinstance(current, int) and not isinstance(current, bool):
        out += [current - 1, current + 1, current * 2]
    return out


def values_for(node: dict, current, key: str) -> list:
    """Candidate values of one key, from its schema node (and its current value)."""
    kinds, out = _types(node), []
    if "enum" in node:
        out += node["enum"]
    if "boolean" in kinds:
        out.append(not current if isinstance(current, bool) else True)
    if "null" in kinds:
        out.append(None)
    if "integer" in kinds:
        out += _integers(node, current)
    if "number" in kinds:
        out += _numbers(node, current)
    if "array" in kinds and isinstance(current, list) and current:
        out += [list(reversed(current)), [current[0]] * len(current), current[:-1], [0.0] * len(current)]
    if key == "model.name":
        out += model_names()
    seen, unique = set(), []
    for value in out:
        if repr(value) not in seen and value != current:
            seen.add(repr(value))
            unique.append(value)
    return unique


def _inline_model(config: dict, prefix: str) -> list[tuple[str, object]]:
    out = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += _inline_model(value, f"{prefix}.{key}")
        elif key in MODEL_KEYS:
            out += [(f"{prefix}.{key}", v) for v in MODEL_KEYS[key] if v != value]
    return out


def _walk(node: dict, root: dict, current: dict, prefix: str) -> list[tuple[str, object]]:
    out = []
    for key, sub in _resolve(node, root).get("properties", {}).items():
        if key in NOT_MUTATED:
            continue
        sub, path = _resolve(sub, root), f"{prefix}{key}"
        value = current.get(key) if isinstance(current, dict) else None
        if "properties" in sub:
            out += _walk(sub, root, value if isinstance(value, dict) else {}, f"{path}.")
        elif path == "model.config" and isinstance(value, dict):
            out += _inline_model(value, path)
        else:
            out += [(path, v) for v in values_for(sub, value, path)]
    return out


def single_mutations(raw: dict) -> list[tuple[str, object]]:
    """(dotted key, value) for every candidate of every mutated key of one experiment."""
    from pipeline.config.schema import load_schema

    root = load_schema("experiment")
    props = {k: v for k, v in root["properties"].items() if k in SECTIONS}
    return _walk({"properties": props}, root, raw, "")


def apply(raw: dict, changes: list[tuple[str, object]]) -> dict:
    out = copy.deepcopy(raw)
    for key, value in changes:
        parts, node = key.split("."), out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = copy.deepcopy(value)
        if key == "model.name":
            out["model"].pop("config", None)
    return out


def all_mutations(pairs_per_experiment: int = 40, seed: int = 0) -> list[tuple[str, list]]:
    """Every single-key mutation of every shipped experiment, plus random pairs of them."""
    rng, out = random.Random(seed), []
    for name, raw in shipped().items():
        singles = single_mutations(raw)
        out += [(name, [m]) for m in singles]
        for _ in range(pairs_per_experiment):
            first, second = rng.sample(singles, 2)
            if first[0] != second[0]:
                out.append((name, [first, second]))
    return out


# keys whose valid values depend on each other and on the model: where a value can be fine for the schema and
# impossible for the job (the rest - rates, seeds, log intervals - the schema alone decides)
COMBINED = re.compile(r"^(model\.|method$|method_options\.|(pretrain|finetune)\.(image_size|text_length|"
                      r"image_reduction\.|text_reduction|batch_size|grad_accum_steps|processes|enabled))")


def sample(count: int, seed: int, combined: bool = False) -> list[tuple[str, list]]:
    """A random sample of all mutations; `combined`: only mutations of COMBINED keys."""
    everything = all_mutations()
    if combined:
        everything = [(n, ch) for n, ch in everything if all(COMBINED.match(k) for k, _ in ch)]
    return random.Random(seed).sample(everything, min(count, len(everything)))


# ---- running one mutation

def write_config(root: Path, name: str, raw: dict) -> Path:
    """root/config/{experiments/<name>.yaml, datasets/* (the shipped ones)}; returns the experiment file."""
    (root / "experiments").mkdir(parents=True, exist_ok=True)
    datasets = root / "datasets"
    if not datasets.is_dir():
        datasets.mkdir()
        for src in (REPO / "config" / "datasets").glob("*.yaml"):
            (datasets / src.name).write_text(src.read_text())
    path = root / "experiments" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def preflight(path: Path, config_dir: Path, semantic: bool = True) -> str | None:
    """None when accepted, else the one-line error a user sees before any job (semantic=False: the schema and the
    settings' own checks only, as before the pre-flight - to measure what it adds)."""
    from pipeline.config import ConfigError, load_experiment
    from pipeline.preflight import load_checked

    try:
        (load_checked if semantic else load_experiment)(path, config_dir)
    except ConfigError as exc:
        return str(exc)
    return None


def trimmed(raw: dict) -> dict:
    """The CPU twin: one layer per tower, one process, the per-rank micro-batch capped at 2, one step."""
    from pipeline.config import experiment_from_dict
    from pipeline.models import resolve_model_config

    out = copy.deepcopy(raw)
    exp = experiment_from_dict(raw, "twin", "twin")
    # an inline config as written (its own checks are the job's, at each stage's sizes), a named one resolved
    config = copy.deepcopy(raw["model"]["config"]) if exp.model.name is None else resolve_model_config(exp.model.name, None)
    for tower in ("vision_cfg", "text_cfg"):
        layers = config[tower].get("layers")
        if isinstance(layers, int):
            config[tower]["layers"] = 1
        elif isinstance(layers, (list, tuple)):
            config[tower]["layers"] = [1] * len(layers)
    out["model"] = {"config": config}
    for key in ("pretrain", "finetune"):
        stage = exp.stage(key)
        per_rank = stage.batch_size // (stage.processes * stage.resources.nodes * stage.grad_accum_steps)
        section = out.setdefault(key, {})
        section.update(processes=1, batch_size=stage.grad_accum_steps * min(per_rank, 2), workers=min(stage.workers, 1),
                       epochs=None, samples=stage.grad_accum_steps * min(per_rank, 2))
        section["resources"] = {**section.get("resources", {}), "nodes": 1}
    return out


def train_one_step(raw: dict, stats: Path, workdir: Path) -> None:
    """Both enabled stages of the trimmed twin, in-process; raises what the job would raise."""
    from pipeline.config import experiment_from_dict
    from pipeline.train.loop import train

    exp = experiment_from_dict(trimmed(raw), "twin", str(workdir / "twin.yaml"))
    final = None
    if exp.pretrain.enabled:
        final = train(experiment=exp, stage_name="pretrain", train_data=stats, out=workdir / "pretrain" / "final.pt")
    if exp.finetune.enabled:
        train(experiment=exp, stage_name="finetune", train_data=stats, out=workdir / "finetune" / "final.pt",
              init=final)


def check(name: str, changes: list, root: Path, stats: Path, semantic: bool = True) -> tuple[str, str]:
    """('rejected', message) | ('trained', '') | ('FAILED', what the job raised after the pre-flight accepted)."""
    import shutil
    import traceback

    raw = apply(shipped()[name], changes)
    label = "-".join(k for k, _ in changes).replace(".", "_")
    path = write_config(root / "config", f"{name}__{label}"[:120], raw)
    message = preflight(path, root / "config", semantic)
    if message is not None:
        return "rejected", message
    workdir = root / "runs" / path.stem
    try:
        train_one_step(raw, stats, workdir)
    except Exception as exc:  # noqa: BLE001 - the point is to see anything a job would raise
        tail = traceback.format_exception(exc)[-1].strip()
        return "FAILED", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else tail}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return "trained", ""


def main(argv: list[str]) -> int:
    import argparse
    import tempfile
    import time
    from collections import Counter

    sys.path.insert(0, str(Path(__file__).parent))
    from _train_fixtures import write_shards

    p = argparse.ArgumentParser(description="Check mutated shipped experiments: rejected or trains one step")
    p.add_argument("--limit", type=int, help="a random sample of this many mutations (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schema-only", action="store_true", help="skip the pre-flight (what the schema alone catches)")
    p.add_argument("--combined", action="store_true", help="only keys whose values depend on the model (COMBINED)")
    args = p.parse_args(argv)
    todo = sample(args.limit or 10**9, args.seed, args.combined)
    counts: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stats = write_shards(root / "data" / "tiny", shards=4, per_shard=36)
        start = time.time()
        for i, (name, changes) in enumerate(todo):
            outcome, message = check(name, changes, root, stats, semantic=not args.schema_only)
            counts[outcome] += 1
            if outcome != "trained":
                print(f"{outcome}\t{name}\t{changes}\t{message}", flush=True)
        print(f"{len(todo)} mutations in {time.time() - start:.0f} s: {dict(counts)}")
    return 1 if counts["FAILED"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main(sys.argv[1:]))
