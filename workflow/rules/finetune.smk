rule finetune:
    """Full-token-length fine-tuning from the pretrain checkpoint (position embeddings resampled)."""
    input:
        data=lambda w: WF.train_stats(w.name),
        init="results/{name}/pretrain/final.pt",
    output:
        "results/{name}/finetune/final.pt",
    log:
        "logs/{name}/finetune.log",
    params:
        experiment=lambda w: WF.experiment_file(w.name),
        fingerprint=lambda w: WF.fingerprint(w.name, "finetune"),
    threads: lambda w: experiment(w.name).finetune.resources.cpus_per_task
    resources:
        nodes=lambda w: WF.resources(w.name, "finetune")["nodes"],
        tasks_per_node=1,
        cpus_per_task=lambda w: WF.resources(w.name, "finetune")["cpus_per_task"],
        mem_mb=lambda w: WF.resources(w.name, "finetune")["mem_mb"],
        runtime=lambda w, attempt: WF.resources(w.name, "finetune", attempt)["runtime"],
        gpu=lambda w: WF.resources(w.name, "finetune").get("gpu", 0),
    shell:
        "{PY} -m pipeline.train.launch finetune --experiment {params.experiment:q} "
        "--train-data {input.data:q} --init {input.init:q} --out {output:q} 2>&1 | tee -a {log:q}"
