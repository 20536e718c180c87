"""reader torchvision: Debian's Fashion-MNIST test set through torchvision.datasets.FashionMNIST, no download."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from pipeline.__main__ import main

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not (DEBIAN / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason="Debian package dataset-fashion-mnist not installed")


@pytest.fixture(scope="module")
def fm_root(tmp_path_factory) -> Path:
    """root/FashionMNIST/raw as torchvision expects: the test files unpacked, the train files linked.

    torchvision only checks that the train files exist when the test split is read, so links suffice there.
    """
    root = tmp_path_factory.mktemp("tv")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(DEBIAN / f"{name}.gz") as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).symlink_to(DEBIAN / f"{name}.gz")
    return root


def _config(config_dir: Path, name: str, body: str) -> None:
    (config_dir / "datasets").mkdir(parents=True, exist_ok=True)
    (config_dir / "datasets" / f"{name}.yaml").write_text(body)


def test_fashion_mnist_test_split_exported_and_zero_shot(tmp_path, fm_root):
    import torchvision

    _config(tmp_path / "config", "fm_tv", f"kind: classification\nreader: torchvision\ndataset_class: FashionMNIST\n"
            f"sources: [{fm_root}]\nsplit: test\nsubset: 300\nclassnames: fashion_mnist\ntemplates: fashion_mnist\n")
    stats_path = tmp_path / "data" / "fm_tv" / "stats.json"
    assert main(["data", "--dataset", "fm_tv", "--out", str(stats_path), "--config-dir", str(tmp_path / "config")]) == 0
    stats = json.loads(stats_path.read_text())
    assert stats["samples"] == 300 and stats["classes"][0] == "T-shirt/top" and len(stats["classes"]) == 10
    targets = torchvision.datasets.FashionMNIST(str(fm_root), train=False).targets[:300]
    for label in range(10):
        files = list((stats_path.parent / "images" / f"{label:03d}").glob("*.png"))
        assert len(files) == int((targets == label).sum())
    from _eval_fixtures import save_tiny_checkpoint

    ckpt = save_tiny_checkpoint(tmp_path / "ck" / "final.pt")
    out = tmp_path / "r.json"
    assert main(["zeroshot", "--checkpoint", str(ckpt), "--dataset", "fm_tv", "--data", str(stats_path),
                 "--out", str(out), "--config-dir", str(tmp_path / "config")]) == 0
    assert json.loads(out.read_text())["metrics"]["acc1"] >= 0


def test_classnames_from_data(tmp_path, fm_root):
    _config(tmp_path / "config", "fm_own", f"kind: classification\nreader: torchvision\ndataset_class: FashionMNIST\n"
            f"sources: [{fm_root}]\nsplit: test\nsubset: 20\nclassnames: from_data\ntemplates: fashion_mnist\n")
    stats_path = tmp_path / "data" / "fm_own" / "stats.json"
    assert main(["data", "--dataset", "fm_own", "--out", str(stats_path), "--config-dir", str(tmp_path / "config")]) == 0
    assert json.loads(stats_path.read_text())["classes"][:2] == ["T-shirt/top", "Trouser"]  # torchvision's names
    from _eval_fixtures import save_tiny_checkpoint

    ckpt = save_tiny_checkpoint(tmp_path / "ck" / "final.pt")
    assert main(["zeroshot", "--checkpoint", str(ckpt), "--dataset", "fm_own", "--data", str(stats_path),
                 "--out", str(tmp_path / "r.json"), "--config-dir", str(tmp_path / "config")]) == 0


@pytest.mark.parametrize("body, message", [
    ("dataset_class: FashionMNIST\nsources: [{missing}]\n", "file not found"),
    ("dataset_class: FashionMNIST\nsources: [{empty}]\n", "FashionMNIST files not found or incomplete"),
    ("dataset_class: FashionMNIST\nsources: [{root}]\nsplit: val\n", "has no val split"),
    ("dataset_class: ImageNet\nsources: [{root}]\n", "'ImageNet' is not supported"),
    ("sources: [{root}]\n", "dataset_class: required"),
])
def test_bad_torchvision_configs(tmp_path, fm_root, capsys, body, message):
    (tmp_path / "empty").mkdir()
    body = body.format(missing=tmp_path / "nope", empty=tmp_path / "empty", root=fm_root)
    _config(tmp_path / "config", "bad", "kind: classification\nreader: torchvision\nclassnames: fashion_mnist\n" + body)
    assert main(["data", "--dataset", "bad", "--out", str(tmp_path / "d" / "stats.json"),
                 "--config-dir", str(tmp_path / "config")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d" / "stats.json").exists()
