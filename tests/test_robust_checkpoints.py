"""A torch file that carries pickled code is refused with one line naming it, by every reader of the package, and
its code never runs; torch.load itself is called in one place only (pipeline.utils.io.torch_load)."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from _eval_fixtures import TINY_CONFIG, save_tiny_checkpoint
from _train_fixtures import write_experiment, write_shards
from pipeline.errors import UserError

REPO = Path(__file__).resolve().parents[1]
MARKER = "CLIPFORGE_TEST_PWNED"


class Payload:
    """Unpickling this calls os.makedirs(marker): proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.fixture
def evil(tmp_path):
    """(write(path): a checkpoint-shaped file whose 'model' entry runs code on unpickling, the marker path)."""
    marker = tmp_path / MARKER

    def write(path: Path, **extra) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": Payload(marker), "model_config": TINY_CONFIG, "stage": "pretrain", **extra}, path)
        return path
    return write, marker


def assert_refused(exc_info, path: Path, marker: Path) -> None:
    message = str(exc_info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: refused"), message
    assert "pickled code" in message and "os.makedirs" in message, message
    assert not marker.exists(), "code from the checkpoint ran"


def test_model_and_checkpoint_readers_refuse_pickled_code(tmp_path, evil):
    from pipeline.models import load_checkpoint, load_model
    from pipeline.models.export import export_checkpoint
    from pipeline.train import checkpoint

    write, marker = evil
    path = write(tmp_path / "final.pt")
    for read in (load_checkpoint, load_model, lambda p: export_checkpoint(p, tmp_path / "export")):
        with pytest.raises(UserError) as exc_info:
            read(path)
        assert_refused(exc_info, path, marker)
    resumable = write(tmp_path / "checkpoints" / "step_00000003.pt")
    with pytest.raises(UserError) as exc_info:
        checkpoint.load_latest(tmp_path / "checkpoints")  # what a resumed training run reads first
    assert_refused(exc_info, resumable, marker)


def test_finetune_init_refuses_pickled_code(tmp_path, evil):
    """The training command reading its --init checkpoint (in-process: no torchrun)."""
    from pipeline.__main__ import main

    write, marker = evil
    stats = write_shards(tmp_path / "data" / "tiny", shards=1, per_shard=8)
    exp = write_experiment(tmp_path / "config")
    init = write(tmp_path / "pretrain" / "final.pt")
    argv = ["finetune", "--experiment", str(exp), "--train-data", str(stats), "--out", str(tmp_path / "ft" / "final.pt"),
            "--init", str(init)]
    with pytest.raises(UserError) as exc_info:
        from pipeline.train.cli import main as train_main
        train_main(argv)
    assert_refused(exc_info, init, marker)
    assert main(argv) == 2 and not (tmp_path / "ft" / "final.pt").exists()


def test_feature_cache_and_baseline_weights_refuse_pickled_code(tmp_path, evil):
    from _eval_fixtures import write_imagefolder
    from pipeline.evaluate._features import cache_key, cached_features
    from pipeline.evaluate.supervised_baseline import resnet50_classifier
    from pipeline.models import load_model

    write, marker = evil
    ckpt = save_tiny_checkpoint(tmp_path / "final.pt")
    stats = write_imagefolder(tmp_path / "data" / "digits", ["a", "b"], per_class=2)
    cache = tmp_path / "features"
    planted = cache / f"digits-{cache_key(ckpt, stats, 'embedding')}.pt"
    cache.mkdir()
    torch.save({"features": Payload(marker), "labels": torch.zeros(4)}, planted)
    loaded = load_model(ckpt)
    with pytest.raises(UserError) as exc_info:
        cached_features(model=loaded.model, model_config=loaded.model_config, checkpoint=ckpt, stats_path=stats,
                        cache_dir=cache, batch_size=4, workers=0, features="embedding", part_images=4)
    assert_refused(exc_info, planted, marker)
    weights = tmp_path / "resnet50.pt"
    torch.save({"fc.weight": Payload(marker)}, weights)
    with pytest.raises(UserError) as exc_info:
        resnet50_classifier(num_classes=2, weights=str(weights), seed=0)
    assert_refused(exc_info, weights, marker)


def test_truncated_and_missing_checkpoints_are_one_line(tmp_path):
    from pipeline.models import load_checkpoint

    good = save_tiny_checkpoint(tmp_path / "good.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match=r"cut.pt: unreadable checkpoint \(RuntimeError: ") as exc_info:
        load_checkpoint(cut)
    assert "\n" not in str(exc_info.value)
    with pytest.raises(UserError, match="nothing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nothing.pt")
    assert load_checkpoint(good)["stage"] == "finetune"


def _calls(tree: ast.AST, dotted: str) -> list[int]:
    owner, attr = dotted.split(".")
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == attr
            and isinstance(node.func.value, ast.Name) and node.func.value.id == owner]


def test_torch_load_is_called_in_one_place_only():
    """Every reader goes through torch_load (weights_only=True, one-line refusals): a new raw torch.load, pickle
    load or np.load(allow_pickle=True) anywhere in the package fails here."""
    found = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text())
        for dotted in ("torch.load", "pickle.load", "pickle.loads"):
            for line in _calls(tree, dotted):
                allowed = (rel, dotted) in {("pipeline/utils/io.py", "torch.load"),
                                            # the POS tagger model shipped inside a pinned package, not a user file
                                            ("pipeline/reduction/syntax.py", "pickle.load")}
                if not allowed:
                    found.append(f"{rel}:{line}: {dotted}")
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and ast.unparse(node.value) != "False":
                found.append(f"{rel}:{node.lineno}: allow_pickle")
    assert not found, found
