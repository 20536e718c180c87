"""What a SLURM run would submit: `snakemake -n` per job, turned into the plugin's own sbatch flags.

    python -m pipeline.cluster.plan --profile slurm results/clipa_l16_i37_t8.table

runs `snakemake -n <args>` (nothing is submitted) and prints, per job, the rule, its wildcards and the
sbatch options snakemake-executor-plugin-slurm builds from the job's resources (nodes, tasks, CPUs,
memory, time limit, GPUs). Not shown: what the plugin adds from the profile's own settings (--qos,
--requeue); `<threads>` where a rule without cpus_per_task would get its thread count.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

from ..errors import UserError

_HEADER = re.compile(r"^(local)?rule (\w+):$")


@dataclass
class PlannedJob:
    rule: str
    local: bool
    wildcards: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)
    threads: int | None = None  # printed only when above 1 in a real run; a dry run leaves it out


def _value(text: str):
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def _pairs(text: str) -> dict:
    """`a=1, b=x y` -> {"a": 1, "b": "x y"} (values never hold ', ' in these lines)."""
    out = {}
    for item in text.split(", "):
        key, _, value = item.partition("=")
        if value != "<TBD>":
            out[key.strip()] = _value(value)
    return out


def parse_dry_run(text: str) -> list[PlannedJob]:
    """Jobs of a `snakemake -n` printout, in printed order."""
    jobs: list[PlannedJob] = []
    for line in text.splitlines():
        header = _HEADER.match(line.strip())
        if header:
            jobs.append(PlannedJob(rule=header.group(2), local=bool(header.group(1))))
            continue
        if not jobs:
            continue
        key, _, rest = line.strip().partition(": ")
        if key == "wildcards":
            jobs[-1].wildcards = _pairs(rest)
        elif key == "resources":
            jobs[-1].resources = _pairs(rest)
        elif key == "threads":
            jobs[-1].threads = int(rest)
    return jobs


class _Resources(dict):
    """The attribute-and-get access the plugin uses on job.resources."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


@dataclass
class _Job:
    resources: _Resources
    threads: int


def sbatch_options(job: PlannedJob) -> str:
    """The options snakemake-executor-plugin-slurm would pass to sbatch for this job."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    res = _Resources(job.resources)
    fake = _Job(resources=res, threads=job.threads)
    params = {"run_uuid": "RUN", "slurm_logfile": "LOG", "comment_str": "COMMENT", "workdir": None,
              "account": f"-A {shlex.quote(str(res['slurm_account']))}" if res.get("slurm_account") else "",
              "partition": f"-p {res['slurm_partition']}" if res.get("slurm_partition") else ""}
    call = get_submit_command(fake, params) + set_gres_string(fake)
    call = call.replace("sbatch --parsable --job-name RUN --output LOG --export=ALL --comment COMMENT", "sbatch")
    return " ".join(call.replace("=None", "=<threads>").split())


def describe(job: PlannedJob) -> str:
    wildcards = ",".join(f"{k}={v}" for k, v in job.wildcards.items())
    return f"{job.rule}[{wildcards}]: {'local (not submitted)' if job.local else sbatch_options(job)}"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise UserError(f"snakemake -n {' '.join(argv)}: exit {proc.returncode} (output above)")
    jobs = parse_dry_run(proc.stdout + proc.stderr)
    for job in jobs:
        print(describe(job))
    print(f"{len(jobs)} jobs (a rule marked `localrule` runs on the submit host; a dry run does not say which)")
    return 0


if __name__ == "__main__":
    from ..errors import run_main

    sys.exit(run_main(main))
