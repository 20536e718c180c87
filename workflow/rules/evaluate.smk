rule zeroshot:
    """Zero-shot classification of one labelled dataset by one checkpoint (class names x templates)."""
    input:
        checkpoint="results/{name}/{ckpt}/final.pt",
        data="data/{dataset}/stats.json",
    output:
        "results/{name}/eval/{ckpt}/zeroshot/{dataset}.json",
    log:
        "logs/{name}/eval/{ckpt}/zeroshot/{dataset}.log",
    params:
        batch_size=lambda w: experiment(w.name).evaluate.batch_size,
        workers=lambda w: experiment(w.name).evaluate.workers,
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "{PY} -m pipeline zeroshot --checkpoint {input.checkpoint:q} --dataset {wildcards.dataset:q} "
        "--data {input.data:q} --out {output:q} --batch-size {params.batch_size} "
        "--workers {params.workers} 2>&1 | tee {log:q}"
