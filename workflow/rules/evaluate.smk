# One rule per evaluation registered in pipeline.evaluate (zeroshot, linear_probe, finetune_eval, wiseft,
# supervised_baseline, retrieval, ...), all of one shape. Each output is one file per (checkpoint, evaluation,
# dataset), so adding a dataset or changing one evaluation's settings reruns only that evaluation.
from pipeline.evaluate import evaluations

for _evaluation in evaluations():

    rule:
        name:
            _evaluation.name
        input:
            unpack(WF.eval_inputs(_evaluation.name)),
        output:
            **WF.eval_outputs(_evaluation.name),
        log:
            WF.eval_log(_evaluation.name),
        params:
            fingerprint=WF.eval_fingerprint(_evaluation.name),
            args=WF.eval_args(_evaluation.name),
        threads: WF.threads("evaluate")
        resources:
            **WF.resources("evaluate"),
        shell:
            STAGE
