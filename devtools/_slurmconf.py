"""Text of slurm.conf and slurmdbd.conf for a one-node test cluster that lives under one folder."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ports:
    slurmctld: int = 6817
    slurmd: int = 6818
    slurmdbd: int = 6819
    mariadb: int = 3307  # not 3306: leaves a system MariaDB alone

    def all(self) -> list[int]:
        return [self.slurmctld, self.slurmd, self.slurmdbd, self.mariadb]


def node_line(slurmd_c_output: str) -> str:
    """`slurmd -C`'s NodeName line with RealMemory cut to 90% (the OS keeps the rest)."""
    line = slurmd_c_output.strip().splitlines()[0]
    mem = int(re.search(r"RealMemory=(\d+)", line).group(1))
    return re.sub(r"RealMemory=\d+", f"RealMemory={mem * 9 // 10}", line)


def node_names(host: str, nodes: int) -> list[str]:
    """The first node is the host itself, so the first node's name resolves (torchrun's rendezvous host);
    the others are <host>-2 ... <host>-N, all slurmd daemons on this host."""
    return [host] + [f"{host}-{i}" for i in range(2, nodes + 1)]


def node_lines(*, host: str, node: str, nodes: int, ports: Ports) -> str:
    """Several nodes share the host's CPUs (each claims all of them) and split its memory; each slurmd
    listens on its own port, since they share 127.0.0.1."""
    if nodes == 1:
        return f"{node} NodeAddr=127.0.0.1 State=UNKNOWN"
    mem = int(re.search(r"RealMemory=(\d+)", node).group(1)) // nodes
    shape = re.sub(r"^NodeName=\S+ ", "", re.sub(r"RealMemory=\d+", f"RealMemory={mem}", node))
    return "\n".join(f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={ports.slurmd + 20 * i} "
                     f"{shape} State=UNKNOWN" for i, name in enumerate(node_names(host, nodes)))


def slurm_conf(*, cluster: str, host: str, node: str, partition: str, root: Path, ports: Ports,
               nodes: int = 1) -> str:
    """Everything on 127.0.0.1, root runs the daemons, accounting through slurmdbd (the plugin polls sacct).
    %n in the slurmd paths is the node name, so several slurmd daemons can share one host."""
    return f"""\
ClusterName={cluster}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports.slurmctld}
SlurmdPort={ports.slurmd}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool-%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports.slurmdbd}
JobAcctGatherType=jobacct_gather/linux
AccountingStoreFlags=job_comment
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
MailProg=/bin/true
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
{node_lines(host=host, node=node, nodes=nodes, ports=ports)}
PartitionName={partition} Nodes={",".join(node_names(host, nodes))} Default=YES MaxTime=INFINITE State=UP \
DefMemPerCPU=1000
"""


def slurmdbd_conf(*, root: Path, ports: Ports, db_user: str, db_password: str) -> str:
    return f"""\
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports.slurmdbd}
SlurmUser=root
LogFile={root}/log/slurmdbd.log
PidFile={root}/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports.mariadb}
StorageUser={db_user}
StoragePass={db_password}
StorageLoc=slurm_acct_db
"""
