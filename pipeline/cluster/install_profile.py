"""Install the Snakemake profile `slurm` from workflow/profiles/slurm/config.yaml (a template).

    python -m pipeline.cluster.install_profile --partition P --account A [--gpu-type T]
        [--gpu-partition G] [--max-jobs N] [--qos Q] [--dest DIR] [--force]

writes DIR/config.yaml, by default $XDG_CONFIG_HOME/snakemake/slurm (~/.config/snakemake/slurm), where
`snakemake --profile slurm` finds it. Cluster identity lives only in that file, never in the repository.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path
from string import Template
from typing import Optional

import yaml

from ..config import REPO_ROOT
from ..errors import UserError
from ..utils.io import write_text

TEMPLATE = REPO_ROOT / "workflow" / "profiles" / "slurm" / "config.yaml"
TRAINING_RULES = ("pretrain", "finetune")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")  # SLURM partition/account/QoS/GRES-type names


def default_dest() -> Path:
    """Where Snakemake looks up a profile by name (it follows XDG_CONFIG_HOME)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "snakemake" / "slurm"


def _check_name(value: Optional[str], option: str) -> None:
    if value is not None and not _NAME.match(value):
        raise UserError(f"{option}: {value!r} is not a SLURM name (letters, digits, _ . : -)")


def _optional_lines(*, qos: Optional[str], gpu_type: Optional[str], gpu_partition: Optional[str]) -> str:
    lines = []
    if qos:
        lines.append(f'slurm-qos: "{qos}"                # every job is submitted with --qos')
    lines += ["config:",
              "  protect_checkpoints: true         # final.pt of pretrain/finetune become read-only (protected)"]
    if gpu_type:
        lines += [f'  slurm_gpu_type: "{gpu_type}"          # read by the training rules: --gpus-per-node=TYPE:N']
    if gpu_partition:
        lines.append("set-resources:                     # training jobs go to the GPU partition")
        lines += [f"  {rule}:\n    slurm_partition: \"'{gpu_partition}'\"" for rule in TRAINING_RULES]
    return "\n".join(lines)


def render_profile(*, partition: str, account: str, gpu_type: Optional[str] = None,
                   gpu_partition: Optional[str] = None, max_jobs: int = 100, qos: Optional[str] = None,
                   command: str = "", template: Path = TEMPLATE) -> str:
    """Fill the template; the result is checked to be YAML whose values are what was asked for."""
    for value, option in ((partition, "--partition"), (account, "--account"), (gpu_type, "--gpu-type"),
                          (gpu_partition, "--gpu-partition"), (qos, "--qos")):
        _check_name(value, option)
    if max_jobs < 1:
        raise UserError(f"--max-jobs: {max_jobs} must be at least 1")
    text = Template(template.read_text()).substitute(
        partition=repr(partition), account=repr(account), max_jobs=max_jobs, command=command,
        optional=_optional_lines(qos=qos, gpu_type=gpu_type, gpu_partition=gpu_partition))
    profile = yaml.safe_load(text)
    if not isinstance(profile, dict) or profile.get("executor") != "slurm":
        raise UserError(f"{template}: not a SLURM profile template (executor: slurm missing)")
    return text


def install_profile(*, dest: Optional[Path] = None, force: bool = False, **settings) -> Path:
    """Write DEST/config.yaml (atomically); an existing different profile is kept unless force=True."""
    dest = Path(dest) if dest is not None else default_dest()
    text = render_profile(**settings)
    target = dest / "config.yaml"
    if target.is_file() and target.read_text() != text and not force:
        raise UserError(f"{target}: a different profile is already installed (pass --force to replace it)")
    write_text(target, text)
    return target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.cluster.install_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partition", required=True,
                        help="partition of every job (training too, unless --gpu-partition)")
    parser.add_argument("--account", required=True, help="SLURM account charged (sacctmgr show assoc user=$USER)")
    parser.add_argument("--gpu-type", help="GRES GPU type, e.g. a100: training asks --gpus-per-node=TYPE:N")
    parser.add_argument("--gpu-partition", help="partition of the pretrain/finetune jobs")
    parser.add_argument("--max-jobs", type=int, default=100, help="SLURM jobs queued or running at once")
    parser.add_argument("--qos", help="quality of service of every job")
    parser.add_argument("--dest", type=Path, default=None, help=f"profile folder (default {default_dest()})")
    parser.add_argument("--force", action="store_true", help="replace a different installed profile")
    args = parser.parse_args(argv)
    target = install_profile(dest=args.dest, force=args.force, partition=args.partition, account=args.account,
                             gpu_type=args.gpu_type, gpu_partition=args.gpu_partition, max_jobs=args.max_jobs,
                             qos=args.qos, command=shlex.join(argv))
    print(f"wrote {target}\nuse: snakemake --profile {'slurm' if target.parent == default_dest() else target.parent} "
          "results/<experiment>.table")
    return 0


if __name__ == "__main__":
    import sys

    from ..errors import run_main

    sys.exit(run_main(main))
