rule data:
    """Url list -> img2dataset webdataset shards + data/<dataset>/stats.json (shared by all experiments).
    Source files are checked by the command, not declared as inputs, so `-n` shows the whole DAG of an
    experiment whose metadata is not downloaded yet; editing the dataset config reruns (params trigger)."""
    output:
        PATHS["stats"],
    log:
        PATHS["data_log"],
    params:
        fingerprint=lambda w: WF.dataset_fingerprint(w.dataset),
        args=lambda w, output: ["--dataset", w.dataset, "--config-dir", str(CONFIG_DIR), "--out", output[0]],
    threads: WF.threads("data")
    resources:
        **WF.resources("data"),
    shell:
        STAGE
