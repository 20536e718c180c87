"""Training engine for the pretrain and finetune stages.

- launch.py:      `python -m pipeline.train.launch <stage> ...` execs torchrun (srun + one torchrun per node
                  on multi-node SLURM jobs); torchrun then runs `python -m pipeline <stage> ...`.
- cli.py:         main(argv) of those stages: parse, load the experiment, call loop.train.
- loop.py:        the stage top to bottom: model (+ resampled init), method, loader, AdamW + cosine,
                  resume, the step loop, final.pt (+ the open_clip export).
- optim.py:       decay groups, step counts, timm's CosineLRScheduler per optimizer step.
- checkpoint.py:  resumable step_XXXXXXXX.pt (weights_only-safe RNG states), rotation.
- metrics.py:     metrics.jsonl, tensorboard events, loss.png.
(process-group helpers live in pipeline/distributed.py, shared with the methods)
"""
