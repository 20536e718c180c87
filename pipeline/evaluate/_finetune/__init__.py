"""Shared machinery of the supervised training evaluations (finetune_eval, supervised_baseline, linear_sgd; wiseft
reads their output): the DeepSpeed engine, the training loop with EMA, held-out selection and resumable
checkpoints, the recipes' transforms, and the CLIP image tower as a timm ViT."""
