rule finetune:
    """Full-token-length fine-tuning from the pretrain checkpoint (position embeddings resampled)."""
    input:
        data=lambda w: WF.train_stats(w.name),
        init="results/{name}/pretrain/final.pt",
    output:
        final_checkpoint("finetune"),
    log:
        "logs/{name}/finetune.log",
    params:
        experiment=lambda w: WF.experiment_file(w.name),
        fingerprint=lambda w: WF.fingerprint(w.name, "finetune"),
    threads: lambda w: experiment(w.name).finetune.resources.cpus_per_task
    resources:
        **{key: (lambda w, attempt, key=key: WF.resources(w.name, "finetune", attempt, GPU_TYPE)[key])
           for key in ("nodes", "tasks", "cpus_per_task", "mem_mb", "runtime", "slurm_extra")},
    shell:
        "{PY:q} -m pipeline.train.launch finetune --experiment {params.experiment:q} "
        "--train-data {input.data:q} --init {input.init:q} --out {output:q} 2>&1 | tee -a {log:q}"
