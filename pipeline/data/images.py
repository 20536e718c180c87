"""open_clip's train transform, computed at less cost, with the same distribution.

The reference is open_clip's image_transform(is_train=True) (pipeline.data.loader.train_transform):
RandomResizedCrop (bicubic, antialiased) -> RGB -> [colour jitter] -> [grayscale] -> ToTensor -> Normalize.
What changes here, and why it keeps the distribution:
- The crop box comes from torchvision's own RandomResizedCrop.get_params on the lazily opened file (its size
  is known before decoding): the same RNG calls in the same order, so the same box for the same seed.
- JPEG draft (DCT-domain) decoding at 1/2, 1/4 or 1/8 scale, only where the box at that scale still covers
  the output size in both directions (checked per sample), so the resize stays a downscale. Entropy decoding
  is not saved, but the inverse DCT, chroma upsampling and colour conversion shrink with the area.
- Other JPEGs decode with torchvision's decode_jpeg (libjpeg-turbo straight into a tensor, no PIL buffer
  and its copy out). The resize is torch's uint8 antialiased bicubic kernel (Pillow's filter, vectorised;
  within a few grey levels of Pillow's own), written into the batch's uint8 buffer. The optional horizontal flip
  is a tensor flip drawn as RandomHorizontalFlip draws it; colour jitter and grayscale are open_clip's own objects,
  on the output-size image, after the crop as in the reference.
- The batch travels as uint8 (made in shared memory inside a DataLoader worker, so sending it copies
  nothing); ToTensor + Normalize run once per batch on the training device, as the loader hands it over.
tests/test_data_images.py checks the boxes are drawn identically and the output is the reference's within
interpolation error.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import get_worker_info
from torchvision import transforms
from torchvision.io import ImageReadMode

try:  # deprecated since torchvision 0.29 in favour of torchcodec; without it the PIL path decodes all images
    from torchvision.io import decode_jpeg
except ImportError:  # pragma: no cover - a torchvision that dropped it
    decode_jpeg = None
from torchvision.transforms import InterpolationMode


DRAFT_SCALES = (8, 4, 2)


def pixels_of(image: Image.Image) -> torch.Tensor:
    """uint8 [h, w, 3] of an RGB PIL image, over Pillow's read-only array export (only ever read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's "array is not writable"
        return torch.from_numpy(np.asarray(image))


def jpeg_pixels(data: bytes | memoryview) -> torch.Tensor:
    """uint8 [h, w, 3] view of a JPEG decoded by torchvision (libjpeg-turbo straight into a tensor: about 1.5x
    Pillow's decode + array export on photo-sized JPEGs, benchmarks/bench_loader.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 points to torchcodec; a read-only buffer is only read
        return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB).permute(1, 2, 0)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # start-of-frame markers


def jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, without decoding (or opening it in Pillow, ~10x
    dearer); None when `data` is not a JPEG or has no frame header before the scan."""
    view = memoryview(data)
    if len(view) < 4 or view[0] != 0xFF or view[1] != 0xD8:
        return None
    i = 2
    while i + 9 <= len(view):
        if view[i] != 0xFF:
            return None
        marker = view[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
        elif marker in _SOF:
            return (view[i + 5] << 8) | view[i + 6], (view[i + 7] << 8) | view[i + 8]
        elif marker == 0xDA:  # start of scan before any frame header
            return None
        else:
            i += 2 + ((view[i + 2] << 8) | view[i + 3])
    return None


def draft_scale(box_h: int, box_w: int, size: tuple[int, int]) -> int:
    """The largest JPEG DCT scale-down (8, 4, 2, else 1) at which the crop box still covers the output."""
    for d in DRAFT_SCALES:
        if box_h / d >= size[0] and box_w / d >= size[1]:
            return d
    return 1


class TrainImages:
    """Per sample: bytes -> the augmented uint8 [3, H, W] image in a batch buffer; per batch: normalise.

    Built from the reference Compose so that its settings (size, scale, ratio, jitter, grayscale, mean,
    std) are read from open_clip's object, not restated. `draft=False` decodes at full size (used when
    the method also makes views from the full image)."""

    def __init__(self, reference: transforms.Compose, *, draft: bool = True):
        steps = list(reference.transforms)
        crop, to_tensor, normalize = steps[0], steps[-2], steps[-1]
        if not (isinstance(crop, transforms.RandomResizedCrop) and isinstance(to_tensor, transforms.ToTensor)
                and isinstance(normalize, transforms.Normalize)
                and crop.interpolation == InterpolationMode.BICUBIC):
            raise TypeError(f"unexpected train transform layout: {reference}")
        self.size = tuple(crop.size)
        self.scale, self.ratio = crop.scale, crop.ratio
        middle = [t for t in steps[1:-2] if type(t).__name__ != "MaybeConvertMode"]
        self.flip_prob = 0.0  # a flip right after the crop runs on the tensor, with torchvision's own draw
        if middle and isinstance(middle[0], transforms.RandomHorizontalFlip):
            self.flip_prob = float(middle.pop(0).p)
        self.middle = middle
        mean = torch.tensor(normalize.mean, dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor(normalize.std, dtype=torch.float64).view(1, 3, 1, 1)
        self.norm_scale, self.norm_shift = (1 / (255 * std)).float(), (-mean / std).float()  # x/255 - mean, / std
        self.draft = draft
        self._on: tuple[torch.Tensor, torch.Tensor] | None = None  # scale, shift on the training device

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_on": None}  # workers get no device tensors

    @property
    def uses_python_random(self) -> bool:
        """open_clip's jitter / grayscale draw from python's random; the crop draws from torch only."""
        return bool(self.middle)

    def buffer(self, rows: int) -> torch.Tensor:
        """A uint8 batch [rows, 3, H, W] in channels-last layout, the layout the resize writes, so storing an
        image is a plain copy. Inside a DataLoader worker it is made in shared memory: sending it to the
        trainer then copies nothing. uint8 crosses to the trainer (a quarter of float's bytes); normalize
        makes the float batch there, on the training device."""
        out = torch.empty((rows, *self.size, 3), dtype=torch.uint8)
        if get_worker_info() is not None:
            out.share_memory_()
        return out.permute(0, 3, 1, 2)

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, box height, box width): the reference's own draw (torchvision's get_params), for an
        image of that size (a shape-only tensor stands in for the image)."""
        shape = torch.empty((3, height, width), device="meta")
        return transforms.RandomResizedCrop.get_params(shape, list(self.scale), list(self.ratio))

    def decode(self, data: bytes | memoryview, out: torch.Tensor, *, keep_full: bool = False) -> Image.Image | None:
        """Augment one encoded image into `out` (uint8 [3, H, W]); returns the full decoded RGB image when
        keep_full (then no draft). Raises on undecodable bytes (PIL and torchvision raise many types)."""
        size = jpeg_size(data) if decode_jpeg is not None and not keep_full else None
        image = None
        if size is None:
            image = Image.open(io.BytesIO(data))
            size = image.height, image.width
        top, left, h, w = self.crop_box(*size)
        d = draft_scale(h, w, self.size) if self.draft and not keep_full else 1
        pixels = None
        if image is None and d == 1:  # most JPEGs: libjpeg-turbo straight into a tensor
            try:
                pixels = jpeg_pixels(data)
            except RuntimeError:  # what torchvision cannot decode, Pillow may
                pass
        if pixels is None:
            image = image or Image.open(io.BytesIO(data))
            if d > 1 and image.format == "JPEG":
                small = self.drafted(image, d, (top, left, h, w))
                if small is not None:
                    out.copy_(self.finish(small))
                    return None
            image = image if image.mode == "RGB" else image.convert("RGB")
            pixels = pixels_of(image)
        region = pixels[top:top + h, left:left + w].permute(2, 0, 1)[None]
        region = region.contiguous(memory_format=torch.channels_last)  # torch's fast uint8 path
        resized = F.interpolate(region, size=self.size, mode="bicubic", antialias=True, align_corners=False)[0]
        out.copy_(self.finish(resized))
        return image if keep_full else None

    def drafted(self, image: Image.Image, d: int, box: tuple[int, int, int, int]) -> torch.Tensor | None:
        """The crop at output size from a JPEG decoded at 1/d scale; None when the draft does not apply."""
        width = image.width
        drafted = image.draft(image.mode, (width // d, image.height // d))
        d = round(width / drafted[1][2]) if drafted else 1  # draft's box is (0, 0, width / scale, height / scale)
        if d == 1:
            return None
        top, left, h, w = box  # the box falls between drafted pixels: Pillow resizes from a fractional box
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        small = rgb.resize(self.size[::-1], Image.BICUBIC, box=(left / d, top / d, (left + w) / d, (top + h) / d))
        return pixels_of(small).permute(2, 0, 1)

    def finish(self, resized: torch.Tensor) -> torch.Tensor:
        """The flip (if any; RandomHorizontalFlip's draw, torch.rand(1) < p), then open_clip's jitter /
        grayscale objects (if any), on the output-size image."""
        if self.flip_prob and torch.rand(1) < self.flip_prob:
            resized = resized.flip(-1)
        if not self.middle:
            return resized
        small = Image.fromarray(resized.permute(1, 2, 0).numpy())
        for step in self.middle:
            small = step(small)
        return pixels_of(small.convert("RGB")).permute(2, 0, 1)

    def normalize(self, batch: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 [B, 3, H, W] -> contiguous float on `device`, (x / 255 - mean) / std as ToTensor + Normalize."""
        batch = batch.to(device, non_blocking=True)
        if self._on is None or self._on[0].device != batch.device:  # once per device, not per batch
            self._on = (self.norm_scale.to(batch.device), self.norm_shift.to(batch.device))
        out = torch.empty(batch.shape, dtype=torch.float32, device=batch.device).copy_(batch)
        return out.mul_(self._on[0]).add_(self._on[1])
