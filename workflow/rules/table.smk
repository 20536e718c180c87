rule table:
    """results/<name>.table (markdown) and .csv: our numbers beside the published ones."""
    input:
        lambda w: WF.eval_results(w.name),
    output:
        table="results/{name}.table",
        csv="results/{name}.csv",
    log:
        "logs/{name}/table.log",
    params:
        experiment=lambda w: WF.experiment_file(w.name),
        fingerprint=lambda w: WF.fingerprint(w.name, "table"),
    localrule: True
    shell:
        "{PY} -m pipeline table --experiment {params.experiment:q} --results {input:q} "
        "--out {output.table:q} --csv {output.csv:q} 2>&1 | tee {log:q}"
