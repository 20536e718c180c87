rule pretrain:
    """Contrastive pretraining with reduced tokens; resumes from results/<name>/pretrain/checkpoints/.
    Only final.pt is declared, so Snakemake never deletes the resumable checkpoints of a failed attempt."""
    input:
        data=lambda w: WF.train_stats(w.name),
    output:
        "results/{name}/pretrain/final.pt",
    log:
        "logs/{name}/pretrain.log",
    params:
        experiment=lambda w: WF.experiment_file(w.name),
        fingerprint=lambda w: WF.fingerprint(w.name, "pretrain"),
    threads: lambda w: experiment(w.name).pretrain.resources.cpus_per_task
    resources:
        nodes=lambda w: WF.resources(w.name, "pretrain")["nodes"],
        tasks_per_node=1,
        cpus_per_task=lambda w: WF.resources(w.name, "pretrain")["cpus_per_task"],
        mem_mb=lambda w: WF.resources(w.name, "pretrain")["mem_mb"],
        runtime=lambda w, attempt: WF.resources(w.name, "pretrain", attempt)["runtime"],
        gpu=lambda w: WF.resources(w.name, "pretrain").get("gpu", 0),
    shell:
        "{PY} -m pipeline.train.launch pretrain --experiment {params.experiment:q} "
        "--train-data {input.data:q} --out {output:q} 2>&1 | tee -a {log:q}"
