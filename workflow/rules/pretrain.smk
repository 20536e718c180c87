rule pretrain:
    """Contrastive pretraining with reduced tokens; resumes from results/<name>/pretrain/checkpoints/.
    Only final.pt is declared, so Snakemake never deletes the resumable checkpoints of a failed attempt."""
    input:
        data=lambda w: WF.train_stats(w.name),
    output:
        final_checkpoint("pretrain"),
    log:
        "logs/{name}/pretrain.log",
    params:
        experiment=lambda w: WF.experiment_file(w.name),
        fingerprint=lambda w: WF.fingerprint(w.name, "pretrain"),
    threads: lambda w: experiment(w.name).pretrain.resources.cpus_per_task
    resources:
        **{key: (lambda w, attempt, key=key: WF.resources(w.name, "pretrain", attempt, GPU_TYPE)[key])
           for key in ("nodes", "tasks", "cpus_per_task", "mem_mb", "runtime", "slurm_extra")},
    shell:
        "{PY:q} -m pipeline.train.launch pretrain --experiment {params.experiment:q} "
        "--train-data {input.data:q} --out {output:q} 2>&1 | tee -a {log:q}"
