"""Syntax mask (CLIPA): keep nouns first, then adjectives, then verbs, then everything else.

Works offline. The part-of-speech model is NLTK's averaged_perceptron_tagger_eng when NLTK data is
installed (NLTK_DATA); otherwise the same kind of averaged-perceptron Penn-tag model shipped inside
the PyPI package textblob-aptagger. Words come from NLTK's Treebank word tokenizer, which needs no
punkt data. Each word's BPE pieces inherit the word's priority, so the selection is exact at the
BPE level (open_clip's own version selects words, then truncates, and downloads NLTK data).
"""
from __future__ import annotations

import functools
import pickle
import importlib.util
from pathlib import Path
from typing import Callable

from ..errors import UserError
from .reduction import priority_ids

APTAGGER_PICKLE = "trontagger-0.1.0.pickle"


def tag_priority(tag: str) -> int:
    """Lower is kept first: nouns 0, adjectives 1, verbs 2, rest 3 (Penn Treebank tags)."""
    for rank, prefix in enumerate(("NN", "JJ", "VB")):
        if tag.startswith(prefix):
            return rank
    return 3


@functools.lru_cache(maxsize=None)
def load_tagger():
    """The POS tagger, loaded once per process (DataLoader workers load or inherit their own)."""
    from nltk.tag.perceptron import PerceptronTagger
    try:
        return PerceptronTagger()  # NLTK data (averaged_perceptron_tagger_eng) when present
    except LookupError:
        pass
    try:
        weights, tagdict, classes = _read_aptagger_model()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise UserError("text strategy syntax: no POS tagger (install NLTK data averaged_perceptron_tagger_eng "
                        f"under NLTK_DATA, or the PyPI package textblob-aptagger): {exc}") from None
    tagger = PerceptronTagger(load=False)
    tagger.decode_json_params((weights, tagdict, sorted(classes)))
    return tagger


def _read_aptagger_model() -> tuple[dict, dict, set]:
    """The pickle inside textblob-aptagger, located without importing the package (its __init__ needs textblob)."""
    spec = importlib.util.find_spec("textblob_aptagger")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("textblob_aptagger is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / APTAGGER_PICKLE
    with path.open("rb") as f:  # trusted file from an installed package; latin1 reads its Python 2 strings
        return pickle.load(f, encoding="latin1")


@functools.lru_cache(maxsize=None)
def _word_tokenizer():
    from nltk.tokenize import NLTKWordTokenizer
    return NLTKWordTokenizer()


def word_priorities(text: str) -> list[tuple[str, int]]:
    """(word as written in the caption, priority) for each Treebank word of the caption."""
    spans = list(_word_tokenizer().span_tokenize(text))
    words = [text[a:b] for a, b in spans]
    if not words:
        return []
    treebank = _word_tokenizer().tokenize(text)
    if len(treebank) != len(words):  # defensive: tag the raw substrings instead
        treebank = words
    return [(w, tag_priority(tag)) for w, (_, tag) in zip(words, load_tagger().tag(treebank))]


def syntax_ids(text: str, encode: Callable[[str], list[int]], keep: int) -> list[int]:
    """BPE ids of the caption reduced to `keep` by part-of-speech priority; ties -> earlier; order kept."""
    ids: list[int] = []
    priorities: list[int] = []
    for word, priority in word_priorities(text):
        pieces = encode(word)
        ids.extend(pieces)
        priorities.extend([priority] * len(pieces))
    return priority_ids(ids, priorities, keep)
