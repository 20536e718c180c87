"""Checkpoint files as table rows (evaluate.checkpoints): OpenAI TorchScript archives read without running
their code, open_clip training checkpoints, the workflow wiring, and an ImageNet-style wnid ImageFolder."""
from __future__ import annotations

import json
import pickle
import warnings
import zipfile

import pytest
import torch
import yaml

from pipeline.errors import UserError
from pipeline.evaluate._torchscript import is_torchscript, read_tensors
from pipeline.models import create_model

from _eval_fixtures import TINY_CONFIG, eval_argv, write_eval_experiment, write_imagefolder

OPENAI_STYLE = {**TINY_CONFIG, "quick_gelu": True}


def _torchscript_clip(path):
    """A traced fp16 open_clip model saved as TorchScript: the layout of OpenAI's released CLIP .pt files."""
    torch.manual_seed(1)
    model = create_model(OPENAI_STYLE).eval()
    half = create_model(OPENAI_STYLE).eval()
    half.load_state_dict(model.state_dict())
    half = half.half()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(half, (torch.randn(1, 3, 16, 16).half(), torch.randint(0, 99, (1, 12))),
                                 check_trace=False)
    traced.save(str(path))
    return half


def test_torchscript_tensors_without_its_code(tmp_path):
    path = tmp_path / "ViT-tiny.pt"
    half = _torchscript_clip(path)
    assert is_torchscript(path)
    with pytest.raises(RuntimeError):  # what a plain weights-only load does with such a file
        torch.load(path, weights_only=True)
    tensors = read_tensors(path)
    assert all(torch.equal(tensors[k], v) for k, v in half.state_dict().items())
    # an archive whose pickle names anything but tensors and module stand-ins is refused, nothing runs
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(_Evil(), protocol=2)
            dst.writestr(item, data)
    with pytest.raises(UserError, match="refusing TorchScript entry (posix|os).system"):
        read_tensors(evil)
    assert not (tmp_path / "pwned").exists()


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ("touch pwned",)


def _experiment_with_rows(tmp_path, rows):
    exp = write_eval_experiment(tmp_path / "config", {"checkpoints": rows, "zeroshot": {"datasets": ["fm"]}},
                                name="rows", datasets={"fm": "fashion_mnist"})
    raw = yaml.safe_load(exp.read_text())
    raw["model"] = {"config": OPENAI_STYLE}
    raw["published"] = {"openai": {"zeroshot": {"fm": 50.0}}}
    exp.write_text(yaml.safe_dump(raw))
    return exp


def test_openai_and_open_clip_files_are_rows(tmp_path):
    from pipeline.__main__ import main
    from pipeline.evaluate._external import detect_format, load_file
    from pipeline.evaluate._features import image_features
    from pipeline.evaluate._datasets import classification_dataset
    from pipeline.workflow import WorkflowConfig

    ts = tmp_path / "models" / "openai.pt"
    ts.parent.mkdir()
    half = _torchscript_clip(ts)
    oc = tmp_path / "models" / "epoch_3.pt"   # open_clip_train's checkpoint layout: DDP "module." prefix
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v.float() for k, v in half.state_dict().items()}}, oc)
    assert (detect_format(ts), detect_format(oc)) == ("openai", "open_clip")
    rows = [{"name": "openai", "path": str(ts)}, {"name": "open_clip_ep3", "path": str(oc)}]
    exp = _experiment_with_rows(tmp_path, rows)
    stats = write_imagefolder(tmp_path / "data" / "fm", [f"c{i}" for i in range(10)], per_class=1)
    # the workflow evaluates both files as rows and hands each rule its file as the checkpoint
    wf = WorkflowConfig(config_dir=tmp_path / "config")
    assert wf.eval_rows("rows") == ["pretrain", "finetune", "openai", "open_clip_ep3"]
    assert wf.checkpoint_file("rows", "openai") == str(ts)
    assert "results/rows/eval/open_clip_ep3/zeroshot/fm.json" in wf.eval_results("rows")
    # both read back to the same weights (fp16 -> fp32), and their image features equal the model's own
    a, b = load_file(ts, "openai", OPENAI_STYLE), load_file(oc, "open_clip", OPENAI_STYLE)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    dataset, _ = classification_dataset(stats, 16)
    feats, _ = image_features(a, dataset, 4, 0, features="embedding")
    ref, _ = image_features(half.float(), dataset, 4, 0, features="embedding")
    assert torch.allclose(feats, ref, atol=1e-5)
    for row, path in (("openai", ts), ("open_clip_ep3", oc)):
        out = tmp_path / "results" / f"{row}.json"
        assert main(eval_argv("zeroshot", exp, "fm", checkpoint=path, inputs={"test": stats},
                              outputs={"result": out})) == 0
        record = json.loads(out.read_text())
        assert (record["checkpoint"], record["model"]) == (row, "rows")


def test_row_names_say_where_they_come_from(tmp_path):
    from pipeline.config import ConfigError, load_experiment

    exp = _experiment_with_rows(tmp_path, [{"name": "midtrain", "path": "x.pt"}])
    with pytest.raises(ConfigError, match="evaluate.checkpoints.0.name"):
        load_experiment(exp, tmp_path / "config")


def test_imagenet_style_wnid_folders(tmp_path):
    """The imagefolder reader links ImageNet's train/<wnid>/ tree as it is: labels from the wnid's position."""
    from PIL import Image

    from pipeline.data.readers import get_reader
    from pipeline.config import load_dataset
    from pipeline.evaluate._datasets import classification_dataset

    for wnid in ("n01440764", "n01443537", "n15075141"):
        (tmp_path / "train" / wnid).mkdir(parents=True)
        Image.new("RGB", (20, 20)).save(tmp_path / "train" / wnid / f"{wnid}_1.JPEG")
    (tmp_path / "datasets").mkdir()
    shipped = yaml.safe_load(open("config/datasets/imagenet1k_train.yaml"))
    assert shipped["sources"] == ["data/sources/imagenet/train"] and shipped["classnames"] == "imagenet1k"
    (tmp_path / "datasets" / "inet.yaml").write_text(yaml.safe_dump({**shipped, "sources": [str(tmp_path / "train")]}))
    ds = load_dataset("inet", tmp_path)
    result = get_reader("imagefolder", "classification").fn(dataset=ds, data_dir=tmp_path / "d", base_dir=tmp_path)
    stats = {"dataset": "inet", "kind": "classification", "format": "imagefolder", "root": "images", **result}
    (tmp_path / "d" / "stats.json").write_text(json.dumps(stats))
    dataset, classes = classification_dataset(tmp_path / "d" / "stats.json", 16)
    assert classes == ["n01440764", "n01443537", "n15075141"] and sorted(dataset.targets) == [0, 1, 2]
