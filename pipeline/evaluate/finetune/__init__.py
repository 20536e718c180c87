"""Supervised fine-tuning evaluations: FT-CLIP (timm ViT from CLIP), WiSE-FT, the ResNet-50 baseline."""
