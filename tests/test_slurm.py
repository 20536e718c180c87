"""SLURM operations: the profile installer, the test cluster, and workflows run through `sbatch`.

The cluster tests start a real one-node SLURM (munge, MariaDB + slurmdbd, slurmctld, slurmd) once per
session via devtools.testcluster; they skip, saying why, when not root or when the Debian
packages are missing and cannot be installed. Job states are read back with `sacct`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from devtools import _system as sysx
from pipeline.cluster import install_profile as ip
from devtools import testcluster
from devtools._slurmconf import Ports, node_line, slurm_conf
from pipeline.cluster.plan import describe, parse_dry_run, sbatch_options
from pipeline.errors import UserError
from pipeline.workflow import WorkflowConfig

REPO = Path(__file__).resolve().parents[1]
HELPERS = REPO / "tests" / "cluster"
# the plugin's defaults poll every 40 s at first; tests poll every second
FAST = ["--seconds-between-status-checks", "1", "--slurm-init-seconds-before-status-checks", "1",
        "--latency-wait", "5"]


# ---------------------------------------------------------------- profile installer (no cluster needed)
def test_profile_renders_requested_settings(tmp_path):
    target = ip.install_profile(dest=tmp_path / "slurm", partition="gpu-a100", account="proj_42",
                                gpu_type="a100", gpu_partition="gpu", max_jobs=7, qos="high")
    profile = yaml.safe_load(target.read_text())
    assert profile["executor"] == "slurm"
    assert profile["jobs"] == 7
    # resource values are Python expressions for Snakemake: names with '-' must stay strings
    assert profile["default-resources"]["slurm_partition"] == "'gpu-a100'"
    assert profile["default-resources"]["slurm_account"] == "'proj_42'"
    assert profile["slurm-qos"] == "high"
    assert profile["config"] == {"slurm_gpu_type": "a100", "protect_checkpoints": True}
    assert profile["set-resources"] == {r: {"slurm_partition": "'gpu'"} for r in ("pretrain", "finetune")}
    assert profile["retries"] >= 1 and profile["rerun-incomplete"] is True and profile["latency-wait"] >= 30
    # sacct's "CANCELLED by <uid>" is not a failure state to plugin 2.8.0 (it would wait forever); squeue's is
    assert profile["slurm-status-command"] == "squeue"
    assert "cpus_per_task" not in profile["default-resources"]  # rules without one get their threads


def test_profile_optional_settings_absent(tmp_path):
    profile = yaml.safe_load(ip.render_profile(partition="debug", account="root"))
    for key in ("slurm-qos", "set-resources"):
        assert key not in profile
    assert profile["config"] == {"protect_checkpoints": True}  # days of training are not overwritten by accident
    assert profile["jobs"] == 100


def test_profile_default_destination_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert ip.main(["--partition", "debug", "--account", "root"]) == 0
    written = tmp_path / "xdg" / "snakemake" / "slurm" / "config.yaml"
    assert "--partition debug --account root" in written.read_text()
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ip.default_dest() == tmp_path / "home" / ".config" / "snakemake" / "slurm"


def test_profile_rejects_bad_input_and_keeps_other_profile(tmp_path):
    with pytest.raises(UserError, match="--account: 'a b'"):
        ip.render_profile(partition="debug", account="a b")
    with pytest.raises(UserError, match="--max-jobs"):
        ip.render_profile(partition="debug", account="root", max_jobs=0)
    ip.install_profile(dest=tmp_path, partition="debug", account="root")
    with pytest.raises(UserError, match="--force"):
        ip.install_profile(dest=tmp_path, partition="other", account="root")
    ip.install_profile(dest=tmp_path, partition="other", account="root", force=True)
    assert "'other'" in (tmp_path / "config.yaml").read_text()


# ---------------------------------------------------------------- test-cluster pieces (no cluster needed)
def test_slurm_conf_for_one_node(tmp_path):
    node = node_line("NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 "
                     "RealMemory=24105\nUpTime=0-01:00:00\n")
    assert node.endswith("RealMemory=21694")
    conf = slurm_conf(cluster="c", host="vm", node=node, partition="debug", root=tmp_path, ports=Ports())
    assert "SlurmctldHost=vm(127.0.0.1)" in conf
    assert "AccountingStorageType=accounting_storage/slurmdbd" in conf  # the plugin polls sacct
    assert "AccountingStoreFlags=job_comment" in conf  # sacct shows the rule in the comment
    assert re.search(r"PartitionName=debug Nodes=vm .*DefMemPerCPU=\d+", conf)
    assert f"StateSaveLocation={tmp_path}/state" in conf
    two = slurm_conf(cluster="c", host="vm", node=node, partition="debug", root=tmp_path, ports=Ports(), nodes=2)
    # two slurmd daemons on one host: own names, own ports, half the memory each, %n-named spool/pid/log
    assert re.search(r"NodeName=vm NodeHostname=vm NodeAddr=127.0.0.1 Port=6818 CPUs=2 .*RealMemory=10847", two)
    assert re.search(r"NodeName=vm-2 NodeHostname=vm NodeAddr=127.0.0.1 Port=6838 CPUs=2 .*RealMemory=10847", two)
    assert "Nodes=vm,vm-2 " in two and f"SlurmdPidFile={tmp_path}/run/slurmd-%n.pid" in two


def test_recorded_pids_and_process_names(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "pids").write_text(f"python {os.getpid()}\nslurmd 999999999\n")
    assert testcluster.recorded_pids(tmp_path) == [("python", os.getpid()), ("slurmd", 999999999)]
    assert sysx.process_name(999999999) is None
    me = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert sysx.process_name(os.getpid()) == me
    # a PID whose process has another name is never signalled
    assert "not running" in sysx.terminate("slurmd", os.getpid())


# ---------------------------------------------------------------- dry run: what a cluster run would ask for
def _gpus_per_node(resources: dict) -> int:
    """GPUs per node however a rule asks: gpu=N, --gpus-per-node in slurm_extra, or gres=gpu[:type]:N."""
    if "gpu" in resources:
        return int(resources["gpu"])
    match = (re.search(r"--gpus-per-node=(?:\w+:)?(\d+)", str(resources.get("slurm_extra", "")))
             or re.search(r"gpu(?::\w+)?:(\d+)", str(resources.get("gres", ""))))
    return int(match.group(1)) if match else 0


def test_dry_run_shows_sbatch_resources_of_clipa(tmp_path):
    name = "clipa_l16_i37_t8"
    wf = WorkflowConfig()
    exp = wf.experiment(name)
    ip.install_profile(dest=tmp_path / "xdg" / "snakemake" / "slurm", partition="gpu", account="proj",
                       gpu_type="a100")
    env = {**snakemake_env(), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}  # `--profile slurm` is found there
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", "-s", str(REPO / "Snakefile"),
                           f"results/{name}.table"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r"Using profiles? slurm", out)
    jobs = parse_dry_run(out)
    assert {"data", "pretrain", "finetune", "zeroshot", "table"} <= {j.rule for j in jobs}
    for job in jobs:  # every job carries the profile's account and partition and a time limit
        assert (job.resources["slurm_account"], job.resources["slurm_partition"]) == ("proj", "gpu"), job
        assert job.resources["runtime"] >= 1
    for stage in ("pretrain", "finetune"):
        res = exp.stage(stage).resources
        job = next(j for j in jobs if j.rule == stage)
        assert job.resources["nodes"] == res.nodes and job.resources["mem_mb"] == res.mem_mb
        assert job.resources["runtime"] == res.runtime_min  # first attempt; retries ask for more
        assert _gpus_per_node(job.resources) == res.gpus_per_node == 8
        flags = sbatch_options(job)
        assert f"-t {res.runtime_min}" in flags and f"--nodes={res.nodes}" in flags
        assert f"--cpus-per-task={res.cpus_per_task}" in flags and re.search(r"--gpus(-per-node)?=(a100:)?8", flags)
        print(describe(job))


# ---------------------------------------------------------------- the cluster
@pytest.fixture(scope="session")
def slurm_cluster():
    """A running two-node SLURM (two slurmd daemons on this host) for the whole session, about 10 s to start
    once the packages are there; two nodes, so that multi-node training is tested too."""
    reason = sysx.unavailable_reason()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="clipforge-slurm-test-"))
    missing = sysx.missing_packages()
    try:
        cluster = testcluster.start(base=base, nodes=2)
    except sysx.ClusterError as exc:
        if missing and "apt-get" in str(exc):
            pytest.skip(f"could not install SLURM packages {missing}: {exc}")
        raise
    yield cluster
    testcluster.stop(base=base, clean=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_profile(slurm_cluster, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("profile") / "slurm"
    ip.install_profile(dest=dest, partition=slurm_cluster.partition, account=slurm_cluster.account, max_jobs=4)
    return dest


def snakemake_env() -> dict:
    env = dict(sysx.clean_env())
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # jobs get our venv (--export=ALL)
    env.update(NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def run_snakemake(args: list[str], *, cwd: Path, timeout: float, log: str = "snakemake.out"):
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=snakemake_env(), capture_output=True, text=True, timeout=timeout)
    (cwd / log).write_text(proc.stdout + proc.stderr)
    return proc


def run_id(output: str) -> str:
    """The plugin names every job of one Snakemake run after the run id it logs."""
    return re.search(r"SLURM run ID: (\S+)", output).group(1)


def sacct_jobs(name: str) -> list[dict]:
    """Allocations (not steps) whose job name is `name`, oldest first."""
    fields = ["JobID", "JobName", "Comment", "State", "ExitCode", "Timelimit", "ReqTRES", "NNodes", "Start", "End"]
    out = sysx.run(["sacct", "-n", "-P", "-X", "-S", "now-1days", "--name", name,
                    "-o", ",".join(f"{f}%200" for f in fields)]).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


@pytest.mark.slurm
def test_cluster_runs_and_accounts_a_job(slurm_cluster, tmp_path):
    assert testcluster.running(slurm_cluster.base) == slurm_cluster
    out = sysx.run(["sbatch", "--parsable", "-A", slurm_cluster.account, "-p", slurm_cluster.partition,
                    "-J", "clipforge-smoke", "-o", str(tmp_path / "%j.out"), "--wrap", "srun -n1 hostname"]).stdout
    job = out.strip().split(";")[0]
    sysx.wait_for(lambda: [j["State"] for j in sacct_jobs("clipforge-smoke")] == ["COMPLETED"],
                  timeout=30, what="the smoke job in sacct")
    assert (tmp_path / f"{job}.out").read_text().strip() == slurm_cluster.host  # both nodes are this host
    assert len(slurm_cluster.nodes) == 2


@pytest.mark.slurm
def test_workflow_jobs_go_through_sbatch_with_rule_resources(slurm_profile, tmp_path):
    t0 = time.monotonic()
    proc = run_snakemake(["--profile", str(slurm_profile), "--snakefile", str(HELPERS / "Snakefile"), *FAST,
                          "--retries", "0"], cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {j["Comment"]: j for j in sacct_jobs(run_id(proc.stderr))}
    assert set(jobs) == {"rule_two_cpus", "rule_one_cpu"}  # `all` is a localrule
    assert all(j["State"] == "COMPLETED" and j["ExitCode"] == "0:0" for j in jobs.values()), jobs
    for rule, cpus, mem, limit in (("two_cpus", 2, 200, "00:05:00"), ("one_cpu", 1, 300, "00:03:00")):
        seen = dict(kv.split("=") for kv in (tmp_path / "out" / f"{rule}.txt").read_text().split())
        job = jobs[f"rule_{rule}"]
        assert seen["job"] == job["JobID"] and seen["cpus"] == str(cpus)
        assert f"cpu={cpus}" in job["ReqTRES"] and f"mem={mem}M" in job["ReqTRES"], job
        assert job["Timelimit"] == limit
    assert (tmp_path / "logs" / "slurm" / "rule_two_cpus").is_dir()  # the profile's slurm-logdir
    print(f"two-job workflow through SLURM: {time.monotonic() - t0:.1f} s")


# ---------------------------------------------------------------- the demo workflow on the cluster
PRETRAIN_STEPS = 6
BATCH = 16


def _tiny_demo_config(dest: Path) -> Path:
    """A copy of config/ whose demo trains for a few steps on a few hundred images."""
    shutil.copytree(REPO / "config", dest)
    path = dest / "experiments" / "demo.yaml"
    exp = yaml.safe_load(path.read_text())
    # pretrain: 6 steps, a checkpoint every 2, so there is something to resume from when it is cancelled
    exp["pretrain"].update(epochs=None, samples=BATCH * PRETRAIN_STEPS, batch_size=BATCH, warmup_steps=1,
                           checkpoint_every=2, log_every=1)
    exp["finetune"].update(epochs=None, samples=BATCH, batch_size=BATCH, warmup_steps=0, checkpoint_every=1,
                           log_every=1)
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    for name, subset in (("fashion_mnist_demo", 128), ("fashion_mnist_demo_test", 50),
                         ("fashion_mnist_demo_labelled", 100)):
        ds_path = dest / "datasets" / f"{name}.yaml"
        ds = yaml.safe_load(ds_path.read_text())
        ds["subset"] = subset
        ds_path.write_text(yaml.safe_dump(ds, sort_keys=False))
    return dest


def _squeue_job(comment_prefix: str) -> str | None:
    out = sysx.run(["squeue", "-h", "-o", "%i|%k"], check=False).stdout
    return next((i for i, k in (line.split("|", 1) for line in out.splitlines() if "|" in line)
                 if k.startswith(comment_prefix)), None)


def _cancel_pretrain_after_first_checkpoint(work: Path, proc: subprocess.Popen, timeout: float) -> dict:
    """Wait for pretrain's first resumable checkpoint, then `scancel` its SLURM job mid-run."""
    ckpts = work / "results" / "demo" / "pretrain" / "checkpoints"
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        saved = sorted(ckpts.glob("step_*.pt"))
        job = _squeue_job("rule_pretrain") if saved else None
        if job:
            sysx.run(["scancel", job])
            return {"job": job, "saved": saved[-1].name}
        time.sleep(0.5)
    return {}


@pytest.fixture(scope="module")
def demo_run(slurm_profile, tmp_path_factory):
    """`snakemake --profile <slurm> results/demo.table` with --retries 1; pretrain is cancelled once."""
    work = tmp_path_factory.mktemp("demo")
    config_dir = _tiny_demo_config(work / "config")
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(slurm_profile), "-s", str(REPO / "Snakefile"),
           "results/demo.table", *FAST, "--retries", "1",
           "--config", f"config_dir={config_dir}", f"python={sys.executable}"]
    t0 = time.monotonic()
    with open(work / "snakemake.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=snakemake_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            cancelled = _cancel_pretrain_after_first_checkpoint(work, proc, timeout=300)
            proc.wait(timeout=480)
        finally:
            if proc.poll() is None:  # Ctrl-C: Snakemake scancels its jobs and exits
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    text = (work / "snakemake.out").read_text()
    print(f"demo workflow through SLURM (pretrain cancelled once): {time.monotonic() - t0:.1f} s")
    jobs = sacct_jobs(run_id(text)) if "SLURM run ID" in text else []
    for job in jobs:  # the timeline, for the suite's time budget
        print(f"  {job['JobID']:>4} {job['Comment'][:60]:60} {job['State'][:9]:9} "
              f"{job['Start'][11:]}-{job['End'][11:]}")
    return {"work": work, "rc": proc.returncode, "out": text, "cancelled": cancelled, "jobs": jobs}


def _rule(comment: str) -> str:
    return re.match(r"rule_(.+?)(?:_wildcards_.*)?$", comment).group(1)


@pytest.mark.slurm
@pytest.mark.slow
def test_demo_runs_every_job_through_sbatch(demo_run):
    assert demo_run["rc"] == 0, demo_run["out"][-4000:]
    work = demo_run["work"]
    assert (work / "results" / "demo.table").is_file()
    completed = [j for j in demo_run["jobs"] if j["State"] == "COMPLETED"]
    by_rule: dict[str, list[str]] = {}
    for job in completed:
        by_rule.setdefault(_rule(job["Comment"]), []).append(job["Comment"])
    # table is a localrule (runs beside Snakemake); every other rule ran as a SLURM job
    assert sorted(by_rule) == ["data", "finetune", "linear_probe", "pretrain", "zeroshot"], demo_run["jobs"]
    assert len(by_rule["data"]) == 3 and len(by_rule["zeroshot"]) == 2 and len(by_rule["linear_probe"]) == 2
    assert all(j["ExitCode"] == "0:0" for j in completed)
    assert "rule table" not in " ".join(j["Comment"] for j in demo_run["jobs"])


@pytest.mark.slurm
@pytest.mark.slow
def test_demo_cancelled_pretrain_resumes_from_its_checkpoint(demo_run):
    cancelled = demo_run["cancelled"]
    assert cancelled, "pretrain finished before it could be cancelled"
    pretrain = [j for j in demo_run["jobs"] if _rule(j["Comment"]) == "pretrain"]
    assert [j["State"].split()[0] for j in pretrain] == ["CANCELLED", "COMPLETED"], pretrain
    assert pretrain[0]["JobID"] == cancelled["job"]
    # the retry asked for twice the time limit (runtime grows with the attempt)
    minutes = [int(j["Timelimit"].split(":")[0]) * 60 + int(j["Timelimit"].split(":")[1]) for j in pretrain]
    assert minutes[1] == 2 * minutes[0]
    # each SLURM job keeps its own log: the cancelled attempt started at step 1, the retry at the step after
    # its newest checkpoint
    logs = [(demo_run["work"] / "logs" / "slurm" / "rule_pretrain" / "demo" / f"{j['JobID']}.log").read_text()
            for j in pretrain]
    steps = [[int(n) for n in re.findall(r"^step (\d+)/", log, re.M)] for log in logs]
    assert steps[0][0] == 1 and "resuming from" not in logs[0], logs[0][-2000:]
    resumed = re.search(r"resuming from \S+step_(\d+)\.pt", logs[1])
    assert resumed, logs[1][-3000:]
    step = int(resumed.group(1))
    assert int(re.search(r"\d+", cancelled["saved"]).group()) <= step <= steps[0][-1]
    assert steps[1] == list(range(step + 1, PRETRAIN_STEPS + 1))  # continued, not restarted from step 1
    assert "resuming from" in (demo_run["work"] / "logs" / "demo" / "pretrain.log").read_text()
    metrics = [json.loads(line)["step"] for line in
               (demo_run["work"] / "results" / "demo" / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert metrics == sorted(set(metrics)) and metrics[-1] == PRETRAIN_STEPS


@pytest.mark.slurm
@pytest.mark.slow
def test_two_node_pretrain_runs_one_torchrun_per_node(demo_run, slurm_profile):
    """resources.nodes: 2 -> one SLURM job on both nodes, one torchrun per node, ranks 0 and 1 meeting at the
    first node (the demo's data is reused, so this is a single pretrain job)."""
    work, config_dir = demo_run["work"], demo_run["work"] / "config"
    assert (work / "data" / "fashion_mnist_demo" / "stats.json").is_file()
    exp = yaml.safe_load((config_dir / "experiments" / "demo.yaml").read_text())
    exp["pretrain"]["resources"] = {"nodes": 2, "cpus_per_task": 1, "mem_mb": 3000, "runtime_min": 10}
    (config_dir / "experiments" / "demo2n.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    proc = run_snakemake(["--profile", str(slurm_profile), "-s", str(REPO / "Snakefile"),
                          "results/demo2n/pretrain/final.pt", *FAST, "--retries", "0",
                          "--config", f"config_dir={config_dir}", f"python={sys.executable}"],
                         cwd=work, timeout=300, log="snakemake-2n.out")
    log_path = work / "logs" / "demo2n" / "pretrain.log"
    log = log_path.read_text() if log_path.is_file() else ""
    assert proc.returncode == 0, (proc.stderr[-2000:], log[-2000:])
    jobs = [j for j in sacct_jobs(run_id(proc.stderr)) if _rule(j["Comment"]) == "pretrain"]
    assert [(j["State"], j["NNodes"]) for j in jobs] == [("COMPLETED", "2")], jobs
    ranks = sorted(re.findall(r"--nnodes 2 --node_rank (\d)", log))
    assert ranks == ["0", "1"], log[-2000:]
    metrics = (work / "results" / "demo2n" / "pretrain" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[-1])["step"] == PRETRAIN_STEPS
