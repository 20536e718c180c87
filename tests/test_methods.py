"""Methods beyond CLIP: loss terms against hand-computed values, tower features, gradient flow to
every head, queue checkpointing, caption/image augmentation, and 2 gloo processes == 1 process."""
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from pipeline.config import ConfigError, load_experiment
from pipeline.data.views import (CaptionAugmenter, ViewMaker, augment_caption, augment_captions, make_views,
                                 view_transform)
from pipeline.methods import available, create_method
from pipeline.methods._heads import FeatureQueue
from pipeline.methods._losses import (cap_scale, clip_loss, filip_loss, late_interaction, mlm_corrupt, mlm_loss,
                                      nn_loss, nt_xent, select_tokens, simsiam_loss)
from pipeline.methods._options import resolve_options
from pipeline.methods._towers import encode_image_parts, encode_text_parts
from pipeline.models import create_model

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
SMALL_HEADS = {"ssl_mlp_dim": 32, "ssl_emb_dim": 8, "simsiam_dim": 16, "simsiam_pred_dim": 8, "nn_queue_size": 64}
NEW_METHODS = ["simclr", "slip", "declip", "filip", "defilip"]
SOT, EOT = 49406, 49407


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return create_model(TINY)


def make_batch(rows=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(1, 49000, (rows, 8), generator=g)
    lengths = torch.randint(3, 8, (rows,), generator=g)  # EOT position
    for i, eot in enumerate(lengths.tolist()):
        text[i, 0], text[i, eot] = SOT, EOT
        text[i, eot + 1:] = 0
    return {"image": torch.randn(rows, 3, 16, 16, generator=g), "text": text,
            "views": torch.randn(rows, 2, 3, 16, 16, generator=g),
            "text_aug": text[:, [0, 2, 1, 3, 4, 5, 6, 7]].clone()}


def ce(logits, label):
    return -logits[label] + math.log(sum(math.exp(v) for v in logits))


# ---------------------------------------------------------------- loss terms, hand-computed


def test_clip_loss_hand_computed():
    eye = torch.eye(2)
    loss, acc = clip_loss(eye, eye, torch.tensor(1.0), column_grad=True)
    assert loss.item() == pytest.approx(math.log((math.e + 1) / math.e), abs=1e-6)
    assert acc.item() == 1.0


def test_nt_xent_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised inside: the same directions
    loss, acc = nt_xent(a, b, temperature=1.0)
    # row 0 of a: [a.b0, a.b1, (a.a0 masked), a.a1] = [1, 0, -inf, 0]; every row alike
    assert loss.item() == pytest.approx(ce([1.0, 0.0, 0.0], 0), abs=1e-6)
    assert acc.item() == 1.0
    loss_t, _ = nt_xent(a, b, temperature=0.5)
    assert loss_t.item() == pytest.approx(ce([2.0, 0.0, 0.0], 0), abs=1e-6)


def test_simsiam_hand_computed_and_stop_gradient():
    p1 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    z1 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    p2 = torch.tensor([[0.0, 1.0]], requires_grad=True)
    z2 = torch.tensor([[2.0, 0.0]], requires_grad=True)
    loss = simsiam_loss(p1, z1, p2, z2)  # -(cos(p1,z2) + cos(p2,z1)) / 2 = -(1 + 0) / 2
    assert loss.item() == pytest.approx(-0.5)
    loss.backward()
    assert z1.grad is None and z2.grad is None and p2.grad is not None


def test_late_interaction_and_filip_hand_computed():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    image = torch.stack([torch.stack([e1, e2]), torch.stack([e1, e1])])  # [2 images, 2 tokens, 2]
    text = torch.stack([torch.stack([e1, e2]), torch.stack([e2, e2])])
    i2t = late_interaction(image, text)  # mean over the query's tokens of the best key token
    t2i = late_interaction(text, image)
    assert torch.allclose(i2t, torch.tensor([[1.0, 0.5], [1.0, 0.0]]))
    assert torch.allclose(t2i, torch.tensor([[1.0, 0.5], [1.0, 0.0]]))
    loss, acc = filip_loss(image, text, image, text, torch.tensor(2.0))
    expected = (ce([2.0, 1.0], 0) + ce([2.0, 0.0], 1)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert acc.item() == 0.5  # image 1 scores caption 0 (logit 2) above its own caption (0)
    assert torch.allclose(late_interaction(image, text, chunk=1), i2t)


def test_filip_top_k_keeps_the_tokens_closest_to_the_own_pair():
    """DeCLIP's get_weighted_dense_logits: image token score = summed similarity to its own caption's tokens
    (and the other way round); the k best are what the other samples see, the local side keeps all."""
    e1, e2, e3 = torch.eye(3)
    image = torch.stack([e1, e1, e2])[None]  # one pair; image token scores: 1, 1, 2
    text = torch.stack([e1, e2, e3, e2])[None]  # word scores: 2, 1, 0, 1
    chosen_image, chosen_text = select_tokens(image, text, top_k=2)
    assert torch.equal(chosen_image[0], torch.stack([e2, e1])) and torch.equal(chosen_text[0], torch.stack([e1, e2]))
    same = select_tokens(image, text, top_k=None)
    assert same[0] is image and same[1] is text
    assert select_tokens(image, text, top_k=9)[1] is text  # k >= tokens: all of them
    two = torch.cat([image, torch.stack([e3, e3, e3])[None]])  # 2 samples: the second image is all e3
    texts = torch.cat([text, torch.stack([e3, e3, e1, e1])[None]])
    chosen_image, chosen_text = select_tokens(two, texts, top_k=2)
    loss, acc = filip_loss(two, texts, chosen_image, chosen_text, torch.tensor(1.0))
    # image 0 (e1, e1, e2) vs caption 1's chosen words (e3, e3): 0; vs its own chosen (e1, e2): 1
    assert torch.allclose(late_interaction(two, chosen_text), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # caption 0 (e1, e2, e3, e2) vs image 1's chosen (e3, e3): 1/4, vs its own (e2, e1): 3/4; caption 1 1/2, 1/2
    assert torch.allclose(late_interaction(texts, chosen_image), torch.tensor([[0.75, 0.25], [0.5, 0.5]]))
    t2i = (ce([0.75, 0.25], 0) + ce([0.5, 0.5], 1)) / 2
    assert acc.item() == 1.0 and loss.item() == pytest.approx((ce([1.0, 0.0], 0) + t2i) / 2, abs=1e-6)


def test_cap_scale_caps_the_value_not_the_gradient():
    raw = torch.tensor(5.0, requires_grad=True)  # exp(5) = 148 > 100
    capped = cap_scale(raw.exp(), 100.0)
    (2 * capped).backward()
    assert capped.item() == pytest.approx(100.0) and raw.grad.item() == pytest.approx(2 * math.exp(5.0))
    assert cap_scale(raw.exp(), None).item() == pytest.approx(math.exp(5.0))


def test_nn_loss_hand_computed():
    images = [torch.eye(2)]
    neighbours = [torch.tensor([[1.0, 0.0], [1.0, 0.0]])]  # both captions' neighbour is e1
    loss = nn_loss(images, neighbours, torch.tensor(1.0))
    # image 0: logits [1, 1] target 0; image 1: logits [0, 0] target 1
    assert loss.item() == pytest.approx((ce([1.0, 1.0], 0) + ce([0.0, 0.0], 1)) / 2, abs=1e-6)


def test_mlm_corrupt_spares_special_tokens_and_splits_80_10_10():
    torch.manual_seed(0)
    text = torch.randint(1, 40000, (400, 40))
    text[:, 0], text[:, 30], text[:, 31:] = SOT, EOT, 0
    torch.manual_seed(1)
    ids, replace, labels = mlm_corrupt(text, probability=0.5, vocab_size=49408)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 30:].any()
    assert torch.equal(labels[chosen], text[chosen])
    assert torch.equal(ids[~chosen], text[~chosen]) and not replace[~chosen].any()
    n = chosen.sum().item()
    assert n / (400 * 29) == pytest.approx(0.5, abs=0.02)
    assert replace.sum().item() / n == pytest.approx(0.8, abs=0.02)
    changed = (ids != text) & chosen & ~replace
    assert changed.sum().item() / n == pytest.approx(0.1, abs=0.02)
    assert int(ids[changed].max()) < SOT and int(ids[changed].min()) >= 1
    torch.manual_seed(1)
    again = mlm_corrupt(text, probability=0.5, vocab_size=49408)
    assert all(torch.equal(x, y) for x, y in zip(again, (ids, replace, labels)))


def test_mlm_loss_hand_computed():
    head = torch.nn.Linear(3, 4)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    states = torch.randn(2, 5, 3)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 3] = 2, 0
    assert mlm_loss(head, states, labels).item() == pytest.approx(math.log(4))
    zero = mlm_loss(head, states, torch.full((2, 5), -100))
    zero.backward()
    assert zero.item() == 0.0 and head.weight.grad is not None


# ---------------------------------------------------------------- towers, options, augmentations


def test_tower_parts_equal_open_clip_encoders():
    model, batch = tiny_model(), make_batch()
    parts = encode_image_parts(model, batch["image"])
    assert torch.allclose(parts.embed, model.encode_image(batch["image"]), atol=1e-6)
    assert parts.tokens.shape == (4, 4, 32) and parts.pooled.shape == (4, 32) and parts.hidden.shape == (4, 5, 32)
    assert torch.allclose(model.visual.ln_post(parts.hidden[:, 1:]), parts.tokens, atol=1e-6)  # before ln_post
    embed, states = encode_text_parts(model, batch["text"])
    assert torch.allclose(embed, model.encode_text(batch["text"]), atol=1e-6)
    assert states.shape == (4, 8, 32)


def test_options_come_from_the_schema_and_bad_ones_fail():
    opts = resolve_options({"ssl_scale": 0.5})
    assert opts["ssl_scale"] == 0.5 and opts["ssl_temperature"] == 0.1 and opts["nn_queue_size"] == 65536
    assert opts["declip_weights"] == {"clip": 0.4, "nn": 0.2, "simsiam": 0.2, "mlm": 0.2, "filip": 0.2}
    typed = load_experiment("demo_declip").method_options  # what the trainer holds: a read-only config view
    assert resolve_options(typed)["simsiam_dim"] == typed.simsiam_dim == 256
    assert create_method("declip", tiny_model(), typed).projector[0].out_features == 256
    with pytest.raises(ConfigError, match="method_options.ssl_tmp"):
        resolve_options({"ssl_tmp": 0.1})
    with pytest.raises(ConfigError, match="method_options.mlm_probability"):
        resolve_options({"mlm_probability": 1.5})


def test_registry_and_loader_hooks():
    assert set(NEW_METHODS) <= set(available())
    model = tiny_model()
    for name in NEW_METHODS:
        method = create_method(name, model, SMALL_HEADS)
        assert method.image_views == (1 if name == "filip" else 2)  # FILIP: DeCLIP's MoCo-v2 view 1
        assert method.text_augment == (name in ("declip", "defilip"))


def test_views_and_caption_augmentation_are_seeded():
    from PIL import Image
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    transform = view_transform(image_size=16)
    torch.manual_seed(3)
    views = make_views(image, transform, 2)
    torch.manual_seed(3)
    assert views.shape == (2, 3, 16, 16) and torch.equal(views, make_views(image, transform, 2))
    caption = "a small red car parked next to an old stone wall"
    torch.manual_seed(5)
    out = augment_captions([caption] * 50, alpha=0.2)
    torch.manual_seed(5)
    assert out == augment_captions([caption] * 50, alpha=0.2)
    words = caption.split()
    assert any(o != caption for o in out)
    for o in out:  # a swap keeps the words, a deletion keeps a sub-sequence
        w = o.split()
        assert sorted(w) == sorted(words) or (len(w) < len(words) and all(x in words for x in w))
    assert augment_caption("word", alpha=0.5) == "word"


def test_loader_hooks_are_picklable_and_seeded():
    import pickle
    from PIL import Image
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    maker = pickle.loads(pickle.dumps(ViewMaker(views=2, image_size=12, crop_scale=(0.2, 1.0))))
    torch.manual_seed(4)
    views = maker(image)
    torch.manual_seed(4)
    assert views.shape == (2, 3, 12, 12) and torch.equal(views, maker(image))
    augment = pickle.loads(pickle.dumps(CaptionAugmenter(alpha=0.3)))
    torch.manual_seed(4)
    first = augment(["one two three four", "five six seven"])
    torch.manual_seed(4)
    assert first == augment_captions(["one two three four", "five six seven"], alpha=0.3)


def test_feature_queue_starts_random_wraps_and_restores_through_state_dict():
    torch.manual_seed(0)
    q = FeatureQueue(5, 2)
    assert torch.allclose(q.features.norm(dim=1), torch.ones(5)) and q.rank_local  # lightly's random unit bank
    start = q.features.clone()
    q.push(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    assert int(q.ptr) == 3 and torch.equal(q.features[3:], start[3:])
    q.push(torch.tensor([[-1.0, 0.0], [0.0, -1.0], [3.0, 0.0]]))  # wraps: last row overwrites slot 0
    assert int(q.ptr) == 1
    assert torch.allclose(q.features[0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(q.nearest(torch.tensor([[0.1, -5.0]])), torch.tensor([[0.0, -1.0]]))
    fresh = FeatureQueue(5, 2)
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh.features, q.features) and int(fresh.ptr) == 1


def test_declip_queues_its_own_captions_after_the_lookups():
    """DeCLIP code order: both lookups see the bank before the step; then the augmented captions, then the
    (masked) captions are queued, this rank's rows only (256 a step at 128 per GPU)."""
    model, batch = tiny_model(), make_batch()
    method = create_method("declip", model, dict(SMALL_HEADS, declip_weights={"mlm": 0}))
    assert method.rank_local_keys() == ["queue.features", "queue.ptr"]
    before = method.queue.features.clone()
    method(model, batch)
    aug, _ = encode_text_parts(model, batch["text_aug"])
    caption, _ = encode_text_parts(model, batch["text"])
    assert int(method.queue.ptr) == 8
    assert torch.allclose(method.queue.features[:4], torch.nn.functional.normalize(aug, dim=-1), atol=1e-6)
    assert torch.allclose(method.queue.features[4:8], torch.nn.functional.normalize(caption, dim=-1), atol=1e-6)
    assert torch.equal(method.queue.features[8:], before[8:])


def test_declip_queue_resumes_from_state_dict():
    model, batch = tiny_model(), make_batch()
    method = create_method("declip", model, SMALL_HEADS)
    method(model, batch)
    state = {k: v.clone() for k, v in method.state_dict().items()}
    assert {"queue.features", "queue.ptr"} <= set(state)
    torch.manual_seed(7)
    expected = method(model, batch)["nn_loss"]
    resumed = create_method("declip", model, SMALL_HEADS)
    resumed.load_state_dict(state)
    torch.manual_seed(7)
    assert resumed(model, batch)["nn_loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert expected.item() > 0


# ---------------------------------------------------------------- gradients reach every head


@pytest.mark.parametrize("name", NEW_METHODS)
def test_gradients_flow_to_every_trained_parameter(name):
    model, batch = tiny_model(), make_batch()
    method = create_method(name, model, SMALL_HEADS)
    for _ in range(2):  # the second step has a filled NN queue
        model.zero_grad()
        method.zero_grad()
        out = method(model, batch)
        out["loss"].backward()
    assert torch.isfinite(out["loss"])
    missing = [n for n, p in list(model.named_parameters()) + list(method.named_parameters())
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"{name}: no gradient for {missing}"
    text_params = {n: p for n, p in model.named_parameters() if not n.startswith("visual.")}
    if name == "simclr":  # image tower only
        assert not any(p.requires_grad for p in text_params.values())
        assert not model.visual.proj.requires_grad
    elif name == "filip":  # token-wise only: the pooled path is frozen
        assert {n for n, p in text_params.items() if not p.requires_grad} == {"logit_scale", "text_projection"}
        assert not model.visual.proj.requires_grad and not model.visual.ln_post.weight.requires_grad
    else:
        assert all(p.requires_grad for p in text_params.values())


def test_zero_weight_terms_build_no_head():
    model = tiny_model()
    opts = dict(SMALL_HEADS, declip_weights={"mlm": 0, "nn": 0})
    method = create_method("declip", model, opts)
    assert not hasattr(method, "mlm_head") and not hasattr(method, "queue")
    out = method(model, make_batch())
    assert "mlm_loss" not in out and "nn_loss" not in out
    assert out["loss"].item() == pytest.approx(0.4 * out["clip_loss"].item() + 0.2 * out["simsiam_loss"].item(),
                                               abs=1e-5)


# ---------------------------------------------------------------- 2 gloo processes == 1 process

# methods whose every term is global (MLM and FILIP's corrupted captions are per-rank by nature: their masks come
# from each rank's RNG; DeCLIP's NN banks are per rank, test_declip_banks_are_per_rank)
DIST_CASES = {"simclr": {}, "slip": {}, "filip": {"filip_mask_captions": False, "filip_top_k": 2},
              "declip": {"declip_weights": {"mlm": 0, "nn": 0}},
              "defilip": {"declip_weights": {"mlm": 0, "nn": 0}, "filip_top_k": 2}}


def run_steps(name, model_state, batch, options, steps=2):
    """Losses of `steps` forward passes and the gradients (model + heads) of the last one."""
    model = tiny_model()
    model.load_state_dict(model_state)
    torch.manual_seed(11)
    method = create_method(name, model, dict(SMALL_HEADS, **options))
    losses = []
    for _ in range(steps):
        model.zero_grad()
        method.zero_grad()
        out = method(model, batch)
        out["loss"].backward()
        losses.append(out["loss"].detach())
    grads = {n: p.grad.clone() for n, p in list(model.named_parameters()) + [("method." + n, p) for n, p in
             method.named_parameters()] if p.grad is not None}
    return torch.stack(losses), grads


def _worker(rank, world_size, port, folder):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    for turn in range(world_size):  # one rank at a time registers the config file with open_clip
        if turn == rank:
            tiny_model()
        dist.barrier()
    shared = torch.load(os.path.join(folder, "shared.pt"), weights_only=True)
    rows = shared["batch"]["image"].shape[0] // world_size
    local = {k: v[rank * rows:(rank + 1) * rows] for k, v in shared["batch"].items()}
    results = {}
    for name, options in DIST_CASES.items():
        losses, grads = run_steps(name, shared["model"], local, options)
        dist.all_reduce(losses)
        for g in grads.values():  # what DDP does: average gradients over ranks
            dist.all_reduce(g)
            g /= world_size
        results[name] = {"losses": losses / world_size, "grads": grads}
    losses, grads = run_steps("clip", shared["model"], local, {"clip_column_grad": False}, steps=1)
    for g in grads.values():
        dist.all_reduce(g)
        g /= world_size
    results["clip_no_column_grad"] = grads
    model = tiny_model()
    model.load_state_dict(shared["model"])
    method = create_method("declip", model, dict(SMALL_HEADS, declip_weights={"mlm": 0}))
    method(model, local)
    banks = [torch.zeros(2 * rows, 16) for _ in range(world_size)]
    dist.all_gather(banks, method.queue.features[:2 * rows].contiguous())
    results["banks"] = torch.stack(banks)
    if rank == 0:
        torch.save(results, os.path.join(folder, "dist.pt"))
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process(tmp_path):
    model_state, batch = tiny_model().state_dict(), make_batch(rows=8)
    torch.save({"model": model_state, "batch": batch}, tmp_path / "shared.pt")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    dist_results = torch.load(tmp_path / "dist.pt", weights_only=True)
    for name, options in DIST_CASES.items():
        losses, grads = run_steps(name, model_state, batch, options)
        got = dist_results[name]
        assert torch.allclose(got["losses"], losses, atol=1e-5), (name, got["losses"], losses)
        assert set(got["grads"]) == set(grads), name
        for key, grad in grads.items():  # float32 noise only (BN statistics summed in another order)
            scale = max(1.0, grad.abs().max().item())
            assert (got["grads"][key] - grad).abs().max().item() <= 1e-4 * scale, (name, key)
    model = tiny_model()
    model.load_state_dict(model_state)
    image, text, scale = model(batch["image"], batch["text"])  # SLIP's CLIPLoss: rows only get gradient
    labels = torch.arange(4)
    sliced = [(F.cross_entropy(scale * image[r:r + 4] @ text.detach().T, labels + r)
               + F.cross_entropy(scale * text[r:r + 4] @ image.detach().T, labels + r)) / 2 for r in (0, 4)]
    (sum(sliced) / 2).backward()
    for name, param in model.named_parameters():
        got = dist_results["clip_no_column_grad"][name]
        assert torch.allclose(got, param.grad, atol=1e-6, rtol=1e-4), name
    assert not torch.allclose(dist_results["clip_no_column_grad"]["visual.proj"],
                              run_steps("clip", model_state, batch, {}, steps=1)[1]["visual.proj"], atol=1e-4)
    model.zero_grad()
    for rank, bank in enumerate(dist_results["banks"]):  # DeCLIP: each rank's bank holds its own rows only
        rows = {k: v[4 * rank:4 * rank + 4] for k, v in batch.items()}
        own = [torch.nn.functional.normalize(encode_text_parts(model, rows[k])[0], dim=-1) for k in ("text_aug", "text")]
        assert torch.allclose(bank, torch.cat(own), atol=1e-5), rank


def test_filip_token_wise_zero_shot_as_the_declip_code():
    from pipeline.methods.filip import token_classifier, token_zeroshot_logits

    model, batch = tiny_model(), make_batch()
    method = create_method("filip", model, dict(SMALL_HEADS, filip_token_dim=8))
    prompts = batch["text"][:4].reshape(2, 2, 8)  # 2 classes x 2 prompts
    classifier = token_classifier(model, method.token_head, prompts)
    _, states = encode_text_parts(model, prompts[1].reshape(2, 8))
    tokens = torch.nn.functional.normalize(method.token_head.text_mapping(states), dim=-1).mean(0)
    assert classifier.shape == (2, 8, 8) and torch.allclose(classifier[1], tokens / tokens.norm(), atol=1e-6)
    logits = token_zeroshot_logits(model, method.token_head, batch["image"], classifier)
    hidden = encode_image_parts(model, batch["image"]).hidden
    image = torch.nn.functional.normalize(method.token_head.image_mapping(hidden[:, 1:]), dim=-1)
    expected = torch.einsum("bnd,cld->bcnl", image, classifier).max(-1).values.mean(-1)
    assert logits.shape == (4, 2) and torch.allclose(logits, expected, atol=1e-6)
