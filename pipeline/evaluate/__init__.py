"""Evaluation of checkpoints: zero-shot classification (more tasks register in results' TASKS)."""
from .assets import load_classnames, load_templates
from .metrics import classification_metrics, mean_per_class_recall, topk_accuracy
from .results import result_record, write_result
from .zeroshot import evaluate_zeroshot, image_features, text_classifier

__all__ = ["classification_metrics", "evaluate_zeroshot", "image_features", "load_classnames", "load_templates",
           "mean_per_class_recall", "result_record", "text_classifier", "topk_accuracy", "write_result"]
