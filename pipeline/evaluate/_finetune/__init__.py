"""Shared machinery of the supervised fine-tuning evaluations (finetune_eval, supervised_baseline, wiseft):
the DeepSpeed engine, the training loop with EMA, and the CLIP image tower as a timm ViT."""
