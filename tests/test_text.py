"""Text token reduction: exact length, SOT/EOT kept, order kept, strategy-specific selection, offline syntax mask."""
import pickle
import socket

import open_clip
import pytest
import torch

from pipeline.errors import UserError
from pipeline.reduction.text import STRATEGIES, build_text_transform
from pipeline.reduction.text import block_ids, priority_ids, random_ids
from pipeline.reduction.syntax import load_tagger, syntax_ids, tag_priority, word_priorities, words_of

SOT, EOT = 49406, 49407
LONG = "a photo of a very big red dog running quickly on the wet street of an old city at night"
_TOK = open_clip.get_tokenizer("ViT-B-32")
_ENC = _TOK.encode


def _body(row: torch.Tensor) -> list[int]:
    """Tokens between SOT and EOT."""
    row = row.tolist()
    assert row[0] == SOT
    end = row.index(EOT)
    assert all(t == 0 for t in row[end + 1:])
    return row[1:end]


def _is_subsequence(small: list[int], big: list[int]) -> bool:
    it = iter(big)
    return all(t in it for t in small)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("length", [3, 8, 77])
def test_shape_and_special_tokens(strategy, length):
    out = build_text_transform(strategy, length)([LONG, "dog", ""])
    assert out.dtype == torch.long and out.shape == (3, length)
    full = _ENC(LONG)
    body = _body(out[0])
    assert len(body) == min(length - 2, len(full))
    assert _is_subsequence(body, full)  # order kept, only the caption's own tokens
    assert _body(out[1]) == _ENC("dog")
    assert _body(out[2]) == []


def test_truncate_matches_open_clip():
    texts = [LONG, "a dog", "x " * 100]
    for length in (5, 16, 77):
        assert torch.equal(build_text_transform("truncate", length)(texts), open_clip.tokenize(texts, length))


def test_random_is_order_kept_subset_and_seeded():
    ids = list(range(100, 130))
    torch.manual_seed(3)
    a = random_ids(ids, 6)
    torch.manual_seed(3)
    assert random_ids(ids, 6) == a  # global RNG: resumable
    assert a == sorted(a) and len(set(a)) == 6 and set(a) <= set(ids)
    seen = {tuple(random_ids(ids, 6)) for _ in range(20)}
    assert len(seen) > 15  # actually random, not a fixed pattern
    assert {i for s in seen for i in s} - set(ids[:6])  # not truncation


def test_block_is_contiguous_span_with_random_start():
    ids = list(range(200, 220))
    torch.manual_seed(0)
    starts = set()
    for _ in range(60):
        span = block_ids(ids, 5)
        start = ids.index(span[0])
        assert span == ids[start:start + 5]
        starts.add(start)
    assert starts == set(range(16))  # every start 0..15 appears with 60 draws


def test_priority_ties_by_position_and_order_kept():
    ids = [10, 11, 12, 13, 14, 15]
    prio = [3, 0, 1, 0, 2, 1]
    assert priority_ids(ids, prio, 3) == [11, 12, 13]  # nouns 11, 13 then first adjective 12, in caption order
    assert priority_ids(ids, prio, 4) == [11, 12, 13, 15]
    assert priority_ids(ids, prio, 10) == ids


def test_tag_priority():
    assert [tag_priority(t) for t in ("NN", "NNS", "NNP", "JJ", "JJR", "VBZ", "VB", "DT", "IN", ".")] == \
        [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]


def test_syntax_keeps_nouns_then_adjectives_then_verbs():
    text = "The happy man rides a red bike."
    words = dict(word_priorities(text))
    assert (words["man"], words["bike"], words["happy"], words["red"], words["rides"], words["The"]) == \
        (0, 0, 1, 1, 2, 3)
    expected = {2: "man bike", 3: "happy man bike", 4: "happy man red bike", 5: "happy man rides red bike"}
    for keep, kept in expected.items():
        assert _body(build_text_transform("syntax", 2 + keep)([text])[0]) == _ENC(kept)


def test_syntax_is_exact_at_bpe_level():
    # words split into several BPE pieces still give exactly context_length tokens
    text = "An extraordinarily photogenic hippopotamus sunbathing beside unbelievably turquoise lagoons"
    out = build_text_transform("syntax", 6)([text])[0]
    body = _body(out)
    assert len(body) == 4 and _is_subsequence(body, _ENC(text))
    assert syntax_ids("", _TOK, 4) == []


def test_syntax_works_offline_and_caches_tagger(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert load_tagger() is load_tagger()
    out = build_text_transform("syntax", 8)(["a small cat sleeps on a soft blanket", LONG])
    assert out.shape == (2, 8)


def test_syntax_fallback_tagger_tags_penn(monkeypatch):
    from pipeline.reduction import syntax
    weights, tagdict, classes = syntax._read_aptagger_model()
    assert "NN" in classes and "JJ" in classes and len(weights) > 1000


def test_transform_pickles_for_workers():
    fn = pickle.loads(pickle.dumps(build_text_transform("syntax", 8)))
    assert fn(["red car"]).shape == (1, 8)


@pytest.mark.parametrize("strategy,length", [("shuffle", 8), ("truncate", 2), ("random", 0)])
def test_bad_settings_are_user_errors(strategy, length):
    with pytest.raises(UserError):
        build_text_transform(strategy, length)


def test_nltk_data_tagger_preferred_when_installed(tmp_path, monkeypatch):
    """With averaged_perceptron_tagger_eng under an NLTK data path, that model is used (here: a marked copy)."""
    import json

    import nltk

    from pipeline.reduction import syntax
    weights, tagdict, classes = syntax._read_aptagger_model()
    folder = tmp_path / "taggers" / "averaged_perceptron_tagger_eng"
    folder.mkdir(parents=True)
    stem = "averaged_perceptron_tagger_eng"
    (folder / f"{stem}.weights.json").write_text(json.dumps(weights))
    (folder / f"{stem}.tagdict.json").write_text(json.dumps({**tagdict, "zzqx": "JJ"}))
    (folder / f"{stem}.classes.json").write_text(json.dumps(sorted(classes)))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)] + list(nltk.data.path))
    syntax.load_tagger.cache_clear()
    try:
        assert syntax.load_tagger().tagger.tagdict.get("zzqx") == "JJ"
    finally:
        syntax.load_tagger.cache_clear()
        monkeypatch.undo()
    assert "zzqx" not in syntax.load_tagger().tagger.tagdict  # fallback model again without that path


CAPTIONS = [
    "Vintage 1960s red convertible car parked on a cobblestone street in Rome",
    "It isn't the dog's toy, it's a slim-fit U.S. shirt!",
    "Two children are building a sandcastle while their parents watch from the shore.",
    "Men's cotton t-shirt, navy blue, size M (2 pack) for $19.99",
    "crowd of fans cheering at an outdoor rock concert at night",
]


def test_fast_tagger_equals_nltk_tagger():
    tagger = load_tagger()
    for caption in CAPTIONS:
        words = words_of(caption)
        assert tagger.tag(words) == [tag for _, tag in tagger.tagger.tag(words)]


def test_words_and_unreduced_ids_match_open_clip():
    assert words_of("It isn't the dog's toy, 1960s slim-fit!") == \
        ["It", "is", "n't", "the", "dog", "'s", "toy", ",", "1960s", "slim-fit", "!"]
    for caption in CAPTIONS + [LONG, "Caf\u00e9 &amp; cr\u00e8me br\u00fbl\u00e9e"]:
        assert syntax_ids(caption, _TOK, 1000) == _ENC(caption)  # unreduced: exactly open_clip's ids


def test_short_captions_are_not_reduced():
    assert _body(build_text_transform("syntax", 16)(["a tiny red car"])[0]) == _ENC("a tiny red car")


def test_pretoken_takes_priority_of_overlapping_word():
    # open_clip cuts "isn't" into isn + 't; the tagger sees is (VBZ) + n't (RB): isn is a verb piece, 't is not
    assert _body(build_text_transform("syntax", 2 + 3)(["The dog isn't happy."])[0]) == _ENC("dog isn happy")
