"""`python -m pipeline.train.launch <pretrain|finetune> <stage args>`: run the stage under torchrun.

One node: `torchrun --standalone --nproc_per_node=<stage.processes> -m pipeline <stage> <args>` (also
for one process, so every run has the same environment). Several nodes (stage.resources.nodes > 1,
inside a SLURM allocation): `srun` starts this launcher once per node; each copy reads its node rank
(SLURM_NODEID), the node count (SLURM_NNODES) and the rendezvous host (first host of
SLURM_JOB_NODELIST via `scontrol show hostnames`) and execs one torchrun for its node.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from ..config import CONFIG_DIR, load_experiment
from ..errors import UserError

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
            f"--export=ALL,{NODE_FLAG}=1", sys.executable, "-m", "pipeline.train.launch", *argv]


def allocation_env(env: dict) -> dict:
    """The environment for the nested srun: inside Snakemake's job step the SLURM_* variables describe
    that one-node step, not the job, so keep only the job id (srun then asks the controller for the
    whole allocation) and the config path."""
    return {k: v for k, v in env.items() if not k.startswith("SLURM_") or k in ("SLURM_JOB_ID", "SLURM_CONF")}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("stage", choices=["pretrain", "finetune"])
    peek.add_argument("--experiment", required=True)
    peek.add_argument("--config-dir", default=CONFIG_DIR)
    args, _ = peek.parse_known_args(argv)
    stage = load_experiment(args.experiment, args.config_dir).stage(args.stage)
    nodes = stage.resources.nodes
    if nodes > 1 and "SLURM_JOB_ID" not in os.environ:
        raise UserError(f"{args.experiment}: {args.stage}.resources.nodes: {nodes} nodes need a SLURM allocation")
    env = dict(os.environ)
    if nodes > 1 and env.get(NODE_FLAG) != "1":
        command, env = srun_command(argv, nodes=nodes), allocation_env(env)
    else:
        command = torchrun_command(argv, processes=stage.processes, nodes=nodes, env=env)
    print("launch:", " ".join(command), flush=True)
    os.execvpe(command[0], command, env)
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    from ..errors import run_main

    sys.exit(run_main(main))
