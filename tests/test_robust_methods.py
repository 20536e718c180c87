"""Loss terms and methods against independent re-computations on random, non-square data (mutation testing,
docs/robustness.md): the hand-computed cases of test_methods.py use 2 x 2 identities, where a normalisation over
the wrong axis, a temperature that multiplies or a dropped term gives the same number."""
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import UserError
from pipeline.methods import create_method
from pipeline.methods._losses import (cap_scale, clip_loss, late_interaction, mlm_corrupt, mlm_loss, nt_xent,
                                      simsiam_loss, wide)
from pipeline.methods._towers import encode_image_parts, encode_text_parts
from pipeline.models import create_model
from test_methods import SMALL_HEADS, TINY, make_batch, tiny_model


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def ref_clip(image, text, scale):
    """Symmetric InfoNCE of already-normalised rows, written out."""
    logits = scale * image @ text.T
    labels = torch.arange(image.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def ref_late(query, keys):
    """[Bq, Bk]: mean over the query's tokens of the best key token, by loops."""
    return torch.stack([torch.stack([(q @ k.T).max(dim=1).values.mean() for k in keys]) for q in query])


def ref_topk(tokens, score, k):
    return torch.stack([t[s.topk(k).indices] for t, s in zip(tokens, score)])


# ---------------------------------------------------------------- loss functions


def test_clip_loss_and_accuracy_on_a_random_batch():
    image, text = F.normalize(rand(5, 3), dim=-1), F.normalize(rand(5, 3, seed=1), dim=-1)
    scale = torch.tensor(3.0)
    loss, acc = clip_loss(image, text, scale, column_grad=True)
    assert loss.item() == pytest.approx(ref_clip(image, text, scale).item(), rel=1e-6)
    expected_acc = ((scale * image @ text.T).argmax(1) == torch.arange(5)).float().mean()
    assert acc.item() == expected_acc.item() and 0 < acc.item() < 1


def test_clip_loss_without_column_grad_keeps_every_gradient_on_one_process():
    grads = []
    for column_grad in (True, False):
        image = F.normalize(rand(5, 3), dim=-1).requires_grad_()
        text = F.normalize(rand(5, 3, seed=1), dim=-1).requires_grad_()
        clip_loss(image, text, torch.tensor(2.0), column_grad=column_grad)[0].backward()
        grads.append((image.grad, text.grad))
    assert torch.allclose(grads[0][0], grads[1][0]) and torch.allclose(grads[0][1], grads[1][1])


def test_nt_xent_on_a_random_batch():
    a, b, t = rand(5, 3), rand(5, 3, seed=1) * 4, 0.3
    na, nb = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    eye = torch.eye(5, dtype=torch.bool)
    labels = torch.arange(5)
    logits_a = torch.cat([na @ nb.T / t, (na @ na.T / t).masked_fill(eye, -math.inf)], dim=1)
    logits_b = torch.cat([nb @ na.T / t, (nb @ nb.T / t).masked_fill(eye, -math.inf)], dim=1)
    expected = (F.cross_entropy(logits_a, labels) + F.cross_entropy(logits_b, labels)) / 2
    loss, acc = nt_xent(a, b, temperature=t)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert acc.item() == (logits_a.argmax(1) == labels).float().mean().item()


def test_simsiam_on_a_random_batch():
    p1, z1, p2, z2 = (rand(5, 3, seed=s) for s in range(4))
    cos = lambda x, y: (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(-1).mean()  # noqa: E731
    expected = -(cos(p1, z2) + cos(p2, z1)) / 2
    assert simsiam_loss(p1, z1, p2, z2).item() == pytest.approx(expected.item(), rel=1e-6)


def test_late_interaction_in_chunks_equals_the_loops():
    query, keys = F.normalize(rand(3, 4, 2), dim=-1), F.normalize(rand(5, 3, 2, seed=1), dim=-1)
    expected = ref_late(query, keys)
    for chunk in (2, 64):
        assert torch.allclose(late_interaction(query, keys, chunk=chunk), expected, atol=1e-6)


def test_wide_lifts_half_precision_and_keeps_float64():
    assert wide(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert wide(torch.ones(2, dtype=torch.float64)).dtype == torch.float64


def test_cap_scale_leaves_a_scale_below_the_cap():
    assert cap_scale(torch.tensor(50.0), 100.0).item() == 50.0
    assert cap_scale(torch.tensor(99.5), 100.0).item() == 99.5


def test_mlm_corrupt_draws_per_row_from_position_one_and_random_ids_in_range():
    def draw(vocab, word):
        text = torch.full((300, 10), word)
        text[:, 0], text[:, 9] = vocab - 2, vocab - 1  # SOT, EOT: the two highest ids
        ids, _, labels = mlm_corrupt(text, probability=0.5, vocab_size=vocab)
        return ids, labels != -100

    torch.manual_seed(0)
    ids, chosen = draw(6, 0)
    assert chosen[:, 1].any() and not chosen[:, 0].any()  # the first word after SOT can be masked
    assert len({tuple(r) for r in chosen.int().tolist()}) > 100  # each row its own draw
    # random word pieces are ids 1 .. vocab - 3 (no padding, SOT or EOT): seen against words 0, 3 and 1
    assert set(ids[chosen].unique().tolist()) == {0, 1, 2, 3}
    ids, chosen = draw(6, 3)
    assert set(ids[chosen].unique().tolist()) == {1, 2, 3}
    ids, chosen = draw(4, 1)
    assert set(ids[chosen].unique().tolist()) == {1}


def test_mlm_loss_without_scored_tokens_is_zero_with_a_nonzero_head():
    head = torch.nn.Linear(3, 4)
    torch.nn.init.constant_(head.bias, 1.0)
    assert mlm_loss(head, rand(2, 5, 3), torch.full((2, 5), -100)).item() == 0.0


# ---------------------------------------------------------------- methods against their parts


def test_clip_caps_its_scale_and_reads_models_built_with_output_dict():
    model, batch = tiny_model(), make_batch()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(50.0))
    out = create_method("clip", model, {"logit_scale_cap": 20.0})(model, batch)
    image = F.normalize(model.encode_image(batch["image"]), dim=-1)
    text = F.normalize(model.encode_text(batch["text"]), dim=-1)
    assert set(out) == {"loss", "acc_image_to_text", "logit_scale"}
    assert out["logit_scale"].item() == pytest.approx(20.0)
    assert out["loss"].item() == pytest.approx(ref_clip(image, text, 20.0).item(), rel=1e-5)
    torch.manual_seed(0)
    dict_model = create_model(TINY)
    dict_model.output_dict = True
    dict_model.load_state_dict(model.state_dict())
    same = create_method("clip", dict_model, {"logit_scale_cap": 20.0})(dict_model, batch)
    assert same["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)


def test_filip_with_a_global_clip_term_equals_its_parts():
    model, batch = tiny_model(), make_batch()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(30.0))
    options = dict(SMALL_HEADS, filip_clip_weight=0.5, filip_mask_captions=False, filip_top_k=2,
                   logit_scale_cap=10.0, filip_token_dim=8)
    method = create_method("filip", model, options)
    head = method.token_head
    assert head.token_logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert model.logit_scale.requires_grad  # the CLIP term trains the temperature
    out = method(model, batch)
    parts = encode_image_parts(model, batch["views"][:, 0])
    embed, states = encode_text_parts(model, batch["text"])
    image = F.normalize(head.image_mapping(parts.hidden[:, 1:]), dim=-1)
    text = F.normalize(head.text_mapping(states), dim=-1)
    own = torch.einsum("bnd,bmd->bnm", image, text)
    image_k, text_k = ref_topk(image, own.sum(2), 2), ref_topk(text, own.sum(1), 2)
    s = head.token_logit_scale.exp()
    labels = torch.arange(4)
    filip = (F.cross_entropy(s * ref_late(image, text_k), labels)
             + F.cross_entropy(s * ref_late(text, image_k), labels)) / 2
    clip = ref_clip(F.normalize(parts.embed, dim=-1), F.normalize(embed, dim=-1), 10.0)
    assert set(out) == {"loss", "filip_loss", "filip_acc", "token_logit_scale", "clip_loss", "logit_scale"}
    assert out["filip_loss"].item() == pytest.approx(filip.item(), rel=1e-5)
    assert out["clip_loss"].item() == pytest.approx(clip.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(filip.item() + 0.5 * clip.item(), rel=1e-5)
    assert out["logit_scale"].item() == pytest.approx(10.0) and out["token_logit_scale"].item() == pytest.approx(s.item())
    everything = (F.cross_entropy(s * ref_late(image, text), labels) + F.cross_entropy(s * ref_late(text, image),
                                                                                         labels)) / 2
    assert abs(everything.item() - filip.item()) > 1e-3  # top-k matters on this batch
    default = create_method("filip", model, SMALL_HEADS)(model, batch)
    assert "clip_loss" not in default and "logit_scale" not in default


def test_filip_mask_embedding_is_small_and_bad_views_name_the_field():
    model = tiny_model()
    method = create_method("filip", model, SMALL_HEADS)
    assert 0.005 < method.mask_embedding.std().item() < 0.05
    with pytest.raises(UserError, match=r"^batch\.views: expected \[B, V, 3, H, W\] augmented views, got None$"):
        method(model, {"text": make_batch()["text"]})
    with pytest.raises(UserError, match=r"got \(4, 3, 16, 16\)$"):
        method(model, {"text": make_batch()["text"], "views": torch.zeros(4, 3, 16, 16)})


def test_filip_freezes_a_custom_text_towers_linear_projection():
    config = {**TINY, "custom_text": True, "text_cfg": {**TINY["text_cfg"], "proj_bias": True}}
    model = create_model(config)
    assert isinstance(model.text.text_projection, torch.nn.Linear)
    create_method("filip", model, SMALL_HEADS)
    assert not any(p.requires_grad for p in model.text.text_projection.parameters())
    assert not model.logit_scale.requires_grad and not model.visual.proj.requires_grad


def test_declip_heads_have_the_published_shape():
    model = tiny_model()
    method = create_method("declip", model, SMALL_HEADS)
    kinds = lambda m: [type(x).__name__ for x in m]  # noqa: E731
    assert kinds(method.projector) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d"]
    assert kinds(method.predictor) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert 0.005 < method.mask_embedding.std().item() < 0.05
    off = create_method("declip", model, dict(SMALL_HEADS, declip_weights={"simsiam": 0}))
    assert not hasattr(off, "projector") and "simsiam_loss" not in off(model, make_batch())


@pytest.mark.parametrize("clip, nn, trained", [(0, 0, False), (0, 0.2, True), (0.4, 0, True)])
def test_declip_freezes_the_temperature_only_when_no_term_uses_it(clip, nn, trained):
    model = tiny_model()
    method = create_method("declip", model, dict(SMALL_HEADS, declip_weights={"clip": clip, "nn": nn}))
    assert model.logit_scale.requires_grad == trained
    out = method(model, make_batch())
    assert ("clip_loss" in out) == (clip > 0) and ("nn_loss" in out) == (nn > 0)


def test_declip_without_the_augmented_caption_names_the_field():
    model, batch = tiny_model(), make_batch()
    del batch["text_aug"]
    with pytest.raises(UserError, match=r"^batch\.text_aug: DeCLIP needs the augmented caption \(loader "
                                         r"text_augment\)$"):
        create_method("declip", model, SMALL_HEADS)(model, batch)


def test_declip_terms_equal_their_parts():
    model, batch = tiny_model(), make_batch(rows=6, seed=21)  # a batch where the 4 pairs' accuracies differ
    with torch.no_grad():
        model.logit_scale.fill_(math.log(30.0))
    method = create_method("declip", model, dict(SMALL_HEADS, logit_scale_cap=10.0,
                                                 declip_weights={"clip": 0.4, "nn": 0.3, "simsiam": 0.2, "mlm": 0}))
    bank = method.queue.features.clone()
    out = method(model, batch)
    parts = encode_image_parts(model, batch["views"].transpose(0, 1).reshape(12, 3, 16, 16))
    images = [F.normalize(e, dim=-1) for e in parts.embed.split(6)]
    texts = [F.normalize(encode_text_parts(model, batch[k])[0], dim=-1) for k in ("text", "text_aug")]
    clip = torch.stack([ref_clip(i, t, 10.0) for i in images for t in texts]).mean()
    labels = torch.arange(6)
    neighbours = [bank[(t @ bank.T).argmax(1)] for t in texts]
    nn_term = torch.stack([F.cross_entropy(10.0 * i @ n.T, labels) for i in images for n in neighbours]).mean()
    method.projector.train(), method.predictor.train()
    z = [method.projector(e) for e in parts.embed.split(6)]
    simsiam = -(F.cosine_similarity(method.predictor(z[0]), z[1]).mean()
                + F.cosine_similarity(method.predictor(z[1]), z[0]).mean()) / 2
    accs = [((i @ t.T).argmax(1) == labels).float().mean().item() for i, t in ((images[0], texts[0]),
                                                                             (images[0], texts[1]))]
    assert out["clip_loss"].item() == pytest.approx(clip.item(), rel=1e-5)
    assert out["nn_loss"].item() == pytest.approx(nn_term.item(), rel=1e-5)
    assert out["simsiam_loss"].item() == pytest.approx(simsiam.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.4 * clip.item() + 0.3 * nn_term.item() + 0.2 * simsiam.item(),
                                               rel=1e-5)
    assert out["logit_scale"].item() == pytest.approx(10.0)
    assert accs[0] != accs[1] and out["acc_image_to_text"].item() == accs[0]


def test_defilip_builds_its_token_term_only_with_a_weight():
    model, batch = tiny_model(), make_batch()
    method = create_method("defilip", model, dict(SMALL_HEADS, filip_token_dim=8, declip_weights={"mlm": 0}))
    assert method.token_head.image_mapping.out_features == 8
    assert method.scale_bounds() == [(method.token_head.token_logit_scale, 3.0, 6.0)]
    torch.manual_seed(0)
    top2 = create_method("defilip", model, dict(SMALL_HEADS, filip_top_k=2, declip_weights={"mlm": 0}))(model, batch)
    torch.manual_seed(0)
    every = create_method("defilip", model, dict(SMALL_HEADS, filip_top_k=None, declip_weights={"mlm": 0}))(model,
                                                                                                          batch)
    assert abs(top2["filip_loss"].item() - every["filip_loss"].item()) > 1e-4
    off = create_method("defilip", model, dict(SMALL_HEADS, declip_weights={"filip": 0}))
    assert not hasattr(off, "token_head") and off.scale_bounds() == [] and "filip_loss" not in off(model, batch)


@pytest.mark.parametrize("name", ["simclr", "slip"])
def test_simclr_head_shape_options_and_logged_terms(name):
    model, batch = tiny_model(), make_batch()
    method = create_method(name, model, dict(SMALL_HEADS, ssl_scale=0.5))
    kinds = [type(x).__name__ for x in method.ssl_head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]  # SLIP's head: no BN on the output
    assert method.ssl_head[0].out_features == 32 and method.ssl_head[-1].out_features == 8
    out = method(model, batch)
    if name == "simclr":
        assert set(out) == {"loss", "ssl_loss", "ssl_acc"} and out["ssl_loss"].item() == out["loss"].item()
    else:
        assert set(out) == {"loss", "clip_loss", "ssl_loss", "acc_image_to_text", "ssl_acc", "logit_scale"}
        assert out["loss"].item() == pytest.approx(out["clip_loss"].item() + 0.5 * out["ssl_loss"].item(), rel=1e-6)
        image = F.normalize(model.encode_image(batch["image"]), dim=-1)
        text = F.normalize(model.encode_text(batch["text"]), dim=-1)
        scale = model.logit_scale.exp()
        assert out["clip_loss"].item() == pytest.approx(ref_clip(image, text, scale).item(), rel=1e-5)
        assert out["logit_scale"].item() == pytest.approx(scale.item())


@pytest.mark.parametrize("views, shape", [(None, "None"), (torch.zeros(4, 1, 3, 16, 16), r"\(4, 1, 3, 16, 16\)"),
                                          (torch.zeros(4, 3, 16, 16), r"\(4, 3, 16, 16\)")])
def test_two_views_name_the_field(views, shape):
    model, batch = tiny_model(), make_batch()
    batch = {"text": batch["text"]} if views is None else {"text": batch["text"], "views": views}
    with pytest.raises(UserError, match=rf"^batch\.views: expected \[B, 2, 3, H, W\] augmented views, got {shape}$"):
        create_method("simclr", model, SMALL_HEADS)(model, batch)
