rule curves:
    """Training curves of every stage of an experiment in one figure (shown by `snakemake --report`)."""
    input:
        lambda w: [path("checkpoint", name=w.name, stage=c) for c in WF.checkpoints(w.name)],
    output:
        report(PATHS["curves"], caption="../report/curves.rst", category="Curves", subcategory="{name}"),
    log:
        PATHS["curves_log"],
    params:
        args=lambda w, output: ["--metrics", *[f"{c}={path('metrics', name=w.name, stage=c)}"
                                               for c in WF.checkpoints(w.name)],
                                "--title", w.name, "--out", output[0]],
    localrule: True
    shell:
        STAGE


rule table:
    """results/<name>.table (markdown), .csv and .tex: our numbers beside the published ones."""
    input:
        results=lambda w: WF.eval_results(w.name),
        curves=PATHS["curves"],
    output:
        table=report(path("table", ext="table"), caption="../report/table.rst", category="Tables"),
        csv=path("table", ext="csv"),
        tex=path("table", ext="tex"),
    log:
        PATHS["table_log"],
    params:
        fingerprint=lambda w: WF.fingerprint(w.name, "table"),
        args=lambda w, input, output: ["--experiment", WF.experiment_file(w.name), "--results", *input.results,
                                       "--out", output.table, "--csv", output.csv, "--tex", output.tex],
    localrule: True
    shell:
        STAGE


rule table_group:
    """results/tables/<group>.table: every experiment whose `groups` names <group>, side by side."""
    wildcard_constraints:
        group=r"(?!findings\.[a-z]+$)[A-Za-z0-9][A-Za-z0-9_.-]*",  # the lookahead sees the path's end: findings.* is the findings rule's
    input:
        lambda w: [r for n in WF.group_members(w.group) for r in WF.eval_results(n)],
    output:
        table=report(path("group_table", ext="table"), caption="../report/table.rst", category="Tables"),
        csv=path("group_table", ext="csv"),
        tex=path("group_table", ext="tex"),
    log:
        PATHS["group_log"],
    params:
        args=lambda w, input, output: ["--group", w.group,
                                       "--experiments", *[WF.experiment_file(n) for n in WF.group_members(w.group)],
                                       "--results", *input, "--out", output.table, "--csv", output.csv,
                                       "--tex", output.tex],
    localrule: True
    shell:
        STAGE


rule findings:
    """results/tables/findings.table: each seed's claim replicated at CPU size, measured, holds or not
    (config/findings.yaml; docs/findings.md)."""
    input:
        lambda w: list(WF.findings_inputs(FINDINGS).values()),
    output:
        table=report(path("findings", ext="table"), caption="../report/findings.rst", category="Findings"),
        csv=path("findings", ext="csv"),
        tex=path("findings", ext="tex"),
    log:
        PATHS["findings_log"],
    params:
        fingerprint=lambda w: read_yaml(FINDINGS),
        args=lambda w, output: ["--spec", str(FINDINGS),
                                *[a for k, v in WF.findings_inputs(FINDINGS).items() for a in ("--input", f"{k}={v}")],
                                "--out", output.table, "--csv", output.csv, "--tex", output.tex],
    localrule: True
    shell:
        STAGE

