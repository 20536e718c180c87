"""pipeline.data.images: the cheaper train transform draws what open_clip's draws and matches its output
within interpolation error (the gap between bicubic and bilinear resizing of the same crop)."""
from __future__ import annotations

import copy
import io
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from _train_fixtures import augment
from pipeline.data.images import TrainImages, draft_scale, jpeg_size
from pipeline.data.loader import train_transform


@pytest.fixture(scope="module")
def photos():
    """JPEGs of 256-512 px cut from the photographs shipped with scikit-learn and matplotlib."""
    import matplotlib
    import sklearn
    from pathlib import Path

    sources = [Path(sklearn.__file__).parent / "datasets/images/china.jpg",
               Path(sklearn.__file__).parent / "datasets/images/flower.jpg",
               Path(matplotlib.__file__).parent / "mpl-data/sample_data/grace_hopper.jpg"]
    rng = np.random.default_rng(1)
    out = []
    for k in range(18):
        photo = Image.open(sources[k % 3]).convert("RGB")
        side = int(rng.integers(256, 513))
        image = photo.resize((side, int(side * photo.height / photo.width)), Image.BICUBIC)
        if k % 6 == 5:
            image = image.convert("L")  # a grayscale JPEG too
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
        out.append(buf.getvalue())
    return out


def run(transform, seed: int, *args):
    torch.manual_seed(seed)
    random.seed(seed)
    return transform(*args)


def ours(images: TrainImages, data: bytes, seed: int) -> torch.Tensor:
    buffer = images.buffer(1)
    run(images.decode, seed, data, buffer[0])
    return images.normalize(buffer)[0]


def test_crop_boxes_are_drawn_as_torchvision_draws_them(photos):
    reference = train_transform(image_size=96, augment=augment(scale=[0.4, 1.0]))
    images = TrainImages(reference)
    crop = reference.transforms[0]
    for seed, data in enumerate(photos):
        image = Image.open(io.BytesIO(data))
        assert jpeg_size(data) == (image.height, image.width)
        expected = run(transforms.RandomResizedCrop.get_params, seed, image, list(crop.scale), list(crop.ratio))
        assert run(images.crop_box, seed, image.height, image.width) == expected


@pytest.mark.parametrize("size, settings", [
    (96, {}),  # mostly drafted (1/2, 1/4 scale)
    (224, {}),  # mostly full-size decoding
    (64, {"scale": [0.4, 1.0], "color_jitter": [0.32, 0.32, 0.32, 0.08], "color_jitter_prob": 0.8,
          "gray_scale_prob": 0.2}),  # CLIPA's L/16 augmentation: same jitter and grayscale draws
    (64, {"hflip_prob": 0.5, "color_jitter": [0.32, 0.32, 0.32, 0.08], "color_jitter_prob": 0.8}),  # flip draws too
])
def test_output_is_the_references_within_interpolation_error(photos, size, settings):
    reference = train_transform(image_size=size, augment=augment(**settings))
    bilinear = copy.deepcopy(reference)
    bilinear.transforms[0].interpolation = InterpolationMode.BILINEAR
    images = TrainImages(reference)
    gaps, yardstick = [], []
    for seed, data in enumerate(photos):
        expected = run(reference, seed, Image.open(io.BytesIO(data)))
        gaps.append(float((ours(images, data, seed) - expected).abs().mean()))
        yardstick.append(float((run(bilinear, seed, Image.open(io.BytesIO(data))) - expected).abs().mean()))
    assert np.mean(gaps) < np.mean(yardstick), (gaps, yardstick)
    assert max(gaps) < 3 * max(yardstick)


def test_draft_only_where_the_crop_still_covers_the_output(photos, monkeypatch):
    assert draft_scale(400, 300, (96, 96)) == 2  # 300 / 4 = 75 < 96
    assert draft_scale(800, 770, (96, 96)) == 8 and draft_scale(767, 770, (96, 96)) == 4
    assert draft_scale(200, 200, (112, 112)) == 1
    assert draft_scale(400, 200, (96, 48)) == 4  # per direction: 400/4 >= 96, 200/4 >= 48
    used = []
    draft = Image.Image.draft

    def spy(self, mode, size):
        used.append((self.size, size))
        return draft(self, mode, size)

    monkeypatch.setattr("PIL.JpegImagePlugin.JpegImageFile.draft", spy)
    images = TrainImages(train_transform(image_size=96, augment=augment()))
    for seed, data in enumerate(photos):
        ours(images, data, seed)
    assert used and all(asked[0] <= full[0] // 2 for full, asked in used)  # decoded at 1/2 scale or less
    used.clear()
    images = TrainImages(train_transform(image_size=224, augment=augment()), draft=False)
    for seed, data in enumerate(photos):
        ours(images, data, seed)
    assert not used


def test_undecodable_bytes_raise(photos):
    images = TrainImages(train_transform(image_size=32, augment=augment()))
    buffer = images.buffer(1)
    for bad in (b"not an image", photos[0][:200]):
        with pytest.raises(Exception):
            images.decode(bad, buffer[0])
