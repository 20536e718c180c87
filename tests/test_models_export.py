"""open_clip form of a final checkpoint: open_clip itself loads it and embeds exactly as we do."""
from __future__ import annotations

import open_clip
import torch

from _train_fixtures import TINY_MODEL
from pipeline.models import create_model, load_model
from pipeline.models.export import export_checkpoint
from pipeline.utils.io import torch_save


def test_open_clip_loads_the_export_with_equal_embeddings(tmp_path):
    torch.manual_seed(0)
    model = create_model(TINY_MODEL)
    torch_save({"model": model.state_dict(), "model_config": TINY_MODEL, "experiment": {"name": "tiny"},
                "stage": "finetune", "step": 1, "samples_seen": 8}, tmp_path / "final.pt")
    weights = export_checkpoint(tmp_path / "final.pt", tmp_path / "open_clip")
    ours = load_model(tmp_path / "final.pt").model
    by_dir, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'open_clip'}")
    open_clip.add_model_config(tmp_path / "open_clip" / "clipforge-tiny-finetune.json")
    by_name, _, _ = open_clip.create_model_and_transforms("clipforge-tiny-finetune", pretrained=str(weights))
    images, texts = torch.randn(3, 3, 16, 16), torch.randint(1, 1000, (3, 12))
    with torch.no_grad():
        expected = (ours.encode_image(images), ours.encode_text(texts))
        for other in (by_dir.eval(), by_name.eval()):
            assert torch.equal(other.encode_image(images), expected[0])
            assert torch.equal(other.encode_text(texts), expected[1])
    assert preprocess.transforms[0].size == 16  # preprocess_cfg carries the image size
