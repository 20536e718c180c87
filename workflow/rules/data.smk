rule data:
    """Url list -> img2dataset webdataset shards + data/<dataset>/stats.json (shared by all experiments).
    Source files are checked by the command, not declared as inputs, so `-n` shows the whole DAG of an
    experiment whose metadata is not downloaded yet; editing the dataset config reruns (params trigger)."""
    output:
        "data/{dataset}/stats.json",
    log:
        "logs/data/{dataset}.log",
    params:
        fingerprint=lambda w: WF.dataset_fingerprint(w.dataset),
    threads: lambda w: dataset(w.dataset).img2dataset.processes
    resources:
        cpus_per_task=lambda w: dataset(w.dataset).img2dataset.processes,
        mem_mb=4000,
        runtime=lambda w, attempt: 120 * attempt,
    shell:
        "{PY:q} -m pipeline data --dataset {wildcards.dataset:q} --config-dir {CONFIG_DIR:q} "
        "--out {output:q} 2>&1 | tee {log:q}"
