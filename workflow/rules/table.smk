rule curves:
    """Training curves of every stage of an experiment in one figure (shown by `snakemake --report`)."""
    input:
        lambda w: [f"results/{w.name}/{c}/final.pt" for c in WF.checkpoints(w.name)],
    output:
        report("results/{name}/curves.png", caption="../report/curves.rst", category="Curves",
               subcategory="{name}"),
    params:
        metrics=lambda w: [f"{c}=results/{w.name}/{c}/metrics.jsonl" for c in WF.checkpoints(w.name)],
    log:
        "logs/{name}/curves.log",
    localrule: True
    shell:
        "{PY:q} -m pipeline curves --metrics {params.metrics:q} --title {wildcards.name:q} --out {output:q} "
        "2>&1 | tee {log:q}"


rule table:
    """results/<name>.table (markdown), .csv and .tex: our numbers beside the published ones."""
    input:
        results=lambda w: WF.eval_results(w.name),
        curves="results/{name}/curves.png",
    output:
        table=report("results/{name}.table", caption="../report/table.rst", category="Tables"),
        csv="results/{name}.csv",
        tex="results/{name}.tex",
    log:
        "logs/{name}/table.log",
    params:
        experiment=lambda w: WF.experiment_file(w.name),
        fingerprint=lambda w: WF.fingerprint(w.name, "table"),
    localrule: True
    shell:
        "{PY:q} -m pipeline table --experiment {params.experiment:q} --results {input.results:q} "
        "--out {output.table:q} --csv {output.csv:q} --tex {output.tex:q} 2>&1 | tee {log:q}"


rule table_group:
    """results/tables/<group>.table: every experiment whose `groups` names <group>, side by side."""
    input:
        lambda w: [r for n in WF.group_members(w.group) for r in WF.eval_results(n)],
    output:
        table=report("results/tables/{group}.table", caption="../report/table.rst", category="Tables"),
        csv="results/tables/{group}.csv",
        tex="results/tables/{group}.tex",
    log:
        "logs/tables/{group}.log",
    params:
        experiments=lambda w: [WF.experiment_file(n) for n in WF.group_members(w.group)],
    localrule: True
    shell:
        "{PY:q} -m pipeline table-group --group {wildcards.group:q} --experiments {params.experiments:q} "
        "--results {input:q} --out {output.table:q} --csv {output.csv:q} --tex {output.tex:q} 2>&1 | tee {log:q}"
