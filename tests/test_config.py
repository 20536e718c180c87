"""Experiment/dataset config validation: defaults, typed objects, and one-line errors for bad files."""
import ast
from pathlib import Path

import pytest
import yaml

from pipeline.config import (ConfigError, list_experiments, load_dataset, load_experiment, to_dict)
from pipeline.config.schema import load_schema
from pipeline.config.view import Section, resolve

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def config_dir(tmp_path):
    """A copy of the repo's dataset configs plus a writable experiments folder."""
    (tmp_path / "experiments").mkdir()
    (tmp_path / "datasets").mkdir()
    for src in (REPO / "config" / "datasets").glob("*.yaml"):
        (tmp_path / "datasets" / src.name).write_text(src.read_text())
    return tmp_path


def demo_raw() -> dict:
    return yaml.safe_load((REPO / "config" / "experiments" / "demo.yaml").read_text())


def write(config_dir, name, raw) -> Path:
    path = config_dir / "experiments" / f"{name}.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_every_shipped_experiment_is_valid():
    for name in list_experiments():
        exp = load_experiment(name)
        assert exp.name == name


def test_defaults_come_from_the_schema():
    exp = load_experiment("demo")
    stage_schema = load_schema("experiment")["$defs"]["stage"]["properties"]
    # the demo sets no seed or precision: they must be the schema's defaults
    assert exp.pretrain.seed == stage_schema["seed"]["default"]
    assert exp.pretrain.precision == stage_schema["precision"]["default"]
    assert exp.finetune.enabled is True
    assert isinstance(exp.pretrain.betas, tuple)
    assert exp.evaluate.zeroshot.datasets == ("fashion_mnist_demo_test",)


def _walk_views(view, node, root, where):
    """Every key the schema declares reads through the view, typed as the schema says."""
    node = resolve(node, root)
    for key, sub in node.get("properties", {}).items():
        value = getattr(view, key)
        sub = resolve(sub, root)
        kinds = sub.get("type", ())
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        if value is None:
            assert "null" in kinds or "type" not in sub, f"{where}.{key}"
        elif "properties" in sub:
            assert isinstance(value, Section), f"{where}.{key}"
            _walk_views(value, sub, root, f"{where}.{key}")
        elif "array" in kinds:
            assert isinstance(value, tuple), f"{where}.{key}"
        elif kinds == ("number",) or kinds == ("number", "null"):
            assert isinstance(value, float), f"{where}.{key}"


def test_views_read_every_schema_key_and_nothing_else():
    exp_schema, ds_schema = load_schema("experiment"), load_schema("dataset")
    for name in list_experiments():
        _walk_views(load_experiment(name), exp_schema, exp_schema, name)
    _walk_views(load_dataset("fashion_mnist_demo"), ds_schema, ds_schema, "fashion_mnist_demo")
    exp = load_experiment("demo")
    with pytest.raises(AttributeError, match="demo.pretrain.lrr: no such setting"):
        exp.pretrain.lrr
    with pytest.raises(AttributeError, match="read-only"):
        exp.pretrain.lr = 1.0


def _schema_defaults() -> dict[str, set]:
    """Every leaf key of both schemas -> the defaults it is given there."""
    out: dict[str, set] = {}

    def walk(node, root):
        node = resolve(node, root)
        for key, sub in node.get("properties", {}).items():
            sub = resolve(sub, root)
            if "default" in sub and not isinstance(sub["default"], (dict, list)):
                out.setdefault(key, set()).add(repr(sub["default"]))
            walk(sub, root)
            if "items" in sub:
                walk(sub["items"], root)
    for kind in ("experiment", "dataset"):
        root = load_schema(kind)
        walk(root, root)
    return out


NOT_LITERAL = object()


def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NOT_LITERAL  # a name or a call: a constant defined elsewhere, not a value written here


def _stage_modules() -> set[Path]:
    """Source files of the `python -m pipeline <stage>` commands (their argv carries coordinates only)."""
    from pipeline.__main__ import EVALUATION_CLI, STAGES

    modules = set(STAGES.values()) | {EVALUATION_CLI, "pipeline.launch"}
    return {REPO / (m.replace(".", "/") + ".py") for m in modules}


def _is_setting_default(node, keys) -> bool:
    value = _literal(node)
    return value is not None and value is not NOT_LITERAL


def test_no_default_is_written_outside_the_schema():
    """Settings are said once: no option of a stage command has a default (argv carries coordinates and
    paths only, a config value never travels on it; --config-dir is a path), and no function or class field
    of the package named like a setting gives it a literal default."""
    keys, stage_modules = _schema_defaults(), _stage_modules()
    found = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (path in stage_modules and isinstance(node, ast.Call)
                    and getattr(node.func, "attr", "") == "add_argument"):
                flag = next((a.value for a in node.args if isinstance(a, ast.Constant)), "?")
                for kw in node.keywords:
                    if kw.arg == "default" and flag != "--config-dir":
                        found.append(f"{path.relative_to(REPO)}:{node.lineno}: argparse {flag} has a default")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
                defaults += node.args.kw_defaults
                for arg, default in zip(args, defaults):
                    if default is not None and arg.arg in keys and _is_setting_default(default, keys):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.name}({arg.arg}="
                                     f"{ast.unparse(default)}) repeats a setting's default")
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                if "ClassVar" in ast.unparse(node.annotation):
                    continue
                if node.target.id in keys and _is_setting_default(node.value, keys):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: field {node.target.id} has a default")
    assert not found, "\n".join(found)


def test_every_schema_key_is_documented():
    def walk(schema, path):
        for key, sub in schema.get("properties", {}).items():
            if "$ref" not in sub:
                assert "description" in sub or "properties" in sub, f"{path}.{key} has no description"
            walk(sub, f"{path}.{key}")
        if schema.get("type") == "object" and "properties" in schema:
            assert schema.get("additionalProperties") is False, f"{path} accepts unknown keys"
    for kind in ("experiment", "dataset"):
        root = load_schema(kind)
        walk(root, kind)
        for name, sub in root.get("$defs", {}).items():
            walk(sub, f"{kind}.$defs.{name}")


def _set(raw, dotted, value):
    keys = dotted.split(".")
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return raw


def _del(raw, dotted):
    keys = dotted.split(".")
    node = raw
    for k in keys[:-1]:
        node = node[k]
    del node[keys[-1]]
    return raw


MALFORMED = [
    # (description, mutation, expected key path in the message, expected words)
    ("unknown top-level key", lambda r: _set(r, "learning_rate", 1), "learning_rate", "unknown key"),
    ("unknown stage key", lambda r: _set(r, "pretrain.lrr", 1), "pretrain.lrr", "unknown key"),
    ("unknown nested key", lambda r: _set(r, "pretrain.augment.blur", 1), "pretrain.augment.blur", "unknown key"),
    ("negative lr", lambda r: _set(r, "pretrain.lr", -1.0), "pretrain.lr", "minimum"),
    ("lr as string", lambda r: _set(r, "pretrain.lr", "fast"), "pretrain.lr", "not of type"),
    ("batch size zero", lambda r: _set(r, "finetune.batch_size", 0), "finetune.batch_size", "minimum"),
    ("batch size float", lambda r: _set(r, "finetune.batch_size", 12.5), "finetune.batch_size", "not of type"),
    ("bad precision", lambda r: _set(r, "pretrain.precision", "fp8"), "pretrain.precision", "is not one of"),
    ("bad text reduction", lambda r: _set(r, "pretrain.text_reduction", "shuffle"), "pretrain.text_reduction",
     "is not one of"),
    ("betas wrong length", lambda r: _set(r, "pretrain.betas", [0.9]), "pretrain.betas", "short"),
    ("beta out of range", lambda r: _set(r, "pretrain.betas", [0.9, 1.5]), "pretrain.betas.1", "maximum"),
    ("aug scale above 1", lambda r: _set(r, "pretrain.augment.scale", [0.5, 2.0]), "pretrain.augment.scale.1",
     "maximum"),
    ("missing data", lambda r: _del(r, "data"), "<top level>", "'data' is a required property"),
    ("data.train not a string", lambda r: _set(r, "data.train", 3), "data.train", "not of type"),
    ("bad dataset name", lambda r: _set(r, "data.train", "../etc"), "data.train", "does not match"),
    ("unknown dataset", lambda r: _set(r, "data.train", "nosuchset"), "data.train", "unknown dataset"),
    ("eval of a training set", lambda r: _set(r, "evaluate.zeroshot", {"datasets": ["fashion_mnist_demo"]}),
     "evaluate.zeroshot.datasets.0", "expected classification"),
    ("both model name and config", lambda r: _set(r, "model.name", "ViT-B-32"), "model", "exactly one"),
    ("neither model name nor config", lambda r: _set(r, "model", {}), "model", "exactly one"),
    ("published out of range", lambda r: _set(r, "published", {"finetune": {"zeroshot": {"x": 170}}}),
     "published.finetune.zeroshot.x", "maximum"),
    ("published unknown checkpoint", lambda r: _set(r, "published", {"midtrain": {}}), "published.midtrain",
     "unknown key"),
    ("batch not divisible", lambda r: _set(r, "pretrain.grad_accum_steps", 3), "pretrain.batch_size",
     "does not divide"),
    ("mask without tokens", lambda r: _set(r, "pretrain.image_reduction", {"strategy": "random"}),
     "pretrain.image_reduction.tokens", "required"),
    ("negative warmup", lambda r: _set(r, "finetune.warmup_steps", -5), "finetune.warmup_steps", "minimum"),
    ("epochs zero", lambda r: _set(r, "pretrain.epochs", 0), "pretrain.epochs", "minimum"),
    ("enabled not bool", lambda r: _set(r, "finetune.enabled", "yes"), "finetune.enabled", "not of type"),
]


@pytest.mark.parametrize("desc,mutate,key,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_experiment_is_one_clear_line(config_dir, desc, mutate, key, words):
    path = write(config_dir, "bad", mutate(demo_raw()))
    with pytest.raises(ConfigError) as info:
        load_experiment("bad", config_dir)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    assert key in message, message
    assert words in message, message


@pytest.mark.parametrize("text,words", [
    ("pretrain: [1, 2\n", "not valid YAML"),
    ("- a list\n", "expected a mapping"),
])
def test_unparsable_files(config_dir, text, words):
    write(config_dir, "bad", text)
    with pytest.raises(ConfigError, match=words):
        load_experiment("bad", config_dir)


def test_missing_experiment_lists_the_known_ones(config_dir):
    write(config_dir, "alpha", demo_raw())
    with pytest.raises(ConfigError) as info:
        load_experiment("beta", config_dir)
    assert "no experiment named 'beta'" in str(info.value)
    assert "alpha" in str(info.value)


def test_malformed_dataset(config_dir):
    path = config_dir / "datasets" / "broken.yaml"
    path.write_text(yaml.safe_dump({"kind": "image_text", "reader": "url_list",
                                    "img2dataset": {"processes": 0}}))
    with pytest.raises(ConfigError) as info:
        load_dataset("broken", config_dir)
    assert str(path) in str(info.value) and "img2dataset.processes" in str(info.value)


def test_round_trip_to_dict_is_json_plain():
    import json
    exp = load_experiment("demo")
    plain = to_dict(exp)
    assert json.loads(json.dumps(plain)) == plain
    assert plain["pretrain"]["betas"] == list(exp.pretrain.betas)
