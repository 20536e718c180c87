rule finetune:
    """Full-token-length fine-tuning from the pretrain checkpoint (position embeddings resampled), under torchrun."""
    input:
        data=lambda w: WF.train_stats(w.name),
        init=path("checkpoint", stage="pretrain"),
    output:
        final_checkpoint("finetune"),
    log:
        path("train_log", stage="finetune"),
    params:
        fingerprint=lambda w: WF.fingerprint(w.name, "finetune"),
        args=WF.train_args("finetune"),
    threads: WF.threads("finetune")
    resources:
        **WF.resources("finetune"),
    shell:
        STAGE
