"""Host helpers for the test cluster: packages, waiting, ports, and processes recorded by PID."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

from pipeline.errors import UserError

# binary -> Debian package that ships it (bookworm: Slurm 22.05, MariaDB 10.11)
BINARIES = {
    "slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client", "sacct": "slurm-client",
    "munged": "munge", "slurmdbd": "slurmdbd", "mariadbd": "mariadb-server",
}
POLICY_RC = Path("/usr/sbin/policy-rc.d")


class ClusterError(UserError):
    """The test cluster could not be installed, started or stopped; the message names the log to read."""


def clean_env() -> dict:
    """Our environment without SLURM_CONF: clients must read /etc/slurm/slurm.conf like jobs do."""
    env = dict(os.environ)
    env.pop("SLURM_CONF", None)
    return env


def run(cmd: Sequence[str], *, timeout: float = 60, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command with captured text output; raise ClusterError with its stderr when it fails."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              env=kwargs.pop("env", clean_env()), stdin=subprocess.DEVNULL, **kwargs)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{cmd[0]}: no answer within {timeout:.0f} s ({' '.join(cmd)})") from None
    if check and proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ClusterError(f"{' '.join(cmd)}: exit {proc.returncode}: {last[0]}")
    return proc


def spawn_daemon(cmd: Sequence[str], log_file: Path) -> None:
    """Start a daemon that forks itself away; its stdio goes to a log file, never to our pipes."""
    with open(log_file, "ab") as log:
        subprocess.run(list(cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                       env=clean_env(), check=False, timeout=60)


def succeeds(cmd: Sequence[str], timeout: float = 5) -> bool:
    try:
        return run(cmd, timeout=timeout, check=False).returncode == 0
    except ClusterError:
        return False


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.25) -> None:
    """Poll `check` until it is true; raise ClusterError naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(interval)
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")


def missing_packages() -> list[str]:
    """Debian packages whose binaries are not on PATH (sbin included)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return sorted({pkg for binary, pkg in BINARIES.items() if shutil.which(binary, path=path) is None})


def unavailable_reason() -> str | None:
    """Why a test cluster cannot start here (None when it can): root, Linux and Debian packages needed."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the SLURM test cluster needs root (it starts munged, MariaDB, slurmdbd, slurmctld, slurmd)"
    missing = missing_packages()
    if missing and shutil.which("apt-get") is None:
        return f"SLURM packages missing ({', '.join(missing)}) and no apt-get to install them"
    return None


def install_packages(packages: Sequence[str], *, log: Callable[[str], None]) -> None:
    """apt-get install without letting the packages' postinst scripts start system daemons."""
    made_policy = not POLICY_RC.exists()
    if made_policy:  # exit 101 = "action forbidden" for invoke-rc.d
        POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC.chmod(0o755)
    env = {**clean_env(), "DEBIAN_FRONTEND": "noninteractive"}
    try:
        log(f"installing {' '.join(packages)} (apt-get)")
        run(["apt-get", "update", "-qq"], timeout=300, env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], timeout=900, env=env)
    finally:
        if made_policy:
            POLICY_RC.unlink(missing_ok=True)


def port_free(port: int) -> bool:
    """True when nothing listens on `port` (daemons bind 127.0.0.1, slurmdbd 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def process_name(pid: int) -> str | None:
    """The command name of a live (non-zombie) process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2]
    return None if state in "ZX" else name


def read_pid(pid_file: Path, *, timeout: float = 30) -> int:
    """Wait for a daemon's PID file and return the PID in it."""
    wait_for(lambda: pid_file.is_file() and pid_file.read_text().strip().isdigit(),
             timeout=timeout, what=f"PID file {pid_file}")
    return int(pid_file.read_text().strip())


def terminate(name: str, pid: int, *, timeout: float = 30) -> str:
    """TERM (then KILL) one recorded process, only if it still runs under the recorded name."""
    if process_name(pid) != name:
        return f"{name} ({pid}) was not running"
    os.kill(pid, 15)
    try:
        wait_for(lambda: process_name(pid) != name, timeout=timeout, what=f"{name} ({pid}) to exit")
    except ClusterError:
        os.kill(pid, 9)
        return f"{name} ({pid}) ignored TERM, killed"
    return f"stopped {name} ({pid})"
