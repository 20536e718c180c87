rule data:
    """Url list -> img2dataset webdataset shards + data/<dataset>/stats.json (shared by all experiments)."""
    input:
        config=lambda w: WF.dataset_file(w.dataset),
        sources=lambda w: WF.dataset_sources(w.dataset),
    output:
        "data/{dataset}/stats.json",
    log:
        "logs/data/{dataset}.log",
    threads: lambda w: dataset(w.dataset).img2dataset.processes
    resources:
        cpus_per_task=lambda w: dataset(w.dataset).img2dataset.processes,
        mem_mb=4000,
        runtime=lambda w, attempt: 120 * attempt,
    shell:
        "{PY} -m pipeline data --dataset {wildcards.dataset:q} --config-dir {CONFIG_DIR:q} "
        "--out {output:q} 2>&1 | tee {log:q}"
