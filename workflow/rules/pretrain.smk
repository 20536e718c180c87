rule pretrain:
    """Contrastive pretraining with reduced tokens, under torchrun; resumes from results/<name>/pretrain/checkpoints/.
    Only final.pt is declared, so Snakemake never deletes the resumable checkpoints of a failed attempt."""
    input:
        data=lambda w: WF.train_stats(w.name),
    output:
        final_checkpoint("pretrain"),
    log:
        path("train_log", stage="pretrain"),
    params:
        fingerprint=lambda w: WF.fingerprint(w.name, "pretrain"),
        args=WF.train_args("pretrain"),
    threads: WF.threads("pretrain")
    resources:
        **WF.resources("pretrain"),
    shell:
        STAGE
