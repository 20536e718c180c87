"""Models: open_clip towers from a config, checkpoint loading, position-embedding resampling,
export in open_clip's own form."""
from .export import export_checkpoint, export_open_clip
from .factory import (LoadedCheckpoint, context_length_of, create_model, image_size_of, load_checkpoint, load_model,
                      resolve_model_config, tokenizer)
from .resample import load_resampled, resample_state_dict

__all__ = ["LoadedCheckpoint", "context_length_of", "create_model", "export_checkpoint", "export_open_clip",
           "image_size_of", "load_checkpoint", "load_model", "load_resampled", "resample_state_dict",
           "resolve_model_config", "tokenizer"]
