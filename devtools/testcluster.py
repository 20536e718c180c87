"""A throwaway single-node SLURM cluster with accounting, for testing the workflow through `sbatch`.

    python -m devtools.testcluster start [--base DIR] [--partition debug] [--nodes N]
    python -m devtools.testcluster status|stop [--base DIR] [--clean]

Needs root on Debian (installs slurmctld slurmd slurm-client munge slurmdbd mariadb-server when missing).
State, logs and the MariaDB data live under DIR/cluster; every daemon binds 127.0.0.1 (slurmdbd 0.0.0.0,
Slurm 22.05 has no option) and its PID is recorded in DIR/cluster/run/pids, so `stop` ends exactly
those processes. /etc/slurm/{slurm,slurmdbd}.conf become symlinks into DIR while it runs: the jobstep
plugin drops SLURM_CONF from the srun it nests inside each job, so only the default path works.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from . import _system as sysx
from ._slurmconf import Ports, node_line, node_names, slurm_conf, slurmdbd_conf
from ._system import ClusterError

DEFAULT_BASE = Path(os.environ.get("TMPDIR", "/tmp")) / "clipforge-slurm"
ETC = Path("/etc/slurm")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")  # slurmdbd ignores AuthInfo=socket=, so the default one
ACCOUNT = "root"  # created with the cluster by sacctmgr; passes the plugin's account check


@dataclass(frozen=True)
class Cluster:
    base: str
    partition: str
    account: str
    name: str
    host: str
    nodes: list
    started_s: float

    @property
    def root(self) -> Path:
        return Path(self.base) / "cluster"


def _log(msg: str) -> None:
    print(f"[testcluster {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _record(root: Path, name: str, pid: int) -> None:
    with open(root / "run" / "pids", "a") as f:
        f.write(f"{name} {pid}\n")


def recorded_pids(root: Path) -> list[tuple[str, int]]:
    path = root / "run" / "pids"
    if not path.is_file():
        return []
    return [(n, int(p)) for n, p in (line.split() for line in path.read_text().splitlines() if line.strip())]


def _link_etc(root: Path, name: str) -> None:
    """Point /etc/slurm/<name> at our copy; a real file there is kept aside and restored by stop()."""
    ETC.mkdir(parents=True, exist_ok=True)
    target = ETC / name
    if target.exists() and not target.is_symlink():
        target.rename(ETC / f"{name}.clipforge-bak")
    if target.is_symlink():
        target.unlink()
    target.symlink_to(root / "etc" / name)


def _linked_root() -> Path | None:
    """The cluster folder /etc/slurm/slurm.conf points into, if it is one of ours."""
    link = ETC / "slurm.conf"
    if not link.is_symlink():
        return None
    target = Path(os.readlink(link))
    return target.parent.parent if target.parent.name == "etc" else None


def _unlink_etc(root: Path) -> None:
    for name in ("slurm.conf", "slurmdbd.conf"):
        target = ETC / name
        if target.is_symlink() and str(os.readlink(target)).startswith(str(root) + "/"):
            target.unlink()
            backup = ETC / f"{name}.clipforge-bak"
            if backup.exists():
                backup.rename(target)


def _start_munge(root: Path) -> None:
    """Reuse a munged that already answers on the default socket, else start ours with a fresh key."""
    if MUNGE_SOCKET.is_socket() and sysx.succeeds(["munge", "-n"]):
        _log(f"reusing the munged on {MUNGE_SOCKET}")
        return
    mdir = root / "munge"
    MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
    shutil.chown(mdir, "munge", "munge")
    mdir.chmod(0o711)
    key = mdir / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    for stale in (MUNGE_SOCKET, Path(f"{MUNGE_SOCKET}.lock")):
        stale.unlink(missing_ok=True)
    sysx.spawn_daemon(["runuser", "-u", "munge", "--", "munged", f"--socket={MUNGE_SOCKET}",
                       f"--key-file={key}", f"--pid-file={mdir}/munged.pid", f"--log-file={mdir}/munged.log",
                       f"--seed-file={mdir}/munged.seed"], root / "log" / "daemons.log")
    _record(root, "munged", sysx.read_pid(mdir / "munged.pid", timeout=10))
    sysx.wait_for(lambda: sysx.succeeds(["munge", "-n"]), timeout=10, what=f"munged ({mdir}/munged.log)")


def _start_mariadb(root: Path, ports: Ports, password: str) -> None:
    data, run_dir = root / "mysql", root / "mysql-run"
    for d in (data, run_dir):
        d.mkdir()
        shutil.chown(d, "mysql", "mysql")
    sysx.run(["mariadb-install-db", "--user=mysql", f"--datadir={data}", "--skip-test-db"], timeout=120)
    sock = run_dir / "mysqld.sock"
    # setsid -f: mariadbd leaves our session and is not our child (no zombie to reap after stop)
    sysx.spawn_daemon(["setsid", "-f", "mariadbd", "--no-defaults", "--user=mysql", f"--datadir={data}",
                       f"--socket={sock}", f"--pid-file={run_dir}/mariadb.pid", "--bind-address=127.0.0.1",
                       f"--port={ports.mariadb}", "--skip-name-resolve", f"--log-error={run_dir}/mariadb.err",
                       "--innodb-buffer-pool-size=64M", "--innodb-lock-wait-timeout=900"],
                      root / "log" / "daemons.log")
    client = ["mariadb", f"--socket={sock}", "-uroot", "-e"]
    sysx.wait_for(lambda: sysx.succeeds(client + ["select 1"]), timeout=60,
                  what=f"mariadbd ({run_dir}/mariadb.err)")
    _record(root, "mariadbd", sysx.read_pid(run_dir / "mariadb.pid"))
    sysx.run(client + ["CREATE DATABASE slurm_acct_db; "
                       f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                       "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"])


def _start_accounting(root: Path, ports: Ports, cluster: str) -> None:
    password = secrets.token_hex(12)
    _start_mariadb(root, ports, password)
    conf = root / "etc" / "slurmdbd.conf"
    conf.write_text(slurmdbd_conf(root=root, ports=ports, db_user="slurm", db_password=password))
    conf.chmod(0o600)
    _link_etc(root, "slurmdbd.conf")
    sysx.spawn_daemon(["slurmdbd"], root / "log" / "daemons.log")
    _record(root, "slurmdbd", sysx.read_pid(root / "run" / "slurmdbd.pid"))
    sysx.wait_for(lambda: sysx.succeeds(["sacctmgr", "-n", "list", "cluster"]), timeout=60,
                  what=f"slurmdbd ({root}/log/slurmdbd.log)")
    sysx.run(["sacctmgr", "-i", "add", "cluster", cluster])  # also adds account root with user root


def _start_slurm(root: Path, nodes: list[str], partition: str) -> None:
    sysx.spawn_daemon(["slurmctld"], root / "log" / "daemons.log")
    _record(root, "slurmctld", sysx.read_pid(root / "run" / "slurmctld.pid"))
    sysx.wait_for(lambda: sysx.succeeds(["scontrol", "ping"]), timeout=30,
                  what=f"slurmctld ({root}/log/slurmctld.log)")
    for node in nodes:  # -N: which NodeName this slurmd serves (several share the host)
        sysx.spawn_daemon(["slurmd", "-N", node], root / "log" / "daemons.log")
        _record(root, "slurmd", sysx.read_pid(root / "run" / f"slurmd-{node}.pid"))

    def idle() -> bool:
        proc = sysx.run(["sinfo", "-h", "-N", "-p", partition, "-o", "%N %t"], check=False, timeout=5)
        return sorted(proc.stdout.split()) == sorted([*nodes, *["idle"] * len(nodes)])

    sysx.wait_for(idle, timeout=60, what=f"nodes {','.join(nodes)} to be idle ({root}/log/slurmd-*.log)")


def _prepare(base: Path, ports: list[int], install: bool) -> Path:
    """Check root and packages (installing them), stop an older instance, check ports, fresh folders."""
    reason = sysx.unavailable_reason()
    if reason:
        raise ClusterError(reason)
    missing = sysx.missing_packages()
    if missing:
        if not install:
            raise ClusterError(f"missing Debian packages: {' '.join(missing)}")
        sysx.install_packages(missing, log=_log)
    root = base / "cluster"
    for old in {root, _linked_root()} - {None}:  # ours, or one a killed test session left running
        if recorded_pids(old):
            _log(f"stopping the previous instance under {old}")
            stop(base=old.parent)
    busy = [p for p in ports if not sysx.port_free(p)]
    if busy:
        raise ClusterError(f"ports in use: {busy} (another SLURM or MariaDB?); see `ss -ltnp`")
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("etc", "state", "log", "run", "munge"):
        (root / sub).mkdir(parents=True)
    for d in (base, root):  # munge and mysql users must reach their folders
        d.chmod(0o755)
    return root


def start(*, base: Path = DEFAULT_BASE, partition: str = "debug", name: str = "clipforge", nodes: int = 1,
          ports: Ports = Ports(), install: bool = True) -> Cluster:
    """Install if needed and start munged, MariaDB, slurmdbd, slurmctld and one slurmd per node (all on this
    host; several nodes share its CPUs, for multi-node jobs); return when every node is idle."""
    t0 = time.monotonic()
    base = Path(base).resolve()
    root = _prepare(base, ports.all() + [ports.slurmd + 20 * i for i in range(1, nodes)], install)
    host = socket.gethostname().split(".")[0]
    names = node_names(host, nodes)
    try:
        _start_munge(root)
        node = node_line(sysx.run(["slurmd", "-C"]).stdout)
        (root / "etc" / "slurm.conf").write_text(slurm_conf(cluster=name, host=host, node=node, partition=partition,
                                                            root=root, ports=ports, nodes=nodes))
        _link_etc(root, "slurm.conf")
        _start_accounting(root, ports, name)
        _start_slurm(root, names, partition)
    except BaseException:
        stop(base=base)
        raise
    cluster = Cluster(base=str(base), partition=partition, account=ACCOUNT, name=name, host=host, nodes=names,
                      started_s=round(time.monotonic() - t0, 1))
    (root / "cluster.json").write_text(json.dumps(asdict(cluster), indent=2) + "\n")
    _log(f"cluster {name} up in {cluster.started_s} s: partition {partition}, nodes {','.join(names)}, "
         f"logs {root}/log")
    return cluster


def _cancel_jobs() -> None:
    """Cancel what is still queued so slurmstepd processes end with their jobs."""
    if not sysx.succeeds(["scontrol", "ping"]):
        return
    jobs = sysx.run(["squeue", "-h", "-o", "%i"], check=False).stdout.split()
    if jobs:
        _log(f"cancelling jobs {' '.join(jobs)}")
        sysx.run(["scancel", *jobs], check=False)
        try:
            sysx.wait_for(lambda: not sysx.run(["squeue", "-h", "-o", "%i"], check=False).stdout.strip(),
                          timeout=15, what="jobs to end")
        except ClusterError as exc:
            _log(str(exc))


def stop(*, base: Path = DEFAULT_BASE, clean: bool = False, log: Callable[[str], None] = _log) -> None:
    """Stop the recorded daemons in reverse start order (by PID, never by name); restore /etc/slurm."""
    root = Path(base).resolve() / "cluster"
    pids = recorded_pids(root)
    if any(n == "slurmctld" for n, _ in pids):
        _cancel_jobs()
    for name, pid in reversed(pids):
        log(sysx.terminate(name, pid))
    (root / "run" / "pids").unlink(missing_ok=True)
    _unlink_etc(root)
    if clean:
        shutil.rmtree(root, ignore_errors=True)


def running(base: Path = DEFAULT_BASE) -> Cluster | None:
    """The cluster started under `base` if all its recorded daemons still run, else None."""
    root = Path(base).resolve() / "cluster"
    pids, info = recorded_pids(root), root / "cluster.json"
    if not pids or not info.is_file() or any(sysx.process_name(p) != n for n, p in pids):
        return None
    return Cluster(**json.loads(info.read_text()))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.testcluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, help="folder for state, logs and data")
    parser.add_argument("--partition", default="debug")
    parser.add_argument("--nodes", type=int, default=1, help="slurmd daemons (nodes) on this host")
    parser.add_argument("--no-install", action="store_true", help="fail instead of installing packages")
    parser.add_argument("--clean", action="store_true", help="stop: also delete BASE/cluster")
    args = parser.parse_args(argv)
    if args.action == "start":
        cluster = start(base=args.base, partition=args.partition, nodes=args.nodes, install=not args.no_install)
        print(json.dumps(asdict(cluster)))
    elif args.action == "stop":
        stop(base=args.base, clean=args.clean)
    else:
        cluster = running(args.base)
        print(json.dumps(asdict(cluster)) if cluster else "not running")
        return 0 if cluster else 1
    return 0


if __name__ == "__main__":
    import sys

    from ..errors import run_main

    sys.exit(run_main(main))
