"""How distributed stages start: `python -m pipeline <stage> ...` of a training stage (pretrain, finetune) or of
a distributed evaluation (finetune_eval, supervised_baseline) re-runs itself under torchrun.

One node: `torchrun --standalone --nproc_per_node=<processes> -m pipeline <stage> <args>` (also for one
process, so every run has the same environment); processes come from the stage's config section. Several nodes
(a training stage's resources.nodes > 1, inside a SLURM allocation): `srun` starts this launcher once per node;
each copy reads its node rank (SLURM_NODEID), the node count (SLURM_NNODES) and the rendezvous host (first host
of SLURM_JOB_NODELIST via `scontrol show hostnames`) and execs one torchrun for its node. Inside torchrun
(LOCAL_RANK set) the stage itself runs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from .config import experiment_source
from .errors import UserError

TRAINING = ("pretrain", "finetune")

NODE_FLAG = "CLIPFORGE_NODE_LAUNCH"  # set by the srun step: "this copy is the per-node launcher"


def rendezvous_port(job_id: str) -> int:
    """A port derived from the job id, so two jobs sharing a node do not collide."""
    return 20000 + int(job_id) % 20000


def first_host(nodelist: str) -> str:
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], check=True, capture_output=True, text=True)
    return out.stdout.split()[0]


def torchrun_command(stage_argv: list[str], *, processes: int, nodes: int, env: dict) -> list[str]:
    """The torchrun command line for this node."""
    run = [sys.executable, "-m", "torch.distributed.run"]
    tail = ["--nproc_per_node", str(processes), "-m", "pipeline", *stage_argv]
    if nodes == 1:
        return [*run, "--standalone", *tail]
    if int(env["SLURM_NNODES"]) != nodes:
        raise UserError(f"resources.nodes: {nodes}, but the SLURM allocation has {env['SLURM_NNODES']} nodes")
    return [*run, "--nnodes", str(nodes), "--node_rank", env["SLURM_NODEID"],
            "--master_addr", first_host(env["SLURM_JOB_NODELIST"]),
            "--master_port", str(rendezvous_port(env["SLURM_JOB_ID"])), *tail]


def srun_command(argv: list[str], *, nodes: int) -> list[str]:
    """One task per node, each running this launcher again (with NODE_FLAG set). --overlap: this runs
    inside the Snakemake job step, which holds the first node's CPUs (a plain nested srun waits forever);
    --kill-on-bad-exit: one node failing stops all, so the retry resumes from the checkpoint."""
    return ["srun", "--overlap", "--kill-on-bad-exit=1", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
            f"--export=ALL,{NODE_FLAG}=1", sys.executable, "-m", "pipeline", *argv]


def allocation_env(env: dict) -> dict:
    """The environment for the nested srun: inside Snakemake's job step the SLURM_* variables describe
    that one-node step, not the job, so keep only the job id (srun then asks the controller for the
    whole allocation) and the config path."""
    return {k: v for k, v in env.items() if not k.startswith("SLURM_") or k in ("SLURM_JOB_ID", "SLURM_CONF")}


def is_distributed(stage: str) -> bool:
    """Whether `python -m pipeline <stage>` runs under torchrun."""
    if stage in TRAINING:
        return True
    from .evaluate import evaluations

    return any(e.name == stage and e.distributed for e in evaluations())


def inside_launch() -> bool:
    """True inside torchrun's worker processes (and so: run the stage itself)."""
    return "LOCAL_RANK" in os.environ


def die_with_launcher() -> None:
    """Make this torchrun worker die when its launcher dies. torchrun starts workers in sessions of their own,
    so a SIGKILL of the job's process group (a preemption, `kill -9`, the OOM killer) would leave them training
    on and writing checkpoints beside the rerun; Linux's parent-death signal ends them instead."""
    import ctypes
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: nothing to do
        return
    if os.getppid() != parent:  # the launcher died before the call
        os._exit(1)


def processes_and_nodes(stage: str, experiment) -> tuple[int, int]:
    if stage in TRAINING:
        section = experiment.stage(stage)
        return section.processes, section.resources.nodes
    settings = getattr(experiment.evaluate, stage)
    return (settings.processes if "processes" in settings else 1), 1


def main(argv: list[str]) -> int:
    """Exec torchrun (or srun, then torchrun per node) for `python -m pipeline <stage> <args>`."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--experiment", required=True)
    args, _ = peek.parse_known_args(argv[1:])
    stage = argv[0]
    processes, nodes = processes_and_nodes(stage, experiment_source(args.experiment)[0])
    if nodes > 1 and "SLURM_JOB_ID" not in os.environ:
        raise UserError(f"{args.experiment}: {stage}.resources.nodes: {nodes} nodes need a SLURM allocation")
    env = dict(os.environ)
    if nodes > 1 and env.get(NODE_FLAG) != "1":
        command, env = srun_command(argv, nodes=nodes), allocation_env(env)
    else:
        command = torchrun_command(argv, processes=processes, nodes=nodes, env=env)
    print("launch:", " ".join(command), flush=True)
    os.execvpe(command[0], command, env)
    return 0  # not reached: exec replaced this process
