# Config loading and the pieces every rule shares. Anything longer belongs in pipeline/ (pipeline.workflow).
import logging
import re
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)
# open_clip logs notes on the root logger while configs are pre-flighted; its first one would install a stderr
# handler (logging.basicConfig) and Snakemake's own log lines, which propagate to the root, would print twice
logging.getLogger().addHandler(logging.NullHandler())

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from pipeline.config import ConfigError, experiment_raw, read_yaml
from pipeline.config import schema_path
from pipeline.workflow import PATHS, WorkflowConfig, path

# --config config_dir=PATH reads experiments and datasets from another folder (tests use it).
CONFIG_DIR = Path(config.get("config_dir", Path(workflow.basedir) / "config"))
# the seeds' claims replicated at CPU size (results/tables/findings.table)
FINDINGS = CONFIG_DIR / "findings.yaml"
# interpreter that runs `-m pipeline` in every rule: the one running Snakemake, unless --config python=...
PY = config.get("python", sys.executable)
# The slurm profile sets protect_checkpoints: final checkpoints that took days become read-only, and
# Snakemake refuses to overwrite them after a code or config edit (remove the file to retrain on purpose).
PROTECT = bool(config.get("protect_checkpoints", False))
# Every rule runs one stage: `python -m pipeline <rule name> <argv from params.args>`, its output logged.
STAGE = "{PY:q} -m pipeline {rule} {params.args:q} 2>&1 | tee -a {log:q}"


def _validated(kind, path):
    """Snakemake's own schema validation after the typed load; WF then pre-flights every experiment it reads
    (pipeline.preflight: the jobs' own builders on the meta device): all before any job runs."""
    raw = experiment_raw(path, CONFIG_DIR) if kind == "experiment" else read_yaml(path)
    validate(raw, schema=str(schema_path(kind)))


# slurm_gpu_type is set by the installed slurm profile (--gpu-type)
WF = WorkflowConfig(config_dir=CONFIG_DIR, validate=_validated, gpu_type=config.get("slurm_gpu_type"),
                    error=WorkflowError)


def final_checkpoint(stage):
    out = path("checkpoint", stage=stage)
    return protected(out) if PROTECT else out


wildcard_constraints:
    name=r"[A-Za-z0-9][A-Za-z0-9_.-]*(@[0-9]+)?",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    ckpt=r"pretrain|finetune|(?:openai|open_clip|file)[A-Za-z0-9_.-]*",  # stages, evaluate.checkpoints rows


def _check_requested_configs():
    """Targets named on the command line get their configs checked at parse time: one clear line."""
    from pipeline.workflow import requested

    targets = [a for a in sys.argv[1:] if not a.startswith("-")]
    names, datasets = requested(targets)
    tables = [m.group(1) for m in (re.match(r"^(?:\./)?results/tables/([^/.]+)\.", t) for t in targets) if m]
    try:
        for table in tables:  # loads and pre-flights every member (of a group, or of the findings)
            if table == "findings":
                WF.findings_inputs(FINDINGS)
            else:
                WF.group_members(table)
        for name in names:
            WF.experiment(name)
        for name in datasets:
            WF.dataset(name)
    except (ConfigError, WorkflowError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1)


_check_requested_configs()
