"""Models: open_clip towers from a config, checkpoint loading, position-embedding resampling."""
from .factory import (context_length_of, create_model, image_size_of, known_models, load_checkpoint,
                      load_model, resolve_model_config, tokenizer)

__all__ = ["context_length_of", "create_model", "image_size_of", "known_models", "load_checkpoint",
           "load_model", "resolve_model_config", "tokenizer"]
