# One rule per evaluation; each output is one JSON per (checkpoint, task, dataset), so adding a dataset or
# changing one evaluation's settings reruns only that evaluation.


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
    threads: lambda w: experiment(w.name).evaluate.resources.cpus_per_task
    resources:
        **{key: (lambda w, attempt, key=key: WF.eval_resources(w.name, attempt, GPU_TYPE)[key])
           for key in ("cpus_per_task", "mem_mb", "runtime", "slurm_extra")},
    shell:
        "{PY:q} -m pipeline zeroshot --checkpoint {input.checkpoint:q} --dataset {wildcards.dataset:q} "
        "--data {input.data:q} --out {output:q} --batch-size {params.batch_size} "
        "--workers {params.workers} 2>&1 | tee {log:q}"


rule linear_probe:
    """Logistic-regression probe on cached frozen features (L2 chosen on a split of train, refit on all)."""
    input:
        checkpoint="results/{name}/{ckpt}/final.pt",
        train=lambda w: WF.train_split(w.name, "linear_probe", w.dataset),
        test="data/{dataset}/stats.json",
    output:
        "results/{name}/eval/{ckpt}/linear_probe/{dataset}.json",
    log:
        "logs/{name}/eval/{ckpt}/linear_probe/{dataset}.log",
    params:
        cache="results/{name}/eval/{ckpt}/features",
        c_values=lambda w: [str(c) for c in experiment(w.name).evaluate.linear_probe.c_values],
        lp=lambda w: experiment(w.name).evaluate.linear_probe,
        batch_size=lambda w: experiment(w.name).evaluate.batch_size,
        workers=lambda w: experiment(w.name).evaluate.workers,
    threads: lambda w: experiment(w.name).evaluate.resources.cpus_per_task
    resources:
        **{key: (lambda w, attempt, key=key: WF.eval_resources(w.name, attempt, GPU_TYPE)[key])
           for key in ("cpus_per_task", "mem_mb", "runtime", "slurm_extra")},
    shell:
        "{PY:q} -m pipeline linear-probe --checkpoint {input.checkpoint:q} --dataset {wildcards.dataset:q} "
        "--train-data {input.train:q} --test-data {input.test:q} --out {output:q} --cache-dir {params.cache:q} "
        "--c-values {params.c_values:q} --val-fraction {params.lp.val_fraction} --max-iter {params.lp.max_iter} "
        "--seed {params.lp.seed} --batch-size {params.batch_size} --workers {params.workers} 2>&1 | tee {log:q}"


rule finetune_eval:
    """FT-CLIP fine-tuning (timm ViT, layer decay, EMA) through DeepSpeed; torchrun even for 1 process."""
    input:
        checkpoint="results/{name}/{ckpt}/final.pt",
        train=lambda w: WF.train_split(w.name, "finetune_eval", w.dataset),
        test="data/{dataset}/stats.json",
    output:
        result="results/{name}/eval/{ckpt}/finetune/{dataset}.json",
        model="results/{name}/eval/{ckpt}/finetune/{dataset}.pt",
    log:
        "logs/{name}/eval/{ckpt}/finetune/{dataset}.log",
    params:
        args=lambda w: WF.finetune_eval_args(w.name),
        procs=lambda w: experiment(w.name).evaluate.finetune_eval.processes,
    threads: lambda w: experiment(w.name).evaluate.resources.cpus_per_task
    resources:
        **{key: (lambda w, attempt, key=key: WF.eval_resources(w.name, attempt, GPU_TYPE)[key])
           for key in ("cpus_per_task", "mem_mb", "runtime", "slurm_extra")},
    shell:
        "{PY:q} -m torch.distributed.run --standalone --nproc_per_node {params.procs} -m pipeline finetune-eval "
        "--checkpoint {input.checkpoint:q} --dataset {wildcards.dataset:q} --train-data {input.train:q} "
        "--test-data {input.test:q} --out {output.result:q} --save-model {output.model:q} {params.args:q} "
        "2>&1 | tee {log:q}"


rule wiseft:
    """WiSE-FT curve: zero-shot <-> fine-tuned weight interpolation, accuracy per alpha and a plot."""
    input:
        checkpoint="results/{name}/{ckpt}/final.pt",
        finetuned="results/{name}/eval/{ckpt}/finetune/{dataset}.pt",
        test="data/{dataset}/stats.json",
    output:
        result="results/{name}/eval/{ckpt}/wiseft/{dataset}.json",
        plot="results/{name}/eval/{ckpt}/wiseft/{dataset}.png",
    log:
        "logs/{name}/eval/{ckpt}/wiseft/{dataset}.log",
    params:
        alphas=lambda w: [str(a) for a in experiment(w.name).evaluate.wiseft.alphas],
        headline=lambda w: experiment(w.name).evaluate.wiseft.headline_alpha,
        ema=lambda w: ["--ema"] if experiment(w.name).evaluate.wiseft.ema else [],
        batch_size=lambda w: experiment(w.name).evaluate.batch_size,
    threads: lambda w: experiment(w.name).evaluate.resources.cpus_per_task
    resources:
        **{key: (lambda w, attempt, key=key: WF.eval_resources(w.name, attempt, GPU_TYPE)[key])
           for key in ("cpus_per_task", "mem_mb", "runtime", "slurm_extra")},
    shell:
        "{PY:q} -m pipeline wiseft --checkpoint {input.checkpoint:q} --finetuned {input.finetuned:q} "
        "--dataset {wildcards.dataset:q} --test-data {input.test:q} --out {output.result:q} "
        "--plot {output.plot:q} --alphas {params.alphas:q} --headline-alpha {params.headline} {params.ema:q} "
        "--batch-size {params.batch_size} 2>&1 | tee {log:q}"


rule supervised_baseline:
    """ResNet-50 with a new head (head lr x10); random init unless evaluate.supervised_baseline.weights."""
    input:
        train=lambda w: WF.train_split(w.name, "supervised_baseline", w.dataset),
        test="data/{dataset}/stats.json",
    output:
        "results/{name}/eval/resnet50/finetune/{dataset}.json",
    log:
        "logs/{name}/eval/resnet50/finetune/{dataset}.log",
    params:
        experiment=lambda w: WF.experiment_file(w.name),
        args=lambda w: WF.supervised_args(w.name),
    threads: lambda w: experiment(w.name).evaluate.resources.cpus_per_task
    resources:
        **{key: (lambda w, attempt, key=key: WF.eval_resources(w.name, attempt, GPU_TYPE)[key])
           for key in ("cpus_per_task", "mem_mb", "runtime", "slurm_extra")},
    shell:
        "{PY:q} -m torch.distributed.run --standalone --nproc_per_node 1 -m pipeline supervised-baseline "
        "--experiment {params.experiment:q} --dataset {wildcards.dataset:q} --train-data {input.train:q} "
        "--test-data {input.test:q} --out {output:q} {params.args:q} 2>&1 | tee {log:q}"


rule retrieval:
    """Image <-> text recall@1/5/10 on a Karpathy-layout caption set (COCO / Flickr), read in place."""
    input:
        checkpoint="results/{name}/{ckpt}/final.pt",
        annotations=lambda w: WF.retrieval_set(w.name, w.dataset).annotations,
    output:
        "results/{name}/eval/{ckpt}/retrieval/{dataset}.json",
    log:
        "logs/{name}/eval/{ckpt}/retrieval/{dataset}.log",
    params:
        images_root=lambda w: WF.retrieval_set(w.name, w.dataset).images_root,
        split=lambda w: WF.retrieval_set(w.name, w.dataset).split,
        batch_size=lambda w: experiment(w.name).evaluate.batch_size,
        workers=lambda w: experiment(w.name).evaluate.workers,
    threads: lambda w: experiment(w.name).evaluate.resources.cpus_per_task
    resources:
        **{key: (lambda w, attempt, key=key: WF.eval_resources(w.name, attempt, GPU_TYPE)[key])
           for key in ("cpus_per_task", "mem_mb", "runtime", "slurm_extra")},
    shell:
        "{PY:q} -m pipeline retrieval --checkpoint {input.checkpoint:q} --dataset {wildcards.dataset:q} "
        "--annotations {input.annotations:q} --images-root {params.images_root:q} --split {params.split:q} "
        "--out {output:q} --batch-size {params.batch_size} --workers {params.workers} 2>&1 | tee {log:q}"
