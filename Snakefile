# clipforge: one experiment file -> results/<name>.table. Stages in order; logic lives in pipeline/.
#   snakemake --cores 2 results/demo.table          (or: ./clipforge demo)
#   snakemake --profile slurm results/clipa_l16_i37_t8.table
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/table.smk"


rule all:
    input:
        "results/demo.table",
    default_target: True
