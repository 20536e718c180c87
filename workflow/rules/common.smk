# Config loading and input functions shared by the rules. Anything longer belongs in pipeline/.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from pipeline.config import ConfigError, read_yaml
from pipeline.config import schema_path
from pipeline.workflow import WorkflowConfig

# --config config_dir=PATH reads experiments and datasets from another folder (tests use it).
CONFIG_DIR = Path(config.get("config_dir", Path(workflow.basedir) / "config"))
# interpreter that runs `-m pipeline` in every rule: the one running Snakemake, unless --config python=...
PY = config.get("python", sys.executable)
GPU_TYPE = config.get("slurm_gpu_type")  # set by the installed slurm profile (--gpu-type)
# The slurm profile sets protect_checkpoints: final checkpoints that took days become read-only, and
# Snakemake refuses to overwrite them after a code or config edit (remove the file to retrain on purpose).
PROTECT = bool(config.get("protect_checkpoints", False))


def final_checkpoint(stage):
    path = f"results/{{name}}/{stage}/final.pt"
    return protected(path) if PROTECT else path


def _validated(kind, path):
    """Snakemake's own schema validation, then the typed load: both before any job runs."""
    validate(read_yaml(path), schema=str(schema_path(kind)))


WF = WorkflowConfig(config_dir=CONFIG_DIR, validate=_validated)


def experiment(name):
    try:
        return WF.experiment(name)
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


def dataset(name):
    try:
        return WF.dataset(name)
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


wildcard_constraints:
    name=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    ckpt=r"pretrain|finetune",


def _check_requested_configs():
    """Targets named on the command line get their configs checked at parse time: one clear line."""
    from pipeline.workflow import requested

    names, datasets = requested(a for a in sys.argv[1:] if not a.startswith("-"))
    try:
        for name in names:
            WF.experiment(name)
        for name in datasets:
            WF.dataset(name)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1)


_check_requested_configs()
