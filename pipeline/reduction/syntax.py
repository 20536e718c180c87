"""Syntax mask (CLIPA): keep nouns first, then adjectives, then verbs, then everything else.

Works offline. The part-of-speech model is NLTK's averaged_perceptron_tagger_eng when NLTK data is
installed (NLTK_DATA); otherwise the same kind of averaged-perceptron Penn-tag model shipped inside
the PyPI package textblob-aptagger. Words come from a Treebank-like regex (no punkt data needed).
Each BPE token inherits the priority of its word, so the selection is exact at the BPE level
(open_clip's own version selects words, then truncates, and downloads NLTK data at call time).
"""
from __future__ import annotations

import functools
import importlib.util
import pickle
import re
from pathlib import Path

import numpy as np

from ..errors import UserError
from .text import priority_ids

APTAGGER_PICKLE = "trontagger-0.1.0.pickle"
# Treebank-like words: "isn't" -> is n't, "dog's" -> dog 's, "slim-fit" and "1960s" stay whole, punctuation alone.
WORD_RE = re.compile(r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+(?:[-.]\w+)*|[^\w\s]", re.IGNORECASE)


def tag_priority(tag: str) -> int:
    """Lower is kept first: nouns 0, adjectives 1, verbs 2, rest 3 (Penn Treebank tags)."""
    for rank, prefix in enumerate(("NN", "JJ", "VB")):
        if tag.startswith(prefix):
            return rank
    return 3


class FastTagger:
    """NLTK's averaged-perceptron tagging with the weight dot-product vectorised (about 10x faster).

    Features, tag dictionary and greedy left-to-right decoding are NLTK's own (`_get_features`, `normalize`,
    `tagdict`); only `AveragedPerceptron.predict`'s Python loop over labels becomes a sum of numpy rows, with
    the same tie-break (highest score, then the alphabetically last label). Tags equal `tagger.tag(words)`.
    """

    def __init__(self, tagger):
        self.tagger = tagger
        self.classes = sorted(tagger.classes, reverse=True)  # argmax takes the first max = last label
        column = {label: j for j, label in enumerate(self.classes)}
        self.row = {feature: i for i, feature in enumerate(tagger.model.weights)}
        self.matrix = np.zeros((len(self.row), len(self.classes)))
        for feature, weights in tagger.model.weights.items():
            for label, weight in weights.items():
                self.matrix[self.row[feature], column[label]] = weight

    def _predict(self, features: dict) -> str:
        found = [(self.row.get(f), v) for f, v in features.items() if v]
        rows = [r for r, _ in found if r is not None]
        values = np.array([v for r, v in found if r is not None], dtype=float)
        scores = values @ self.matrix[rows]  # NLTK adds value * weight per feature in the same order
        return self.classes[int(scores.argmax())]

    def tag(self, words: list[str]) -> list[str]:
        t = self.tagger
        prev, prev2 = t.START
        context = t.START + [t.normalize(w) for w in words] + t.END
        tags = []
        for i, word in enumerate(words):
            tag = t.tagdict.get(word) or self._predict(t._get_features(i, word, context, prev, prev2))
            tags.append(tag)
            prev2, prev = prev, tag
        return tags


@functools.lru_cache(maxsize=None)
def load_tagger() -> FastTagger:
    """The POS tagger, loaded once per process (DataLoader workers load or inherit their own)."""
    from nltk.tag.perceptron import PerceptronTagger
    try:
        return FastTagger(PerceptronTagger())  # NLTK data (averaged_perceptron_tagger_eng) when present
    except LookupError:
        pass
    try:
        weights, tagdict, classes = _read_aptagger_model()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise UserError("text strategy syntax: no POS tagger (install NLTK data averaged_perceptron_tagger_eng "
                        f"under NLTK_DATA, or the PyPI package textblob-aptagger): {exc}") from None
    tagger = PerceptronTagger(load=False)
    tagger.decode_json_params((weights, tagdict, sorted(classes)))
    return FastTagger(tagger)


def _read_aptagger_model() -> tuple[dict, dict, set]:
    """The pickle inside textblob-aptagger, located without importing the package (its __init__ needs textblob)."""
    spec = importlib.util.find_spec("textblob_aptagger")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("textblob_aptagger is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / APTAGGER_PICKLE
    with path.open("rb") as f:  # trusted file from an installed package; latin1 reads its Python 2 strings
        return pickle.load(f, encoding="latin1")


def words_of(text: str) -> list[str]:
    return WORD_RE.findall(text)


def word_priorities(text: str) -> list[tuple[str, int]]:
    """(word as written in the caption, priority) for each word of the caption."""
    words = words_of(text)
    if not words:
        return []
    return [(w, tag_priority(tag)) for w, tag in zip(words, load_tagger().tag(words))]


def _bpe(tokenizer, pretoken: str) -> list[int]:
    """open_clip BPE ids of one pre-token (a match of tokenizer.pat in cleaned, lower-cased text)."""
    chars = "".join(tokenizer.byte_encoder[b] for b in pretoken.encode("utf-8"))
    return [tokenizer.encoder[t] for t in tokenizer.bpe(chars).split(" ")]


def _char_priorities(text: str) -> bytearray:
    """Priority of every character of the caption: its word's tag priority, 3 outside words."""
    matches = list(WORD_RE.finditer(text))
    out = bytearray([3]) * len(text)
    for match, tag in zip(matches, load_tagger().tag([m.group() for m in matches])):
        out[match.start():match.end()] = bytes([tag_priority(tag)]) * (match.end() - match.start())
    return out


def syntax_ids(text: str, tokenizer, keep: int) -> list[int]:
    """BPE ids of the caption reduced to `keep` by part-of-speech priority; ties -> earlier; order kept.

    The caption is cleaned once as open_clip does (ftfy, HTML entities, whitespace) and cut into open_clip's
    pre-tokens, so an unreduced caption gives exactly SimpleTokenizer.encode's ids. Only a caption that is too
    long is tagged; a pre-token takes the best priority of the words it overlaps ("isn" of is/n't: the verb's).
    """
    from open_clip.tokenizer import basic_clean, whitespace_clean

    text = whitespace_clean(basic_clean(text))
    lowered = text.lower()  # as SimpleTokenizer.encode lower-cases: the same pre-tokens, the same ids
    spans = [(m.start(), m.end(), _bpe(tokenizer, m.group())) for m in tokenizer.pat.finditer(lowered)]
    if sum(len(ids) for _, _, ids in spans) <= keep:
        return [i for _, _, ids in spans for i in ids]
    # a few characters lower-case to two ('İ' -> 'i̇'): map each lowered offset to the caption character it came from
    origin = [i for i, c in enumerate(text) for _ in c.lower()]
    char_priority = _char_priorities(text)
    ids, priorities = [], []
    for start, end, piece in spans:
        ids.extend(piece)
        priorities.extend([min(char_priority[origin[start]:origin[end - 1] + 1])] * len(piece))
    return priority_ids(ids, priorities, keep)
