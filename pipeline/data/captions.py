"""Training captions for the Fashion-MNIST demo: several phrasings and class-name synonyms per image.

The phrasings here are deliberately unlike the zero-shot prompt templates in pipeline/evaluate/assets
(no "a photo of a {}." family), so the demo's zero-shot accuracy is not inflated by the model having seen the
exact evaluation prompts; the evaluation tests import CAPTION_PHRASINGS to check the two lists differ.
"""
from __future__ import annotations

import random

# Label order of Fashion-MNIST (label i -> CLASSNAMES[i]).
CLASSNAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# Words a caption may use for each class (all singular, so every phrasing reads correctly).
CLASS_SYNONYMS = (
    ("t-shirt", "top", "tee", "short-sleeved top"),
    ("trouser", "pair of trousers", "pair of pants", "pair of slacks"),
    ("pullover", "sweater", "jumper", "knitted pullover"),
    ("dress", "summer dress", "frock"),
    ("coat", "jacket", "winter coat", "overcoat"),
    ("sandal", "open sandal", "strappy sandal"),
    ("shirt", "button-up shirt", "collared shirt", "blouse"),
    ("sneaker", "trainer", "sports shoe", "running shoe"),
    ("bag", "handbag", "tote bag", "purse"),
    ("ankle boot", "short boot", "bootie"),
)

# {c} = a class synonym. Module-level so the zero-shot template tests can check there is no overlap.
CAPTION_PHRASINGS = (
    "{c} product shot",
    "someone's {c} on a white background",
    "catalogue image: {c}",
    "{c}, grayscale, front view",
    "tiny thumbnail of the {c} for an online shop",
    "new arrival in the store: {c}",
    "my {c} in black and white",
    "the {c} laid flat and photographed from above",
    "{c} for sale, low resolution picture",
    "black and white shot of this season's {c}",
)

CAPTION_SEED = 20170825  # Fashion-MNIST's release date; any fixed value keeps captions reproducible


def caption_for(label: int, index: int, seed: int = CAPTION_SEED) -> str:
    """Caption of image `index` with class `label`: phrasing and synonym drawn by an RNG seeded per image."""
    rng = random.Random(seed * 1_000_003 + index)
    phrasing = rng.choice(CAPTION_PHRASINGS)
    return phrasing.format(c=rng.choice(CLASS_SYNONYMS[int(label)]))
