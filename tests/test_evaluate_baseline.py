"""The fine-tuning post's ResNet-50 baseline: torchvision's IMAGENET1K_V2 file recognised, its own preprocessing."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from pipeline.evaluate.supervised_baseline import preprocessing, resnet50_classifier, torchvision_weights


def test_weights_file_is_recognised_by_its_hash(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(resnet50_classifier(num_classes=1000, weights=None, seed=0).state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    v2 = SimpleNamespace(name="IMAGENET1K_V2", url=f"https://download.pytorch.org/models/resnet50-{digest[:8]}.pth")
    v1 = SimpleNamespace(name="IMAGENET1K_V1", url="https://download.pytorch.org/models/resnet50-0676ba61.pth")
    assert torchvision_weights(path, [v1, v2]) is v2
    assert torchvision_weights(path) is None          # not one of torchvision's files
    # the new head is sized for the task, its weight xavier-initialised (the post's code), the backbone the file's
    model = resnet50_classifier(num_classes=9, weights=str(path), seed=1)
    bound = (6 / (2048 + 9)) ** 0.5
    assert model.fc.out_features == 9 and model.fc.weight.abs().max() <= bound and model.fc.bias.abs().max() > 0
    assert torch.equal(model.layer1[0].conv1.weight, torch.load(path, weights_only=True)["layer1.0.conv1.weight"])


def test_preprocessing_is_the_weights_own():
    from torchvision.models import ResNet50_Weights

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    ours, theirs = preprocessing(ResNet50_Weights.IMAGENET1K_V2, 224), ResNet50_Weights.IMAGENET1K_V2.transforms()
    assert torch.equal(ours(image), theirs(image))       # resize 232 (bilinear, antialias), crop 224, ImageNet mean/std
    assert (ours.resize_size, ours.crop_size) == ([232], [224])
    assert preprocessing(None, 224).resize_size == [232]   # random init: V2's preprocessing, as the post used
    v1 = preprocessing(ResNet50_Weights.IMAGENET1K_V1, 112)
    assert (v1.resize_size, v1.crop_size) == ([128], [112])  # 256/224 scaled
