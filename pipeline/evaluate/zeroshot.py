"""Zero-shot classification: prompt-ensembled text classifier against normalised image embeddings."""
from __future__ import annotations

import time

from . import Context, Evaluation, register


def zeroshot_logits(features, classifier):
    """Cosine similarities [N, classes] (CLIP's logit scale does not change any ranking)."""
    return features @ classifier.to(features.dtype).cpu()


def evaluate_zeroshot(*, model, tokenizer, dataset, classnames: list[str], templates: list[str],
                      batch_size: int, workers: int, device) -> dict[str, float]:
    """acc1, acc5 and mean per-class recall of zero-shot classification on `dataset`."""
    from ._features import image_features, text_classifier
    from ._metrics import classification_metrics

    model = model.to(device).eval()
    classifier = text_classifier(model, tokenizer, classnames, templates, device)
    features, labels = image_features(model, dataset, batch_size, workers, device, desc="zero-shot",
                                      features="embedding")
    return classification_metrics(zeroshot_logits(features, classifier), labels)


def filip_token_zeroshot(*, checkpoint, experiment, model, tokenizer, dataset, classnames: list[str],
                         templates: list[str], batch_size: int, workers: int, device) -> dict[str, float]:
    """FILIP's token-wise zero-shot (pipeline.methods.filip.token_classifier / token_zeroshot_logits, as the DeCLIP
    code evaluates FILIP), with the token mappings the checkpoint's method state carries."""
    import torch
    from torch.utils.data import DataLoader

    from ..config import to_dict
    from ..methods import create_method
    from ..methods.filip import token_classifier, token_zeroshot_logits
    from ..models import load_checkpoint
    from ._metrics import classification_metrics

    method = create_method(experiment.method, model, to_dict(experiment.method_options))
    method.load_state_dict(load_checkpoint(checkpoint).get("method") or {})
    model, head = model.to(device).eval(), method.token_head.to(device).eval()
    with torch.no_grad():
        prompts = torch.stack([tokenizer([t.format(c=c) for t in templates]) for c in classnames]).to(device)
        classifier = token_classifier(model, head, prompts)
        logits, labels = [], []
        for images, targets in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
            logits.append(token_zeroshot_logits(model, head, images.to(device), classifier).float().cpu())
            labels.append(torch.as_tensor(targets))
    return classification_metrics(torch.cat(logits), torch.cat(labels))


def run(ctx: Context) -> None:
    from ..models import context_length_of, image_size_of, tokenizer
    from ._external import load_evaluated
    from ._assets import prompts_for
    from ._datasets import classification_dataset
    from ._features import eval_device
    from ._records import write_result

    loaded = load_evaluated(ctx)
    dataset, classes = classification_dataset(ctx.inputs["test"], image_size_of(loaded.model_config))
    classnames, templates = prompts_for(ctx.dataset, ctx.config_dir, classes, ctx.inputs["test"])
    start = time.time()
    ev = ctx.experiment.evaluate
    common = dict(model=loaded.model, tokenizer=tokenizer(context_length_of(loaded.model_config)), dataset=dataset,
                  classnames=classnames, templates=templates, batch_size=ev.batch_size, workers=ev.workers,
                  device=eval_device())
    if ctx.settings.scoring == "filip_tokens" and loaded.stage in ("pretrain", "finetune"):
        metrics = filip_token_zeroshot(checkpoint=ctx.checkpoint, experiment=ctx.experiment, **common)
    else:  # pooled embeddings; external checkpoint rows carry no FILIP token mappings
        metrics = evaluate_zeroshot(**common)
    write_result(ctx, task=EVALUATION.task, metrics=metrics, model=loaded.experiment, pretrained=ctx.checkpoint,
                 checkpoint=loaded.stage)
    print(f"zeroshot {ctx.dataset} ({len(dataset)} images, {time.time() - start:.1f} s): "
          + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if v is not None))


EVALUATION = register(Evaluation(
    name="zeroshot", order=10, task="zeroshot_classification", run=run,
    inputs=lambda entry: {"test": ("stats", entry)},
    columns=(("0-shot", "acc1"),), published="zeroshot"))
